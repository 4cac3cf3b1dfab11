/**
 * The parent's side of signed records (docs/RECORDS.md), in this process against a fake enclave that signs
 * records with an identity of its own (fake-enclave.ts): a database row that was altered is refused as
 * KEY_INTEGRITY before the enclave is asked; an enclave answering with a record that does not match the
 * request is refused and nothing is stored; the identity is pinned; views carry the record and the birth
 * attestation; disable and enable move the record forward one seq at a time; keys made before 0.4 answer a
 * clear error until migrated. The real enclave's own checks of the same attacks are in enclave/test.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { recoverMessageAddress } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { KeystoreError } from '@nks/shared/errors';
import { decodeKeyRecord, hex, openKeyRecord, recordDigest, type KeyRecord, type SignedRecord } from '@nks/shared/records';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { captureLogger, rejection, tempRunDir, waitFor, type CapturedLogger } from '@nks/shared-test/helpers';
import { hashToken } from '../src/api/auth';
import { startParent, type RunningParent } from '../src/app';
import { parseParentConfig } from '../src/config';
import { blobSha256, TAMPERED_ROW } from '../src/key-registry';
import { SqliteDatabase } from '../src/store/sqlite-db';
import { FAKE_KMS_KEY_ARN, FakeEnclave, fakeKeyBlob, TestIdentity } from './fake-enclave';
import { dropGuards } from '../../test/support/tamper';

const ENCLAVE = 'vsock://16:5000';
const TOKEN = 'nks_test_token';

interface Answer {
  status: number;
  body: any;
}

describe('signed records in the parent', () => {
  let runDir: string;
  let dbPath: string;
  let enclave: FakeEnclave;
  let parent: RunningParent | undefined;
  let log: CapturedLogger;

  const configFor = (over: Record<string, unknown> = {}) =>
    parseParentConfig({
      api: { listen: { host: '127.0.0.1', port: 0 } },
      metrics: { listen: { host: '127.0.0.1', port: 0 } },
      tokens: [{ name: 'test', sha256: hashToken(TOKEN), scopes: ['keys:create', 'keys:sign', 'keys:read', 'admin'] }],
      database: { path: dbPath },
      transport: { kind: 'simulated', runDir },
      enclave: { address: ENCLAVE, poolSize: 2, connectTimeoutMs: 1000, deadlineMs: 5000 },
      kmsProxy: { listen: 'vsock://3:8000', allowedKeyArns: [FAKE_KMS_KEY_ARN], region: 'us-east-1', endpoint: 'http://127.0.0.1:9' },
      wallets: { relay: { host: '127.0.0.1', port: 0 } },
      logLevel: 'debug',
      ...over,
    });

  const start = async (over: Record<string, unknown> = {}, waitUp = true) => {
    parent = await startParent(configFor(over), log.logger);
    if (waitUp) await parent.pool.waitUp(5000);
    return parent;
  };
  const stop = async () => {
    await parent?.stop();
    parent = undefined;
  };
  /** Stops the parent, changes its database as an attacker with the host would, and starts it again. */
  const tamper = async (change: (db: Database.Database) => void) => {
    await stop();
    const db = new Database(dbPath);
    try {
      dropGuards(db);
      change(db);
    } finally {
      db.close();
    }
    await start();
  };

  const api = async (pathname: string, init: { method?: string; body?: unknown; token?: string | null } = {}): Promise<Answer> => {
    const token = init.token === undefined ? TOKEN : init.token;
    const res = await fetch(`${(parent as RunningParent).url}${pathname}`, {
      method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const createKey = async (body: Record<string, unknown> = {}) => {
    const res = await api('/v1/keys', { body });
    expect([res.status, res.body?.error]).toEqual([201, undefined]);
    return res.body as { keyId: string; address: `0x${string}`; record: SignedRecord; attestation?: string };
  };
  const sign = (keyId: string, message = 'hello') => api(`/v1/keys/${keyId}/sign`, { body: { type: 'message', message } });
  const calls = (method: string) => enclave.calls[method] ?? 0;
  const row = (db: Database.Database, keyId: string) =>
    db.prepare('SELECT * FROM keys WHERE key_id = ?').get(keyId) as Record<string, string | number | null>;

  beforeEach(async () => {
    runDir = tempRunDir('nks-records-');
    dbPath = path.join(runDir, 'keys.db');
    log = captureLogger('debug');
    enclave = new FakeEnclave();
    await enclave.listen(new SimulatedVsockTransport(runDir), ENCLAVE);
  });

  afterEach(async () => {
    enclave?.releaseAll();
    await stop();
    await enclave?.close();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  describe('a database row that was altered is KEY_INTEGRITY before the enclave is asked', () => {
    let a: { keyId: string; address: `0x${string}`; record: SignedRecord };
    let b: { keyId: string; address: `0x${string}`; record: SignedRecord };

    beforeEach(async () => {
      await start();
      a = await createKey({ externalId: 'alice' });
      b = await createKey({ externalId: 'bob' });
      // Control: both sign as stored, through the enclave.
      for (const k of [a, b]) {
        const res = await sign(k.keyId);
        expect(res.status).toBe(200);
        expect(await recoverMessageAddress({ message: 'hello', signature: res.body.signature })).toBe(k.address);
      }
    });

    /** `a` is refused, for sign and for disable, and the enclave never hears of it. */
    const expectRefused = async () => {
      const before = { sign: calls('keys.sign'), setDisabled: calls('keys.setDisabled') };
      const signed = await sign(a.keyId);
      expect([signed.status, signed.body.error.code, signed.body.error.message]).toEqual([
        500,
        'KEY_INTEGRITY',
        `key ${a.keyId}: ${TAMPERED_ROW}`,
      ]);
      const disabled = await api(`/v1/keys/${a.keyId}/disable`, { body: {} });
      expect([disabled.status, disabled.body.error.code]).toEqual([500, 'KEY_INTEGRITY']);
      expect({ sign: calls('keys.sign'), setDisabled: calls('keys.setDisabled') }).toEqual(before);
      expect(log.lines().some((l) => l.keyId === a.keyId && String(l.msg).startsWith(`refused key ${a.keyId}`))).toBe(true);
    };

    it('the record column edited (its subject changed and re-encoded, the signature kept)', async () => {
      await tamper((db) => {
        const r = row(db, a.keyId);
        const edited: KeyRecord = { ...decodeKeyRecord(Buffer.from(r.record as string, 'base64')), subject: 'mallory' };
        const cbor = new TestIdentity().sign(edited).record; // canonical CBOR of the edited record (its signature is dropped)
        db.prepare('UPDATE keys SET record = ?, subject = ? WHERE key_id = ?').run(cbor, 'mallory', a.keyId);
      });
      await expectRefused();
      expect((await sign(b.keyId)).status).toBe(200);
    });

    it('the signature replaced (by another record of the same identity)', async () => {
      await tamper((db) => db.prepare('UPDATE keys SET record_signature = ? WHERE key_id = ?').run(b.record.signature, a.keyId));
      await expectRefused();
    });

    it('a record of the key re-signed by another identity', async () => {
      await tamper((db) => {
        const r = row(db, a.keyId);
        const forged = new TestIdentity().sign(decodeKeyRecord(Buffer.from(r.record as string, 'base64')));
        db.prepare('UPDATE keys SET record = ?, record_signature = ? WHERE key_id = ?').run(forged.record, forged.signature, a.keyId);
      });
      await expectRefused();
    });

    it('the records of two keys swapped', async () => {
      await tamper((db) => {
        const ra = row(db, a.keyId);
        const rb = row(db, b.keyId);
        const set = db.prepare('UPDATE keys SET record = ?, record_signature = ?, subject = ? WHERE key_id = ?');
        // Through a free subject first: one active key per (project, subject) holds at every step.
        set.run(ra.record, ra.record_signature, 'swapping', a.keyId);
        set.run(ra.record, ra.record_signature, ra.subject, b.keyId);
        set.run(rb.record, rb.record_signature, rb.subject, a.keyId);
      });
      await expectRefused();
      expect((await sign(b.keyId)).body.error.code).toBe('KEY_INTEGRITY');
    });

    it('the blobs of two keys swapped (each record names the other blob)', async () => {
      await tamper((db) => {
        const ra = row(db, a.keyId);
        const rb = row(db, b.keyId);
        db.prepare('UPDATE keys SET blob = ? WHERE key_id = ?').run(rb.blob, a.keyId);
        db.prepare('UPDATE keys SET blob = ? WHERE key_id = ?').run(ra.blob, b.keyId);
      });
      await expectRefused();
    });

    it('a key moved to another project row, and the default project swapped for another genuine project', async () => {
      // Another project, genuinely signed by the identity: still not the key's project.
      const other = enclave.identity.sign(
        enclave.identity.project({ projectId: 'p_0123456789abcdefghij', projectKey: 'pk_0123456789abcdefghij' }),
      );
      await tamper((db) => {
        db.prepare('INSERT INTO projects (project_id, record, signature, seq, updated_at) VALUES (?, ?, ?, 0, 0)').run(
          'p_0123456789abcdefghij',
          other.record,
          other.signature,
        );
        db.prepare('UPDATE keys SET project_id = ? WHERE key_id = ?').run('p_0123456789abcdefghij', a.keyId);
      });
      await expectRefused();
      expect((await sign(b.keyId)).status).toBe(200);

      await tamper((db) => {
        db.prepare('UPDATE keys SET project_id = ? WHERE key_id = ?').run('default', a.keyId);
        db.prepare("UPDATE projects SET record = ?, signature = ? WHERE project_id = 'default'").run(other.record, other.signature);
      });
      await expectRefused();
    });

    it('the default project replaced by one the identity did not sign (and the start logs it)', async () => {
      const forged = new TestIdentity().sign(enclave.identity.project());
      await tamper((db) =>
        db.prepare("UPDATE projects SET record = ?, signature = ? WHERE project_id = 'default'").run(forged.record, forged.signature),
      );
      await expectRefused();
      expect(log.lines().filter((l) => String(l.msg).startsWith('the default project stored in the database is not signed'))).toHaveLength(
        1,
      );
      // Nothing new can be made in it either.
      const created = await api('/v1/keys', { body: {} });
      expect([created.status, created.body.error.code]).toEqual([500, 'KEY_INTEGRITY']);
      expect(calls('keys.create')).toBe(2);
    });

    it('a state column edited: the record decides (a disabled key stays disabled)', async () => {
      expect((await api(`/v1/keys/${a.keyId}/disable`, { body: {} })).status).toBe(200);
      await tamper((db) => db.prepare('UPDATE keys SET disabled = 0 WHERE key_id = ?').run(a.keyId));
      const before = calls('keys.sign');
      expect((await sign(a.keyId)).body.error.code).toBe('KEY_INTEGRITY');
      expect(calls('keys.sign')).toBe(before);
    });
  });

  describe('answers of the enclave are checked before anything is stored', () => {
    beforeEach(async () => {
      await start();
    });

    it.each<[string, (r: ReturnType<FakeEnclave['alter']['create'] & {}>) => ReturnType<FakeEnclave['alter']['create'] & {}>]>([
      [
        'a record for another key id',
        (r) => ({ ...r, record: enclave.identity.sign({ ...decodeKeyRecord(Buffer.from(r.record.record, 'base64')), keyId: 'k_other' }) }),
      ],
      [
        'a record that does not bind the blob returned',
        (r) => ({ ...r, blob: fakeKeyBlob({ keyId: r.keyId, address: r.address, projectId: 'default', subject: 'carol' }) }),
      ],
      [
        'a record for another subject',
        (r) => ({ ...r, record: enclave.identity.sign({ ...decodeKeyRecord(Buffer.from(r.record.record, 'base64')), subject: null }) }),
      ],
      [
        'a record that is not the first (seq 1)',
        (r) => {
          const rec = decodeKeyRecord(Buffer.from(r.record.record, 'base64'));
          return {
            ...r,
            record: enclave.identity.sign({ ...rec, seq: 1, prev: hex(recordDigest(Buffer.from(r.record.record, 'base64'))) }),
          };
        },
      ],
      [
        'a record signed by another identity',
        (r) => ({ ...r, record: new TestIdentity().sign(decodeKeyRecord(Buffer.from(r.record.record, 'base64'))) }),
      ],
      [
        'a key made elsewhere (another address in the record)',
        (r) => {
          const other = privateKeyToAccount(generatePrivateKey());
          return { ...r, address: other.address, publicKey: other.publicKey };
        },
      ],
    ])('keys.create answering %s is KEY_INTEGRITY and stores nothing', async (_name, alter) => {
      enclave.alter.create = alter;
      const res = await api('/v1/keys', { body: { externalId: 'carol' } });
      expect([res.status, res.body.error.code]).toEqual([500, 'KEY_INTEGRITY']);
      expect((await api('/v1/keys')).body.keys).toEqual([]);
      // The same request succeeds once the enclave answers truthfully: the external id was not taken.
      enclave.alter.create = undefined;
      expect((await api('/v1/keys', { body: { externalId: 'carol' } })).status).toBe(201);
    });

    it.each<[string, (r: KeyRecord) => KeyRecord]>([
      ['skips a seq', (r) => ({ ...r, seq: r.seq + 1 })],
      ['does not chain to the record it replaces', (r) => ({ ...r, prev: hex(Buffer.alloc(32)) })],
      ['sets the other value', (r) => ({ ...r, disabled: !r.disabled })],
      ['moves the key to another subject', (r) => ({ ...r, subject: 'mallory' })],
      ['retires the key', (r) => ({ ...r, state: 'retired' })],
    ])('keys.setDisabled answering a record that %s is KEY_INTEGRITY and the stored record stays', async (_name, alter) => {
      const k = await createKey();
      enclave.alter.setDisabled = alter;
      const res = await api(`/v1/keys/${k.keyId}/disable`, { body: {} });
      expect([res.status, res.body.error.code]).toEqual([500, 'KEY_INTEGRITY']);
      const got = await api(`/v1/keys/${k.keyId}`);
      expect([got.body.disabled, got.body.record]).toEqual([false, k.record]);
      expect((await sign(k.keyId)).status).toBe(200);
    });
  });

  describe('the keystore identity', () => {
    const refusals = () =>
      log.lines().filter((l) => String(l.msg).startsWith('enclave refused') || String(l.msg).startsWith('enclave not used'));

    it('is learned after the hello; the default project is seeded once', async () => {
      const p = await start();
      expect(p.pool.identity?.publicKey).toBe(enclave.identity.publicKey);
      await waitFor(() => p.pool.connectedCount === 2, 5000, 'both connections');
      expect(calls('identity.get')).toBe(2); // once per connection
      expect((await p.store.getProject('default'))?.signed).toEqual(enclave.defaultProject);
      await stop();
      await start();
      const db = new Database(dbPath, { readonly: true });
      expect((db.prepare('SELECT COUNT(*) AS n FROM projects').get() as { n: number }).n).toBe(1);
      db.close();
    });

    it('refuses an enclave whose identity is not the pinned one: never up, not ready, logged once', async () => {
      const other = new TestIdentity().publicKey;
      const p = await start({ identity: { publicKey: other } }, false);
      expect((await rejection(p.pool.waitUp(1500))).code).toBe('UNAVAILABLE');
      await waitFor(() => calls('identity.get') >= 4, 5000, 'the pool to retry');
      expect(p.pool.up).toBe(false);
      expect(p.pool.identity).toBeUndefined();
      expect(refusals().map((l) => [l.level, l.msg])).toEqual([
        [
          50,
          `enclave refused: the enclave's keystore identity ${enclave.identity.publicKey} is not the one this parent is configured for (identity.publicKey ${other})`,
        ],
      ]);
      const ready = await api('/readyz', { token: null });
      expect([ready.status, ready.body.checks.enclave]).toEqual([503, false]);
      expect((await api('/v1/keys', { body: {} })).body.error.code).toBe('IDENTITY_UNAVAILABLE');
      expect(calls('keys.create')).toBe(0);
      expect(await p.store.getProject('default')).toBeUndefined();
    });

    it('uses an enclave whose identity is the pinned one', async () => {
      const p = await start({ identity: { publicKey: enclave.identity.publicKey } });
      expect(p.pool.identity?.publicKey).toBe(enclave.identity.publicKey);
      expect((await sign((await createKey()).keyId)).status).toBe(200);
    });

    it('waits for an enclave that has no identity ready yet (genesis image, or unsealing), logging it once', async () => {
      enclave.identityUnavailable = true;
      const p = await start({}, false);
      await waitFor(() => calls('identity.get') >= 4, 5000, 'the pool to retry');
      expect(p.pool.up).toBe(false);
      expect(refusals().map((l) => [l.level, l.msg])).toEqual([
        [40, 'enclave not used: the enclave has no keystore identity ready: the keystore identity is not available'],
      ]);
      enclave.identityUnavailable = false;
      await p.pool.waitUp(5000);
      expect((await createKey()).keyId).toMatch(/^k_/);
    });

    it('refuses an enclave that comes back with another identity than the one learned', async () => {
      const p = await start();
      const k = await createKey();
      await enclave.close();
      enclave = new FakeEnclave();
      await enclave.listen(new SimulatedVsockTransport(runDir), ENCLAVE);
      await waitFor(() => calls('identity.get') >= 2, 5000, 'the pool to reconnect');
      expect(p.pool.up).toBe(false);
      expect(refusals().map((l) => l.msg)).toEqual([
        `enclave refused: the enclave's keystore identity ${enclave.identity.publicKey} is not ${p.pool.identity?.publicKey}, the one this parent learned first; restart the parent to use the new one`,
      ]);
      expect((await sign(k.keyId)).body.error.code).toBe('UNAVAILABLE');
      expect(calls('keys.sign')).toBe(0);
    });

    it('GET /v1/identity answers without a token, passes the nonce on, and refuses unknown query fields', async () => {
      await start();
      const res = await api('/v1/identity?nonce=0x00ff', { token: null });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({
        publicKey: enclave.identity.publicKey,
        genesisDocument: Buffer.from('fake genesis document').toString('base64'),
        attestation: Buffer.from('fake document for 0x00ff').toString('base64'),
      });
      expect((await api('/v1/identity?nonce=0x00ff&extra=1', { token: null })).body.error.code).toBe('INVALID_PARAMS');
      expect((await api('/v1/identity?nonce=zz', { token: null })).body.error.code).toBe('INVALID_PARAMS');
    });
  });

  describe('views', () => {
    it('carry the project, state, signed record and birth attestation, on create, get and list', async () => {
      await start();
      const born = await createKey({ externalId: 'dave', attest: true });
      const plain = await createKey();
      const { record } = openKeyRecord(born.record, enclave.identity.publicKeyObject);
      expect(record).toMatchObject({
        keyId: born.keyId,
        address: born.address,
        projectId: 'default',
        subject: 'dave',
        state: 'active',
        disabled: false,
        seq: 0,
        origin: 'created',
      });
      expect(openKeyRecord(plain.record, enclave.identity.publicKeyObject).record.subject).toBeNull();
      const got = await api(`/v1/keys/${born.keyId}`);
      expect(got.body).toEqual(born);
      expect(got.body).toMatchObject({
        projectId: 'default',
        state: 'active',
        attestation: Buffer.from(`birth of ${born.keyId}`).toString('base64'),
      });
      expect((await api(`/v1/keys/${plain.keyId}`)).body).not.toHaveProperty('attestation');
      const list = await api('/v1/keys');
      expect(list.body.keys).toEqual([born, plain]);
      expect((await api('/v1/keys?externalId=dave')).body.keys).toEqual([born]);
      // An existing external id answers the stored key, with its attestation.
      const again = await api('/v1/keys', { body: { externalId: 'dave' } });
      expect([again.status, again.body]).toEqual([200, { ...born, created: false }]);
    });
  });

  describe('disable and enable', () => {
    it('each change is a new record, seq + 1, chained to the one before; a repeat changes nothing', async () => {
      await start();
      const k = await createKey();
      const seq0 = Buffer.from(k.record.record, 'base64');
      const id = enclave.identity.publicKeyObject;

      const off = await api(`/v1/keys/${k.keyId}/disable`, { body: {} });
      expect([off.status, off.body.disabled, off.body.state]).toEqual([200, true, 'active']);
      const r1 = openKeyRecord(off.body.record, id).record;
      expect([r1.seq, r1.disabled, r1.prev]).toEqual([1, true, hex(recordDigest(seq0))]);
      const before = calls('keys.sign');
      const refused = await sign(k.keyId);
      expect([refused.status, refused.body.error.code, refused.body.error.message]).toEqual([
        409,
        'KEY_DISABLED',
        `key ${k.keyId} is disabled`,
      ]);
      expect(calls('keys.sign')).toBe(before);

      expect((await api(`/v1/keys/${k.keyId}/disable`, { body: {} })).body.record).toEqual(off.body.record);
      expect(calls('keys.setDisabled')).toBe(1);

      const on = await api(`/v1/keys/${k.keyId}/enable`, { body: {} });
      const r2 = openKeyRecord(on.body.record, id).record;
      expect([on.body.disabled, r2.seq, r2.disabled, r2.prev]).toEqual([
        false,
        2,
        false,
        hex(recordDigest(Buffer.from(off.body.record.record, 'base64'))),
      ]);
      expect({ ...r2, seq: 0, prev: null, createdAt: 0 }).toEqual({ ...openKeyRecord(k.record, id).record, createdAt: 0 });
      expect((await sign(k.keyId)).status).toBe(200);
      // The enclave was handed the current record each time.
      expect(enclave.signRequests[enclave.signRequests.length - 1]?.record).toEqual(on.body.record);

      // Durable: what was committed, read back by a new parent.
      await stop();
      await start();
      expect((await api(`/v1/keys/${k.keyId}`)).body).toEqual(on.body);
      expect((await sign(k.keyId)).status).toBe(200);
    });

    it('concurrent changes of one key are made one after the other, each from the record before it', async () => {
      await start();
      const k = await createKey();
      const results = await Promise.all(
        [true, false, true, false, true].map((d) => api(`/v1/keys/${k.keyId}/${d ? 'disable' : 'enable'}`, { body: {} })),
      );
      expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
      const last = await api(`/v1/keys/${k.keyId}`);
      const r = openKeyRecord(last.body.record, enclave.identity.publicKeyObject).record;
      expect([r.seq, r.disabled, last.body.disabled]).toEqual([5, true, true]);
    });
  });

  describe('keys made before 0.4 (no record)', () => {
    /** A key as schema version 1 stored it: a version 1 blob, no record. */
    const legacy = (db: Database.Database, keyId: string, disabled = false) => {
      const account = privateKeyToAccount(generatePrivateKey());
      db.prepare(
        `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, attestation, disabled, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, '{}', NULL, ?, 1, 1)`,
      ).run(keyId, `ext-${keyId}`, account.address, account.publicKey, Buffer.from('a v1 blob').toString('base64'), disabled ? 1 : 0);
      return account;
    };

    it('stay readable, answer UNSUPPORTED_VERSION on sign, and can still be disabled', async () => {
      await start();
      await tamper((db) => legacy(db, 'k_old'));
      const got = await api('/v1/keys/k_old');
      expect(got.body).toMatchObject({ keyId: 'k_old', projectId: null, state: null, record: null, disabled: false });
      const refused = await sign('k_old');
      expect([refused.status, refused.body.error.code, refused.body.error.message]).toEqual([
        500,
        'UNSUPPORTED_VERSION',
        'key k_old was made before 0.4 and has no signed record: run the migration (parent migrate) before it can sign',
      ]);
      expect(calls('keys.sign')).toBe(0);
      expect(
        log
          .lines()
          .some(
            (l) =>
              l.msg ===
              'keys made before 0.4 have no signed record and cannot sign until migrated (parent migrate, with the migration image)',
          ),
      ).toBe(true);
      const off = await api('/v1/keys/k_old/disable', { body: {} });
      expect([off.status, off.body.disabled, off.body.record]).toEqual([200, true, null]);
      expect((await sign('k_old')).body.error.code).toBe('KEY_DISABLED');
      expect(calls('keys.setDisabled')).toBe(0);
    });

    it('migrated while disabled, stay refused until the enclave has recorded the disable, which the parent asks for at start', async () => {
      await start();
      await stop();
      const db = new Database(dbPath);
      const account = legacy(db, 'k_off', true);
      db.close();
      enclave.adopt('k_off', account);
      // What `parent migrate` stores: a version 2 blob and an enabled first record of origin "migrated".
      const blob = fakeKeyBlob({ keyId: 'k_off', address: account.address, projectId: 'default', subject: 'ext-k_off' });
      const first: KeyRecord = {
        v: 1,
        kind: 'key',
        keyId: 'k_off',
        address: account.address,
        blobSha256: blobSha256(blob),
        projectId: 'default',
        subject: 'ext-k_off',
        state: 'active',
        disabled: false,
        seq: 0,
        prev: null,
        origin: 'migrated',
        createdAt: 2,
      };
      const store = new SqliteDatabase(dbPath);
      expect(store.migrateKey('k_off', blob, enclave.identity.sign(first), first)).toBe(true);
      expect(store.get('k_off')).toMatchObject({ disabled: true, disablePending: true, recordSeq: 0 });
      expect(store.migrateKey('k_off', blob, enclave.identity.sign(first), first)).toBe(false); // once
      store.close();

      await start();
      await waitFor(() => calls('keys.setDisabled') === 1, 5000, 'the pending disable to be recorded');
      await waitFor(() => log.lines().some((l) => l.msg === 'recorded the disable of keys migrated while disabled'), 5000, 'the log');
      const got = await api('/v1/keys/k_off');
      const r = openKeyRecord(got.body.record, enclave.identity.publicKeyObject).record;
      expect([got.body.disabled, r.seq, r.disabled, r.origin]).toEqual([true, 1, true, 'migrated']);
      expect((await sign('k_off')).body.error.code).toBe('KEY_DISABLED');
      expect((await api('/v1/keys/k_off/enable', { body: {} })).body.disabled).toBe(false);
      expect((await sign('k_off')).status).toBe(200);
    });
  });

  it('the registry refuses everything record-bound until it knows the identity', async () => {
    enclave.identityUnavailable = true;
    const p = await start({}, false);
    const err = await rejection<KeystoreError>(p.keys.create({}));
    expect([err.code, err.retryable]).toEqual(['IDENTITY_UNAVAILABLE', true]);
  });
});
