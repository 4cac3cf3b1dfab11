/**
 * Which resolved addresses the egress relay may connect to (docs/PROJECTS.md, "Egress relay"). The relay exists
 * so the enclave can fetch a project's JWKS from the internet; a project's `jwksUri` (or a DNS answer) must not
 * turn it into a way into the parent's own network: the instance metadata service, the VPC, the host itself.
 *
 * The ranges are IANA's special-purpose registries (RFC 6890 and its updates) for everything that is not a
 * globally reachable unicast address. Node's `net.BlockList` does the matching; it also matches an IPv4 rule
 * against the IPv4-mapped IPv6 form (`::ffff:a.b.c.d`, in either spelling), so every IPv4 range below covers
 * its mapped form without a rule of its own.
 */
import net from 'node:net';

/** Why an address is refused; `null` from `classifyAddress` means a global unicast address. */
export type AddressCategory =
  | 'metadata'
  | 'denied'
  | 'loopback'
  | 'unspecified'
  | 'private'
  | 'link_local'
  | 'unique_local'
  | 'multicast'
  | 'broadcast'
  | 'reserved'
  | 'invalid';

type Rule = [address: string, prefix: number];

/**
 * The AWS instance metadata service (IPv4 and IPv6, Nitro instances) and the ECS task metadata endpoint:
 * never allowed, whatever the configuration (they also fall in link-local and unique-local; listed first so
 * the refusal is counted as what it is).
 */
export const METADATA_ADDRESSES: readonly string[] = ['169.254.169.254', '169.254.170.2', 'fd00:ec2::254'];

/** Checked in this order: the first category that matches is the answer. */
const CATEGORIES: ReadonlyArray<[AddressCategory, v4: Rule[], v6: Rule[]]> = [
  [
    'metadata',
    METADATA_ADDRESSES.filter((a) => net.isIPv4(a)).map((a) => [a, 32]),
    METADATA_ADDRESSES.filter((a) => net.isIPv6(a)).map((a) => [a, 128]),
  ],
  ['loopback', [['127.0.0.0', 8]], [['::1', 128]]],
  // 0.0.0.0 reaches the local host on Linux, so "this network" is never a destination.
  ['unspecified', [['0.0.0.0', 8]], [['::', 128]]],
  // RFC 1918, and RFC 6598 shared address space (carrier-grade NAT; inside some VPC setups).
  [
    'private',
    [
      ['10.0.0.0', 8],
      ['172.16.0.0', 12],
      ['192.168.0.0', 16],
      ['100.64.0.0', 10],
    ],
    [],
  ],
  ['link_local', [['169.254.0.0', 16]], [['fe80::', 10]]],
  // fec0::/10 is the deprecated site-local range: private in effect wherever it is still used.
  [
    'unique_local',
    [],
    [
      ['fc00::', 7],
      ['fec0::', 10],
    ],
  ],
  ['multicast', [['224.0.0.0', 4]], [['ff00::', 8]]],
  ['broadcast', [['255.255.255.255', 32]], []],
  [
    'reserved',
    [
      ['192.0.0.0', 24], // IETF protocol assignments
      ['192.0.2.0', 24], // documentation (TEST-NET-1)
      ['192.88.99.0', 24], // 6to4 relay anycast (deprecated)
      ['198.18.0.0', 15], // benchmarking
      ['198.51.100.0', 24], // documentation (TEST-NET-2)
      ['203.0.113.0', 24], // documentation (TEST-NET-3)
      ['240.0.0.0', 4], // reserved for future use
    ],
    [
      // IPv4-compatible (deprecated), and the prefixes that carry an IPv4 address to a translator or tunnel:
      // NAT64 (well-known and local-use), 6to4, and 2001::/23 (Teredo among the IETF assignments). Through
      // them a name could reach an IPv4 address the rules above refuse; a JWKS host has a native address.
      ['::', 96],
      ['64:ff9b::', 96],
      ['64:ff9b:1::', 48],
      ['2002::', 16],
      ['2001::', 23],
      ['100::', 64], // discard-only
      ['2001:db8::', 32], // documentation
      ['3fff::', 20], // documentation
      ['5f00::', 16], // SRv6 SIDs
    ],
  ],
];

const LISTS: ReadonlyArray<[AddressCategory, net.BlockList]> = CATEGORIES.map(([category, v4, v6]) => {
  const list = new net.BlockList();
  for (const [address, prefix] of v4) list.addSubnet(address, prefix, 'ipv4');
  for (const [address, prefix] of v6) list.addSubnet(address, prefix, 'ipv6');
  return [category, list];
});

/** `address/prefix` (or a bare address: one host) as `[address, prefix, family]`, or null when it is not one. */
export function parseCidr(cidr: string): [address: string, prefix: number, family: 'ipv4' | 'ipv6'] | null {
  const [address = '', prefixText, ...rest] = cidr.split('/');
  const family = net.isIP(address);
  if (family === 0 || address.includes('%') || rest.length > 0) return null;
  const max = family === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  return prefix <= max ? [address, prefix, family === 4 ? 'ipv4' : 'ipv6'] : null;
}

/**
 * The operator's own denied ranges (`egress.deniedCidrs`): global addresses that are still inside its network
 * (a VPC's IPv6 range, its Elastic IPs, a partner's private link), which no special-purpose registry lists.
 * An IPv4 range also covers its IPv4-mapped IPv6 form (BlockList, as above).
 */
export function deniedList(cidrs: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const cidr of cidrs) {
    const parsed = parseCidr(cidr);
    if (!parsed) throw new RangeError(`not a CIDR: ${cidr}`);
    list.addSubnet(...parsed);
  }
  return list;
}

/**
 * The category of an address, or null for a global unicast one the operator has not denied. Anything that is
 * not a plain IP address is `invalid`, including a scoped IPv6 address (`fe80::1%eth0`), which `BlockList`
 * would not match. `denied` comes right after `metadata`: the operator's list wins over `allowLoopback`.
 */
export function classifyAddress(address: string, denied?: net.BlockList): AddressCategory | null {
  const family = net.isIP(address);
  if (family === 0 || address.includes('%')) return 'invalid';
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const [category, list] of LISTS) {
    if (list.check(address, type)) return category;
    if (category === 'metadata' && denied?.check(address, type)) return 'denied';
  }
  return null;
}

/** Whether the relay may connect to the address: global unicast, or loopback when the configuration allows it. */
export function addressAllowed(category: AddressCategory | null, allowLoopback: boolean): boolean {
  return category === null || (category === 'loopback' && allowLoopback);
}
