/**
 * A compromised instance on a shared PostgreSQL store, against an honest parent (startParent with the fake enclave)
 * on the same database (docs/STORAGE.md, "What the database enforces"; docs/SECURITY.md). The attacker holds only
 * what every daemon holds, the application role (SELECT, INSERT, UPDATE; no DELETE, no DDL), and writes rows and
 * notifications. The honest instance must never answer a key the database alone put there, nor act on a record
 * rolled back.
 */
import fs from 'node:fs';
import pg from 'pg';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { captureLogger, tempRunDir, type CapturedLogger } from '@nks/shared-test/helpers';
import { hashToken } from '../src/api/auth';
import { startParent, type RunningParent } from '../src/app';
import { parseParentConfig } from '../src/config';
import { PostgresEngine } from '../src/store/postgres';
import { createAppRole, startPostgres, type PostgresServer } from '../../test/support/postgres';
import { FAKE_KMS_KEY_ARN, FakeEnclave } from './fake-enclave';

const ENCLAVE = 'vsock://16:5000';
const TOKEN = 'nks_test_token';

async function sql<R extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text, params)).rows;
  } finally {
    await client.end();
  }
}

async function until(check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let server: PostgresServer;
let databases = 0;
/** A fresh database migrated by its owner, and the application role's URL on it. */
async function freshStore(): Promise<{ owner: string; app: string }> {
  const name = `r21_${++databases}`;
  await sql(server.superuserUrl, `CREATE DATABASE ${name}`);
  const u = new URL(server.superuserUrl);
  u.pathname = `/${name}`;
  const owner = u.toString();
  await (await PostgresEngine.open({ url: owner, poolSize: 2, migrate: true })).close();
  const app = await createAppRole(owner, `nks_app_${databases}`);
  return { owner, app };
}

beforeAll(async () => {
  server = await startPostgres();
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

describe('an honest parent on a database a compromised instance writes to', () => {
  let runDir: string;
  let enclave: FakeEnclave;
  let parent: RunningParent | undefined;
  let log: CapturedLogger;
  let app: string;

  const api = async (pathname: string, init: { method?: string; body?: unknown } = {}) => {
    const res = await fetch(`${(parent as RunningParent).url}${pathname}`, {
      method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
      headers: { authorization: `Bearer ${TOKEN}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };

  beforeEach(async () => {
    runDir = tempRunDir('nks-r21-');
    log = captureLogger('debug');
    enclave = new FakeEnclave();
    await enclave.listen(new SimulatedVsockTransport(runDir), ENCLAVE);
    ({ app } = await freshStore());
    const config = parseParentConfig({
      api: { listen: { host: '127.0.0.1', port: 0 } },
      tokens: [{ name: 'test', sha256: hashToken(TOKEN), scopes: ['keys:create', 'keys:sign', 'keys:read', 'admin'] }],
      database: { kind: 'postgres', url: app, migrate: false, poolSize: 2 },
      transport: { kind: 'simulated', runDir },
      enclave: { address: ENCLAVE, poolSize: 1, connectTimeoutMs: 1000, deadlineMs: 5000 },
      kmsProxy: { listen: 'vsock://3:8000', allowedKeyArns: [FAKE_KMS_KEY_ARN], region: 'us-east-1', endpoint: 'http://127.0.0.1:9' },
      wallets: { relay: { host: '127.0.0.1', port: 0 } },
      logLevel: 'debug',
    });
    parent = await startParent(config, log.logger);
    await parent.pool.waitUp(5000);
  }, 60_000);

  afterEach(async () => {
    enclave?.releaseAll();
    await parent?.stop();
    parent = undefined;
    await enclave?.close();
    fs.rmSync(runDir, { recursive: true, force: true });
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
});
