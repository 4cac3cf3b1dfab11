/**
 * The parent <-> enclave RPC surface, one table per direction (docs/PROTOCOL.md): `EnclaveApi` is what the
 * enclave serves to the parent, `KmsProxyApi` what the parent's KMS proxy serves to the enclave. Each entry
 * is a method's params schema and result type; the servers' handler maps and the clients' calls are typed
 * from these tables (shared/src/rpc/api.ts). Each side validates what it receives.
 */
import { z } from 'zod';
import { defineMethod } from './rpc/api';
import { SUBJECT_MAX_BYTES } from './identifiers';
import type { SignedRecord } from './records';
import { isWellFormedText, JWT_MAX_BYTES } from './project-auth';
import { ProjectSettingsSchema } from './projects-schema';
import { base64, hexBytes, keyId, kmsKeyArn } from './schema';
import { TLS_CHAIN_MAX_BYTES, TLS_MAX_NAMES, TLS_NAME_EXPECTED, TLS_NAME_RE } from './tls-identity';
import { PROJECT_KEY_RE } from './records';
import { PROJECT_ID_RE } from './identifiers';
import { SIGN_BATCH_MAX_BYTES, SignBatchRequestsSchema, SignRequestSchema, type SignBatchItem, type SignResult } from './signing/schema';
import { PoliciesSchema, POLICY_MAX_APPROVERS } from './policy/schema';
import type { PolicyDecision } from './policy/decision';
import { APPROVAL_SIGNATURE_EXPECTED, APPROVAL_SIGNATURE_RE } from './policy/approval';

const hexUpTo = (bytes: number) => hexBytes.max(2 + 2 * bytes, `expected at most ${bytes} bytes`);
const blob = base64.max(8192, 'expected a key blob of at most 6 KiB');

/**
 * The protocol version this build speaks, and the versions it accepts (docs/PROTOCOL.md, "Versions").
 * Normally its own and the one before, so a rolling upgrade can run an old parent with a new enclave and the
 * reverse. Version 3 (release 0.4.0) is a cutover: every key carries a signed record the enclave checks, and
 * a version 2 parent sends none, so only version 3 is accepted. Version 2 (0.3.0) added `enclave.hello`;
 * version 1 (0.2.0) carried error codes in `data.reason` only.
 */
export const PROTOCOL_VERSION = 3;
export const ACCEPTED_PROTOCOL_VERSIONS: readonly number[] = [PROTOCOL_VERSION];

export const HelloParams = z.strictObject({ protocolVersion: z.number().int().min(1).max(1_000_000) });

export interface HelloResult {
  /** The version both sides speak on this connection. */
  protocolVersion: number;
  supportedVersions: number[];
  /** The methods this enclave serves, so a parent can tell what it may call. */
  features: string[];
  enclaveVersion: string;
}

/** A signed record as it travels: canonical CBOR and the identity's Ed25519 signature, both base64. */
export const SignedRecordSchema = z.strictObject({
  record: base64.max(43_692, 'expected a record of at most 32 KiB'),
  signature: base64.length(88, 'expected a 64-byte signature'),
});
const subject = z
  .string()
  .min(1)
  .refine((s) => Buffer.byteLength(s) <= SUBJECT_MAX_BYTES, `expected at most ${SUBJECT_MAX_BYTES} bytes`)
  .refine(isWellFormedText, 'expected well-formed Unicode text (a lone surrogate cannot be encoded)')
  .nullable();

export const HealthParams = z.strictObject({});
/**
 * The enclave's log lines after `after` (a seq from the previous answer's `nextSeq - 1`; 0 the first time), at
 * most `max` (default and most 200), with its counters (docs/PROTOCOL.md, "Methods").
 */
export const LogsParams = z.strictObject({
  after: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  max: z.number().int().min(1).max(200).optional(),
});
/** Genesis: the operator's nonce goes into the document's `nonce` field, so the document is fresh. */
export const GenesisParams = z.strictObject({ nonce: hexUpTo(512).refine((h) => h.length > 2, 'expected a nonce of 1-512 bytes') });
export const IdentityParams = z.strictObject({ nonce: hexUpTo(512).optional() });
/**
 * A user's JWT, compact form, as the caller sent it: required for every operation on a JWT project's key,
 * refused for a token project's. The enclave verifies it (docs/PROJECTS.md); here only its size is bounded.
 */
