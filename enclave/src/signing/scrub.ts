/**
 * Signing a digest without leaving copies of the secret behind, as far as the enclave can reach them.
 *
 * The curve is libsecp256k1 in the native addon (crypto/secp256k1.ts, enclave/native/secp256k1.c), so the
 * secret never becomes a JavaScript string, bigint or array other than the caller's: the addon copies its 32
 * bytes into a C stack buffer, signs, and before returning zeroes that buffer, the digest copy, the signature
 * structure and 32 KiB of stack below its frame, where libsecp256k1's scalars, nonce and RFC 6979 HMAC-DRBG
 * state were (the library clears most of them itself, with a plain memset the compiler may drop; the stack
 * wipe uses explicit_bzero). Nothing of the secret is allocated on the heap on this path.
 *
 * What remains for JavaScript, and is handled by the callers:
 * - the caller's own array: the signer pool transfers a fresh copy built on `new ArrayBuffer(32)` to the
 *   worker (V8 keeps the elements of small typed arrays made otherwise on its heap, where the garbage collector
 *   may move them and leave stale copies) and zeroes it after the job; the key cache zeroes its copy when the
 *   key leaves the cache (keys/cache.ts);
 * - a worker thread terminated mid-signature (deadline) is torn down without zeroing its copy;
 * - freed V8 and malloc memory is not cleared, and a register spill in a frame deeper than the wiped area is
 *   not reached (none is expected: the signing path's deepest frames are a few KiB).
 */
import { signDigest, type RawSignature } from '../crypto/secp256k1';

/** Signs with libsecp256k1; the secret's copies the addon makes are zeroed before this returns. */
export function signDigestScrubbed(digest: Uint8Array, secret: Uint8Array): RawSignature {
  return signDigest(digest, secret);
}
