/**
 * The sealed-key blob, version 1 (docs/SEALING.md, "The blob, version 1"): canonical CBOR of
 *   {v:1, alg:"RSAES_OAEP_SHA_256/A256GCM", kmsKeyArn, keyId, address, createdAt, wrappedKey, iv(12), ciphertext(48)}
 * carried as base64 in JSON and in the database. The parent stores it as the enclave made it and cannot open
 * it; sealing and opening live in the enclave.
 *
 * AAD = canonical CBOR of {v, alg, kmsKeyArn, keyId, address}: a blob altered or moved to another key id
 * does not authenticate.
 */
import { canonicalCbor, decodeCanonicalCbor } from './cbor';
import { KeystoreError } from './errors';
import { ADDRESS_RE, KEY_ID_RE, KMS_KEY_ARN_RE } from './identifiers';

export const BLOB_VERSION = 1;
export const BLOB_ALG = 'RSAES_OAEP_SHA_256/A256GCM';
export const BLOB_IV_BYTES = 12;
/** 32-byte secret + 16-byte GCM tag. */
export const BLOB_CIPHERTEXT_BYTES = 48;
/** A sealed blob is a few hundred bytes (wrapped key 256-512); anything far larger is not one. */
export const MAX_BLOB_BYTES = 4096;

export interface KeyBlob {
  v: typeof BLOB_VERSION;
  alg: typeof BLOB_ALG;
  kmsKeyArn: string;
  keyId: string;
  /** EIP-55 checksummed address. */
  address: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  wrappedKey: Buffer;
  iv: Buffer;
  ciphertext: Buffer;
}

export function encodeBlob(b: KeyBlob): Buffer {
  return canonicalCbor({
    v: b.v,
    alg: b.alg,
    kmsKeyArn: b.kmsKeyArn,
    keyId: b.keyId,
    address: b.address,
    createdAt: BigInt(b.createdAt), // cbor-x writes large numbers as floats; a bigint is written as uint64
    wrappedKey: b.wrappedKey,
    iv: b.iv,
    ciphertext: b.ciphertext,
  });
}

export function blobAad(b: Pick<KeyBlob, 'v' | 'alg' | 'kmsKeyArn' | 'keyId' | 'address'>): Buffer {
  return canonicalCbor({ v: b.v, alg: b.alg, kmsKeyArn: b.kmsKeyArn, keyId: b.keyId, address: b.address });
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

const FIELDS = new Set(['v', 'alg', 'kmsKeyArn', 'keyId', 'address', 'createdAt', 'wrappedKey', 'iv', 'ciphertext']);

export function decodeBlob(data: Uint8Array): KeyBlob {
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
  if (v !== BLOB_VERSION) {
    throw new KeystoreError(
      'UNSUPPORTED_VERSION',
      `key blob version ${typeof v === 'number' ? v : String(v)} is not supported (this build reads version ${BLOB_VERSION})`,
    );
  }
  for (const k of m.keys()) if (typeof k !== 'string' || !FIELDS.has(k)) throw bad(`unknown field ${String(k).slice(0, 32)}`);
  if (m.get('alg') !== BLOB_ALG) throw bad(`alg is not ${BLOB_ALG}`);
  const rawCreatedAt = m.get('createdAt');
  const createdAt = typeof rawCreatedAt === 'bigint' ? Number(rawCreatedAt) : rawCreatedAt;
  if (typeof createdAt !== 'number' || !Number.isSafeInteger(createdAt) || createdAt <= 0) throw bad('createdAt is not a positive integer');
  const wrappedKey = bytes(m, 'wrappedKey');
  if (![256, 384, 512].includes(wrappedKey.length))
    throw bad(`wrappedKey is ${wrappedKey.length} bytes, not an RSA-2048/3072/4096 ciphertext`);
  return {
    v: BLOB_VERSION,
    alg: BLOB_ALG,
    kmsKeyArn: text(m, 'kmsKeyArn', KMS_KEY_ARN_RE),
    keyId: text(m, 'keyId', KEY_ID_RE),
    address: text(m, 'address', ADDRESS_RE),
    createdAt,
    wrappedKey,
    iv: bytes(m, 'iv', BLOB_IV_BYTES),
    ciphertext: bytes(m, 'ciphertext', BLOB_CIPHERTEXT_BYTES),
  };
}

/** Decodes a base64 blob as it travels in JSON and sits in the database. */
export function decodeBlobBase64(b64: string): KeyBlob {
  return decodeBlob(Buffer.from(b64, 'base64'));
}