const jwt = z.string().min(1).max(JWT_MAX_BYTES, `expected a JWT of at most ${JWT_MAX_BYTES} bytes`);
/**
 * A key is made in a project (its signed record: the enclave checks it is genuine and active) for a subject:
 * for token projects the parent's external id, or null; for JWT projects the enclave derives it from `jwt`
 * (issuer and user claim) and `subject` must be null.
 */
export const CreateParams = z.strictObject({
  keyId,
  project: SignedRecordSchema,
  subject,
  attest: z.boolean().optional(),
  jwt: jwt.optional(),
});
/** The blob, the key's current record and its project's record: the enclave checks all three before signing. */
export const SignParams = z.strictObject({
  keyId,
  blob,
  record: SignedRecordSchema,
  project: SignedRecordSchema,
  request: SignRequestSchema,
  jwt: jwt.optional(),
});
/**
 * Up to 100 requests of one key (keys.signBatch): the key's blob and records checked once, the key unsealed at most
 * once, then each request as keys.sign would sign it, in order (docs/PROTOCOL.md, "Batch signing").
 */
export const SignBatchParams = z.strictObject({
  keyId,
  blob,
  record: SignedRecordSchema,
  project: SignedRecordSchema,
  requests: SignBatchRequestsSchema,
  jwt: jwt.optional(),
});
/**
 * The largest frame either side sends or takes by default: a batch of SIGN_BATCH_MAX_BYTES with its envelope (the
 * key's blob and records, a JWT), and its answer (each transaction's signed serialization is about the size of
 * the request that carried it, plus about a kilobyte of signature and hashes per request).
 */
export const ENCLAVE_MAX_FRAME_BYTES = SIGN_BATCH_MAX_BYTES + 256 * 1024;
/**
 * A JWT project's user asks for their key (TrueWallet `get-address`): the enclave verifies the JWT and that the
 * record is genuine, current, in the project, for the JWT's subject and not retired, and answers its address.
 */
export const LookupParams = z.strictObject({ record: SignedRecordSchema, project: SignedRecordSchema, jwt });
/** A new project: the enclave chooses its id (`p_…`) and key (`pk_…`) at random and signs its first record. */
export const ProjectCreateParams = z.strictObject({ settings: ProjectSettingsSchema });
/** A project's next record with `state` set (an admin action: disable or enable). */
export const ProjectSetStateParams = z.strictObject({ project: SignedRecordSchema, state: z.enum(['active', 'disabled']) });
/**
 * A project's next record with `policies` replaced (an admin action; docs/POLICIES.md): seq + 1, everything
 * else as it was. An empty policy removes the field: the project then signs as one without policies.
 */
export const ProjectSetPoliciesParams = z.strictObject({
  project: SignedRecordSchema,
  policies: PoliciesSchema,
  /** EIP-712 signatures of the current policy's approvers over this change (policy/approval.ts); needed when it has approvers. */
  approvals: z.array(z.string().regex(APPROVAL_SIGNATURE_RE, APPROVAL_SIGNATURE_EXPECTED)).max(POLICY_MAX_APPROVERS).optional(),
});
/**
 * A dry run (an admin action): the decision the project's policy (its record's, or `policies` when given, to
 * try a policy before setting it) makes on `request`, with every rule's and limit's outcome. `record` (one of
 * the project's keys) adds the key's own limits; nothing is counted and nothing is signed.
 */
