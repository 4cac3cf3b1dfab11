/**
 * Wires the parent daemon: key store, enclave pool, KMS proxy, caller API, metrics. `stop` drains the API,
 * then the proxy, then closes the pool and the database.
 */
import { KMSClient } from '@aws-sdk/client-kms';
import { createLogger, type Logger } from '@nks/shared/log';
import type { EnclaveHealth } from '@nks/shared/enclave-api';
import { createTransport } from '@nks/shared/transport';
import { ApiServer } from './api/server';
import { TokenAuth } from './api/auth';
import { callerRoutes } from './api/routes';
import type { ParentConfig } from './config';
import { EnclavePool } from './enclave/pool';
import { KeyRegistry } from './key-registry';
import { KmsProxy } from './kms/proxy';
import { Metrics } from './metrics';
import { KeyStore } from './store/key-store';

export interface RunningParent {
  url: string;
  store: KeyStore;
  pool: EnclavePool;
  metrics: Metrics;
  stop(): Promise<void>;
}

export async function startParent(config: ParentConfig, logger: Logger): Promise<RunningParent> {
  const store = new KeyStore(config.database.path);
  const transport = createTransport(config.transport);
  let proxyListening = false;

  // The pool's callbacks only fire after start(), by which time `metrics` exists.
  const pool = new EnclavePool({
    transport,
    address: config.enclave.address,
    size: config.enclave.poolSize,
    logger,
    connectTimeoutMs: config.enclave.connectTimeoutMs,
    deadlineMs: config.enclave.deadlineMs,
    maxInFlightPerConnection: config.enclave.maxInFlightPerConnection,
    onCall: (method, outcome, seconds) => metrics.enclaveRpc.observe({ method, outcome }, seconds),
    onStateChange: (up) => metrics.enclaveUp.set(up ? 1 : 0),
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

  const kms = new KMSClient({
    region: config.kmsProxy.region,
    maxAttempts: 1, // retries happen in the proxy, within the request deadline
    ...(config.kmsProxy.endpoint ? { endpoint: config.kmsProxy.endpoint } : {}),
  });
  const proxy = new KmsProxy({
    client: kms,
    allowedKeyArns: config.kmsProxy.allowedKeyArns,
    deadlineMs: config.kmsProxy.deadlineMs,
    maxConcurrent: config.kmsProxy.maxConcurrent,
    logger: logger.child({ component: 'kms-proxy' }),
    onCall: (outcome, seconds) => {
      metrics.kmsCalls.inc({ outcome });
      metrics.kmsDuration.observe({ outcome }, seconds);
    },
  });
  await proxy.listen(transport, config.kmsProxy.listen);
  proxyListening = true;
  pool.start();

  const keys = new KeyRegistry(store, pool, logger);
  const api = new ApiServer({
    config: config.api,
    routes: callerRoutes(keys),
    auth: new TokenAuth(config.tokens),
    metrics,
    logger: logger.child({ component: 'api' }),
    accessLog: createLogger({ name: 'parent', level: config.logLevel, redact: false, bufferBytes: 8192 }).child({ component: 'access' }),
    readiness: async () => {
      const health = await enclaveHealth();
      const checks = {
        enclave: health !== null,
        kmsProxy: proxyListening,
        enclaveKmsLink: health?.kmsProxy === 'connected',
        database: store.db.open,
      };
      return { ready: Object.values(checks).every(Boolean), checks };
    },
  });
  const url = await api.listen();

  return {
    url,
    store,
    pool,
    metrics,
    async stop() {
      await api.close(config.api.drainMs);
      await proxy.close(Math.min(config.api.drainMs, 5000));
      proxyListening = false;
      await pool.close();
      kms.destroy();
      store.close();
    },
  };
}
