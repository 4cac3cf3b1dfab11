/**
 * Wires the enclave together from its configuration: NSM, recipient key, KMS-proxy client, key cache and
 * vault, and the RPC server. `startEnclave` returns once it listens; `stop` drains and zeroes the cache.
 */
import { createTransport } from '@nks/shared/transport';
import type { Logger } from '@nks/shared/log';
import { RpcClient, RpcServer } from '@nks/shared/rpc';
import type { KmsProxyApi } from '@nks/shared/enclave-api';
import type { EnclaveConfig } from './config';
import { KeyCache } from './keys/cache';
import { KeyVault } from './keys/vault';
import { FailedOpens } from './kms/failed-opens';
import { RecipientKeys } from './kms/recipient';
import { Unsealer } from './kms/unseal';
import { enclaveMethods } from './methods';
import { NsmClient, type NsmTransport } from './nsm/client';
import { DeviceNsmTransport } from './nsm/device';
import { SocketNsmTransport } from './nsm/socket';
import { SignerPool } from './signing/pool';

export interface RunningEnclave {
  server: RpcServer;
  kmsProxy: RpcClient<KmsProxyApi>;
  cache: KeyCache;
  nsm: NsmClient;
  stop(drainMs?: number): Promise<void>;
}

function nsmTransport(config: EnclaveConfig): NsmTransport {
  return config.nsm.kind === 'device' ? new DeviceNsmTransport(config.nsm.path) : new SocketNsmTransport(config.nsm.socket);
}

/** `script` is the program file (the bundle), which signer threads run too. */
export async function startEnclave(config: EnclaveConfig, logger: Logger, script: string): Promise<RunningEnclave> {
  const transport = createTransport(config.transport);
  const nsm = new NsmClient(nsmTransport(config));
  const description = await nsm.describe(); // proves the NSM answers before anything is served
  logger.info({ nsm: nsm.kind, moduleId: description.moduleId, signerThreads: config.signing.workers }, 'NSM ready');

  const kmsProxy = new RpcClient<KmsProxyApi>({
    name: 'kms-proxy',
    transport,
    address: config.kmsProxy,
    logger,
    defaultDeadlineMs: config.limits.kmsDeadlineMs,
    maxFrameBytes: config.limits.maxFrameBytes,
    // A cold sign waits briefly for the proxy link (e.g. after a parent restart) rather than failing.
    waitForConnectionMs: 2000,
  });
  kmsProxy.start();

  const recipient = new RecipientKeys(nsm, config.recipient);
  const cache = new KeyCache(config.cache);
  cache.startSweeper();
  const failedOpens = new FailedOpens(config.failedOpens);
  const unsealer = new Unsealer(kmsProxy, recipient, failedOpens, { kmsKeyArn: config.kmsKeyArn, deadlineMs: config.limits.kmsDeadlineMs });
  const signers = new SignerPool(config.signing.workers, script, (message, err) => logger.error({ err }, message), {
    deadlineMs: config.signing.deadlineMs,
  });
  const keys = new KeyVault({ cache, unsealer, nsm, kmsKeyArn: config.kmsKeyArn, kmsPublicKey: config.kmsPublicKeyObject, signers });
  let served: RpcServer | undefined;
  const { methods } = enclaveMethods({
    keys,
    cache,
    unsealer,
    recipient,
    failedOpens,
    signers,
    nsm,
    kmsProxy,
    startedAt: Date.now(),
    rpcStats: () => served?.stats,
  });

  // The server's per-connection limits (requests and bytes in flight, unsent answers) are its defaults: a
  // parent that sends and never reads is paused, then disconnected, instead of growing the enclave's memory.
  const server = new RpcServer({
    name: 'enclave',
    methods,
    logger,
    maxConcurrent: config.limits.maxConcurrent,
    maxFrameBytes: config.limits.maxFrameBytes,
  });
  served = server;
  await server.listen(transport, config.listen);
  // Warm the recipient key and document so the first cold sign does not pay for RSA key generation.
  void recipient.current().catch((err: unknown) => logger.warn({ err }, 'could not prepare the KMS recipient key yet'));

  return {
    server,
    kmsProxy,
    cache,
    nsm,
    async stop(drainMs = 5000) {
      await server.close(drainMs);
      await signers.close();
      await kmsProxy.close();
      cache.clear();
      nsm.transport.close();
    },
  };
}