export const ProjectEvaluatePolicyParams = z.strictObject({
  project: SignedRecordSchema,
  request: SignRequestSchema,
  record: SignedRecordSchema.optional(),
  policies: PoliciesSchema.optional(),
});
/** A new record for the key with `disabled` set, `seq` + 1 (an admin action, authorized by the parent for token projects). */
export const SetDisabledParams = z.strictObject({ record: SignedRecordSchema, project: SignedRecordSchema, disabled: z.boolean() });
/**
 * The key lifecycle (docs/LIFECYCLE.md). Each is one key's (or two keys') next signed records; the parent
 * authorizes the caller for token projects, and a JWT project's key changes only with its user's JWT carrying
 * `nks_action` equal to the action and living at most LIFECYCLE_MAX_TOKEN_LIFETIME_S (no operator can).
 *
 * successor: a new key (`keyId`, chosen by the parent like a create's) in state `pending`, same project and
 * subject as `record`'s key, which must be `active`; its records carry `predecessor` = that key's id. The
 * parent keeps at most one pending key per subject (SUCCESSOR_EXISTS); the enclave checks the states.
 */
export const SuccessorParams = z.strictObject({
  keyId,
  record: SignedRecordSchema,
  project: SignedRecordSchema,
  attest: z.boolean().optional(),
  jwt: jwt.optional(),
});
/**
 * activate: `record` (a `pending` key) becomes `active` and `predecessor` (the current record of the key its
 * `predecessor` names, `active`) becomes `retired`; both records are answered and must be stored together.
 */
export const ActivateParams = z.strictObject({
  record: SignedRecordSchema,
  predecessor: SignedRecordSchema,
  project: SignedRecordSchema,
  jwt: jwt.optional(),
});
/** cancel: `record` (a `pending` key) becomes `cancelled`; it never signs again. */
export const CancelParams = z.strictObject({ record: SignedRecordSchema, project: SignedRecordSchema, jwt: jwt.optional() });
/** Migration image only: a version 1 blob re-sealed as version 2 in `project` for `subject`, with a record of origin "migrated". */
export const MigrateParams = z.strictObject({ keyId, blob, project: SignedRecordSchema, subject });
export const ForgetParams = z.strictObject({ keyId });
/**
 * The wallet routes' TLS key (docs/TLS.md): a new P-256 key for these DNS names. Normal image only. Nothing
 * is installed: the answer is what the operator needs to get a certificate.
 */
export const TlsCreateParams = z.strictObject({
  names: z
    .array(z.string().regex(TLS_NAME_RE, TLS_NAME_EXPECTED))
    .min(1, 'expected at least one name')
    .max(TLS_MAX_NAMES, `expected at most ${TLS_MAX_NAMES} names`)
    .refine((n) => new Set(n).size === n.length, 'expected each name once'),
});
/**
 * Serve the wallet routes with this key and chain: the blob must be one this enclave's identity signed
 * (`blobSignature` over tlsBlobDigest), the chain's leaf must name the blob's key, be valid now, and each
 * certificate be issued by the next. Replaces what was installed. The parent calls it after `tls.create` +
 * certificate, and after every enclave start (the key is then unsealed: one KMS call).
 */
export const TlsInstallParams = z.strictObject({
  blob: base64.max(8192, 'expected a TLS blob of at most 6 KiB'),
  blobSignature: base64.length(88, 'expected a 64-byte signature'),
  chain: z.string().min(1).max(TLS_CHAIN_MAX_BYTES, `expected a PEM chain of at most ${TLS_CHAIN_MAX_BYTES} bytes`),
});

/**
 * The key cache's size and lifetime (docs/OPERATIONS.md, "Sizing the key cache"): what the parent wants, each
 * within the bounds its image fixes, else refused (INVALID_PARAMS naming the bound). An absent field is the
 * image's own value. Sent on every connection's start-up; in force at once (a smaller cache evicts now, a
 * shorter TTL applies to the keys already cached). Here only the shape is checked; the enclave checks the bounds.
 */
export const CacheConfigureParams = z.strictObject({
  ttlMs: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  maxEntries: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
});

export interface CacheSettings {
  /** In force now: how long a key stays cached after its unsealing, and how many keys at most. */
  ttlMs: number;
  maxEntries: number;
  /** What the image allows (its configuration, measured into PCR0). */
  bounds: { minTtlMs: number; maxTtlMs: number; minEntries: number; maxEntries: number };
}

