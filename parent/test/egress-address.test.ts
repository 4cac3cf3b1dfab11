/**
 * The egress relay's address policy (parent/src/egress/address-policy.ts): which resolved addresses it may
 * connect to. A table of addresses at the edges of every range, in every spelling a resolver could return.
 */
import {
  addressAllowed,
  classifyAddress,
  deniedList,
  METADATA_ADDRESSES,
  parseCidr,
  type AddressCategory,
} from '../src/egress/address-policy';

const cases: Array<[address: string, category: AddressCategory | null]> = [
  // metadata, in every spelling: never allowed
  ['169.254.169.254', 'metadata'],
  ['169.254.170.2', 'metadata'],
  ['fd00:ec2::254', 'metadata'],
  ['FD00:EC2:0:0:0:0:0:254', 'metadata'],
  ['::ffff:169.254.169.254', 'metadata'],
  ['::ffff:a9fe:a9fe', 'metadata'],
  ['0:0:0:0:0:ffff:a9fe:aa02', 'metadata'],
  // loopback
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['::1', 'loopback'],
  ['::ffff:127.0.0.1', 'loopback'],
  ['::ffff:7f00:1', 'loopback'],
  // unspecified ("this network"; 0.0.0.0 reaches the local host on Linux)
  ['0.0.0.0', 'unspecified'],
  ['0.255.255.255', 'unspecified'],
  ['::', 'unspecified'],
  ['::ffff:0.0.0.0', 'unspecified'],
  // private
  ['10.0.0.1', 'private'],
  ['10.255.255.255', 'private'],
  ['172.16.0.0', 'private'],
  ['172.31.255.255', 'private'],
  ['192.168.1.1', 'private'],
  ['100.64.0.1', 'private'],
  ['100.127.255.255', 'private'],
  ['::ffff:10.0.0.1', 'private'],
  ['::ffff:c0a8:101', 'private'],
  // link-local
  ['169.254.0.1', 'link_local'],
  ['169.254.169.253', 'link_local'],
  ['fe80::1', 'link_local'],
  ['febf::1', 'link_local'],
  ['::ffff:169.254.1.1', 'link_local'],
  // unique-local (and the deprecated site-local)
  ['fc00::1', 'unique_local'],
  ['fd12:3456::1', 'unique_local'],
  ['fd00:ec2::253', 'unique_local'],
  ['fec0::1', 'unique_local'],
  ['feff::1', 'unique_local'],
  // multicast, broadcast
  ['224.0.0.1', 'multicast'],
  ['239.255.255.255', 'multicast'],
  ['ff02::1', 'multicast'],
  ['::ffff:224.0.0.251', 'multicast'],
  ['255.255.255.255', 'broadcast'],
  ['::ffff:255.255.255.255', 'broadcast'],
  // reserved and special-purpose
  ['240.0.0.1', 'reserved'],
  ['192.0.0.8', 'reserved'],
  ['192.0.2.1', 'reserved'],
  ['198.18.0.1', 'reserved'],
  ['198.19.255.255', 'reserved'],
  ['198.51.100.7', 'reserved'],
  ['203.0.113.9', 'reserved'],
  ['192.88.99.1', 'reserved'],
  ['::7f00:1', 'reserved'], // IPv4-compatible 127.0.0.1
  ['64:ff9b::a9fe:a9fe', 'reserved'], // NAT64 of 169.254.169.254
  ['64:ff9b::808:808', 'reserved'], // NAT64 of a public address: still refused (docs: no translators)
  ['64:ff9b:1::1', 'reserved'],
  ['2002:a9fe:a9fe::1', 'reserved'], // 6to4 of 169.254.169.254
  ['2001:0:4136:e378::1', 'reserved'], // Teredo
  ['2001:db8::1', 'reserved'],
  ['3fff::1', 'reserved'],
  ['100::1', 'reserved'],
  ['5f00::1', 'reserved'],
  // not IP addresses, or scoped (BlockList would not match a zone id)
  ['fe80::1%eth0', 'invalid'],
  ['::ffff:127.0.0.1%lo', 'invalid'],
  ['localhost', 'invalid'],
  ['', 'invalid'],
  ['01.2.3.4', 'invalid'],
  ['2130706433', 'invalid'],
  // global unicast: allowed, including the neighbours of refused ranges
  ['8.8.8.8', null],
  ['1.1.1.1', null],
  ['9.255.255.255', null],
  ['11.0.0.0', null],
  ['100.63.255.255', null],
  ['100.128.0.0', null],
  ['126.255.255.255', null],
  ['128.0.0.0', null],
  ['169.253.255.255', null],
  ['169.255.0.0', null],
  ['172.15.255.255', null],
  ['172.32.0.0', null],
  ['192.167.255.255', null],
  ['192.169.0.0', null],
  ['198.17.255.255', null],
  ['198.20.0.0', null],
  ['223.255.255.255', null],
  ['::ffff:8.8.8.8', null],
  ['2606:4700:4700::1111', null],
  ['2a00:1450:4001:80b::200e', null],
  ['2001:4860:4860::8888', null], // 2001:4860:: is outside 2001::/23
  ['fbff:ffff::1', null],
  ['fe00::1', null],
];

