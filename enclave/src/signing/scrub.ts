/**
 * Signing a digest while zeroing every intermediate buffer holding the secret (or state derived from it)
 * that JavaScript can reach.
 *
 * noble's RFC 6979 signer feeds the secret through HMAC-DRBG: it concatenates `V ‖ 0x00 ‖ int2octets(secret)
 * ‖ h1` and hands it to our `hmacSha256` hook, and the DRBG's K and V states are the hook's outputs. During
 * one signature this module wraps the hook so that each message is zeroed once hashed, node's digest buffer
 * is zeroed once copied, and every K and V the hook produced is zeroed when the signature is done.
 *
 * What JavaScript cannot guarantee, and is therefore not claimed:
 * - noble turns the secret into a hex string and a bigint (`secretKeyToScalar`), and into a fresh 32-byte
 *   array for the DRBG seed; strings and bigints are immutable and those arrays are private to noble, so
 *   they stay in the heap until the garbage collector reuses the memory.
 * - The garbage collector moves heap objects (a scavenge copies young ones), leaving stale copies behind;
 *   zeroing reaches only the current copy. An ArrayBuffer's backing store is allocated outside the heap and
 *   never moved, but V8 keeps the elements of small typed arrays (≤ 64 bytes, made with `new Uint8Array(n)`
 *   or from another array) on the heap until their `.buffer` is first read. The pool therefore builds the
 *   copy it sends to a worker on `new ArrayBuffer(32)`.
 * - OpenSSL (node:crypto's HMAC) copies the key into its own context and cleanses it when freed; freed V8
 *   and malloc memory is not cleared.
 * - A worker thread that is terminated mid-signature (deadline) is torn down without zeroing its copy.
 */
import { createHmac } from 'node:crypto';
import * as secp from '@noble/secp256k1';
import { signDigest, type RawSignature } from '../crypto/secp256k1';

export function signDigestScrubbed(digest: Uint8Array, secret: Uint8Array): RawSignature {
  const previous = secp.hashes.hmacSha256;
  const produced: Uint8Array[] = [];
  secp.hashes.hmacSha256 = (key, message) => {
    const mac = createHmac('sha256', key).update(message).digest();
    // The DRBG builds a fresh array for each call (V ‖ sep ‖ seed) and never reads it again.
    message.fill(0);
    const out = new Uint8Array(mac);
    mac.fill(0);
    produced.push(out);
    return out;
  };
  try {
    return signDigest(digest, secret);
  } finally {
    secp.hashes.hmacSha256 = previous;
    // Every K and V of the DRBG; the signature returned is independent of them.
    for (const b of produced) b.fill(0);
  }
}