/** No `userData`: the parent never chooses bytes of the enclave's evidence (see attestation/user-data.ts). */
export const AttestationParams = z.strictObject({ nonce: hexUpTo(512).optional() });

export interface EnclaveHealth {
  status: 'ok';
  version: string;
  nsm: 'real' | 'simulated';
  /** The enclave's link to the parent's KMS proxy (needed for cold signs). */
  kmsProxy: 'connected' | 'disconnected';
  /**
   * The keystore identity: "genesis" in a genesis image (no identity configured), "unsealing" while the
   * enclave starts (it serves only hello and health until then), "ready" once unsealed and checked.
   */
  identity: 'genesis' | 'unsealing' | 'ready';
  /**
   * Can this enclave unseal (docs/OPERATIONS.md, "Readiness")? "failing" after KMS refused an unseal of its own
   * (the identity at start, a user key, or the rate-limited canary that re-unseals the identity blob after a
   * refusal), "ok" after one succeeded, "unknown" before either (and in a genesis image). Throttling and an
   * unreachable KMS change nothing. `unsealCode`: the refusal's error code while failing (the code the parent's
   * KMS proxy already saw, or KEY_INTEGRITY), else null; never more.
   */
  unseal: 'unknown' | 'ok' | 'failing';
  unsealCode: string | null;
  /** The configuration's `mode` ("migration": the image that re-seals version 1 blobs) and `securityEpoch`. */
  mode: 'normal' | 'migration';
  securityEpoch: number;
  uptimeMs: number;
  counters: {
    creates: number;
    signs: number;
    cacheHits: number;
    cacheMisses: number;
    cacheEvictions: number;
    cacheExpirations: number;
    cacheSize: number;
    /** The key cache's settings in force (cache.configure, else the image's); absent from older enclaves. */
    cacheTtlMs?: number;
    cacheMaxEntries?: number;
    /** Decrypts for user keys: exactly one per cold key. */
    kmsCalls: number;
    /** Decrypts for the enclave's own keys (the identity's seed at start, the TLS key at install), apart from kmsCalls. */
    identityKmsCalls: number;
    /** Canary unseals started (each also counted in identityKmsCalls): at most one per limits.unsealCanaryMs. */
    unsealCanaries: number;
    kmsErrors: number;
    /**
     * KMS answers that did not open (forged, or for a tampered blob), plus cold signs refused during the
     * cool-down that follows too many. A total only: there is deliberately no count by failing step.
     */
    failedOpens: number;
    /**
     * Records or blobs that did not pass the enclave's checks (a signature, a binding, an old seq, a blob that is
     * not the one the record names), each answered with the same KEY_INTEGRITY. A total only, as failedOpens.
     */
    integrityFailures: number;
    /** Recipient key pairs made: scheduled rotations and replacements of keys retired after a failed open. */
    recipientKeyRotations: number;
    attestationDocuments: number;
    /** Signing jobs that passed signing.deadlineMs, and signer threads replaced (after a timeout or a crash). */
    signingTimeouts: number;
    signerReplacements: number;
    /** The enclave's RPC server: open connections, those paused for unread answers, and their backlog. */
    rpcConnections: number;
    rpcPausedConnections: number;
    rpcUnsentBytes: number;
    rpcInFlightBytes: number;
    /** The log channel to the parent (enclave.logs): lines written, and lines overwritten before the parent pulled them. */
    logLines: number;
    logDropped: number;
    errors: Record<string, number>;
  };
  /** Signing policies (docs/POLICIES.md): requests evaluated and refused, and the limit counters held. */
  policy: {
    evaluations: number;
    /** POLICY_DENIED answers: by a deny rule, by no allow rule, by a limit. */
    denials: { rule: number; noRule: number; limit: number };
    /** Keys and projects with a limit counter in memory (bounded by the configuration's policy.maxTrackedCounters). */
    trackedCounters: number;
  };
  /** JWT projects (docs/PROJECTS.md): the clock check and the JWKS fetches. */
  jwt: {
    /** "trusted" while the last cross-check against an attestation timestamp was within 30 s. */
    clock: 'unchecked' | 'trusted' | 'untrusted';
    /** The enclave clock minus the last attestation timestamp, in ms (null before the first check). */
    clockDriftMs: number | null;
    verifications: number;
    /** JWTs refused (INVALID_JWT), a total only. */
    refusals: number;
    jwksFetches: number;
    jwksFetchFailures: number;
    jwksCached: number;
  };
  /** The wallet routes' TLS (docs/TLS.md): what is installed (nothing until `tls.install`). */
  tls: TlsStatus;
  /** The enclave's HTTPS server for the wallet routes: connections now, and totals since start. */
  wallets: {
    connections: number;
    /** Connections closed at once: over `wallets.maxConnections`, or a bad preamble. */
    connectionsRefused: number;
    /** Keep-alive connections closed, the one idle the longest, to make room at `wallets.maxConnections`. */
    connectionsEvicted: number;
    /** TLS handshakes that failed or timed out (no certificate installed, a client that gave up, a slowloris). */
    handshakeFailures: number;
    /** Answers by outcome: ok, bad_request, invalid_jwt, unauthorized, not_found, rate_limited, conflict, policy_denied, unavailable, error. */
    requests: Record<string, number>;
  };
  memory: { rssBytes: number; heapUsedBytes: number; externalBytes: number };
}

