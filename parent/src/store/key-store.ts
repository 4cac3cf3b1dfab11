/**
 * The parent's store (docs/STORAGE.md): one of the engines (SQLite in a worker thread, or PostgreSQL shared by
 * several instances) behind a cache of keys and projects by id, so a warm sign reads neither database.
 *
 * Coherence: no instance acts on a cached row another instance changed more than `staleAfterMs` (1 s) ago.
 * The SQLite engine has one writer, this process, which forgets what it changes. On PostgreSQL every change
 * is announced to every instance (LISTEN/NOTIFY) and forgotten on arrival; while the notification connection
 * is down or silent (no heartbeat answered within `staleAfterMs`: changes may be missed) an entry is used only
 * within `staleAfterMs` of being read, and everything cached is dropped when it is back. A read that was under
 * way when its row's change arrived is not cached.
 *
 * Writes that fail for the storage's sake (STORAGE_UNAVAILABLE: a full or failing disk, a stall past the
 * deadline) make the store not ready (`ping` false, so /readyz says `database: false`) until a write succeeds
 * again: a caller's, or the probe write `ping` makes while the store is so marked (a load balancer that stopped
 * sending traffic must still see the instance come back). A read-only ping cannot tell: reads keep working on
 * a full disk. The probe writes no row (engine `probeWrite`: no table, no migration), and runs only while
 * marked, so a healthy store pays nothing for it.
 */
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import type { KeyRecord, ProjectRecord, SignedRecord } from '@nks/shared/records';
import type {
  IdempotencyClaim,
  KeyCounts,
  ListOptions,
  NewKey,
  NewTlsKey,
  StoreChange,
  StoreEngine,
  StoredKey,
  StoredProject,
  StoredTlsKey,
} from './types';

export interface KeyStoreOptions {
  /** Keys (and, a tenth as many, projects) kept in memory, least recently used out. */
  cacheSize?: number;
  /** How old a cached row may be while change notifications may be missed. */
  staleAfterMs?: number;
  logger?: Logger;
}

interface Entry<T> {
  value: T;
  at: number;
}

/** A bounded map of rows by id, with a generation per id that a change bumps, so a read racing it is not kept. */
class RowCache<T> {
  private readonly rows = new Map<string, Entry<T>>();
  private readonly changed = new Map<string, number>();
  private epoch = 0;

  constructor(private readonly size: number) {}

  get(id: string, freshAfter: number): T | undefined {
    const e = this.rows.get(id);
    if (!e) return undefined;
    if (e.at < freshAfter) {
      this.rows.delete(id);
      return undefined;
    }
    this.rows.delete(id);
    this.rows.set(id, e);
    return e.value;
  }

  /** What a read must present to `put` its result: unchanged if no change of `id` (or drop) came meanwhile. */
  ticket(id: string): string {
    return `${this.epoch}:${this.changed.get(id) ?? 0}`;
  }

  put(id: string, value: T, ticket: string, at: number): void {
    if (ticket !== this.ticket(id)) return;
    this.rows.delete(id);
    if (this.rows.size >= this.size) this.rows.delete(this.rows.keys().next().value as string);
    this.rows.set(id, { value, at });
  }

  forget(id: string): void {
    this.rows.delete(id);
    // Only ids with a read in flight need their generation; the map is cleared with the rows on a drop.
    this.changed.set(id, (this.changed.get(id) ?? 0) + 1);
    if (this.changed.size > this.size * 4) {
      this.changed.clear();
      this.epoch++;
    }
  }

  drop(): void {
    this.rows.clear();
    this.changed.clear();
    this.epoch++;
  }
}

export class KeyStore {
  private readonly keys: RowCache<StoredKey>;
  private readonly projects: RowCache<StoredProject>;
  private readonly staleAfterMs: number;
  /** Whether every change committed elsewhere reaches this process (always, for an engine no one else writes). */
  private live: boolean;
  /** The last write's failure, if it was the storage's (STORAGE_UNAVAILABLE); cleared by a write that succeeds. */
  private writeFailure: KeystoreError | undefined;
  private readonly logger: Logger | undefined;

