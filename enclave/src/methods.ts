/**
 * The handlers of the methods the enclave serves (`EnclaveApi`, docs/PROTOCOL.md), with health counters and
 * errors counted by code, gated by the image and the identity's state (docs/RECORDS.md):
 *
 * - a genesis image (no identity configured) serves hello, health and identity.genesis; every other method
 *   answers IDENTITY_UNAVAILABLE;
 * - a normal image serves everything but identity.genesis and keys.migrate (tls.* included: the wallet routes'
 *   TLS key, tls/holder.ts), a migration image only
 *   identity.get and keys.migrate (beside hello and health); a method the image does not serve answers
 *   METHOD_NOT_FOUND;
 * - until the identity is unsealed, every served method but hello and health answers IDENTITY_UNAVAILABLE,
 *   one answer with no detail.
 */
import { USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { RELEASE_VERSION } from '@nks/shared/release';
import { asKeystoreError, KeystoreError } from '@nks/shared/errors';
import {
  ACCEPTED_PROTOCOL_VERSIONS,
  EnclaveApi,
  PROTOCOL_VERSION,
  type EnclaveHealth,
  type HelloResult,
  type KmsProxyApi,
} from '@nks/shared/enclave-api';
import type { SignedRecord } from '@nks/shared/records';
import { serveApi, type RpcClient, type RpcMethod, type RpcServerStats } from '@nks/shared/rpc';
import type { ClockCheck } from './auth/clock';
import type { JwksCache } from './auth/jwks';
import type { JwtVerifier } from './auth/jwt';
import type { GenesisDeps } from './identity/genesis';
import { genesis } from './identity/genesis';
import { identityUnavailable, type IdentityHolder } from './identity/boot';
import type { UnsealCanary } from './identity/canary';
import type { KeyCache } from './keys/cache';
import { configureCache, type CacheBounds } from './keys/cache-settings';
import type { KeyVault } from './keys/vault';
import type { FailedOpens } from './kms/failed-opens';
import type { VerifiedRecords } from './records/verified';
import type { SignerPool } from './signing/pool';
import type { RecipientKeys } from './kms/recipient';
import type { Unsealer } from './kms/unseal';
import type { NsmClient } from './nsm/client';
import type { PolicyEnforcer } from './policy/enforcer';
import type { Projects } from './projects';
import { TlsHolder } from './tls/holder';
import { LogChannel } from './log-channel';

export const ENCLAVE_VERSION = RELEASE_VERSION;

/** What an image is: made by its configuration (identity present or not, `mode`). */
export type ImageKind = 'genesis' | 'normal' | 'migration';
type MethodName = keyof typeof EnclaveApi;

/** The methods each kind of image serves. */
export const SERVED_METHODS: Record<ImageKind, readonly MethodName[]> = {
  genesis: ['enclave.hello', 'enclave.health', 'enclave.logs', 'identity.genesis'],
  normal: [
    'enclave.hello',
    'enclave.health',
    'enclave.logs',
    'identity.get',
    'keys.create',
    'keys.sign',
    'keys.signBatch',
    'keys.setDisabled',
    'keys.lookup',
    'keys.successor',
    'keys.activate',
    'keys.cancel',
    'keys.forget',
    'projects.create',
    'projects.setState',
    'projects.setPolicies',
    'projects.evaluatePolicy',
    'attestation.get',
    'tls.create',
    'tls.install',
    'cache.configure',
  ],
  migration: ['enclave.hello', 'enclave.health', 'enclave.logs', 'identity.get', 'keys.migrate'],
};
/** Served whatever the identity's state. */
const ALWAYS: readonly MethodName[] = ['enclave.hello', 'enclave.health', 'enclave.logs'];

export interface EnclaveParts {
  image: ImageKind;
  /** The configuration's `mode` and `securityEpoch`, as health reports them. */
  mode: 'normal' | 'migration';
  securityEpoch: number;
  identity: IdentityHolder;
  /** From the configuration (not in a genesis image): what identity.get hands out besides a fresh document. */
  configuredIdentity?: { publicKey: string; genesisDocument: string; defaultProject: SignedRecord };
  genesis: GenesisDeps;
  keys: KeyVault;
  projects: Projects;
  /** Signing policies (for health). */
  policy: PolicyEnforcer;
  /** JWT projects: the verifier, its JWKS cache and the clock check (for health). */
  jwt: { verifier: JwtVerifier; jwks: JwksCache; clock: ClockCheck };
  records: VerifiedRecords;
  cache: KeyCache;
  /** What the parent may set the cache to (the configuration's cache.bounds); absent: only what it is now. */
  cacheBounds?: CacheBounds;
  unsealer: Unsealer;
  /** Can this enclave unseal (identity/canary.ts)? Absent: "unknown". */
  unsealCanary?: UnsealCanary;
  recipient: RecipientKeys;
  failedOpens: FailedOpens;
  signers: SignerPool;
  nsm: NsmClient;
  kmsProxy: RpcClient<KmsProxyApi>;
  startedAt: number;
  /** The enclave's own RPC server (made after the methods), for its per-connection backlog. */
  rpcStats?: () => RpcServerStats | undefined;
  /**
   * The wallet routes' TLS key: app.ts passes the holder its HTTPS server serves with. When not given, one is
   * made here from the other parts (then nothing serves what it installs; tests of the methods alone).
   */
  tls?: TlsHolder;
  /** The wallet routes' HTTPS server, for health; all zero when there is none. */
  walletStats?: () => EnclaveHealth['wallets'];
  /**
   * Called on each `enclave.hello`: a parent just connected, so its listeners are up (app.ts retries the
   * links to them now rather than at the end of their backoff).
   */
  onHello?: () => void;
  /** The log channel the parent pulls (enclave.logs); an empty one when not given (tests of the methods alone). */
  logChannel?: LogChannel;
}

const NO_WALLET_STATS = (): EnclaveHealth['wallets'] => ({
  connections: 0,
  connectionsRefused: 0,
  connectionsEvicted: 0,
  handshakeFailures: 0,
  requests: {},
});

const hexBytes = (h: string | undefined) => (h ? Buffer.from(h.slice(2), 'hex') : undefined);

/**
 * Agrees a protocol version with a parent that speaks `theirs`: theirs if this enclave accepts it; this
 * enclave's own if the parent is newer (the parent then decides whether it accepts it); otherwise refused.
 * `features` are the methods this image serves.
 */
export function hello(theirs: number, features: readonly string[] = SERVED_METHODS.normal): HelloResult {
  const supportedVersions = [...ACCEPTED_PROTOCOL_VERSIONS];
  const ok = ACCEPTED_PROTOCOL_VERSIONS.includes(theirs) || theirs > PROTOCOL_VERSION;
  if (!ok) {
    const speaks = supportedVersions.length === 1 ? `version ${supportedVersions[0]}` : `versions ${supportedVersions.join(' and ')}`;
    throw new KeystoreError(
      'UNSUPPORTED_VERSION',
      `protocol version ${theirs} is not supported: this enclave speaks ${speaks}; upgrade the parent`,
    );
  }
  return {
    protocolVersion: Math.min(theirs, PROTOCOL_VERSION),
    supportedVersions,
    features: [...features].sort(),
    enclaveVersion: ENCLAVE_VERSION,
  };
}

export function enclaveMethods(parts: EnclaveParts): {
  methods: Record<string, RpcMethod>;
  errors: Record<string, number>;
  tls: TlsHolder;
} {
  const errors: Record<string, number> = {};
  const served = new Set<string>(SERVED_METHODS[parts.image]);
  const tls =
    parts.tls ??
    new TlsHolder({
      nsm: parts.nsm,
      unsealer: parts.unsealer,
      identity: () => parts.identity.get(),
      kmsKeyArn: parts.genesis.kmsKeyArn,
      kmsPublicKey: parts.genesis.kmsPublicKey,
      refused: (cause) => parts.records.refused(cause),
    });
  const walletStats = parts.walletStats ?? NO_WALLET_STATS;
  const logChannel = parts.logChannel ?? new LogChannel(1);

  /** Refuses what this image does not serve, or does not serve yet; then runs `fn`, counting failures by code. */
  const gated =
    <P, R>(name: MethodName, fn: (p: P) => R | Promise<R>) =>
    async (p: P): Promise<R> => {
      try {
        if (!ALWAYS.includes(name)) {
          if (parts.image === 'genesis' ? !served.has(name) : parts.identity.status !== 'ready' && served.has(name)) {
            throw identityUnavailable();
          }
          if (!served.has(name)) {
            throw new KeystoreError('METHOD_NOT_FOUND', `method "${name}" is not served by a ${parts.image} image`);
          }
        }
        return await fn(p);
      } catch (err) {
        const code = asKeystoreError(err).code;
        errors[code] = (errors[code] ?? 0) + 1;
        throw err;
      }
    };

  const health = (): EnclaveHealth => {
    const c = parts.cache.stats;
    const rpc = parts.rpcStats?.();
    const mem = process.memoryUsage();
    return {
      status: 'ok',
      version: ENCLAVE_VERSION,
      nsm: parts.nsm.kind,
      kmsProxy: parts.kmsProxy.connected ? 'connected' : 'disconnected',
      identity: parts.identity.status,
      unseal: parts.unsealCanary?.state ?? 'unknown',
      unsealCode: parts.unsealCanary?.code ?? null,
      mode: parts.mode,
      securityEpoch: parts.securityEpoch,
      uptimeMs: Date.now() - parts.startedAt,
      counters: {
        creates: parts.keys.creates,
        signs: parts.keys.signs,
        cacheHits: c.hits,
        cacheMisses: c.misses,
        cacheEvictions: c.evictions,
        cacheExpirations: c.expirations,
        cacheSize: c.size,
        cacheTtlMs: parts.cache.limits.ttlMs,
        cacheMaxEntries: parts.cache.limits.maxEntries,
        kmsCalls: parts.unsealer.kmsCalls,
        identityKmsCalls: parts.unsealer.identityKmsCalls,
        unsealCanaries: parts.unsealCanary?.runs ?? 0,
        kmsErrors: parts.unsealer.kmsErrors,
        failedOpens: parts.failedOpens.total,
        integrityFailures: parts.records.failures,
        recipientKeyRotations: parts.recipient.rotations,
        attestationDocuments: parts.recipient.documents,
        signingTimeouts: parts.signers.timeouts,
        signerReplacements: parts.signers.replacements,
        rpcConnections: rpc?.connections ?? 0,
        rpcPausedConnections: rpc?.pausedConnections ?? 0,
        rpcUnsentBytes: rpc?.unsentBytes ?? 0,
        rpcInFlightBytes: rpc?.inFlightBytes ?? 0,
        logLines: logChannel.written,
        logDropped: logChannel.dropped,
        errors: { ...errors },
      },
      jwt: {
        clock: parts.jwt.clock.state,
        clockDriftMs: parts.jwt.clock.driftMs,
        verifications: parts.jwt.verifier.verifications,
        refusals: parts.jwt.verifier.refusals,
        jwksFetches: parts.jwt.jwks.fetches,
        jwksFetchFailures: parts.jwt.jwks.fetchFailures,
        jwksCached: parts.jwt.jwks.cached,
      },
      policy: parts.policy.stats(),
      tls: tls.status(),
      wallets: walletStats(),
      memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, externalBytes: mem.external },
    };
  };

  /** A fresh document binding the identity's public key (as at genesis), with the caller's nonce. */
  const identityDocument = async (nonce: Uint8Array | undefined) =>
    parts.nsm.attest({ tag: USER_DATA_TAGS.identity, content: parts.identity.get().rawPublicKey, nonce });

  const methods = serveApi(EnclaveApi, {
    'enclave.hello': gated('enclave.hello', (p) => {
      const agreed = hello(p.protocolVersion, SERVED_METHODS[parts.image]);
      parts.onHello?.();
      return agreed;
    }),
    'enclave.health': health,
    // Served whatever the image and the identity's state: an enclave that cannot start says why here.
    'enclave.logs': (p) => {
      const { errors: _errors, ...counters } = health().counters;
      return { ...logChannel.pull(p.after, p.max), counters };
    },
    'identity.genesis': gated('identity.genesis', (p) => genesis(parts.genesis, hexBytes(p.nonce) as Buffer)),
    'identity.get': gated('identity.get', async (p) => {
      const configured = parts.configuredIdentity;
      if (!configured) throw identityUnavailable();
      const document = await identityDocument(hexBytes(p.nonce));
      return {
        publicKey: configured.publicKey,
        genesisDocument: configured.genesisDocument,
        attestation: document.toString('base64'),
        defaultProject: configured.defaultProject,
      };
    }),
    'keys.create': gated('keys.create', (p) => parts.keys.create(p.keyId, p.project, p.subject, p.attest ?? false, p.jwt)),
    'keys.sign': gated('keys.sign', (p) => parts.keys.sign(p)),
    // A request refused inside a batch counts among the errors as it would as a single sign.
    'keys.signBatch': gated('keys.signBatch', async (p) => {
      const answer = await parts.keys.signBatch(p);
      for (const item of answer.results) if ('error' in item) errors[item.error.code] = (errors[item.error.code] ?? 0) + 1;
      return answer;
    }),
    'keys.setDisabled': gated('keys.setDisabled', (p) => parts.keys.setDisabled(p.record, p.project, p.disabled)),
    'keys.lookup': gated('keys.lookup', (p) => parts.keys.lookup(p.record, p.project, p.jwt)),
    'keys.successor': gated('keys.successor', (p) => parts.keys.successor(p)),
    'keys.activate': gated('keys.activate', (p) => parts.keys.activate(p)),
    'keys.cancel': gated('keys.cancel', (p) => parts.keys.cancel(p)),
    'projects.create': gated('projects.create', (p) => parts.projects.create(p.settings)),
    'projects.setState': gated('projects.setState', (p) => parts.projects.setState(p.project, p.state)),
    'projects.setPolicies': gated('projects.setPolicies', (p) => parts.projects.setPolicies(p.project, p.policies, p.approvals)),
    'projects.evaluatePolicy': gated('projects.evaluatePolicy', (p) => parts.projects.evaluatePolicy(p)),
    'keys.migrate': gated('keys.migrate', (p) => parts.keys.migrate(p.keyId, p.blob, p.project, p.subject)),
    'keys.forget': gated('keys.forget', (p) => ({ keyId: p.keyId, forgotten: parts.keys.forget(p.keyId) })),
    'attestation.get': gated('attestation.get', async (p) => {
      const nonce = hexBytes(p.nonce);
      // The caller's nonce goes in the `nonce` field; `user_data` is tagged so this document can never pass
      // as another path's evidence (a birth, the identity).
      const document = await parts.nsm.attest({ tag: USER_DATA_TAGS.attestation, content: nonce, nonce });
      return { document: document.toString('base64') };
    }),
    'tls.create': gated('tls.create', (p) => tls.create(p.names)),
    'tls.install': gated('tls.install', (p) => tls.install(p)),
    'cache.configure': gated('cache.configure', (p) => configureCache(parts.cache, parts.cacheBounds, p)),
  });
  return { methods, errors, tls };
}
