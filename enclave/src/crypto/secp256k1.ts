/**
 * secp256k1 through @noble/secp256k1: key generation from the CSPRNG, public key and address derivation,
 * RFC 6979 deterministic low-S signing of 32-byte digests. noble's synchronous API needs its hash hooks;
 * node:crypto provides SHA-256 and HMAC-SHA256 (faster than the pure-JS ones on the signing path).
 */
import { createHash, createHmac } from 'node:crypto';
import * as secp from '@noble/secp256k1';
import { keccak256, getAddress, type Address, type Hex } from 'viem';

secp.hashes.sha256 = (msg) => new Uint8Array(createHash('sha256').update(msg).digest());
secp.hashes.hmacSha256 = (key, msg) => new Uint8Array(createHmac('sha256', key).update(msg).digest());

/** A fresh private key: 32 bytes from the CSPRNG, guaranteed in [1, n-1]. */
export function generateSecret(): Uint8Array {
  return secp.utils.randomSecretKey();
}

export function isValidSecret(secret: Uint8Array): boolean {
  return secp.utils.isValidSecretKey(secret);
}

/** Uncompressed public key, 65 bytes starting with 0x04. */
export function publicKeyOf(secret: Uint8Array): Uint8Array {
  return secp.getPublicKey(secret, false);
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

const hex32 = (n: bigint): Hex => `0x${n.toString(16).padStart(64, '0')}`;

/** Signs a 32-byte digest (no prehash) with RFC 6979 nonces and low S. */
export function signDigest(digest: Uint8Array, secret: Uint8Array): RawSignature {
  const bytes = secp.sign(digest, secret, { prehash: false, lowS: true, format: 'recovered' });
  const sig = secp.Signature.fromBytes(bytes, 'recovered');
  if (sig.recovery !== 0 && sig.recovery !== 1) throw new Error('unexpected recovery id');
  return { r: hex32(sig.r), s: hex32(sig.s), yParity: sig.recovery };
}
