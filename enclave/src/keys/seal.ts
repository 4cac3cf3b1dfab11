/**
 * Sealing a private key into a v1 blob and opening it again (docs/SEALING.md). Creation needs no KMS call: a fresh
 * data key (DEK) encrypts the secret with AES-256-GCM under the blob's AAD, and the DEK is wrapped with
 * RSAES-OAEP-SHA256 to the KMS key's public half, pinned in the enclave configuration. Only KMS can unwrap it,
 * and only for an attested enclave (the key policy's conditions).
 */
import { constants, createCipheriv, createDecipheriv, publicEncrypt, randomBytes, type KeyObject } from 'node:crypto';
import { BLOB_ALG, BLOB_VERSION, blobAad, type KeyBlob } from '@nks/shared/blob';

export interface SealParams {
  keyId: string;
  address: string;
  kmsKeyArn: string;
  kmsPublicKey: KeyObject;
  createdAt?: number;
}

export function sealSecret(secret: Uint8Array, p: SealParams): KeyBlob {
  const header = { v: BLOB_VERSION, alg: BLOB_ALG, kmsKeyArn: p.kmsKeyArn, keyId: p.keyId, address: p.address } as const;
  const dek = randomBytes(32);
  const iv = randomBytes(12);
  try {
    const cipher = createCipheriv('aes-256-gcm', dek, iv);
    cipher.setAAD(blobAad(header));
    const ciphertext = Buffer.concat([cipher.update(secret), cipher.final(), cipher.getAuthTag()]);
    const wrappedKey = publicEncrypt({ key: p.kmsPublicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, dek);
    return { ...header, createdAt: p.createdAt ?? Date.now(), wrappedKey, iv, ciphertext };
  } finally {
    dek.fill(0);
  }
}

/**
 * Opens the GCM box with a data key, or returns null: a forged data key or an altered blob fails
 * authentication here. It says nothing about why (the caller answers every failed open alike), and it does
 * the same work for a wrong key as for the right one.
 */
export function openSealed(blob: KeyBlob, dek: Uint8Array): Uint8Array | null {
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
