/**
 * The store's configuration and host commands (docs/STORAGE.md, "Configuration" and "Migrations"): the database
 * section's two shapes and the old one (read as SQLite, with a deprecation), NKS_DATABASE_URL; `parent store
 * status|migrate` and `nks store …` on SQLite and on a real PostgreSQL, through the built programs; and a database
 * URL's password in no output, not even when the database cannot be reached.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { hashToken } from '../src/api/auth';
import { tempRunDir } from '@nks/shared-test/helpers';
import { parseParentConfig } from '../src/config';
import { SCHEMA_VERSION } from '../src/store/migrations';
import { startPostgres, type PostgresServer } from '../../test/support/postgres';

const root = path.resolve(__dirname, '../..');
const base = {
  api: { listen: { port: 7070 } },
  tokens: [{ name: 't', sha256: hashToken('x'), scopes: ['admin'] }],
  kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
};

describe('the database configuration', () => {
  it('reads {path} as SQLite, with a deprecation; {kind} shapes as they are; NKS_DATABASE_URL as PostgreSQL', () => {
    const old = parseParentConfig({ ...base, database: { path: '/d/k.db' } });
    expect(old.database).toEqual({ kind: 'sqlite', path: '/d/k.db', timeoutMs: 5000 });
    expect(old.deprecations).toEqual([expect.stringMatching(/config\.database \{path\}.*"kind": "sqlite"/)]);
    const sqlite = parseParentConfig({ ...base, database: { kind: 'sqlite', path: '/d/k.db', timeoutMs: 2000 } });
    expect([sqlite.database, sqlite.deprecations]).toEqual([{ kind: 'sqlite', path: '/d/k.db', timeoutMs: 2000 }, []]);
    const pg = parseParentConfig({ ...base, database: { kind: 'postgres', url: 'postgres://app@db.internal/nks' } });
    expect(pg.database).toEqual({
      kind: 'postgres',
      url: 'postgres://app@db.internal/nks',
      poolSize: 10,
      ssl: false,
      statementTimeoutMs: 5000,
      connectTimeoutMs: 5000,
      migrate: true,
    });
    const env = parseParentConfig({ ...base, database: { path: '/d/k.db' } }, { NKS_DATABASE_URL: 'postgresql://app:pw@db/nks' });
    expect([env.database.kind, env.deprecations]).toEqual(['postgres', []]);
  });

  it('names what is wrong with a database section', () => {
    const bad = (database: unknown) => () => parseParentConfig({ ...base, database });
    expect(bad({ kind: 'postgres', url: 'mysql://db/nks' })).toThrow(/config\.database\.url.*postgres:\/\//);
    expect(bad({ kind: 'postgres', url: 'postgres://db/nks', poolSize: 0 })).toThrow(/config\.database\.poolSize/);
    expect(bad({ kind: 'sqlite' })).toThrow(/config\.database\.path/);
    expect(bad({ kind: 'oracle', path: 'x' })).toThrow(/config\.database/);
    expect(bad({ kind: 'sqlite', path: '/d/k.db', url: 'postgres://db/nks' })).toThrow(/config\.database.*url/);
  });
});

/** Runs a built program (dist/) and answers its exit code and output. */
function run(program: 'parent.js' | 'cli.js', args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [path.join(root, 'dist', program), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 60_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr, json: () => JSON.parse(r.stdout.trim().split('\n').pop() as string) };
}

describe('parent store and nks store', () => {
  let server: PostgresServer | undefined;
  afterAll(async () => {
    await server?.stop();
  }, 30_000);

  it('on SQLite: status says what is pending (exit 1), migrate applies it, then status is clean', () => {
    const dir = tempRunDir('nks-storecmd-');
    const config = path.join(dir, 'parent.json');
    fs.writeFileSync(config, JSON.stringify({ ...base, database: { kind: 'sqlite', path: path.join(dir, 'keys.db') } }));
    const before = run('parent.js', ['store', 'status', '--config', config]);
    expect([before.code, before.json()]).toEqual([
      1,
      { engine: 'sqlite', location: path.join(dir, 'keys.db'), schemaVersion: 0, latestVersion: SCHEMA_VERSION, pending: SCHEMA_VERSION },
    ]);
    expect(fs.existsSync(path.join(dir, 'keys.db'))).toBe(false); // status creates nothing
    const migrated = run('cli.js', ['store', 'migrate', '--config', config]);
    expect([migrated.code, migrated.json().schemaVersion, migrated.json().pending]).toEqual([0, SCHEMA_VERSION, 0]);
    expect(run('cli.js', ['store', 'status', '--config', config]).code).toBe(0);
    const usage = run('cli.js', ['store', 'drop']);
    expect([usage.code, usage.err]).toEqual([2, expect.stringMatching(/nks store needs status or migrate/)]);
    // A database URL (and its password) is never an argument: every local user can read a command line.
    expect(run('parent.js', ['store', 'status', '--config', config, '--database-url', 'postgres://a:b@h/d']).code).toBe(2);
  });

  it('on PostgreSQL: NKS_DATABASE_URL, the password in no output; an unreachable server fails without it', async () => {
    server = await startPostgres();
    const password = new URL(server.url).password;
    const dir = tempRunDir('nks-storecmd-');
    const config = path.join(dir, 'parent.json');
    fs.writeFileSync(config, JSON.stringify({ ...base, database: { path: path.join(dir, 'unused.db') } }));
    const status = run('parent.js', ['store', 'status', '--config', config], { NKS_DATABASE_URL: server.url });
    expect([status.code, status.json().engine, status.json().schemaVersion, status.json().pending]).toEqual([
      1,
      'postgres',
      0,
      SCHEMA_VERSION,
    ]);
    const migrated = run('cli.js', ['store', 'migrate', '--config', config], { NKS_DATABASE_URL: server.url });
    expect([migrated.code, migrated.json().schemaVersion]).toEqual([0, SCHEMA_VERSION]);
    const again = run('parent.js', ['store', 'status', '--config', config], { NKS_DATABASE_URL: server.url });
    expect([again.code, again.json().pending]).toEqual([0, 0]);
    for (const r of [status, migrated, again]) expect(r.out + r.err).not.toContain(password);
    expect(again.json().location).toContain('***');

    // Nothing listens there: the failure says what happened, never the password.
    const secret = 'sEcReT-pw-4711';
    const down = run('parent.js', ['store', 'status', '--config', config], {
      NKS_DATABASE_URL: `postgres://nks:${secret}@127.0.0.1:1/nks`,
    });
    expect(down.code).toBe(1);
    expect(down.err).toMatch(/database/i);
    expect(down.out + down.err).not.toContain(secret);
    const daemon = run('parent.js', ['--config', config], { NKS_DATABASE_URL: `postgres://nks:${secret}@127.0.0.1:1/nks` });
    expect(daemon.code).not.toBe(0);
    expect(daemon.out + daemon.err).not.toContain(secret);
  }, 120_000);
});
