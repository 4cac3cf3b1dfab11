/**
 * The schema's versions (docs/STORAGE.md). Each entry moves a database from version i to i+1 and is append
 * only; both engines are at the same version number after the same step. SQLite carries every step from 0.1
 * on (its databases may be that old); PostgreSQL support began at version 5, so its first step creates
 * version 5's schema at once and later steps are written for both.
 */
import type Database from 'better-sqlite3';
import { decodeKeyRecord, decodeProjectRecord, type ProjectRecord } from '@nks/shared/records';
import { projectColumns, type ProjectRow } from './types';

/**
 * Schema 3 (0.5): a project row's record content copied into columns (and its name), filled here for the
 * rows a schema 2 database has (the `default` project). A record that does not decode keeps NULL columns: the
 * registry refuses it when it is used, as before.
 */
function fillProjectColumns(db: Database.Database): void {
  const rows = db.prepare<[], ProjectRow>('SELECT * FROM projects WHERE project_key IS NULL').all();
  const update = db.prepare(
    `UPDATE projects SET project_key = @projectKey, state = @state, auth_type = @authType, jwks_host = @jwksHost,
                         created_at = @createdAt, name = COALESCE(name, @projectId)
     WHERE project_id = @projectId`,
  );
  for (const row of rows) {
    let record: ProjectRecord;
    try {
      record = decodeProjectRecord(Buffer.from(row.record, 'base64'));
    } catch {
      continue;
    }
    if (record.projectId === row.project_id) update.run({ projectId: row.project_id, ...projectColumns(record) });
  }
}

