/**
 * The PostgreSQL engine: several parent instances on one database (a `pg` pool each). Its semantics are the
 * SQLite engine's (sqlite-db.ts, the reference), with what concurrency across processes adds:
 *
 * - The database's unique indexes decide every race: a create is `INSERT … ON CONFLICT DO NOTHING`, and when
 *   nothing was inserted the winner is read in the same transaction (read committed: it sees the commit that
 *   beat it) and answered, as a second create of the same key is.
 * - Compare-and-set on a record's `seq` is the UPDATE's own condition: a concurrent writer waits for the row
 *   and then finds the condition false (CONFLICT).
 * - Every write of a key or project row (and a TLS key made current) notifies `nks_changes` in its transaction,
 *   by the database's own triggers (postgres-migrations.ts, version 6) whoever writes it, for the other instances'
 *   caches (postgres-listener.ts).
 * - Every call is bounded (connect timeout, statement timeout, and a client-side query timeout a little
 *   longer): a database that cannot answer in time is STORAGE_UNAVAILABLE, never a hung request.
 */
import pg from 'pg';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import type { KeyRecord, KeyState, ProjectRecord, SignedRecord } from '@nks/shared/records';
import { describeError, spoilsSession, storageError } from './postgres-errors';
import { redactUrl } from '@nks/shared/redact';
import { ChangeListener } from './postgres-listener';
import { POSTGRES_BASELINE, POSTGRES_MIGRATIONS } from './postgres-migrations';
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
  type KeyRow,
  type NewKey,
  type NewTlsKey,
  type ListOptions,
  type Page,
  type ProjectPage,
  type ProjectRow,
  type StoreChange,
  type StoreEngine,
  type StoreStatus,
  type StoredKey,
  type StoredProject,
  type StoredTlsKey,
  type TlsKeyRow,
} from './types';

export interface PostgresOptions {
  url: string;
  poolSize: number;
  /** TLS to the server (a `sslmode` in the URL takes precedence: node-postgres reads the URL last). */
  ssl?: boolean | { rejectUnauthorized: boolean; ca?: string };
  /** Default 5000. */
  statementTimeoutMs?: number;
  /** Default 5000. */
  connectTimeoutMs?: number;
  /** Whether to bring the schema up to date (else a database behind this build is refused). */
  migrate: boolean;
  logger?: Logger;
}

const LATEST_VERSION = POSTGRES_MIGRATIONS.length;
/** The change feed's connection, by name in pg_stat_activity. */
export const LISTENER_NAME = 'nks-parent-changes';
/** Advisory lock keys (64-bit; their bytes spell what they guard): the schema migration, the current TLS key. */
const MIGRATION_LOCK = '31080390083832167'; // "nks:mig"
const TLS_LOCK = '31080390084291699'; // "nks:tls"
/**
 * `withLocks`' locks are in the other advisory key space, two 32-bit keys (PostgreSQL keeps the two spaces apart,
 * so they never meet the locks above): this namespace ("nksk"), and 32 bits of the name's hash with a fixed seed.
 * Two names with the same hash only wait for each other.
 */
const KEY_LOCK_NAMESPACE = 0x6e6b736b;
const KEY_LOCK_SEED = '7956579861427222899'; // "nks:keys": any fixed value, the same in every instance
/**
 * How long `withLocks`' transaction may sit idle while its `fn` runs (its other calls use other connections): past
 * the enclave's deadline, short of leaving locks held for long by a parent that vanished.
 */
const LOCK_IDLE_TIMEOUT = '60s';
/** Connections of `withLocks` (beside `poolSize`): key changes waiting for one wait at most the connect timeout. */
const LOCK_POOL_SIZE = 4;
/** The change feed's heartbeat: how often `deliveredThrough` can advance. */
const HEARTBEAT_MS = 250;
/** A migration may rewrite tables: it is bounded, but not by a request's deadline. */
const MIGRATION_TIMEOUT_MS = 300_000;
/** Beyond the server's statement timeout, the time a reply may take to arrive before the client gives up. */
const REPLY_MARGIN_MS = 1_000;

/** BIGINT (times, seqs, counts) as numbers, as SQLite gives them; for this engine's pools only. */
const types = new pg.TypeOverrides();
types.setTypeParser(pg.types.builtins.INT8, (v: string) => Number(v));

