/**
 * The enclave's configuration: a JSON file baked into the image (so it is covered by PCR0), validated at
 * start. An invalid file stops the enclave with a message naming every problem.
 *
 * `identity` is the genesis output (docs/RECORDS.md): the keystore identity's public key, its sealed seed, the
 * genesis attestation document and the `default` project's record. Being in this file, the public key is
 * measured into PCR0, and only an image with that PCR0 can have KMS unseal the seed. Without `identity` the
 * image is a genesis image, which serves nothing but `identity.genesis` (and hello and health).
 */
import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import os from 'node:os';
import { z } from 'zod';
import { ConfigError, readJsonConfig } from '@nks/shared/config-file';
import { DEFAULT_EGRESS_ADDRESS } from '@nks/shared/egress';
import { DEFAULT_WALLET_STORE_ADDRESS, DEFAULT_WALLETS_ADDRESS } from '@nks/shared/ingress';
import { DEADLINES } from '@nks/shared/deadlines';
import { DEFAULT_LOG_LEVEL, LOG_LEVELS } from '@nks/shared/log';
import { BLOB_VERSION, decodeBlobBase64 } from '@nks/shared/blob';
import { ENCLAVE_MAX_FRAME_BYTES, SignedRecordSchema } from '@nks/shared/enclave-api';
import { DEFAULT_PROJECT_ID, identityPublicKey as identityKeyObject, openProjectRecord } from '@nks/shared/records';
import { SECURITY_EPOCH } from '@nks/shared/release';
import { base64, describeIssues, identityPublicKey, kmsKeyArn } from '@nks/shared/schema';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS, TransportConfigSchema, VsockAddressSchema } from '@nks/shared/transport';
import { NSM_DEVICE_PATH } from './nsm/device';
import { DEFAULT_SIGNING_DEADLINE_MS } from './signing/pool';

/**
 * Signer threads: one per vCPU beyond the first, which the main thread keeps for I/O and request handling.
 * A 2-vCPU enclave signs on one thread while the other serves; a single vCPU signs on the main thread.
 */
function defaultWorkers(): number {
  return Math.max(0, Math.min(os.availableParallelism() - 1, 16));
}

