/**
 * Prometheus metrics (prom-client), served on the operational listener (metrics-server.ts), not the caller API: HTTP requests and latency by route and status, enclave RPC latency,
 * KMS calls by outcome, enclave up, keys total, the wallet routes' TLS (installed, certificate expiry), and the
 * enclave's own health counters (read from `enclave.health` at scrape time with a short deadline), its wallet
 * routes' connections and answers and its signing policies' evaluations and denials included, and the policy
 * changes and key lifecycle transitions made through this parent, and the pending successors. The ingress and egress relays register `nks_ingress_*` and `nks_egress_*`
 * on the same registry.
 */
import client from 'prom-client';
import type { EnclaveHealth, EnclaveLogs, TlsStatus } from '@nks/shared/enclave-api';
import type { KeyCounts } from './store/types';

export class Metrics {
  readonly registry = new client.Registry();
  readonly httpRequests: client.Counter<'route' | 'method' | 'status'>;
  readonly httpDuration: client.Histogram<'route' | 'method' | 'status'>;
  readonly enclaveRpc: client.Histogram<'method' | 'outcome'>;
  readonly kmsCalls: client.Counter<'outcome'>;
  readonly kmsDuration: client.Histogram<'outcome'>;
  readonly kmsConsecutiveFailures: client.Gauge;
  readonly enclaveUp: client.Gauge;
  /** Liveness probes of enclave connections not answered in time (docs/OPERATIONS.md, "A frozen enclave"). */
  readonly enclavePingMisses: client.Counter;
  /** Enclave calls refused at once because enclave.maxQueued were in flight. */
  readonly enclaveQueueFull: client.Counter;
  readonly inFlight: client.Gauge;
  readonly overloaded: client.Counter;
  /** Connections Node closed at once because `api.maxConnections` were open. */
  readonly connectionsDropped: client.Counter;
  readonly tlsInstalled: client.Gauge;
  readonly tlsNotAfter: client.Gauge;
  private readonly enclaveCounter: client.Gauge<'counter'>;
  private readonly enclaveErrors: client.Gauge<'reason'>;
  private readonly enclaveMemory: client.Gauge<'kind'>;
  private readonly enclaveUptime: client.Gauge;
  private readonly enclaveClock: client.Gauge<'state'>;
  private readonly enclaveClockDrift: client.Gauge;
  private readonly enclaveUnseal: client.Gauge<'state'>;
  private readonly enclaveWalletRequests: client.Gauge<'outcome'>;
  /** Records made by `PUT /v1/projects/{id}/policies` that changed a project's policies (this parent process). */
  readonly policyChanges: client.Counter;
  /** Key lifecycle transitions made through this parent's caller API (docs/LIFECYCLE.md). */
  readonly keyTransitions: client.Counter<'transition'>;
  private readonly policyDenials: client.Counter<'by'>;
  private readonly policyEvaluations: client.Counter;
  private readonly policyTracked: client.Gauge;
  /** The enclave's log channel (enclave.logs, pulled every second): lines re-logged, lines dropped, its counters. */
  private readonly enclaveLogLines: client.Counter<'enclave' | 'level'>;
  private readonly enclaveLogDropped: client.Gauge<'enclave'>;
  private readonly enclaveCounterByEnclave: client.Gauge<'enclave' | 'counter'>;

  private lastCounts: KeyCounts = { total: 0, disabled: 0, withoutRecord: 0, pending: 0 };
  private lastCountsAt = 0;
  private counting: Promise<KeyCounts> | undefined;

  /**
   * The key counts for one scrape (its three gauges share one query): within a second, or the last ones known,
   * so a stalled database does not stall /metrics.
   */
  private keyCounts(): Promise<KeyCounts> {
    if (Date.now() - this.lastCountsAt < (this.sources.keyCountsMaxAgeMs ?? 0)) return Promise.resolve(this.lastCounts);
    this.counting ??= new Promise<KeyCounts>((resolve) => {
      const timer = setTimeout(() => resolve(this.lastCounts), 1000);
      this.sources.keyCounts().then(
        (c) => {
          this.lastCounts = c;
          this.lastCountsAt = Date.now();
          clearTimeout(timer);
          resolve(c);
        },
        () => {
          clearTimeout(timer);
          resolve(this.lastCounts);
        },
      );
    }).finally(() => setTimeout(() => (this.counting = undefined), 250).unref());
    return this.counting;
  }

