/**
 * `nks dev token create`: a caller token for the running local stack (npm run dev), so a user can try a limited
 * token without editing the parent's configuration by hand. It makes a random token, appends its SHA-256 entry
 * (`{name, sha256, scopes, projects?, expiresAt?}`) to the parent configuration of every instance the stack's
 * dev.json lists (written atomically: a temporary file renamed over it), prints the token once, and sends
 * SIGHUP to each parent, which then reads its `tokens` again. The stack keeps added tokens across restarts
 * (sim/src/dev/provision.ts); the token itself is stored nowhere.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PROJECT_ID_EXPECTED, PROJECT_ID_RE } from '@nks/shared/identifiers';
import { parse, UsageError } from './context';

/** The parent's token scopes (parent/src/config.ts SCOPES; the e2e test checks the file with the parent itself). */
export const TOKEN_SCOPES = ['keys:create', 'keys:sign', 'keys:read', 'admin'] as const;

export const DEV_TOKEN_USAGE =
  'nks dev token create --scopes SCOPE[,SCOPE]... [--name NAME] [--projects ID[,ID]...] [--expires ISO-TIME|DURATION] [--dev-dir DIR] [--json]';

/** As the parent's configuration allows (parent/README.md, tokens). */
const MAX_PROJECTS = 256;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const DURATION_RE = /^(\d{1,6})([smhd])$/;
const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** A failure of the command that is not a usage error (exit 1). */
export class DevStackError extends Error {
  override readonly name = 'DevStackError';
}

export interface TokenOptions {
  name: string;
  scopes: string[];
  projects?: string[];
  expiresAt?: string;
}

/** A comma-separated list of `flag`: no empty items, no repeats. */
function list(flag: string, value: string): string[] {
  const items = value.split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) throw new UsageError(`${flag} is a comma-separated list without empty items, not "${value}"`);
  const repeated = items.find((s, i) => items.indexOf(s) !== i);
  if (repeated !== undefined) throw new UsageError(`${flag} names ${repeated} twice`);
  return items;
}

/** `--expires`: an ISO 8601 time with its zone (2027-01-31T12:00:00Z) or a duration from now (30m, 12h, 7d); in the future. */
export function parseExpires(value: string, now = Date.now()): string {
  const d = DURATION_RE.exec(value);
  let at: number;
  if (d) at = now + Number(d[1]) * UNIT_MS[d[2] as keyof typeof UNIT_MS];
  else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/.test(value)) at = Date.parse(value);
  else at = NaN;
  if (!Number.isFinite(at))
    throw new UsageError(
      `--expires must be an ISO 8601 time with its zone (2027-01-31T12:00:00Z) or a duration (30m, 12h, 7d), not "${value}"`,
    );
  if (at <= now) throw new UsageError(`--expires ${value} is not in the future`);
  return new Date(at).toISOString();
}

/** The options of `token create`, checked: every bad value is a usage error naming it. */
export function tokenOptions(
  values: { scopes?: string; name?: string; projects?: string; expires?: string },
  now = Date.now(),
): TokenOptions {
  if (values.scopes === undefined) throw new UsageError(`--scopes is required (${TOKEN_SCOPES.join(', ')})`);
  const scopes = list('--scopes', values.scopes);
  const unknown = scopes.filter((s) => !(TOKEN_SCOPES as readonly string[]).includes(s));
  if (unknown.length > 0) throw new UsageError(`unknown scope(s) ${unknown.join(', ')}: --scopes takes ${TOKEN_SCOPES.join(', ')}`);
  const name = values.name ?? `token-${randomBytes(4).toString('hex')}`;
  if (!NAME_RE.test(name))
    throw new UsageError(`--name must be 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit, not "${name}"`);
  const options: TokenOptions = { name, scopes };
  if (values.projects !== undefined) {
    const projects = list('--projects', values.projects);
    const bad = projects.find((p) => !PROJECT_ID_RE.test(p));
    if (bad !== undefined) throw new UsageError(`--projects: "${bad}" is not a project id (${PROJECT_ID_EXPECTED})`);
    if (projects.length > MAX_PROJECTS) throw new UsageError(`--projects names ${projects.length} projects; at most ${MAX_PROJECTS}`);
    if (scopes.includes('admin'))
      throw new UsageError('--projects cannot go with the admin scope: an admin token manages the projects themselves');
    options.projects = projects;
  }
  if (values.expires !== undefined) options.expiresAt = parseExpires(values.expires, now);
  return options;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface DevStackState {
  dir: string;
  /** dist/dev.js's pid (dev.pid). */
  pid: number;
  parents: Array<{ index: number; pid: number; config: string }>;
}

/** The running stack of `dir`, from dev.pid and dev.json; a clear error when none is running there. */
export function runningDevStack(dir: string): DevStackState {
  const pidFile = path.join(dir, 'dev.pid');
  const jsonFile = path.join(dir, 'dev.json');
  const start = `start it with "npm run dev -- --dir ${dir}" (or pass --dev-dir, or set NKS_DEV_DIR)`;
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
  } catch {
    throw new DevStackError(`no dev stack is running in ${dir} (no ${pidFile}): ${start}`);
  }
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid))
    throw new DevStackError(`no dev stack is running in ${dir} (pid ${pid} of ${pidFile} is gone): ${start}`);
  let state: { pid?: unknown; instances?: unknown };
  try {
    state = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as typeof state;
  } catch {
    throw new DevStackError(`the dev stack in ${dir} (pid ${pid}) is not ready yet (no ${jsonFile}): wait for its READY line`);
  }
  const instances = Array.isArray(state.instances) ? (state.instances as Array<Record<string, unknown>>) : [];
  const parents = instances.map((x) => ({ index: Number(x.index), pid: Number(x.parentPid), config: String(x.parentConfig) }));
  if (state.pid !== pid || parents.length === 0 || parents.some((x) => !Number.isInteger(x.pid) || !path.isAbsolute(x.config)))
    throw new DevStackError(`${jsonFile} does not describe the stack of pid ${pid}: restart the stack`);
  return { dir, pid, parents };
}

