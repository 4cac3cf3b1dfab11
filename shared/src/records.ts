/**
 * Signed records (docs/RECORDS.md): what the enclave says about a key or a project, in canonical CBOR, signed
 * by the keystore identity (Ed25519) over SHA-256("nks-record-v1" ‖ cbor). The parent stores them and hands
 * them back; nobody without the identity can make or alter one, so a parent cannot put a key of its own under
 * a user's key id, move a key to another project or subject, or edit a state.
 *
 *   key:     {v:1, kind:"key", keyId, address, blobSha256, projectId, subject, state, disabled, seq, prev, origin, createdAt,
 *             predecessor?}
 *   project: {v:1, kind:"project", projectId, projectKey, auth, allowedRequestTypes, allowedOrigins, state, seq, prev, createdAt,
 *             policies?}
 *
 * `seq` counts a key's (a project's) records from 0; `prev` is the digest of the record before it (null at 0).
 * The decoders here accept exactly these fields, each well formed, in the one canonical encoding; the enclave
 * and the parent decide what a record's content allows. `policies` (docs/POLICIES.md) is the one optional
 * field: a project without policies has none, so its records are byte for byte what they were before policies
 * existed, and a release that does not know the field refuses a record that has it (a downgrade cannot drop a
 * policy). A policy is checked by its own schema (policy/schema.ts) and must be in the normalized form it
 * outputs; everything else is plain checks. A key's `predecessor` (docs/LIFECYCLE.md) is optional the same way:
 * only a successor has it, so every other key's records are what they were before the lifecycle existed.
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { canonicalCbor, decodeCanonicalCbor } from './cbor';
import { KeystoreError } from './errors';
import { ADDRESS_RE, IDENTITY_PUBLIC_KEY_RE, KEY_ID_RE, PROJECT_ID_RE, SUBJECT_MAX_BYTES } from './identifiers';
import {
  isJwksUri,
  isUserClaim,
  JWT_ALGORITHMS,
  JWT_AUDIENCE_MAX,
  JWT_ISSUER_MAX,
  MAX_ORIGINS,
  MAX_TOKEN_LIFETIME_S,
  ORIGIN_RE,
  type JwtAlgorithm,
  type ProjectAuth,
} from './project-auth';
import { SIGN_REQUEST_TYPES, type SignRequestType } from './signing/request-types';
import { isEmptyPolicy, PoliciesSchema, type Policies } from './policy/schema';

export const RECORD_VERSION = 1;
/** The domain tag of a record signature: no other signature of the identity covers these bytes. */
export const RECORD_SIGNATURE_TAG = 'nks-record-v1';
/** A key record is a few hundred bytes; a project's lists and policies are bounded by this (projects-schema.ts). */
export const MAX_RECORD_BYTES = 32_768;
export const ED25519_SIGNATURE_BYTES = 64;

export const KEY_STATES = ['pending', 'active', 'retired', 'cancelled'] as const;
export type KeyState = (typeof KEY_STATES)[number];
export const KEY_ORIGINS = ['created', 'migrated'] as const;
export type KeyOrigin = (typeof KEY_ORIGINS)[number];
export const PROJECT_STATES = ['active', 'disabled'] as const;
export type ProjectState = (typeof PROJECT_STATES)[number];
/** The project made at genesis: token-authorized, every request type, no browser origins. */
export const DEFAULT_PROJECT_ID = 'default';

export interface KeyRecord {
  v: typeof RECORD_VERSION;
  kind: 'key';
  keyId: string;
  /** EIP-55 checksummed. */
  address: string;
  /** SHA-256 of the sealed blob's bytes, 0x-prefixed hex. */
  blobSha256: string;
  projectId: string;
  subject: string | null;
  state: KeyState;
  /** Reversible: a disabled key signs nothing; clearing it resumes `state`. */
  disabled: boolean;
  seq: number;
  /** The previous record's digest (`recordDigest`), 0x-prefixed hex, or null for seq 0. */
  prev: string | null;
  origin: KeyOrigin;
  /** Milliseconds since the epoch, by the enclave's clock, when this record was made. */
  createdAt: number;
  /**
   * A successor's (docs/LIFECYCLE.md): the key id of the key it succeeds, same project and subject. Set at the
   * successor's birth (state pending) and kept in all its records; absent on every other key.
   */
  predecessor?: string;
}

/** Retired (succeeded) and cancelled (a successor given up) are final: such a key never signs again. */
export const isFinalKeyState = (s: KeyState): boolean => s === 'retired' || s === 'cancelled';

