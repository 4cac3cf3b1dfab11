/**
 * The wallet store (parent/src/wallet-store/server.ts), asked over the simulated vsock as the enclave's wallet
 * routes ask it, on a real SQLite file, with records signed by a test identity as the enclave signs them. It
 * answers projects and users' keys, stores a user's first key once (a second for the same user answers the
 * first), and refuses an insert whose record is forged or does not bind the key it names, storing nothing. The
 * lifecycle's methods: a user's successor stored once, an activation's two records stored together, and records
 * that are forged or not the next of their key refused with nothing stored.
 */
import fs from 'node:fs';
import path from 'node:path';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { WalletStoreApi } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import { newKeyId } from '@nks/shared/identifiers';
import { silentLogger } from '@nks/shared/log';
import { hex, recordDigest, type KeyRecord, type ProjectRecord } from '@nks/shared/records';
import { RpcClient } from '@nks/shared/rpc';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { captureLogger, rejection, tempRunDir, type CapturedLogger } from '@nks/shared-test/helpers';
import { RecordChecker } from '../src/enclave-link/identity';
import { blobSha256 } from '../src/key-registry';
import { KeyStore } from '../src/store/key-store';
import { SqliteDatabase } from '../src/store/sqlite-db';
import { SqliteEngine } from '../src/store/sqlite-engine';
import { NOT_THE_KEY, NOT_THE_NEXT, WalletStore } from '../src/wallet-store/server';
import { fakeKeyBlob, TestIdentity } from './fake-enclave';
import { dropGuards } from '../../test/support/tamper';

const ADDRESS = 'vsock://3:8002';
const identity = new TestIdentity();
const checker = new RecordChecker({
  publicKey: identity.publicKey,
  key: identity.publicKeyObject,
  genesisDocument: '',
  defaultProject: identity.sign(identity.project()),
});

const jwtProject = (n: number, over: Partial<ProjectRecord> = {}): ProjectRecord =>
  identity.project({
    projectId: `p_${String(n).padStart(22, 'A')}`,
    projectKey: `pk_${String(n).padStart(22, 'B')}`,
    auth: {
      type: 'jwt',
      issuer: 'https://issuer.example',
      audience: 'app',
      userClaim: 'sub',
      jwksUri: 'https://jwks.example.com/keys.json',
      algorithms: ['RS256'],
      maxTokenLifetime: 600,
    },
    ...over,
  });
const JWT = jwtProject(1);
const TOKEN = identity.project({ projectId: `p_${'T'.repeat(22)}`, projectKey: `pk_${'T'.repeat(22)}` });
const alice = JSON.stringify(['https://issuer.example', 'alice']);

/** A key as `keys.create` answers it for a JWT user: its first record, signed; `over` changes the record. */
function madeKey(subject: string | null = alice, over: Partial<KeyRecord> = {}, projectId = JWT.projectId) {
  const account = privateKeyToAccount(generatePrivateKey());
  const keyId = newKeyId();
  const blob = fakeKeyBlob({ keyId, address: account.address, projectId, subject });
  const record: KeyRecord = {
    v: 1,
    kind: 'key',
    keyId,
    address: account.address,
    blobSha256: blobSha256(blob),
    projectId,
    subject,
    state: 'active',
    disabled: false,
    seq: 0,
    prev: null,
    origin: 'created',
    createdAt: Date.now(),
    ...over,
  };
  return { keyId, address: account.address as string, publicKey: account.publicKey as string, blob, record: identity.sign(record) };
}

