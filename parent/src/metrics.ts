/**
 * Prometheus metrics (prom-client): HTTP requests and latency by route and status, enclave RPC latency,
 * KMS calls by outcome, enclave up, keys total, the TrueWallet routes' outcomes, JWT refusals and rate limits,
 * and the enclave's own health counters (read from `enclave.health` at scrape time with a short deadline).
 */
import client from 'prom-client';
import type { EnclaveHealth } from '@nks/shared/enclave-api';

export class Metrics {
  readonly registry = new client.Registry();
  readonly httpRequests: client.Counter<'route' | 'method' | 'status'>;
  readonly httpDuration: client.Histogram<'route' | 'method' | 'status'>;
  readonly enclaveRpc: client.Histogram<'method' | 'outcome'>;
  readonly kmsCalls: client.Counter<'outcome'>;
  readonly kmsDuration: client.Histogram<'outcome'>;
  readonly enclaveUp: client.Gauge;
  readonly inFlight: client.Gauge;
  readonly overloaded: client.Counter;
  readonly walletRequests: client.Counter<'route' | 'outcome'>;
  readonly walletJwtRefusals: client.Counter<'stage'>;
  readonly walletRateLimited: client.Counter<'limit'>;
  readonly sharedClientAddress: client.Gauge;
  private readonly enclaveCounter: client.Gauge<'counter'>;
  private readonly enclaveErrors: client.Gauge<'reason'>;
  private readonly enclaveMemory: client.Gauge<'kind'>;
  private readonly enclaveUptime: client.Gauge;
  private readonly enclaveClock: client.Gauge<'state'>;
  private readonly enclaveClockDrift: client.Gauge;

