/**
 * The limits of signing policies (docs/POLICIES.md): how many signatures, and how much native value (wei), a
 * project's keys signed in a sliding hour or day, counted in the enclave's memory.
 *
 * - A window slides in buckets: an hour in five-minute buckets, a day in one-hour buckets. The window is the
 *   current bucket and the `buckets` before it, so a request counts for at least the window and at most one
 *   bucket longer (conservative: never less than the limit says). Few buckets keep a counter small (below).
 * - A counter is per (project, limit name) for a project-scoped limit, per (project, limit name, key id,
 *   address) for a key-scoped one. It survives a policy change by those names; when a limit's window changes,
 *   its buckets are moved to the new window's, each at the latest time it could stand for (still conservative).
 * - `reserve` checks every limit and counts the request in all of them at once (one synchronous step on the
 *   main thread: no other request runs between the check and the count); `release` takes the count back when
 *   no signature was made. `usage` answers the same checks and counts nothing (the dry run).
 * - Bounded: at most `maxTrackedCounters` counters, and at most `maxTrackedCountersPerProject` of one project
 *   (so one project's callers cannot fill the table for every other project). Expired ones (nothing left in
 *   their window) are swept first, at most once per five minutes (a counter expires only at a bucket edge; one
 *   a release empties goes at once); when a bound still holds, a request that needs a new counter is refused
 *   ("limit tracking is full", "… for this project"). A live counter is never dropped: that would reset its
 *   limit (fail closed).
 * - In memory only: a restart, or another enclave instance, starts every counter again (docs/POLICIES.md,
 *   "Known limits").
 */
import type { LimitOutcome } from '@nks/shared/policy/decision';
import type { LimitScope, LimitWindow } from '@nks/shared/policy/schema';

/** A window's buckets: `buckets` before the current one, each `bucketMs` long. */
export const WINDOWS: Readonly<Record<LimitWindow, { bucketMs: number; buckets: number }>> = {
  hour: { bucketMs: 300_000, buckets: 12 },
  day: { bucketMs: 3_600_000, buckets: 24 },
};
/** How often expired counters are looked for at most: the shortest bucket (nothing expires in between). */
const SWEEP_EVERY_MS = WINDOWS.hour.bucketMs;

export const TRACKING_FULL = 'limit tracking is full';
export const TRACKING_FULL_PROJECT = 'limit tracking is full for this project';
export const VALUE_UNKNOWN =
  "value unknown: the request's value cannot be read (a digest, a hash message, typed data, or a user operation whose calls are not decoded)";

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
 * A counter: a ring of its window's buckets (`buckets` + 1 slots: the window and the current bucket), bucket
 * number n (time / bucket length) in slot n % slots while n > newest - slots. Each slot is `1 + width` numbers
 * of one plain array: its count, then its value (wei) in `width` 52-bit limbs, least significant first (exact
 * in a double; `width` is 0 until the counter counts a value, and grows with the largest value). A plain array
 * of numbers stores them unboxed: measured smaller than a typed array, or bigints (24 to 56 bytes each, plus a
 * pointer). `count` and `sum` are the slots' totals, so a check reads two numbers. Measured per counter, its key
 * and map entry included (Node 20, enclave/test/policy-limits-memory.test.ts with --expose-gc): ~420 bytes
 * counting signatures only, ~650 (hour) / ~950 (day) with 1 ETH in every bucket, ~1.6 KB at worst (a day,
 * 64-character names, ~2^250 wei in every bucket); one-minute buckets of bigints took ~3.9 KB for a busy hour.
 */
interface Counter {
  readonly window: LimitWindow;
  newest: number;
  width: number;
  cells: number[];
  count: number;
  sum: bigint;
}