/** Each entry moves the schema from version i to i+1: SQL, or a function given the database. Append only. */
export const SQLITE_MIGRATIONS: Array<string | ((db: Database.Database) => void)> = [
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
  // 0.4: signed records. Existing keys keep NULL records until `parent migrate` re-seals them.
  `ALTER TABLE keys ADD COLUMN project_id TEXT;
   ALTER TABLE keys ADD COLUMN subject TEXT;
   ALTER TABLE keys ADD COLUMN state TEXT;
   ALTER TABLE keys ADD COLUMN record TEXT;
   ALTER TABLE keys ADD COLUMN record_signature TEXT;
   ALTER TABLE keys ADD COLUMN record_seq INTEGER CHECK (record_seq >= 0);
   ALTER TABLE keys ADD COLUMN disable_pending INTEGER NOT NULL DEFAULT 0 CHECK (disable_pending IN (0, 1));
   CREATE INDEX keys_without_record ON keys (seq) WHERE record IS NULL;
   CREATE TABLE projects (
     project_id   TEXT PRIMARY KEY,
     record       TEXT NOT NULL,
     signature    TEXT NOT NULL,
     seq          INTEGER NOT NULL CHECK (seq >= 0),
     updated_at   INTEGER NOT NULL
   ) STRICT;`,
  // 0.5: projects of their own (docs/PROJECTS.md). Columns copy the project record for queries; one active key
  // per (project, subject), which is what makes concurrent first calls of a JWT user yield one key.
  (db) => {
    db.exec(`ALTER TABLE projects ADD COLUMN project_key TEXT;
             ALTER TABLE projects ADD COLUMN name TEXT;
             ALTER TABLE projects ADD COLUMN state TEXT;
             ALTER TABLE projects ADD COLUMN auth_type TEXT;
             ALTER TABLE projects ADD COLUMN jwks_host TEXT;
             ALTER TABLE projects ADD COLUMN created_at INTEGER;
             CREATE UNIQUE INDEX projects_key ON projects (project_key);
             CREATE UNIQUE INDEX keys_active_subject ON keys (project_id, subject) WHERE subject IS NOT NULL AND state = 'active';`);
    fillProjectColumns(db);
  },
  // 0.6: the wallet routes' TLS keys (docs/TLS.md): made and sealed by the enclave, their certificate chains
  // installed by the operator. At most one is current (the one the enclave is told to serve after each start).
  `CREATE TABLE tls_keys (
     public_key     TEXT PRIMARY KEY,
     blob           TEXT NOT NULL,
     blob_signature TEXT NOT NULL,
     names          TEXT NOT NULL,
     csr            TEXT NOT NULL,
     created_at     INTEGER NOT NULL,
     chain          TEXT,
     installed_at   INTEGER,
     current        INTEGER NOT NULL DEFAULT 0 CHECK (current IN (0, 1)),
     CHECK (current = 0 OR chain IS NOT NULL)
   ) STRICT;
   CREATE UNIQUE INDEX tls_keys_current ON tls_keys (current) WHERE current = 1;`,
  // 0.7: the key lifecycle (docs/LIFECYCLE.md). A successor carries its predecessor's external id (the subject's
  // name), so the column is unique only among keys that succeed none: SQLite cannot drop a column's UNIQUE, so
  // the table is rebuilt (https://sqlite.org/lang_altertable.html#otheralter), rows and their seq kept.
  // One active and one pending key per (project, subject).
  `CREATE TABLE keys_v5 (
     seq              INTEGER PRIMARY KEY AUTOINCREMENT,
     key_id           TEXT NOT NULL UNIQUE,
     external_id      TEXT,
     address          TEXT NOT NULL,
     public_key       TEXT NOT NULL,
     blob             TEXT NOT NULL,
     labels           TEXT NOT NULL DEFAULT '{}',
     attestation      TEXT,
     disabled         INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
     created_at       INTEGER NOT NULL,
     updated_at       INTEGER NOT NULL,
     project_id       TEXT,
     subject          TEXT,
     state            TEXT,
     record           TEXT,
     record_signature TEXT,
     record_seq       INTEGER CHECK (record_seq >= 0),
     disable_pending  INTEGER NOT NULL DEFAULT 0 CHECK (disable_pending IN (0, 1)),
     predecessor      TEXT
   ) STRICT;
   INSERT INTO keys_v5 (seq, key_id, external_id, address, public_key, blob, labels, attestation, disabled, created_at,
                        updated_at, project_id, subject, state, record, record_signature, record_seq, disable_pending)
     SELECT seq, key_id, external_id, address, public_key, blob, labels, attestation, disabled, created_at,
            updated_at, project_id, subject, state, record, record_signature, record_seq, disable_pending FROM keys;
   DROP TABLE keys;
   ALTER TABLE keys_v5 RENAME TO keys;
   CREATE INDEX keys_address ON keys (address);
   CREATE INDEX keys_without_record ON keys (seq) WHERE record IS NULL;
   CREATE INDEX keys_external_id ON keys (external_id) WHERE external_id IS NOT NULL;
   CREATE UNIQUE INDEX keys_external_id_first ON keys (external_id) WHERE predecessor IS NULL;
   CREATE INDEX keys_subject ON keys (project_id, subject, seq) WHERE subject IS NOT NULL;
   CREATE UNIQUE INDEX keys_active_subject ON keys (project_id, subject) WHERE subject IS NOT NULL AND state = 'active';
   CREATE UNIQUE INDEX keys_pending_subject ON keys (project_id, subject) WHERE subject IS NOT NULL AND state = 'pending';`,
  // 0.8: the database refuses what no honest parent writes (the same rules as PostgreSQL's step 6,
  // postgres-migrations.ts): a key's record only moves forward one seq at a time, with its identity columns fixed;
  // a project's likewise; a TLS key's sealed content is fixed. Rows without a record (keys made before 0.4) may
  // only have their flag set, or be migrated to their first record. On SQLite these guard against bugs (whoever
  // can write the file can drop them); PostgreSQL's guard against the application role.
  (db) => {
    // The digest of the record each row's record replaced (docs/STORAGE.md, "Guards in the database"): for rows
    // stored before, taken from their record's own `prev` (this file's one writer wrote them); from now on the
    // store computes it from the row it replaces, as PostgreSQL's trigger does.
    db.exec('ALTER TABLE keys ADD COLUMN record_prev TEXT; ALTER TABLE projects ADD COLUMN record_prev TEXT;');
    const keys = db.prepare<[], { key_id: string; record: string }>('SELECT key_id, record FROM keys WHERE record IS NOT NULL').all();
    const setKey = db.prepare('UPDATE keys SET record_prev = ? WHERE key_id = ?');
    for (const k of keys)
      setKey.run(
        prevOf(() => decodeKeyRecord(Buffer.from(k.record, 'base64')).prev),
        k.key_id,
      );
    const projects = db.prepare<[], { project_id: string; record: string }>('SELECT project_id, record FROM projects').all();
    const setProject = db.prepare('UPDATE projects SET record_prev = ? WHERE project_id = ?');
    for (const p of projects)
      setProject.run(
        prevOf(() => decodeProjectRecord(Buffer.from(p.record, 'base64')).prev),
        p.project_id,
      );
    db.exec(GUARDS);
  },
  // Schema 7: finding and tidying keys, retry-safe creates (docs/STORAGE.md, "Schema 7"). Labels may change alone (PATCH
  // /v1/keys/{keyId}: they are the caller's, in no record); a key's labels are indexed in `key_labels`, kept by
  // triggers; `idempotency` remembers the Idempotency-Key of each create for 24 hours.
  // A function: the guard's text is built from step 6's (below), which a string here would read before it is set.
  (db) =>
    db.exec(`DROP TRIGGER keys_guard_update;
   ${keysGuardUpdateV7()}
   CREATE TABLE key_labels (
     key_seq INTEGER NOT NULL,
     name    TEXT NOT NULL,
     value   TEXT NOT NULL,
     PRIMARY KEY (name, value, key_seq)
   ) STRICT, WITHOUT ROWID;
   CREATE INDEX key_labels_key ON key_labels (key_seq);
   INSERT INTO key_labels (key_seq, name, value) SELECT k.seq, j.key, CAST(j.value AS TEXT) FROM keys k, json_each(k.labels) j;
   CREATE TRIGGER keys_labels_insert AFTER INSERT ON keys
   BEGIN INSERT INTO key_labels (key_seq, name, value) SELECT NEW.seq, key, CAST(value AS TEXT) FROM json_each(NEW.labels); END;
   CREATE TRIGGER keys_labels_update AFTER UPDATE OF labels ON keys WHEN NEW.labels IS NOT OLD.labels
   BEGIN
     DELETE FROM key_labels WHERE key_seq = OLD.seq;
     INSERT INTO key_labels (key_seq, name, value) SELECT NEW.seq, key, CAST(value AS TEXT) FROM json_each(NEW.labels);
   END;
   CREATE INDEX keys_disabled ON keys (disabled, seq);
   CREATE TABLE idempotency (
     scope       TEXT NOT NULL,
     idem_key    TEXT NOT NULL,
     body_sha256 TEXT NOT NULL,
     key_id      TEXT NOT NULL,
     created_at  INTEGER NOT NULL,
     expires_at  INTEGER NOT NULL,
     PRIMARY KEY (scope, idem_key)
   ) STRICT;
   CREATE INDEX idempotency_expires ON idempotency (expires_at);`),
];