const SQL = {
  insertKey: `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, attestation, disabled, created_at, updated_at,
                                project_id, subject, state, record, record_signature, record_seq, predecessor)
              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14, $15, $16)
              ON CONFLICT DO NOTHING
              RETURNING *`,
  byKeyId: 'SELECT * FROM keys WHERE key_id = $1',
  byKeyIdForShare: 'SELECT * FROM keys WHERE key_id = $1 FOR SHARE',
  byKeyIdForUpdate: 'SELECT * FROM keys WHERE key_id = $1 FOR UPDATE',
  // An external id names its first key (predecessor IS NULL: unique), and through it a subject of a project: the
  // answer is that subject's active key (a successor carries the external id too), or the first key if none is.
  // Never a row found by the external id alone: another project's key stored under it must not be the answer.
  byExternalId: `WITH f AS (SELECT * FROM keys WHERE external_id = $1 AND predecessor IS NULL)
                 SELECT * FROM keys WHERE key_id = COALESCE(
                   (SELECT a.key_id FROM keys a, f WHERE f.subject IS NOT NULL AND a.project_id = f.project_id
                      AND a.subject = f.subject AND a.state = 'active'),
                   (SELECT key_id FROM f))`,
  activeBySubject: "SELECT * FROM keys WHERE project_id = $1 AND subject = $2 AND subject IS NOT NULL AND state = 'active'",
  pendingBySubject: "SELECT * FROM keys WHERE project_id = $1 AND subject = $2 AND subject IS NOT NULL AND state = 'pending'",
  bySubject: 'SELECT * FROM keys WHERE project_id = $1 AND subject = $2 AND subject IS NOT NULL ORDER BY seq',
  setLabels: 'UPDATE keys SET labels = $2, updated_at = $3 WHERE key_id = $1 RETURNING *',
  idempotency: 'SELECT key_id, body_sha256 FROM idempotency WHERE scope = $1 AND idem_key = $2 AND expires_at > $3',
  // Expired entries, oldest first; rows another transaction holds are left to the next purge.
  purgeIdempotency: `DELETE FROM idempotency WHERE (scope, idem_key) IN
                       (SELECT scope, idem_key FROM idempotency WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
  // The entry, or an expired one of the same key replaced; an unexpired one (committed by a concurrent create, waited
  // for) is left as it is and nothing is returned.
  claimIdempotency: `INSERT INTO idempotency (scope, idem_key, body_sha256, key_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (scope, idem_key) DO UPDATE SET body_sha256 = EXCLUDED.body_sha256, key_id = EXCLUDED.key_id,
                       created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
                     WHERE idempotency.expires_at <= EXCLUDED.created_at
                     RETURNING key_id`,
  dropIdempotency: 'DELETE FROM idempotency WHERE scope = $1 AND idem_key = $2',
  withoutRecord: 'SELECT * FROM keys WHERE record IS NULL AND seq > $1 ORDER BY seq LIMIT $2',
  setLegacyDisabled: `UPDATE keys SET disabled = $2, updated_at = $3 WHERE key_id = $1 AND record IS NULL RETURNING *`,
  setRecord: `UPDATE keys SET project_id = $2, subject = $3, state = $4, disabled = $5, record = $6, record_signature = $7,
                              record_seq = $8, predecessor = $9, disable_pending = 0, updated_at = $10
              WHERE key_id = $1 AND record_seq = $8::bigint - 1
              RETURNING *`,
  migrated: `UPDATE keys SET blob = $2, project_id = $3, subject = $4, state = $5, disabled = $6, record = $7, record_signature = $8,
                             record_seq = $9, predecessor = $10, disable_pending = $11, updated_at = $12
             WHERE key_id = $1 AND record IS NULL
             RETURNING key_id`,
  counts: `SELECT COUNT(*) AS total,
                  COUNT(*) FILTER (WHERE disabled = 1 OR disable_pending = 1) AS disabled,
                  COUNT(*) FILTER (WHERE record IS NULL) AS without_record,
                  COUNT(*) FILTER (WHERE subject IS NOT NULL AND state = 'pending') AS pending
           FROM keys`,
  pendingDisable: 'SELECT key_id FROM keys WHERE disable_pending = 1 ORDER BY seq',
  project: 'SELECT * FROM projects WHERE project_id = $1',
  projectByKey: 'SELECT * FROM projects WHERE project_key = $1',
  projectPage: 'SELECT * FROM projects WHERE project_id > $1 ORDER BY project_id LIMIT $2',
  jwksHosts: "SELECT * FROM projects WHERE state = 'active' AND auth_type = 'jwt' AND jwks_host IS NOT NULL ORDER BY project_id",
  insertProject: `INSERT INTO projects (project_id, record, signature, seq, updated_at, name, project_key, state, auth_type, jwks_host, created_at)
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
  setProjectRecord: `UPDATE projects SET record = $2, signature = $3, seq = $4, updated_at = $5, project_key = $6, state = $7,
                                         auth_type = $8, jwks_host = $9, created_at = $10
                     WHERE project_id = $1 AND seq = $4::bigint - 1
                     RETURNING *`,
  insertTlsKey: `INSERT INTO tls_keys (public_key, blob, blob_signature, names, csr, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
  tlsKey: 'SELECT * FROM tls_keys WHERE public_key = $1',
  currentTlsKey: 'SELECT * FROM tls_keys WHERE current = 1',
  pendingTlsKeys: 'SELECT * FROM tls_keys WHERE chain IS NULL ORDER BY created_at DESC, public_key LIMIT $1',
  clearCurrentTlsKey: 'UPDATE tls_keys SET current = 0 WHERE current = 1',
  // Announced by the database (tls:<public key>): every instance's parent then installs it in its enclave (tls-keys.ts).
  setCurrentTlsKey: `UPDATE tls_keys SET chain = $2, installed_at = $3, current = 1 WHERE public_key = $1
                     RETURNING *`,
};

type Queryable = Pick<pg.ClientBase, 'query'>;

async function rows<R extends pg.QueryResultRow>(db: Queryable, sql: string, params: unknown[] = []): Promise<R[]> {
  return (await db.query<R>(sql, params)).rows;
}
const first = async <R extends pg.QueryResultRow>(db: Queryable, sql: string, params: unknown[] = []) =>
  (await rows<R>(db, sql, params))[0];

/** A pooled connection; none within the connect timeout (or the server refusing) is STORAGE_UNAVAILABLE. */
async function connect(pool: pg.Pool): Promise<pg.PoolClient> {
  try {
    return await pool.connect();
  } catch (err) {
    throw storageError(err);
  }
}

/** Thrown inside an insert's transaction to roll it back and try again (the rows it met changed meanwhile). */
class RetryInsert extends Error {}

const isUniqueViolation = (err: unknown) => (err as { code?: unknown }).code === '23505';
/** The one CONFLICT an insert answers: its (random, 128-bit) key id is stored already. */
const keyIdTaken = (keyId: string) => new KeystoreError('CONFLICT', `key ${keyId} is already stored`);

/** The schema version a database is at: 0 if it has none yet. */
async function schemaVersion(db: Queryable): Promise<number> {
  const present = await first<{ t: string | null }>(db, "SELECT to_regclass('nks_schema')::text AS t");
  if (!present?.t) return 0;
  return (await first<{ v: number | null }>(db, 'SELECT max(version) AS v FROM nks_schema'))?.v ?? 0;
}

function checkVersion(version: number, migrate: boolean): void {
  if (version > LATEST_VERSION)
    throw new Error(`database schema version ${version} is newer than this build (${LATEST_VERSION}); refusing to open it`);
  if (version > 0 && version < POSTGRES_BASELINE)
    throw new Error(`database schema version ${version} is not one a PostgreSQL store has (they start at ${POSTGRES_BASELINE})`);
  if (!migrate && version < LATEST_VERSION)
    throw new Error(
      `database schema version ${version} is behind this build (${LATEST_VERSION}): run \`parent store migrate\` (or \`nks store migrate\`) first`,
    );
}

