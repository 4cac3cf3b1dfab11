/**
 * Ed25519 for the keystore identity, through node:crypto: from a 32-byte seed (RFC 8032's private key) to a
 * private KeyObject and to the raw 32-byte public key.
 *
 * The seed goes to OpenSSL inside a PKCS#8 DER buffer that is zeroed once the KeyObject exists; OpenSSL keeps
 * its own copy of the key for the KeyObject's lifetime (docs/SECURITY.md, "Zeroing key material, and what
 * JavaScript cannot guarantee").
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';

/** PKCS#8 PrivateKeyInfo for Ed25519 (RFC 8410) up to the 32-byte seed. */
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
/** SubjectPublicKeyInfo for Ed25519 up to the 32-byte public key. */
const SPKI_PREFIX_BYTES = 12;

export const ED25519_SEED_BYTES = 32;

/** The private key of `seed` (any 32 bytes are a valid Ed25519 seed). */
export function ed25519PrivateKey(seed: Uint8Array): KeyObject {
  if (seed.length !== ED25519_SEED_BYTES) throw new RangeError('an Ed25519 seed is 32 bytes');
  const der = Buffer.alloc(PKCS8_PREFIX.length + ED25519_SEED_BYTES);
  try {
    PKCS8_PREFIX.copy(der);
    der.set(seed, PKCS8_PREFIX.length);
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

/** The raw 32-byte public key of an Ed25519 key (private or public). */
export function ed25519RawPublicKey(key: KeyObject): Buffer {
  const spki = (key.type === 'private' ? createPublicKey(key) : key).export({ type: 'spki', format: 'der' });
  return spki.subarray(SPKI_PREFIX_BYTES);
}

/** The public key of `seed`, as 0x-prefixed lower-case hex (the form records and the configuration use). */
export function ed25519PublicKeyHexOfSeed(seed: Uint8Array): string {
  return `0x${ed25519RawPublicKey(ed25519PrivateKey(seed)).toString('hex')}`;
}
