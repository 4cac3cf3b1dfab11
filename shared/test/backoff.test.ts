import { backoffDelay } from '../src/backoff';
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

  it('is the one the RPC client re-exports', () => {
    expect(rpcBackoffDelay).toBe(backoffDelay);
  });
});