  constructor(
    readonly engine: StoreEngine,
    options: KeyStoreOptions = {},
  ) {
    const size = options.cacheSize ?? 10_000;
    this.keys = new RowCache(size);
    this.projects = new RowCache(Math.max(100, Math.floor(size / 10)));
    this.staleAfterMs = options.staleAfterMs ?? 1000;
    this.live = !engine.shared;
    this.logger = options.logger;
    engine.subscribe?.(
      (change) => this.forget(change),
      (live) => {
        if (live) {
          this.keys.drop();
          this.projects.drop();
        }
        if (live !== this.live)
          options.logger?.[live ? 'info' : 'warn'](
            live
              ? 'store change notifications are back: cache dropped'
              : `store change notifications lost: cached rows live ${this.staleAfterMs} ms`,
          );
        this.live = live;
      },
    );
  }

  /** Whether cached rows are kept until changed (false while notifications may be missed). */
  get coherent(): boolean {
    return this.live;
  }

  private forget(change: StoreChange): void {
    if (change.kind === 'tls') return this.tlsListeners.forEach((l) => l(change.id));
    (change.kind === 'key' ? this.keys : this.projects).forget(change.id);
  }

  private readonly tlsListeners: Array<(publicKey: string) => void> = [];

  /** Calls `listener` when another instance makes a TLS key of the wallet routes current (a shared engine only). */
  onTlsChange(listener: (publicKey: string) => void): void {
    this.tlsListeners.push(listener);
  }

  /**
   * Cached rows read before this are not used. While changes are delivered up to within `staleAfterMs` of now
   * (a heartbeat on the notification connection proves how far: `deliveredThrough`), every cached row is as
   * fresh as that; otherwise only rows read within `staleAfterMs` are.
   */
  private freshAfter(): number {
    const now = Date.now();
    const through = this.engine.deliveredThrough?.() ?? now;
    return this.live && now - through <= this.staleAfterMs ? -Infinity : now - this.staleAfterMs;
  }

  private async cached<T>(cache: RowCache<T>, id: string, read: () => Promise<T | undefined>): Promise<T | undefined> {
    const hit = cache.get(id, this.freshAfter());
    if (hit) return hit;
    const ticket = cache.ticket(id);
    const at = Date.now();
    const value = await read();
    if (value) cache.put(id, value, ticket, at);
    return value;
  }

  get(keyId: string): Promise<StoredKey | undefined> {
    return this.cached(this.keys, keyId, () => this.engine.get(keyId));
  }

  /** A key as the database has it now (what a change is decided on), the cache brought up to date with it. */
  getFresh(keyId: string): Promise<StoredKey | undefined> {
    this.keys.forget(keyId);
    return this.get(keyId);
  }

  getProject(projectId: string): Promise<StoredProject | undefined> {
    return this.cached(this.projects, projectId, () => this.engine.getProject(projectId));
  }

  // Reads that are not by id go to the database (they are not on the warm signing path).
  getByExternalId = (externalId: string) => this.engine.getByExternalId(externalId);
  activeKeyFor = (projectId: string, subject: string) => this.engine.activeKeyFor(projectId, subject);
  pendingKeyFor = (projectId: string, subject: string) => this.engine.pendingKeyFor(projectId, subject);
  history = (keyId: string) => this.engine.history(keyId);
  list = (limit: number, cursor?: string, options?: ListOptions) => this.engine.list(limit, cursor, options);
  keysWithoutRecord = (afterSeq: number, limit: number) => this.engine.keysWithoutRecord(afterSeq, limit);
  keysPendingDisable = () => this.engine.keysPendingDisable();
  getProjectByKey = (projectKey: string) => this.engine.getProjectByKey(projectKey);
  listProjects = (limit: number, cursor?: string) => this.engine.listProjects(limit, cursor);
  activeJwtProjects = () => this.engine.activeJwtProjects();
  tlsKey = (publicKey: string) => this.engine.tlsKey(publicKey);
  currentTlsKey = () => this.engine.currentTlsKey();
  pendingTlsKeys = (limit: number) => this.engine.pendingTlsKeys(limit);
  counts = (): Promise<KeyCounts> => this.engine.counts();
  status = () => this.engine.status();

  /** Whether writes are failing for the storage's sake now (a full or failing disk): why, or undefined. */
  get writesFailing(): string | undefined {
    return this.writeFailure?.message;
  }

