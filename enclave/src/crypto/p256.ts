/**
 * P-256 (prime256v1) for the wallet routes' TLS key (docs/TLS.md), through node:crypto: a scalar from the
 * CSPRNG, its uncompressed public point, its DER SubjectPublicKeyInfo, and a private KeyObject.
 *
 * The scalar is what a tls blob seals (32 bytes, like every sealed secret). It goes to OpenSSL inside a SEC1
 * DER buffer that is zeroed once the KeyObject exists; OpenSSL keeps its own copy for the KeyObject's lifetime,
 * as for the identity's Ed25519 key (docs/SECURITY.md, "Zeroing key material, and what JavaScript cannot
 * guarantee").
 */
import { createECDH, createPrivateKey, randomFillSync, type KeyObject } from 'node:crypto';

export const P256_SECRET_BYTES = 32;
/** An uncompressed point: 0x04 ‖ x ‖ y. */
export const P256_POINT_BYTES = 65;

/** SEC1 ECPrivateKey (RFC 5915) with the prime256v1 OID, up to the scalar; then up to the public point. */
const SEC1_HEAD = Buffer.from('30770201010420', 'hex');
const SEC1_MIDDLE = Buffer.from('a00a06082a8648ce3d030107a144034200', 'hex');
/** SubjectPublicKeyInfo for id-ecPublicKey on prime256v1, up to the uncompressed point. */
const SPKI_HEAD = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

/** The uncompressed public point of `secret`, or null when it is not 32 bytes holding a scalar in [1, n-1]. */
export function p256PublicKeyOf(secret: Uint8Array): Buffer | null {
  if (secret.length !== P256_SECRET_BYTES) return null;
  const ecdh = createECDH('prime256v1');
  try {
    ecdh.setPrivateKey(secret);
  } catch {
    return null;
  }
  return ecdh.getPublicKey();
}

/** A fresh scalar from the CSPRNG, on its own ArrayBuffer so zeroing reaches the only copy JavaScript holds. */
export function generateP256Secret(): Uint8Array {
  const secret = new Uint8Array(new ArrayBuffer(P256_SECRET_BYTES));
  // Rejection sampling: a 32-byte string is out of range (zero, or at least n) with probability about 2^-32.
  do randomFillSync(secret);
  while (p256PublicKeyOf(secret) === null);
  return secret;
}

/** The DER SubjectPublicKeyInfo of an uncompressed point (what a certificate names and TLS compares). */
export function p256Spki(point: Uint8Array): Buffer {
  if (point.length !== P256_POINT_BYTES || point[0] !== 0x04) throw new RangeError('a P-256 point is 65 bytes, 0x04 first');
  return Buffer.concat([SPKI_HEAD, point]);
}

/**
 * The private KeyObject of `secret` (its public point derived here, never taken from elsewhere: OpenSSL would
 * accept a SEC1 key whose point is another key's). The DER it passes through is zeroed.
 */
export function p256PrivateKey(secret: Uint8Array): KeyObject {
  const point = p256PublicKeyOf(secret);
  if (!point) throw new RangeError('not a P-256 secret');
  const der = Buffer.alloc(SEC1_HEAD.length + P256_SECRET_BYTES + SEC1_MIDDLE.length + P256_POINT_BYTES);
  try {
    SEC1_HEAD.copy(der);
    der.set(secret, SEC1_HEAD.length);
    SEC1_MIDDLE.copy(der, SEC1_HEAD.length + P256_SECRET_BYTES);
    der.set(point, SEC1_HEAD.length + P256_SECRET_BYTES + SEC1_MIDDLE.length);
    return createPrivateKey({ key: der, format: 'der', type: 'sec1' });
  } finally {
    der.fill(0);
  }
}