const keyParams = (key: NewKey) => {
  const c = recordColumns(key.signed, key.record);
  return [
    key.keyId,
    key.externalId,
    key.address,
    key.publicKey,
    key.blob,
    JSON.stringify(key.labels),
    key.attestation,
    c.disabled,
    key.createdAt,
    c.projectId,
    c.subject,
    c.state,
    c.record,
    c.recordSignature,
    c.recordSeq,
    c.predecessor,
  ];
};

const projectParams = (signed: SignedRecord, record: ProjectRecord) => {
  const c = projectColumns(record);
  return [
    record.projectId,
    signed.record,
    signed.signature,
    record.seq,
    Date.now(),
    c.projectKey,
    c.state,
    c.authType,
    c.jwksHost,
    c.createdAt,
  ];
};

export class PostgresEngine implements StoreEngine {
  readonly kind = 'postgres' as const;
  readonly shared = true;
  private readonly pool: pg.Pool;
  private readonly lockPool: pg.Pool;
  private readonly clientConfig: pg.ClientConfig;
  private readonly logger: Logger | undefined;
  private readonly subscribers: Array<{ listener: (change: StoreChange) => void; onCoherence: (live: boolean) => void }> = [];
  private listener: ChangeListener | undefined;

  private constructor(private readonly options: PostgresOptions) {
    this.logger = options.logger;
    const statementTimeoutMs = options.statementTimeoutMs ?? 5_000;
    this.clientConfig = {
      connectionString: options.url,
      ...(options.ssl !== undefined ? { ssl: options.ssl } : {}),
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
      statement_timeout: statementTimeoutMs,
      query_timeout: statementTimeoutMs + REPLY_MARGIN_MS,
      // A transaction its client abandoned (a half-open connection) must not hold rows locked for long.
      idle_in_transaction_session_timeout: Math.max(30_000, statementTimeoutMs * 2),
      keepAlive: true,
      application_name: 'nks-parent',
      types,
    };
    this.pool = new pg.Pool({ ...this.clientConfig, max: options.poolSize });
    // `withLocks` holds a connection while its `fn` uses the main pool: from a pool of its own, so changes of many
    // keys at once cannot take every connection their own reads and writes wait for. Small: key changes are rare.
    this.lockPool = new pg.Pool({ ...this.clientConfig, max: LOCK_POOL_SIZE, application_name: 'nks-parent-locks' });
    this.lockPool.on('error', (err) => this.logger?.warn({ err: describeError(err) }, 'idle database lock connection failed'));
    // A pool listens for its clients' errors only while they are idle: one the server ends (a restart's 57P01) or
    // the network resets while checked out would be an unhandled 'error' event, which ends the process. The query
    // in flight fails too, and that is what is reported; a client that failed is destroyed, not reused.
    for (const pool of [this.pool, this.lockPool]) pool.on('connect', (client) => client.on('error', () => undefined));
    // An idle connection that fails (server restart, network) is dropped by the pool; it must not crash us.
    this.pool.on('error', (err) => this.logger?.warn({ err: describeError(err) }, 'idle database connection failed'));
  }