  /**
   * Readiness: the engine answers within `timeoutMs` and, if the last write failed for the storage's sake, a
   * probe write succeeds now (within what is left of `timeoutMs`).
   */
  async ping(timeoutMs: number): Promise<boolean> {
    const start = Date.now();
    if (!(await this.engine.ping(timeoutMs))) return false;
    if (!this.writeFailure) return true;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>(
      (resolve) => (timer = setTimeout(() => resolve(false), Math.max(1, timeoutMs - (Date.now() - start)))),
    );
    const probe = this.tracked(() => this.engine.probeWrite()).then(
      () => true,
      () => false,
    );
    try {
      return await Promise.race([probe, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs a write, marking the store not ready if it fails as STORAGE_UNAVAILABLE and ready once one succeeds. */
  private async tracked<T>(write: () => Promise<T>): Promise<T> {
    try {
      const value = await write();
      if (this.writeFailure) {
        this.logger?.info('database writes succeed again: ready');
        this.writeFailure = undefined;
      }
      return value;
    } catch (err) {
      if (err instanceof KeystoreError && err.code === 'STORAGE_UNAVAILABLE') {
        if (!this.writeFailure) this.logger?.warn({ error: err.message }, 'database write failed: not ready until one succeeds');
        this.writeFailure = err;
      }
      throw err;
    }
  }

  // Writes forget what they change here before they start and after they end (other instances hear it).
  insert = (key: NewKey, idempotency?: IdempotencyClaim) => this.tracked(() => this.engine.insert(key, idempotency));
  idempotency = (scope: string, key: string, now: number) => this.engine.idempotency(scope, key, now);

  setLabels(keyId: string, labels: Record<string, string>): Promise<StoredKey | undefined> {
    return this.writing('key', [keyId], () => this.engine.setLabels(keyId, labels));
  }
  insertSuccessor = (key: NewKey) => this.tracked(() => this.engine.insertSuccessor(key));
  insertTlsKey = (key: NewTlsKey): Promise<StoredTlsKey> => this.tracked(() => this.engine.insertTlsKey(key));
  setCurrentTlsKey = (publicKey: string, chain: string, installedAt: number) =>
    this.tracked(() => this.engine.setCurrentTlsKey(publicKey, chain, installedAt));

  async updateRecord(keyId: string, signed: SignedRecord, record: KeyRecord): Promise<StoredKey> {
    if (record.keyId !== keyId) throw new Error('updateRecord: the record is for another key');
    return (await this.updateRecords([{ signed, record }]))[0] as StoredKey;
  }

  updateRecords(updates: ReadonlyArray<{ signed: SignedRecord; record: KeyRecord }>): Promise<StoredKey[]> {
    const ids = updates.map((u) => u.record.keyId);
    return this.writing('key', ids, () => this.engine.updateRecords(updates));
  }

  setLegacyDisabled(keyId: string, disabled: boolean): Promise<StoredKey | undefined> {
    return this.writing('key', [keyId], () => this.engine.setLegacyDisabled(keyId, disabled));
  }

  migrateKey(keyId: string, blob: string, signed: SignedRecord, record: KeyRecord): Promise<boolean> {
    return this.writing('key', [keyId], () => this.engine.migrateKey(keyId, blob, signed, record));
  }

  seedProject(signed: SignedRecord, record: ProjectRecord, name?: string): Promise<StoredProject> {
    return this.writing('project', [record.projectId], () => this.engine.seedProject(signed, record, name));
  }

  insertProject(signed: SignedRecord, record: ProjectRecord, name: string): Promise<StoredProject> {
    return this.writing('project', [record.projectId], () => this.engine.insertProject(signed, record, name));
  }

  updateProjectRecord(projectId: string, signed: SignedRecord, record: ProjectRecord): Promise<StoredProject> {
    return this.writing('project', [projectId], () => this.engine.updateProjectRecord(projectId, signed, record));
  }

  private async writing<T>(kind: StoreChange['kind'], ids: string[], write: () => Promise<T>): Promise<T> {
    const forget = () => ids.forEach((id) => this.forget({ kind, id }));
    forget();
    try {
      return await this.tracked(write);
    } finally {
      forget();
    }
  }

  close(): Promise<void> {
    return this.engine.close();
  }
}
