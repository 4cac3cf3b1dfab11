/**
 * What the PostgreSQL store tests share: raw SQL as any role, polling, a TCP proxy that can go silent, a fresh
 * database migrated by its owner with an application role on it, and an honest parent (startParent with the fake
 * enclave) on such a database, for tests that stand where a compromised instance on the same database stands.
 */
import fs from 'node:fs';
import net from 'node:net';
import pg from 'pg';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { captureLogger, tempRunDir, type CapturedLogger } from '@nks/shared-test/helpers';
import { hashToken } from '../src/api/auth';
import { startParent, type RunningParent } from '../src/app';
import { parseParentConfig } from '../src/config';
import { PostgresEngine } from '../src/store/postgres';
import { createAppRole, type PostgresServer } from '../../test/support/postgres';
import { FAKE_KMS_KEY_ARN, FakeEnclave } from './fake-enclave';

export async function sql<R extends pg.QueryResultRow = pg.QueryResultRow>(
  url: string,
  text: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text, params)).rows;
  } finally {
    await client.end();
  }
}

/** Polls `check` until it holds; fails past `ms`. */
export async function until(check: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A TCP proxy to the server that can stop passing bytes (a network that goes silent, no connection closed), and
 * pass them again (`thaw`: what was held back is delivered, as TCP would after a partition heals).
 */
export async function freezableProxy(port: number) {
  let frozen = false;
  const held: Array<() => void> = [];
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((inbound) => {
    const outbound = net.connect(port, '127.0.0.1');
    for (const [from, to] of [
      [inbound, outbound],
      [outbound, inbound],
    ] as const) {
      sockets.add(from);
      from.on('data', (chunk) => (frozen ? held.push(() => to.write(chunk)) : to.write(chunk)));
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    port: (proxy.address() as net.AddressInfo).port,
    freeze: () => void (frozen = true),
    thaw: () => {
      frozen = false;
      held.splice(0).forEach((write) => write());
    },
    close: async () => {
      sockets.forEach((s) => s.destroy());
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}

let databases = 0;
/** A fresh database on `server`, migrated by its owner, and an application role's URL on it (docs/STORAGE.md, "Grants"). */
export async function freshStore(server: PostgresServer): Promise<{ owner: string; app: string }> {
  const n = ++databases;
  await sql(server.superuserUrl, `CREATE DATABASE shared_${process.pid}_${n}`);
  const u = new URL(server.superuserUrl);
  u.pathname = `/shared_${process.pid}_${n}`;
  const owner = u.toString();
  await (await PostgresEngine.open({ url: owner, poolSize: 2, migrate: true })).close();
  return { owner, app: await createAppRole(owner, `nks_app_${process.pid}_${n}`) };
}

const ENCLAVE = 'vsock://16:5000';
const TOKEN = 'nks_test_token';

export interface HonestParent {
  parent: RunningParent;
  enclave: FakeEnclave;
  log: CapturedLogger;
  /** A caller request with a token of every scope (`body`: POST with JSON unless `method` says otherwise). */
  api(pathname: string, init?: { method?: string; body?: unknown }): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

/** An honest parent, with the fake enclave, on the database `app` names (the application role, no migrations). */
export async function honestParent(app: string): Promise<HonestParent> {
  const runDir = tempRunDir('nks-honest-');
  const log = captureLogger('debug');
  const enclave = new FakeEnclave();
  await enclave.listen(new SimulatedVsockTransport(runDir), ENCLAVE);
  const config = parseParentConfig({
    api: { listen: { host: '127.0.0.1', port: 0 } },
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
    tokens: [{ name: 'test', sha256: hashToken(TOKEN), scopes: ['keys:create', 'keys:sign', 'keys:read', 'admin'] }],
    database: { kind: 'postgres', url: app, migrate: false, poolSize: 2 },
    transport: { kind: 'simulated', runDir },
    enclave: { address: ENCLAVE, poolSize: 1, connectTimeoutMs: 1000, deadlineMs: 5000 },
    kmsProxy: { listen: 'vsock://3:8000', allowedKeyArns: [FAKE_KMS_KEY_ARN], region: 'us-east-1', endpoint: 'http://127.0.0.1:9' },
    wallets: { relay: { host: '127.0.0.1', port: 0 } },
    logLevel: 'debug',
  });
  const parent = await startParent(config, log.logger);
  await parent.pool.waitUp(5000);
  return {
    parent,
    enclave,
    log,
    async api(pathname, init = {}) {
      const res = await fetch(`${parent.url}${pathname}`, {
        method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
        headers: { authorization: `Bearer ${TOKEN}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    },
    async stop() {
      enclave.releaseAll();
      await parent.stop();
      await enclave.close();
      fs.rmSync(runDir, { recursive: true, force: true });
    },
  };
}
