/**
 * Wires the parent daemon: key store, enclave pool, KMS proxy, egress relay, the wallet routes' ingress relay
 * and wallet store (the enclave serves those routes over TLS: docs/TLS.md), the TLS keys' re-install after each
 * enclave connection, caller API (with the TLS admin routes; 421 on the wallet paths), and the operational
 * listener (`/metrics`, `/healthz`, `/readyz`: metrics-server.ts). `stop` first turns `/readyz` 503 and keeps
 * serving for `api.preDrainMs` (when asked: SIGTERM), then closes the ingress relay, drains the API, then the
 * wallet store, the proxy and the egress relay, the metrics listener, the pool and the database.
 */
import { KMSClient } from '@aws-sdk/client-kms';
import { createLogger, type Logger } from '@nks/shared/log';
import type { EnclaveHealth } from '@nks/shared/enclave-api';
import { createTransport, type Transport } from '@nks/shared/transport';
import { ApiServer } from './api/server';
import { TokenAuth } from './api/auth';
import { callerRoutes } from './api/routes';
import { tlsRoutes } from './api/tls-routes';
import { tokenRateLimits } from './api/token-limits';
import { reloadTokens, type ReloadOutcome } from './api/token-reload';
import type { ParentConfig } from './config';
import type { KnownIdentity } from './enclave-link/identity';
import { EnclavePool, type PoolOptions } from './enclave-link/pool';
import { EnclaveLogPuller } from './enclave-link/logs';
import { startEgressRelay } from './egress/relay';
import { startIngressRelay } from './ingress/relay';
import { KeyRegistry } from './key-registry';
import { KmsProxy } from './kms/proxy';
import { Metrics } from './metrics';
import { EnclaveCacheSettings } from './enclave-cache';
import { MetricsServer } from './metrics-server';
import type { KeyStore } from './store/key-store';
import { openStore } from './store/open';
import { TlsKeys } from './tls/tls-keys';
import { WalletStore } from './wallet-store/server';

export interface RunningParent {
  url: string;
  /** The operational listener's address (`http://127.0.0.1:9464`, `unix:…`), or undefined with `metrics.enabled: false`. */
  metricsUrl: string | undefined;
  store: KeyStore;
  pool: EnclavePool;
  keys: KeyRegistry;
  metrics: Metrics;
  tls: TlsKeys;
  /** The port the wallet routes' ingress relay listens on (`wallets.relay.port`, or the one chosen for 0). */
  walletsRelayPort: number;
  /**
   * The hosts of the JWKS URIs of the active JWT projects (verified records): what the egress relay allows
   * besides its configured hosts (`allowedHosts: () => parent.jwksHosts()`).
   */
  jwksHosts(): Promise<string[]>;
  /** Re-reads the tokens from the configuration `file` (SIGHUP: token-reload.ts); a bad file keeps the old ones. */
  reloadTokens(file: string, env?: NodeJS.ProcessEnv): ReloadOutcome;
  /**
   * Stops everything. With `preDrain` (SIGTERM), `/readyz` first answers 503 for `api.preDrainMs` while every
   * request is served as before, so that a load balancer stops sending before the listener closes.
   */
  stop(opts?: { preDrain?: boolean }): Promise<void>;
}

/** The KMS client the proxy calls through: retries happen in the proxy, within the request deadline. */
export function kmsClientFor(config: ParentConfig): KMSClient {
  return new KMSClient({
    region: config.kmsProxy.region,
    maxAttempts: 1,
    ...(config.kmsProxy.endpoint ? { endpoint: config.kmsProxy.endpoint } : {}),
  });
}

/** The KMS proxy of this configuration (not listening yet). */
export function kmsProxyFor(config: ParentConfig, kms: KMSClient, logger: Logger, metrics?: Metrics): KmsProxy {
  return new KmsProxy({
    client: kms,
    allowedKeyArns: config.kmsProxy.allowedKeyArns,
    deadlineMs: config.kmsProxy.deadlineMs,
    maxConcurrent: config.kmsProxy.maxConcurrent,
    logger: logger.child({ component: 'kms-proxy' }),
    ...(metrics
      ? {
          onCall: (outcome: string, seconds: number) => {
            metrics.kmsCalls.inc({ outcome });
            metrics.kmsDuration.observe({ outcome }, seconds);
          },
          onFailureStreak: (n: number) => metrics.kmsConsecutiveFailures.set(n),
        }
      : {}),
  });
}

