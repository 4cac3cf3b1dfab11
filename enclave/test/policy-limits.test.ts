/**
 * The limit counters of signing policies (enclave/src/policy/limits.ts) on a clock the test moves: windows that
 * slide bucket by bucket, their edges, per-key and per-project counting, release, the bounds (the enclave's and
 * each project's share; fail closed after a sweep), a window changed under a live counter, and a fuzz of the
 * ring against a list of every request.
 */
import fc from 'fast-check';
import {
  LimitCounters,
  TRACKING_FULL,
  TRACKING_FULL_PROJECT,
  VALUE_UNKNOWN,
  WINDOWS,
  type LimitCheck,
  type LimitSpec,
  type Reservation,
} from '../src/policy/limits';

const MIN = 60_000;
const HOUR = 60 * MIN;
const KEY_A = { keyId: 'k-a', address: '0xAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAa' };
const KEY_B = { keyId: 'k-b', address: '0x00000000000000000000000000000000000000bb' };

function rig(maxTrackedCounters = 1000, start = 1_000 * HOUR, maxTrackedCountersPerProject?: number) {
  const clock = { t: start };
  const counters = new LimitCounters({ maxTrackedCounters, maxTrackedCountersPerProject, now: () => clock.t });
  return { clock, counters };
}
const applies = (limit: LimitSpec, yes = true): LimitCheck => ({ limit, applies: yes });
const perKeyHour = (maxCount: number): LimitSpec => ({ name: 'per-key', scope: 'key', window: 'hour', maxCount });

