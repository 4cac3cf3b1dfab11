/**
 * The SQLite engine: the embedded default for one instance (docs/STORAGE.md). Its statements run in a worker
 * thread (sqlite-worker.ts), one at a time in order, so a write stuck in fsync blocks that thread and not the
 * parent's event loop: warm signs (served from the cache in key-store.ts), health and metrics keep answering,
 * and a call that gets no answer within its deadline fails as STORAGE_UNAVAILABLE (503, retryable).
 *
 * A call still queued when its caller stopped waiting is not run (the worker checks its deadline first); one
 * already running when its deadline passed may still complete (a write then commits unanswered): the callers'
 * writes are idempotent (creates by external id) or compare-and-set (records by seq), so a retry finds what was
 * written. Calls sent to the worker and not answered yet, timed out or not, are at most `maxQueue`: beyond it a
 * call is refused at once rather than queued behind a stall.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { KeystoreError } from '@nks/shared/errors';
import type { KeyRecord, ProjectRecord, SignedRecord } from '@nks/shared/records';
import { SCHEMA_VERSION } from './migrations';
import type { WorkerReply, WorkerRequest } from './sqlite-protocol';
import type {
  IdempotencyClaim,
  IdempotencyEntry,
  InsertResult,
  KeyCounts,
  NewKey,
  NewTlsKey,
  ListOptions,
  Page,
  ProjectPage,
  StoreEngine,
  StoreStatus,
  StoredKey,
  StoredProject,
  StoredTlsKey,
} from './types';

export interface SqliteEngineOptions {
  /** The database file (`:memory:` for a throwaway one). */
  path: string;
  /** Deadline of one call, queueing included. */
  timeoutMs?: number;
  /** Calls waiting for the worker at most; more are refused with STORAGE_UNAVAILABLE. */
  maxQueue?: number;
}

/** The worker's bundle: beside this bundle (dist/), or, when this runs from source (tests), the built one. */
function workerFile(): string {
  const candidates = [path.join(__dirname, 'store-worker.js'), path.resolve(__dirname, '../../../dist/store-worker.js')];
  const found = candidates.find((f) => fs.existsSync(f));
  if (!found) throw new Error(`the SQLite worker bundle is missing (looked for ${candidates.join(', ')}): run npm run build`);
  return found;
}

const unavailable = (why: string) => new KeystoreError('STORAGE_UNAVAILABLE', `the database ${why}: retry later`);

export class SqliteEngine implements StoreEngine {
  readonly kind = 'sqlite' as const;
  readonly shared = false;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private exited: Error | undefined;
  /** Calls posted to the worker and not answered yet, those whose callers gave up included. */
  private inWorker = 0;

  private constructor(
    private readonly worker: Worker,
    private readonly options: Required<SqliteEngineOptions>,
  ) {
    worker.on('message', (reply: WorkerReply) => this.settle(reply));
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', (code) => this.fail(new Error(`the database worker exited (code ${code})`)));
  }

  /** Opens (and migrates) the database in a new worker; throws what the open threw. */
  static async open(options: SqliteEngineOptions): Promise<SqliteEngine> {
    const opts = { timeoutMs: 5000, maxQueue: 1000, ...options };
    const worker = new Worker(workerFile(), { workerData: { file: opts.path } });
    await new Promise<void>((resolve, reject) => {
      const onExit = (code: number) => reject(new Error(`the database worker exited while opening (code ${code})`));
      worker.once('error', reject);
      worker.once('exit', onExit);
      worker.once('message', (reply: WorkerReply) => {
        worker.off('error', reject);
        worker.off('exit', onExit);
        if (reply.error) {
          void worker.terminate();
          reject(new Error(reply.error.message));
        } else resolve();
      });
    });
    return new SqliteEngine(worker, opts);
  }

  private settle(reply: WorkerReply): void {
    if (reply.id !== 0) this.inWorker--;
    const p = this.pending.get(reply.id);
    if (!p) return; // answered after its deadline: the caller was told STORAGE_UNAVAILABLE already
    this.pending.delete(reply.id);
    clearTimeout(p.timer);
    if (!reply.error) return p.resolve(reply.value);
    const { code, message, details } = reply.error;
    p.reject(code === 'INTERNAL' ? new Error(message) : new KeystoreError(code, message, details ? { details } : undefined));
  }