describe('wallet store', () => {
  let runDir: string;
  let store: KeyStore;
  /** The same file through a connection of the test's own, to look at and alter what the server stored. */
  let db: SqliteDatabase;
  let server: WalletStore;
  let client: RpcClient<WalletStoreApi>;
  let log: CapturedLogger;
  let records: () => RecordChecker;

  beforeEach(async () => {
    runDir = tempRunDir('nks-wstore-');
    db = new SqliteDatabase(path.join(runDir, 'keys.db'));
    for (const p of [JWT, TOKEN]) db.insertProject(identity.sign(p), p, p.projectId);
    store = new KeyStore(await SqliteEngine.open({ path: path.join(runDir, 'keys.db') }));
    log = captureLogger('debug');
    records = () => checker;
    server = new WalletStore({ store, records: () => records(), logger: log.logger, maxConcurrent: 8 });
    const transport = new SimulatedVsockTransport(runDir);
    await server.listen(transport, ADDRESS);
    client = new RpcClient<WalletStoreApi>({ name: 'enclave', transport, address: ADDRESS, logger: silentLogger() });
    client.start();
    await client.waitConnected(5000);
  });
  afterEach(async () => {
    await client.close();
    await server.close(100);
    await store.close();
    db.close();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  it('answers a project by its key whatever its state, and null for an unknown key', async () => {
    expect(await client.call('store.project', { projectKey: JWT.projectKey })).toEqual({ project: identity.sign(JWT) });
    const prev = hex(recordDigest(Buffer.from(identity.sign(JWT).record, 'base64')));
    const disabled: ProjectRecord = { ...JWT, state: 'disabled', seq: 1, prev };
    db.updateProjectRecord(JWT.projectId, identity.sign(disabled), disabled);
    expect(await client.call('store.project', { projectKey: JWT.projectKey })).toEqual({ project: identity.sign(disabled) });
    // A record made from another than the one it replaced (a fork) is not handed to the enclave.
    const fork: ProjectRecord = { ...JWT, state: 'active', seq: 2, prev: `0x${'ab'.repeat(32)}` };
    db.updateProjectRecord(JWT.projectId, identity.sign(fork), fork);
    expect((await rejection(client.call('store.project', { projectKey: JWT.projectKey }))).code).toBe('KEY_INTEGRITY');
    expect(log.text()).toContain('its record is not the one that replaced the record before it');
    expect(await client.call('store.project', { projectKey: `pk_${'Z'.repeat(22)}` })).toEqual({ project: null });
    expect(await client.call('store.project', { projectKey: 'default' })).toEqual({ project: null }); // not seeded here
    const bad = await rejection(client.call('store.project', { projectKey: 'no such key!' }));
    expect(bad.code).toBe('INVALID_PARAMS');
  });

  it("stores a user's first key once; the user's next key is not stored and the first is answered", async () => {
    expect(await client.call('store.userKey', { projectId: JWT.projectId, subject: alice })).toEqual({ key: null });
    const first = madeKey();
    const inserted = await client.call('store.insertUserKey', first);
    expect(inserted).toEqual({ inserted: true, key: { keyId: first.keyId, blob: first.blob, record: first.record } });
    expect(await client.call('store.userKey', { projectId: JWT.projectId, subject: alice })).toEqual({ key: inserted.key });
    expect(db.get(first.keyId)).toMatchObject({
      address: first.address,
      publicKey: first.publicKey,
      projectId: JWT.projectId,
      subject: alice,
    });
    // The same insert again (an enclave that retried), and another key for alice (a concurrent first call).
    expect(await client.call('store.insertUserKey', first)).toEqual({ inserted: false, key: inserted.key });
    const second = madeKey();
    expect(await client.call('store.insertUserKey', second)).toEqual({ inserted: false, key: inserted.key });
    expect(db.get(second.keyId)).toBeUndefined();
    // Bob is another user.
    const bob = JSON.stringify(['https://issuer.example', 'bob']);
    expect((await client.call('store.insertUserKey', madeKey(bob))).inserted).toBe(true);
    expect(db.counts().total).toBe(2);
    expect(log.lines().filter((l) => l.msg === 'stored a key for a JWT user')).toHaveLength(2);
  });

  const someoneElse = new TestIdentity();
  const forged = () => {
    const k = madeKey();
    const { record } = checker.key(k.record);
    return { ...k, record: someoneElse.sign(record) };
  };
  it.each<[string, () => ReturnType<typeof madeKey>]>([
    ['a record signed by another identity', forged],
    ['a record of another key id', () => ({ ...madeKey(), keyId: newKeyId() })],
    ['a record of another address', () => ({ ...madeKey(), address: privateKeyToAccount(generatePrivateKey()).address })],
    ['a public key that is not the address', () => ({ ...madeKey(), publicKey: privateKeyToAccount(generatePrivateKey()).publicKey })],
    ['a blob the record does not name', () => ({ ...madeKey(), blob: madeKey().blob })],
    ['a record that is not the first (seq 1)', () => madeKey(alice, { seq: 1, prev: `0x${'cd'.repeat(32)}` })],
    ['a record of a migrated key', () => madeKey(alice, { origin: 'migrated' })],
    ['a record of a disabled key', () => madeKey(alice, { disabled: true })],
    ['a record of a retired key', () => madeKey(alice, { state: 'retired' })],
    ['a key without a subject', () => madeKey(null)],
    ["a token project's key", () => madeKey('server-1', {}, TOKEN.projectId)],
    ['a key of a project not stored', () => madeKey(alice, {}, `p_${'N'.repeat(22)}`)],
    ['a record that does not decode', () => ({ ...madeKey(), record: { record: 'AAAA', signature: Buffer.alloc(64).toString('base64') } })],
  ])('refuses %s with KEY_INTEGRITY and stores nothing', async (_name, make) => {
    const err = await rejection(client.call('store.insertUserKey', make()));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', NOT_THE_KEY]);
    expect(db.counts().total).toBe(0);
    expect(log.lines().some((l) => typeof l.msg === 'string' && l.msg.startsWith('wallet store: refused a user key: '))).toBe(true);
  });

  it("refuses a key whose project's stored record does not verify", async () => {
    dropGuards(db.db);
    db.db.prepare('UPDATE projects SET signature = ? WHERE project_id = ?').run(Buffer.alloc(64, 1).toString('base64'), JWT.projectId);
    const err = await rejection(client.call('store.insertUserKey', madeKey()));
    expect(err.code).toBe('KEY_INTEGRITY');
    expect(log.text()).toContain(`the stored record of project ${JWT.projectId} does not verify`);
    expect(db.counts().total).toBe(0);
  });

  it('refuses malformed inserts with INVALID_PARAMS', async () => {
    const k = madeKey();
    for (const bad of [
      { ...k, address: 'not an address' },
      { ...k, publicKey: `0x02${'11'.repeat(32)}` },
      { ...k, blob: 'not base64 !' },
      { ...k, record: { record: k.record.record } },
      { ...k, extra: 1 },
    ]) {
      const err = await rejection(client.call('store.insertUserKey', bad as never));
      expect([err.code, err.message]).toEqual(['INVALID_PARAMS', expect.any(String)]);
    }
    expect(db.counts().total).toBe(0);
  });

  it('answers IDENTITY_UNAVAILABLE to an insert before the identity is known', async () => {
    records = () => {
      throw new KeystoreError('IDENTITY_UNAVAILABLE', 'the keystore identity is not known yet');
    };
    expect((await rejection(client.call('store.insertUserKey', madeKey()))).code).toBe('IDENTITY_UNAVAILABLE');
    expect(db.counts().total).toBe(0);
  });

  describe('the key lifecycle (docs/LIFECYCLE.md)', () => {
    const digestOf = (signed: { record: string }) => hex(recordDigest(Buffer.from(signed.record, 'base64')));
    /** The record after `signed` in `state`, as the enclave makes it (`over` changes it). */
    const nextOf = (signed: { record: string; signature: string }, state: KeyRecord['state'], over: Partial<KeyRecord> = {}) => {
      const r = checker.key(signed).record;
      return identity.sign({ ...r, state, seq: r.seq + 1, prev: digestOf(signed), createdAt: Date.now(), ...over });
    };
    /** Alice's first key, stored, and a successor of it as `keys.successor` answers it (not stored). */
    const aliceWithSuccessor = async () => {
      const first = madeKey();
      await client.call('store.insertUserKey', first);
      return { first, successor: madeKey(alice, { state: 'pending', predecessor: first.keyId }) };
    };
    const states = (...keyIds: string[]) => keyIds.map((k) => [db.get(k)?.state, db.get(k)?.recordSeq]);

    it("stores a user's successor once, as the pending key; the active key stays the first", async () => {
      const { first, successor } = await aliceWithSuccessor();
      expect(await client.call('store.pendingUserKey', { projectId: JWT.projectId, subject: alice })).toEqual({ key: null });
      const inserted = await client.call('store.insertSuccessor', successor);
      expect(inserted).toEqual({ inserted: true, key: { keyId: successor.keyId, blob: successor.blob, record: successor.record } });
      expect(await client.call('store.pendingUserKey', { projectId: JWT.projectId, subject: alice })).toEqual({ key: inserted.key });
      expect((await client.call('store.userKey', { projectId: JWT.projectId, subject: alice })).key?.keyId).toBe(first.keyId);
      expect(db.get(successor.keyId)).toMatchObject({ state: 'pending', predecessor: first.keyId, externalId: null });
      // Another successor while one is pending: the pending one is answered, nothing stored.
      const other = madeKey(alice, { state: 'pending', predecessor: first.keyId });
      expect(await client.call('store.insertSuccessor', other)).toEqual({ inserted: false, key: inserted.key });
      expect(db.get(other.keyId)).toBeUndefined();
      expect(log.lines().filter((l) => l.msg === 'stored a successor for a JWT user')).toHaveLength(1);
    });

    it.each<[string, (first: ReturnType<typeof madeKey>) => ReturnType<typeof madeKey>]>([
      ['a first key (no predecessor)', () => madeKey()],
      ['a pending record without predecessor', () => madeKey(alice, { state: 'pending' })],
      ['an active record with a predecessor', (first) => madeKey(alice, { predecessor: first.keyId })],
      [
        'a record signed by another identity',
        (first) => {
          const k = madeKey(alice, { state: 'pending', predecessor: first.keyId });
          return { ...k, record: someoneElse.sign(checker.key(k.record).record) };
        },
      ],
    ])('refuses as a successor %s with KEY_INTEGRITY and stores nothing', async (_name, make) => {
      const { first } = await aliceWithSuccessor();
      const err = await rejection(client.call('store.insertSuccessor', make(first)));
      expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', NOT_THE_KEY]);
      expect(db.counts().total).toBe(1);
    });

    it('refuses a successor of a key not stored, or of a key no longer active, naming its state', async () => {
      const { first } = await aliceWithSuccessor();
      const orphan = madeKey(alice, { state: 'pending', predecessor: newKeyId() });
      expect((await rejection(client.call('store.insertSuccessor', orphan))).code).toBe('KEY_NOT_FOUND');
      await client.call('store.updateRecords', { records: [nextOf(first.record, 'retired')] });
      const late = madeKey(alice, { state: 'pending', predecessor: first.keyId });
      const err = await rejection(client.call('store.insertSuccessor', late));
      expect([err.code, err.details]).toEqual(['KEY_STATE', { state: 'retired' }]);
      expect(db.counts().total).toBe(1);
    });

    it('stores an activation: both records together; the user key is then the successor', async () => {
      const { first, successor } = await aliceWithSuccessor();
      await client.call('store.insertSuccessor', successor);
      const records = [nextOf(successor.record, 'active'), nextOf(first.record, 'retired')];
      expect(await client.call('store.updateRecords', { records })).toEqual({ updated: true });
      expect(states(first.keyId, successor.keyId)).toEqual([
        ['retired', 1],
        ['active', 1],
      ]);
      expect((await client.call('store.userKey', { projectId: JWT.projectId, subject: alice })).key).toEqual({
        keyId: successor.keyId,
        blob: successor.blob,
        record: records[0],
      });
      expect(await client.call('store.pendingUserKey', { projectId: JWT.projectId, subject: alice })).toEqual({ key: null });
      // The same records again (a replay): no longer the next ones, refused, nothing changes.
      const again = await rejection(client.call('store.updateRecords', { records }));
      expect(again.code).toBe('KEY_INTEGRITY');
      expect(states(first.keyId, successor.keyId)).toEqual([
        ['retired', 1],
        ['active', 1],
      ]);
    });

    it.each<[string, (first: { record: string; signature: string }) => { record: string; signature: string }]>([
      ['signed by another identity', (r) => someoneElse.sign(checker.key(nextOf(r, 'retired')).record)],
      ['skipping a seq', (r) => nextOf(r, 'retired', { seq: 2 })],
      ['chained to another record', (r) => nextOf(r, 'retired', { prev: `0x${'cd'.repeat(32)}` })],
      ['that does not decode', () => ({ record: 'AAAA', signature: Buffer.alloc(64).toString('base64') })],
    ])('refuses a pair whose second record is %s: KEY_INTEGRITY, neither stored', async (_name, bad) => {
      const { first, successor } = await aliceWithSuccessor();
      await client.call('store.insertSuccessor', successor);
      const err = await rejection(client.call('store.updateRecords', { records: [nextOf(successor.record, 'active'), bad(first.record)] }));
      expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', NOT_THE_NEXT]);
      expect(states(first.keyId, successor.keyId)).toEqual([
        ['active', 0],
        ['pending', 0],
      ]);
      expect(log.text()).toContain('wallet store: refused a record update');
    });

    it('refuses two records of one key, and a record of a key not stored', async () => {
      const { first } = await aliceWithSuccessor();
      const twice = await rejection(
        client.call('store.updateRecords', { records: [nextOf(first.record, 'retired'), nextOf(first.record, 'retired')] }),
      );
      expect(twice.code).toBe('INVALID_PARAMS');
      const unknown = madeKey();
      const missing = await rejection(client.call('store.updateRecords', { records: [nextOf(unknown.record, 'retired')] }));
      expect(missing.code).toBe('KEY_NOT_FOUND');
      expect(states(first.keyId)).toEqual([['active', 0]]);
    });
  });
});