describe('egress address policy', () => {
  it.each(cases)('%s is %s', (address, category) => {
    expect(classifyAddress(address)).toBe(category);
  });

  it('lists the three metadata addresses of the brief, and refuses each even with loopback allowed', () => {
    expect([...METADATA_ADDRESSES].sort()).toEqual(['169.254.169.254', '169.254.170.2', 'fd00:ec2::254']);
    for (const a of METADATA_ADDRESSES) expect(addressAllowed(classifyAddress(a), true)).toBe(false);
  });

  it('allows loopback only when configured, and nothing else that is not global', () => {
    expect(addressAllowed('loopback', false)).toBe(false);
    expect(addressAllowed('loopback', true)).toBe(true);
    expect(addressAllowed(null, false)).toBe(true);
    for (const [, category] of cases) {
      if (category === null || category === 'loopback') continue;
      expect(addressAllowed(category, true)).toBe(false);
      expect(addressAllowed(category, false)).toBe(false);
    }
  });

  // Review 17 (informational): global unicast addresses that are the operator's own (a VPC's IPv6 range, an
  // Elastic IP) look public; the operator lists them in egress.deniedCidrs and they are refused like private ones.
  it("refuses the operator's denied ranges (egress.deniedCidrs), in every spelling, before anything else but metadata", () => {
    const denied = deniedList(['2600:1f18:aaaa::/48', '3.5.140.2', '52.94.0.0/22', '127.0.0.0/8', '169.254.169.254/32']);
    const table: Array<[string, AddressCategory | null]> = [
      ['2600:1f18:aaaa:bbbb::10', 'denied'],
      ['2600:1f18:aaaa:ffff:ffff:ffff:ffff:ffff', 'denied'],
      ['2600:1f18:aaab::1', null],
      ['3.5.140.2', 'denied'],
      ['3.5.140.3', null],
      ['::ffff:3.5.140.2', 'denied'],
      ['::ffff:305:8c02', 'denied'],
      ['52.94.3.255', 'denied'],
      ['52.94.4.0', null],
      ['127.0.0.1', 'denied'], // the operator's list wins over allowLoopback
      ['169.254.169.254', 'metadata'], // still counted as what it is
      ['10.0.0.1', 'private'],
    ];
    for (const [address, category] of table) expect([address, classifyAddress(address, denied)]).toEqual([address, category]);
    expect(addressAllowed(classifyAddress('2600:1f18:aaaa:bbbb::10', denied), false)).toBe(false);
    expect(addressAllowed(classifyAddress('127.0.0.1', denied), true)).toBe(false);
    // Without the list, the same global addresses are allowed (what the review showed).
    expect(addressAllowed(classifyAddress('2600:1f18:aaaa:bbbb::10'), false)).toBe(true);
    expect(addressAllowed(classifyAddress('3.5.140.2', deniedList([])), false)).toBe(true);
  });

  it.each([
    ['203.0.113.0/24', ['203.0.113.0', 24, 'ipv4']],
    ['203.0.113.7', ['203.0.113.7', 32, 'ipv4']],
    ['0.0.0.0/0', ['0.0.0.0', 0, 'ipv4']],
    ['2600:1f18::/32', ['2600:1f18::', 32, 'ipv6']],
    ['::/128', ['::', 128, 'ipv6']],
    ['2600::1', ['2600::1', 128, 'ipv6']],
    ['203.0.113.0/33', null],
    ['2600::/129', null],
    ['203.0.113.0/', null],
    ['203.0.113.0/1/2', null],
    ['203.0.113.0/+8', null],
    ['203.0.113.0/1000', null],
    ['host.example/8', null],
    ['fe80::1%eth0/64', null],
    ['', null],
  ] as const)('parses the CIDR %j as %j', (cidr, parsed) => {
    expect(parseCidr(cidr)).toEqual(parsed);
  });

  it('refuses to build a denied list from something that is not a CIDR', () => {
    expect(() => deniedList(['10.0.0.0/8', 'nope'])).toThrow('not a CIDR: nope');
  });
});
