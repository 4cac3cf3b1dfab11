/**
 * A compromised parent against `cache.configure` on the real enclave bundle (keys/cache-settings.ts): whatever
 * it sends, the cache never holds more keys, or a key longer after its unsealing, than the image's bounds allow;
 * what it can do is make the cache small or short-lived, which costs KMS Decrypts (denial of service) and
 * nothing else. Signs running while it resizes the cache answer a valid signature of their key or a retryable
 * error.
 */
import { recoverAddress } from 'viem';
import { KeystoreError } from '@nks/shared/errors';
import type { CreateResult } from '@nks/shared/enclave-api';
import { tempRunDir } from '@nks/shared-test/helpers';
import { digestOf, startEnclaveHarness, type EnclaveHarness } from './harness';

const BOUNDS = { minTtlMs: 2_000, maxTtlMs: 120_000, minEntries: 2, maxEntries: 16 };
const IMAGE = { ttlMs: 60_000, maxEntries: 8 };

describe('cache.configure: a compromised parent vs. the image bounds (real enclave bundle)', () => {
  let h: EnclaveHarness;
  const keys: CreateResult[] = [];
  const call = (params: unknown) => h.client.call('cache.configure', params as Parameters<typeof h.client.call<'cache.configure'>>[1]);
  const counters = async () => (await h.client.call('enclave.health', {})).counters;
  const refused = async (params: unknown): Promise<KeystoreError> => {
    const err = await call(params).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KeystoreError);
    return err as KeystoreError;
  };

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-cache-cfg-'), { cache: { ...IMAGE, bounds: BOUNDS } });
    for (let i = 0; i < 6; i++) keys.push(await h.create(`k_cachecfg${i}`));
  }, 60_000);
  afterAll(async () => h?.stop());
  afterEach(async () => {
    await call({});
  });

  it('is served by a normal image, answers the settings in force and the bounds; {} restores the image values', async () => {
    const hello = await h.client.call('enclave.hello', { protocolVersion: 3 });
    expect(hello.features).toContain('cache.configure');
    expect(await call({ ttlMs: 30_000, maxEntries: 4 })).toEqual({ ttlMs: 30_000, maxEntries: 4, bounds: BOUNDS });
    expect(await counters()).toMatchObject({ cacheTtlMs: 30_000, cacheMaxEntries: 4 });
    expect(await call({})).toEqual({ ...IMAGE, bounds: BOUNDS });
    expect(await counters()).toMatchObject({ cacheTtlMs: IMAGE.ttlMs, cacheMaxEntries: IMAGE.maxEntries });
  });

  it('refuses values beyond the bounds, naming the bound, and changes nothing', async () => {
    const cases: Array<[unknown, string]> = [
      [{ ttlMs: BOUNDS.maxTtlMs + 1 }, "cache.ttlMs 120001 is above this image's bound cache.bounds.maxTtlMs (120000)"],
      [{ ttlMs: 1_999 }, "cache.ttlMs 1999 is below this image's bound cache.bounds.minTtlMs (2000)"],
      [{ maxEntries: 17 }, "cache.maxEntries 17 is above this image's bound cache.bounds.maxEntries (16)"],
      [{ maxEntries: 1 }, "cache.maxEntries 1 is below this image's bound cache.bounds.minEntries (2)"],
      [{ ttlMs: 10_000, maxEntries: 1_000_000 }, "cache.maxEntries 1000000 is above this image's bound cache.bounds.maxEntries (16)"],
      [
        { ttlMs: Number.MAX_SAFE_INTEGER },
        `cache.ttlMs ${Number.MAX_SAFE_INTEGER} is above this image's bound cache.bounds.maxTtlMs (120000)`,
      ],
    ];
    for (const [params, message] of cases) {
      const err = await refused(params);
      expect([err.code, err.message]).toEqual(['INVALID_PARAMS', message]);
    }
    expect(await counters()).toMatchObject({ cacheTtlMs: IMAGE.ttlMs, cacheMaxEntries: IMAGE.maxEntries });
  });

  it('refuses what is not a positive safe integer (non-integers, huge numbers, strings, null, extra fields)', async () => {
    const bad: unknown[] = [
      { ttlMs: 2_000.5 },
      { maxEntries: 2.5 },
      { ttlMs: 0 },
      { maxEntries: -4 },
      { ttlMs: 1e300 },
      { maxEntries: 2 ** 53 },
      { ttlMs: '60000' },
      { maxEntries: null },
      { ttlMs: [60_000] },
      { ttlMs: 60_000, bounds: { maxTtlMs: 1e9 } },
      JSON.parse('{"maxEntries": 4, "__proto__": {"maxEntries": 1e9}}'),
    ];
    for (const params of bad) expect((await refused(params)).code).toBe('INVALID_PARAMS');
    expect(await counters()).toMatchObject({ cacheTtlMs: IMAGE.ttlMs, cacheMaxEntries: IMAGE.maxEntries });
  });

  it('a smaller cache evicts at once: the evicted keys cost a KMS Decrypt again, the kept ones none', async () => {
    for (const [i, k] of keys.entries()) await h.signDigest(k, i);
    const before = await counters();
    expect(before.cacheSize).toBe(6);
    await call({ maxEntries: 2 });
    const after = await counters();
    expect([after.cacheSize, after.cacheEvictions - before.cacheEvictions]).toEqual([2, 4]);
    // The two most recently used (keys 4 and 5) stay warm; key 0 was evicted.
    const decrypts = await h.decryptCalls();
    await h.signDigest(keys[5] as CreateResult, 50);
    await h.signDigest(keys[4] as CreateResult, 51);
    expect(await h.decryptCalls()).toBe(decrypts);
    await h.signDigest(keys[0] as CreateResult, 52);
    expect(await h.decryptCalls()).toBe(decrypts + 1);
    expect((await counters()).cacheSize).toBe(2);
  });

  it('a shorter TTL applies to the keys already cached, counted from their unsealing', async () => {
    await call({ maxEntries: 16 });
    const key = keys[1] as CreateResult;
    await h.client.call('keys.forget', { keyId: key.keyId });
    await h.signDigest(key, 60); // unsealed now, under the image's 60 s TTL
    const unsealed = Date.now();
    // Wait until the key is older than the shortest TTL the image allows, then shorten it to that.
    while (Date.now() - unsealed < BOUNDS.minTtlMs + 200) await new Promise((r) => setTimeout(r, 100));
    const expirations = (await counters()).cacheExpirations;
    await call({ ttlMs: BOUNDS.minTtlMs, maxEntries: 16 });
    expect((await counters()).cacheExpirations).toBeGreaterThan(expirations);
    const decrypts = await h.decryptCalls();
    await h.signDigest(key, 61);
    expect(await h.decryptCalls()).toBe(decrypts + 1);
  });

  it('repeated calls change nothing beyond the last one, and the enclave keeps serving', async () => {
    const answers = await Promise.all(
      Array.from({ length: 300 }, (_, i) => call({ ttlMs: 2_000 + (i % 7) * 1_000, maxEntries: 2 + (i % 15) })),
    );
    expect(answers.every((a) => a.maxEntries <= BOUNDS.maxEntries && a.ttlMs <= BOUNDS.maxTtlMs)).toBe(true);
    const last = await call({ ttlMs: 5_000, maxEntries: 3 });
    expect(await counters()).toMatchObject({ cacheTtlMs: last.ttlMs, cacheMaxEntries: 3 });
    expect((await counters()).cacheSize).toBeLessThanOrEqual(3);
  });

  it('resizing while signing: every sign answers a valid signature of its key or a retryable error', async () => {
    let resizing = true;
    const resizer = (async () => {
      for (let i = 0; resizing; i++) {
        await call({ ttlMs: i % 2 ? BOUNDS.minTtlMs : BOUNDS.maxTtlMs, maxEntries: i % 2 ? BOUNDS.minEntries : BOUNDS.maxEntries });
        await new Promise((r) => setImmediate(r));
      }
    })();
    const outcomes: string[] = [];
    await Promise.all(
      Array.from({ length: 120 }, async (_, i) => {
        const key = keys[i % keys.length] as CreateResult;
        try {
          const res = await h.signDigest(key, 1000 + i);
          const signer = await recoverAddress({ hash: digestOf(1000 + i) as `0x${string}`, signature: res.signature });
          outcomes.push(signer === key.address ? 'ok' : `wrong signer ${signer}`);
        } catch (err) {
          const e = err as KeystoreError;
          outcomes.push(e.retryable ? 'retryable' : `${e.code}: ${e.message}`);
        }
      }),
    );
    resizing = false;
    await resizer;
    expect(outcomes.filter((o) => o !== 'ok' && o !== 'retryable')).toEqual([]);
    expect(outcomes.filter((o) => o === 'ok').length).toBeGreaterThan(0);
    expect((await counters()).cacheSize).toBeLessThanOrEqual(BOUNDS.maxEntries);
  });

  it('after a restart the enclave starts from its image values (the parent sends its own again)', async () => {
    await call({ ttlMs: 5_000, maxEntries: 3 });
    await h.restartEnclave();
    expect(await counters()).toMatchObject({ cacheTtlMs: IMAGE.ttlMs, cacheMaxEntries: IMAGE.maxEntries, cacheSize: 0 });
  });
});
