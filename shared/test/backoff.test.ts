import { backoffDelay, type BackoffOptions } from '../src/backoff';
import { backoffDelay as rpcBackoffDelay } from '../src/rpc';

describe('backoff', () => {
  it('grows exponentially, is capped, and is jittered within [ceiling/2, ceiling]', () => {
    const opts = { initialMs: 50, maxMs: 2000 };
    expect([0, 1, 2, 3, 4, 5, 6, 40].map((a) => [backoffDelay(a, opts, () => 0), backoffDelay(a, opts, () => 1)])).toEqual([
      [25, 50],
      [50, 100],
      [100, 200],
      [200, 400],
      [400, 800],
      [800, 1600],
      [1000, 2000],
      [1000, 2000],
    ]);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(2, opts);
      expect(d >= 100 && d <= 200).toBe(true);
    }
  });

  it('does not overflow for very large attempt numbers', () => {
    expect(backoffDelay(1e9, { initialMs: 1, maxMs: 10 }, () => 1)).toBe(10);
  });

  // The RPC client keeps its own backoffDelay until shared/src/rpc/client.ts imports this one; until then
  // the two must compute the same schedule.
  it('is the schedule the RPC client uses', () => {
    const grid: Array<[number, BackoffOptions, number]> = [];
    for (const opts of [{ initialMs: 50, maxMs: 2000 }, { initialMs: 50, maxMs: 1000 }, { initialMs: 100, maxMs: 5000 }, { initialMs: 1, maxMs: 2 }]) {
      for (const attempt of [0, 1, 2, 3, 5, 8, 31, 100]) for (const r of [0, 0.25, 0.5, 0.999, 1]) grid.push([attempt, opts, r]);
    }
    expect(grid.filter(([a, o, r]) => backoffDelay(a, o, () => r) !== rpcBackoffDelay(a, o, () => r))).toEqual([]);
  });
});
