/**
 * Decrypted keys, bounded in time (TTL from unsealing) and in count (least recently used evicted first).
 * Every way out of the cache (expiry, eviction, forget, replacement, clear, a resize) zeroes the secret bytes.
 * Both bounds may change while keys are cached (`resize`, from the parent's `cache.configure` within the
 * image's bounds: docs/OPERATIONS.md, "Sizing the key cache"): a smaller count evicts at once, and the TTL is
 * always counted from each entry's unsealing, so a shorter one applies to the keys already cached.
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
  /** When the key was unsealed (the cache's clock): it expires `ttlMs` after this, whatever `ttlMs` is now. */
  unsealedAt: number;
}

/** The cache's two bounds: how long a key stays after its unsealing, and how many keys at most. */
export interface CacheLimits {
  ttlMs: number;
  maxEntries: number;
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
  private ttlMs: number;
  private maxEntries: number;

  constructor(private readonly options: CacheLimits & { now?: () => number }) {
    this.ttlMs = options.ttlMs;
    this.maxEntries = options.maxEntries;
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /** The bounds in force now. */
  get limits(): CacheLimits {
    return { ttlMs: this.ttlMs, maxEntries: this.maxEntries };
  }

  /**
   * New bounds, in force at once: entries older than the new TTL expire now and, beyond the new count, the least
   * recently used are evicted now (each zeroed); the sweeper runs at least as often as the new TTL. The caller
   * checks the values against the image's bounds (keys/cache-settings.ts); here they need only be positive.
   */
  resize(limits: CacheLimits): CacheLimits {
    const { ttlMs, maxEntries } = limits;
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || !Number.isSafeInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(`invalid cache limits: ttlMs ${String(ttlMs)}, maxEntries ${String(maxEntries)}`);
    }
    this.ttlMs = ttlMs;
    this.maxEntries = maxEntries;
    this.sweep();
    this.evictBeyond(maxEntries);
    if (this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = null;
      this.startSweeper();
    }
    return this.limits;
  }

  private expiresAt(e: CachedKey): number {
    return e.unsealedAt + this.ttlMs;
  }

  /** Evicts (and zeroes) the least recently used entries until at most `n` remain. */
  private evictBeyond(n: number): void {
    while (this.entries.size > n) {
      const [oldestId, oldest] = this.entries.entries().next().value as [string, CachedKey];
      this.drop(oldestId, oldest);
      this.counters.evictions += 1;
    }
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
    if (this.expiresAt(e) <= this.now()) {
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

  set(keyId: string, entry: Omit<CachedKey, 'unsealedAt'>): CachedKey {
    const old = this.entries.get(keyId);
    if (old) this.drop(keyId, old);
    this.evictBeyond(this.maxEntries - 1);
    const stored = { ...entry, unsealedAt: this.now() };
    this.entries.set(keyId, stored);
    return stored;
  }

  /**
   * Whether `entry` (from `get`) is still this key's live entry, without counting a hit or a miss: a caller that
   * awaited something since `get` checks this before using the secret, which leaving the cache zeroes.
   */
  holds(keyId: string, entry: CachedKey): boolean {
    return this.entries.get(keyId) === entry && this.expiresAt(entry) > this.now();
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
      if (this.expiresAt(e) <= now) {
        this.drop(id, e);
        this.counters.expirations += 1;
        n += 1;
      }
    }
    return n;
  }

  /** Sweeps every TTL, at most every 30 s (a resize restarts it with the new TTL). */
  startSweeper(): void {
    this.sweeper ??= setInterval(() => this.sweep(), Math.min(this.ttlMs, 30_000));
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
