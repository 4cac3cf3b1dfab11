/**
 * A map bounded in size that drops its least recently used entry first (Map keeps insertion order). With a
 * `weigh` function it is also bounded by the total weight of its entries (e.g. bytes): entries of very different
 * sizes then cannot make a count bound mean any amount of memory.
 */
export class Lru<K, V> {
  private readonly entries = new Map<K, { value: V; weight: number }>();
  private total = 0;

  constructor(
    private readonly max: number,
    private readonly bound?: { maxWeight: number; weigh: (key: K, value: V) => number },
  ) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError('an LRU holds at least one entry');
  }

  get size(): number {
    return this.entries.size;
  }

  /** The total weight of the entries (0 without `weigh`). */
  get weight(): number {
    return this.total;
  }

  /** The value, marked most recently used. */
  get(key: K): V | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.value;
  }

  /**
   * Adds (or replaces) an entry, dropping the least recently used ones until both bounds hold. An entry
   * heavier than the whole bound empties the map and is still kept: the map holds at least its newest entry.
   */
  set(key: K, value: V): void {
    this.delete(key);
    const weight = this.bound?.weigh(key, value) ?? 0;
    const maxWeight = this.bound?.maxWeight ?? Infinity;
    while (this.entries.size > 0 && (this.entries.size >= this.max || this.total + weight > maxWeight)) {
      this.delete(this.entries.keys().next().value as K);
    }
    this.entries.set(key, { value, weight });
    this.total += weight;
  }

  /** The values, least recently used first, without marking any of them used. */
  *values(): IterableIterator<V> {
    for (const e of this.entries.values()) yield e.value;
  }

  delete(key: K): boolean {
    const e = this.entries.get(key);
    if (e === undefined) return false;
    this.entries.delete(key);
    this.total -= e.weight;
    return true;
  }
}