  private fail(err: Error): void {
    this.exited ??= err;
    this.inWorker = 0;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(unavailable('worker stopped'));
      this.pending.delete(id);
    }
  }

  private call<T>(method: string, ...args: unknown[]): Promise<T> {
    if (this.exited) return Promise.reject(unavailable('is closed'));
    if (this.inWorker >= this.options.maxQueue) return Promise.reject(unavailable('is not keeping up'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(unavailable(`did not answer within ${this.options.timeoutMs} ms`));
      }, this.options.timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.inWorker++;
      this.worker.postMessage({ id, method, args, deadline: Date.now() + this.options.timeoutMs } satisfies WorkerRequest);
    });
  }

  /** One writer, this process: the registries' own per-key queues already order its changes. */
  withLocks<T>(_names: readonly string[], fn: () => Promise<T>): Promise<T> {
    return fn();
  }

  async status(): Promise<StoreStatus> {
    return {
      engine: 'sqlite',
      location: this.options.path,
      schemaVersion: await this.call<number>('version'),
      latestVersion: SCHEMA_VERSION,
    };
  }

  async ping(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([this.call<number>('version').then(() => true), late]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  probeWrite = () => this.call<void>('probeWrite');
  insert = (key: NewKey, idempotency?: IdempotencyClaim) => this.call<InsertResult>('insert', key, idempotency);
  idempotency = (scope: string, key: string, now: number) => this.call<IdempotencyEntry | undefined>('idempotency', scope, key, now);
  setLabels = (keyId: string, labels: Record<string, string>) => this.call<StoredKey | undefined>('setLabels', keyId, labels);
  get = (keyId: string) => this.call<StoredKey | undefined>('get', keyId);
  getByExternalId = (externalId: string) => this.call<StoredKey | undefined>('getByExternalId', externalId);
  activeKeyFor = (projectId: string, subject: string) => this.call<StoredKey | undefined>('activeKeyFor', projectId, subject);
  pendingKeyFor = (projectId: string, subject: string) => this.call<StoredKey | undefined>('pendingKeyFor', projectId, subject);
  history = (keyId: string) => this.call<StoredKey[]>('history', keyId);
  insertSuccessor = (key: NewKey) => this.call<{ record: StoredKey; created: boolean }>('insertSuccessor', key);
  list = (limit: number, cursor?: string, options?: ListOptions) => this.call<Page>('list', limit, cursor, options);
  updateRecords = (updates: ReadonlyArray<{ signed: SignedRecord; record: KeyRecord }>) => this.call<StoredKey[]>('updateRecords', updates);
  setLegacyDisabled = (keyId: string, disabled: boolean) => this.call<StoredKey | undefined>('setLegacyDisabled', keyId, disabled);
  keysWithoutRecord = (afterSeq: number, limit: number) =>
    this.call<Array<StoredKey & { rowSeq: number }>>('keysWithoutRecord', afterSeq, limit);
  migrateKey = (keyId: string, blob: string, signed: SignedRecord, record: KeyRecord) =>
    this.call<boolean>('migrateKey', keyId, blob, signed, record);
  keysPendingDisable = () => this.call<string[]>('keysPendingDisable');
  getProject = (projectId: string) => this.call<StoredProject | undefined>('getProject', projectId);
  getProjectByKey = (projectKey: string) => this.call<StoredProject | undefined>('getProjectByKey', projectKey);
  listProjects = (limit: number, cursor?: string) => this.call<ProjectPage>('listProjects', limit, cursor);
  activeJwtProjects = () => this.call<StoredProject[]>('activeJwtProjects');
  seedProject = (signed: SignedRecord, record: ProjectRecord, name?: string) =>
    this.call<StoredProject>('seedProject', signed, record, name);
  insertProject = (signed: SignedRecord, record: ProjectRecord, name: string) =>
    this.call<StoredProject>('insertProject', signed, record, name);
  updateProjectRecord = (projectId: string, signed: SignedRecord, record: ProjectRecord) =>
    this.call<StoredProject>('updateProjectRecord', projectId, signed, record);
  insertTlsKey = (key: NewTlsKey) => this.call<StoredTlsKey>('insertTlsKey', key);
  tlsKey = (publicKey: string) => this.call<StoredTlsKey | undefined>('tlsKey', publicKey);
  currentTlsKey = () => this.call<StoredTlsKey | undefined>('currentTlsKey');
  pendingTlsKeys = (limit: number) => this.call<StoredTlsKey[]>('pendingTlsKeys', limit);
  setCurrentTlsKey = (publicKey: string, chain: string, installedAt: number) =>
    this.call<StoredTlsKey>('setCurrentTlsKey', publicKey, chain, installedAt);
  counts = () => this.call<KeyCounts>('counts');

  async close(): Promise<void> {
    if (this.exited) return;
    await this.call('close').catch(() => undefined);
    this.exited = new Error('closed');
    await this.worker.terminate();
  }
}
