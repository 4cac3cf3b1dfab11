/**
 * Sealed blobs (docs/SEALING.md, "The blob"): canonical CBOR carried as base64 in JSON and in the database.
 * The parent stores them as the enclave made them and cannot open them; sealing and opening live in the enclave.
 *
 * Version 2 (this release) has a `kind`:
 *   key:      {v:2, kind:"key", alg, kmsKeyArn, keyId, address, projectId, subject, createdAt, wrappedKey, iv, ciphertext}
 *   identity: {v:2, kind:"identity", alg, kmsKeyArn, publicKey, createdAt, wrappedKey, iv, ciphertext}
 *   tls:      {v:2, kind:"tls", alg, kmsKeyArn, publicKey, createdAt, wrappedKey, iv, ciphertext}
 * AAD = canonical CBOR of every field but createdAt, wrappedKey, iv and ciphertext (`blobAad`): a blob altered,
 * moved to another key id, project or subject, or opened as another kind does not authenticate. A key blob
 * holds a secp256k1 secret, an identity blob an Ed25519 seed, a tls blob the P-256 private scalar of the wallet
 * routes' TLS key (docs/TLS.md) (32 bytes each).
 *
 * Version 1 (releases up to 0.3): {v:1, alg, kmsKeyArn, keyId, address, createdAt, wrappedKey, iv, ciphertext},
 * AAD over {v, alg, kmsKeyArn, keyId, address}. It binds no project or subject, so normal images refuse it;
 * only the migration image opens it, to re-seal it as version 2 (docs/OPERATIONS.md, "Migration").
 */
import { canonicalCbor, decodeCanonicalCbor } from './cbor';
import { KeystoreError } from './errors';
import { ADDRESS_RE, IDENTITY_PUBLIC_KEY_RE, KEY_ID_RE, KMS_KEY_ARN_RE, PROJECT_ID_RE, SUBJECT_MAX_BYTES } from './identifiers';

export const BLOB_VERSION = 2;
export const BLOB_VERSION_V1 = 1;
export const BLOB_ALG = 'RSAES_OAEP_SHA_256/A256GCM';
export const BLOB_IV_BYTES = 12;
/** 32-byte secret + 16-byte GCM tag. */
export const BLOB_CIPHERTEXT_BYTES = 48;
/** A sealed blob is a few hundred bytes (wrapped key 256-512); anything far larger is not one. */
export const MAX_BLOB_BYTES = 4096;

interface Sealed {
  alg: typeof BLOB_ALG;
  kmsKeyArn: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  wrappedKey: Buffer;
  iv: Buffer;
  ciphertext: Buffer;
}

/** A user key, version 2: bound to its key id, address, project and subject. */
export interface KeyBlob extends Sealed {
  v: typeof BLOB_VERSION;
  kind: 'key';
  keyId: string;
  /** EIP-55 checksummed address. */
  address: string;
  projectId: string;
  /** Who the key belongs to within the project (an external id or a JWT subject), or null. */
  subject: string | null;
}

/** The keystore identity's Ed25519 seed, sealed at genesis. */
export interface IdentityBlob extends Sealed {
  v: typeof BLOB_VERSION;
  kind: 'identity';
  /** The Ed25519 public key, 0x-prefixed lower-case hex. */
  publicKey: string;
}

/**
 * The wallet routes' TLS key (shared/src/tls-identity.ts): a P-256 private scalar. Its blob opens only as
 * this kind, for this public key; that the enclave made it is the identity's signature over the blob.
 */
export interface TlsBlob extends Sealed {
  v: typeof BLOB_VERSION;
  kind: 'tls';
  /** The P-256 public key, uncompressed (65 bytes, 0x04 first), 0x-prefixed lower-case hex. */
  publicKey: string;
}

/** A TLS blob's public key: "0x04" and the 64-byte point, lower-case hex. */
export const TLS_PUBLIC_KEY_RE = /^0x04[0-9a-f]{128}$/;

