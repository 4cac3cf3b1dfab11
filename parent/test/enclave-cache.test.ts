/**
 * The enclave's key cache settings from the parent's configuration (config.enclave.cache, parent/src/enclave-cache.ts):
 * checked at start; sent to the enclave on every connection's start-up, so they reach it and reach it again after
 * it restarts (its image values otherwise); a value beyond the image's bounds leaves the enclave unused (not
 * ready), with an error naming the bound: real parent and enclave processes over simulated vsock. The handshake
 * step alone (what it sends, an older enclave, a refusal's message) is tested with a scripted call.
 */
import fs from 'node:fs';
import { hashToken } from '../src/api/auth';
import { parseParentConfig } from '../src/config';
import { EnclaveCacheSettings } from '../src/enclave-cache';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import { tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

const base = {
  api: { listen: { host: '127.0.0.1', port: 0 } },
  tokens: [{ name: 'caller', sha256: hashToken('nks_test_caller'), scopes: ['keys:sign'] }],
  database: { path: '/nonexistent/keys.db' },
  kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
};

describe('parent configuration: enclave.cache', () => {
  it('takes ttlMs and maxEntries, each optional (absent: the image values)', () => {
    expect(parseParentConfig(base).enclave.cache).toEqual({});
    expect(parseParentConfig({ ...base, enclave: { cache: { ttlMs: 600_000, maxEntries: 50_000 } } }).enclave.cache).toEqual({
      ttlMs: 600_000,
      maxEntries: 50_000,
    });
  });

  it.each([
    ['ttlMs below 1 s', { ttlMs: 999 }, /config\.enclave\.cache\.ttlMs: .*>=1000/],
    ['ttlMs above a day', { ttlMs: 24 * 3600_000 + 1 }, /config\.enclave\.cache\.ttlMs: .*<=86400000/],
    ['ttlMs not an integer', { ttlMs: 1500.5 }, /config\.enclave\.cache\.ttlMs: .*expected int/],
    ['ttlMs a string', { ttlMs: '15m' }, /config\.enclave\.cache\.ttlMs: .*number/],
    ['maxEntries 0', { maxEntries: 0 }, /config\.enclave\.cache\.maxEntries: .*>=1/],
    ['maxEntries above a million', { maxEntries: 1_000_001 }, /config\.enclave\.cache\.maxEntries: .*<=1000000/],
    ['an unknown field', { size: 5 }, /config\.enclave\.cache: .*size/],
  ])('refuses %s, naming the setting', (_name, cache, message) => {
    expect(() => parseParentConfig({ ...base, enclave: { cache } })).toThrow(message);
  });
});

describe('the handshake step (EnclaveCacheSettings.configure)', () => {
  const logger = () => {
    const lines: string[] = [];
    const log = { info: (_o: unknown, m: string) => lines.push(`info ${m}`), warn: (m: string) => lines.push(`warn ${m}`) };
    return { lines, log: log as unknown as Logger };
  };
  const FEATURES = ['enclave.hello', 'cache.configure'];

  it('sends the wanted fields only (absent: the image values) and keeps the answer', async () => {
    const { lines, log } = logger();
    const sent: unknown[] = [];
    const answer = {
      ttlMs: 60_000,
      maxEntries: 100_000,
      bounds: { minTtlMs: 1_000, maxTtlMs: 3_600_000, minEntries: 1, maxEntries: 250_000 },
    };
    const settings = new EnclaveCacheSettings({ ttlMs: 60_000 }, log);
    const call = (async (method: string, params: unknown) => {
      sent.push([method, params]);
      return answer;
    }) as Parameters<EnclaveCacheSettings['configure']>[0];
    await settings.configure(call, FEATURES);
    await settings.configure(call, FEATURES); // a second connection, or a restarted enclave: sent again, logged once
    expect(sent).toEqual([
      ['cache.configure', { ttlMs: 60_000 }],
      ['cache.configure', { ttlMs: 60_000 }],
    ]);
    expect(settings.effective).toEqual(answer);
    expect(lines).toEqual(['info enclave key cache settings in force']);
  });

  it('an enclave of an earlier release (no cache.configure): nothing sent, one warning when settings are wanted', async () => {
    const { lines, log } = logger();
    const call = (() => Promise.reject(new Error('not called'))) as Parameters<EnclaveCacheSettings['configure']>[0];
    await new EnclaveCacheSettings({}, log).configure(call, ['enclave.hello']);
    expect(lines).toEqual([]);
    const wanting = new EnclaveCacheSettings({ maxEntries: 5 }, log);
    await wanting.configure(call, ['enclave.hello']);
    await wanting.configure(call, ['enclave.hello']);
    expect(lines).toEqual([
      'warn the enclave image does not take cache settings (an earlier release): config.enclave.cache is not applied',
    ]);
  });

  it("a refusal says it is the parent's setting and what to do; other errors pass unchanged", async () => {
    const { log } = logger();
    const settings = new EnclaveCacheSettings({ maxEntries: 17 }, log);
    const refusing = (() =>
      Promise.reject(
        new KeystoreError('INVALID_PARAMS', "cache.maxEntries 17 is above this image's bound cache.bounds.maxEntries (16)"),
      )) as Parameters<EnclaveCacheSettings['configure']>[0];
    await expect(settings.configure(refusing, FEATURES)).rejects.toThrow(
      "the enclave refused config.enclave.cache: cache.maxEntries 17 is above this image's bound cache.bounds.maxEntries (16); set it within the image's bounds, or build an image with other cache.bounds",
    );
    const down = (() => Promise.reject(new KeystoreError('UNAVAILABLE', 'gone'))) as Parameters<EnclaveCacheSettings['configure']>[0];
    await expect(settings.configure(down, FEATURES)).rejects.toMatchObject({ code: 'UNAVAILABLE', message: 'gone' });
    expect(settings.effective).toBeUndefined();
  });
});

describe('the parent sets the enclave key cache (real parent and enclave)', () => {
  const BOUNDS = { minTtlMs: 1_000, maxTtlMs: 120_000, minEntries: 2, maxEntries: 16 };
  let s: Stack;
  const counter = async (name: string): Promise<number | undefined> => {
    const m = new RegExp(`^nks_enclave_counter\\{counter="${name}"\\} (\\d+)$`, 'm').exec(await s.metrics());
    return m ? Number(m[1]) : undefined;
  };
  /** Polls the metrics until `cond` holds (a restarted enclave is reconnected in the background). */
  const until = async (cond: () => Promise<boolean>, what: string) => {
    const end = Date.now() + 15_000;
    while (!(await cond())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const setParentCache = (cache: Record<string, number>) => {
    const config = JSON.parse(fs.readFileSync(s.parentConfigFile, 'utf8')) as { enclave: Record<string, unknown> };
    config.enclave.cache = cache;
    fs.writeFileSync(s.parentConfigFile, JSON.stringify(config));
  };

  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-pcache-'), {
      enclave: { cache: { ttlMs: 60_000, maxEntries: 8, bounds: BOUNDS } },
      parentEnclave: { cache: { ttlMs: 30_000, maxEntries: 5 } },
    });
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it("reaches the enclave at start: its health and the parent's metrics show the parent's values", async () => {
    await until(async () => (await counter('cacheMaxEntries')) === 5, 'the parent cache settings');
    expect([await counter('cacheTtlMs'), await counter('cacheMaxEntries')]).toEqual([30_000, 5]);
    expect(s.parentLogs()).toMatch(/enclave key cache settings in force/);
  });

  it('reaches it again after the enclave restarts (which starts from its image values)', async () => {
    await s.stopEnclave();
    await s.startEnclave();
    await waitReady(s);
    await until(async () => (await counter('cacheMaxEntries')) !== undefined, 'the enclave health');
    expect([await counter('cacheTtlMs'), await counter('cacheMaxEntries')]).toEqual([30_000, 5]);
  }, 60_000);

  it('beyond the image bound: the enclave is not used, and the error names the bound', async () => {
    setParentCache({ maxEntries: 17 });
    await s.restartParent();
    await waitFor(() => /cache\.maxEntries 17 is above this image's bound cache\.bounds\.maxEntries \(16\)/.test(s.parentLogs()), 15_000);
    expect(s.parentLogs()).toMatch(/enclave not used: the enclave refused config\.enclave\.cache: cache\.maxEntries 17 is above/);
    const ready = await fetch(`${s.metricsUrl}/readyz`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { checks: { enclave: boolean } }).checks.enclave).toBe(false);
    // Within the bounds again (and absent fields: the image values): used again.
    setParentCache({ ttlMs: 120_000 });
    await s.restartParent();
    await waitReady(s);
    await until(async () => (await counter('cacheTtlMs')) === 120_000, 'the new ttl');
    expect(await counter('cacheMaxEntries')).toBe(8);
  }, 90_000);
});
