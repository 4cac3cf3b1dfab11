/**
 * The `egress` section of the parent's configuration: where the egress relay listens and what it lets through
 * (docs/PROJECTS.md, "Egress relay"). Every field has a default, so an absent section is a working relay that
 * allows only the `jwksUri` hosts of enabled JWT projects, on port 443, to global addresses.
 */
import { z } from 'zod';
import { DEFAULT_EGRESS_ADDRESS, EGRESS_HOST_RE } from '@nks/shared/egress';
import { VsockAddressSchema } from '@nks/shared/transport';
import { parseCidr } from './address-policy';

/** Every default of the section, once: the schema fills these in, and tests compare with them. */
export const EGRESS_CONFIG_DEFAULTS = {
  listen: DEFAULT_EGRESS_ADDRESS,
  allowedHosts: [] as string[],
  allowedPorts: [443] as number[],
  allowLoopback: false,
  deniedCidrs: [] as string[],
  connectTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  /**
   * Per direction. What passes is one JWKS fetch: a TLS handshake (a certificate chain of a few KiB, rarely
   * over 20 KiB), an HTTP request and a response the enclave refuses past 64 KiB of body. 1 MiB is 16 times
   * that body with room for headers and TLS records, and still bounds what a connection can move.
   */
  maxBytesPerConnection: 1024 * 1024,
  maxConnections: 64,
  handshakeTimeoutMs: 5_000,
};

const D = EGRESS_CONFIG_DEFAULTS;
const ms = (def: number, max: number) => z.number().int().min(1).max(max).default(def);

export const EgressConfigSchema = z.strictObject({
  listen: VsockAddressSchema.default(D.listen),
  /**
   * Hosts allowed besides the `jwksUri` hosts of enabled JWT projects: DNS names (or IPv4 literals) as the
   * enclave will ask for them, matched exactly and case-insensitively (no wildcards, no subdomains).
   */
  allowedHosts: z
    .array(z.string().regex(EGRESS_HOST_RE, 'expected a host name (letters, digits, hyphens and dots) or an IPv4 address').toLowerCase())
    .max(1000)
    .default(() => [...D.allowedHosts]),
  allowedPorts: z
    .array(z.number().int().min(1).max(65535))
    .min(1)
    .max(64)
    .default(() => [...D.allowedPorts]),
  /** Lets names resolve to loopback addresses (development and tests, where the JWKS server is local). */
  allowLoopback: z.boolean().default(D.allowLoopback),
  /**
   * Ranges refused like the private ones, whatever else allows them: the operator's own global addresses (its
   * VPC's IPv6 CIDR, its Elastic IPs, …), which look public to the relay but lead into its network.
   */
  deniedCidrs: z
    .array(
      z
        .string()
        .refine(
          (c) => parseCidr(c) !== null,
          'expected an IPv4 or IPv6 range as address/prefix (e.g. 203.0.113.0/24, 2600:1f18::/40) or an address',
        ),
    )
    .max(1000)
    .default(() => [...D.deniedCidrs]),
  /** Resolving the name, then connecting to its addresses, each within this. */
  connectTimeoutMs: ms(D.connectTimeoutMs, 60_000),
  /** A relayed connection with no byte either way for this long is closed. */
  idleTimeoutMs: ms(D.idleTimeoutMs, 600_000),
  maxBytesPerConnection: z
    .number()
    .int()
    .min(1024)
    .max(64 * 1024 * 1024)
    .default(D.maxBytesPerConnection),
  /** Connections open at once, from accept to close (beyond it, a connection is refused). */
  maxConnections: z.number().int().min(1).max(10_000).default(D.maxConnections),
  /** Time the enclave has to send its request frame after connecting. */
  handshakeTimeoutMs: ms(D.handshakeTimeoutMs, 60_000),
});

/** The parsed section (every field filled in). */
export type EgressConfig = z.output<typeof EgressConfigSchema>;