/** One of the enclave's log lines as the channel carries it (enclave/src/log-channel.ts): never key material. */
export interface EnclaveLogLine {
  seq: number;
  /** Milliseconds since the epoch, the enclave's clock. */
  time: number;
  /** pino's numeric level (30 info, 40 warn, 50 error, 60 fatal). */
  level: number;
  msg: string;
  /** An allow-list of the line's scalar fields (requestId, method, code, keyId, …). */
  fields: Record<string, string | number | boolean>;
}

export interface EnclaveLogs {
  lines: EnclaveLogLine[];
  /** The seq the next line will have: ask next with `after: nextSeq - 1`. */
  nextSeq: number;
  /** Lines written since the enclave started, and lines overwritten before they were pulled. */
  written: number;
  dropped: number;
  /** The enclave's counters, as enclave.health has them. */
  counters: Omit<EnclaveHealth['counters'], 'errors'>;
}

export interface TlsStatus {
  state: 'none' | 'installed';
  /** The installed key's DER SPKI, base64; null when none. */
  publicKey: string | null;
  /** The leaf's DNS names (subjectAltName). */
  names: string[];
  /** The leaf's validity, ISO 8601; null when none. */
  notBefore: string | null;
  notAfter: string | null;
  /** SHA-256 of the leaf certificate (DER), lower-case hex; null when none. */
  fingerprint256: string | null;
}

export interface TlsCreateResult {
  /** The new key's DER SubjectPublicKeyInfo, base64. */
  publicKey: string;
  /** The sealed key (blob kind "tls"), base64: the parent stores it. */
  blob: string;
  /** The identity's Ed25519 signature over `tlsBlobDigest(blob bytes)`, base64. */
  blobSignature: string;
  /** PKCS#10 certificate request, PEM: subject CN = names[0], subjectAltName = every name, signed by the key. */
  csr: string;
  /** COSE_Sign1, base64: user_data = tlsUserData(SPKI) (attestation/user-data.ts), no nonce. */
  attestation: string;
}

export interface GenesisResult {
  /** The identity's Ed25519 public key, 0x-hex. */
  publicKey: string;
  /** The identity's sealed seed (blob kind "identity"), base64. */
  blob: string;
  /** The identity's Ed25519 signature over `identityBlobDigest(blob bytes)`, base64: the blob is the enclave's own. */
  blobSignature: string;
  /** COSE_Sign1, base64: user_data = SHA-256("nks-identity-v1" ‖ public key), nonce = the operator's. */
  attestation: string;
  /** The `default` token project's record, signed by the new identity. */
  defaultProject: SignedRecord;
}

export interface IdentityResult {
  publicKey: string;
  /** The genesis document from the configuration, base64: clients pin the identity from it. */
  genesisDocument: string;
  /** A fresh document of this enclave: user_data binds the public key as at genesis; nonce = the caller's. */
  attestation: string;
  defaultProject: SignedRecord;
}

