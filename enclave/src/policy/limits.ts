/**
 * The limits of signing policies (docs/POLICIES.md): how many signatures, and how much native value (wei), a
 * project's keys signed in a sliding hour or day, counted in the enclave's memory.
 *
 * - A window slides in buckets: an hour in one-minute buckets, a day in one-hour buckets. The window is the
 *   current bucket and the `buckets` before it, so a request counts for at least the window and at most one
 *   bucket longer (conservative: never less than the limit says).
 * - A counter is per (project, limit name) for a project-scoped limit, per (project, limit name, key id,
 *   address) for a key-scoped one. It survives a policy change by those names; when a limit's window changes,
 *   its buckets are moved to the new window's, each at the latest time it could stand for (still conservative).
 * - `reserve` checks every limit and counts the request in all of them at once (one synchronous step on the
 *   main thread: no other request runs between the check and the count); `release` takes the count back when
 *   no signature was made. `usage` answers the same checks and counts nothing (the dry run).
 * - Bounded: at most `maxTrackedCounters` counters. Expired ones (nothing left in their window) are swept
 *   first, at most once per minute (a counter expires only at a bucket edge; one a release empties goes at
 *   once); when the bound still holds, a request that needs a new counter is refused ("limit tracking is
 *   full"). A live counter is never dropped: that would reset its limit (fail closed).
 * - In memory only: a restart, or another enclave instance, starts every counter again (docs/POLICIES.md,
 *   "Known limits").
 */
import type { LimitOutcome } from '@nks/shared/policy/decision';
import type { LimitScope, LimitWindow } from '@nks/shared/policy/schema';

/** A window's buckets: `buckets` before the current one, each `bucketMs` long. */
export const WINDOWS: Readonly<Record<LimitWindow, { bucketMs: number; buckets: number }>> = {
  hour: { bucketMs: 60_000, buckets: 60 },
  day: { bucketMs: 3_600_000, buckets: 24 },
};
/** How often expired counters are looked for at most: the shortest bucket (nothing expires in between). */
const SWEEP_EVERY_MS = WINDOWS.hour.bucketMs;

export const TRACKING_FULL = 'limit tracking is full';
export const VALUE_UNKNOWN = "value unknown: the user operation's calls are not decoded";

/** A limit as the counters need it (what a compiled policy holds). */
export interface LimitSpec {
  name: string;
  scope: LimitScope;
  window: LimitWindow;
  maxCount?: number | undefined;
  maxValue?: bigint | undefined;
}

/** A limit and whether it counts the request at hand (its `when` holds). */
export interface LimitCheck {
  limit: LimitSpec;
  applies: boolean;
}

/** The key a request signs with (key-scoped limits count per key id and address). */
export interface SigningKey {
  keyId: string;
  address: string;
}

/**
 * A counter's buckets, oldest first, as parallel arrays (a busy counter holds 61 buckets: this keeps it under
 * 2 KB, 4 KB with values, its key included). `starts` are bucket numbers (time / bucket length) of the counter's
 * window; `values` is made at its first request with a value. `count` and `sum` are the buckets' totals, so a
 * check reads two numbers rather than adding up every bucket.
 */
interface Counter {
  window: LimitWindow;
  starts: number[];
  counts: number[];
  values: bigint[] | null;
  count: number;
  sum: bigint;
}

/** What `reserve` counted, for `release`. */
export interface Reservation {
  released: boolean;
  held: Array<{ key: string; counter: Counter; window: LimitWindow; start: number; value: bigint }>;
}

export interface LimitsAnswer {
  /** Every limit's outcome, in the policy's order. */
  outcomes: LimitOutcome[];
  /** The first limit that refuses the request, or null. */
  denied: LimitOutcome | null;
}

/** The bucket number of `now` in `window`. */
const bucketOf = (now: number, window: LimitWindow) => Math.floor(now / WINDOWS[window].bucketMs);
/** The oldest bucket number still in `window` at `now`. */
const oldest = (now: number, window: LimitWindow) => bucketOf(now, window) - WINDOWS[window].buckets;

/**
 * Where bucket `n` of `from` falls in `to`'s buckets: the one holding its start (an hour's minute into a day's
 * hour), or the last minute of its hour, never later than now (a day's hour into an hour's minutes).
 */
