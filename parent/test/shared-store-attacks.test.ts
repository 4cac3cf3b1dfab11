/**
 * A compromised instance on a shared PostgreSQL store, against an honest parent (startParent with the fake enclave)
 * on the same database (docs/STORAGE.md, "What the database enforces"; docs/SECURITY.md). The attacker holds only
 * what every daemon holds, the application role (SELECT, INSERT, UPDATE; no DELETE, no DDL), and writes rows and
 * notifications. The honest instance must never answer a key the database alone put there, nor act on a record
 * rolled back.
 */
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { CapturedLogger } from '@nks/shared-test/helpers';
import { KeyStore } from '../src/store/key-store';
import { PostgresEngine } from '../src/store/postgres';
import { startPostgres, type PostgresServer } from '../../test/support/postgres';
import type { FakeEnclave } from './fake-enclave';
import { freezableProxy, freshStore, honestParent, sql, until, type HonestParent } from './shared-store-support';
import { keyRecord, newKey, next, update } from './store-fixtures';

let server: PostgresServer;
beforeAll(async () => {
  server = await startPostgres();
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

describe('an honest parent on a database a compromised instance writes to', () => {
  let h: HonestParent;
  let app: string;
  let enclave: FakeEnclave;
  let log: CapturedLogger;
  const api = (pathname: string, init?: { method?: string; body?: unknown }) => h.api(pathname, init);

  beforeEach(async () => {
    ({ app } = await freshStore(server));
    h = await honestParent(app);
    ({ enclave, log } = h);
  }, 60_000);
  afterEach(async () => {
    await h?.stop();
  });

  it("never answers a row without a record as a user's key (create by external id, lookup, view)", async () => {
    // The attacker's own EOA, under the victim's external id, shaped as a key made before 0.4 (no record).
    const mallory = privateKeyToAccount(generatePrivateKey());
    const planted = await sql(
      app,
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, created_at, updated_at)
       VALUES ('kMallory', 'victim-42', $1, $2, 'AAAA', '{}', 1, 1)`,
      [mallory.address, mallory.publicKey],
    ).then(
      () => true,
      () => false, // the database refuses such a row (schema 6): nothing to answer either way
    );
    const created = await api('/v1/keys', { body: { externalId: 'victim-42' } });
    expect(created.body.address).not.toBe(mallory.address);
    if (planted) {
      expect([created.status, created.body.error?.code]).toEqual([500, 'KEY_INTEGRITY']);
      expect((await api('/v1/keys?externalId=victim-42')).body.error?.code).toBe('KEY_INTEGRITY');
      expect((await api('/v1/keys/kMallory')).body.error?.code).toBe('KEY_INTEGRITY');
      expect(log.text()).toMatch(/refused key kMallory: a row without a signed record in a shared database/);
    } else expect(created.status).toBe(201);
  });

  it("never answers another subject's genuine key for an external id moved onto it", async () => {
    const victim = await api('/v1/keys', { body: { externalId: 'victim-7' } });
    const other = await api('/v1/keys', { body: { externalId: 'attacker-7' } });
    expect([victim.status, other.status]).toEqual([201, 201]);
    // external_id is a column, not a field of the signed record: move it (the database may refuse, schema 6).
    const moved = await sql(app, `UPDATE keys SET external_id = 'parked' WHERE key_id = $1`, [victim.body.keyId])
      .then(() => sql(app, `UPDATE keys SET external_id = 'victim-7' WHERE key_id = $1`, [other.body.keyId]))
      .then(
        () => true,
        () => false,
      );
    const again = await api('/v1/keys', { body: { externalId: 'victim-7' } });
    const listed = await api('/v1/keys?externalId=victim-7');
    if (moved) {
      expect([again.status, again.body.error?.code]).toEqual([500, 'KEY_INTEGRITY']);
      expect(listed.body.error?.code).toBe('KEY_INTEGRITY');
    } else {
      expect([again.status, again.body.keyId]).toEqual([200, victim.body.keyId]);
      expect(listed.body.keys.map((k: { keyId: string }) => k.keyId)).toEqual([victim.body.keyId]);
    }
  });

  it('cannot roll a record back in the database: the disable made through an honest instance holds', async () => {
    const k = await api('/v1/keys', { body: { externalId: 'carol' } });
    const [before] = await sql<{ record: string; record_signature: string }>(
      app,
      'SELECT record, record_signature FROM keys WHERE key_id = $1',
      [k.body.keyId],
    );
    expect((await api(`/v1/keys/${k.body.keyId}/disable`, { body: {} })).status).toBe(200);
    // The attacker puts the seq 0 record back, every column consistent with it, and tells every cache to forget.
    await expect(
      sql(app, 'UPDATE keys SET record = $2, record_signature = $3, record_seq = 0, disabled = 0 WHERE key_id = $1', [
        k.body.keyId,
        before?.record,
        before?.record_signature,
      ]),
    ).rejects.toThrow(/nks: /);
    await sql(app, `SELECT pg_notify('nks_changes', 'key:' || $1::text)`, [k.body.keyId]);
    expect((await api(`/v1/keys/${k.body.keyId}`)).body.disabled).toBe(true);
    const signsBefore = enclave.calls['keys.sign'] ?? 0;
    const signed = await api(`/v1/keys/${k.body.keyId}/sign`, { body: { type: 'message', message: 'after rollback' } });
    expect([signed.status, signed.body.error?.code]).toEqual([409, 'KEY_DISABLED']);
    expect(enclave.calls['keys.sign'] ?? 0).toBe(signsBefore);
  });
});

describe('coherence when the network to the database goes silent', () => {
  it('never serves a row another instance changed more than a second ago: it reads again, or fails', async () => {
    const { app } = await freshStore(server);
    const writer = await PostgresEngine.open({ url: app, poolSize: 2, migrate: false });
    const proxy = await freezableProxy(server.port);
    const viaProxy = new URL(app);
    viaProxy.port = String(proxy.port);
    const reader = new KeyStore(
      await PostgresEngine.open({ url: viaProxy.toString(), poolSize: 2, migrate: false, statementTimeoutMs: 500 }),
    );
    try {
      await until(() => reader.coherent);
      await writer.insert(newKey('k1', 'alice'));
      expect((await reader.get('k1'))?.disabled).toBe(false); // read once, now cached
      proxy.freeze(); // the reader's host loses its path to the database, silently
      await writer.updateRecords([update(next(keyRecord('k1'), 'active', { disabled: true }))]);
      const changedAt = Date.now();
      await new Promise((r) => setTimeout(r, 1_500));
      // The stale cached row is not served: the read goes to the database (silent: it fails) instead.
      const after = await reader.get('k1').then(
        (k) => (k?.disabled ? 'fresh' : 'stale'),
        (err: { code?: string }) => err.code,
      );
      expect(Date.now() - changedAt).toBeGreaterThan(1_000);
      expect(after).not.toBe('stale');
    } finally {
      await proxy.close();
      await reader.close().catch(() => undefined);
      await writer.close();
    }
  }, 30_000);
});