export interface CreateResult {
  keyId: string;
  address: `0x${string}`;
  /** Uncompressed secp256k1 public key, 0x04-prefixed hex. */
  publicKey: `0x${string}`;
  /** The sealed blob, base64. */
  blob: string;
  /** The key's first record (seq 0), signed by the identity. */
  record: SignedRecord;
  /** Birth attestation (base64 COSE_Sign1) whose user_data is `birthUserData(keyId, address)`. */
  attestation?: string;
}

export interface SetDisabledResult {
  record: SignedRecord;
}

export interface ActivateResult {
  /** The activated key's next record (state active). */
  record: SignedRecord;
  /** Its predecessor's next record (state retired). */
  predecessor: SignedRecord;
}

export interface LookupResult {
  keyId: string;
  address: `0x${string}`;
}

export interface ProjectResult {
  projectId: string;
  projectKey: string;
  /** The project's newest record, signed by the identity. */
  record: SignedRecord;
}

export type { SignResult, SignBatchItem };

/** keys.signBatch: one answer per request, in order. */
export interface SignBatchResult {
  results: SignBatchItem[];
}

export interface ForgetResult {
  keyId: string;
  /** Whether the key was in the enclave's cache. */
  forgotten: boolean;
}

export interface AttestationResult {
  /** COSE_Sign1 attestation document, base64; `user_data` is tagged (shared/src/attestation/user-data.ts). */
  document: string;
}

/** What the enclave serves to the parent. */
export const EnclaveApi = {
  'enclave.hello': defineMethod<HelloResult>()(HelloParams),
  'enclave.health': defineMethod<EnclaveHealth>()(HealthParams),
  'enclave.logs': defineMethod<EnclaveLogs>()(LogsParams),
  'identity.genesis': defineMethod<GenesisResult>()(GenesisParams),
  'identity.get': defineMethod<IdentityResult>()(IdentityParams),
  'keys.create': defineMethod<CreateResult>()(CreateParams),
  'keys.sign': defineMethod<SignResult>()(SignParams),
  'keys.signBatch': defineMethod<SignBatchResult>()(SignBatchParams),
  'keys.setDisabled': defineMethod<SetDisabledResult>()(SetDisabledParams),
  'keys.lookup': defineMethod<LookupResult>()(LookupParams),
  'keys.successor': defineMethod<CreateResult>()(SuccessorParams),
  'keys.activate': defineMethod<ActivateResult>()(ActivateParams),
  'keys.cancel': defineMethod<SetDisabledResult>()(CancelParams),
  'projects.create': defineMethod<ProjectResult>()(ProjectCreateParams),
  'projects.setState': defineMethod<ProjectResult>()(ProjectSetStateParams),
  'projects.setPolicies': defineMethod<ProjectResult>()(ProjectSetPoliciesParams),
  'projects.evaluatePolicy': defineMethod<PolicyDecision>()(ProjectEvaluatePolicyParams),
  'keys.forget': defineMethod<ForgetResult>()(ForgetParams),
  'keys.migrate': defineMethod<CreateResult>()(MigrateParams),
  'attestation.get': defineMethod<AttestationResult>()(AttestationParams),
  'tls.create': defineMethod<TlsCreateResult>()(TlsCreateParams),
  'tls.install': defineMethod<TlsStatus>()(TlsInstallParams),
  'cache.configure': defineMethod<CacheSettings>()(CacheConfigureParams),
};
export type EnclaveApi = typeof EnclaveApi;

/**
 * Asked of the parent's KMS proxy by the enclave: an attested Decrypt. `deadlineMs` is how long the enclave
 * waits for the answer; the proxy finishes its retries well inside it, so the enclave hears KMS's real reason.
 */
export const KmsDecryptParams = z.strictObject({
  kmsKeyArn,
  ciphertextBlob: base64.max(8192),
  attestationDocument: base64.max(349_528),
  deadlineMs: z.number().int().min(1).max(600_000).optional(),
});