/** What `reserve` counted, for `release`. */
export interface Reservation {
  released: boolean;
  held: Array<{ key: string; counter: Counter; bucket: number; value: bigint }>;
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
/** The ring's length for `window`. */
export const slotsOf = (window: LimitWindow) => WINDOWS[window].buckets + 1;
/** The project a counter's key belongs to (keys start with it; ids and names hold no NUL). */
const projectOfKey = (key: string) => key.slice(0, key.indexOf('\u0000'));

const newCounter = (window: LimitWindow, newest: number): Counter => ({
  window,
  newest,
  width: 0,
  cells: new Array<number>(slotsOf(window)).fill(0),
  count: 0,
  sum: 0n,
});

const LIMB_BITS = 52n;
const LIMB_MASK = (1n << LIMB_BITS) - 1n;
const LIMB = 2 ** 52;

const countAt = (c: Counter, s: number) => c.cells[s * (1 + c.width)] as number;

function valueAt(c: Counter, s: number): bigint {
  const at = s * (1 + c.width);
  let v = 0n;
  for (let i = c.width; i >= 1; i--) v = (v << LIMB_BITS) | BigInt(c.cells[at + i] as number);
  return v;
}

/** `value`'s limbs (≥ 0), least significant first. */
function limbsOf(value: bigint): number[] {
  const limbs: number[] = [];
  for (let v = value; v > 0n; v >>= LIMB_BITS) limbs.push(Number(v & LIMB_MASK));
  return limbs;
}

/** Gives every slot `width` limbs (more than it has). */
function widen(c: Counter, width: number): void {
  const slots = slotsOf(c.window);
  const cells = new Array<number>(slots * (1 + width)).fill(0);
  for (let t = 0; t < slots; t++) {
    for (let i = 0; i <= c.width; i++) cells[t * (1 + width) + i] = c.cells[t * (1 + c.width) + i] as number;
  }
  Object.assign(c, { width, cells });
}

/** Sets slot `s`'s value (≥ 0), widening first if it needs more limbs. */
function setValue(c: Counter, s: number, value: bigint): void {
  const limbs = limbsOf(value);
  if (limbs.length > c.width) widen(c, limbs.length);
  const at = s * (1 + c.width);
  for (let i = 1; i <= c.width; i++) c.cells[at + i] = limbs[i - 1] ?? 0;
}

/** Adds `value` (> 0) to slot `s`, limb by limb (a sum of two limbs and a carry stays exact in a double). */
function addValue(c: Counter, s: number, value: bigint): void {
  const limbs = limbsOf(value);
  if (limbs.length > c.width) widen(c, limbs.length);
  let at = s * (1 + c.width);
  let carry = 0;
  for (let i = 1; i <= c.width; i++) {
    const x = (c.cells[at + i] as number) + (limbs[i - 1] ?? 0) + carry;
    carry = x >= LIMB ? 1 : 0;
    c.cells[at + i] = x - carry * LIMB;
  }
  if (carry === 0) return;
  widen(c, c.width + 1);
  at = s * (1 + c.width);
  c.cells[at + c.width] = 1;
}

/**
 * Where bucket `n` of `from` falls in `to`'s buckets: the one holding its start (an hour's five minutes into a
 * day's hour), or the last five minutes of its hour, never later than now (a day's hour into an hour's buckets).
 */
function moved(n: number, from: LimitWindow, to: LimitWindow, now: number): number {
  if (from === to) return n;
  const lastMs = (n + 1) * WINDOWS[from].bucketMs - 1;
  return Math.min(bucketOf(lastMs, to), bucketOf(now, to));
}

/** Calls `fn` with each bucket the counter holds something in: its number, count and value. */
function eachBucket(c: Counter, fn: (n: number, count: number, value: bigint) => void): void {
  const slots = slotsOf(c.window);
  for (let n = Math.max(0, c.newest - slots + 1); n <= c.newest; n++) {
    const s = n % slots;
    const count = countAt(c, s);
    const value = valueAt(c, s);
    if (count !== 0 || value !== 0n) fn(n, count, value);
  }
}

/** Adds `count` and `value` to bucket `n` (one the ring holds). */
function add(c: Counter, n: number, count: number, value: bigint): void {
  const s = n % slotsOf(c.window);
  c.cells[s * (1 + c.width)] = countAt(c, s) + count;
  c.count += count;
  if (value !== 0n) {
    addValue(c, s, value);
    c.sum += value;
  }
}

/** Moves the ring on to `now`: the buckets that have left the window are emptied (a read may: they no longer count). */
function prune(c: Counter, now: number): void {
  const n = bucketOf(now, c.window);
  if (n <= c.newest) return;
  const slots = slotsOf(c.window);
  const steps = Math.min(n - c.newest, slots);
  for (let i = 1; i <= steps; i++) {
    const s = (c.newest + i) % slots;
    c.count -= countAt(c, s);
    if (c.width > 0) c.sum -= valueAt(c, s);
    c.cells.fill(0, s * (1 + c.width), (s + 1) * (1 + c.width));
  }
  c.newest = n;
}

/** A counter of `window` holding `c`'s buckets moved to it (a policy changed the limit's window): the totals stay. */
function rebucket(c: Counter, window: LimitWindow, now: number): Counter {
  const to = newCounter(window, bucketOf(now, window));
  const from = oldest(now, window);
  eachBucket(c, (n, count, value) => {
    const m = moved(n, c.window, window, now);
    if (m >= from) add(to, m, count, value);
  });
  return to;
}

export class LimitCounters {
  private readonly counters = new Map<string, Counter>();
  /** Counters held per project (for its share, `maxTrackedCountersPerProject`). */
  private readonly perProject = new Map<string, number>();
  private sweptAt = -Infinity;

