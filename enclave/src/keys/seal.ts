/**
 * Sealing a 32-byte secret into a blob and opening it again (docs/SEALING.md). Creation needs no KMS call: a
 * fresh data key (DEK) encrypts the secret with AES-256-GCM under the blob's AAD, and the DEK is wrapped with
 * RSAES-OAEP-SHA256 to the KMS key's public half, pinned in the enclave configuration. Only KMS can unwrap it,
 * and only for an attested enclave (the key policy's conditions).
 *
 * One sealing for every kind of blob (shared/src/blob.ts): a user key (version 2, kind "key"), the keystore
 * identity's Ed25519 seed (kind "identity"), the wallet routes' TLS key (kind "tls"), and, for tests of the migration image, a version 1 key blob. The
 * header (everything but createdAt and the sealed bytes) is the AAD, so a blob opens only as what it was
 * sealed as.
 */
import { constants, createCipheriv, createDecipheriv, publicEncrypt, randomBytes, type KeyObject } from 'node:crypto';
import {
  BLOB_ALG,
  BLOB_VERSION,
  blobAad,
  type IdentityBlob,
  type KeyBlob,
  type KeyBlobV1,
  type SealedBlob,
  type TlsBlob,
} from '@nks/shared/blob';

/** The sealed fields: what `sealBlob` adds to a header. */
type SealedPart = 'createdAt' | 'wrappedKey' | 'iv' | 'ciphertext';
/** A blob's header: its AAD-bound fields (distributed over the kinds). */
export type BlobHeader<B extends SealedBlob = SealedBlob> = B extends SealedBlob ? Omit<B, SealedPart> : never;

export interface SealTo {
  kmsPublicKey: KeyObject;
  createdAt?: number;
}

export function sealBlob(secret: Uint8Array, header: BlobHeader<KeyBlob>, to: SealTo): KeyBlob;
export function sealBlob(secret: Uint8Array, header: BlobHeader<IdentityBlob>, to: SealTo): IdentityBlob;
export function sealBlob(secret: Uint8Array, header: BlobHeader<TlsBlob>, to: SealTo): TlsBlob;
export function sealBlob(secret: Uint8Array, header: BlobHeader<KeyBlobV1>, to: SealTo): KeyBlobV1;
export function sealBlob(secret: Uint8Array, header: BlobHeader, to: SealTo): SealedBlob {
  if (secret.length !== 32) throw new RangeError('a sealed secret is 32 bytes');
  const dek = randomBytes(32);
  const iv = randomBytes(12);
  try {
    const cipher = createCipheriv('aes-256-gcm', dek, iv);
    const sealedFields = { createdAt: to.createdAt ?? Date.now(), wrappedKey: Buffer.alloc(0), iv, ciphertext: Buffer.alloc(0) };
    cipher.setAAD(blobAad({ ...header, ...sealedFields }));
    const ciphertext = Buffer.concat([cipher.update(secret), cipher.final(), cipher.getAuthTag()]);
    const wrappedKey = publicEncrypt({ key: to.kmsPublicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, dek);
    return { ...header, ...sealedFields, wrappedKey, ciphertext };
  } finally {
    dek.fill(0);
  }
}

export interface KeySealParams {
  keyId: string;
  address: string;
  projectId: string;
  subject: string | null;
  kmsKeyArn: string;
  kmsPublicKey: KeyObject;
  createdAt?: number;
}

/** A user key's secret as a version 2 key blob, bound to its key id, address, project and subject. */
export function sealSecret(secret: Uint8Array, p: KeySealParams): KeyBlob {
  const header = {
    v: BLOB_VERSION,
    kind: 'key',
    alg: BLOB_ALG,
    kmsKeyArn: p.kmsKeyArn,
    keyId: p.keyId,
    address: p.address,
    projectId: p.projectId,
    subject: p.subject,
  } as const;
  return sealBlob(secret, header, { kmsPublicKey: p.kmsPublicKey, ...(p.createdAt === undefined ? {} : { createdAt: p.createdAt }) });
}

/**
 * Opens the GCM box with a data key, or returns null: a forged data key or an altered blob fails
 * authentication here. It says nothing about why (the caller answers every failed open alike), and it does
 * the same work for a wrong key as for the right one.
 */
export function openSealed(blob: SealedBlob, dek: Uint8Array): Uint8Array | null {
  const decipher = createDecipheriv('aes-256-gcm', dek, blob.iv);
  decipher.setAAD(blobAad(blob));
  decipher.setAuthTag(blob.ciphertext.subarray(32));
  const plain = decipher.update(blob.ciphertext.subarray(0, 32));
  try {
    decipher.final();
    return new Uint8Array(plain); // a dedicated copy the cache owns and zeroes
  } catch {
    return null;
  } finally {
    plain.fill(0);
  }
}
