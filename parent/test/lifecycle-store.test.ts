/**
 * The key lifecycle in the parent's SQLite store (docs/LIFECYCLE.md), on real database files with records signed
 * by a test identity: one active and one pending key per (project, subject), held by unique indexes even against
 * SQL written directly; a successor stored with its predecessor's external id; an activation's two records
 * stored together or not at all; compare-and-set on seq; history oldest first; and the upgrade from schema 4.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { tempRunDir } from '@nks/shared-test/helpers';
import { SCHEMA_VERSION } from '../src/store/migrations';
import { SqliteDatabase } from '../src/store/sqlite-db';
import { ADDRESS, identity, keyRecord, newKey, next, update } from './store-fixtures';
import { SCHEMA_V1, SCHEMA_V2_STEP, SCHEMA_V3_STEP, SCHEMA_V4_STEP } from '../../test/support/legacy';
import { dropGuards } from '../../test/support/tamper';

/** The successor `keyId` of `predecessor` (alice's), as the enclave makes it. */
const successorOf = (keyId: string, predecessor: string, externalId: string | null = 'alice') =>
  newKey(keyId, externalId, { state: 'pending', predecessor });

describe('key lifecycle in the store', () => {
  let dir: string;
  let file: string;
  let store: SqliteDatabase;
  beforeEach(() => {
    dir = tempRunDir('nks-lifecycle-store-');
    file = path.join(dir, 'keys.db');
    store = new SqliteDatabase(file);
  });
  afterEach(() => {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('stores a successor pending with its predecessor, external id and labels; a second is refused and nothing is written', () => {
    store.insert(newKey('a', 'alice'));
    const { record, created } = store.insertSuccessor(successorOf('b', 'a'));
    expect(created).toBe(true);
    expect(record).toMatchObject({ keyId: 'b', externalId: 'alice', state: 'pending', predecessor: 'a', subject: 'alice' });
    expect(store.pendingKeyFor('default', 'alice')?.keyId).toBe('b');
    // Lookups by the external id (and the subject) answer the active key, not the pending one.
    expect(store.getByExternalId('alice')?.keyId).toBe('a');
    expect(store.activeKeyFor('default', 'alice')?.keyId).toBe('a');
    // A second successor: the pending one is answered, nothing written.
    const again = store.insertSuccessor(successorOf('c', 'a'));
    expect([again.created, again.record.keyId]).toEqual([false, 'b']);
    expect(store.get('c')).toBeUndefined();
    expect(store.counts()).toMatchObject({ total: 2, pending: 1 });
  });

  it('refuses a successor of a key that is not stored, of another subject, or not active', () => {
    store.insert(newKey('a', 'alice'));
    store.insert(newKey('x', 'xavier', { subject: 'xavier' }));
    expect(() => store.insertSuccessor(successorOf('b', 'nope'))).toThrow(expect.objectContaining({ code: 'KEY_NOT_FOUND' }));
    expect(() => store.insertSuccessor(successorOf('b', 'x'))).toThrow(expect.objectContaining({ code: 'KEY_NOT_FOUND' }));
    store.updateRecord('a', identity.sign(next(keyRecord('a'), 'retired')), next(keyRecord('a'), 'retired'));
    expect(() => store.insertSuccessor(successorOf('b', 'a'))).toThrow(
      expect.objectContaining({ code: 'KEY_STATE', details: { state: 'retired' }, message: expect.stringContaining('is retired') }),
    );
    expect(store.get('b')).toBeUndefined();
    // Not a successor's first record: a programming error, not a state.
    expect(() => store.insertSuccessor(newKey('b', 'alice'))).toThrow(/not the first one of a successor/);
  });

  it('activates in one transaction: both records or neither (the second write fails), and compare-and-set on seq', () => {
    store.insert(newKey('a', 'alice'));
    store.insertSuccessor(successorOf('b', 'a'));
    const active = next(keyRecord('b', { state: 'pending', predecessor: 'a' }), 'active');
    const retired = next(keyRecord('a'), 'retired');
    // The second of the two writes fails (a trigger stands for a disk or constraint failure mid-transaction).
    store.db.exec(`CREATE TRIGGER fail_b BEFORE UPDATE ON keys WHEN NEW.key_id = 'b' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;`);
    expect(() => store.updateRecords([update(active), update(retired)])).toThrow(/disk on fire/);
    expect([store.get('a')?.state, store.get('a')?.recordSeq, store.get('b')?.state, store.get('b')?.recordSeq]).toEqual([
      'active',
      0,
      'pending',
      0,
    ]);
    store.db.exec('DROP TRIGGER fail_b');
    // A stale pair (one key's seq already moved on): CONFLICT, neither written.
    const stale = { ...retired, seq: 5 };
    expect(() => store.updateRecords([update(active), update(stale)])).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
    expect([store.get('a')?.state, store.get('b')?.state]).toEqual(['active', 'pending']);

    const [b, a] = store.updateRecords([update(active), update(retired)]);
    expect([b?.keyId, b?.state, b?.recordSeq, a?.keyId, a?.state, a?.recordSeq]).toEqual(['b', 'active', 1, 'a', 'retired', 1]);
    // The external id now answers the new active key, as a create by it does.
    expect(store.getByExternalId('alice')?.keyId).toBe('b');
    expect(store.insert(newKey('z', 'alice')).record.keyId).toBe('b');
    expect(store.get('z')).toBeUndefined();
    // The same records again: the seq moved on, CONFLICT.
    expect(() => store.updateRecords([update(active), update(retired)])).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
    expect(() => store.updateRecords([update(next(keyRecord('nope'), 'retired'))])).toThrow(
      expect.objectContaining({ code: 'KEY_NOT_FOUND' }),
    );
    // Durable: a new store reads what was committed.
    store.close();
    store = new SqliteDatabase(file);
    expect([store.get('a')?.state, store.get('b')?.state, store.getByExternalId('alice')?.keyId]).toEqual(['retired', 'active', 'b']);
  });

  it("lists a subject's keys oldest first; a key without subject is its own history", () => {
    store.insert(newKey('a', 'alice'));
    store.insert(newKey('n', null, { subject: null }));
    store.insert(newKey('x', 'xavier', { subject: 'xavier' }));
    store.insertSuccessor(successorOf('b', 'a'));
    store.updateRecords([update(next(keyRecord('b', { state: 'pending', predecessor: 'a' }), 'cancelled'))]);
    store.insertSuccessor(successorOf('c', 'a'));
    const ids = (keyId: string) => store.history(keyId).map((k) => [k.keyId, k.state, k.predecessor]);
    const alice = [
      ['a', 'active', null],
      ['b', 'cancelled', 'a'],
      ['c', 'pending', 'a'],
    ];
    expect(ids('a')).toEqual(alice);
    expect(ids('c')).toEqual(alice);
    expect(ids('n')).toEqual([['n', 'active', null]]);
    expect(ids('x')).toEqual([['x', 'active', null]]);
    expect(() => store.history('nope')).toThrow(expect.objectContaining({ code: 'KEY_NOT_FOUND' }));
  });

  it('refuses a second active or pending key of a subject, and a second first key of an external id, in SQL', () => {
    store.insert(newKey('a', 'alice'));
    store.insertSuccessor(successorOf('b', 'a'));
    const insert = (keyId: string, state: string, externalId: string | null, predecessor: string | null) =>
      store.db
        .prepare(
          `INSERT INTO keys (key_id, external_id, address, public_key, blob, created_at, updated_at, project_id, subject, state,
                             record, record_signature, record_seq, predecessor)
           VALUES (?, ?, ?, '0x04', 'AAAA', 1, 1, 'default', 'alice', ?, 'AAAA', 'AAAA', 0, ?)`,
        )
        .run(keyId, externalId, ADDRESS, state, predecessor);
    expect(() => insert('c', 'active', null, 'a')).toThrow(/UNIQUE constraint failed: keys.project_id, keys.subject/);
    expect(() => insert('c', 'pending', null, 'a')).toThrow(/UNIQUE constraint failed: keys.project_id, keys.subject/);
    dropGuards(store.db); // the unique indexes alone are what this shows
    expect(() => store.db.prepare("UPDATE keys SET state = 'active' WHERE key_id = 'b'").run()).toThrow(/UNIQUE constraint failed/);
    expect(() => insert('c', 'retired', 'alice', null)).toThrow(/UNIQUE constraint failed: keys.external_id/);
    // Retired and cancelled keys are many; another subject has its own active key.
    insert('c', 'cancelled', 'alice', 'a');
    insert('d', 'retired', 'alice', 'a');
    expect(store.history('a').map((k) => k.keyId)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('opens a database of schema version 4 (0.6): keys keep their rows and seq, external ids their keys', () => {
    store.close();
    const old = path.join(dir, 'v4.db');
    const db = new Database(old);
    db.exec(SCHEMA_V1);
    db.exec(SCHEMA_V2_STEP);
    db.exec(SCHEMA_V3_STEP);
    db.exec(SCHEMA_V4_STEP);
    db.pragma('user_version = 4');
    const a = newKey('a', 'alice');
    const row = db.prepare(
      `INSERT INTO keys (seq, key_id, external_id, address, public_key, blob, labels, created_at, updated_at, project_id, subject,
                         state, record, record_signature, record_seq, disable_pending)
       VALUES (?, ?, ?, ?, '0x04', 'AAAA', '{"tier":"gold"}', 5, 6, ?, ?, 'active', ?, ?, 0, 0)`,
    );
    row.run(7, 'a', 'alice', ADDRESS, 'default', 'alice', a.signed.record, a.signed.signature);
    const n = newKey('n', null, { subject: null });
    row.run(9, 'n', null, ADDRESS, 'default', null, n.signed.record, n.signed.signature);
    // A key made before 0.4, not migrated: no record.
    db.prepare(
      `INSERT INTO keys (seq, key_id, external_id, address, public_key, blob, created_at, updated_at, disabled)
       VALUES (11, 'old', 'olga', ?, '0x04', 'djE=', 5, 6, 1)`,
    ).run(ADDRESS);
    db.close();

    store = new SqliteDatabase(old);
    expect(store.db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBe(7);
    expect(store.get('a')).toMatchObject({
      externalId: 'alice',
      state: 'active',
      predecessor: null,
      labels: { tier: 'gold' },
      record: a.signed,
    });
    expect(store.getByExternalId('alice')?.keyId).toBe('a');
    expect(store.getByExternalId('olga')).toMatchObject({ keyId: 'old', record: null, disabled: true });
    expect(store.list(10).keys.map((k) => k.keyId)).toEqual(['a', 'n', 'old']);
    // The lifecycle works on the upgraded rows, and new rows continue the sequence.
    store.insertSuccessor(successorOf('b', 'a'));
    const seqOf = (keyId: string) => (store.db.prepare('SELECT seq FROM keys WHERE key_id = ?').get(keyId) as { seq: number }).seq;
    expect(seqOf('b')).toBe(12);
    expect(store.history('a').map((k) => k.keyId)).toEqual(['a', 'b']);
    const indexes = store.db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'keys' AND name NOT LIKE 'sqlite_%' ORDER BY name")
      .all()
      .map((r) => (r as { name: string }).name);
    expect(indexes).toEqual([
      'keys_active_subject',
      'keys_address',
      'keys_disabled',
      'keys_external_id',
      'keys_external_id_first',
      'keys_pending_subject',
      'keys_subject',
      'keys_without_record',
    ]);
    store.close();
    // Reopened: nothing runs again.
    store = new SqliteDatabase(old);
    expect(store.get('b')?.state).toBe('pending');
    expect(store.insertSuccessor(successorOf('c', 'a'))).toMatchObject({ created: false, record: { keyId: 'b' } });
  });
});
