/**
 * The key cache's bounds changed while keys are cached (cache.configure: keys/cache-settings.ts), and the image
 * configuration's cache bounds (config.ts): a smaller cache evicts and zeroes at once, a shorter TTL applies to
 * the keys already cached (counted from their unsealing), and values outside the image's bounds are refused.
 */
import { KeystoreError } from '@nks/shared/errors';
import { EnclaveConfigSchema } from '../src/config';
import { KeyCache } from '../src/keys/cache';
import { configureCache, type CacheBounds } from '../src/keys/cache-settings';

const ADDRESS = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266' as const;
const entry = (n: number) => ({
  secret: new Uint8Array(32).fill(n),
  address: ADDRESS,
  blob: `blob-${n}`,
  blobSha256: `0x${'00'.repeat(32)}`,
  projectId: 'default',
  subject: null,
});
const zeroed = (e: { secret: Uint8Array }) => e.secret.every((b) => b === 0);

describe('key cache resize', () => {
  let now = 1_000;
  const make = (ttlMs = 1_000, maxEntries = 5) => new KeyCache({ ttlMs, maxEntries, now: () => now });

  it('evicts (and zeroes) the least recently used entries at once when the count shrinks', () => {
    const c = make();
    const es = [1, 2, 3, 4, 5].map(entry);
    es.forEach((e, i) => c.set(`k${i + 1}`, e));
    c.get('k1', 'blob-1'); // k1 is now the most recently used: k2, k3, k4 go first
    expect(c.resize({ ttlMs: 1_000, maxEntries: 2 })).toEqual({ ttlMs: 1_000, maxEntries: 2 });
    expect(es.map(zeroed)).toEqual([false, true, true, true, false]);
    expect(c.stats).toMatchObject({ size: 2, evictions: 3 });
    expect([c.get('k1', 'blob-1')?.secret[0], c.get('k5', 'blob-5')?.secret[0]]).toEqual([1, 5]);
    // The new bound holds for what comes next.
    const six = entry(6);
    c.set('k6', six);
    expect(c.stats.size).toBe(2);
    expect(zeroed(es[0] as ReturnType<typeof entry>)).toBe(true);
  });

  it('applies a shorter TTL to keys already cached, from their unsealing, and zeroes them', () => {
    now = 10_000;
    const c = make(60_000);
    const old = entry(1);
    c.set('old', old);
    now += 5_000;
    const young = entry(2);
    c.set('young', young);
    now += 1_000; // old unsealed 6 s ago, young 1 s ago
    c.resize({ ttlMs: 3_000, maxEntries: 5 });
    expect([zeroed(old), zeroed(young)]).toEqual([true, false]);
    expect(c.stats).toMatchObject({ size: 1, expirations: 1 });
    const held = c.get('young', 'blob-2');
    expect(held?.secret[0]).toBe(2);
    now += 2_500; // 3.5 s after its unsealing: past the new TTL, though not the old one
    expect(c.holds('young', held as NonNullable<typeof held>)).toBe(false);
    expect(c.get('young', 'blob-2')).toBeUndefined();
    expect(zeroed(young)).toBe(true);
  });

  it('a longer TTL keeps counting from the unsealing (never beyond it plus the new TTL)', () => {
    now = 50_000;
    const c = make(1_000);
    const e = entry(3);
    c.set('k', e);
    now += 900;
    c.resize({ ttlMs: 2_000, maxEntries: 5 });
    now += 1_000; // 1.9 s after unsealing: kept under the new TTL
    expect(c.get('k', 'blob-3')?.secret[0]).toBe(3);
    now += 200; // 2.1 s
    expect(c.get('k', 'blob-3')).toBeUndefined();
    expect(zeroed(e)).toBe(true);
  });

  it('refuses limits that are not positive integers, changing nothing', () => {
    const c = make();
    for (const bad of [0, -1, 1.5, Number.NaN, Infinity, 2 ** 60]) {
      expect(() => c.resize({ ttlMs: bad, maxEntries: 5 })).toThrow(RangeError);
      expect(() => c.resize({ ttlMs: 1_000, maxEntries: bad })).toThrow(RangeError);
    }
    expect(c.limits).toEqual({ ttlMs: 1_000, maxEntries: 5 });
  });
});

