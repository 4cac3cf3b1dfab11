/**
 * A compromised instance on a shared PostgreSQL store with an enclave of its own (same keystore identity), against
 * an honest parent on the same database (docs/STORAGE.md, "Guards in the database"; docs/SECURITY.md). The
 * records signed here with `enclave.identity` are exactly those its own (restarted) enclave makes through the
 * ordinary methods: genuine records that fork from older ones, keys of a project of its own under a victim's
 * external id, and rows planted at the next row numbers. The honest instance must answer them as KEY_INTEGRITY or
 * not at all, never as the user's key or the project's current policy.
 */
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { decodeProjectRecord, hex, recordDigest, type KeyRecord, type ProjectRecord } from '@nks/shared/records';
import type { CapturedLogger } from '@nks/shared-test/helpers';
import { blobSha256 } from '../src/key-registry';
import { PostgresEngine } from '../src/store/postgres';
import { startPostgres, type PostgresServer } from '../../test/support/postgres';
import { fakeKeyBlob, type FakeEnclave } from './fake-enclave';
import { freshStore, honestParent, sql, type HonestParent } from './shared-store-support';
import { newKey } from './store-fixtures';

let server: PostgresServer;
beforeAll(async () => {
  server = await startPostgres();
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

const digestHex = (b64: string) => hex(recordDigest(Buffer.from(b64, 'base64')));

describe('an honest parent on a database a compromised instance with an enclave writes to', () => {
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

  it('[R21b-1] a forked project record (older content, next seq) cannot replace the stored one', async () => {
    // Honest: a token project, then a policy (seq 1). With approvers in it, only they could relax it.
    const p0 = await api('/v1/projects', { body: { name: 'treasury', auth: { type: 'token' } } });
    expect(p0.status).toBe(201);
    const strict = { rules: [{ name: 'no blind signing', effect: 'deny', when: { type: ['digest'] } }], limits: [] };
    const p1 = await api(`/v1/projects/${p0.body.projectId}/policies`, { method: 'PUT', body: strict });
    expect([p1.status, p1.body.seq]).toEqual([200, 1]);

    // Compromised instance: its enclave, restarted, accepts seq 0 again and makes two state changes from it
    // (projects.setState needs no approver): seq 1' (disabled) and seq 2' (active), neither with the policy.
    const r0 = decodeProjectRecord(Buffer.from(p0.body.record.record, 'base64'));
    const r1: ProjectRecord = { ...r0, state: 'disabled', seq: 1, prev: digestHex(p0.body.record.record), createdAt: Date.now() };
    const s1 = enclave.identity.sign(r1);
    const r2: ProjectRecord = { ...r1, state: 'active', seq: 2, prev: digestHex(s1.record), createdAt: Date.now() };
    const s2 = enclave.identity.sign(r2);
    expect(r2.policies).toBeUndefined();
    // The fork's next seq over the stored one: docs/STORAGE.md says the guards refuse a record rolled back.
    const stored = await sql(
      app,
      `UPDATE projects SET record = $2, signature = $3, seq = 2, created_at = $4, state = 'active' WHERE project_id = $1 RETURNING seq`,
      [p0.body.projectId, s2.record, s2.signature, r2.createdAt],
    ).then(
      () => 'stored',
      (err: Error) => err.message,
    );
    await sql(app, `SELECT pg_notify('nks_changes', 'project:' || $1::text)`, [p0.body.projectId]);
    const now = await api(`/v1/projects/${p0.body.projectId}/policies`);
    // Stored or refused, the honest instance never serves the fork (nor hands it to its enclave): it is not the
    // record that replaced the stored one (its prev is seq 0's digest, the row's record_prev seq 1's).
    if (stored === 'stored') expect([now.status, now.body.error?.code]).toEqual([500, 'KEY_INTEGRITY']);
    else expect([stored, now.body.seq, now.body.policies?.rules?.length]).toEqual([expect.stringMatching(/nks: /), 1, 1]);
    const signs = enclave.calls['keys.sign'] ?? 0;
    const key = await api('/v1/keys', { body: { projectId: p0.body.projectId } });
    if (key.status === 201) {
      const signed = await api(`/v1/keys/${key.body.keyId}/sign`, { body: { type: 'digest', digest: `0x${'11'.repeat(32)}` } });
      expect(signed.status).not.toBe(200);
    }
    expect(enclave.calls['keys.sign'] ?? 0).toBe(signs);
    expect(log.text()).toMatch(/refused project .*: the stored record does not verify/);
  });

  it("[R21b-2] a lookup by external id answers the user's key, not another project's key planted with a lower seq", async () => {
    const victim = await api('/v1/keys', { body: { externalId: 'victim-9' } });
    expect(victim.status).toBe(201);

    // Compromised instance: a token project Q of its own (projects.create), a key A of Q for subject "victim-9"
    // (keys.create, stored without the external id), A's successor B (keys.successor) stored under the external id
    // "victim-9" (a successor escapes the first-key unique index) with an explicit seq below the victim's row, and
    // B activated (keys.activate): genuine records, every column matching them.
    const id = enclave.identity;
    const q = id.project({ projectId: `p_${'Q'.repeat(22)}`, projectKey: `pk_${'Q'.repeat(22)}` });
    const qs = id.sign(q);
    await sql(
      app,
      `INSERT INTO projects (project_id, record, signature, seq, updated_at, name, project_key, state, auth_type, jwks_host, created_at)
       VALUES ($1, $2, $3, 0, 1, 'mine', $4, 'active', 'token', NULL, $5)`,
      [q.projectId, qs.record, qs.signature, q.projectKey, q.createdAt],
    );
    const mk = (keyId: string, over: Partial<KeyRecord>) => {
      const account = privateKeyToAccount(generatePrivateKey());
      const blob = fakeKeyBlob({ keyId, address: account.address, projectId: q.projectId, subject: 'victim-9' });
      const record: KeyRecord = {
        v: 1,
        kind: 'key',
        keyId,
        address: account.address,
        blobSha256: blobSha256(blob),
        projectId: q.projectId,
        subject: 'victim-9',
        state: 'active',
        disabled: false,
        seq: 0,
        prev: null,
        origin: 'created',
        createdAt: Date.now(),
        ...over,
      };
      return { account, blob, record, signed: id.sign(record) };
    };
    const insert = (k: ReturnType<typeof mk>, externalId: string | null, seq: number | null) =>
      sql(
        app,
        `INSERT INTO keys (${seq === null ? '' : 'seq, '}key_id, external_id, address, public_key, blob, labels, disabled, created_at,
                           updated_at, project_id, subject, state, record, record_signature, record_seq, predecessor)
         VALUES (${seq === null ? '' : `${seq}, `}$1, $2, $3, '0x04', $4, '{}', 0, 1, 1, $5, 'victim-9', $6, $7, $8, 0, $9)`,
        [
          k.record.keyId,
          externalId,
          k.record.address,
          k.blob,
          q.projectId,
          k.record.state,
          k.signed.record,
          k.signed.signature,
          k.record.predecessor ?? null,
        ],
      );
    const a = mk('kAttackerA', {});
    await insert(a, null, null);
    const b = mk('kAttackerB', { state: 'pending', predecessor: 'kAttackerA' });
    await insert(b, 'victim-9', -1);
    const next = (k: ReturnType<typeof mk>, state: KeyRecord['state']) => {
      const record: KeyRecord = { ...k.record, state, seq: 1, prev: digestHex(k.signed.record), createdAt: Date.now() };
      return { record, signed: id.sign(record) };
    };
    for (const [k, state] of [
      [a, 'retired'],
      [b, 'active'],
    ] as const) {
      const n = next(k, state);
      await sql(app, 'UPDATE keys SET state = $2, record = $3, record_signature = $4, record_seq = 1 WHERE key_id = $1', [
        k.record.keyId,
        state,
        n.signed.record,
        n.signed.signature,
      ]);
    }

    const listed = await api('/v1/keys?externalId=victim-9');
    const again = await api('/v1/keys', { body: { externalId: 'victim-9' } });
    // docs/STORAGE.md: "Create-by-externalId, GET /v1/keys?externalId= ... answer the subject's active key".
    expect({
      listed: listed.body.keys?.map((k: { keyId: string; address: string }) => k.keyId),
      again: [again.status, again.body.keyId ?? again.body.error?.code],
    }).toEqual({ listed: [victim.body.keyId], again: [200, victim.body.keyId] });
  });
});

describe('the engine against rows such an instance plants', () => {
  it("[R21b-3] activations at once take both keys' locks in one call each and do not starve the lock pool", async () => {
    const { app } = await freshStore(server);
    const engine = await PostgresEngine.open({ url: app, poolSize: 2, migrate: false, connectTimeoutMs: 1000 });
    try {
      // KeyRegistry.activate: serialized([keyId, predecessorId], change), one withLocks for both keys.
      const activation = (i: number) => engine.withLocks([`successor-${i}`, `predecessor-${i}`], async () => 'activated');
      const results = await Promise.all([1, 2, 3, 4].map((i) => activation(i).catch((err: { code?: string }) => err.code)));
      expect(results).toEqual(['activated', 'activated', 'activated', 'activated']);
    } finally {
      await engine.close();
    }
  }, 30_000);

  it('[R21b-4] rows planted at the next identity values do not refuse honest creates', async () => {
    const { app } = await freshStore(server);
    const engine = await PostgresEngine.open({ url: app, poolSize: 2, migrate: false });
    try {
      await engine.insert(newKey('k0', 'first'));
      // The attacker inserts junk rows (record present, record_seq 0: the insert guard's only rule) at the seq
      // values the identity will hand out next (GENERATED BY DEFAULT accepts explicit values).
      for (let s = 2; s <= 12; s++)
        await sql(
          app,
          `INSERT INTO keys (seq, key_id, address, public_key, blob, created_at, updated_at, record, record_signature, record_seq)
           VALUES ($1, $2, '0x0', '0x04', 'AAAA', 1, 1, 'x', 'x', 0)`,
          [s, `junk-${s}`],
        );
      const out = await engine.insert(newKey('k1', 'second', { subject: 'second' })).then(
        (r) => r.created,
        (err: { code?: string }) => err.code,
      );
      expect(out).toBe(true);
    } finally {
      await engine.close();
    }
  }, 30_000);
});