/** Every default of the configuration, once: the schema below fills these in, and tests compare with them. */
export const ENCLAVE_CONFIG_DEFAULTS = {
  listen: DEFAULT_ENCLAVE_ADDRESS,
  kmsProxy: DEFAULT_KMS_PROXY_ADDRESS,
  transport: { kind: 'vsock' },
  nsm: { kind: 'device', path: NSM_DEVICE_PATH },
  // The key cache (docs/OPERATIONS.md, "Sizing the key cache"): `ttlMs` and `maxEntries` until the parent sets
  // its own (cache.configure), which must lie within `bounds`: they cap what a parent can make the enclave hold,
  // in count (memory) and in time (how long a decrypted key stays in memory after its unsealing). The upper
  // bounds default to `ttlMs` and `maxEntries` themselves: unless the image names wider ones, a parent can only
  // shorten or shrink the cache, never keep keys longer or more of them than the image says.
  cache: {
    ttlMs: 15 * 60_000,
    maxEntries: 100_000,
    bounds: { minTtlMs: 1_000, maxTtlMs: 15 * 60_000, minEntries: 1, maxEntries: 100_000 },
  },
  recipient: { rotateMs: 3600_000, documentMaxAgeMs: 60_000 },
  failedOpens: { maxFailures: 10, windowMs: 60_000, cooldownMs: 60_000 },
  // kmsDeadlineMs is shorter than the parent's deadline for a whole sign (its enclave.deadlineMs), and longer
  // than the proxy's (shared/src/deadlines.ts), so a slow KMS is answered as such before the parent gives up.
  // unsealCanaryMs: at most one canary unseal this often (identity/canary.ts).
  limits: {
    maxConcurrent: 4096,
    // A batch of signs with its envelope, and its answer (keys.signBatch).
    maxFrameBytes: ENCLAVE_MAX_FRAME_BYTES,
    kmsDeadlineMs: DEADLINES.enclaveKmsMs,
    unsealCanaryMs: 30_000,
  },
  signing: { workers: defaultWorkers(), deadlineMs: DEFAULT_SIGNING_DEADLINE_MS },
  logLevel: DEFAULT_LOG_LEVEL,
  mode: 'normal',
  securityEpoch: SECURITY_EPOCH,
  // Five tries over about 15 s (back-off from 1 s, doubling), then the enclave exits and is restarted.
  identityBoot: { maxAttempts: 5, retryMs: 1_000 },
  // Verified records: 50,000 typical ones (a key record with a short subject takes under 1 KB) or as many as fit
  // in maxVerifiedBytes, which bounds the worst a parent can make (32 KiB project records, ~85 KB each in
  // memory, or 1 KiB subjects) at about 200 MB: entries are weighed at least at what they take
  // (records/verified.ts, entryWeight). A mark is a key id, an address and a number.
  records: { maxVerified: 50_000, maxVerifiedBytes: 192 * 1024 * 1024, maxSeqMarks: 200_000 },
  // Signing policies' limit counters (docs/POLICIES.md): one per (project, limit) and per (project, limit, key).
  // At most 1.6 KB each (measured, docs/OPERATIONS.md): 40,000 stay under 64 MiB; a project holds a quarter.
  policy: { maxTrackedCounters: 40_000, maxTrackedCountersPerProject: 10_000 },
  // JWT projects: the egress relay, trust anchors beyond Node's CA store, the clock check, the JWKS cache.
  jwt: {
    egress: DEFAULT_EGRESS_ADDRESS,
    trustedCas: [],
    clockCheckMs: 3600_000,
    maxClockDriftMs: 30_000,
    jwks: {
      fetchTimeoutMs: 5_000,
      maxBytes: 64 * 1024,
      maxKeys: 20,
      minTtlMs: 60_000,
      maxTtlMs: 3600_000,
      unknownKidRefetchMs: 30_000,
      failureRetryMs: 1_000,
      maxUris: 256,
    },
  },
  // The wallet routes' HTTPS server (docs/TLS.md): the listener the parent's ingress relay connects to, the
  // parent's wallet store, and the limits that keep a slow or hostile public from holding the enclave's memory.
  wallets: {
    listen: DEFAULT_WALLETS_ADDRESS,
    store: DEFAULT_WALLET_STORE_ADDRESS,
    maxConnections: 1024,
    maxConnectionsPerAddress: 32,
    maxRequestsPerConnection: 1000,
    preambleTimeoutMs: 5_000,
    handshakeTimeoutMs: 10_000,
    headersTimeoutMs: 10_000,
    requestTimeoutMs: 30_000,
    keepAliveTimeoutMs: 60_000,
    maxHeaderBytes: 16 * 1024,
    bodyLimit: 256 * 1024,
    storeDeadlineMs: 5_000,
    projectCacheMs: 2_000,
    rateLimits: {
      windowMs: 60_000,
      perAddress: 600,
      failuresPerAddress: 30,
      perProject: 60_000,
      perUser: 300,
      maxTracked: 50_000,
    },
  },
} as const;

const D = ENCLAVE_CONFIG_DEFAULTS;
/** The most any image may allow its key cache: a day's TTL, a million keys (about 1.8 GiB: docs/OPERATIONS.md, "Sizing the key cache"). */
export const CACHE_MAX_TTL_MS = 24 * 3600_000;
export const CACHE_MAX_ENTRIES = 1_000_000;

/** What the wallet connections' requests may hold in memory at once (`wallets`: see its refinement). */
export const WALLETS_MAX_REQUEST_MEMORY = 512 * 1024 * 1024;
const ms = (def: number, min: number, max: number) => z.number().int().min(min).max(max).default(def);

