/** The egress relay's Prometheus metrics (prom-client), named `nks_egress_*` (docs/DEPLOY.md, "What to monitor"). */
import client from 'prom-client';

/**
 * Why the relay closed a connection without answering EGRESS_OK. The enclave cannot tell them apart (every
 * refusal is the same close); the operator sees them here and in the log.
 */
export const EGRESS_REFUSAL_REASONS = [
  /** The request frame is not a valid `{host, port}` (bad CRC, not JSON, bad host or port, extra fields), or bytes followed it before EGRESS_OK. */
  'bad_request',
  /** The request frame announces more than EGRESS_MAX_REQUEST_BYTES. */
  'request_too_large',
  /** No complete request frame within `handshakeTimeoutMs`. */
  'handshake_timeout',
  /** `maxConnections` connections are already open. */
  'too_many_connections',
  /** Not the `jwksUri` host of an enabled JWT project, nor in `egress.allowedHosts`. */
  'host_not_allowed',
  /** Not in `egress.allowedPorts`. */
  'port_not_allowed',
  /** The name did not resolve (error, no address, or no answer within `connectTimeoutMs`). */
  'dns_failed',
  /** One of the name's addresses is an instance metadata address (never allowed). */
  'metadata_address',
  /** One of the name's addresses is loopback (without `allowLoopback`), private, link-local, unique-local, multicast, reserved, in `egress.deniedCidrs`, … */
  'address_not_allowed',
  /** Every address refused the connection or failed. */
  'connect_failed',
  /** No address accepted the connection within `connectTimeoutMs`. */
  'connect_timeout',
  /** The allowed-hosts source threw (a bug or a store failure): refused rather than guessed. */
  'internal_error',
] as const;
export type EgressRefusalReason = (typeof EGRESS_REFUSAL_REASONS)[number];

/** Why a relayed connection (one that got EGRESS_OK) ended. */
export const EGRESS_CLOSE_REASONS = [
  /** Either side closed (normally or with an error); the other side was then ended. */
  'closed',
  'idle_timeout',
  /** `maxBytesPerConnection` reached in one direction. */
  'byte_cap',
  /** The relay was stopped. */
  'relay_stopped',
] as const;
export type EgressCloseReason = (typeof EGRESS_CLOSE_REASONS)[number];

/** `outbound`: enclave to the remote host; `inbound`: remote host to the enclave. */
export type EgressDirection = 'outbound' | 'inbound';

/** The metrics the relay updates; pass your own (the parent's Metrics) or let `createEgressMetrics` make them. */
export interface EgressMetrics {
  refusals: client.Counter<'reason'>;
  /** Connections open now, in any phase (handshake, resolving, connecting, relaying). */
  connections: client.Gauge;
  bytes: client.Counter<'direction'>;
  closes?: client.Counter<'reason'>;
}

/** Registers the relay's metrics on `registry`, every label value present from the start (at 0). */
export function createEgressMetrics(registry: client.Registry): Required<EgressMetrics> {
  const registers = [registry];
  const refusals = new client.Counter({
    name: 'nks_egress_refusals_total',
    help: 'Egress relay connections refused (closed without EGRESS_OK), by reason',
    labelNames: ['reason'],
    registers,
  });
  const connections = new client.Gauge({ name: 'nks_egress_connections', help: 'Egress relay connections open now', registers });
  const bytes = new client.Counter({
    name: 'nks_egress_bytes_total',
    help: 'Bytes relayed: outbound (enclave to remote) and inbound (remote to enclave)',
    labelNames: ['direction'],
    registers,
  });
  const closes = new client.Counter({
    name: 'nks_egress_closes_total',
    help: 'Relayed egress connections ended, by reason',
    labelNames: ['reason'],
    registers,
  });
  for (const reason of EGRESS_REFUSAL_REASONS) refusals.inc({ reason }, 0);
  for (const reason of EGRESS_CLOSE_REASONS) closes.inc({ reason }, 0);
  for (const direction of ['outbound', 'inbound'] as const) bytes.inc({ direction }, 0);
  return { refusals, connections, bytes, closes };
}
