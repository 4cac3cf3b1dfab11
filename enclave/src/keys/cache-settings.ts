/**
 * `cache.configure`: the parent sets the key cache's size and lifetime at run time, within the bounds the image's
 * configuration fixes (cache.bounds, measured into PCR0), so changing them needs no new image
 * (docs/OPERATIONS.md, "Sizing the key cache").
 *
 * The parent is not trusted, and this gives it nothing but a way to deny service: the upper bounds cap the
 * memory the cache takes (maxEntries) and how long a decrypted key stays in memory after its unsealing (maxTtlMs)
 * whatever it sends; a small cache or a short TTL only costs more KMS Decrypts (cold signs), which the parent,
 * holding the KMS proxy, could refuse anyway. A value outside the bounds is refused whole (nothing changes),
 * naming the bound: the bounds are in the image's configuration, no secret.
 */
import { KeystoreError } from '@nks/shared/errors';
import type { CacheSettings } from '@nks/shared/enclave-api';
import type { KeyCache } from './cache';

/** The image's bounds, and its own values (used for a field the parent leaves out). */
export interface CacheBounds {
  minTtlMs: number;
  maxTtlMs: number;
  minEntries: number;
  maxEntries: number;
  defaultTtlMs: number;
  defaultMaxEntries: number;
}

function within(name: string, value: number, min: number, max: number, minName: string, maxName: string): void {
  if (value < min) {
    throw new KeystoreError('INVALID_PARAMS', `cache.${name} ${value} is below this image's bound cache.bounds.${minName} (${min})`);
  }
  if (value > max) {
    throw new KeystoreError('INVALID_PARAMS', `cache.${name} ${value} is above this image's bound cache.bounds.${maxName} (${max})`);
  }
}

/**
 * Checks `wanted` against the image's bounds and applies it (an absent field: the image's value), answering the
 * settings in force. Without bounds (tests of the methods alone), the cache's current values are the only ones.
 */
export function configureCache(
  cache: KeyCache,
  bounds: CacheBounds | undefined,
  wanted: { ttlMs?: number | undefined; maxEntries?: number | undefined },
): CacheSettings {
  const now = cache.limits;
  const b = bounds ?? {
    minTtlMs: now.ttlMs,
    maxTtlMs: now.ttlMs,
    minEntries: now.maxEntries,
    maxEntries: now.maxEntries,
    defaultTtlMs: now.ttlMs,
    defaultMaxEntries: now.maxEntries,
  };
  const ttlMs = wanted.ttlMs ?? b.defaultTtlMs;
  const maxEntries = wanted.maxEntries ?? b.defaultMaxEntries;
  within('ttlMs', ttlMs, b.minTtlMs, b.maxTtlMs, 'minTtlMs', 'maxTtlMs');
  within('maxEntries', maxEntries, b.minEntries, b.maxEntries, 'minEntries', 'maxEntries');
  const applied = cache.resize({ ttlMs, maxEntries });
  return {
    ...applied,
    bounds: { minTtlMs: b.minTtlMs, maxTtlMs: b.maxTtlMs, minEntries: b.minEntries, maxEntries: b.maxEntries },
  };
}
