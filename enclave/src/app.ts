/**
 * Wires the enclave together from its configuration: NSM, recipient key, KMS-proxy client, key cache and
 * vault, records, and the RPC server. `startEnclave` returns once it listens (logged as 'enclave listening');
 * a normal or migration image then unseals its keystore identity in the background and logs 'enclave ready'
 * once it has (`identityReady` resolves), or gives up after `identityBoot.maxAttempts` failed attempts
 * (`identityReady` rejects with IdentityBootError, and the program exits). A genesis image (no identity
 * configured) is ready at once. A normal image also serves the wallet routes over HTTPS (wallets/, docs/TLS.md),
 * with the TLS key the TLS holder makes and installs (tls/holder.ts). `stop` closes them, drains and zeroes the
 * cache.
 */
import tls from 'node:tls';
import { USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { identityPublicKey } from '@nks/shared/records';
import { createTransport } from '@nks/shared/transport';
import type { Logger } from '@nks/shared/log';
import { RpcClient, RpcServer } from '@nks/shared/rpc';
import type { KmsProxyApi, WalletStoreApi } from '@nks/shared/enclave-api';
import { ClockCheck } from './auth/clock';
import { httpsGet } from './auth/https-get';
import { JwksCache } from './auth/jwks';
import { JwtVerifier } from './auth/jwt';
import type { EnclaveConfig } from './config';
import { KeyCache } from './keys/cache';
import { KeyVault } from './keys/vault';
import { FailedOpens } from './kms/failed-opens';
import { RecipientKeys } from './kms/recipient';
import { Unsealer } from './kms/unseal';
import { IdentityHolder, identityCanaryProbe, unsealIdentity } from './identity/boot';
import { UnsealCanary } from './identity/canary';
import { enclaveMethods, type ImageKind } from './methods';
import { VerifiedRecords } from './records/verified';
import { NsmClient, type NsmTransport } from './nsm/client';
import { PolicyEnforcer } from './policy/enforcer';
import { LimitCounters } from './policy/limits';
import { Projects } from './projects';
import { DeviceNsmTransport } from './nsm/device';
import { SocketNsmTransport } from './nsm/socket';
import { SignerPool } from './signing/pool';
import { TlsHolder } from './tls/holder';
import { startWallets, type Wallets } from './wallets';
import { LogChannel } from './log-channel';

/**
 * Error answers logged by the RPC server (method, code and request id only: never a message, so a failed
 * unseal is one line whatever step failed): warn for what a well-behaved parent never causes, info for the
 * refusals of ordinary operation, none for the start-up and load answers a parent retries.
 */
const WARN_CODES = new Set(['KEY_INTEGRITY', 'INVALID_PARAMS', 'INVALID_REQUEST', 'FORBIDDEN', 'INTERNAL', 'SIGNING_TIMEOUT']);
export const refusalLevel = (code: string): 'info' | 'warn' | null =>
  WARN_CODES.has(code) ? 'warn' : code === 'IDENTITY_UNAVAILABLE' || code === 'OVERLOADED' ? null : 'info';

export interface RunningEnclave {
  server: RpcServer;
  kmsProxy: RpcClient<KmsProxyApi>;
  cache: KeyCache;
  nsm: NsmClient;
  image: ImageKind;
  /** The JWT projects' clock check (started in a normal image). */
  clock: ClockCheck;
  /** The wallet routes' TLS key and certificate (tls.create, tls.install). */
  tls: TlsHolder;
  /** The wallet routes' HTTPS server (a normal image only). */
  wallets: Wallets | null;
  /** Resolves once the identity is ready (at once in a genesis image); rejects when the start has failed. */
  identityReady: Promise<void>;
  stop(drainMs?: number): Promise<void>;
}

function nsmTransport(config: EnclaveConfig): NsmTransport {
  return config.nsm.kind === 'device' ? new DeviceNsmTransport(config.nsm.path) : new SocketNsmTransport(config.nsm.socket);
}

/**
 * `script` is the program file (the bundle), which signer threads run too. `logChannel` is the ring the
 * logger also writes into (main.ts), served to the parent by enclave.logs.
 */
export async function startEnclave(
  config: EnclaveConfig,
  logger: Logger,
  script: string,
  logChannel: LogChannel = new LogChannel(1),
): Promise<RunningEnclave> {
  const transport = createTransport(config.transport);
  const nsm = new NsmClient(nsmTransport(config));
  const description = await nsm.describe(); // proves the NSM answers before anything is served
  logger.info({ nsm: nsm.kind, moduleId: description.moduleId, signerThreads: config.signing.workers }, 'NSM ready');

  const image: ImageKind = config.identity ? config.mode : 'genesis';
  const kmsProxy = new RpcClient<KmsProxyApi>({
    name: 'kms-proxy',
    transport,
    address: config.kmsProxy,
    logger,
    defaultDeadlineMs: config.limits.kmsDeadlineMs,
    maxFrameBytes: config.limits.maxFrameBytes,
    // A cold sign waits briefly for the proxy link (e.g. after a parent restart) rather than failing.
    waitForConnectionMs: 2000,
    // The parent's request id goes on to its KMS proxy (one is current only if the parent sent one, so only a
    // parent that takes the field gets it back). One line per Decrypt: outcome only.
    sendRequestId: () => true,
    onResult: (method, outcome) => logger.info({ method, outcome }, 'KMS proxy call'),
  });
  // A genesis image never asks KMS for anything.
  if (image !== 'genesis') kmsProxy.start();

  const recipient = new RecipientKeys(nsm, config.recipient);
  const cache = new KeyCache({ ttlMs: config.cache.ttlMs, maxEntries: config.cache.maxEntries });
  cache.startSweeper();
  const failedOpens = new FailedOpens(config.failedOpens);
  // Can this image unseal? Told of every unseal; its canary re-unseals the identity blob (identity/canary.ts).
  const identity = new IdentityHolder(image === 'genesis' ? 'genesis' : 'unsealing');
  const unsealCanary = new UnsealCanary({
    minIntervalMs: config.limits.unsealCanaryMs,
    onChange: (state, code) =>
      state === 'failing'
        ? logger.warn({ unseal: state, code }, 'this enclave cannot unseal')
        : logger.info({ unseal: state }, 'unsealing works'),
  });
  const unsealer = new Unsealer(
    kmsProxy,
    recipient,
    failedOpens,
    { kmsKeyArn: config.kmsKeyArn, deadlineMs: config.limits.kmsDeadlineMs },
    {
      succeeded: () => unsealCanary.succeeded(),
      // While the identity is being unsealed at start, that unseal is the canary (boot.ts retries it).
      failed: (err) => (identity.status === 'ready' ? unsealCanary.failed(err) : unsealCanary.bootFailed(err)),
    },
  );
  const signers = new SignerPool(config.signing.workers, script, (message, err) => logger.error({ err }, message), {
    deadlineMs: config.signing.deadlineMs,
  });
  // In a genesis image there is no identity, so no record verifies (nor is asked to: see methods.ts).
  const records = new VerifiedRecords(config.identity ? identityPublicKey(config.identity.publicKey) : null, config.records);
  // JWT projects (normal image): JWKS fetched through the egress relay, TLS ending here; the clock checked
  // against the NSM's at start and every clockCheckMs.
  const trustAnchors = [...tls.rootCertificates, ...config.jwt.trustedCas];
  const jwks = new JwksCache(
    (uri) =>
      httpsGet(uri, {
        transport,
        egress: config.jwt.egress,
        ca: trustAnchors,
        timeoutMs: config.jwt.jwks.fetchTimeoutMs,
        maxBytes: config.jwt.jwks.maxBytes,
      }),
    config.jwt.jwks,
  );
  const clock = new ClockCheck(() => nsm.attest({ tag: USER_DATA_TAGS.attestation }), {
    intervalMs: config.jwt.clockCheckMs,
    maxDriftMs: config.jwt.maxClockDriftMs,
    onCheck: ({ state, driftMs, error }) => {
      if (state === 'trusted') logger.debug({ clock: state, driftMs }, 'enclave clock checked');
      else logger.warn({ clock: state, driftMs, err: error }, 'enclave clock is not trusted: JWT checks are refused');
    },
  });
  const jwt = new JwtVerifier({ jwks, clock });
  // Signing policies (docs/POLICIES.md): limit counters in memory, bounded by the configuration.
  const policy = new PolicyEnforcer(new LimitCounters(config.policy));
  const keys = new KeyVault({
    cache,
    unsealer,
    nsm,
    kmsKeyArn: config.kmsKeyArn,
    kmsPublicKey: config.kmsPublicKeyObject,
    signers,
    records,
    identity: () => identity.get(),
    jwt,
    policy,
  });
  const tlsHolder = new TlsHolder({
    nsm,
    unsealer,
    identity: () => identity.get(),
    kmsKeyArn: config.kmsKeyArn,
    kmsPublicKey: config.kmsPublicKeyObject,
    refused: (cause) => records.refused(cause),
  });
  // The parent's wallet store (docs/TLS.md): records and blobs for the wallet routes, each verified here.
  const walletStore = new RpcClient<WalletStoreApi>({
    name: 'wallet-store',
    transport,
    address: config.wallets.store,
    logger,
    defaultDeadlineMs: config.wallets.storeDeadlineMs,
    maxFrameBytes: config.limits.maxFrameBytes,
    // A wallet request waits briefly for the store link (e.g. after a parent restart) rather than failing.
    waitForConnectionMs: Math.min(2000, config.wallets.storeDeadlineMs),
  });
  let wallets: Wallets | null = null;
  const projects = new Projects({
    records,
    identity: () => identity.get(),
    onDisabled: (projectId) => cache.forgetProject(projectId),
    policy,
    logger,
  });
  let served: RpcServer | undefined;
  const { methods } = enclaveMethods({
    image,
    mode: config.mode,
    securityEpoch: config.securityEpoch,
    identity,
    ...(config.identity
      ? {
          configuredIdentity: {
            publicKey: config.identity.publicKey,
            genesisDocument: config.identity.genesisDocument,
            defaultProject: config.identity.defaultProject,
          },
        }
      : {}),
    genesis: { nsm, kmsKeyArn: config.kmsKeyArn, kmsPublicKey: config.kmsPublicKeyObject },
    keys,
    projects,
    policy,
    jwt: { verifier: jwt, jwks, clock },
    records,
    cache,
    cacheBounds: { ...config.cache.bounds, defaultTtlMs: config.cache.ttlMs, defaultMaxEntries: config.cache.maxEntries },
    unsealer,
    unsealCanary,
    recipient,
    failedOpens,
    signers,
    nsm,
    kmsProxy,
    startedAt: Date.now(),
    rpcStats: () => served?.stats,
    tls: tlsHolder,
    walletStats: () =>
      wallets?.stats() ?? { connections: 0, connectionsRefused: 0, connectionsEvicted: 0, handshakeFailures: 0, requests: {} },
    // A parent's hello means its KMS proxy and wallet store listen (it starts them before its pool): reconnect
    // now instead of at the end of a backoff that grew while it was down (at most one try per 50 ms, whatever
    // the number of hellos: RpcClient.retryNow).
    onHello: () => {
      kmsProxy.retryNow();
      walletStore.retryNow();
    },
    logChannel,
  });

  // The server's per-connection limits (requests and bytes in flight, unsent answers) are its defaults: a
  // parent that sends and never reads is paused, then disconnected, instead of growing the enclave's memory.
  const server = new RpcServer({
    name: 'enclave',
    methods,
    logger,
    maxConcurrent: config.limits.maxConcurrent,
    maxFrameBytes: config.limits.maxFrameBytes,
    logRefusals: refusalLevel,
    // The envelope's request id must reach the enclave's own KMS calls, deep inside a call (RpcClient.call).
    requestContext: true,
  });
  served = server;
  await server.listen(transport, config.listen);
  if (image === 'normal') {
    clock.start();
    walletStore.start();
    // Served from the start: until the identity is unsealed the routes answer 503, and until tls.install
    // every TLS handshake fails.
    wallets = await startWallets({
      config: config.wallets,
      transport,
      store: walletStore,
      tls: tlsHolder,
      nsm,
      vault: keys,
      records,
      jwt,
      identityReady: () => identity.status === 'ready',
      logger,
    });
  }
  const where = {
    listen: config.listen,
    kmsProxy: config.kmsProxy,
    kmsKeyArn: config.kmsKeyArn,
    transport: config.transport.kind,
    ...(wallets ? { wallets: config.wallets.listen, walletStore: config.wallets.store } : {}),
  };
  logger.info({ ...where, image, securityEpoch: config.securityEpoch }, 'enclave listening');

  let identityReady: Promise<void>;
  if (!config.identity) {
    logger.info({ ...where, identity: 'genesis' }, 'enclave ready');
    identityReady = Promise.resolve();
  } else {
    const configured = config.identity;
    // Unsealing the identity also prepares the recipient key and document the first cold sign reuses.
    identityReady = unsealIdentity({
      publicKey: configured.publicKey,
      blob: configured.blob,
      maxAttempts: config.identityBoot.maxAttempts,
      retryMs: config.identityBoot.retryMs,
      unsealer,
      logger,
    }).then((unsealed) => {
      identity.set(unsealed);
      // The canary exists once the identity does (while it starts, boot.ts's own retries are the canary).
      unsealCanary.probe = identityCanaryProbe(unsealer, configured.blob, configured.publicKey);
      logger.info({ ...where, identity: unsealed.publicKey, mode: config.mode }, 'enclave ready');
    });
    // The caller decides what a failed start means (main.ts exits); never an unhandled rejection here.
    identityReady.catch(() => undefined);
  }

  return {
    server,
    kmsProxy,
    cache,
    nsm,
    image,
    clock,
    tls: tlsHolder,
    wallets,
    identityReady,
    async stop(drainMs = 5000) {
      clock.stop();
      unsealCanary.close();
      await wallets?.close();
      await server.close(drainMs);
      await signers.close();
      await kmsProxy.close();
      await walletStore.close();
      cache.clear();
      nsm.transport.close();
    },
  };
}
