/**
 * Key records on SQLite (better-sqlite3): WAL journal with `synchronous=FULL`, so a commit is on disk before
 * `insert` returns and the API answers. The schema is versioned with `PRAGMA user_version` and migrated
 * forward at open. Keys are never deleted; they are disabled.
 *
 * The parent stores only what it may see: the sealed blob, the address and public key, the caller's
 * external id and labels, and the birth attestation.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { KeystoreError } from '@nks/shared/errors';

export interface KeyRecord {
  keyId: string;
  externalId: string | null;
  address: string;
  publicKey: string;
  blob: string;
  labels: Record<string, string>;
  attestation: string | null;
  disabled: boolean;
  /** Milliseconds since the epoch. */
  createdAt: number;
  updatedAt: number;
}

interface Row {
  seq: number;
  key_id: string;
  external_id: string | null;
  address: string;
  public_key: string;
  blob: string;
  labels: string;
  attestation: string | null;
  disabled: number;
  created_at: number;
  updated_at: number;
}

/** Each entry moves the schema from version i to i+1. Append only. */
const MIGRATIONS: string[] = [
  `CREATE TABLE keys (
     seq          INTEGER PRIMARY KEY AUTOINCREMENT,
     key_id       TEXT NOT NULL UNIQUE,
     external_id  TEXT UNIQUE,
     address      TEXT NOT NULL,
     public_key   TEXT NOT NULL,
     blob         TEXT NOT NULL,
     labels       TEXT NOT NULL DEFAULT '{}',
     attestation  TEXT,
     disabled     INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
     created_at   INTEGER NOT NULL,
     updated_at   INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX keys_address ON keys (address);`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

function toRecord(r: Row): KeyRecord {
  return {
    keyId: r.key_id,
    externalId: r.external_id,
    address: r.address,
    publicKey: r.public_key,
    blob: r.blob,
    labels: JSON.parse(r.labels) as Record<string, string>,
    attestation: r.attestation,
    disabled: r.disabled === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export interface Page {
  keys: KeyRecord[];
  nextCursor: string | null;
}

const encodeCursor = (seq: number) => Buffer.from(`s${seq}`).toString('base64url');
function decodeCursor(cursor: string): number {
  const m = /^s(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!m) throw new KeystoreError('INVALID_PARAMS', 'cursor is not one this service issued');
  return Number(m[1]);
}

export class KeyStore {
  readonly db: Database.Database;
  private readonly stmts;
  /**
   * Recently read records by key id, so a sign does not hit SQLite. Safe because this process is the only
   * writer: a record only changes through setDisabled, which refreshes it. Bounded (least recently used out).
   */
  private readonly recent = new Map<string, KeyRecord>();

  constructor(
    file: string,
    private readonly cacheSize = 10_000,
  ) {
    if (file !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
    this.stmts = {
      insert: this.db.prepare(
        `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, attestation, disabled, created_at, updated_at)
         VALUES (@keyId, @externalId, @address, @publicKey, @blob, @labels, @attestation, 0, @createdAt, @createdAt)`,
      ),
      byKeyId: this.db.prepare<[string], Row>('SELECT * FROM keys WHERE key_id = ?'),
      byExternalId: this.db.prepare<[string], Row>('SELECT * FROM keys WHERE external_id = ?'),
      page: this.db.prepare<[number, number], Row>('SELECT * FROM keys WHERE seq > ? ORDER BY seq LIMIT ?'),
      setDisabled: this.db.prepare('UPDATE keys SET disabled = ?, updated_at = ? WHERE key_id = ?'),
      count: this.db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM keys'),
      countDisabled: this.db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM keys WHERE disabled = 1'),
    };
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > SCHEMA_VERSION) {
      throw new Error(`database schema version ${current} is newer than this build (${SCHEMA_VERSION}); refusing to open it`);
    }
    for (let v = current; v < SCHEMA_VERSION; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v] as string);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  /**
   * Inserts a new record, committed and fsynced when this returns. If the external id already exists, the
   * existing record is returned instead and nothing is written.
   */
  insert(rec: Omit<KeyRecord, 'disabled' | 'updatedAt'>): { record: KeyRecord; created: boolean } {
    return this.db
      .transaction(() => {
        if (rec.externalId) {
          const existing = this.stmts.byExternalId.get(rec.externalId);
          if (existing) return { record: toRecord(existing), created: false };
        }
        this.stmts.insert.run({ ...rec, labels: JSON.stringify(rec.labels) });
        return { record: toRecord(this.stmts.byKeyId.get(rec.keyId) as Row), created: true };
      })
      .immediate();
  }

  get(keyId: string): KeyRecord | undefined {
    const hit = this.recent.get(keyId);
    if (hit) {
      this.recent.delete(keyId);
      this.recent.set(keyId, hit);
      return hit;
    }
    const r = this.stmts.byKeyId.get(keyId);
    if (!r) return undefined;
    const rec = toRecord(r);
    this.remember(rec);
    return rec;
  }

  private remember(rec: KeyRecord): void {
    this.recent.delete(rec.keyId);
    if (this.recent.size >= this.cacheSize) this.recent.delete(this.recent.keys().next().value as string);
    this.recent.set(rec.keyId, rec);
  }

  getByExternalId(externalId: string): KeyRecord | undefined {
    const r = this.stmts.byExternalId.get(externalId);
    return r ? toRecord(r) : undefined;
  }

  list(limit: number, cursor?: string): Page {
    const after = cursor ? decodeCursor(cursor) : 0;
    const rows = this.stmts.page.all(after, limit + 1);
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return { keys: page.map(toRecord), nextCursor: rows.length > limit && last ? encodeCursor(last.seq) : null };
  }

  setDisabled(keyId: string, disabled: boolean): KeyRecord | undefined {
    const res = this.stmts.setDisabled.run(disabled ? 1 : 0, Date.now(), keyId);
    this.recent.delete(keyId);
    return res.changes ? this.get(keyId) : undefined;
  }

  counts(): { total: number; disabled: number } {
    return { total: (this.stmts.count.get() as { n: number }).n, disabled: (this.stmts.countDisabled.get() as { n: number }).n };
  }

  close(): void {
    this.db.close();
  }
}