/** A record's `prev`, or null for one that does not decode (readers refuse it anyway). */
function prevOf(read: () => string | null): string | null {
  try {
    return read();
  } catch {
    return null;
  }
}

/** Step 6's triggers (SQLite's form of postgres-migrations.ts's). */
const GUARDS = `CREATE TRIGGER keys_guard_insert BEFORE INSERT ON keys
     WHEN NEW.record IS NOT NULL AND NEW.record_seq IS NOT 0
   BEGIN SELECT RAISE(ABORT, 'nks: a key is stored with its first record (seq 0)'); END;
   CREATE TRIGGER keys_guard_update BEFORE UPDATE ON keys
     WHEN NEW.seq IS NOT OLD.seq OR NEW.key_id IS NOT OLD.key_id OR NEW.external_id IS NOT OLD.external_id
       OR NEW.address IS NOT OLD.address OR NEW.public_key IS NOT OLD.public_key OR NEW.labels IS NOT OLD.labels
       OR NEW.attestation IS NOT OLD.attestation OR NEW.created_at IS NOT OLD.created_at
       OR CASE
            WHEN OLD.record IS NOT NULL THEN
              NEW.record IS NULL OR NEW.record IS OLD.record OR NEW.record_seq IS NOT OLD.record_seq + 1
              OR NEW.blob IS NOT OLD.blob OR NEW.project_id IS NOT OLD.project_id OR NEW.subject IS NOT OLD.subject
              OR NEW.predecessor IS NOT OLD.predecessor OR NEW.disable_pending > OLD.disable_pending
            WHEN NEW.record IS NOT NULL THEN NEW.record_seq IS NOT 0
            ELSE NEW.blob IS NOT OLD.blob OR NEW.project_id IS NOT OLD.project_id OR NEW.subject IS NOT OLD.subject
              OR NEW.state IS NOT OLD.state OR NEW.record_signature IS NOT OLD.record_signature
              OR NEW.record_seq IS NOT OLD.record_seq OR NEW.predecessor IS NOT OLD.predecessor
              OR NEW.disable_pending IS NOT OLD.disable_pending
          END
   BEGIN SELECT RAISE(ABORT, 'nks: a key''s stored record only moves to its next seq, its other columns fixed'); END;
   CREATE TRIGGER projects_guard_update BEFORE UPDATE ON projects
     WHEN NEW.seq IS NOT OLD.seq + 1 OR NEW.record IS OLD.record OR NEW.project_id IS NOT OLD.project_id
       OR (OLD.project_key IS NOT NULL AND NEW.project_key IS NOT OLD.project_key)
   BEGIN SELECT RAISE(ABORT, 'nks: a project''s stored record only moves to its next seq, its id and key fixed'); END;
   CREATE TRIGGER tls_keys_guard_update BEFORE UPDATE ON tls_keys
     WHEN NEW.public_key IS NOT OLD.public_key OR NEW.blob IS NOT OLD.blob OR NEW.blob_signature IS NOT OLD.blob_signature
       OR NEW.names IS NOT OLD.names OR NEW.csr IS NOT OLD.csr OR NEW.created_at IS NOT OLD.created_at
   BEGIN SELECT RAISE(ABORT, 'nks: a TLS key''s sealed key, names and request are fixed'); END;`;

