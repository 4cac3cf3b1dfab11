/**
 * The differential check of the enclave's curve (libsecp256k1 in the native addon, crypto/secp256k1.ts)
 * against @noble/secp256k1, the independent reference: for each case a secret key and a digest derived from a
 * seed (SHA-256 of seed ‖ index, so a failure names a case that can be replayed), the enclave's public key,
 * address, r, s and recovery id must equal noble's byte for byte (noble's address through viem's
 * publicKeyToAddress, not the enclave's addressOf). Used by secp256k1.test.ts (10,000 cases, `npm test`) and
 * secp256k1.differential.ts (1,000,000 cases, `npm run test:differential`).
 */
import { createHash, createHmac } from 'node:crypto';
import * as secp from '@noble/secp256k1';
import { publicKeyToAddress } from 'viem/accounts';
import { addressOf, publicKeyOf, signDigest } from '../src/crypto/secp256k1';

secp.hashes.sha256 = (m) => new Uint8Array(createHash('sha256').update(m).digest());
secp.hashes.hmacSha256 = (k, m) => new Uint8Array(createHmac('sha256', k).update(m).digest());

export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** noble's RFC 6979 low-S signature of a 32-byte digest, as the enclave's RawSignature fields. */
export function nobleSign(digest: Uint8Array, secret: Uint8Array): { r: string; s: string; yParity: number } {
  const b = secp.sign(digest, secret, { prehash: false, lowS: true, format: 'recovered' });
  return { r: `0x${hex(b.subarray(1, 33))}`, s: `0x${hex(b.subarray(33, 65))}`, yParity: b[0] as number };
}

function caseBytes(seed: string, i: number, what: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(`${seed}:${i}:${what}`).digest());
}

export interface DifferentialResult {
  cases: number;
  /** The first few disagreements, each with what is needed to replay it. */
  mismatches: string[];
  mismatchCount: number;
}

/**
 * Runs `cases` cases from `seed`. A new key every `keyEvery` cases (1: every case), so public keys and
 * addresses are compared for cases/keyEvery keys and signatures for all cases.
 */
export function runDifferential(cases: number, seed: string, keyEvery = 1): DifferentialResult {
  const mismatches: string[] = [];
  let mismatchCount = 0;
  const fail = (msg: string) => {
    mismatchCount++;
    if (mismatches.length < 10) mismatches.push(msg);
  };
  let secret: Uint8Array = new Uint8Array(32);
  for (let i = 0; i < cases; i++) {
    if (i % keyEvery === 0) {
      secret = caseBytes(seed, i, 'key');
      // A hash lands outside [1, n-1] with probability ~2^-128; such a case would be an edge case, covered apart.
      if (!secp.utils.isValidSecretKey(secret)) continue;
      const ours = publicKeyOf(secret);
      const theirs = secp.getPublicKey(secret, false);
      if (hex(ours) !== hex(theirs)) fail(`case ${i} (seed ${seed}): public key ${hex(ours)} != noble ${hex(theirs)}`);
      const address = addressOf(ours);
      const reference = publicKeyToAddress(`0x${hex(theirs)}`);
      if (address !== reference) fail(`case ${i} (seed ${seed}): address ${address} != ${reference}`);
    }
    const digest = caseBytes(seed, i, 'digest');
    const ours = signDigest(digest, secret);
    const theirs = nobleSign(digest, secret);
    if (ours.r !== theirs.r || ours.s !== theirs.s || ours.yParity !== theirs.yParity) {
      fail(`case ${i} (seed ${seed}): ${JSON.stringify(ours)} != noble ${JSON.stringify(theirs)}`);
    }
  }
  return { cases, mismatches, mismatchCount };
}
