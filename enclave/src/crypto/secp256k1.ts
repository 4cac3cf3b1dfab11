/**
 * secp256k1 through libsecp256k1 (bitcoin-core), compiled into the enclave's native addon secp256k1.node
 * (enclave/native/secp256k1.c, built by `npm run build`): key generation from the CSPRNG, public key and
 * address derivation, RFC 6979 deterministic low-S signing of 32-byte digests. This is the enclave's one
 * implementation of the curve; @noble/secp256k1 is the independent reference its tests compare it with
 * (docs/SIGNING-CURVE.md: why, the constant-time argument, what it adds to the image).
 *
 * The addon is looked for beside the bundle (native/secp256k1.node, the image layout; also in signer worker
 * threads, which load the same bundle) and in the node-gyp build directory (development), and loaded when this
 * module is: an enclave without it stops at start, with every place tried and why.
 */
import path from 'node:path';
import { randomFillSync } from 'node:crypto';
import { keccak256, getAddress, type Address, type Hex } from 'viem';
import { loadAddon, nativeDirCandidates } from '@nks/shared/native';

/** What enclave/native/secp256k1.c exports. Each function throws a RangeError/TypeError on a wrong length. */
export interface CurveAddon {
  /** True iff the 32 bytes are a valid secret key, in [1, n-1]. */
  seckeyVerify(secret: Uint8Array): boolean;
  /** 65 bytes, 0x04 ‖ x ‖ y; throws ERR_INVALID_SECRET_KEY for a key outside [1, n-1]. */
  publicKeyCreate(secret: Uint8Array): Buffer;
  /** 65 bytes r ‖ s ‖ recid, RFC 6979 nonce, low S; throws ERR_INVALID_SECRET_KEY like publicKeyCreate. */
  signRecoverable(digest: Uint8Array, secret: Uint8Array): Buffer;
}

export const CURVE_ADDON_FILE = 'secp256k1.node';

export function curveAddonCandidates(): string[] {
  return [
    ...(process.env.NKS_SECP256K1_ADDON ? [process.env.NKS_SECP256K1_ADDON] : []),
    ...nativeDirCandidates(CURVE_ADDON_FILE),
    path.resolve(__dirname, 'native', CURVE_ADDON_FILE), // the bundle in the image's run directory
    path.resolve(__dirname, '../enclave/native/build/Release', CURVE_ADDON_FILE), // from dist/
    path.resolve(__dirname, '../../native/build/Release', CURVE_ADDON_FILE), // from enclave/src/crypto (tests)
  ];
}

export function loadCurveAddon(candidates: string[] = curveAddonCandidates()): CurveAddon {
  return loadAddon<CurveAddon>('the secp256k1 addon (enclave/native, built by `npm run build`)', candidates);
}

const addon = loadCurveAddon();

/**
 * A fresh private key: 32 bytes from the CSPRNG, drawn again until libsecp256k1 accepts them (in [1, n-1]; a
 * redraw happens with probability about 2^-128). The array has its own ArrayBuffer, so zeroing it reaches the
 * only copy JavaScript holds.
 */
export function generateSecret(): Uint8Array {
  const secret = new Uint8Array(new ArrayBuffer(32));
  for (;;) {
    randomFillSync(secret);
    if (addon.seckeyVerify(secret)) return secret;
  }
}

/** True iff `secret` is 32 bytes in [1, n-1]; false (never an exception) for any other length. */
export function isValidSecret(secret: Uint8Array): boolean {
  return secret.length === 32 && addon.seckeyVerify(secret);
}

/** Uncompressed public key, 65 bytes starting with 0x04. */
export function publicKeyOf(secret: Uint8Array): Uint8Array {
  return new Uint8Array(addon.publicKeyCreate(secret));
}

/** EIP-55 checksummed address: last 20 bytes of keccak256 of the uncompressed key without its prefix. */
export function addressOf(uncompressedPublicKey: Uint8Array): Address {
  return getAddress(`0x${keccak256(uncompressedPublicKey.subarray(1)).slice(-40)}`);
}

export interface RawSignature {
  r: Hex;
  s: Hex;
  /** 0 or 1 (recovery ids 2 and 3 cannot occur for secp256k1 in practice, and are refused). */
  yParity: 0 | 1;
}

/**
 * Signs a 32-byte digest (no prehash) with RFC 6979 nonces and low S, without leaving copies of the secret
 * behind as far as the enclave can reach them. The curve is libsecp256k1 in the native addon (enclave/native/secp256k1.c), so the
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
export function signDigest(digest: Uint8Array, secret: Uint8Array): RawSignature {
  const sig = addon.signRecoverable(digest, secret);
  const recovery = sig[64];
  if (recovery !== 0 && recovery !== 1) throw new Error('unexpected recovery id');
  return { r: `0x${sig.toString('hex', 0, 32)}`, s: `0x${sig.toString('hex', 32, 64)}`, yParity: recovery };
}