describe('cache.configure against the image bounds', () => {
  const bounds: CacheBounds = {
    minTtlMs: 2_000,
    maxTtlMs: 60_000,
    minEntries: 2,
    maxEntries: 100,
    defaultTtlMs: 30_000,
    defaultMaxEntries: 50,
  };
  const refusal = (f: () => unknown): string => {
    try {
      f();
    } catch (err) {
      expect(err).toBeInstanceOf(KeystoreError);
      expect((err as KeystoreError).code).toBe('INVALID_PARAMS');
      return (err as Error).message;
    }
    throw new Error('not refused');
  };

  it('applies values within the bounds, and the image values for absent fields', () => {
    const c = new KeyCache({ ttlMs: 30_000, maxEntries: 50 });
    expect(configureCache(c, bounds, { ttlMs: 60_000, maxEntries: 2 })).toEqual({
      ttlMs: 60_000,
      maxEntries: 2,
      bounds: { minTtlMs: 2_000, maxTtlMs: 60_000, minEntries: 2, maxEntries: 100 },
    });
    expect(configureCache(c, bounds, {})).toMatchObject({ ttlMs: 30_000, maxEntries: 50 });
    expect(c.limits).toEqual({ ttlMs: 30_000, maxEntries: 50 });
  });

  it('refuses each value outside the bounds naming the bound, and changes nothing', () => {
    const c = new KeyCache({ ttlMs: 30_000, maxEntries: 50 });
    expect(refusal(() => configureCache(c, bounds, { ttlMs: 60_001 }))).toBe(
      "cache.ttlMs 60001 is above this image's bound cache.bounds.maxTtlMs (60000)",
    );
    expect(refusal(() => configureCache(c, bounds, { ttlMs: 1_999 }))).toBe(
      "cache.ttlMs 1999 is below this image's bound cache.bounds.minTtlMs (2000)",
    );
    expect(refusal(() => configureCache(c, bounds, { maxEntries: 101 }))).toBe(
      "cache.maxEntries 101 is above this image's bound cache.bounds.maxEntries (100)",
    );
    expect(refusal(() => configureCache(c, bounds, { maxEntries: 1 }))).toBe(
      "cache.maxEntries 1 is below this image's bound cache.bounds.minEntries (2)",
    );
    // One good and one bad value: nothing applied.
    expect(refusal(() => configureCache(c, bounds, { ttlMs: 10_000, maxEntries: 10_000 }))).toMatch(/maxEntries/);
    expect(c.limits).toEqual({ ttlMs: 30_000, maxEntries: 50 });
  });
});

describe('the image configuration of the cache', () => {
  const parse = (cache: unknown) => EnclaveConfigSchema.shape.cache.safeParse(cache);
  const issues = (cache: unknown) => {
    const r = parse(cache);
    expect(r.success).toBe(false);
    return r.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('defaults: 15 minutes and 100,000 keys, which are also the upper bounds (a parent may only shorten or shrink)', () => {
    expect(parse({}).data).toEqual({
      ttlMs: 900_000,
      maxEntries: 100_000,
      bounds: { minTtlMs: 1_000, maxTtlMs: 900_000, minEntries: 1, maxEntries: 100_000 },
    });
  });

  it('an upper bound left out is the configured value itself, smaller or larger than the default', () => {
    expect(parse({ ttlMs: 7_200_000, maxEntries: 500_000 }).data?.bounds).toMatchObject({ maxTtlMs: 7_200_000, maxEntries: 500_000 });
    expect(parse({ ttlMs: 60_000, maxEntries: 10_000 }).data?.bounds).toMatchObject({ maxTtlMs: 60_000, maxEntries: 10_000 });
    expect(parse({ ttlMs: 60_000, bounds: { maxTtlMs: 3_600_000 } }).data?.bounds).toMatchObject({
      maxTtlMs: 3_600_000,
      maxEntries: 100_000,
    });
  });

  it('refuses values outside bounds set explicitly, bounds that cross, and bounds past the hard limits', () => {
    expect(issues({ ttlMs: 120_000, bounds: { maxTtlMs: 60_000 } })).toEqual(['ttlMs: must lie within cache.bounds [1000, 60000]']);
    expect(issues({ maxEntries: 5, bounds: { minEntries: 10, maxEntries: 20 } })).toEqual([
      'maxEntries: must lie within cache.bounds [10, 20]',
    ]);
    expect(issues({ ttlMs: 5_000, bounds: { minTtlMs: 10_000, maxTtlMs: 5_000 } })).toEqual([
      'bounds.minTtlMs: must not exceed cache.bounds.maxTtlMs (5000)',
      'ttlMs: must lie within cache.bounds [10000, 5000]',
    ]);
    expect(issues({ bounds: { maxEntries: 1_000_001 } })?.[0]).toMatch(/^bounds\.maxEntries: /);
    expect(issues({ bounds: { maxTtlMs: 24 * 3600_000 + 1 } })?.[0]).toMatch(/^bounds\.maxTtlMs: /);
    expect(issues({ bounds: { other: 1 } })?.[0]).toMatch(/^bounds: /);
  });
});