export type { ProjectAuth };

export interface ProjectRecord {
  v: typeof RECORD_VERSION;
  kind: 'project';
  projectId: string;
  /** Public identifier (`pk_…`, or `default`): it goes into browser code. */
  projectKey: string;
  auth: ProjectAuth;
  allowedRequestTypes: SignRequestType[];
  allowedOrigins: string[];
  state: ProjectState;
  seq: number;
  prev: string | null;
  createdAt: number;
  /** The project's signing policies (docs/POLICIES.md), normalized and not empty; absent: none. */
  policies?: Policies;
}

export type AnyRecord = KeyRecord | ProjectRecord;

/** A record as it travels and is stored: its canonical CBOR and the identity's signature, both base64. */
export interface SignedRecord {
  record: string;
  signature: string;
}

export function encodeRecord(r: AnyRecord): Buffer {
  const fields: Record<string, unknown> = { ...r };
  if (fields.predecessor === undefined) delete fields.predecessor;
  // No policies: no field, so the record is what it was before policies existed.
  if (r.kind === 'project' && isEmptyPolicy(r.policies)) delete fields.policies;
  return canonicalCbor(fields);
}

/** SHA-256("nks-record-v1" ‖ cbor): what the identity signs, and what `prev` and caches name a record by. */
export function recordDigest(cbor: Uint8Array): Buffer {
  return createHash('sha256').update(RECORD_SIGNATURE_TAG, 'utf8').update(cbor).digest();
}

/** The domain tag of the identity's signature over its own sealed blob (made at genesis). */
export const IDENTITY_BLOB_SIGNATURE_TAG = 'nks-identity-blob-v1';

/** SHA-256("nks-identity-blob-v1" ‖ blob): what the identity signs at genesis so its blob is authenticated. */
export function identityBlobDigest(blob: Uint8Array): Buffer {
  return createHash('sha256').update(IDENTITY_BLOB_SIGNATURE_TAG, 'utf8').update(blob).digest();
}

export const hex = (b: Uint8Array): string => `0x${Buffer.from(b).toString('hex')}`;

const bad = (what: string, cause?: unknown) => new KeystoreError('KEY_INTEGRITY', `record is malformed: ${what}`, { cause });

/** The identity's public key as a KeyObject, from its 0x-hex form (configuration, records, genesis output). */
export function identityPublicKey(publicKeyHex: string): KeyObject {
  if (!IDENTITY_PUBLIC_KEY_RE.test(publicKeyHex)) throw new KeystoreError('INVALID_PARAMS', 'identity public key is not 32 bytes of hex');
  const x = Buffer.from(publicKeyHex.slice(2), 'hex').toString('base64url');
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
}

/** The raw 32-byte public key of an Ed25519 KeyObject, as 0x-hex. */
export function identityPublicKeyHex(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') throw new TypeError('not an Ed25519 key');
  return hex(Buffer.from(jwk.x, 'base64url'));
}

/**
 * Checks `signed` is a record signed by `identity` and returns its bytes and digest. KEY_INTEGRITY when the
 * signature or encoding is wrong: the message never says which, and never carries the record's content.
 */
