/**
 * The SQLite database (better-sqlite3), synchronous: WAL journal with `synchronous=FULL`, so a commit is on disk
 * before a write returns. The schema is versioned with `PRAGMA user_version` and migrated forward at open
 * (store/migrations.ts). The parent never calls this on its event loop: the SQLite engine (sqlite-engine.ts)
 * runs it in a worker thread; tools and tests may use it directly.
 *
 * Keys made before 0.4 (schema version 1) have a version 1 blob and no record: they stay readable, and sign
 * again once `parent migrate` has re-sealed them (`migrateKey`). A `disabled` flag changes only with a new
 * record whose `seq` is the stored one + 1 (`updateRecords`), except on such keys, which have no record.
 *
 * The key lifecycle (docs/LIFECYCLE.md): a subject has at most one active and one pending key (unique indexes);
 * a successor is stored with its predecessor's external id (the external id names the subject, and every
 * lookup by it answers the subject's active key), and an activation stores both keys' records in one transaction.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { KeystoreError } from '@nks/shared/errors';
import { recordDigest, type KeyRecord, type KeyState, type ProjectRecord, type SignedRecord } from '@nks/shared/records';
import { SQLITE_MIGRATIONS, SCHEMA_VERSION } from './migrations';
import {
  decodeCursor,
  decodeProjectCursor,
  encodeCursor,
  encodeProjectCursor,
  IDEMPOTENCY_PURGE_BATCH,
  keyPageSql,
  keyStateError,
  projectColumns,
  recordColumns,
  toProject,
  toStored,
  toTlsKey,
  type IdempotencyClaim,
  type IdempotencyEntry,
  type InsertResult,
  type KeyCounts,
  type KeyRow as Row,
  type NewKey,
  type NewTlsKey,
  type ListOptions,
  type Page,
  type ProjectPage,
  type ProjectRow,
  type StoredKey,
  type StoredProject,
  type StoredTlsKey,
  type TlsKeyRow,
} from './types';

/** A stored record's digest as the next record's `prev` names it (what PostgreSQL's trigger computes: `record_prev`). */
const digestOf = (record: string) => `0x${recordDigest(Buffer.from(record, 'base64')).toString('hex')}`;

