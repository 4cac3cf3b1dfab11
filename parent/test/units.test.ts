import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { tempRunDir } from '@nks/shared-test/helpers';
import { IDENTIFIER_SAMPLES } from '@nks/shared-test/identifier-samples';
import { startProgram } from '../../test/support/process';
import { hashToken, TokenAuth } from '../src/api/auth';
import { trustedProxies } from '../src/api/client-address';
import { PARENT_CONFIG_DEFAULTS, parseParentConfig } from '../src/config';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS } from '@nks/shared/transport';
import { DEFAULT_WALLET_STORE_ADDRESS, DEFAULT_WALLETS_ADDRESS } from '@nks/shared/ingress';
import type { KeyRecord, ProjectRecord } from '@nks/shared/records';
import { SCHEMA_VERSION } from '../src/store/migrations';
import { SqliteDatabase } from '../src/store/sqlite-db';
import { TestIdentity } from './fake-enclave';
import { SCHEMA_V1, SCHEMA_V2_STEP, SCHEMA_V3_STEP } from '../../test/support/legacy';
import { dropGuards } from '../../test/support/tamper';

describe('bearer tokens', () => {
  const auth = new TokenAuth([
    { name: 'signer', sha256: hashToken('tok-sign'), scopes: ['keys:sign'] },
    { name: 'root', sha256: hashToken('tok-admin'), scopes: ['admin'] },
  ]);

  it('authenticates by SHA-256 and authorizes by scope; admin has every scope', () => {
    const signer = auth.authenticate('Bearer tok-sign');
    expect(signer.name).toBe('signer');
    expect(() => TokenAuth.authorize(signer, 'keys:sign')).not.toThrow();
    expect(() => TokenAuth.authorize(signer, 'keys:create')).toThrow(expect.objectContaining({ code: 'FORBIDDEN' }));
    const root = auth.authenticate('Bearer tok-admin');
    for (const scope of ['keys:create', 'keys:sign', 'keys:read', 'admin'] as const)
      expect(() => TokenAuth.authorize(root, scope)).not.toThrow();
  });

  it.each([
    undefined,
    '',
    'tok-sign',
    'Bearer',
    'Bearer ',
    'Bearer TOK-SIGN',
    'Bearer tok-sign2',
    `Bearer ${'x'.repeat(600)}`,
    'Bearer tok sign',
  ])('refuses %p', (header) => {
    expect(() => auth.authenticate(header)).toThrow(expect.objectContaining({ code: 'UNAUTHORIZED' }));
  });
});

