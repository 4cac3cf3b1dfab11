/**
 * The memory a limit counter holds (review 19, F7: 61 one-minute buckets of bigints made a busy hourly counter
 * ~3.9 KB). Without `--expose-gc` (npm test) the sizes are checked by structure: a counter's ring never holds
 * more than its window's buckets + 1, however long it counts. With it, the bytes are measured, worst cases
 * first (longest names and key id, a value of ~2^255 in every bucket), as docs/OPERATIONS.md quotes them:
 *
 *   node --expose-gc node_modules/.bin/jest enclave/test/policy-limits-memory.test.ts
 */
import { ENCLAVE_CONFIG_DEFAULTS as DEFAULT_CONFIG } from '../src/config';
import { LimitCounters, WINDOWS, slotsOf, type LimitSpec } from '../src/policy/limits';

const PROJECT = `p_${'A'.repeat(22)}`;
const LONG_NAME = 'n'.repeat(64);
const BIG = 2n ** 255n;
const ETH = 10n ** 18n;
const keyOf = (k: number) => ({
  keyId: `${'k'.repeat(58)}${k.toString(36).padStart(6, '0')}`,
  address: `0x${k.toString(16).padStart(40, '0')}`,
});

/** `n` counters of `limit`, each given a request worth `value(k)` in every bucket of its window and the current one. */
function busy(limit: LimitSpec, n: number, value: (k: number) => bigint) {
  let now = 1_700_000_000_000;
  const counters = new LimitCounters({ maxTrackedCounters: 10_000_000, now: () => now });
  const { bucketMs, buckets } = WINDOWS[limit.window];
  for (let b = 0; b <= buckets; b++) {
    for (let k = 0; k < n; k++) counters.reserve(PROJECT, keyOf(k), [{ limit, applies: true }], value(k));
    now += bucketMs;
  }
  now -= bucketMs;
  return { counters, now: () => now };
}

type Ring = { cells: number[]; width: number; count: number; sum: bigint };
const ringsOf = (counters: LimitCounters) => [...(counters as unknown as { counters: Map<string, Ring> }).counters.values()];

describe('limit counters: memory', () => {
  it('a ring of the window buckets + 1 (hour 13 slots, day 25), as many limbs as the largest value needs', () => {
    expect([slotsOf('hour'), slotsOf('day')]).toEqual([13, 25]);
    for (const window of ['hour', 'day'] as const) {
      const limit: LimitSpec = { name: 'x', scope: 'key', window, maxValue: 2n ** 256n - 1n };
      // 1 ETH in each bucket: 60 bits, two 52-bit limbs; then one of ~2^255 (five limbs), counted exactly.
      const { counters } = busy(limit, 3, () => ETH);
      for (const ring of ringsOf(counters)) {
        expect([ring.cells.length, ring.width, ring.count]).toEqual([slotsOf(window) * 3, 2, slotsOf(window)]);
      }
      counters.reserve(PROJECT, keyOf(0), [{ limit, applies: true }], BIG);
      const [first] = ringsOf(counters);
      expect([first?.cells.length, first?.width, first?.sum]).toEqual([slotsOf(window) * 6, 5, ETH * BigInt(slotsOf(window)) + BIG]);
      // Every cell a number a double holds exactly (a limb below 2^52, a count).
      expect(first?.cells.every((x) => Number.isSafeInteger(x) && x >= 0 && x < 2 ** 52)).toBe(true);
    }
    // A counter that never counted a value holds a count per slot only.
    const { counters } = busy({ name: 'n', scope: 'project', window: 'day', maxCount: 100 }, 1, () => 0n);
    expect(ringsOf(counters).map((r) => [r.cells.length, r.width])).toEqual([[25, 0]]);
  });

  // The defaults' worst case: every counter a busy day with a value of ~2^255 in each bucket, at the global bound.
  const gc = (globalThis as { gc?: () => void }).gc;
  (gc ? it : it.skip)('measured: bytes per counter, and the default bound stays under 64 MiB', () => {
    const N = 20_000;
    const measure = (label: string, limit: LimitSpec, value: (k: number) => bigint) => {
      gc?.();
      const before = process.memoryUsage().heapUsed;
      const { counters } = busy(limit, N, value);
      gc?.();
      const bytes = (process.memoryUsage().heapUsed - before) / N;
      expect(counters.size).toBe(N);
      console.log(`${label}: ~${Math.round(bytes)} bytes per counter`);
      return bytes;
    };
    measure('hour, count only', { name: 'n', scope: 'key', window: 'hour', maxCount: 1000 }, () => 0n);
    measure('hour, 1 ETH per bucket', { name: 'n', scope: 'key', window: 'hour', maxValue: 10n ** 30n }, (k) => ETH + BigInt(k));
    measure('day, 1 ETH per bucket', { name: 'n', scope: 'key', window: 'day', maxValue: 10n ** 30n }, (k) => ETH + BigInt(k));
    const worst = measure(
      'worst: day, 64-character names, ~2^250 per bucket',
      { name: LONG_NAME, scope: 'key', window: 'day', maxValue: 2n ** 256n - 1n },
      (k) => BIG / 32n + BigInt(k),
    );
    const mib = (worst * DEFAULT_CONFIG.policy.maxTrackedCounters) / 2 ** 20;
    console.log(`worst case at the default bound of ${DEFAULT_CONFIG.policy.maxTrackedCounters}: ${mib.toFixed(1)} MiB`);
    expect(mib).toBeLessThan(64);
  });
});