function moved(n: number, from: LimitWindow, to: LimitWindow, now: number): number {
  if (from === to) return n;
  const lastMs = (n + 1) * WINDOWS[from].bucketMs - 1;
  return Math.min(bucketOf(lastMs, to), bucketOf(now, to));
}

/** Drops the buckets that have left the counter's window (a read may: they no longer count). */
function prune(c: Counter, now: number): void {
  const from = oldest(now, c.window);
  let drop = 0;
  while (drop < c.starts.length && (c.starts[drop] as number) < from) {
    c.count -= c.counts[drop] as number;
    if (c.values) c.sum -= c.values[drop] as bigint;
    drop += 1;
  }
  if (drop === 0) return;
  c.starts.splice(0, drop);
  c.counts.splice(0, drop);
  c.values?.splice(0, drop);
}

/** The counter's buckets moved to `window`'s (a policy changed the limit's window): the totals stay. */
function rebucket(c: Counter, window: LimitWindow, now: number): void {
  const starts: number[] = [];
  const counts: number[] = [];
  const values: bigint[] | null = c.values && [];
  c.starts.forEach((n, i) => {
    const to = moved(n, c.window, window, now);
    const last = starts.length - 1;
    if (last >= 0 && starts[last] === to) {
      counts[last] = (counts[last] as number) + (c.counts[i] as number);
      if (values) values[last] = (values[last] as bigint) + (c.values?.[i] as bigint);
    } else {
      starts.push(to);
      counts.push(c.counts[i] as number);
      values?.push(c.values?.[i] as bigint);
    }
  });
  Object.assign(c, { window, starts, counts, values });
}

export class LimitCounters {
  private readonly counters = new Map<string, Counter>();
  private sweptAt = -Infinity;

  constructor(
    private readonly options: {
      /** The configuration's `policy.maxTrackedCounters`. */
      maxTrackedCounters: number;
      now?: () => number;
    },
  ) {}

