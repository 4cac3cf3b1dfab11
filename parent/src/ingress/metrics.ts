/** The ingress relay's Prometheus metrics (prom-client), named `nks_ingress_*` (docs/DEPLOY.md, "What to monitor"). */
import client from 'prom-client';

/** Why the relay closed a client's connection before any byte reached the enclave. */
export const INGRESS_REFUSAL_REASONS = [
  /** `wallets.relay.maxConnections` connections are already open. */
  'too_many_connections',
  /** `wallets.relay.maxPerAddress` connections from this client address (IPv6: its /64) are already open. */
  'too_many_from_address',
  /** The enclave's wallet listener refused the connection or failed (the enclave is down or restarting). */
  'connect_failed',
  /** The enclave's wallet listener did not accept within `connectTimeoutMs`. */
  'connect_timeout',
] as const;
export type IngressRefusalReason = (typeof INGRESS_REFUSAL_REASONS)[number];

/** Why a connection that was not refused ended. */
export const INGRESS_CLOSE_REASONS = [
  /** Either side closed (normally or with an error); the other side was then ended. */
  'closed',
  /** No byte either way for `idleTimeoutMs`. */
  'idle_timeout',
  /** `maxBytesPerConnection` reached in one direction. */
  'byte_cap',
  /** The relay was stopped. */
  'relay_stopped',
] as const;
export type IngressCloseReason = (typeof INGRESS_CLOSE_REASONS)[number];

/** `inbound`: client to the enclave; `outbound`: enclave to the client (as for egress: inbound is towards the enclave). */
export type IngressDirection = 'inbound' | 'outbound';

export interface IngressMetrics {
  /** Connections open now, from accept (and admission) to close. */
  connections: client.Gauge;
  accepted: client.Counter;
  refusals: client.Counter<'reason'>;
  closes: client.Counter<'reason'>;
  bytes: client.Counter<'direction'>;
}

/** Registers the relay's metrics on `registry`, every label value present from the start (at 0). */
export function createIngressMetrics(registry: client.Registry): IngressMetrics {
  const registers = [registry];
  const connections = new client.Gauge({
    name: 'nks_ingress_connections',
    help: 'Wallet ingress relay connections open now (client to the enclave wallet listener)',
    registers,
  });
  const accepted = new client.Counter({
    name: 'nks_ingress_accepted_total',
    help: 'Wallet ingress relay TCP connections accepted (refused ones included)',
    registers,
  });
  const refusals = new client.Counter({
    name: 'nks_ingress_refusals_total',
    help: 'Wallet ingress relay connections closed before relaying, by reason',
    labelNames: ['reason'],
    registers,
  });
  const closes = new client.Counter({
    name: 'nks_ingress_closes_total',
    help: 'Wallet ingress relay connections ended, by reason',
    labelNames: ['reason'],
    registers,
  });
  const bytes = new client.Counter({
    name: 'nks_ingress_bytes_total',
    help: 'Bytes relayed (ciphertext): inbound (client to enclave) and outbound (enclave to client)',
    labelNames: ['direction'],
    registers,
  });
  for (const reason of INGRESS_REFUSAL_REASONS) refusals.inc({ reason }, 0);
  for (const reason of INGRESS_CLOSE_REASONS) closes.inc({ reason }, 0);
  for (const direction of ['inbound', 'outbound'] as const) bytes.inc({ direction }, 0);
  return { connections, accepted, refusals, closes, bytes };
}
