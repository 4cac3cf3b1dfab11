/**
 * `npm run test:differential`: 1,000,000 random keys and digests, libsecp256k1 (the enclave's addon) against
 * @noble/secp256k1 (curve-differential.ts), in ten parts of 100,000 so progress shows. NKS_CURVE_SEED replays
 * a run; NKS_CURVE_CASES changes the count.
 */
import { randomBytes } from 'node:crypto';
import { runDifferential } from './curve-differential';

const seed = process.env.NKS_CURVE_SEED ?? randomBytes(8).toString('hex');
const total = Number(process.env.NKS_CURVE_CASES ?? 1_000_000);
const parts = 10;

describe(`libsecp256k1 against noble, ${total} cases (seed ${seed})`, () => {
  for (let p = 0; p < parts; p++) {
    it(`part ${p + 1} of ${parts}: identical public keys, addresses, r, s and recovery ids`, () => {
      const result = runDifferential(Math.ceil(total / parts), `${seed}-${p}`);
      expect(result.mismatches).toEqual([]);
      expect(result.mismatchCount).toBe(0);
    });
  }
});