/** The enclave pool of this configuration (not started), learning the keystore identity unless `learnIdentity` is false. */
export function enclavePoolFor(
  config: ParentConfig,
  transport: Transport,
  logger: Logger,
  extra: Partial<Pick<PoolOptions, 'onCall' | 'onStateChange' | 'onConnected' | 'size' | 'onPingMiss' | 'onQueueFull'>> & {
    onIdentity?: (identity: KnownIdentity) => void | Promise<void>;
    learnIdentity?: boolean;
  } = {},
): EnclavePool {
  const { onIdentity, learnIdentity = true, ...rest } = extra;
  // The enclave's key cache settings, on every connection (not for the genesis command: a genesis image has no cache).
  const cacheSettings = new EnclaveCacheSettings(config.enclave.cache, logger.child({ component: 'enclave-cache' }));
  return new EnclavePool({
    transport,
    address: config.enclave.address,
    size: config.enclave.poolSize,
    logger,
    connectTimeoutMs: config.enclave.connectTimeoutMs,
    deadlineMs: config.enclave.deadlineMs,
    maxInFlightPerConnection: config.enclave.maxInFlightPerConnection,
    maxQueued: config.enclave.maxQueued,
    liveness: { intervalMs: config.enclave.pingIntervalMs, timeoutMs: config.enclave.pingTimeoutMs, misses: config.enclave.pingMisses },
    ...(learnIdentity
      ? {
          identity: { pinned: config.identity.publicKey, ...(onIdentity ? { onLearned: onIdentity } : {}) },
          configure: cacheSettings.configure,
        }
      : {}),
    ...rest,
  });
}