/** Writes `content` to `file` atomically: a temporary file beside it (mode 0600), flushed, renamed over it. */
function writeAtomically(file: string, content: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    fs.writeFileSync(fd, content);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** How long `withLock` waits for another `nks dev token create` on the same file; a lock older than this is stale. */
const LOCK_WAIT_MS = 5_000;

/** Runs `fn` holding `<file>.lock` (made with O_EXCL), so two commands at once do not lose each other's token. */
function withLock<T>(file: string, fn: () => T): T {
  const lock = path.join(path.dirname(file), `.${path.basename(file)}.lock`);
  const until = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      fs.closeSync(fs.openSync(lock, 'wx', 0o600));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = Date.now() - (fs.statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > LOCK_WAIT_MS) fs.rmSync(lock, { force: true });
      else if (Date.now() > until) throw new DevStackError(`${lock} is held by another nks dev token create: try again`);
      else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

/** Appends the token's entry to a parent configuration (under its lock), refusing a name it already has. */
export function appendToken(file: string, entry: TokenOptions & { sha256: string }): void {
  withLock(file, () => append(file, entry));
}

function append(file: string, entry: TokenOptions & { sha256: string }): void {
  let config: { tokens?: unknown };
  try {
    config = JSON.parse(fs.readFileSync(file, 'utf8')) as typeof config;
  } catch (err) {
    throw new DevStackError(`cannot read the parent configuration ${file}: ${(err as Error).message}`);
  }
  if (!Array.isArray(config.tokens)) throw new DevStackError(`${file} has no "tokens" list: restart the stack to write it again`);
  if (config.tokens.some((t: unknown) => (t as { name?: unknown } | null)?.name === entry.name))
    throw new UsageError(`a token named "${entry.name}" exists already in ${file}: choose another --name`);
  const { name, sha256, scopes, projects, expiresAt } = entry;
  config.tokens.push({ name, sha256, scopes, ...(projects ? { projects } : {}), ...(expiresAt ? { expiresAt } : {}) });
  writeAtomically(file, `${JSON.stringify(config, null, 2)}\n`);
}

/** Whether `pid` has a handler for SIGHUP (Linux: /proc/PID/status SigCgt); without one, SIGHUP would kill it. */
export function catchesSighup(pid: number): boolean {
  try {
    const caught = /^SigCgt:\s*([0-9a-f]+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return caught !== undefined && (BigInt(`0x${caught}`) & 1n) === 1n; // SIGHUP is signal 1: bit 0
  } catch {
    return false;
  }
}

/** `nks dev token create …` (args after `token`). */
export function devTokenCommand(args: string[]): number {
  const [sub, ...rest] = args;
  if (sub !== 'create') throw new UsageError(`nks dev token needs create: ${DEV_TOKEN_USAGE}`);
  const { values } = parse(rest, {
    scopes: { type: 'string' },
    name: { type: 'string' },
    projects: { type: 'string' },
    expires: { type: 'string' },
    'dev-dir': { type: 'string' },
    json: { type: 'boolean' },
  });
  const options = tokenOptions(values);
  const dir = path.resolve(values['dev-dir'] || process.env.NKS_DEV_DIR || '.dev');
  const stack = runningDevStack(dir);
  // Every instance's configuration is checked before any is written.
  for (const parent of stack.parents) {
    const tokens = (JSON.parse(fs.readFileSync(parent.config, 'utf8')) as { tokens?: unknown }).tokens;
    if (Array.isArray(tokens) && tokens.some((t: unknown) => (t as { name?: unknown } | null)?.name === options.name))
      throw new UsageError(`a token named "${options.name}" exists already in ${parent.config}: choose another --name`);
  }
  const token = `nks_dev_${randomBytes(24).toString('base64url')}`;
  const sha256 = createHash('sha256').update(token).digest('hex');
  const reloaded: number[] = [];
  const notReloaded: number[] = [];
  for (const parent of stack.parents) {
    appendToken(parent.config, { ...options, sha256 });
    if (alive(parent.pid) && catchesSighup(parent.pid)) {
      process.kill(parent.pid, 'SIGHUP');
      reloaded.push(parent.pid);
    } else notReloaded.push(parent.pid);
  }
  const what = [
    `scopes ${options.scopes.join(',')}`,
    ...(options.projects ? [`projects ${options.projects.join(',')}`] : []),
    ...(options.expiresAt ? [`expires ${options.expiresAt}`] : []),
  ].join('; ');
  if (values.json) {
    process.stdout.write(
      `${JSON.stringify({ ...options, token, sha256, configs: stack.parents.map((x) => x.config), reloaded, notReloaded }, null, 2)}\n`,
    );
  } else {
    // The token alone on standard output (TOKEN=$(nks dev token create …)); what was done on standard error.
    process.stdout.write(`${token}\n`);
    process.stderr.write(
      `nks: token "${options.name}" (${what}) added to ${stack.parents.map((x) => x.config).join(', ')}; it is shown only this once (the configuration keeps its SHA-256)\n`,
    );
  }
  if (notReloaded.length > 0) {
    process.stderr.write(
      `nks: the parent(s) with pid ${notReloaded.join(', ')} do not reload tokens on SIGHUP (not sent): restart the stack to use the token\n`,
    );
  }
  return 0;
}
