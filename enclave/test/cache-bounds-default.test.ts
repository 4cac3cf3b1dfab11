/**
 * Found by the attacker review of issue 24 (the parent as attacker): an image configuration written before cache.bounds existed (ttlMs/maxEntries only)
 * fixed the cache's lifetime and size: no parent could change them. docs/OPERATIONS.md and config.ts say such a
 * configuration "means what it meant". But an absent upper bound became max(default bound, configured value), so a
 * configuration that chose a SHORT lifetime or a SMALL cache (a small enclave, a cautious operator) let a
 * compromised parent raise both to the defaults' bounds with cache.configure: keys stay decrypted in memory up to an
 * hour instead of the minute the image was measured with, and the cache may grow to 250,000 keys (~450 MiB).
 */
import { EnclaveConfigSchema } from '../src/config';
import { KeyCache } from '../src/keys/cache';
import { configureCache } from '../src/keys/cache-settings';

const ADDRESS = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266' as const;

describe('a pre-bounds image configuration keeps its meaning', () => {
  // What an operator wrote before this change: keys cached for one minute, at most 10,000 of them.
  const older = { ttlMs: 60_000, maxEntries: 10_000 };

  it('its upper bounds are its own values, not the defaults', () => {
    const cache = EnclaveConfigSchema.shape.cache.parse(older);
    expect(cache.bounds.maxTtlMs).toBe(60_000); // before the fix (review of issue 24): 3,600,000
    expect(cache.bounds.maxEntries).toBe(10_000); // before the fix (review of issue 24): 250,000
  });

  it('a parent cannot keep a key decrypted 60x longer than the image said', () => {
    const cfg = EnclaveConfigSchema.shape.cache.parse(older);
    let now = 0;
    const cache = new KeyCache({ ttlMs: cfg.ttlMs, maxEntries: cfg.maxEntries, now: () => now });
    const secret = new Uint8Array(32).fill(7);
    cache.set('k', { secret, address: ADDRESS, blob: 'b', blobSha256: '0x00', projectId: 'default', subject: null });
    const bounds = { ...cfg.bounds, defaultTtlMs: cfg.ttlMs, defaultMaxEntries: cfg.maxEntries };
    // The compromised parent's cache.configure:
    let refused = false;
    try {
      configureCache(cache, bounds, { ttlMs: 3_600_000, maxEntries: 250_000 });
    } catch {
      refused = true;
    }
    now = 30 * 60_000; // half an hour after the unseal: the image said one minute
    expect({ refused, stillCached: cache.get('k', 'b') !== undefined, secretIntact: secret[0] === 7 }).toEqual({
      refused: true,
      stillCached: false,
      secretIntact: false,
    });
  });
});
