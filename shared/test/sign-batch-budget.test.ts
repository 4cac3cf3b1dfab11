/**
 * A batch's typed data shares one request's budget (shared/src/signing/schema.ts, SignBatchRequestsSchema): the
 * attacker review of issue 24 found that 100 requests each just under the budget made one batch cost the parent's
 * (and the enclave's) main thread ~0.5 s of checking, 25-60x the costliest single request. The parent's route and
 * the enclave's keys.signBatch both parse with this schema.
 */
import { SignBatchRequestsSchema, SignRequestSchema } from '@nks/shared/signing/schema';
import { checkTypedDataBudget, TYPED_DATA_LIMITS } from '@nks/shared/signing/typed-data-budget';

/** Typed data holding `n` uint8 array elements, in arrays of at most 1,000 (the per-array limit is 1,024). */
const dense = (n: number) => {
  const sizes = Array.from({ length: Math.ceil(n / 1000) }, (_, i) => Math.min(1000, n - i * 1000));
  return {
    type: 'typedData' as const,
    typedData: {
      types: { P: sizes.map((_, i) => ({ name: `a${i}`, type: 'uint8[]' })) },
      primaryType: 'P',
      message: Object.fromEntries(sizes.map((size, i) => [`a${i}`, Array<number>(size).fill(0)])),
    },
  };
};
const valuesOf = (n: number): number => {
  const v = checkTypedDataBudget(dense(n).typedData);
  if (!v.ok) throw new Error(v.message);
  return v.usage.values;
};
const digest = { type: 'digest' as const, digest: `0x${'11'.repeat(32)}` };

describe("a batch's typed data shares one request's budget", () => {
  const most = Math.floor(TYPED_DATA_LIMITS.maxValues * 0.6);

  it('each request alone fits the budget; two together do not, and the second is named with the reason', () => {
    expect(SignRequestSchema.safeParse(dense(most)).success).toBe(true);
    expect(SignBatchRequestsSchema.safeParse([dense(most)]).success).toBe(true);
    const r = SignBatchRequestsSchema.safeParse([digest, dense(most), digest, dense(most)]);
    expect(r.success).toBe(false);
    const issue = r.error?.issues[0];
    expect(issue?.path.slice(0, 2)).toEqual([3, 'typedData']);
    expect(issue?.message).toMatch(/more than \d+ values .*shares one request's budget/);
    expect(r.error?.issues).toHaveLength(1);
  });

  it('what is left after the earlier requests is what the next may use', () => {
    const left = TYPED_DATA_LIMITS.maxValues - valuesOf(most);
    // The largest n whose values fit in what is left (values grow with n: a binary search).
    let [fits, over] = [1, left + 1];
    while (over - fits > 1) {
      const mid = Math.floor((fits + over) / 2);
      if (valuesOf(mid) <= left) fits = mid;
      else over = mid;
    }
    expect(SignBatchRequestsSchema.safeParse([dense(most), dense(fits)]).success).toBe(true);
    expect(SignBatchRequestsSchema.safeParse([dense(most), dense(fits + 1)]).success).toBe(false);
  });

  it('a hundred small typed-data requests fit (real payloads use a small fraction of the budget)', () => {
    expect(SignBatchRequestsSchema.safeParse(Array.from({ length: 100 }, () => dense(100))).success).toBe(true);
  });

  it('each request is still checked against its types (shape errors keep their path)', () => {
    const bad = { ...dense(1), typedData: { ...dense(1).typedData, message: { a0: [256] } } };
    const r = SignBatchRequestsSchema.safeParse([digest, bad]);
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual([1, 'typedData', 'message', 'a0', 0]);
  });
});