  constructor(
    private readonly options: {
      /** The configuration's `policy.maxTrackedCounters`. */
      maxTrackedCounters: number;
      /** The configuration's `policy.maxTrackedCountersPerProject` (default: no share below the global bound). */
      maxTrackedCountersPerProject?: number;
      now?: () => number;
    },
  ) {}

  /** Counters held (health: policy.trackedCounters). */
  get size(): number {
    return this.counters.size;
  }

  /** Counters held for `projectId`. */
  sizeOf(projectId: string): number {
    return this.perProject.get(projectId) ?? 0;
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
    const worth = value ?? 0n;
    checks.forEach((c, i) => {
      const k = keys[i];
      if (!c.applies || k === null || k === undefined) return;
      const { window } = c.limit;
      let counter = this.counters.get(k);
      if (!counter) {
        this.counters.set(k, (counter = newCounter(window, bucketOf(now, window))));
        this.perProject.set(projectId, this.sizeOf(projectId) + 1);
      } else if (counter.window !== window) this.counters.set(k, (counter = rebucket(counter, window, now)));
      prune(counter, now);
      // (A clock stepped back counts in the newest bucket: it stays counted the longer.)
      add(counter, counter.newest, 1, worth);
      reservation.held.push({ key: k, counter, bucket: counter.newest, value: worth });
    });
    return { ...answer, reservation: reservation.held.length > 0 ? reservation : null };
  }

  /** Takes back what `reserve` counted (no signature was made). Once; a counter left empty goes. */
  release(reservation: Reservation | null): void {
    if (!reservation || reservation.released) return;
    reservation.released = true;
    for (const { key, counter, bucket, value } of reservation.held) {
      // Gone (expired, or moved by a window change): nothing to take back, or it stays counted (never less).
      const slots = slotsOf(counter.window);
      if (this.counters.get(key) !== counter || bucket <= counter.newest - slots) continue;
      const s = bucket % slots;
      if (countAt(counter, s) < 1) continue;
      counter.cells[s * (1 + counter.width)] = countAt(counter, s) - 1;
      counter.count -= 1;
      const held = valueAt(counter, s);
      if (value !== 0n && held >= value) {
        setValue(counter, s, held - value);
        counter.sum -= value;
      }
      if (counter.count === 0 && counter.sum === 0n) this.drop(key);
    }
  }

  private drop(key: string): void {
    this.counters.delete(key);
    const project = projectOfKey(key);
    const left = this.sizeOf(project) - 1;
    if (left > 0) this.perProject.set(project, left);
    else this.perProject.delete(project);
  }

  /** Why `needed` new counters for `projectId` cannot be held, or null when they can. */
  private full(projectId: string, needed: number): string | null {
    if (this.counters.size + needed > this.options.maxTrackedCounters) return TRACKING_FULL;
    const share = this.options.maxTrackedCountersPerProject;
    if (share !== undefined && this.sizeOf(projectId) + needed > share) return TRACKING_FULL_PROJECT;
    return null;
  }

  private check(
    projectId: string,
    key: SigningKey | null,
    checks: readonly LimitCheck[],
    value: bigint | undefined,
    now: number,
  ): { answer: LimitsAnswer; keys: Array<string | null> } {
    const address = key?.address.toLowerCase();
    // (Joined, a key is one flat string: a template literal would keep a cons string over its flat copy.)
    const keys = checks.map(({ limit }) =>
      limit.scope === 'project'
        ? [projectId, limit.name].join('\u0000')
        : key
          ? [projectId, limit.name, key.keyId, address].join('\u0000')
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
    // New counters this request would need: refused when a bound (the enclave's, or the project's share) is
    // reached even after a sweep, so a full project refuses only its own requests.
    if (!denied && needed > 0 && this.full(projectId, needed) !== null) {
      this.sweep(now);
      const why = this.full(projectId, needed);
      if (why !== null) {
        denied = outcomes[fresh] as LimitOutcome;
        denied.exceeded = why;
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

  /** Drops the counters with nothing left in their window; at most once per shortest bucket. */
  private sweep(now: number): void {
    const at = Math.floor(now / SWEEP_EVERY_MS);
    if (at === this.sweptAt) return;
    this.sweptAt = at;
    for (const [key, counter] of this.counters) {
      prune(counter, now);
      if (counter.count === 0 && counter.sum === 0n) this.drop(key);
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
  eachBucket(counter, (n, c, v) => {
    if (moved(n, counter.window, window, now) < from) return;
    count += c;
    sum += v;
  });
  return { count, sum };
}