  constructor(
    private readonly sources: {
      keyCounts: () => { total: number; disabled: number; withoutRecord?: number };
      enclaveHealth: () => Promise<EnclaveHealth | null>;
    },
  ) {
    const r = this.registry;
    client.collectDefaultMetrics({ register: r, prefix: 'nks_parent_' });
    this.httpRequests = new client.Counter({
      name: 'nks_http_requests_total',
      help: 'Caller API requests',
      labelNames: ['route', 'method', 'status'],
      registers: [r],
    });
    this.httpDuration = new client.Histogram({
      name: 'nks_http_request_duration_seconds',
      help: 'Caller API request latency',
      labelNames: ['route', 'method', 'status'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [r],
    });
    this.enclaveRpc = new client.Histogram({
      name: 'nks_enclave_rpc_duration_seconds',
      help: 'Enclave RPC latency by method and outcome (reason)',
      labelNames: ['method', 'outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [r],
    });
    this.kmsCalls = new client.Counter({
      name: 'nks_kms_calls_total',
      help: 'Attested KMS Decrypt calls by outcome',
      labelNames: ['outcome'],
      registers: [r],
    });
    this.kmsDuration = new client.Histogram({
      name: 'nks_kms_call_duration_seconds',
      help: 'KMS Decrypt latency including retries',
      labelNames: ['outcome'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [r],
    });
    this.enclaveUp = new client.Gauge({ name: 'nks_enclave_up', help: '1 when at least one enclave connection is up', registers: [r] });
    this.inFlight = new client.Gauge({ name: 'nks_http_in_flight', help: 'Caller API requests being served', registers: [r] });
    this.overloaded = new client.Counter({
      name: 'nks_http_overloaded_total',
      help: 'Requests refused with 503 OVERLOADED',
      registers: [r],
    });
    this.walletRequests = new client.Counter({
      name: 'nks_wallet_requests_total',
      help: 'TrueWallet API requests by route and outcome (ok, bad_request, invalid_jwt, unauthorized, rate_limited, conflict, unavailable, error)',
      labelNames: ['route', 'outcome'],
      registers: [r],
    });
    this.walletJwtRefusals = new client.Counter({
      name: 'nks_wallet_jwt_refusals_total',
      help: 'TrueWallet API JWTs refused: by the parent (not a JWT, no user claim) or by the enclave (INVALID_JWT, or a JWT of another user)',
      labelNames: ['stage'],
      registers: [r],
    });
    this.walletRateLimited = new client.Counter({
      name: 'nks_wallet_rate_limited_total',
      help: 'TrueWallet API requests refused by a rate limit (address, failures, concurrent, project, user)',
      labelNames: ['limit'],
      registers: [r],
    });
    this.sharedClientAddress = new client.Gauge({
      name: 'nks_api_client_address_shared',
      help: '1 when the API listens on a Unix socket or loopback without api.trustProxy: callers relayed by a proxy share one client address (and its rate limits)',
      registers: [r],
    });
    new client.Gauge({
      name: 'nks_keys',
      help: 'Key records by state',
      labelNames: ['state'],
      registers: [r],
      collect() {
        const c = sources.keyCounts();
        this.set({ state: 'enabled' }, c.total - c.disabled);
        this.set({ state: 'disabled' }, c.disabled);
      },
    });
    new client.Gauge({
      name: 'nks_keys_without_record',
      help: 'Keys made before 0.4 that have no signed record yet: they cannot sign until migrated (parent migrate)',
      registers: [r],
      collect() {
        this.set(sources.keyCounts().withoutRecord ?? 0);
      },
    });
    this.enclaveCounter = new client.Gauge({
      name: 'nks_enclave_counter',
      help: 'Counters reported by the enclave (enclave.health)',
      labelNames: ['counter'],
      registers: [r],
    });
    this.enclaveErrors = new client.Gauge({
      name: 'nks_enclave_errors',
      help: 'Enclave errors by reason (enclave.health)',
      labelNames: ['reason'],
      registers: [r],
    });
    this.enclaveMemory = new client.Gauge({
      name: 'nks_enclave_memory_bytes',
      help: 'Enclave process memory (enclave.health)',
      labelNames: ['kind'],
      registers: [r],
    });
    this.enclaveUptime = new client.Gauge({ name: 'nks_enclave_uptime_seconds', help: 'Enclave uptime (enclave.health)', registers: [r] });
    this.enclaveClock = new client.Gauge({
      name: 'nks_enclave_clock',
      help: "1 for the state of the enclave clock's check against attestation timestamps (unchecked, trusted, untrusted: JWTs refused)",
      labelNames: ['state'],
      registers: [r],
    });
    this.enclaveClockDrift = new client.Gauge({
      name: 'nks_enclave_clock_drift_seconds',
      help: 'The enclave clock minus the last attestation timestamp (enclave.health)',
      registers: [r],
    });
  }

  /** The Prometheus text, after reading the enclave's health counters (skipped when it does not answer). */
  async render(): Promise<string> {
    const h = await this.sources.enclaveHealth();
    if (h) {
      this.enclaveUptime.set(h.uptimeMs / 1000);
      const { errors, ...counters } = h.counters;
      for (const [k, v] of Object.entries(counters)) this.enclaveCounter.set({ counter: k }, v);
      for (const [k, v] of Object.entries(errors)) this.enclaveErrors.set({ reason: k }, v);
      // JWT verification (docs/PROJECTS.md), from an enclave that reports it: counters as jwt_<name>.
      if (h.jwt) {
        const { clock, clockDriftMs, ...jwtCounters } = h.jwt;
        for (const [k, v] of Object.entries(jwtCounters)) this.enclaveCounter.set({ counter: `jwt_${k}` }, v);
        for (const state of ['unchecked', 'trusted', 'untrusted']) this.enclaveClock.set({ state }, state === clock ? 1 : 0);
        if (clockDriftMs !== null) this.enclaveClockDrift.set(clockDriftMs / 1000);
      }
      this.enclaveMemory.set({ kind: 'rss' }, h.memory.rssBytes);
      this.enclaveMemory.set({ kind: 'heap_used' }, h.memory.heapUsedBytes);
      this.enclaveMemory.set({ kind: 'external' }, h.memory.externalBytes);
    }
    return this.registry.metrics();
  }
}