/** A version 1 key blob (no kind, project or subject): opened only by the migration image. */
export interface KeyBlobV1 extends Sealed {
  v: typeof BLOB_VERSION_V1;
  keyId: string;
  address: string;
}

export type SealedBlob = KeyBlob | IdentityBlob | TlsBlob | KeyBlobV1;

/** The fields a blob's AAD binds (everything but createdAt and the sealed bytes). */
export function blobBinding(b: SealedBlob): Record<string, unknown> {
  if (b.v === BLOB_VERSION_V1) return { v: b.v, alg: b.alg, kmsKeyArn: b.kmsKeyArn, keyId: b.keyId, address: b.address };
  if (b.kind === 'identity' || b.kind === 'tls')
    return { v: b.v, kind: b.kind, alg: b.alg, kmsKeyArn: b.kmsKeyArn, publicKey: b.publicKey };
  return {
    v: b.v,
    kind: b.kind,
    alg: b.alg,
    kmsKeyArn: b.kmsKeyArn,
    keyId: b.keyId,
    address: b.address,
    projectId: b.projectId,
    subject: b.subject,
  };
}

export function blobAad(b: SealedBlob): Buffer {
  return canonicalCbor(blobBinding(b));
}

export function encodeBlob(b: SealedBlob): Buffer {
  return canonicalCbor({
    ...blobBinding(b),
    createdAt: b.createdAt,
    wrappedKey: b.wrappedKey,
    iv: b.iv,
    ciphertext: b.ciphertext,
  });
}

const bad = (what: string, cause?: unknown) => new KeystoreError('KEY_INTEGRITY', `key blob is malformed: ${what}`, { cause });

function bytes(m: Map<unknown, unknown>, key: string, length?: number): Buffer {
  const v = m.get(key);
  if (!(v instanceof Uint8Array)) throw bad(`${key} is not a byte string`);
  if (length !== undefined && v.length !== length) throw bad(`${key} is ${v.length} bytes, expected ${length}`);
  return Buffer.from(v);
}

function text(m: Map<unknown, unknown>, key: string, re: RegExp): string {
  const v = m.get(key);
  if (typeof v !== 'string' || !re.test(v)) throw bad(`${key} is missing or not well formed`);
  return v;
}

function subjectOf(m: Map<unknown, unknown>): string | null {
  const v = m.get('subject');
  if (v === null) return null;
  if (typeof v !== 'string' || v.length === 0 || Buffer.byteLength(v) > SUBJECT_MAX_BYTES) throw bad('subject is not null or a string');
  return v;
}

const COMMON = ['v', 'alg', 'kmsKeyArn', 'createdAt', 'wrappedKey', 'iv', 'ciphertext'];
const FIELDS: Record<string, Set<string>> = {
  v1: new Set([...COMMON, 'keyId', 'address']),
  key: new Set([...COMMON, 'kind', 'keyId', 'address', 'projectId', 'subject']),
  identity: new Set([...COMMON, 'kind', 'publicKey']),
  tls: new Set([...COMMON, 'kind', 'publicKey']),
};

/** Which versions a caller accepts: normal code paths only version 2; the migration image also version 1. */
export interface DecodeBlobOptions {
  acceptV1?: boolean;
}

/**
 * Decodes and checks the shape of any blob: canonical CBOR, known version and kind, exactly the kind's fields,
 * each well formed. What a caller may do with the kind it gets (a key to sign, the identity at boot, a TLS key to serve) is the
 * caller's check.
 */