  /** Counters held (health: policy.trackedCounters). */
  get size(): number {
    return this.counters.size;
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /**
   * The outcome of every limit for a request worth `value` (undefined: unknown) signed with `key` (null in a dry
   * run without a key: a key-scoped limit then reads as a key that has signed nothing), counting nothing.
   */
  usage(projectId: string, key: SigningKey | null, checks: readonly LimitCheck[], value: bigint | undefined): LimitsAnswer {
    return this.check(projectId, key, checks, value, this.now()).answer;
  }

  /**
   * The same checks, and when no limit refuses, the request counted in every limit that applies (`release`
   * takes it back). Synchronous: nothing runs between the checks and the count.
   */
  reserve(
    projectId: string,
    key: SigningKey,
    checks: readonly LimitCheck[],
    value: bigint | undefined,
  ): LimitsAnswer & { reservation: Reservation | null } {
    const now = this.now();
    const { answer, keys } = this.check(projectId, key, checks, value, now);
    if (answer.denied) return { ...answer, reservation: null };
    const reservation: Reservation = { released: false, held: [] };
    const add = value ?? 0n;
    checks.forEach((c, i) => {
      const k = keys[i];
      if (!c.applies || k === null || k === undefined) return;
      const { window } = c.limit;
      let counter = this.counters.get(k);
      if (!counter) this.counters.set(k, (counter = { window, starts: [], counts: [], values: null, count: 0, sum: 0n }));
      if (counter.window !== window) rebucket(counter, window, now);
      prune(counter, now);
      const n = bucketOf(now, window);
      let at = counter.starts.length - 1;
      // (A clock stepped back counts in the newest bucket: it stays counted the longer.)
      if (at < 0 || (counter.starts[at] as number) < n) {
        counter.starts.push(n);
        counter.counts.push(0);
        counter.values?.push(0n);
        at += 1;
      }
      counter.counts[at] = (counter.counts[at] as number) + 1;
      counter.count += 1;
      if (add !== 0n) {
        counter.values ??= counter.counts.map(() => 0n);
        counter.values[at] = (counter.values[at] as bigint) + add;
        counter.sum += add;
      }
      reservation.held.push({ key: k, counter, window, start: counter.starts[at] as number, value: add });
    });
    return { ...answer, reservation: reservation.held.length > 0 ? reservation : null };
  }

  /** Takes back what `reserve` counted (no signature was made). Once; a counter left empty goes. */
  release(reservation: Reservation | null): void {
    if (!reservation || reservation.released) return;
    reservation.released = true;
    for (const { key, counter, window, start, value } of reservation.held) {
      // Gone (expired, or moved by a window change): nothing to take back, or it stays counted (never less).
      const at = counter.window === window ? counter.starts.lastIndexOf(start) : -1;
      if (at < 0 || (counter.counts[at] as number) < 1) continue;
      counter.counts[at] = (counter.counts[at] as number) - 1;
      counter.count -= 1;
      if (counter.values && value !== 0n && (counter.values[at] as bigint) >= value) {
        counter.values[at] = (counter.values[at] as bigint) - value;
        counter.sum -= value;
      }
      if (counter.count === 0 && counter.sum === 0n && this.counters.get(key) === counter) this.counters.delete(key);
    }
  }

  private check(
    projectId: string,
    key: SigningKey | null,
    checks: readonly LimitCheck[],
    value: bigint | undefined,
    now: number,
  ): { answer: LimitsAnswer; keys: Array<string | null> } {
    const address = key?.address.toLowerCase();
    const keys = checks.map(({ limit }) =>
      limit.scope === 'project'
        ? `${projectId}\u0000${limit.name}`
        : key
          ? `${projectId}\u0000${limit.name}\u0000${key.keyId}\u0000${address}`
          : null,
    );
    let fresh = -1;
    let needed = 0;
    const outcomes = checks.map((c, i) => {
      const k = keys[i] ?? null;
      const counter = k === null ? undefined : this.counters.get(k);
      if (c.applies && k !== null && !counter) {
        if (fresh < 0) fresh = i;
        needed += 1;
      }
      return this.outcome(c, counter, value, now);
    });
    let denied = outcomes.find((o) => o.exceeded !== undefined) ?? null;
    // New counters this request would need: refused when the bound is reached even after a sweep.
    if (!denied && needed > 0 && this.counters.size + needed > this.options.maxTrackedCounters) {
      this.sweep(now);
      if (this.counters.size + needed > this.options.maxTrackedCounters) {
        denied = outcomes[fresh] as LimitOutcome;
        denied.exceeded = TRACKING_FULL;
      }
    }
    return { answer: { outcomes, denied }, keys };
  }

  private outcome({ limit, applies }: LimitCheck, counter: Counter | undefined, value: bigint | undefined, now: number): LimitOutcome {
    const { count, sum } = counter ? used(counter, limit.window, now) : { count: 0, sum: 0n };
    const o: LimitOutcome = { name: limit.name, scope: limit.scope, window: limit.window, applies };
    if (limit.maxCount !== undefined) o.count = { used: count, max: limit.maxCount };
    if (limit.maxValue !== undefined) o.value = { used: sum.toString(), max: limit.maxValue.toString() };
    if (!applies) return o;
    if (limit.maxValue !== undefined && value === undefined) o.exceeded = VALUE_UNKNOWN;
    else if (limit.maxCount !== undefined && count + 1 > limit.maxCount) {
      o.exceeded = `${count} signature${count === 1 ? '' : 's'} in the last ${limit.window}, the maximum is ${limit.maxCount}`;
    } else if (limit.maxValue !== undefined && sum + (value as bigint) > limit.maxValue) {
      o.exceeded = `value ${value} with ${sum} signed in the last ${limit.window} is above the maximum ${limit.maxValue}`;
    }
    return o;
  }

  /** Drops the counters with nothing left in their window; at most once per minute. */
  private sweep(now: number): void {
    const at = Math.floor(now / SWEEP_EVERY_MS);
    if (at === this.sweptAt) return;
    this.sweptAt = at;
    for (const [key, counter] of this.counters) {
      prune(counter, now);
      if (counter.count === 0 && counter.sum === 0n) this.counters.delete(key);
    }
  }
}

/** What a counter holds within `window` at `now`: its totals, or its buckets read as `window`'s if it had another. */
function used(counter: Counter, window: LimitWindow, now: number): { count: number; sum: bigint } {
  prune(counter, now);
  if (counter.window === window) return { count: counter.count, sum: counter.sum };
  const from = oldest(now, window);
  let count = 0;
  let sum = 0n;
  counter.starts.forEach((n, i) => {
    if (moved(n, counter.window, window, now) < from) return;
    count += counter.counts[i] as number;
    if (counter.values) sum += counter.values[i] as bigint;
  });
  return { count, sum };
}