export interface KmsDecryptResult {
  /** CMS EnvelopedData for the enclave's recipient key, base64. */
  ciphertextForRecipient: string;
  /** The key ARN KMS reports. */
  keyId: string;
}

/** What the parent's KMS proxy serves to the enclave. */
export const KmsProxyApi = {
  'kms.decrypt': defineMethod<KmsDecryptResult>()(KmsDecryptParams),
};
export type KmsProxyApi = typeof KmsProxyApi;

/**
 * The wallet store (docs/TLS.md): asked of the parent by the enclave's HTTPS server for the wallet routes, so
 * the parent keeps storing records and blobs it can read but not forge. Every answer is the parent's word: the
 * enclave validates its shape with the `…Answer` schemas below and verifies every record it gets (a lie is
 * refused; an older genuine record is a replay, see docs/SECURITY.md).
 */
const StoredUserKeySchema = z.strictObject({ keyId, blob, record: SignedRecordSchema });
export type StoredUserKey = z.infer<typeof StoredUserKeySchema>;
/** A project by its key (the path's `{projectKey}`): its newest signed record, or null when unknown. */
export const StoreProjectParams = z.strictObject({ projectKey: z.string().regex(PROJECT_KEY_RE) });
export const StoreProjectAnswer = z.strictObject({ project: SignedRecordSchema.nullable() });
/** The active key of (project, subject), or null when the user has none. */
export const StoreUserKeyParams = z.strictObject({
  projectId: z.string().regex(PROJECT_ID_RE),
  subject: subject.unwrap(),
});
export const StoreUserKeyAnswer = z.strictObject({ key: StoredUserKeySchema.nullable() });
/**
 * Store a key the enclave just made for a wallet user (its first record, signed). The parent checks the
 * record, then stores it unless (project, subject) already has an active key: `inserted` false and that key.
 */
export const StoreInsertUserKeyParams = z.strictObject({
  keyId,
  address: z.string().regex(/^0x[0-9a-fA-F]{40}$/),
  publicKey: hexUpTo(65),
  blob,
  record: SignedRecordSchema,
});
export const StoreInsertUserKeyAnswer = z.strictObject({ inserted: z.boolean(), key: StoredUserKeySchema });

/** The pending successor of (project, subject), or null (docs/LIFECYCLE.md). */
export const StorePendingUserKeyParams = StoreUserKeyParams;
export const StorePendingUserKeyAnswer = StoreUserKeyAnswer;
/**
 * Store a successor the enclave just made (its first record, state pending, `predecessor` set). The parent
 * checks the record, then stores it unless the subject already has a pending key: `inserted` false and that key.
 */
export const StoreInsertSuccessorParams = StoreInsertUserKeyParams;
export const StoreInsertSuccessorAnswer = StoreInsertUserKeyAnswer;
/**
 * Store the next records of existing keys, all or none (activate: the successor's and its predecessor's, in
 * one transaction). The parent checks each (genuine, seq = stored seq + 1, prev = the stored record's digest).
 */
export const StoreUpdateRecordsParams = z.strictObject({ records: z.array(SignedRecordSchema).min(1).max(2) });
export const StoreUpdateRecordsAnswer = z.strictObject({ updated: z.literal(true) });

export const WalletStoreApi = {
  'store.project': defineMethod<z.infer<typeof StoreProjectAnswer>>()(StoreProjectParams),
  'store.userKey': defineMethod<z.infer<typeof StoreUserKeyAnswer>>()(StoreUserKeyParams),
  'store.insertUserKey': defineMethod<z.infer<typeof StoreInsertUserKeyAnswer>>()(StoreInsertUserKeyParams),
  'store.pendingUserKey': defineMethod<z.infer<typeof StorePendingUserKeyAnswer>>()(StorePendingUserKeyParams),
  'store.insertSuccessor': defineMethod<z.infer<typeof StoreInsertSuccessorAnswer>>()(StoreInsertSuccessorParams),
  'store.updateRecords': defineMethod<z.infer<typeof StoreUpdateRecordsAnswer>>()(StoreUpdateRecordsParams),
};
export type WalletStoreApi = typeof WalletStoreApi;
