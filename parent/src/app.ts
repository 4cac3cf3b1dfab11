/**
 * Wires the parent daemon: key store, enclave pool, KMS proxy, egress relay, caller API (with the TrueWallet
 * routes), metrics. `stop` drains the API, then the proxy and the relay, then closes the pool and the database.
 */
import { KMSClient } from '@aws-sdk/client-kms';
import { createLogger, type Logger } from '@nks/shared/log';
import type { EnclaveHealth } from '@nks/shared/enclave-api';
import { createTransport, type Transport } from '@nks/shared/transport';
import { ApiServer } from './api/server';
import { TokenAuth } from './api/auth';
import { sharedClientAddress } from './api/client-address';
import { callerRoutes } from './api/routes';
import { walletRoutes } from './api/wallets';
import type { ParentConfig } from './config';
import type { KnownIdentity } from './enclave/identity';
import { EnclavePool, type PoolOptions } from './enclave/pool';
import { startEgressRelay } from './egress/relay';
import { KeyRegistry } from './key-registry';
import { KmsProxy } from './kms/proxy';
import { Metrics } from './metrics';
import { KeyStore } from './store/key-store';
import { WalletKeys } from './wallet-keys';

export interface RunningParent {
  url: string;
  store: KeyStore;
  pool: EnclavePool;
  keys: KeyRegistry;
  metrics: Metrics;
  /**
   * The hosts of the JWKS URIs of the active JWT projects (verified records): what the egress relay allows
   * besides its configured hosts (`allowedHosts: () => parent.jwksHosts()`).
   */
  jwksHosts(): string[];
  stop(): Promise<void>;
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
        }
      : {}),
  });
}

/** The enclave pool of this configuration (not started), learning the keystore identity unless `learnIdentity` is false. */
export function enclavePoolFor(
  config: ParentConfig,
  transport: Transport,
  logger: Logger,
  extra: Partial<Pick<PoolOptions, 'onCall' | 'onStateChange' | 'size'>> & {
    onIdentity?: (identity: KnownIdentity) => void;
    learnIdentity?: boolean;
  } = {},
): EnclavePool {
  const { onIdentity, learnIdentity = true, ...rest } = extra;
  return new EnclavePool({
    transport,
    address: config.enclave.address,
    size: config.enclave.poolSize,
    logger,
    connectTimeoutMs: config.enclave.connectTimeoutMs,
    deadlineMs: config.enclave.deadlineMs,
    maxInFlightPerConnection: config.enclave.maxInFlightPerConnection,
    ...(learnIdentity ? { identity: { pinned: config.identity.publicKey, ...(onIdentity ? { onLearned: onIdentity } : {}) } } : {}),
    ...rest,
  });
}

export async function startParent(config: ParentConfig, logger: Logger): Promise<RunningParent> {
  const store = new KeyStore(config.database.path);
  const transport = createTransport(config.transport);
  let proxyListening = false;

  // The pool's callbacks only fire after start(), by which time `metrics` and `keys` exist.
  const pool = enclavePoolFor(config, transport, logger, {
    onCall: (method, outcome, seconds) => metrics.enclaveRpc.observe({ method, outcome }, seconds),
    onStateChange: (up) => metrics.enclaveUp.set(up ? 1 : 0),
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
  const metrics = new Metrics({ keyCounts: () => store.counts(), enclaveHealth });
  metrics.enclaveUp.set(0);

  const kms = kmsClientFor(config);
  const proxy = kmsProxyFor(config, kms, logger, metrics);
  await proxy.listen(transport, config.kmsProxy.listen);
  proxyListening = true;
  const keys = new KeyRegistry(store, pool, logger);
  const wallets = new WalletKeys(keys, store, pool, logger.child({ component: 'wallets' }));
  pool.start();
  // The enclave's only way out (JWKS fetches): to the JWKS hosts of active JWT projects and configured hosts.
  const relay = await startEgressRelay({
    config: config.egress,
    transport,
    allowedHosts: () => keys.projects.jwksHosts(),
    log: logger.child({ component: 'egress' }),
    metrics: metrics.registry,
  });

  const caller = callerRoutes(keys);
  const truewallet = walletRoutes({ wallets, config: config.wallets, metrics, logger: logger.child({ component: 'wallets' }) });
  const api = new ApiServer({
    config: config.api,
    routes: (app) => {
      caller(app);
      truewallet(app);
    },
    auth: new TokenAuth(config.tokens),
    metrics,
    logger: logger.child({ component: 'api' }),
    accessLog: createLogger({ name: 'parent', level: config.logLevel, redact: false, bufferBytes: 8192 }).child({ component: 'access' }),
    readiness: async () => {
      const health = await enclaveHealth();
      const checks = {
        // Up means a connection passed its handshake, which includes the identity check.
        enclave: health !== null,
        kmsProxy: proxyListening,
        enclaveKmsLink: health?.kmsProxy === 'connected',
        database: store.db.open,
      };
      return { ready: Object.values(checks).every(Boolean), checks };
    },
  });
  const url = await api.listen();
  // Behind a proxy that is not trusted, every caller is the proxy: one sender's forged tokens spend the failure
  // budget of all of them (docs/DEPLOY.md, "The TrueWallet routes behind a load balancer or proxy").
  const shared = sharedClientAddress(config.api);
  metrics.sharedClientAddress.set(shared ? 1 : 0);
  if (shared)
    logger.warn(
      { component: 'api' },
      `WARNING: ${shared}. A proxy on this host that relays the TrueWallet routes makes every caller one client address, so ` +
        "one sender's invalid tokens rate-limit all of them: list the proxy in api.trustProxy (it must set X-Forwarded-For), " +
        'or let callers reach the API directly (docs/DEPLOY.md, "The TrueWallet routes behind a load balancer or proxy")',
    );

  return {
    url,
    store,
    pool,
    keys,
    metrics,
    jwksHosts: () => keys.projects.jwksHosts(),
    async stop() {
      await api.close(config.api.drainMs);
      await proxy.close(Math.min(config.api.drainMs, 5000));
      proxyListening = false;
      await relay.close();
      await pool.close();
      kms.destroy();
      store.close();
    },
  };
}