export function verifySignedRecord(signed: SignedRecord, identity: KeyObject): { bytes: Buffer; digest: Buffer } {
  const bytes = Buffer.from(signed.record, 'base64');
  const signature = Buffer.from(signed.signature, 'base64');
  if (bytes.length === 0 || bytes.length > MAX_RECORD_BYTES || signature.length !== ED25519_SIGNATURE_BYTES) {
    throw new KeystoreError('KEY_INTEGRITY', 'record signature does not verify');
  }
  const digest = recordDigest(bytes);
  let ok: boolean;
  try {
    ok = verify(null, digest, identity, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new KeystoreError('KEY_INTEGRITY', 'record signature does not verify');
  return { bytes, digest };
}

function decodeMap(bytes: Uint8Array, fields: readonly string[], optional: readonly string[] = [], maxDepth = 4): Map<unknown, unknown> {
  let m: unknown;
  try {
    m = decodeCanonicalCbor(bytes, { maxDepth });
  } catch (err) {
    throw bad('not canonical CBOR', err);
  }
  if (!(m instanceof Map)) throw bad('not a CBOR map');
  if (m.get('v') !== RECORD_VERSION) throw bad(`version is not ${RECORD_VERSION}`);
  for (const k of m.keys()) {
    if (typeof k !== 'string' || !(fields.includes(k) || optional.includes(k))) throw bad(`unknown field ${String(k).slice(0, 32)}`);
  }
  for (const k of fields) if (!m.has(k)) throw bad(`${k} is missing`);
  return m;
}

const str = (m: Map<unknown, unknown>, k: string, re: RegExp): string => {
  const v = m.get(k);
  if (typeof v !== 'string' || !re.test(v)) throw bad(`${k} is not well formed`);
  return v;
};
const oneOf = <T extends string>(m: Map<unknown, unknown>, k: string, values: readonly T[]): T => {
  const v = m.get(k);
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) throw bad(`${k} is not one of ${values.join(', ')}`);
  return v as T;
};
const uint = (m: Map<unknown, unknown>, k: string): number => {
  const raw = m.get(k);
  const v = typeof raw === 'bigint' ? Number(raw) : raw;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${k} is not a non-negative integer`);
  return v;
};
const HEX32 = /^0x[0-9a-f]{64}$/;
const prevOf = (m: Map<unknown, unknown>, seq: number): string | null => {
  const v = m.get('prev');
  if (seq === 0 ? v !== null : typeof v !== 'string' || !HEX32.test(v)) throw bad('prev does not match seq');
  return v as string | null;
};

const KEY_FIELDS = [
  'v',
  'kind',
  'keyId',
  'address',
  'blobSha256',
  'projectId',
  'subject',
  'state',
  'disabled',
  'seq',
  'prev',
  'origin',
  'createdAt',
] as const;

export function decodeKeyRecord(bytes: Uint8Array): KeyRecord {
  const m = decodeMap(bytes, KEY_FIELDS, ['predecessor']);
  if (m.get('kind') !== 'key') throw bad('kind is not key');
  const subject = m.get('subject');
  if (subject !== null && (typeof subject !== 'string' || subject.length === 0 || Buffer.byteLength(subject) > SUBJECT_MAX_BYTES)) {
    throw bad('subject is not null or a string');
  }
  const disabled = m.get('disabled');
  if (typeof disabled !== 'boolean') throw bad('disabled is not a boolean');
  const seq = uint(m, 'seq');
  return {
    v: RECORD_VERSION,
    kind: 'key',
    keyId: str(m, 'keyId', KEY_ID_RE),
    address: str(m, 'address', ADDRESS_RE),
    blobSha256: str(m, 'blobSha256', HEX32),
    projectId: str(m, 'projectId', PROJECT_ID_RE),
    subject,
    state: oneOf(m, 'state', KEY_STATES),
    disabled,
    seq,
    prev: prevOf(m, seq),
    origin: oneOf(m, 'origin', KEY_ORIGINS),
    createdAt: uint(m, 'createdAt'),
    ...(m.has('predecessor') ? { predecessor: str(m, 'predecessor', KEY_ID_RE) } : {}),
  };
}

const PROJECT_FIELDS = [
  'v',
  'kind',
  'projectId',
  'projectKey',
  'auth',
  'allowedRequestTypes',
  'allowedOrigins',
  'state',
  'seq',
  'prev',
  'createdAt',
] as const;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** A policy nests deepest: record, policies, rules, a rule, its condition, erc20, a list. */
const PROJECT_MAX_DEPTH = 7;

/**
 * CBOR maps (text keys only) and arrays as plain JSON values, for the policy schema. The decoder gives integers
 * of 2^32 and above as bigint; the schema's numbers (a chain id may be up to 2^53 - 1) are numbers again here,
 * and encode to the same bytes, so the normalized-form check below still compares the record's own bytes.
 */
function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : v;
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Map) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) {
      if (typeof k !== 'string') throw bad('policies has a key that is not text');
      Object.defineProperty(o, k, { value: plain(x), enumerable: true, writable: true, configurable: true });
    }
    return o;
  }
  return v;
}

/** A policy as the enclave writes it: valid, not empty, and already in the schema's normalized form. */
function decodePolicies(raw: unknown): Policies {
  const value = plain(raw);
  const parsed = PoliciesSchema.safeParse(value);
  if (!parsed.success) throw bad('policies is not a valid policy');
  if (isEmptyPolicy(parsed.data)) throw bad('policies is empty (a project without policies has no field)');
  if (!canonicalCbor({ p: parsed.data }).equals(canonicalCbor({ p: value }))) throw bad('policies is not in normalized form');
  return parsed.data;
}

/** Project keys: `pk_` and random, or `default` for the genesis project. */
export const PROJECT_KEY_RE = /^(?:default|pk_[A-Za-z0-9_-]{16,43})$/;
const JWT_AUTH_FIELDS = ['type', 'issuer', 'audience', 'userClaim', 'jwksUri', 'algorithms', 'maxTokenLifetime'];

/** `{type:"token"}` or a JWT auth with exactly its fields, each well formed. */
function decodeAuth(auth: unknown): ProjectAuth {
  if (!(auth instanceof Map)) throw bad('auth is not a map');
  if (auth.size === 1 && auth.get('type') === 'token') return { type: 'token' };
  if (auth.get('type') !== 'jwt') throw bad('auth is not {type:"token"} or {type:"jwt", …}');
  for (const k of auth.keys())
    if (typeof k !== 'string' || !JWT_AUTH_FIELDS.includes(k)) throw bad(`unknown auth field ${String(k).slice(0, 32)}`);
  const text = (k: string, ok: (v: string) => boolean): string => {
    const v = auth.get(k);
    if (typeof v !== 'string' || !ok(v)) throw bad(`auth.${k} is not well formed`);
    return v;
  };
  const algorithms = auth.get('algorithms');
  if (
    !Array.isArray(algorithms) ||
    algorithms.length === 0 ||
    algorithms.some((a) => !(JWT_ALGORITHMS as readonly unknown[]).includes(a)) ||
    new Set(algorithms).size !== algorithms.length
  ) {
    throw bad('auth.algorithms is not a list of distinct asymmetric algorithms');
  }
  const lifetime = auth.get('maxTokenLifetime');
  if (typeof lifetime !== 'number' || !Number.isSafeInteger(lifetime) || lifetime < 1 || lifetime > MAX_TOKEN_LIFETIME_S) {
    throw bad('auth.maxTokenLifetime is out of range');
  }
  return {
    type: 'jwt',
    issuer: text('issuer', (v) => v.length > 0 && v.length <= JWT_ISSUER_MAX),
    audience: text('audience', (v) => v.length > 0 && v.length <= JWT_AUDIENCE_MAX),
    userClaim: text('userClaim', isUserClaim),
    jwksUri: text('jwksUri', isJwksUri),
    algorithms: algorithms as JwtAlgorithm[],
    maxTokenLifetime: lifetime,
  };
}

export function decodeProjectRecord(bytes: Uint8Array): ProjectRecord {
  const m = decodeMap(bytes, PROJECT_FIELDS, ['policies'], PROJECT_MAX_DEPTH);
  if (m.get('kind') !== 'project') throw bad('kind is not project');
  const auth = decodeAuth(m.get('auth'));
  const types = m.get('allowedRequestTypes');
  if (
    !Array.isArray(types) ||
    types.some((t) => !(SIGN_REQUEST_TYPES as readonly unknown[]).includes(t)) ||
    new Set(types).size !== types.length
  ) {
    throw bad('allowedRequestTypes is not a list of distinct request types');
  }
  const origins = m.get('allowedOrigins');
  if (!Array.isArray(origins) || origins.length > MAX_ORIGINS || origins.some((o) => typeof o !== 'string' || !ORIGIN_RE.test(o))) {
    throw bad('allowedOrigins is not a list of origins');
  }
  const seq = uint(m, 'seq');
  const record: ProjectRecord = {
    v: RECORD_VERSION,
    kind: 'project',
    projectId: str(m, 'projectId', PROJECT_ID_RE),
    projectKey: str(m, 'projectKey', PROJECT_KEY_RE),
    auth,
    allowedRequestTypes: types as SignRequestType[],
    allowedOrigins: origins as string[],
    state: oneOf(m, 'state', PROJECT_STATES),
    seq,
    prev: prevOf(m, seq),
    createdAt: uint(m, 'createdAt'),
  };
  if (m.has('policies')) record.policies = decodePolicies(m.get('policies'));
  return record;
}

/** Verifies and decodes a key record: KEY_INTEGRITY if either fails. */
export function openKeyRecord(signed: SignedRecord, identity: KeyObject): { record: KeyRecord; digest: Buffer } {
  const { bytes, digest } = verifySignedRecord(signed, identity);
  return { record: decodeKeyRecord(bytes), digest };
}

/** Verifies and decodes a project record: KEY_INTEGRITY if either fails. */
export function openProjectRecord(signed: SignedRecord, identity: KeyObject): { record: ProjectRecord; digest: Buffer } {
  const { bytes, digest } = verifySignedRecord(signed, identity);
  return { record: decodeProjectRecord(bytes), digest };
}