  /**
   * Connects and checks the schema: migrated to this build's version under an advisory lock (instances
   * starting together migrate once), or, with `migrate` false, refused if behind. A database newer than this
   * build is refused either way.
   */
  static async open(options: PostgresOptions): Promise<PostgresEngine> {
    const engine = new PostgresEngine(options);
    try {
      if (options.migrate) await engine.migrate();
      else checkVersion(await engine.run((db) => schemaVersion(db)), false);
    } catch (err) {
      await engine.pool.end().catch(() => undefined);
      await engine.lockPool.end().catch(() => undefined);
      throw storageError(err);
    }
    return engine;
  }

  /** The schema version of the database `options` names, without migrating or refusing anything (`store status`). */
  static async versionOf(options: Pick<PostgresOptions, 'url' | 'ssl' | 'connectTimeoutMs' | 'statementTimeoutMs'>): Promise<StoreStatus> {
    const client = new pg.Client({
      connectionString: options.url,
      ...(options.ssl !== undefined ? { ssl: options.ssl } : {}),
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
      statement_timeout: options.statementTimeoutMs ?? 5_000,
      types,
    });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const version = await schemaVersion(client);
      return { engine: 'postgres', location: redactUrl(options.url), schemaVersion: version, latestVersion: LATEST_VERSION };
    } catch (err) {
      throw storageError(err);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  private async migrate(): Promise<void> {
    const client = new pg.Client({
      ...this.clientConfig,
      statement_timeout: MIGRATION_TIMEOUT_MS,
      query_timeout: MIGRATION_TIMEOUT_MS + REPLY_MARGIN_MS,
    });
    client.on('error', () => undefined); // the query in flight fails too, which is what is reported
    await client.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [MIGRATION_LOCK]);
      const version = await schemaVersion(client);
      checkVersion(version, true);
      for (let v = Math.max(version, POSTGRES_BASELINE - 1); v < LATEST_VERSION; v++) {
        const step = POSTGRES_MIGRATIONS[v];
        if (!step) throw new Error(`no PostgreSQL migration from schema version ${v}`);
        await client.query(step);
        await client.query('INSERT INTO nks_schema (version) VALUES ($1)', [v + 1]);
        this.logger?.info({ version: v + 1 }, 'database schema migrated');
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** One statement (autocommit) through the pool (which destroys the connection on any error: pg-pool's `query`). */
  private async run<T>(fn: (db: Queryable) => Promise<T>): Promise<T> {
    try {
      return await fn(this.pool);
    } catch (err) {
      throw storageError(err);
    }
  }

  /**
   * `fn` in a transaction (read committed) on one pooled connection. A connection that failed, or whose reply
   * timed out (a late reply would answer the next query), is destroyed rather than returned to the pool.
   */
  private async tx<T>(fn: (db: Queryable) => Promise<T>): Promise<T> {
    const client = await connect(this.pool);
    try {
      await client.query('BEGIN');
      const out = await fn(client);
      await client.query('COMMIT');
      client.release();
      return out;
    } catch (err) {
      await this.rollback(client, spoilsSession(err));
      throw storageError(err);
    }
  }

  /**
   * A pooled connection whose transaction failed: rolled back and returned, or destroyed (so the pool makes a new
   * one rather than handing it out again) when `destroy` says the session is no good (spoilsSession: a lost
   * connection, a server now read-only or going away) or the rollback fails.
   */
  private async rollback(client: pg.PoolClient, destroy: boolean): Promise<void> {
    if (destroy) return client.release(true);
    try {
      await client.query('ROLLBACK');
      client.release();
    } catch {
      client.release(true);
    }
  }

  subscribe(listener: (change: StoreChange) => void, onCoherence: (live: boolean) => void): void {
    this.subscribers.push({ listener, onCoherence });
    this.listener ??= new ChangeListener({
      client: { ...this.clientConfig, application_name: LISTENER_NAME },
      heartbeatMs: HEARTBEAT_MS,
      onChange: (change) => this.subscribers.forEach((s) => s.listener(change)),
      onCoherence: (live) => this.subscribers.forEach((s) => s.onCoherence(live)),
      ...(this.logger ? { logger: this.logger } : {}),
    });
  }

  /**
   * The send time of the change feed's last answered heartbeat (postgres-listener.ts): the server delivers every
   * notification committed before a query on the same connection ahead of its answer. 0 before `subscribe`, and
   * until the feed's first heartbeat is answered.
   */
  deliveredThrough(): number {
    return this.listener?.deliveredThrough ?? 0;
  }

  /**
   * `fn` while holding transaction-scoped advisory locks named `names`, on one pooled connection of its own (`fn`
   * makes its calls over the others): taken in one statement, in hash order (the same in every instance, so two
   * instances never wait for each other crosswise), so the wait is bounded by the statement timeout
   * (STORAGE_UNAVAILABLE past it). The transaction may then sit idle for LOCK_IDLE_TIMEOUT while `fn` runs. The
   * locks go with the transaction's end (or the connection's); the connection is returned in every case.
   */
  async withLocks<T>(names: readonly string[], fn: () => Promise<T>): Promise<T> {
    if (names.length === 0) return fn();
    const client = await connect(this.lockPool);
    try {
      await client.query('BEGIN');
      await client.query(`SET LOCAL idle_in_transaction_session_timeout = '${LOCK_IDLE_TIMEOUT}'`);
      await client.query(
        `SELECT pg_advisory_xact_lock($1::int4, h) FROM
           (SELECT DISTINCT hashtextextended(n, $3::bigint)::bit(32)::int4 AS h FROM unnest($2::text[]) AS n ORDER BY h) AS locks`,
        [KEY_LOCK_NAMESPACE, [...names], KEY_LOCK_SEED],
      );
    } catch (err) {
      await this.rollback(client, spoilsSession(err));
      throw storageError(err);
    }
    let out: T;
    try {
      out = await fn();
    } catch (err) {
      await this.rollback(client, false);
      throw err;
    }
    try {
      await client.query('COMMIT');
      client.release();
    } catch (err) {
      // The locks are gone with the session anyway; what `fn` stored stands (its writes are compare-and-set).
      client.release(true);
      this.logger?.warn({ err: describeError(err) }, 'the lock transaction ended badly after its changes were made');
    }
    return out;
  }

  async status(): Promise<StoreStatus> {
    const schemaVersionNow = await this.run((db) => schemaVersion(db));
    return { engine: 'postgres', location: redactUrl(this.options.url), schemaVersion: schemaVersionNow, latestVersion: LATEST_VERSION };
  }

  async ping(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    // It reads the tables (a table locked by another session must fail readiness), under a lock timeout of its
    // own: the one implicit transaction of this multi-statement query holds the SET LOCAL.
    const text = `SET LOCAL lock_timeout = ${Math.max(1, Math.floor(timeoutMs))};
                  SELECT (SELECT 1 FROM keys LIMIT 1) AS k, (SELECT 1 FROM projects LIMIT 1) AS p`;
    const answer = this.pool.query({ text, query_timeout: timeoutMs } as pg.QueryConfig).then(
      () => true,
      () => false,
    );
    try {
      return await Promise.race([answer, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A committed write that changes no row: a transaction id assigned (`txid_current()`) is a commit record
   * written and flushed to the WAL, so a full or failing disk fails it as it fails any write (the store's
   * readiness probe, key-store.ts). A read-only session (a server that became a replica, or read-only by
   * default) may still assign one, so its `transaction_read_only` is read in the same statement.
   */
  async probeWrite(): Promise<void> {
    const r = await this.run((db) => first<{ ro: string }>(db, "SELECT current_setting('transaction_read_only') AS ro, txid_current()"));
    if (r?.ro !== 'off') throw new KeystoreError('STORAGE_UNAVAILABLE', 'the database is read-only (25006)');
  }

  /** The key an insert of `key` yields to: the subject's key by external id, or the subject's active key. */
  private async existing(db: Queryable, key: NewKey): Promise<KeyRow | undefined> {
    if (key.externalId) {
      const r = await first<KeyRow>(db, SQL.byExternalId, [key.externalId]);
      if (r) return r;
    }
    if (key.record.subject !== null) return first<KeyRow>(db, SQL.activeBySubject, [key.record.projectId, key.record.subject]);
    return undefined;
  }

  /**
   * With an Idempotency-Key, its entry is claimed first in the transaction: a concurrent create of the same key (on
   * any instance) waits for it, then finds the entry committed and is answered its key, nothing written.
   */
  async insert(key: NewKey, idem?: IdempotencyClaim): Promise<InsertResult> {
    if (key.record.keyId !== key.keyId || key.record.seq !== 0) throw new Error('insert: the record is not the first one of this key');
    // A conflict whose winner is gone by the time it is read (it changed state meanwhile) is tried again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const out = await this.tx(async (db): Promise<InsertResult | undefined> => {
        if (idem) {
          await db.query(SQL.purgeIdempotency, [idem.now, IDEMPOTENCY_PURGE_BATCH]);
          const claimed = await first(db, SQL.claimIdempotency, [
            idem.scope,
            idem.key,
            idem.bodySha256,
            key.keyId,
            idem.now,
            idem.expiresAt,
          ]);
          if (!claimed) {
            const entry = await first<{ key_id: string; body_sha256: string }>(db, SQL.idempotency, [idem.scope, idem.key, idem.now]);
            const row = entry && (await first<KeyRow>(db, SQL.byKeyId, [entry.key_id]));
            if (!entry || !row) throw new KeystoreError('STORAGE_UNAVAILABLE', 'the Idempotency-Key entry changed meanwhile; retry');
            return { record: toStored(row), created: false, idempotent: { keyId: entry.key_id, bodySha256: entry.body_sha256 } };
          }
        }
        const r = await this.insertRow(db, key);
        if (!r) throw new RetryInsert();
        // Only a key this create made is remembered (as sqlite-db.ts): the claim of one that yields to another's is dropped.
        if (idem && !r.created) await db.query(SQL.dropIdempotency, [idem.scope, idem.key]);
        return r;
      }).catch((err: unknown) => {
        if (err instanceof RetryInsert) return undefined;
        throw err;
      });
      if (out) return out;
    }
    // Not the request's fault: the rows it met kept changing (state changes of the winner). Retryable.
    throw new KeystoreError('STORAGE_UNAVAILABLE', `key ${key.keyId}: the stored keys it conflicts with kept changing; retry`);
  }

  /** An unexpired Idempotency-Key's entry in its scope. */
  async idempotency(scope: string, key: string, now: number): Promise<IdempotencyEntry | undefined> {
    const e = await this.run((db) => first<{ key_id: string; body_sha256: string }>(db, SQL.idempotency, [scope, key, now]));
    return e ? { keyId: e.key_id, bodySha256: e.body_sha256 } : undefined;
  }

  /** A key's labels replaced (in no record: the guard lets them change alone); undefined if no such key. */
  async setLabels(keyId: string, labels: Record<string, string>): Promise<StoredKey | undefined> {
    const r = await this.run((db) => first<KeyRow>(db, SQL.setLabels, [keyId, JSON.stringify(labels), Date.now()]));
    return r ? toStored(r) : undefined;
  }

  /** The key row of an insert, or the one it yields to; undefined when that one changed meanwhile (try again). */
  private async insertRow(db: Queryable, key: NewKey): Promise<InsertResult | undefined> {
    const before = await this.existing(db, key);
    if (before) return { record: toStored(before), created: false };
    const inserted = await first<KeyRow>(db, SQL.insertKey, keyParams(key));
    if (inserted) return { record: toStored(inserted), created: true };
    const winner = await this.existing(db, key);
    if (winner) return { record: toStored(winner), created: false };
    if (await first<KeyRow>(db, SQL.byKeyId, [key.keyId])) throw keyIdTaken(key.keyId);
    return undefined;
  }

  async get(keyId: string): Promise<StoredKey | undefined> {
    const r = await this.run((db) => first<KeyRow>(db, SQL.byKeyId, [keyId]));
    return r ? toStored(r) : undefined;
  }

  async getByExternalId(externalId: string): Promise<StoredKey | undefined> {
    const r = await this.run((db) => first<KeyRow>(db, SQL.byExternalId, [externalId]));
    return r ? toStored(r) : undefined;
  }

  async activeKeyFor(projectId: string, subject: string): Promise<StoredKey | undefined> {
    const r = await this.run((db) => first<KeyRow>(db, SQL.activeBySubject, [projectId, subject]));
    return r ? toStored(r) : undefined;
  }

  async pendingKeyFor(projectId: string, subject: string): Promise<StoredKey | undefined> {
    const r = await this.run((db) => first<KeyRow>(db, SQL.pendingBySubject, [projectId, subject]));
    return r ? toStored(r) : undefined;
  }

  async history(keyId: string): Promise<StoredKey[]> {
    const r = await this.run((db) => first<KeyRow>(db, SQL.byKeyId, [keyId]));
    if (!r) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
    if (r.record === null || r.project_id === null || r.subject === null) return [toStored(r)];
    const all = await this.run((db) => rows<KeyRow>(db, SQL.bySubject, [r.project_id, r.subject]));
    return all.map(toStored);
  }

  async insertSuccessor(key: NewKey): Promise<{ record: StoredKey; created: boolean }> {
    const { record } = key;
    if (record.keyId !== key.keyId || record.seq !== 0 || record.state !== 'pending' || !record.predecessor || record.subject === null)
      throw new Error('insertSuccessor: the record is not the first one of a successor');
    return this.tx(async (db) => {
      // Locked for share: a concurrent record of the predecessor (its retirement) is waited for and seen.
      const predecessor = await first<KeyRow>(db, SQL.byKeyIdForShare, [record.predecessor]);
      if (!predecessor || predecessor.project_id !== record.projectId || predecessor.subject !== record.subject)
        throw new KeystoreError('KEY_NOT_FOUND', `key ${record.predecessor} (the predecessor) is not a stored key of this subject`);
      const pending = await first<KeyRow>(db, SQL.pendingBySubject, [record.projectId, record.subject]);
      if (pending) return { record: toStored(pending), created: false };
      if (predecessor.state !== 'active') throw keyStateError(predecessor.key_id, predecessor.state as KeyState, 'active');
      const inserted = await first<KeyRow>(db, SQL.insertKey, keyParams(key));
      if (inserted) return { record: toStored(inserted), created: true };
      const winner = await first<KeyRow>(db, SQL.pendingBySubject, [record.projectId, record.subject]);
      if (winner) return { record: toStored(winner), created: false };
      if (await first<KeyRow>(db, SQL.byKeyId, [key.keyId])) throw keyIdTaken(key.keyId);
      // The successor it met is no longer pending (activated or cancelled meanwhile): retryable.
      throw new KeystoreError('STORAGE_UNAVAILABLE', `key ${key.keyId}: the pending key it conflicts with changed meanwhile; retry`);
    });
  }

  async list(limit: number, cursor?: string, options: ListOptions = {}): Promise<Page> {
    const after = cursor ? decodeCursor(cursor) : 0;
    const params: unknown[] = [];
    const sql = keyPageSql('postgres', after, limit + 1, options, (v) => `$${params.push(v)}`);
    const found = await this.run((db) => rows<KeyRow>(db, sql, params));
    const page = found.slice(0, limit);
    const last = page[page.length - 1];
    return { keys: page.map(toStored), nextCursor: found.length > limit && last ? encodeCursor(last.seq) : null };
  }

  async updateRecords(updates: ReadonlyArray<{ signed: SignedRecord; record: KeyRecord }>): Promise<StoredKey[]> {
    // The record leaving `active` first, so the one-active-key index holds after each statement.
    const ordered = [...updates].sort((a, b) => Number(a.record.state === 'active') - Number(b.record.state === 'active'));
    return this.tx(async (db) => {
      const stored = new Map<string, KeyRow>();
      for (const { signed, record } of ordered) {
        const c = recordColumns(signed, record);
        const row = await first<KeyRow>(db, SQL.setRecord, [
          record.keyId,
          c.projectId,
          c.subject,
          c.state,
          c.disabled,
          c.record,
          c.recordSignature,
          c.recordSeq,
          c.predecessor,
          Date.now(),
        ]);
        if (row) {
          stored.set(record.keyId, row);
          continue;
        }
        if (!(await first<KeyRow>(db, SQL.byKeyId, [record.keyId])))
          throw new KeystoreError('KEY_NOT_FOUND', `key ${record.keyId} does not exist`);
        throw new KeystoreError('CONFLICT', `key ${record.keyId} changed meanwhile; retry`);
      }
      return updates.map((u) => toStored(stored.get(u.record.keyId) as KeyRow));
    });
  }

  async setLegacyDisabled(keyId: string, disabled: boolean): Promise<StoredKey | undefined> {
    const r = await this.run((db) => first<KeyRow>(db, SQL.setLegacyDisabled, [keyId, disabled ? 1 : 0, Date.now()]));
    return r ? toStored(r) : undefined;
  }

  async keysWithoutRecord(afterSeq: number, limit: number): Promise<Array<StoredKey & { rowSeq: number }>> {
    const found = await this.run((db) => rows<KeyRow>(db, SQL.withoutRecord, [afterSeq, limit]));
    return found.map((r) => ({ ...toStored(r), rowSeq: r.seq }));
  }

  async migrateKey(keyId: string, blob: string, signed: SignedRecord, record: KeyRecord): Promise<boolean> {
    if (record.keyId !== keyId || record.seq !== 0) throw new Error('migrateKey: the record is not the first one of this key');
    return this.tx(async (db) => {
      const row = await first<KeyRow>(db, SQL.byKeyIdForUpdate, [keyId]);
      if (!row || row.record !== null) return false;
      const c = recordColumns(signed, record);
      const disablePending = row.disabled === 1 && !record.disabled ? 1 : 0;
      const done = await rows(db, SQL.migrated, [
        keyId,
        blob,
        c.projectId,
        c.subject,
        c.state,
        c.disabled,
        c.record,
        c.recordSignature,
        c.recordSeq,
        c.predecessor,
        disablePending,
        Date.now(),
      ]);
      return done.length === 1;
    });
  }

  async keysPendingDisable(): Promise<string[]> {
    return (await this.run((db) => rows<{ key_id: string }>(db, SQL.pendingDisable))).map((r) => r.key_id);
  }

  async getProject(projectId: string): Promise<StoredProject | undefined> {
    const r = await this.run((db) => first<ProjectRow>(db, SQL.project, [projectId]));
    return r ? toProject(r) : undefined;
  }

  async getProjectByKey(projectKey: string): Promise<StoredProject | undefined> {
    const r = await this.run((db) => first<ProjectRow>(db, SQL.projectByKey, [projectKey]));
    return r ? toProject(r) : undefined;
  }

  async listProjects(limit: number, cursor?: string): Promise<ProjectPage> {
    const after = cursor ? decodeProjectCursor(cursor) : '';
    const found = await this.run((db) => rows<ProjectRow>(db, SQL.projectPage, [after, limit + 1]));
    const page = found.slice(0, limit);
    const last = page[page.length - 1];
    return { projects: page.map(toProject), nextCursor: found.length > limit && last ? encodeProjectCursor(last.project_id) : null };
  }

  async activeJwtProjects(): Promise<StoredProject[]> {
    return (await this.run((db) => rows<ProjectRow>(db, SQL.jwksHosts))).map(toProject);
  }

  async seedProject(signed: SignedRecord, record: ProjectRecord, name: string = record.projectId): Promise<StoredProject> {
    const [id, rec, sig, seq, now, ...columns] = projectParams(signed, record);
    await this.run((db) => db.query(`${SQL.insertProject} ON CONFLICT DO NOTHING`, [id, rec, sig, seq, now, name, ...columns]));
    return (await this.getProject(record.projectId)) as StoredProject;
  }

  async insertProject(signed: SignedRecord, record: ProjectRecord, name: string): Promise<StoredProject> {
    if (record.seq !== 0) throw new Error('insertProject: the record is not the first one of this project');
    const [id, rec, sig, seq, now, ...columns] = projectParams(signed, record);
    try {
      const r = await this.run((db) =>
        first<ProjectRow>(db, `${SQL.insertProject} RETURNING *`, [id, rec, sig, seq, now, name, ...columns]),
      );
      return toProject(r as ProjectRow);
    } catch (err) {
      if (isUniqueViolation(err))
        throw new KeystoreError('CONFLICT', `project ${record.projectId} (or its project key) is already stored`, { cause: err });
      throw err;
    }
  }

  async updateProjectRecord(projectId: string, signed: SignedRecord, record: ProjectRecord): Promise<StoredProject> {
    if (record.projectId !== projectId) throw new Error('updateProjectRecord: the record is for another project');
    const r = await this.run((db) => first<ProjectRow>(db, SQL.setProjectRecord, projectParams(signed, record)));
    if (!r) throw new KeystoreError('CONFLICT', `project ${projectId} changed meanwhile; retry`);
    return toProject(r);
  }

  async insertTlsKey(key: NewTlsKey): Promise<StoredTlsKey> {
    try {
      const params = [key.publicKey, key.blob, key.blobSignature, JSON.stringify(key.names), key.csr, key.createdAt];
      return toTlsKey((await this.run((db) => first<TlsKeyRow>(db, SQL.insertTlsKey, params))) as TlsKeyRow);
    } catch (err) {
      if (isUniqueViolation(err)) throw new KeystoreError('CONFLICT', 'this TLS key is already stored', { cause: err });
      throw err;
    }
  }

  async tlsKey(publicKey: string): Promise<StoredTlsKey | undefined> {
    const r = await this.run((db) => first<TlsKeyRow>(db, SQL.tlsKey, [publicKey]));
    return r ? toTlsKey(r) : undefined;
  }

  async currentTlsKey(): Promise<StoredTlsKey | undefined> {
    const r = await this.run((db) => first<TlsKeyRow>(db, SQL.currentTlsKey));
    return r ? toTlsKey(r) : undefined;
  }

  async pendingTlsKeys(limit: number): Promise<StoredTlsKey[]> {
    return (await this.run((db) => rows<TlsKeyRow>(db, SQL.pendingTlsKeys, [limit]))).map(toTlsKey);
  }

  async setCurrentTlsKey(publicKey: string, chain: string, installedAt: number): Promise<StoredTlsKey> {
    return this.tx(async (db) => {
      // Two instances installing at once would both clear, then collide on the one-current index: one waits.
      await db.query('SELECT pg_advisory_xact_lock($1::bigint)', [TLS_LOCK]);
      if (!(await first<TlsKeyRow>(db, SQL.tlsKey, [publicKey]))) throw new KeystoreError('NOT_FOUND', 'this TLS key is not stored');
      await db.query(SQL.clearCurrentTlsKey);
      return toTlsKey((await first<TlsKeyRow>(db, SQL.setCurrentTlsKey, [publicKey, chain, installedAt])) as TlsKeyRow);
    });
  }

  async counts(): Promise<KeyCounts> {
    const r = await this.run((db) => first<{ total: number; disabled: number; without_record: number; pending: number }>(db, SQL.counts));
    return { total: r?.total ?? 0, disabled: r?.disabled ?? 0, withoutRecord: r?.without_record ?? 0, pending: r?.pending ?? 0 };
  }

  async close(): Promise<void> {
    await this.listener?.close();
    this.listener = undefined;
    await Promise.all([this.pool.end(), this.lockPool.end()]);
  }
}