export function decodeBlob(data: Uint8Array, options: DecodeBlobOptions = {}): SealedBlob {
  if (data.length === 0 || data.length > MAX_BLOB_BYTES) throw bad(`${data.length} bytes is not a plausible blob size`);
  let m: unknown;
  try {
    // Strict: one blob has exactly one encoding (no duplicate keys, tags, indefinite or padded lengths).
    m = decodeCanonicalCbor(data);
  } catch (err) {
    throw bad('not canonical CBOR', err);
  }
  if (!(m instanceof Map)) throw bad('not a CBOR map');
  const v = m.get('v');
  if (v !== BLOB_VERSION && !(v === BLOB_VERSION_V1 && options.acceptV1)) {
    throw new KeystoreError(
      'UNSUPPORTED_VERSION',
      v === BLOB_VERSION_V1
        ? 'key blob version 1 is not accepted: it binds no project or subject; keys made before 0.4 move to version 2 through the migration image'
        : `key blob version ${typeof v === 'number' ? v : String(v)} is not supported (this build reads version ${BLOB_VERSION})`,
    );
  }
  const kind = v === BLOB_VERSION_V1 ? 'v1' : m.get('kind');
  const fields = typeof kind === 'string' ? FIELDS[kind] : undefined;
  if (!fields || (kind === 'v1') !== (v === BLOB_VERSION_V1)) throw bad('kind is not key, identity or tls');
  for (const k of m.keys()) if (typeof k !== 'string' || !fields.has(k)) throw bad(`unknown field ${String(k).slice(0, 32)}`);
  if (m.get('alg') !== BLOB_ALG) throw bad(`alg is not ${BLOB_ALG}`);
  const rawCreatedAt = m.get('createdAt');
  const createdAt = typeof rawCreatedAt === 'bigint' ? Number(rawCreatedAt) : rawCreatedAt;
  if (typeof createdAt !== 'number' || !Number.isSafeInteger(createdAt) || createdAt <= 0) throw bad('createdAt is not a positive integer');
  const wrappedKey = bytes(m, 'wrappedKey');
  if (![256, 384, 512].includes(wrappedKey.length))
    throw bad(`wrappedKey is ${wrappedKey.length} bytes, not an RSA-2048/3072/4096 ciphertext`);
  const sealed: Sealed = {
    alg: BLOB_ALG,
    kmsKeyArn: text(m, 'kmsKeyArn', KMS_KEY_ARN_RE),
    createdAt,
    wrappedKey,
    iv: bytes(m, 'iv', BLOB_IV_BYTES),
    ciphertext: bytes(m, 'ciphertext', BLOB_CIPHERTEXT_BYTES),
  };
  if (kind === 'v1') return { v: BLOB_VERSION_V1, ...sealed, keyId: text(m, 'keyId', KEY_ID_RE), address: text(m, 'address', ADDRESS_RE) };
  if (kind === 'identity') return { v: BLOB_VERSION, kind, ...sealed, publicKey: text(m, 'publicKey', IDENTITY_PUBLIC_KEY_RE) };
  if (kind === 'tls') return { v: BLOB_VERSION, kind, ...sealed, publicKey: text(m, 'publicKey', TLS_PUBLIC_KEY_RE) };
  return {
    v: BLOB_VERSION,
    kind: 'key',
    ...sealed,
    keyId: text(m, 'keyId', KEY_ID_RE),
    address: text(m, 'address', ADDRESS_RE),
    projectId: text(m, 'projectId', PROJECT_ID_RE),
    subject: subjectOf(m),
  };
}

/** Decodes a base64 blob as it travels in JSON and sits in the database. */
export function decodeBlobBase64(b64: string, options?: DecodeBlobOptions): SealedBlob {
  return decodeBlob(Buffer.from(b64, 'base64'), options);
}

/** A version 2 key blob, or KEY_INTEGRITY: what every signing path accepts. */
export function decodeKeyBlob(b64: string): KeyBlob {
  const blob = decodeBlobBase64(b64);
  if (blob.v !== BLOB_VERSION || blob.kind !== 'key') throw bad('not a key blob');
  return blob;
}

/** A TLS blob (the wallet routes' key), or KEY_INTEGRITY: what `tls.install` accepts. */
export function decodeTlsBlob(b64: string): TlsBlob {
  const blob = decodeBlobBase64(b64);
  if (blob.v !== BLOB_VERSION || blob.kind !== 'tls') throw bad('not a TLS blob');
  return blob;
}
