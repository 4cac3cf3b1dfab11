/**
 * Decrypted keys, bounded in time (TTL from unsealing) and in count (least recently used evicted first).
 * Every way out of the cache (expiry, eviction, forget, replacement, clear) zeroes the secret bytes.
 * An entry remembers the exact blob it was opened from: a different blob under the same key id is a miss,
 * so a tampered blob is always opened (and refused) rather than answered from the cache. It also keeps what
 * the blob was checked against when it was opened (its SHA-256, project and subject), so a warm sign checks
 * the key's record against these without hashing the blob again.
 */
export interface CachedKey {
  secret: Uint8Array;
  address: `0x${string}`;
  blob: string;
  /** 0x-hex SHA-256 of the blob's bytes, as key records name it. */
  blobSha256: string;
  projectId: string;
  subject: string | null;
  expiresAt: number;
}

export interface CacheStats {
  hits: number;
  misses: number;
  evictions: number;
  expirations: number;
  size: number;
}

export class KeyCache {
  private readonly entries = new Map<string, CachedKey>();
  private readonly counters = { hits: 0, misses: 0, evictions: 0, expirations: 0 };
  private sweeper: NodeJS.Timeout | null = null;

  constructor(private readonly options: { ttlMs: number; maxEntries: number; now?: () => number }) {}

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  get stats(): CacheStats {
    return { ...this.counters, size: this.entries.size };
  }

  get(keyId: string, blob: string): CachedKey | undefined {
    const e = this.entries.get(keyId);
    if (!e || e.blob !== blob) {
      this.counters.misses += 1;
      return undefined;
    }
    if (e.expiresAt <= this.now()) {
      this.drop(keyId, e);
      this.counters.expirations += 1;
      this.counters.misses += 1;
      return undefined;
    }
    // Map order is insertion order: re-inserting marks it most recently used.
    this.entries.delete(keyId);
    this.entries.set(keyId, e);
    this.counters.hits += 1;
    return e;
  }

  set(keyId: string, entry: Omit<CachedKey, 'expiresAt'>): CachedKey {
    const old = this.entries.get(keyId);
    if (old) this.drop(keyId, old);
    while (this.entries.size >= this.options.maxEntries) {
      const [oldestId, oldest] = this.entries.entries().next().value as [string, CachedKey];
      this.drop(oldestId, oldest);
      this.counters.evictions += 1;
    }
    const stored = { ...entry, expiresAt: this.now() + this.options.ttlMs };
    this.entries.set(keyId, stored);
    return stored;
  }

  /**
   * Whether `entry` (from `get`) is still this key's live entry, without counting a hit or a miss: a caller that
   * awaited something since `get` checks this before using the secret, which leaving the cache zeroes.
   */
  holds(keyId: string, entry: CachedKey): boolean {
    return this.entries.get(keyId) === entry && entry.expiresAt > this.now();
  }

  forget(keyId: string): boolean {
    const e = this.entries.get(keyId);
    if (!e) return false;
    this.drop(keyId, e);
    return true;
  }

  /** Drops (and zeroes) every key of a project: its keys sign nothing while it is disabled. */
  forgetProject(projectId: string): number {
    let n = 0;
    for (const [id, e] of this.entries) {
      if (e.projectId === projectId) {
        this.drop(id, e);
        n += 1;
      }
    }
    return n;
  }

  /** Zeroes and removes expired entries; also runs on a timer so idle keys do not linger. */
  sweep(): number {
    const now = this.now();
    let n = 0;
    for (const [id, e] of this.entries) {
      if (e.expiresAt <= now) {
        this.drop(id, e);
        this.counters.expirations += 1;
        n += 1;
      }
    }
    return n;
  }

  startSweeper(intervalMs = Math.min(this.options.ttlMs, 30_000)): void {
    this.sweeper ??= setInterval(() => this.sweep(), intervalMs);
    this.sweeper.unref();
  }

  clear(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const [id, e] of this.entries) this.drop(id, e);
  }

  private drop(keyId: string, e: CachedKey): void {
    e.secret.fill(0);
    this.entries.delete(keyId);
  }
}