  constructor(
    private readonly sources: {
      /** Counted by the database; a scrape waits for them at most a second, then shows the last ones. */
      keyCounts: () => Promise<KeyCounts>;
      /**
       * Counts younger than this are shown again rather than counted anew: a shared database's COUNT over every
       * key, from every instance at every scrape, is load the figures do not need.
       */
      keyCountsMaxAgeMs?: number;
      /** Whether the store hears every change other instances make (docs/STORAGE.md, "Coherence"). */
      storeCoherent?: () => boolean;
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
    this.kmsConsecutiveFailures = new client.Gauge({
      name: 'nks_kms_consecutive_failures',
      help: 'KMS Decrypts in a row that KMS did not answer (unreachable, 5xx, throttled, silent); 0 after any answer',
      registers: [r],
    });
    this.enclaveUp = new client.Gauge({
      name: 'nks_enclave_up',
      help: '1 when at least one enclave connection is up (connected and answering its liveness probes)',
      registers: [r],
    });
    this.enclavePingMisses = new client.Counter({
      name: 'nks_enclave_ping_misses_total',
      help: 'Liveness probes of enclave connections not answered within enclave.pingTimeoutMs',
      registers: [r],
    });
    this.enclaveQueueFull = new client.Counter({
      name: 'nks_enclave_queue_rejections_total',
      help: 'Enclave calls refused with OVERLOADED because enclave.maxQueued were in flight',
      registers: [r],
    });
    this.inFlight = new client.Gauge({ name: 'nks_http_in_flight', help: 'Caller API requests being served', registers: [r] });
    this.overloaded = new client.Counter({
      name: 'nks_http_overloaded_total',
      help: 'Requests refused with 503 OVERLOADED',
      registers: [r],
    });
    this.connectionsDropped = new client.Counter({
      name: 'nks_http_connections_dropped_total',
      help: 'Connections to the caller API closed at once because api.maxConnections were open',
      registers: [r],
    });
    this.tlsInstalled = new client.Gauge({
      name: 'nks_tls_installed',
      help: "1 while the enclave serves the wallet routes with an installed TLS certificate (enclave.health's tls), else 0",
      registers: [r],
    });
    this.tlsInstalled.set(0);
    this.tlsNotAfter = new client.Gauge({
      name: 'nks_tls_not_after_seconds',
      help: "When the wallet routes' installed TLS certificate expires (Unix time): alert well before it",
      registers: [r],
    });
    this.enclaveWalletRequests = new client.Gauge({
      name: 'nks_enclave_wallet_requests',
      help: "The enclave's wallet routes: answers by outcome since it started (enclave.health)",
      labelNames: ['outcome'],
      registers: [r],
    });
    const counts = () => this.keyCounts();
    const gauge: client.Gauge<'state'> = new client.Gauge({
      name: 'nks_keys',
      help: 'Key records by state',
      labelNames: ['state'],
      registers: [r],
      collect: async () => {
        const c = await this.keyCounts();
        gauge.set({ state: 'enabled' }, c.total - c.disabled);
        gauge.set({ state: 'disabled' }, c.disabled);
      },
    });
    new client.Gauge({
      name: 'nks_keys_without_record',
      help: 'Keys made before 0.4 that have no signed record yet: they cannot sign until migrated (parent migrate)',
      registers: [r],
      async collect() {
        this.set((await counts()).withoutRecord);
      },
    });
    new client.Gauge({
      name: 'nks_keys_pending',
      help: 'Pending keys (successors made, neither activated nor cancelled yet): docs/LIFECYCLE.md',
      registers: [r],
      async collect() {
        this.set((await counts()).pending);
      },
    });
    new client.Gauge({
      name: 'nks_store_coherent',
      help: 'Whether this parent hears every change other instances make to the shared store (1), or trusts cached rows only for a second (0)',
      registers: [r],
      collect() {
        this.set(sources.storeCoherent?.() === false ? 0 : 1);
      },
    });
    this.keyTransitions = new client.Counter({
      name: 'nks_key_transitions_total',
      help: 'Key lifecycle transitions made through the caller API: successor, activate, cancel (docs/LIFECYCLE.md)',
      labelNames: ['transition'],
      registers: [r],
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
    this.policyChanges = new client.Counter({
      name: 'nks_policy_changes_total',
      help: "Project records made to change a project's signing policies (PUT /v1/projects/{id}/policies)",
      registers: [r],
    });
    this.policyDenials = new client.Counter({
      name: 'nks_policy_denials_total',
      help: 'Sign requests refused POLICY_DENIED by the enclave since it started, by a deny rule, no allow rule, or a limit (enclave.health)',
      labelNames: ['by'],
      registers: [r],
    });
    this.policyEvaluations = new client.Counter({
      name: 'nks_policy_evaluations_total',
      help: "Sign requests the enclave evaluated against a project's signing policies since it started (enclave.health)",
      registers: [r],
    });
    this.policyTracked = new client.Gauge({
      name: 'nks_policy_tracked_counters',
      help: "Limit counters the enclave holds in memory (enclave.health), at most its configuration's policy.maxTrackedCounters",
      registers: [r],
    });
    this.enclaveLogLines = new client.Counter({
      name: 'nks_enclave_log_lines_total',
      help: "The enclave's log lines the parent pulled (enclave.logs) and re-logged, by enclave (its address) and level",
      labelNames: ['enclave', 'level'],
      registers: [r],
    });
    this.enclaveLogDropped = new client.Gauge({
      name: 'nks_enclave_log_dropped',
      help: "The enclave's log lines overwritten in its ring before the parent pulled them, since the enclave started",
      labelNames: ['enclave'],
      registers: [r],
    });
    this.enclaveCounterByEnclave = new client.Gauge({
      name: 'nks_enclave_counters',
      help: "The enclave's counters (as in enclave.health) by enclave (its address), refreshed with every log pull",
      labelNames: ['enclave', 'counter'],
      registers: [r],
    });
    this.enclaveClockDrift = new client.Gauge({
      name: 'nks_enclave_clock_drift_seconds',
      help: 'The enclave clock minus the last attestation timestamp (enclave.health)',
      registers: [r],
    });
    this.enclaveUnseal = new client.Gauge({
      name: 'nks_enclave_unseal',
      help: 'Can the enclave unseal (enclave.health): 1 for its state (unknown, ok, failing), 0 for the others',
      labelNames: ['state'],
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
      // The wallet routes served by the enclave (docs/TLS.md): counters as wallets_<name>, answers by outcome.
      if (h.wallets) {
        const { requests, ...walletCounters } = h.wallets;
        for (const [k, v] of Object.entries(walletCounters)) this.enclaveCounter.set({ counter: `wallets_${k}` }, v);
        for (const [k, v] of Object.entries(requests)) this.enclaveWalletRequests.set({ outcome: k }, v);
      }
      // Signing policies (docs/POLICIES.md): the enclave's own totals since it started, exported as counters (a
      // restart of the enclave is a counter reset, which rate() handles).
      if (h.policy) {
        const { rule, noRule, limit } = h.policy.denials;
        mirror(this.policyDenials, [
          [{ by: 'rule' }, rule],
          [{ by: 'no_rule' }, noRule],
          [{ by: 'limit' }, limit],
        ]);
        mirror(this.policyEvaluations, [[{}, h.policy.evaluations]]);
        this.policyTracked.set(h.policy.trackedCounters);
      }
      if (h.tls) this.setTls(h.tls);
      if (h.unseal) for (const state of ['unknown', 'ok', 'failing']) this.enclaveUnseal.set({ state }, state === h.unseal ? 1 : 0);
      this.enclaveMemory.set({ kind: 'rss' }, h.memory.rssBytes);
      this.enclaveMemory.set({ kind: 'heap_used' }, h.memory.heapUsedBytes);
      this.enclaveMemory.set({ kind: 'external' }, h.memory.externalBytes);
    }
    return this.registry.metrics();
  }

  /** One answered enclave.logs pull of `enclave` (enclave-link/logs.ts): lines by level, drops, counters. */
  recordEnclaveLogs(enclave: string, pulled: EnclaveLogs, levels: Record<string, number>): void {
    for (const [level, n] of Object.entries(levels)) this.enclaveLogLines.inc({ enclave, level }, n);
    if (Number.isFinite(pulled.dropped)) this.enclaveLogDropped.set({ enclave }, pulled.dropped);
    for (const [counter, v] of Object.entries(pulled.counters ?? {}))
      if (typeof v === 'number' && Number.isFinite(v)) this.enclaveCounterByEnclave.set({ enclave, counter }, v);
  }

  /** What the enclave serves on the wallet routes (null: nothing, or not known). */
  setTls(status: TlsStatus | null): void {
    const installed = status?.state === 'installed';
    this.tlsInstalled.set(installed ? 1 : 0);
    const notAfter = installed && status.notAfter ? Date.parse(status.notAfter) : NaN;
    if (Number.isFinite(notAfter)) this.tlsNotAfter.set(Math.floor(notAfter / 1000));
  }
}

/** Sets a counter to totals another process keeps (prom-client counters only go up: reset, then add). */
function mirror<L extends string>(counter: client.Counter<L>, values: Array<[Partial<Record<L, string>>, number]>): void {
  counter.reset();
  for (const [labels, v] of values) if (Number.isFinite(v) && v >= 0) counter.inc(labels, v);
}