describe('key store', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempRunDir();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const identity = new TestIdentity();
  const ADDRESS = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266';
  const keyRecord = (keyId: string, over: Partial<KeyRecord> = {}): KeyRecord => ({
    v: 1,
    kind: 'key',
    keyId,
    address: ADDRESS,
    blobSha256: `0x${'ab'.repeat(32)}`,
    projectId: 'default',
    subject: null,
    state: 'active',
    disabled: false,
    seq: 0,
    prev: null,
    origin: 'created',
    createdAt: 1,
    ...over,
  });
  const rec = (keyId: string, externalId: string | null = null) => {
    const record = keyRecord(keyId, { subject: externalId });
    return {
      keyId,
      externalId,
      address: ADDRESS,
      publicKey: '0x04',
      blob: 'AAAA',
      labels: { a: 'b' },
      attestation: null,
      createdAt: 1,
      record,
      signed: identity.sign(record),
    };
  };
  /** The record after `r` with `disabled` set, as the enclave makes it. */
  const next = (r: KeyRecord, disabled: boolean): KeyRecord => ({ ...r, disabled, seq: r.seq + 1, prev: `0x${'cd'.repeat(32)}` });

  it('opens with WAL and synchronous=FULL at the current schema version', () => {
    const store = new SqliteDatabase(path.join(dir, 'k.db'));
    expect(store.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(store.db.pragma('synchronous', { simple: true })).toBe(2); // FULL
    expect(store.db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    store.close();
  });

  it('returns the existing record for a known external id, and never inserts twice', () => {
    const store = new SqliteDatabase(path.join(dir, 'k.db'));
    expect(store.insert(rec('k1', 'ext')).created).toBe(true);
    const second = store.insert(rec('k2', 'ext'));
    expect([second.created, second.record.keyId]).toEqual([false, 'k1']);
    expect(store.get('k2')).toBeUndefined();
    expect(() => store.insert(rec('k1'))).toThrow(/key k1 is already stored/);
    store.close();
  });

  it('pages with an opaque cursor and rejects foreign cursors', () => {
    const store = new SqliteDatabase(path.join(dir, 'k.db'));
    for (let i = 0; i < 7; i++) store.insert(rec(`k${i}`));
    const ids: string[] = [];
    let cursor: string | undefined;
    do {
      const page = store.list(3, cursor);
      ids.push(...page.keys.map((k) => k.keyId));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(ids).toEqual(['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6']);
    expect(() => store.list(3, 'garbage')).toThrow(expect.objectContaining({ code: 'INVALID_PARAMS' }));
    store.close();
  });

  /** A JWT project's record (TestIdentity signs it as the enclave would). */
  const jwtProject = (n: number, over: Partial<ProjectRecord> = {}): ProjectRecord =>
    identity.project({
      projectId: `p_${String(n).padStart(22, 'A')}`,
      projectKey: `pk_${String(n).padStart(22, 'B')}`,
      auth: {
        type: 'jwt',
        issuer: 'https://issuer.example',
        audience: 'app',
        userClaim: 'sub',
        jwksUri: `https://JWKS${n}.Example.com/keys.json`,
        algorithms: ['RS256'],
        maxTokenLifetime: 600,
      },
      allowedRequestTypes: ['message'],
      allowedOrigins: ['https://app.example'],
      ...over,
    });
  /** A key of a JWT project for `subject` (no external id). */
  const userKey = (keyId: string, projectId: string, subject: string) => {
    const record = keyRecord(keyId, { projectId, subject });
    return { ...rec(keyId), record, signed: identity.sign(record) };
  };

  it('keeps one active key per (project, subject): a second is not stored, the first is returned', () => {
    const store = new SqliteDatabase(path.join(dir, 'k.db'));
    const p = jwtProject(1);
    store.insertProject(identity.sign(p), p, 'one');
    const subject = JSON.stringify(['https://issuer.example', 'alice']);
    expect(store.insert(userKey('u1', p.projectId, subject)).created).toBe(true);
    const second = store.insert(userKey('u2', p.projectId, subject));
    expect([second.created, second.record.keyId]).toEqual([false, 'u1']);
    expect(store.get('u2')).toBeUndefined();
    expect(store.activeKeyFor(p.projectId, subject)?.keyId).toBe('u1');
    // Another subject, or the same subject in another project, is another key.
    expect(store.insert(userKey('u3', p.projectId, JSON.stringify(['https://issuer.example', 'bob']))).created).toBe(true);
    expect(store.insert(userKey('u4', 'default', subject)).created).toBe(true);
    // The index holds below the store's own check, too.
    const raw = store.db.prepare(
      `INSERT INTO keys (key_id, address, public_key, blob, created_at, updated_at, project_id, subject, state)
       VALUES (?, '0x', '0x', 'AA==', 1, 1, ?, ?, ?)`,
    );
    expect(() => raw.run('u5', p.projectId, subject, 'active')).toThrow(/UNIQUE constraint failed: keys.project_id, keys.subject/);
    // A retired key does not count: its user may get a new one.
    dropGuards(store.db); // the unique index alone is what this shows
    store.db.prepare("UPDATE keys SET state = 'retired' WHERE key_id = 'u1'").run();
    expect(store.activeKeyFor(p.projectId, subject)).toBeUndefined();
    expect(store.insert(userKey('u6', p.projectId, subject)).created).toBe(true);
    expect(store.activeKeyFor(p.projectId, subject)?.keyId).toBe('u6');
    store.close();
  });

  it('stores projects: by id and key, listed in pages, the next record only, the JWKS hosts of active JWT projects', () => {
    const store = new SqliteDatabase(path.join(dir, 'k.db'));
    const def = identity.project();
    store.seedProject(identity.sign(def), def);
    const records = [1, 2, 3, 4].map((n) => jwtProject(n));
    records.forEach((r, i) => store.insertProject(identity.sign(r), r, `project ${i + 1}`));
    const token = jwtProject(5, { auth: { type: 'token' } });
    store.insertProject(identity.sign(token), token, 'token project');

    const one = records[0] as ProjectRecord;
    expect(store.getProject(one.projectId)).toEqual({
      projectId: one.projectId,
      signed: identity.sign(one),
      seq: 0,
      updatedAt: expect.any(Number),
      name: 'project 1',
      projectKey: one.projectKey,
      state: 'active',
      authType: 'jwt',
      jwksHost: 'jwks1.example.com',
      createdAt: one.createdAt,
      recordPrev: null,
    });
    expect(store.getProjectByKey(one.projectKey)?.projectId).toBe(one.projectId);
    expect(store.getProjectByKey('pk_nobody0000000000000000')).toBeUndefined();
    expect(store.getProject('default')).toMatchObject({ name: 'default', projectKey: 'default', authType: 'token', jwksHost: null });
    // Its id or key again: CONFLICT, nothing written.
    expect(() => store.insertProject(identity.sign(one), one, 'again')).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
    const sameKey = jwtProject(9, { projectKey: one.projectKey });
    expect(() => store.insertProject(identity.sign(sameKey), sameKey, 'same key')).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
    expect(store.getProject(sameKey.projectId)).toBeUndefined();

    const ids: string[] = [];
    let cursor: string | undefined;
    do {
      const page = store.listProjects(2, cursor);
      expect(page.projects.length).toBeLessThanOrEqual(2);
      ids.push(...page.projects.map((p) => p.projectId));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(ids).toEqual(['default', ...[...records, token].map((r) => r.projectId)]);
    expect(() => store.listProjects(2, 'garbage')).toThrow(expect.objectContaining({ code: 'INVALID_PARAMS' }));

    // Disabled: its host is no longer among the active JWT projects'; the record before it cannot come back.
    const disabled: ProjectRecord = { ...one, state: 'disabled', seq: 1, prev: `0x${'ab'.repeat(32)}` };
    expect(store.updateProjectRecord(one.projectId, identity.sign(disabled), disabled)).toMatchObject({ seq: 1, state: 'disabled' });
    expect(() => store.updateProjectRecord(one.projectId, identity.sign(disabled), disabled)).toThrow(
      expect.objectContaining({ code: 'CONFLICT' }),
    );
    expect(() => store.updateProjectRecord(one.projectId, identity.sign(one), one)).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
    const skip: ProjectRecord = { ...disabled, state: 'active', seq: 3 };
    expect(() => store.updateProjectRecord(one.projectId, identity.sign(skip), skip)).toThrow(
      expect.objectContaining({ code: 'CONFLICT' }),
    );
    expect(store.activeJwtProjects().map((p) => p.jwksHost)).toEqual(['jwks2.example.com', 'jwks3.example.com', 'jwks4.example.com']);
    store.close();
  });

  it('opens a database of schema version 2 (0.4): the default project gets its columns, keys stay', () => {
    const file = path.join(dir, 'v2.db');
    const db = new Database(file);
    db.exec(SCHEMA_V1);
    db.exec(SCHEMA_V2_STEP);
    db.pragma('user_version = 2');
    const def = identity.project();
    const signed = identity.sign(def);
    db.prepare('INSERT INTO projects (project_id, record, signature, seq, updated_at) VALUES (?, ?, ?, 0, 7)').run(
      'default',
      signed.record,
      signed.signature,
    );
    // A row whose record does not decode keeps empty columns (the registry refuses it when used).
    db.prepare(
      "INSERT INTO projects (project_id, record, signature, seq, updated_at) VALUES ('p_brokenbrokenbroken0', 'AAAA', 'AAAA', 0, 7)",
    ).run();
    const key = rec('k1', 'alice');
    db.prepare(
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, created_at, updated_at, project_id, subject, state,
                         record, record_signature, record_seq)
       VALUES ('k1', 'alice', ?, '0x04', 'AAAA', '{}', 5, 6, 'default', 'alice', 'active', ?, ?, 0)`,
    ).run(ADDRESS, key.signed.record, key.signed.signature);
    db.close();

    const store = new SqliteDatabase(file);
    expect(store.db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(store.getProject('default')).toEqual({
      projectId: 'default',
      signed,
      seq: 0,
      updatedAt: 7,
      name: 'default',
      projectKey: 'default',
      state: 'active',
      authType: 'token',
      jwksHost: null,
      createdAt: def.createdAt,
      recordPrev: null,
    });
    expect(store.getProjectByKey('default')?.projectId).toBe('default');
    expect(store.getProject('p_brokenbrokenbroken0')).toMatchObject({ projectKey: null, state: null, authType: null, name: null });
    expect(store.get('k1')).toMatchObject({ keyId: 'k1', externalId: 'alice', projectId: 'default', subject: 'alice', record: key.signed });
    expect(store.activeKeyFor('default', 'alice')?.keyId).toBe('k1');
    store.close();
    // Reopened: nothing runs again.
    const again = new SqliteDatabase(file);
    expect(again.getProject('default')?.projectKey).toBe('default');
    again.close();
  });

  /** A TLS key as `tls.create` answers it (the parent stores what it is given; the enclave checks it). */
  const tlsKey = (n: number, createdAt = 1000 + n) => ({
    publicKey: Buffer.from(`spki ${n}`).toString('base64'),
    blob: Buffer.from(`blob ${n}`).toString('base64'),
    blobSignature: Buffer.alloc(64, n).toString('base64'),
    names: [`w${n}.example.com`, 'wallets.example.com'],
    csr: `-----BEGIN CERTIFICATE REQUEST-----\n${n}\n-----END CERTIFICATE REQUEST-----\n`,
    createdAt,
  });

  it('stores TLS keys: pending until installed, one current at a time, durably', () => {
    const file = path.join(dir, 'k.db');
    let store = new SqliteDatabase(file);
    expect(store.currentTlsKey()).toBeUndefined();
    expect(store.pendingTlsKeys(10)).toEqual([]);
    const one = store.insertTlsKey(tlsKey(1));
    expect(one).toEqual({ ...tlsKey(1), chain: null, installedAt: null, current: false });
    expect(() => store.insertTlsKey(tlsKey(1))).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
    store.insertTlsKey(tlsKey(2));
    store.insertTlsKey(tlsKey(3));
    expect(store.pendingTlsKeys(10).map((k) => k.names[0])).toEqual(['w3.example.com', 'w2.example.com', 'w1.example.com']);
    expect(store.pendingTlsKeys(2)).toHaveLength(2);

    expect(store.setCurrentTlsKey(tlsKey(2).publicKey, 'CHAIN 2', 5000)).toMatchObject({
      chain: 'CHAIN 2',
      installedAt: 5000,
      current: true,
    });
    expect(store.currentTlsKey()?.publicKey).toBe(tlsKey(2).publicKey);
    expect(store.pendingTlsKeys(10).map((k) => k.names[0])).toEqual(['w3.example.com', 'w1.example.com']);
    // Another key installed: it is current, the one before is not (and not pending: it was installed).
    store.setCurrentTlsKey(tlsKey(3).publicKey, 'CHAIN 3', 6000);
    expect(store.currentTlsKey()?.publicKey).toBe(tlsKey(3).publicKey);
    expect(store.tlsKey(tlsKey(2).publicKey)).toMatchObject({ current: false, chain: 'CHAIN 2' });
    expect(() => store.setCurrentTlsKey(tlsKey(9).publicKey, 'CHAIN 9', 7000)).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    // Below the store: never two current keys, never a current key without a chain.
    expect(() => store.db.prepare('UPDATE tls_keys SET current = 1 WHERE chain IS NOT NULL').run()).toThrow(/UNIQUE constraint failed/);
    expect(() => store.db.prepare('UPDATE tls_keys SET current = 1, chain = NULL WHERE public_key = ?').run(tlsKey(1).publicKey)).toThrow(
      /CHECK constraint failed/,
    );
    store.close();
    store = new SqliteDatabase(file);
    expect(store.currentTlsKey()).toMatchObject({ ...tlsKey(3), chain: 'CHAIN 3', installedAt: 6000, current: true });
    store.close();
  });

  it('opens a database of schema version 3 (0.5): it gains the TLS keys, and keys and projects stay', () => {
    const file = path.join(dir, 'v3.db');
    const db = new Database(file);
    db.exec(SCHEMA_V1);
    db.exec(SCHEMA_V2_STEP);
    db.exec(SCHEMA_V3_STEP);
    db.pragma('user_version = 3');
    const p = jwtProject(1);
    const signedProject = identity.sign(p);
    db.prepare(
      `INSERT INTO projects (project_id, record, signature, seq, updated_at, project_key, name, state, auth_type, jwks_host, created_at)
       VALUES (?, ?, ?, 0, 7, ?, 'one', 'active', 'jwt', 'jwks1.example.com', ?)`,
    ).run(p.projectId, signedProject.record, signedProject.signature, p.projectKey, p.createdAt);
    const subject = JSON.stringify(['https://issuer.example', 'alice']);
    const key = userKey('u1', p.projectId, subject);
    db.prepare(
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, created_at, updated_at, project_id, subject, state,
                         record, record_signature, record_seq)
       VALUES ('u1', NULL, ?, '0x04', 'AAAA', '{}', 5, 6, ?, ?, 'active', ?, ?, 0)`,
    ).run(ADDRESS, p.projectId, subject, key.signed.record, key.signed.signature);
    db.close();

    const store = new SqliteDatabase(file);
    expect(store.db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBe(7);
    expect(store.getProjectByKey(p.projectKey)).toMatchObject({ projectId: p.projectId, name: 'one', signed: signedProject });
    expect(store.activeKeyFor(p.projectId, subject)).toMatchObject({ keyId: 'u1', record: key.signed });
    expect(store.currentTlsKey()).toBeUndefined();
    store.insertTlsKey(tlsKey(1));
    store.setCurrentTlsKey(tlsKey(1).publicKey, 'CHAIN', 9);
    store.close();
    // Reopened: nothing runs again, the TLS key is kept.
    const again = new SqliteDatabase(file);
    expect(again.currentTlsKey()?.chain).toBe('CHAIN');
    again.close();
  });

  it('refuses a database from a newer build', () => {
    const file = path.join(dir, 'k.db');
    const db = new Database(file);
    db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    expect(() => new SqliteDatabase(file)).toThrow(/newer than this build/);
  });

  it('changes a record only to the next one (seq + 1), durably, and counts', () => {
    const file = path.join(dir, 'k.db');
    let store = new SqliteDatabase(file);
    store.insert(rec('k1'));
    store.insert(rec('k2'));
    expect(store.get('k1')?.disabled).toBe(false); // now in the store's read cache too

    const r1 = next(keyRecord('k1'), true);
    const s1 = identity.sign(r1);
    expect(store.updateRecord('k1', s1, r1)).toMatchObject({ disabled: true, recordSeq: 1, record: s1 });
    expect([store.get('k1')?.disabled, store.get('k2')?.disabled]).toEqual([true, false]);
    expect(store.counts()).toEqual({ total: 2, disabled: 1, withoutRecord: 0, pending: 0 });
    // Not the next record: the same seq again, one skipped, or one for another key.
    for (const [keyId, r] of [
      ['k1', r1],
      ['k1', { ...next(r1, false), seq: 3 }],
      ['k2', { ...next(keyRecord('k2'), true), seq: 0 }],
    ] as Array<[string, KeyRecord]>) {
      expect(() => store.updateRecord(keyId, identity.sign(r), r)).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
    }
    expect(() => store.updateRecord('k2', s1, r1)).toThrow(/another key/);
    expect(() => store.updateRecord('nope', identity.sign(keyRecord('nope', { seq: 1 })), keyRecord('nope', { seq: 1 }))).toThrow(
      expect.objectContaining({ code: 'KEY_NOT_FOUND' }),
    );
    expect(store.setLegacyDisabled('k2', true)).toBeUndefined(); // a key with a record has no such flag
    store.close();
    store = new SqliteDatabase(file); // what was committed, not what a cache remembers
    expect([store.get('k1')?.disabled, store.get('k2')?.disabled]).toEqual([true, false]);
    expect(store.get('k1')?.record).toEqual(s1);

    const r2 = next(r1, false);
    expect(store.updateRecord('k1', identity.sign(r2), r2).disabled).toBe(false);
    expect(store.counts()).toEqual({ total: 2, disabled: 0, withoutRecord: 0, pending: 0 });
    store.close();
    store = new SqliteDatabase(file);
    expect(store.get('k1')).toMatchObject({
      keyId: 'k1',
      address: ADDRESS,
      blob: 'AAAA',
      labels: { a: 'b' },
      disabled: false,
      recordSeq: 2,
    });
    store.close();
  });

  it('opens a database of schema version 1 (0.3): its keys stay, without a record, until migrated', () => {
    const file = path.join(dir, 'v1.db');
    // Schema version 1 exactly as 0.3 created it (test/support/legacy.ts), with two keys (one disabled).
    const db = new Database(file);
    db.exec(SCHEMA_V1);
    db.pragma('user_version = 1');
    const insert = db.prepare(
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, attestation, disabled, created_at, updated_at)
       VALUES (?, ?, ?, '0x04', 'djE=', '{"tier":"gold"}', ?, ?, 5, 6)`,
    );
    insert.run('old1', 'alice', ADDRESS, 'YmlydGg=', 0);
    insert.run('old2', null, ADDRESS, null, 1);
    db.close();

    const store = new SqliteDatabase(file);
    expect(store.db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(store.get('old1')).toEqual({
      keyId: 'old1',
      externalId: 'alice',
      address: ADDRESS,
      publicKey: '0x04',
      blob: 'djE=',
      labels: { tier: 'gold' },
      attestation: 'YmlydGg=',
      disabled: false,
      projectId: null,
      subject: null,
      state: null,
      predecessor: null,
      record: null,
      recordSeq: null,
      recordPrev: null,
      disablePending: false,
      createdAt: 5,
      updatedAt: 6,
    });
    expect(store.get('old2')).toMatchObject({ disabled: true, record: null });
    expect(store.counts()).toEqual({ total: 2, disabled: 1, withoutRecord: 2, pending: 0 });
    expect(store.keysWithoutRecord(0, 10).map((k) => k.keyId)).toEqual(['old1', 'old2']);
    expect(store.keysWithoutRecord(store.keysWithoutRecord(0, 1)[0]?.rowSeq as number, 10).map((k) => k.keyId)).toEqual(['old2']);
    // Their flag is set as before; a record-bound change is refused.
    expect(store.setLegacyDisabled('old1', true)?.disabled).toBe(true);
    expect(store.setLegacyDisabled('old1', false)?.disabled).toBe(false);
    const r = next(keyRecord('old1'), true);
    expect(() => store.updateRecord('old1', identity.sign(r), r)).toThrow(expect.objectContaining({ code: 'CONFLICT' }));

    // New keys live next to them; the migration gives each its blob and first record once.
    store.insert(rec('new1', 'bob'));
    const first = keyRecord('old1', { subject: 'alice', origin: 'migrated' });
    expect(store.migrateKey('old1', 'djI=', identity.sign(first), first)).toBe(true);
    expect(store.migrateKey('old1', 'djM=', identity.sign(first), first)).toBe(false);
    expect(store.migrateKey('new1', 'djM=', identity.sign(keyRecord('new1')), keyRecord('new1'))).toBe(false);
    expect(store.get('old1')).toMatchObject({
      blob: 'djI=',
      projectId: 'default',
      subject: 'alice',
      state: 'active',
      recordSeq: 0,
      disabled: false,
    });
    const second = keyRecord('old2', { origin: 'migrated' });
    store.migrateKey('old2', 'djI=', identity.sign(second), second);
    expect(store.get('old2')).toMatchObject({ disabled: true, disablePending: true });
    expect(store.keysPendingDisable()).toEqual(['old2']);
    expect(store.counts()).toEqual({ total: 3, disabled: 1, withoutRecord: 0, pending: 0 });
    store.close();

    // Reopened at the current version: nothing runs again.
    const again = new SqliteDatabase(file);
    expect(again.get('old1')?.blob).toBe('djI=');
    again.close();
  });
});

describe('parent configuration', () => {
  const base = {
    api: { listen: { port: 7070 } },
    tokens: [{ name: 't', sha256: hashToken('x'), scopes: ['admin'] }],
    database: { path: '/tmp/x.db' },
    kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
  };

  it('fills defaults and applies environment overrides', () => {
    const c = parseParentConfig(base, {
      NKS_API_PORT: '9000',
      NKS_DB_PATH: '/var/lib/nks/keys.db',
      NKS_KMS_REGION: 'eu-west-1',
      NKS_LOG_LEVEL: 'warn',
    });
    expect(c.database).toEqual({ kind: 'sqlite', path: '/var/lib/nks/keys.db', timeoutMs: 5000 });
    expect(c.kmsProxy.region).toBe('eu-west-1');
    expect(c.logLevel).toBe('warn');
    const { host, socketMode, ...api } = PARENT_CONFIG_DEFAULTS.api;
    expect(c).toMatchObject({
      api: { ...api, listen: { host, port: 9000 } },
      transport: PARENT_CONFIG_DEFAULTS.transport,
      enclave: PARENT_CONFIG_DEFAULTS.enclave,
      kmsProxy: PARENT_CONFIG_DEFAULTS.kmsProxy,
      wallets: PARENT_CONFIG_DEFAULTS.wallets,
    });
    const wallets = parseParentConfig({
      ...base,
      wallets: { publicUrl: 'https://wallets.example.com', relay: { port: 0, maxPerAddress: 8 } },
    }).wallets;
    expect(wallets).toEqual({
      publicUrl: 'https://wallets.example.com',
      relay: { ...PARENT_CONFIG_DEFAULTS.wallets.relay, port: 0, maxPerAddress: 8 },
      store: PARENT_CONFIG_DEFAULTS.wallets.store,
    });
    expect(parseParentConfig(base).logLevel).toBe(PARENT_CONFIG_DEFAULTS.logLevel);
    expect(parseParentConfig({ ...base, api: { listen: { socket: '/run/x.sock' } } }).api.listen).toEqual({
      socket: '/run/x.sock',
      mode: socketMode,
    });
    expect(c.identity).toEqual({});
    const pinned = `0x${'ab'.repeat(32)}`;
    expect(parseParentConfig({ ...base, identity: { publicKey: pinned } }).identity.publicKey).toBe(pinned);
    // The enclave's defaults listen where these dial (enclave/test/units.test.ts checks its side).
    expect([c.enclave.address, c.kmsProxy.listen]).toEqual([DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS]);
    expect([c.wallets.relay.enclave, c.wallets.store.listen]).toEqual([DEFAULT_WALLETS_ADDRESS, DEFAULT_WALLET_STORE_ADDRESS]);
  });

  it('takes trusted proxies as addresses and CIDR blocks, and "unix" on a Unix socket', () => {
    const trustProxy = ['10.0.0.0/8', '2001:db8::/32', '127.0.0.1', '::1', '172.16.0.0/12'];
    const tcp = parseParentConfig({ ...base, api: { ...base.api, trustProxy } }).api;
    expect(tcp.trustProxy).toEqual(trustProxy);
    expect(parseParentConfig(base).api.trustProxy).toEqual([]);
    const unix = parseParentConfig({ ...base, api: { listen: { socket: '/run/x.sock' }, trustProxy: ['unix'] } }).api;
    expect(unix.trustProxy).toEqual(['unix']);

    const trusts = trustedProxies(tcp.trustProxy)!;
    expect(trustedProxies([])).toBeUndefined();
    for (const a of ['10.1.2.3', '::ffff:10.1.2.3', '2001:db8:ffff::1', '127.0.0.1', '::1', '172.31.255.255'])
      expect([a, trusts(a, 0)]).toEqual([a, true]);
    for (const a of ['11.0.0.1', '127.0.0.2', '2001:db9::1', '172.32.0.0', 'not-an-ip', '', undefined as unknown as string])
      expect([a, trusts(a, 0)]).toEqual([a, false]);
    // A Unix socket's peer has no address: trusted with "unix", as the first hop only.
    const unixTrust = trustedProxies(['unix', '10.0.0.0/8'])!;
    expect([unixTrust(undefined, 0), unixTrust(undefined, 1), unixTrust('10.0.0.1', 1), unixTrust('1.2.3.4', 1)]).toEqual([
      true,
      false,
      true,
      false,
    ]);
  });

  it('allows exactly the KMS key ARNs the shared definition does', () => {
    const { good, bad } = IDENTIFIER_SAMPLES.kmsKeyArn;
    expect(parseParentConfig({ ...base, kmsProxy: { ...base.kmsProxy, allowedKeyArns: good } }).kmsProxy.allowedKeyArns).toEqual(good);
    for (const arn of bad)
      expect(() => parseParentConfig({ ...base, kmsProxy: { ...base.kmsProxy, allowedKeyArns: [arn] } })).toThrow(
        /config.kmsProxy.allowedKeyArns\[0\]: expected a KMS key ARN/,
      );
  });

  it.each<[string, object, RegExp]>([
    [
      'a non-loopback listener without TLS',
      { ...base, api: { listen: { host: '0.0.0.0', port: 7070 } } },
      /not loopback; serving beyond loopback requires config.api.tls/,
    ],
    [
      'a token stored in clear',
      { ...base, tokens: [{ name: 't', sha256: 'plaintext-token', scopes: ['admin'] }] },
      /config.tokens\[0\].sha256/,
    ],
    ['an unknown scope', { ...base, tokens: [{ name: 't', sha256: hashToken('x'), scopes: ['root'] }] }, /config.tokens\[0\].scopes/],
    ['duplicate token names', { ...base, tokens: [base.tokens[0], base.tokens[0]] }, /token names must be unique/],
    ['no allowed key', { ...base, kmsProxy: { allowedKeyArns: [], region: 'us-east-1' } }, /config.kmsProxy.allowedKeyArns/],
    ['an unknown field', { ...base, debug: true }, /unknown field\(s\) "debug"/],
    // The rate limits of the wallet routes moved to the enclave's configuration with the routes (docs/TLS.md).
    ['wallet rate limits', { ...base, wallets: { rateLimits: { perAddress: 5 } } }, /config.wallets: unknown field\(s\) "rateLimits"/],
    ['a wallets URL that is not https', { ...base, wallets: { publicUrl: 'http://wallets.example.com' } }, /config.wallets.publicUrl/],
    ['a relay connection limit of 0', { ...base, wallets: { relay: { maxConnections: 0 } } }, /config.wallets.relay.maxConnections/],
    [
      'a relay byte cap under 64 KiB',
      { ...base, wallets: { relay: { maxBytesPerConnection: 1024 } } },
      /config.wallets.relay.maxBytesPerConnection/,
    ],
    [
      'a relay enclave address that is not vsock',
      { ...base, wallets: { relay: { enclave: 'tcp://x:1' } } },
      /config.wallets.relay.enclave/,
    ],
    ['a store address that is not vsock', { ...base, wallets: { store: { listen: '127.0.0.1:8002' } } }, /config.wallets.store.listen/],
    [
      'a trusted proxy that is a name',
      { ...base, api: { ...base.api, trustProxy: ['proxy.internal'] } },
      /config.api.trustProxy\[0\]: expected an IP address/,
    ],
    ['a trusted proxy block of /33', { ...base, api: { ...base.api, trustProxy: ['10.0.0.0/33'] } }, /config.api.trustProxy\[0\]/],
    ['a trusted proxy block of /0', { ...base, api: { ...base.api, trustProxy: ['::/0'] } }, /config.api.trustProxy\[0\]/],
    ['a trusted proxy with two prefixes', { ...base, api: { ...base.api, trustProxy: ['10.0.0.0/8/8'] } }, /config.api.trustProxy\[0\]/],
    [
      'a trusted Unix socket peer on a TCP listener',
      { ...base, api: { ...base.api, trustProxy: ['unix'] } },
      /config.api.trustProxy lists "unix", but config.api.listen is not a Unix socket/,
    ],
    [
      'an identity public key in upper case',
      { ...base, identity: { publicKey: `0x${'AB'.repeat(32)}` } },
      /config.identity.publicKey: expected a 32-byte Ed25519 public key/,
    ],
  ])('refuses %s', (_name, raw, message) => {
    expect(() => parseParentConfig(raw)).toThrow(message);
  });

  it('stops the daemon with exit code 2 and the reason', async () => {
    const dir = tempRunDir();
    try {
      const file = path.join(dir, 'parent.json');
      fs.writeFileSync(file, JSON.stringify({ ...base, api: { listen: { host: '0.0.0.0', port: 1 } } }));
      const p = startProgram('parent', ['--config', file]);
      expect(await p.exited).toBe(2);
      expect(p.lines.join('\n')).toMatch(/parent: invalid configuration .* requires config.api.tls/);
      const none = startProgram('parent', [], { NKS_PARENT_CONFIG: '' });
      expect(await none.exited).toBe(2);
      expect(none.lines.join('\n')).toMatch(/no configuration: pass --config FILE or set NKS_PARENT_CONFIG/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