/** One PEM certificate (what the JWKS fetch trusts besides Node's CA store). */
const certificatePem = z
  .string()
  .max(16_384)
  .refine((pem) => {
    if ((pem.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length !== 1) return false;
    try {
      new X509Certificate(pem);
      return true;
    } catch {
      return false;
    }
  }, 'expected one PEM certificate');

// Sections default with `prefault({})`: an absent section is parsed as an empty one, so it gets the fields'
// own defaults and no section restates them.
export const EnclaveConfigSchema = z.strictObject({
  /** The KMS key that seals every data key, and its public half (DER SubjectPublicKeyInfo, base64). */
  kmsKeyArn,
  kmsPublicKey: z.string().min(1),
  listen: VsockAddressSchema.default(D.listen),
  kmsProxy: VsockAddressSchema.default(D.kmsProxy),
  transport: TransportConfigSchema.default(D.transport),
  nsm: z
    .discriminatedUnion('kind', [
      z.strictObject({ kind: z.literal('device'), path: z.string().default(D.nsm.path) }),
      z.strictObject({ kind: z.literal('simulated'), socket: z.string().min(1) }),
    ])
    .prefault({ kind: D.nsm.kind }),
  /**
   * The key cache: `ttlMs` (how long a decrypted key stays usable without another KMS Decrypt, counted from its
   * unsealing) and `maxEntries` are what the enclave starts with; the parent may set others at run time
   * (cache.configure, keys/cache-settings.ts) within `bounds`, which only this file (PCR0) sets. An absent upper
   * bound is the configured value itself, so a configuration written before the bounds existed means what it
   * meant: the parent may shorten or shrink, never extend.
   */
  cache: z
    .strictObject({
      ttlMs: ms(D.cache.ttlMs, 1_000, CACHE_MAX_TTL_MS),
      maxEntries: z.number().int().min(1).max(CACHE_MAX_ENTRIES).default(D.cache.maxEntries),
      bounds: z
        .strictObject({
          minTtlMs: ms(D.cache.bounds.minTtlMs, 1_000, CACHE_MAX_TTL_MS),
          maxTtlMs: z.number().int().min(1_000).max(CACHE_MAX_TTL_MS).optional(),
          minEntries: z.number().int().min(1).max(CACHE_MAX_ENTRIES).default(D.cache.bounds.minEntries),
          maxEntries: z.number().int().min(1).max(CACHE_MAX_ENTRIES).optional(),
        })
        .prefault({}),
    })
    .transform(({ ttlMs, maxEntries, bounds }) => ({
      ttlMs,
      maxEntries,
      bounds: {
        minTtlMs: bounds.minTtlMs,
        maxTtlMs: bounds.maxTtlMs ?? ttlMs,
        minEntries: bounds.minEntries,
        maxEntries: bounds.maxEntries ?? maxEntries,
      },
    }))
    .superRefine(({ ttlMs, maxEntries, bounds: b }, ctx) => {
      const issue = (path: string[], message: string) => ctx.addIssue({ code: 'custom', path, message });
      if (b.minTtlMs > b.maxTtlMs) issue(['bounds', 'minTtlMs'], `must not exceed cache.bounds.maxTtlMs (${b.maxTtlMs})`);
      if (b.minEntries > b.maxEntries) issue(['bounds', 'minEntries'], `must not exceed cache.bounds.maxEntries (${b.maxEntries})`);
      if (ttlMs < b.minTtlMs || ttlMs > b.maxTtlMs) issue(['ttlMs'], `must lie within cache.bounds [${b.minTtlMs}, ${b.maxTtlMs}]`);
      if (maxEntries < b.minEntries || maxEntries > b.maxEntries)
        issue(['maxEntries'], `must lie within cache.bounds [${b.minEntries}, ${b.maxEntries}]`);
    })
    .prefault({}),
  recipient: z
    .strictObject({
      /** The ephemeral RSA-2048 key for KMS Recipient is replaced this often. */
      rotateMs: ms(D.recipient.rotateMs, 10_000, 24 * 3600_000),
      /** An attestation document is reused for at most this long (KMS may refuse old ones). */
      documentMaxAgeMs: ms(D.recipient.documentMaxAgeMs, 1_000, 3600_000),
    })
    .prefault({}),
  /**
   * Failed opens of KMS answers (each one a forged answer or a tampered blob): above `maxFailures` within
   * `windowMs`, cold signs are refused for `cooldownMs`. Warm signs are not affected.
   */
  failedOpens: z
    .strictObject({
      maxFailures: z.number().int().min(1).max(10_000).default(D.failedOpens.maxFailures),
      windowMs: ms(D.failedOpens.windowMs, 1_000, 24 * 3600_000),
      cooldownMs: ms(D.failedOpens.cooldownMs, 1_000, 24 * 3600_000),
    })
    .prefault({}),
  limits: z
    .strictObject({
      maxConcurrent: z.number().int().min(1).max(100_000).default(D.limits.maxConcurrent),
      maxFrameBytes: z
        .number()
        .int()
        .min(4096)
        .max(16 * 1024 * 1024)
        .default(D.limits.maxFrameBytes),
      kmsDeadlineMs: ms(D.limits.kmsDeadlineMs, 100, 120_000),
      /** The least time between two canary unseals (after a KMS refusal, and while unsealing is failing). */
      unsealCanaryMs: ms(D.limits.unsealCanaryMs, 1_000, 3600_000),
    })
    .prefault({}),
  signing: z
    .strictObject({
      /**
       * Signer threads. Default: the enclave's vCPUs minus one. 0 signs cheap requests on the main thread and
       * costly ones on one dedicated thread (typed data never runs on the main thread).
       */
      workers: z.number().int().min(0).max(64).default(D.signing.workers),
      /** A signing job still running after this long answers TIMEOUT and its thread is replaced. */
      deadlineMs: ms(D.signing.deadlineMs, 10, 60_000),
    })
    .prefault({}),
  logLevel: z.enum(LOG_LEVELS).default(D.logLevel),
  /** The genesis output; absent in a genesis image. */
  identity: z
    .strictObject({
      publicKey: identityPublicKey,
      /** The sealed seed: a version 2 blob of kind "identity" under `kmsKeyArn`, for `publicKey`. */
      blob: base64.min(1).max(8192),
      /** The genesis attestation document (base64 COSE_Sign1), handed out by identity.get. */
      genesisDocument: base64.min(1).max(349_528),
      /** The `default` project's record, signed by this identity at genesis. */
      defaultProject: SignedRecordSchema,
    })
    .optional(),
  /** `migration`: the image that re-seals version 1 blobs (keys.migrate) and serves nothing else; needs `identity`. */
  mode: z.enum(['normal', 'migration']).default(D.mode),
  /** Never below this release's SECURITY_EPOCH: an older configuration is refused. */
  securityEpoch: z
    .number()
    .int()
    .min(SECURITY_EPOCH, `expected at least ${SECURITY_EPOCH}, this release's security epoch`)
    .max(1_000_000)
    .default(D.securityEpoch),
  /**
   * Unsealing the identity at start: after `maxAttempts` failed attempts (KMS refusing, the proxy absent, an
   * answer that does not open) the enclave logs why and exits; between attempts it backs off from `retryMs`.
   */
  identityBoot: z
    .strictObject({
      maxAttempts: z.number().int().min(1).max(100).default(D.identityBoot.maxAttempts),
      retryMs: ms(D.identityBoot.retryMs, 10, 60_000),
    })
    .prefault({}),
  /**
   * Bounds of what the enclave remembers about records (least recently used dropped first): verified records
   * (so a warm sign verifies no signature), and the highest `seq` seen per key and per project (an older
   * record is refused). Both are in memory only: a restart, or a mark dropped at the bound, forgets them.
   */
  records: z
    .strictObject({
      maxVerified: z.number().int().min(16).max(10_000_000).default(D.records.maxVerified),
      /** The verified records' total weight (about their bytes in memory), whatever their number. */
      maxVerifiedBytes: z
        .number()
        .int()
        .min(64 * 1024)
        .max(16 * 1024 ** 3)
        .default(D.records.maxVerifiedBytes),
      maxSeqMarks: z.number().int().min(16).max(10_000_000).default(D.records.maxSeqMarks),
    })
    .prefault({}),
  /**
   * Signing policies (docs/POLICIES.md): the limit counters the enclave holds in memory, at most
   * `maxTrackedCounters`, and at most `maxTrackedCountersPerProject` for one project (so one project's callers
   * cannot fill the table for all the others). A counter takes about 0.4 KB, up to 1.6 KB for a day with a
   * value in every hour (measured: docs/OPERATIONS.md). Expired ones are dropped first; when a bound is still
   * reached, a request that would need a new counter is refused (POLICY_DENIED): a live counter is never
   * dropped, which would reset its limit.
   */
  policy: z
    .strictObject({
      maxTrackedCounters: z.number().int().min(1).max(10_000_000).default(D.policy.maxTrackedCounters),
      maxTrackedCountersPerProject: z.number().int().min(1).max(10_000_000).default(D.policy.maxTrackedCountersPerProject),
    })
    .prefault({}),
  /**
   * JWT projects (docs/PROTOCOL.md, `jwt`). The enclave fetches each project's JWKS itself, over HTTPS through
   * the parent's egress relay at `egress`; the server's certificate must chain to Node's CA store or to one of
   * `trustedCas` (PEM, in this file so PCR0 measures them). Its clock is checked against the NSM's every
   * `clockCheckMs`; past `maxClockDriftMs` JWT checks are refused. `jwks`: see enclave/src/auth/jwks.ts.
   */
  jwt: z
    .strictObject({
      egress: VsockAddressSchema.default(D.jwt.egress),
      trustedCas: z
        .array(certificatePem)
        .max(32)
        .default([...D.jwt.trustedCas]),
      clockCheckMs: ms(D.jwt.clockCheckMs, 1_000, 24 * 3600_000),
      maxClockDriftMs: ms(D.jwt.maxClockDriftMs, 1_000, 300_000),
      jwks: z
        .strictObject({
          /** One deadline for a whole fetch: relay, TLS, request and body. */
          fetchTimeoutMs: ms(D.jwt.jwks.fetchTimeoutMs, 100, 60_000),
          /** A larger JWKS, or one with more keys, is refused (the limits may be lowered, not raised). */
          maxBytes: z.number().int().min(1024).max(D.jwt.jwks.maxBytes).default(D.jwt.jwks.maxBytes),
          maxKeys: z.number().int().min(1).max(D.jwt.jwks.maxKeys).default(D.jwt.jwks.maxKeys),
          /** Cache-Control max-age is clamped to [minTtlMs, maxTtlMs]; maxTtlMs is also the hard expiry. */
          minTtlMs: ms(D.jwt.jwks.minTtlMs, 1_000, 3600_000),
          maxTtlMs: ms(D.jwt.jwks.maxTtlMs, 1_000, 3600_000),
          /** A JWT with a key id the set does not hold refetches it at most this often per URI. */
          unknownKidRefetchMs: ms(D.jwt.jwks.unknownKidRefetchMs, 1_000, 3600_000),
          /** After a failed fetch, the failure is answered again without a new fetch for this long. */
          failureRetryMs: ms(D.jwt.jwks.failureRetryMs, 0, 60_000),
          /** JWKS URIs remembered, least recently used dropped first. */
          maxUris: z.number().int().min(1).max(100_000).default(D.jwt.jwks.maxUris),
        })
        .refine((j) => j.minTtlMs <= j.maxTtlMs, { message: 'minTtlMs must not exceed maxTtlMs', path: ['minTtlMs'] })
        .prefault({}),
    })
    .prefault({}),
  /**
   * The wallet routes' HTTPS server (docs/TLS.md): it accepts the parent's ingress relay on `listen` and asks the
   * parent's wallet store at `store` for records (each verified here). Connections beyond `maxConnections` are
   * closed at once; a connection must send its preamble in `preambleTimeoutMs`, finish the TLS handshake in
   * `handshakeTimeoutMs`, a request's headers in `headersTimeoutMs` and the whole request in `requestTimeoutMs`;
   * an idle keep-alive connection is closed after `keepAliveTimeoutMs`. At `maxConnections`, a new connection
   * closes the keep-alive connection idle the longest, if there is one, else it is closed itself. At most
   * `maxConnectionsPerAddress` are open per preamble client address (IPv6 by /64), and a connection serves at most
   * `maxRequestsPerConnection` requests. Project lookups are cached for `projectCacheMs` (0: none). `rateLimits`:
   * see enclave/src/wallets.
   */
  wallets: z
    .strictObject({
      listen: VsockAddressSchema.default(D.wallets.listen),
      store: VsockAddressSchema.default(D.wallets.store),
      maxConnections: z.number().int().min(1).max(65_536).default(D.wallets.maxConnections),
      maxConnectionsPerAddress: z.number().int().min(1).max(65_536).default(D.wallets.maxConnectionsPerAddress),
      maxRequestsPerConnection: z.number().int().min(1).max(1_000_000).default(D.wallets.maxRequestsPerConnection),
      preambleTimeoutMs: ms(D.wallets.preambleTimeoutMs, 100, 60_000),
      handshakeTimeoutMs: ms(D.wallets.handshakeTimeoutMs, 100, 120_000),
      headersTimeoutMs: ms(D.wallets.headersTimeoutMs, 100, 120_000),
      requestTimeoutMs: ms(D.wallets.requestTimeoutMs, 100, 600_000),
      keepAliveTimeoutMs: ms(D.wallets.keepAliveTimeoutMs, 100, 3_600_000),
      maxHeaderBytes: z
        .number()
        .int()
        .min(1024)
        .max(64 * 1024)
        .default(D.wallets.maxHeaderBytes),
      bodyLimit: z
        .number()
        .int()
        .min(1024)
        .max(1024 * 1024)
        .default(D.wallets.bodyLimit),
      storeDeadlineMs: ms(D.wallets.storeDeadlineMs, 100, 60_000),
      projectCacheMs: ms(D.wallets.projectCacheMs, 0, 60_000),
      /**
       * Fixed windows of `windowMs`; beyond a limit, 403 with Retry-After. Requests per client address count
       * every request; failures per client address count the answers 401 (project key) and 400 for the JWT, so
       * invalid tokens lock out their sender, not the user they name; per project and per user count only
       * requests whose JWT verified. `maxTracked` bounds each limiter's memory (least recently used out).
       */
      rateLimits: z
        .strictObject({
          windowMs: ms(D.wallets.rateLimits.windowMs, 1000, 3_600_000),
          perAddress: z.number().int().min(1).max(10_000_000).default(D.wallets.rateLimits.perAddress),
          failuresPerAddress: z.number().int().min(1).max(10_000_000).default(D.wallets.rateLimits.failuresPerAddress),
          perProject: z.number().int().min(1).max(100_000_000).default(D.wallets.rateLimits.perProject),
          perUser: z.number().int().min(1).max(10_000_000).default(D.wallets.rateLimits.perUser),
          maxTracked: z.number().int().min(100).max(10_000_000).default(D.wallets.rateLimits.maxTracked),
        })
        .prefault({}),
    })
    .refine((w) => w.headersTimeoutMs <= w.requestTimeoutMs, {
      message: 'headersTimeoutMs must not exceed requestTimeoutMs',
      path: ['headersTimeoutMs'],
    })
    // Every connection may hold a request's headers and body in memory at once.
    .refine((w) => w.maxConnections * (w.bodyLimit + w.maxHeaderBytes) <= WALLETS_MAX_REQUEST_MEMORY, {
      message: `maxConnections × (bodyLimit + maxHeaderBytes) must not exceed ${WALLETS_MAX_REQUEST_MEMORY / 1024 / 1024} MiB (the requests all connections may hold in memory at once)`,
      path: ['maxConnections'],
    })
    .prefault({}),
});

export type EnclaveConfig = z.output<typeof EnclaveConfigSchema> & { kmsPublicKeyObject: KeyObject };
export type IdentityConfig = NonNullable<EnclaveConfig['identity']>;

export { ConfigError };

export function parseEnclaveConfig(raw: unknown, source = 'configuration'): EnclaveConfig {
  const res = EnclaveConfigSchema.safeParse(raw);
  if (!res.success) throw new ConfigError(`invalid ${source}: ${describeIssues(res.error, 'config')}`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(res.data.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
  } catch (err) {
    throw new ConfigError(`invalid ${source}: config.kmsPublicKey is not a base64 DER SubjectPublicKeyInfo`, { cause: err });
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa' || bits < 2048) {
    throw new ConfigError(
      `invalid ${source}: config.kmsPublicKey must be an RSA key of at least 2048 bits (the KMS key is RSA_2048/3072/4096)`,
    );
  }
  const config = { ...res.data, kmsPublicKeyObject: key };
  checkIdentity(config, source);
  return config;
}

/**
 * What the schema cannot say about `identity`: the blob is an identity blob for this public key under this
 * configuration's KMS key, and the default project's record is signed by it. A migration image needs one.
 */
function checkIdentity(config: EnclaveConfig, source: string): void {
  const fail = (message: string): never => {
    throw new ConfigError(`invalid ${source}: ${message}`);
  };
  const { identity } = config;
  if (!identity) {
    if (config.mode === 'migration') fail('config.identity: a migration image needs the identity (the genesis output)');
    return;
  }
  let blob;
  try {
    blob = decodeBlobBase64(identity.blob);
  } catch {
    return fail('config.identity.blob: not a sealed blob');
  }
  if (blob.v !== BLOB_VERSION || blob.kind !== 'identity') fail('config.identity.blob: not an identity blob');
  else if (blob.publicKey !== identity.publicKey)
    fail('config.identity.blob: sealed for another public key than config.identity.publicKey');
  else if (blob.kmsKeyArn !== config.kmsKeyArn) fail('config.identity.blob: sealed under another KMS key than config.kmsKeyArn');
  try {
    const { record } = openProjectRecord(identity.defaultProject, identityKeyObject(identity.publicKey));
    if (record.projectId !== DEFAULT_PROJECT_ID) fail('config.identity.defaultProject: not the default project');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    fail('config.identity.defaultProject: not a project record signed by config.identity.publicKey');
  }
}

export function loadEnclaveConfig(file: string): EnclaveConfig {
  return parseEnclaveConfig(readJsonConfig(file), `configuration ${file}`);
}