export class SqliteDatabase {
  readonly db: Database.Database;
  private readonly stmts;
  constructor(readonly file: string) {
    if (file !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
    this.stmts = {
      insert: this.db.prepare(
        `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, attestation, disabled, created_at, updated_at,
                           project_id, subject, state, record, record_signature, record_seq, predecessor, record_prev)
         VALUES (@keyId, @externalId, @address, @publicKey, @blob, @labels, @attestation, @disabled, @createdAt, @createdAt,
                 @projectId, @subject, @state, @record, @recordSignature, @recordSeq, @predecessor, NULL)`,
      ),
      byKeyId: this.db.prepare<[string], Row>('SELECT * FROM keys WHERE key_id = ?'),
      // An external id names its first key (predecessor IS NULL: unique), and through it a subject: the answer is
      // that subject's active key (a successor carries the external id too), or the first key if none is (a key made
      // before 0.4 has no subject: it is the only key of its external id). As postgres.ts's.
      byExternalId: this.db.prepare<[string], Row>(
        `WITH f AS (SELECT * FROM keys WHERE external_id = ? AND predecessor IS NULL)
         SELECT * FROM keys WHERE key_id = COALESCE(
           (SELECT a.key_id FROM keys a, f WHERE f.subject IS NOT NULL AND a.project_id = f.project_id
              AND a.subject = f.subject AND a.state = 'active'),
           (SELECT key_id FROM f))`,
      ),
      activeBySubject: this.db.prepare<[string, string], Row>(
        "SELECT * FROM keys WHERE project_id = ? AND subject = ? AND subject IS NOT NULL AND state = 'active'",
      ),
      pendingBySubject: this.db.prepare<[string, string], Row>(
        "SELECT * FROM keys WHERE project_id = ? AND subject = ? AND subject IS NOT NULL AND state = 'pending'",
      ),
      bySubject: this.db.prepare<[string, string], Row>(
        'SELECT * FROM keys WHERE project_id = ? AND subject = ? AND subject IS NOT NULL ORDER BY seq',
      ),
      setLabels: this.db.prepare('UPDATE keys SET labels = ?, updated_at = ? WHERE key_id = ?'),
      idempotency: this.db.prepare<[string, string, number], { key_id: string; body_sha256: string }>(
        'SELECT key_id, body_sha256 FROM idempotency WHERE scope = ? AND idem_key = ? AND expires_at > ?',
      ),
      // OR REPLACE: an entry of this key still stored is an expired one (an unexpired one is answered instead).
      insertIdempotency: this.db.prepare(
        `INSERT OR REPLACE INTO idempotency (scope, idem_key, body_sha256, key_id, created_at, expires_at)
         VALUES (@scope, @key, @bodySha256, @keyId, @now, @expiresAt)`,
      ),
      purgeIdempotency: this.db.prepare(
        'DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)',
      ),
      withoutRecord: this.db.prepare<[number, number], Row>('SELECT * FROM keys WHERE record IS NULL AND seq > ? ORDER BY seq LIMIT ?'),
      setLegacyDisabled: this.db.prepare('UPDATE keys SET disabled = ?, updated_at = ? WHERE key_id = ? AND record IS NULL'),
      setRecord: this.db.prepare(
        `UPDATE keys SET project_id = @projectId, subject = @subject, state = @state, disabled = @disabled, record = @record,
                         record_signature = @recordSignature, record_seq = @recordSeq, predecessor = @predecessor,
                         disable_pending = 0, updated_at = @now, record_prev = @recordPrev
         WHERE key_id = @keyId AND record_seq = @recordSeq - 1`,
      ),
      migrated: this.db.prepare(
        `UPDATE keys SET blob = @blob, project_id = @projectId, subject = @subject, state = @state, disabled = @disabled,
                         record = @record, record_signature = @recordSignature, record_seq = @recordSeq,
                         predecessor = @predecessor, disable_pending = @disablePending, updated_at = @now
         WHERE key_id = @keyId AND record IS NULL`,
      ),
      count: this.db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM keys'),
      countDisabled: this.db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM keys WHERE disabled = 1 OR disable_pending = 1'),
      pendingDisable: this.db.prepare<[], { key_id: string }>('SELECT key_id FROM keys WHERE disable_pending = 1 ORDER BY seq'),
      countWithoutRecord: this.db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM keys WHERE record IS NULL'),
      countPending: this.db.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM keys WHERE subject IS NOT NULL AND state = 'pending'"),
      project: this.db.prepare<[string], ProjectRow>('SELECT * FROM projects WHERE project_id = ?'),
      projectByKey: this.db.prepare<[string], ProjectRow>('SELECT * FROM projects WHERE project_key = ?'),
      projectPage: this.db.prepare<[string, number], ProjectRow>('SELECT * FROM projects WHERE project_id > ? ORDER BY project_id LIMIT ?'),
      jwksHosts: this.db.prepare<[], ProjectRow>(
        "SELECT * FROM projects WHERE state = 'active' AND auth_type = 'jwt' AND jwks_host IS NOT NULL ORDER BY project_id",
      ),
      seedProject: this.db.prepare(
        `INSERT INTO projects (project_id, record, signature, seq, updated_at, name, project_key, state, auth_type, jwks_host, created_at)
         VALUES (@projectId, @record, @signature, @seq, @now, @name, @projectKey, @state, @authType, @jwksHost, @createdAt)
         ON CONFLICT DO NOTHING`,
      ),
      insertProject: this.db.prepare(
        `INSERT INTO projects (project_id, record, signature, seq, updated_at, name, project_key, state, auth_type, jwks_host, created_at)
         VALUES (@projectId, @record, @signature, @seq, @now, @name, @projectKey, @state, @authType, @jwksHost, @createdAt)`,
      ),
      setProjectRecord: this.db.prepare(
        `UPDATE projects SET record = @record, signature = @signature, seq = @seq, updated_at = @now, project_key = @projectKey,
                             state = @state, auth_type = @authType, jwks_host = @jwksHost, created_at = @createdAt,
                             record_prev = @recordPrev
         WHERE project_id = @projectId AND seq = @seq - 1`,
      ),
      insertTlsKey: this.db.prepare(
        `INSERT INTO tls_keys (public_key, blob, blob_signature, names, csr, created_at)
         VALUES (@publicKey, @blob, @blobSignature, @names, @csr, @createdAt)`,
      ),
      tlsKey: this.db.prepare<[string], TlsKeyRow>('SELECT * FROM tls_keys WHERE public_key = ?'),
      currentTlsKey: this.db.prepare<[], TlsKeyRow>('SELECT * FROM tls_keys WHERE current = 1'),
      pendingTlsKeys: this.db.prepare<[number], TlsKeyRow>(
        'SELECT * FROM tls_keys WHERE chain IS NULL ORDER BY created_at DESC, public_key LIMIT ?',
      ),
      clearCurrentTlsKey: this.db.prepare('UPDATE tls_keys SET current = 0 WHERE current = 1'),
      setCurrentTlsKey: this.db.prepare(
        'UPDATE tls_keys SET chain = @chain, installed_at = @installedAt, current = 1 WHERE public_key = @publicKey',
      ),
    };
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > SCHEMA_VERSION) {
      throw new Error(`database schema version ${current} is newer than this build (${SCHEMA_VERSION}); refusing to open it`);
    }
    for (let v = current; v < SCHEMA_VERSION; v++) {
      this.db.transaction(() => {
        const step = SQLITE_MIGRATIONS[v] as string | ((db: Database.Database) => void);
        if (typeof step === 'string') this.db.exec(step);
        else step(this.db);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  /**
   * Inserts a new key with its first record, committed and fsynced when this returns. If the external id
   * already exists, or the project already has an active key for the record's subject, that key is returned
   * instead and nothing is written.
   */
  insert(key: NewKey, idempotency?: IdempotencyClaim): InsertResult {
    if (key.record.keyId !== key.keyId || key.record.seq !== 0) throw new Error('insert: the record is not the first one of this key');
    if (!idempotency) return this.insertKey(key);
    const idem = idempotency;
    return this.db
      .transaction((): InsertResult => {
        this.stmts.purgeIdempotency.run(idem.now, IDEMPOTENCY_PURGE_BATCH);
        const entry = this.stmts.idempotency.get(idem.scope, idem.key, idem.now);
        const row = entry && this.stmts.byKeyId.get(entry.key_id);
        if (entry && row)
          return { record: toStored(row), created: false, idempotent: { keyId: entry.key_id, bodySha256: entry.body_sha256 } };
        const out = this.insertKey(key);
        // Only a key this create made is remembered: a key it yields to (another's, by external id) is not its answer
        // to replay (a retry asks again, by the external id, as any create of it does).
        if (out.created) this.stmts.insertIdempotency.run({ ...idem, keyId: out.record.keyId });
        return out;
      })
      .immediate();
  }

  /** An unexpired Idempotency-Key's entry in its scope. */
  idempotency(scope: string, key: string, now: number): IdempotencyEntry | undefined {
    const e = this.stmts.idempotency.get(scope, key, now);
    return e ? { keyId: e.key_id, bodySha256: e.body_sha256 } : undefined;
  }

  /** A key's labels replaced (in no record: the guard lets them change alone); undefined if no such key. */
  setLabels(keyId: string, labels: Record<string, string>): StoredKey | undefined {
    const res = this.stmts.setLabels.run(JSON.stringify(labels), Date.now(), keyId);
    return res.changes ? this.get(keyId) : undefined;
  }

  private insertKey(key: NewKey): InsertResult {
    return this.db
      .transaction(() => {
        if (key.externalId) {
          const existing = this.stmts.byExternalId.get(key.externalId);
          if (existing) return { record: toStored(existing), created: false };
        }
        if (key.record.subject !== null) {
          const existing = this.stmts.activeBySubject.get(key.record.projectId, key.record.subject);
          if (existing) return { record: toStored(existing), created: false };
        }
        const { signed, record, ...rest } = key;
        this.insertRow({ ...rest, labels: JSON.stringify(key.labels), ...recordColumns(signed, record) });
        return { record: toStored(this.stmts.byKeyId.get(key.keyId) as Row), created: true };
      })
      .immediate();
  }

  /** A new key's row; its key id already stored (a collision, not a winner by external id or subject) is CONFLICT. */
  private insertRow(row: Record<string, unknown>): void {
    if (this.stmts.byKeyId.get(row.keyId as string)) throw new KeystoreError('CONFLICT', `key ${row.keyId as string} is already stored`);
    this.stmts.insert.run(row);
  }

  get(keyId: string): StoredKey | undefined {
    const r = this.stmts.byKeyId.get(keyId);
    return r ? toStored(r) : undefined;
  }

  getByExternalId(externalId: string): StoredKey | undefined {
    const r = this.stmts.byExternalId.get(externalId);
    return r ? toStored(r) : undefined;
  }

  /** The project's active key for `subject` (at most one: a unique index), by its record's copied columns. */
  activeKeyFor(projectId: string, subject: string): StoredKey | undefined {
    const r = this.stmts.activeBySubject.get(projectId, subject);
    return r ? toStored(r) : undefined;
  }

  /** The project's pending key (a successor) for `subject`: at most one, like the active key. */
  pendingKeyFor(projectId: string, subject: string): StoredKey | undefined {
    const r = this.stmts.pendingBySubject.get(projectId, subject);
    return r ? toStored(r) : undefined;
  }

  /** A key's history (docs/LIFECYCLE.md): its subject's keys, oldest first; a key without subject is its own. */
  history(keyId: string): StoredKey[] {
    const r = this.stmts.byKeyId.get(keyId);
    if (!r) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
    if (r.record === null || r.project_id === null || r.subject === null) return [toStored(r)];
    return this.stmts.bySubject.all(r.project_id, r.subject).map(toStored);
  }

  /**
   * Inserts a successor the enclave just made (its first record, state pending, naming its predecessor;
   * verified by the caller), committed when this returns. The predecessor must be stored and still active (the
   * state it was succeeded from): KEY_STATE otherwise. If the subject already has a pending key, that key is
   * returned instead and nothing is written.
   */
  insertSuccessor(key: NewKey): { record: StoredKey; created: boolean } {
    const { record } = key;
    if (record.keyId !== key.keyId || record.seq !== 0 || record.state !== 'pending' || !record.predecessor || record.subject === null)
      throw new Error('insertSuccessor: the record is not the first one of a successor');
    return this.db
      .transaction(() => {
        const predecessor = this.stmts.byKeyId.get(record.predecessor as string);
        if (!predecessor || predecessor.project_id !== record.projectId || predecessor.subject !== record.subject)
          throw new KeystoreError('KEY_NOT_FOUND', `key ${record.predecessor} (the predecessor) is not a stored key of this subject`);
        const pending = this.stmts.pendingBySubject.get(record.projectId, record.subject as string);
        if (pending) return { record: toStored(pending), created: false };
        if (predecessor.state !== 'active') throw keyStateError(predecessor.key_id, predecessor.state as KeyState, 'active');
        const { signed, ...rest } = key;
        this.insertRow({
          ...rest,
          labels: JSON.stringify(key.labels),
          ...recordColumns(signed, record),
        });
        return { record: toStored(this.stmts.byKeyId.get(key.keyId) as Row), created: true };
      })
      .immediate();
  }

  /**
   * A page of keys in creation order; `withJwtKeys: false` leaves out the keys of JWT projects, `projects` the
   * keys of every other project.
   */
  list(limit: number, cursor?: string, options: ListOptions = {}): Page {
    const after = cursor ? decodeCursor(cursor) : 0;
    const params: unknown[] = [];
    const sql = keyPageSql('sqlite', after, limit + 1, options, (v) => (params.push(v), '?'));
    const rows = this.pageStatement(sql).all(...params) as Row[];
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return { keys: page.map(toStored), nextCursor: rows.length > limit && last ? encodeCursor(last.seq) : null };
  }

  /** Prepared page queries by their text (one per combination of filters: a few dozen at most). */
  private readonly pages = new Map<string, Database.Statement>();
  private pageStatement(sql: string): Database.Statement {
    let st = this.pages.get(sql);
    if (!st) this.pages.set(sql, (st = this.db.prepare(sql)));
    return st;
  }

  /**
   * Stores a key's next record (verified by the caller): its `seq` must be the stored one + 1, so a record
   * is never replaced by an older one or skipped. CONFLICT if another write got there first.
   */
  updateRecord(keyId: string, signed: SignedRecord, record: KeyRecord): StoredKey {
    if (record.keyId !== keyId) throw new Error('updateRecord: the record is for another key');
    return this.updateRecords([{ signed, record }])[0] as StoredKey;
  }

  /**
   * Stores the next records of keys (verified by the caller) in one transaction, all or none: each `seq` must
   * be its key's stored one + 1 (a compare-and-set: CONFLICT, nothing written, if another write got there
   * first). An activation's two records: the one that leaves `active` is written first, so the unique index
   * of active keys holds after every statement.
   */
  updateRecords(updates: ReadonlyArray<{ signed: SignedRecord; record: KeyRecord }>): StoredKey[] {
    const ordered = [...updates].sort((a, b) => Number(a.record.state === 'active') - Number(b.record.state === 'active'));
    return this.db
      .transaction(() => {
        for (const { signed, record } of ordered) {
          const { keyId } = record;
          const stored = this.stmts.byKeyId.get(keyId);
          const recordPrev = stored?.record ? digestOf(stored.record) : null;
          const res = this.stmts.setRecord.run({ keyId, now: Date.now(), recordPrev, ...recordColumns(signed, record) });
          if (res.changes === 1) continue;
          if (!this.stmts.byKeyId.get(keyId)) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
          throw new KeystoreError('CONFLICT', `key ${keyId} changed meanwhile; retry`);
        }
        return updates.map((u) => toStored(this.stmts.byKeyId.get(u.record.keyId) as Row));
      })
      .immediate();
  }

  /** The `disabled` flag of a key made before 0.4 (it has no record to carry it). */
  setLegacyDisabled(keyId: string, disabled: boolean): StoredKey | undefined {
    const res = this.stmts.setLegacyDisabled.run(disabled ? 1 : 0, Date.now(), keyId);
    return res.changes ? this.get(keyId) : undefined;
  }

  /**
   * Keys without a record (made before 0.4), in creation order after `afterSeq` (the `seq` of the last one
   * returned before): what `parent migrate` works through.
   */
  keysWithoutRecord(afterSeq: number, limit: number): Array<StoredKey & { rowSeq: number }> {
    return this.stmts.withoutRecord.all(afterSeq, limit).map((r) => ({ ...toStored(r), rowSeq: r.seq }));
  }

  /**
   * A key made before 0.4 re-sealed by the migration image: its version 2 blob and first record, in one
   * transaction. False (nothing written) if the key already has a record. A key that was disabled stays
   * refused (`disablePending`).
   */
  migrateKey(keyId: string, blob: string, signed: SignedRecord, record: KeyRecord): boolean {
    if (record.keyId !== keyId || record.seq !== 0) throw new Error('migrateKey: the record is not the first one of this key');
    return this.db
      .transaction(() => {
        const row = this.stmts.byKeyId.get(keyId);
        if (!row || row.record !== null) return false;
        const res = this.stmts.migrated.run({
          keyId,
          blob,
          now: Date.now(),
          disablePending: row.disabled === 1 && !record.disabled ? 1 : 0,
          ...recordColumns(signed, record),
        });
        return res.changes === 1;
      })
      .immediate();
  }

  /** Keys migrated while disabled whose disable the enclave has not recorded yet. */
  keysPendingDisable(): string[] {
    return this.stmts.pendingDisable.all().map((r) => r.key_id);
  }

  getProject(projectId: string): StoredProject | undefined {
    const r = this.stmts.project.get(projectId);
    return r ? toProject(r) : undefined;
  }

  /** The project whose record's `projectKey` is this (by the copied column; the caller verifies the record). */
  getProjectByKey(projectKey: string): StoredProject | undefined {
    const r = this.stmts.projectByKey.get(projectKey);
    return r ? toProject(r) : undefined;
  }

  listProjects(limit: number, cursor?: string): ProjectPage {
    const after = cursor ? decodeProjectCursor(cursor) : '';
    const rows = this.stmts.projectPage.all(after, limit + 1);
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return { projects: page.map(toProject), nextCursor: rows.length > limit && last ? encodeProjectCursor(last.project_id) : null };
  }

  /** Active JWT projects (by the copied columns): the egress relay allows their JWKS hosts. */
  activeJwtProjects(): StoredProject[] {
    return this.stmts.jwksHosts.all().map(toProject);
  }

  /** Stores a project's record (verified by the caller) if the project is not stored yet; returns what is stored. */
  seedProject(signed: SignedRecord, record: ProjectRecord, name: string = record.projectId): StoredProject {
    this.stmts.seedProject.run({
      projectId: record.projectId,
      record: signed.record,
      signature: signed.signature,
      seq: record.seq,
      now: Date.now(),
      name,
      ...projectColumns(record),
    });
    return this.getProject(record.projectId) as StoredProject;
  }

  /**
   * Stores a new project's first record (verified by the caller) with its name. CONFLICT (nothing written) if
   * its id or key is already stored.
   */
  insertProject(signed: SignedRecord, record: ProjectRecord, name: string): StoredProject {
    if (record.seq !== 0) throw new Error('insertProject: the record is not the first one of this project');
    try {
      this.stmts.insertProject.run({
        projectId: record.projectId,
        record: signed.record,
        signature: signed.signature,
        seq: 0,
        now: Date.now(),
        name,
        ...projectColumns(record),
      });
    } catch (err) {
      if (
        (err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE' ||
        (err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY'
      )
        throw new KeystoreError('CONFLICT', `project ${record.projectId} (or its project key) is already stored`, { cause: err });
      throw err;
    }
    return this.getProject(record.projectId) as StoredProject;
  }

  /** Stores a project's next record (verified by the caller): its `seq` must be the stored one + 1. CONFLICT otherwise. */
  updateProjectRecord(projectId: string, signed: SignedRecord, record: ProjectRecord): StoredProject {
    if (record.projectId !== projectId) throw new Error('updateProjectRecord: the record is for another project');
    const stored = this.stmts.project.get(projectId);
    const res = this.stmts.setProjectRecord.run({
      recordPrev: stored ? digestOf(stored.record) : null,
      projectId,
      record: signed.record,
      signature: signed.signature,
      seq: record.seq,
      now: Date.now(),
      ...projectColumns(record),
    });
    if (res.changes !== 1) throw new KeystoreError('CONFLICT', `project ${projectId} changed meanwhile; retry`);
    return this.getProject(projectId) as StoredProject;
  }

  /** Stores a TLS key the enclave just made (pending: no chain yet). CONFLICT if this public key is stored. */
  insertTlsKey(key: NewTlsKey): StoredTlsKey {
    try {
      this.stmts.insertTlsKey.run({ ...key, names: JSON.stringify(key.names) });
    } catch (err) {
      if ((err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY')
        throw new KeystoreError('CONFLICT', 'this TLS key is already stored', { cause: err });
      throw err;
    }
    return this.tlsKey(key.publicKey) as StoredTlsKey;
  }

  tlsKey(publicKey: string): StoredTlsKey | undefined {
    const r = this.stmts.tlsKey.get(publicKey);
    return r ? toTlsKey(r) : undefined;
  }

  /** The TLS key the enclave serves (installed last), if any. */
  currentTlsKey(): StoredTlsKey | undefined {
    const r = this.stmts.currentTlsKey.get();
    return r ? toTlsKey(r) : undefined;
  }

  /** TLS keys never installed, newest first. */
  pendingTlsKeys(limit: number): StoredTlsKey[] {
    return this.stmts.pendingTlsKeys.all(limit).map(toTlsKey);
  }

  /** Makes a stored TLS key the current one, with the chain the enclave accepted (in one transaction). */
  setCurrentTlsKey(publicKey: string, chain: string, installedAt: number): StoredTlsKey {
    return this.db
      .transaction(() => {
        if (!this.stmts.tlsKey.get(publicKey)) throw new KeystoreError('NOT_FOUND', 'this TLS key is not stored');
        this.stmts.clearCurrentTlsKey.run();
        this.stmts.setCurrentTlsKey.run({ publicKey, chain, installedAt });
        return toTlsKey(this.stmts.tlsKey.get(publicKey) as TlsKeyRow);
      })
      .immediate();
  }

  /**
   * A committed write that changes nothing: the schema version set to itself (page 1 goes to the WAL and is
   * fsynced), so a full or failing disk fails it as it fails any write (the store's readiness probe).
   */
  probeWrite(): void {
    this.db.pragma(`user_version = ${this.version()}`);
  }

  /** The schema version the file is at. */
  version(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  counts(): KeyCounts {
    return {
      total: (this.stmts.count.get() as { n: number }).n,
      disabled: (this.stmts.countDisabled.get() as { n: number }).n,
      withoutRecord: (this.stmts.countWithoutRecord.get() as { n: number }).n,
      pending: (this.stmts.countPending.get() as { n: number }).n,
    };
  }

  close(): void {
    this.db.close();
  }
}