/** A key's columns other than `labels` and `updated_at`: a change of labels alone leaves them all as they were. */
export const KEY_COLUMNS_BUT_LABELS = [
  'seq',
  'key_id',
  'external_id',
  'address',
  'public_key',
  'blob',
  'attestation',
  'disabled',
  'created_at',
  'project_id',
  'subject',
  'state',
  'record',
  'record_signature',
  'record_seq',
  'disable_pending',
  'predecessor',
  'record_prev',
] as const;

/**
 * Step 7's key guard: step 6's, except that a change of the labels alone (every other column but `updated_at` as
 * it was) passes. Labels are the caller's and in no record; a change of them with anything else is still refused.
 */
const keysGuardUpdateV7 = (): string =>
  GUARDS.slice(GUARDS.indexOf('CREATE TRIGGER keys_guard_update'), GUARDS.indexOf('CREATE TRIGGER projects_guard_update'))
    .replace(
      'BEFORE UPDATE ON keys\n     WHEN ',
      `BEFORE UPDATE ON keys\n     WHEN NOT (${KEY_COLUMNS_BUT_LABELS.map((c) => `NEW.${c} IS OLD.${c}`).join(' AND ')}) AND (`,
    )
    .replace('END\n   BEGIN SELECT RAISE', 'END)\n   BEGIN SELECT RAISE');

export const SCHEMA_VERSION = SQLITE_MIGRATIONS.length;