describe('policy limit counters', () => {
  it('counts per key and per project, and refuses the request that would pass maxCount', () => {
    const { counters } = rig();
    const checks = [applies(perKeyHour(2)), applies({ name: 'per-project', scope: 'project', window: 'day', maxCount: 3 })];
    expect(counters.reserve('p1', KEY_A, checks, 0n).denied).toBeNull();
    expect(counters.reserve('p1', KEY_A, checks, 0n).denied).toBeNull();
    const third = counters.reserve('p1', KEY_A, checks, 0n);
    expect(third.denied).toMatchObject({ name: 'per-key', exceeded: '2 signatures in the last hour, the maximum is 2' });
    expect(third.reservation).toBeNull();
    // Another key has its own per-key budget, but the project's is shared: one left.
    const b = counters.reserve('p1', KEY_B, checks, 0n);
    expect(b.denied).toBeNull();
    expect(b.outcomes.map((o) => o.count)).toEqual([
      { used: 0, max: 2 },
      { used: 2, max: 3 },
    ]);
    expect(counters.reserve('p1', KEY_B, checks, 0n).denied).toMatchObject({
      name: 'per-project',
      exceeded: expect.stringMatching(/^3 signatures/),
    });
    // Another project counts apart, and the key's address case does not make another key.
    expect(counters.reserve('p2', KEY_A, checks, 0n).denied).toBeNull();
    expect(counters.usage('p1', { ...KEY_A, address: KEY_A.address.toLowerCase() }, checks, 0n).outcomes[0]?.count).toEqual({
      used: 2,
      max: 2,
    });
    // per-key ×2 keys + per-project in p1, both in p2.
    expect(counters.size).toBe(5);
  });

  it('adds up value and refuses what would pass maxValue; an unknown value is refused by a maxValue limit only', () => {
    const { counters } = rig();
    const value: LimitSpec = { name: 'wei', scope: 'project', window: 'day', maxValue: 1000n };
    const count: LimitSpec = { name: 'n', scope: 'project', window: 'day', maxCount: 10 };
    expect(counters.reserve('p', KEY_A, [applies(value)], 600n).denied).toBeNull();
    expect(counters.reserve('p', KEY_A, [applies(value)], 401n).denied?.exceeded).toBe(
      'value 401 with 600 signed in the last day is above the maximum 1000',
    );
    expect(counters.reserve('p', KEY_A, [applies(value)], 400n).denied).toBeNull();
    expect(counters.usage('p', KEY_A, [applies(value)], 0n).outcomes[0]?.value).toEqual({ used: '1000', max: '1000' });
    expect(counters.reserve('p', KEY_A, [applies(value)], undefined).denied?.exceeded).toBe(VALUE_UNKNOWN);
    expect(counters.reserve('p', KEY_A, [applies(count)], undefined).denied).toBeNull();
  });

  it('counts nothing for a limit that does not apply, and nothing in a dry run', () => {
    const { counters } = rig();
    const limit = perKeyHour(1);
    expect(counters.reserve('p', KEY_A, [applies(limit, false)], 0n)).toMatchObject({ denied: null, reservation: null });
    for (let i = 0; i < 3; i++) expect(counters.usage('p', KEY_A, [applies(limit)], 0n).denied).toBeNull();
    expect(counters.size).toBe(0);
    // A dry run without a key reads a key-scoped limit as a key that signed nothing.
    counters.reserve('p', KEY_A, [applies(limit)], 0n);
    expect(counters.usage('p', null, [applies(limit)], 0n).outcomes[0]).toEqual({
      name: 'per-key',
      scope: 'key',
      window: 'hour',
      applies: true,
      count: { used: 0, max: 1 },
    });
    expect(counters.usage('p', KEY_A, [applies(limit)], 0n).denied?.exceeded).toBe('1 signature in the last hour, the maximum is 1');
  });

  it('release takes the count and the value back, once, and drops a counter it empties', () => {
    const { counters } = rig();
    const checks = [applies(perKeyHour(1)), applies({ name: 'wei', scope: 'project', window: 'day', maxValue: 10n })];
    const r = counters.reserve('p', KEY_A, checks, 10n);
    expect(r.denied).toBeNull();
    expect(counters.reserve('p', KEY_A, checks, 0n).denied?.name).toBe('per-key');
    counters.release(r.reservation);
    counters.release(r.reservation);
    expect(counters.size).toBe(0);
    const again = counters.reserve('p', KEY_A, checks, 10n);
    expect(again.denied).toBeNull();
    expect(again.outcomes.map((o) => [o.count?.used, o.value?.used])).toEqual([
      [0, undefined],
      [undefined, '0'],
    ]);
    // Released into a counter that also holds another request: the other stays counted.
    const { counters: c2 } = rig();
    const project = [applies({ name: 'n', scope: 'project', window: 'hour', maxCount: 5 })];
    c2.reserve('p', KEY_A, project, 0n);
    c2.release(c2.reserve('p', KEY_B, project, 0n).reservation);
    expect([c2.size, c2.usage('p', KEY_A, project, 0n).outcomes[0]?.count?.used]).toEqual([1, 1]);
  });

  it('an hour slides by five minutes: a request counts for 60 to 65 minutes, never less than the window', () => {
    const { clock, counters } = rig();
    const limit = [applies(perKeyHour(1))];
    clock.t += 5 * MIN - 1; // the last millisecond of a five-minute bucket
    counters.reserve('p', KEY_A, limit, 0n);
    clock.t += 60 * MIN; // a whole hour later: still counted
    expect(counters.usage('p', KEY_A, limit, 0n).denied).not.toBeNull();
    clock.t += 1; // the bucket it was in has left the window
    expect(counters.usage('p', KEY_A, limit, 0n).denied).toBeNull();

    // A request at the first millisecond of its bucket counts for exactly 65 minutes; one in the middle, 62.5.
    const { clock: c, counters: k } = rig();
    k.reserve('p', KEY_A, limit, 0n);
    c.t += 65 * MIN - 1;
    expect(k.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(1);
    c.t += 1;
    expect(k.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(0);
    c.t += 2.5 * MIN; // mid-bucket
    k.reserve('p', KEY_A, limit, 0n);
    c.t += 62.5 * MIN - 1;
    expect(k.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(1);
    c.t += 1;
    expect(k.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(0);
  });

  it('an hour holds twelve five-minute buckets and the current one: each leaves at its own edge', () => {
    const { clock, counters } = rig();
    const limit = [applies({ name: 'n', scope: 'project', window: 'hour', maxCount: 100 })];
    for (let i = 0; i < 13; i++) {
      counters.reserve('p', KEY_A, limit, 0n); // one per bucket, 13 buckets
      if (i < 12) clock.t += 5 * MIN;
    }
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(13);
    for (let left = 12; left >= 0; left--) {
      clock.t += 5 * MIN;
      expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(left);
    }
    // A counter idle for longer than its ring (days) starts from nothing and counts again.
    clock.t += 50 * HOUR;
    expect(counters.reserve('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(0);
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(1);
  });

  it('a day slides by hours, and old buckets leave while newer ones stay', () => {
    const { clock, counters } = rig();
    const limit = [applies({ name: 'd', scope: 'project', window: 'day', maxCount: 3 })];
    counters.reserve('p', KEY_A, limit, 0n); // hour 0
    clock.t += 12 * HOUR;
    counters.reserve('p', KEY_A, limit, 0n); // hour 12
    counters.reserve('p', KEY_A, limit, 0n);
    expect(counters.reserve('p', KEY_A, limit, 0n).denied).not.toBeNull();
    clock.t += 13 * HOUR - 1; // hour 24, 59:59.999 after the first: still counted
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(3);
    clock.t += 1; // hour 25: the first has left
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(2);
    expect(counters.reserve('p', KEY_A, limit, 0n).denied).toBeNull();
    clock.t += 12 * HOUR; // hour 37: the two of hour 12 have left too
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(1);
  });

  it('fails closed when tracking is full: expired counters are swept first, live ones never dropped', () => {
    const { clock, counters } = rig(2);
    const limit = [applies(perKeyHour(5))];
    counters.reserve('p', KEY_A, limit, 0n);
    counters.reserve('p', KEY_B, limit, 0n);
    const third = { keyId: 'k-c', address: '0x00000000000000000000000000000000000000cc' };
    const full = counters.reserve('p', third, limit, 0n);
    expect(full.denied).toMatchObject({ name: 'per-key', exceeded: TRACKING_FULL });
    expect(counters.usage('p', third, limit, 0n).denied?.exceeded).toBe(TRACKING_FULL);
    // Existing counters still count (no new counter needed), and kept their counts.
    expect(counters.reserve('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(1);
    // B's only signature leaves the window; A signs again meanwhile: B's counter is swept, A's stays.
    clock.t += 30 * MIN;
    counters.reserve('p', KEY_A, limit, 0n);
    clock.t += 31 * MIN; // 61 minutes: B's bucket is still in the window (up to 65 minutes)
    expect(counters.reserve('p', third, limit, 0n).denied?.exceeded).toBe(TRACKING_FULL);
    clock.t += 4 * MIN; // 65: it has left

    expect(counters.reserve('p', third, limit, 0n).denied).toBeNull();
    expect(counters.size).toBe(2);
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(1);
    expect(counters.usage('p', KEY_B, limit, 0n).outcomes[0]?.count?.used).toBe(0);
    // A request needing two new counters when one place is free is refused whole: nothing counted.
    const { counters: one } = rig(1);
    const two = [applies(perKeyHour(5)), applies({ name: 'n', scope: 'project', window: 'hour', maxCount: 5 })];
    expect(one.reserve('p', KEY_A, two, 0n).denied?.exceeded).toBe(TRACKING_FULL);
    expect(one.size).toBe(0);
  });

  it('keeps counting across a window change of the same limit name, conservatively', () => {
    const { clock, counters } = rig();
    const hourly: LimitSpec = { name: 'x', scope: 'project', window: 'hour', maxCount: 10 };
    const daily: LimitSpec = { ...hourly, window: 'day' };
    counters.reserve('p', KEY_A, [applies(hourly)], 0n);
    clock.t += 30 * MIN;
    counters.reserve('p', KEY_A, [applies(hourly)], 0n);
    // Read and then counted as a day: both.
    expect(counters.usage('p', KEY_A, [applies(daily)], 0n).outcomes[0]?.count?.used).toBe(2);
    counters.reserve('p', KEY_A, [applies(daily)], 0n);
    expect(counters.usage('p', KEY_A, [applies(daily)], 0n).outcomes[0]?.count?.used).toBe(3);
    // Back to an hour: the day's buckets read as the last five minutes of their hour (or now): all counted.
    expect(counters.usage('p', KEY_A, [applies(hourly)], 0n).outcomes[0]?.count?.used).toBe(3);
    counters.reserve('p', KEY_A, [applies(hourly)], 0n);
    clock.t += 59 * MIN;
    expect(counters.usage('p', KEY_A, [applies(hourly)], 0n).outcomes[0]?.count?.used).toBe(4);
    clock.t += 2 * HOUR;
    expect(counters.usage('p', KEY_A, [applies(hourly)], 0n).outcomes[0]?.count?.used).toBe(0);
  });

  it('a clock stepped back counts in the newest bucket', () => {
    const { clock, counters } = rig();
    const limit = [applies(perKeyHour(5))];
    counters.reserve('p', KEY_A, limit, 0n);
    clock.t -= 10 * MIN;
    counters.reserve('p', KEY_A, limit, 0n);
    clock.t += 10 * MIN + 60 * MIN;
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.count?.used).toBe(2);
  });

  it("a project's share: a full project refuses only its own requests that need a new counter (review 19, F6)", () => {
    const { clock, counters } = rig(10, 1_000 * HOUR, 2);
    const limit = [applies(perKeyHour(5))];
    const KEY_C = { keyId: 'k-c', address: '0x00000000000000000000000000000000000000cc' };
    expect(counters.reserve('tenant-a', KEY_A, limit, 0n).denied).toBeNull();
    expect(counters.reserve('tenant-a', KEY_B, limit, 0n).denied).toBeNull();
    const full = counters.reserve('tenant-a', KEY_C, limit, 0n);
    expect([full.denied?.exceeded, full.reservation]).toEqual([TRACKING_FULL_PROJECT, null]);
    expect(counters.usage('tenant-a', KEY_C, limit, 0n).denied?.exceeded).toBe(TRACKING_FULL_PROJECT);
    // Its existing counters still count; another project is not affected.
    expect(counters.reserve('tenant-a', KEY_A, limit, 0n).denied).toBeNull();
    expect(counters.reserve('tenant-b', KEY_C, limit, 0n).denied).toBeNull();
    expect(
      counters.reserve('tenant-b', KEY_A, [applies({ name: 'n', scope: 'project', window: 'day', maxCount: 9 })], 0n).denied,
    ).toBeNull();
    expect([counters.size, counters.sizeOf('tenant-a'), counters.sizeOf('tenant-b')]).toEqual([4, 2, 2]);
    // A release that empties a counter frees its place in the project's share.
    const { counters: r } = rig(10, 1_000 * HOUR, 1);
    const held = r.reserve('p', KEY_A, limit, 0n);
    expect(r.reserve('p', KEY_B, limit, 0n).denied?.exceeded).toBe(TRACKING_FULL_PROJECT);
    r.release(held.reservation);
    expect([r.size, r.sizeOf('p'), r.reserve('p', KEY_B, limit, 0n).denied]).toEqual([0, 0, null]);
    // Expired counters are swept first: B's only signature leaves the hour, A's newer one stays.
    clock.t += 30 * MIN;
    counters.reserve('tenant-a', KEY_A, limit, 0n);
    clock.t += 35 * MIN;
    expect(counters.reserve('tenant-a', KEY_C, limit, 0n).denied).toBeNull();
    expect([counters.sizeOf('tenant-a'), counters.usage('tenant-a', KEY_A, limit, 0n).outcomes[0]?.count?.used]).toEqual([2, 1]);
    // The enclave's bound still holds over the shares, and a request needing two counters is refused whole.
    const { counters: g } = rig(3, 1_000 * HOUR, 2);
    const two = [applies(perKeyHour(5)), applies({ name: 'n', scope: 'project', window: 'hour', maxCount: 5 })];
    expect(g.reserve('p1', KEY_A, two, 0n).denied).toBeNull();
    expect(g.reserve('p2', KEY_A, two, 0n).denied?.exceeded).toBe(TRACKING_FULL);
    expect(g.reserve('p1', KEY_B, two, 0n).denied?.exceeded).toBe(TRACKING_FULL_PROJECT);
    expect([g.size, g.sizeOf('p1'), g.sizeOf('p2')]).toEqual([2, 2, 0]);
  });

  it('values of any size are counted exactly (52-bit limbs): sums, releases and edges', () => {
    const { clock, counters } = rig();
    const max = 2n ** 256n - 1n;
    const limit = [applies({ name: 'wei', scope: 'key', window: 'day', maxValue: max })];
    const values = [1n, 2n ** 52n - 1n, 2n ** 52n, 10n ** 18n, 2n ** 200n + 12345n, 2n ** 255n];
    let sum = 0n;
    for (const v of values) {
      expect(counters.reserve('p', KEY_A, limit, v).denied).toBeNull();
      sum += v;
      clock.t += 30 * MIN; // two in each hour
    }
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.value?.used).toBe(sum.toString());
    expect(counters.usage('p', KEY_A, limit, max - sum + 1n).denied?.name).toBe('wei');
    const last = counters.reserve('p', KEY_A, limit, max - sum);
    expect(last.denied).toBeNull();
    counters.release(last.reservation);
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.value?.used).toBe(sum.toString());
    // Each leaves with its hour: the first two (hour 0) at 25 hours, the rest later.
    clock.t = 1_000 * HOUR + 25 * HOUR;
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.value?.used).toBe((sum - 1n - (2n ** 52n - 1n)).toString());
    clock.t += 24 * HOUR;
    expect(counters.usage('p', KEY_A, limit, 0n).outcomes[0]?.value?.used).toBe('0');
  });

  it('fuzz: what the ring counts is what a list of every request says, for either window', () => {
    type Op = { kind: 'reserve'; value: bigint } | { kind: 'release' } | { kind: 'wait'; ms: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      { arbitrary: fc.bigInt({ min: 0n, max: 2n ** 130n }).map((value) => ({ kind: 'reserve' as const, value })), weight: 4 },
      { arbitrary: fc.constant({ kind: 'release' as const }), weight: 1 },
      { arbitrary: fc.integer({ min: 0, max: 26 * HOUR }).map((ms) => ({ kind: 'wait' as const, ms })), weight: 2 },
      { arbitrary: fc.integer({ min: 0, max: 10 * MIN }).map((ms) => ({ kind: 'wait' as const, ms })), weight: 3 },
    );
    fc.assert(
      fc.property(fc.constantFrom('hour' as const, 'day' as const), fc.array(op, { maxLength: 60 }), (window, ops) => {
        const { clock, counters } = rig();
        const limit = [applies({ name: 'x', scope: 'key', window, maxCount: 1_000, maxValue: 2n ** 256n - 1n })];
        const { bucketMs, buckets } = WINDOWS[window];
        const seen: Array<{ bucket: number; value: bigint; live: boolean; reservation: Reservation | null }> = [];
        for (const o of ops) {
          if (o.kind === 'wait') clock.t += o.ms;
          else if (o.kind === 'reserve') {
            const r = counters.reserve('p', KEY_A, limit, o.value);
            seen.push({ bucket: Math.floor(clock.t / bucketMs), value: o.value, live: true, reservation: r.reservation });
          } else {
            const last = [...seen].reverse().find((s) => s.live);
            if (last) {
              counters.release(last.reservation);
              last.live = false;
            }
          }
          const from = Math.floor(clock.t / bucketMs) - buckets;
          const inWindow = seen.filter((s) => s.live && s.bucket >= from);
          const outcome = counters.usage('p', KEY_A, limit, 0n).outcomes[0];
          expect(outcome?.count?.used).toBe(inWindow.length);
          expect(outcome?.value?.used).toBe(inWindow.reduce((a, s) => a + s.value, 0n).toString());
        }
      }),
      { numRuns: 300 },
    );
  });
});
