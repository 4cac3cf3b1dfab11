/**
 * Opening KMS's answer to an attested Decrypt, all the way to the private key — as one step that either
 * succeeds or says only "no" (docs/SECURITY.md, "The KMS answer is not authenticated").
 *
 * The answer's content is AES-256-CBC without integrity, relayed by the parent, who may forge it. If any
 * failure here were distinguishable (by error, count or work done), a parent replaying one RSA-wrapped content
 * key with IVs and blocks of its choosing would decrypt the data key byte by byte: a CBC padding oracle. So:
 * - every step runs whatever happened before it (a dummy input stands in for a failed step's output), and a
 *   single flag collects the verdict; nothing throws out of the middle;
 * - the shape is checked before decrypting: a 16-byte IV and exactly 48 bytes of content (a 32-byte data key
 *   plus one full block of PKCS#7 padding), the only shape KMS produces for a 32-byte data key;
 * - CBC runs without OpenSSL's padding check; the padding block is compared in constant time;
 * - the last check is the blob kind's, and it too runs on a stand-in when the box did not open: for a key blob
 *   (version 2 or 1) the secret is a valid secp256k1 key whose address is the blob's, for an identity blob the
 *   Ed25519 public key of the seed is the blob's, for a tls blob the secret is a valid P-256 scalar whose
 *   public point is the blob's. Which one runs depends only on the blob, which the parent chose and
 *   knows; it never depends on what the answer held.
 * The caller retires the recipient key after any failure, so each forged answer is also the last one tried
 * with that key.
 */
import { constants, createDecipheriv, privateDecrypt, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import type { IdentityBlob, KeyBlob, KeyBlobV1, SealedBlob, TlsBlob } from '@nks/shared/blob';
import { parseEnvelopedData, type EnvelopedParts } from '@nks/shared/cms';
import { base64 } from '@nks/shared/schema';
import { ed25519PublicKeyHexOfSeed } from '../crypto/ed25519';
import { p256PublicKeyOf } from '../crypto/p256';
import { addressOf, isValidSecret, publicKeyOf } from '../crypto/secp256k1';
import { openSealed } from '../keys/seal';

const DecryptAnswer = z.strictObject({ ciphertextForRecipient: base64, keyId: z.string() });

const IV_BYTES = 16;
const DATA_KEY_BYTES = 32;
/** The data key plus one full padding block. */
const CONTENT_BYTES = DATA_KEY_BYTES + 16;
const FULL_PADDING = Buffer.alloc(16, 16);
/** Stand-in private key for the address (or point) step when an earlier step failed (valid on both curves). */
export const DUMMY_SECRET = new Uint8Array(32).fill(1);

export interface OpenedKey {
  secret: Uint8Array;
  address: `0x${string}`;
}

export interface OpenedIdentity {
  /** The Ed25519 seed. */
  secret: Uint8Array;
  publicKey: string;
}

export interface OpenedTls {
  /** The P-256 scalar. */
  secret: Uint8Array;
  /** The blob's uncompressed point, 0x-hex, which the secret's is. */
  publicKey: string;
}

/** Whether `secret` is the key the blob says it seals, doing the same work whether or not it is. */
function isBlobsSecret(blob: SealedBlob, secret: Uint8Array): boolean {
  if (blob.v === 2 && blob.kind === 'identity') return ed25519PublicKeyHexOfSeed(secret) === blob.publicKey;
  if (blob.v === 2 && blob.kind === 'tls') {
    const point = p256PublicKeyOf(secret);
    // An invalid scalar has no point: the stand-in's is computed instead, so both cases do a multiplication.
    const compared: Buffer = point ?? (p256PublicKeyOf(DUMMY_SECRET) as Buffer);
    return point !== null && `0x${compared.toString('hex')}` === blob.publicKey;
  }
  const valid = isValidSecret(secret);
  const address = addressOf(publicKeyOf(valid ? secret : DUMMY_SECRET));
  return valid && address === blob.address;
}

/**
 * Opens `raw` (the KMS proxy's result) with the recipient key and then the blob's GCM box, and checks the key
 * is the blob's. Returns null on any failure, with no indication of which step failed.
 */
export function openKmsAnswer(raw: unknown, recipientKey: KeyObject, blob: KeyBlob | KeyBlobV1): OpenedKey | null;
export function openKmsAnswer(raw: unknown, recipientKey: KeyObject, blob: IdentityBlob): OpenedIdentity | null;
export function openKmsAnswer(raw: unknown, recipientKey: KeyObject, blob: TlsBlob): OpenedTls | null;
export function openKmsAnswer(raw: unknown, recipientKey: KeyObject, blob: SealedBlob): OpenedKey | OpenedIdentity | OpenedTls | null;
export function openKmsAnswer(raw: unknown, recipientKey: KeyObject, blob: SealedBlob): OpenedKey | OpenedIdentity | OpenedTls | null {
  let ok = true;

  const answer = DecryptAnswer.safeParse(raw);
  if (!answer.success || answer.data.keyId !== blob.kmsKeyArn) ok = false;
  const ber = answer.success ? Buffer.from(answer.data.ciphertextForRecipient, 'base64') : Buffer.alloc(0);

  let parts: Pick<EnvelopedParts, 'encryptedKey' | 'iv' | 'ciphertext'>;
  try {
    parts = parseEnvelopedData(ber);
    if (parts.iv.length !== IV_BYTES || parts.ciphertext.length !== CONTENT_BYTES) throw new Error('not the shape of a wrapped data key');
  } catch {
    ok = false;
    parts = { encryptedKey: randomBytes(256), iv: Buffer.alloc(IV_BYTES), ciphertext: Buffer.alloc(CONTENT_BYTES) };
  }

  let cek: Buffer;
  try {
    cek = privateDecrypt({ key: recipientKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, parts.encryptedKey);
  } catch {
    ok = false;
    cek = Buffer.alloc(0);
  }
  if (cek.length !== DATA_KEY_BYTES) {
    ok = false;
    cek.fill(0);
    cek = randomBytes(DATA_KEY_BYTES);
  }

  const cbc = createDecipheriv('aes-256-cbc', cek, parts.iv).setAutoPadding(false);
  const head = cbc.update(parts.ciphertext);
  const tail = cbc.final();
  const plain = Buffer.concat([head, tail]);
  for (const b of [cek, head, tail]) b.fill(0);
  if (!timingSafeEqual(plain.subarray(DATA_KEY_BYTES), FULL_PADDING)) ok = false;
  const dek = plain.subarray(0, DATA_KEY_BYTES);

  const opened = openSealed(blob, dek);
  plain.fill(0);
  if (!opened) ok = false;

  const secret = opened ?? new Uint8Array(32);
  if (!isBlobsSecret(blob, secret)) ok = false;

  if (!ok) {
    secret.fill(0);
    return null;
  }
  if (blob.v === 2 && (blob.kind === 'identity' || blob.kind === 'tls')) return { secret, publicKey: blob.publicKey };
  return { secret, address: blob.address as `0x${string}` };
}