export async function startParent(config: ParentConfig, logger: Logger): Promise<RunningParent> {
  const store = await openStore(config.database, logger.child({ component: 'store' }));
  for (const warning of config.deprecations ?? []) logger.warn(warning);
  const transport = createTransport(config.transport);
  let proxyListening = false;

  // The pool's callbacks only fire after start(), by which time `metrics`, `keys` and `tls` exist.
  const pool = enclavePoolFor(config, transport, logger, {
    onCall: (method, outcome, seconds) => metrics.enclaveRpc.observe({ method, outcome }, seconds),
    onStateChange: (up) => {
      metrics.enclaveUp.set(up ? 1 : 0);
      if (!up) metrics.setTls(null);
    },
    onConnected: () => tls.onEnclaveConnected(),
    onPingMiss: () => metrics.enclavePingMisses.inc(),
    onQueueFull: () => metrics.enclaveQueueFull.inc(),
    onIdentity: (identity) => keys.useIdentity(identity),
  });
  const enclaveHealth = async (): Promise<EnclaveHealth | null> => {
    if (!pool.up) return null;
    try {
      return await pool.call('enclave.health', {}, 1000);
    } catch {
      return null;
    }
  };
  const metrics = new Metrics({
    keyCounts: () => store.counts(),
    keyCountsMaxAgeMs: store.engine.shared ? 30_000 : 0,
    storeCoherent: () => store.coherent,
    enclaveHealth,
  });
  metrics.enclaveUp.set(0);

  const kms = kmsClientFor(config);
  const proxy = kmsProxyFor(config, kms, logger, metrics);
  await proxy.listen(transport, config.kmsProxy.listen);
  proxyListening = true;
  const keys = new KeyRegistry(store, pool, logger, {
    onPolicyChange: () => metrics.policyChanges.inc(),
    onTransition: (transition) => metrics.keyTransitions.inc({ transition }),
  });
  const tls = new TlsKeys({
    store,
    pool,
    records: () => keys.records(),
    logger: logger.child({ component: 'tls' }),
    onStatus: (status) => metrics.setTls(status),
  });
  // A certificate installed through another instance (one database): this enclave serves it too.
  store.onTlsChange(() => tls.onEnclaveConnected());
  // What the enclave's wallet routes ask the parent (records it stores and cannot forge).
  const walletStore = new WalletStore({
    store,
    records: () => keys.records(),
    logger: logger.child({ component: 'wallet-store' }),
    maxConcurrent: config.wallets.store.maxConcurrent,
  });
  await walletStore.listen(transport, config.wallets.store.listen);
  pool.start();
  // The enclave's own log lines and counters (on Nitro its console exists only in debug mode): pulled each second.
  const enclaveLogs = new EnclaveLogPuller({
    pool,
    enclave: config.enclave.address,
    logger: logger.child({ component: 'enclave-log' }),
    onPull: (pulled, levels) => metrics.recordEnclaveLogs(config.enclave.address, pulled, levels),
  });
  enclaveLogs.start();
  // The enclave's only way out (JWKS fetches): to the JWKS hosts of active JWT projects and configured hosts.
  const relay = await startEgressRelay({
    config: config.egress,
    transport,
    allowedHosts: () => keys.projects.jwksHosts(),
    log: logger.child({ component: 'egress' }),
    metrics: metrics.registry,
  });

  // The public's way to the enclave's HTTPS server for the wallet routes: ciphertext only.
  const ingress = await startIngressRelay({
    config: config.wallets.relay,
    transport,
    log: logger.child({ component: 'ingress' }),
    metrics: metrics.registry,
  });

  // The audit lines (api/audit.ts), one per signature, hold only fields that code picks (scalars of the request,
  // never a token or payload): their own logger, without the redaction that costs about 12 µs a line, written in
  // batches like the access log rather than a write to stdout per signature (docs/OPERATIONS.md, "Logs").
  const auditLog = createLogger({ name: 'parent', level: config.logLevel, redact: false, bufferBytes: 8192 }).child({ component: 'audit' });
  const caller = callerRoutes(keys, auditLog);
  const tlsAdmin = tlsRoutes(tls);
  const limits = tokenRateLimits();
  // One TokenAuth for the life of the process: a reload replaces its tokens (token-reload.ts).
  const auth = new TokenAuth(config.tokens, config.tokenDefaults);
  const expired = auth.expired();
  if (expired.length > 0) logger.warn({ tokens: expired }, 'configured tokens have expired: they are refused');
  const api = new ApiServer({
    config: config.api,
    routes: (app) => {
      limits(app);
      caller(app);
      tlsAdmin(app);
    },
    walletsPublicUrl: config.wallets.publicUrl,
    auth,
    metrics,
    logger: logger.child({ component: 'api' }),
    accessLog: createLogger({ name: 'parent', level: config.logLevel, redact: false, bufferBytes: 8192 }).child({ component: 'access' }),
    readiness: async () => {
      const [health, database] = await Promise.all([enclaveHealth(), store.ping(1000)]);
      const gating = {
        // Up means a connection passed its handshake, which includes the identity check, and answers its
        // liveness probes (a frozen enclave is not ready even while its health is read from an earlier answer).
        enclave: health !== null && pool.up,
        kmsProxy: proxyListening,
        enclaveKmsLink: health?.kmsProxy === 'connected',
        database,
        // The enclave can unseal: false once KMS refused this image (a key policy that does not approve it).
        unseal: health !== null && health.unseal !== 'failing',
      };
      // KMS unreachable, failing or throttled for KMS_UNREADY_AFTER decrypts in a row. Reported, not gating: warm
      // keys sign without KMS, and an outage of KMS is every instance's at once (docs/OPERATIONS.md, "Readiness").
      const checks = { ...gating, kms: proxy.kmsReady };
      return { ready: Object.values(gating).every(Boolean), checks };
    },
  });
  const url = await api.listen();
  const metricsServer = config.metrics.enabled
    ? new MetricsServer({ config: config.metrics, metrics, readiness: () => api.readiness() })
    : undefined;
  const metricsUrl = await metricsServer?.listen();

  return {
    url,
    metricsUrl,
    store,
    pool,
    keys,
    metrics,
    tls,
    walletsRelayPort: ingress.port as number,
    jwksHosts: () => keys.projects.jwksHosts(),
    reloadTokens: (file, env = process.env) =>
      reloadTokens({ file, env, running: config, auth, logger: logger.child({ component: 'tokens' }) }),
    async stop({ preDrain = false } = {}) {
      api.shutdown();
      if (preDrain && config.api.preDrainMs > 0) await new Promise((resolve) => setTimeout(resolve, config.api.preDrainMs));
      await ingress.close();
      tls.stop();
      await api.close(config.api.drainMs);
      await walletStore.close(Math.min(config.api.drainMs, 5000));
      await proxy.close(Math.min(config.api.drainMs, 5000));
      proxyListening = false;
      await relay.close();
      await enclaveLogs.stop();
      await metricsServer?.close();
      await pool.close();
      kms.destroy();
      await store.close();
    },
  };
}
