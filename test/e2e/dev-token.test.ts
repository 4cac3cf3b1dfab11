/**
 * `nks dev token create` (issue 22, item 14): a limited caller token for the running dev stack without editing
 * its parent configuration by hand. Bad input is refused with a usage error (exit 2) before anything is touched;
 * without a running stack it says so (exit 1). On a running stack the token's SHA-256 entry is appended to the
 * parent configuration atomically (a new file renamed over the old one), in a shape the parent itself accepts,
 * and the token is printed once and stored nowhere.
 *
 * The last test needs the parent's SIGHUP token reload and its optional `projects`/`expiresAt` token fields
 * (issue 22, item 19, built beside this): until then the parent ignores the new token (the command does not send
 * SIGHUP to a parent without a handler for it, which would kill it) and refuses those fields.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { tempRunDir } from '@nks/shared-test/helpers';
import { ROOT } from '../support/process';
import { gone, startDevStack, type DevStack } from '../support/dev-stack';

const CLI = path.join(ROOT, 'dist', 'cli.js');
const CLI_WITHIN_MS = 30_000;

function nks(dir: string, args: string[]) {
  return spawnSync(process.execPath, [CLI, 'dev', 'token', ...args], {
    encoding: 'utf8',
    env: { ...process.env, NKS_DEV_DIR: dir },
    timeout: CLI_WITHIN_MS,
  });
}

/** Every regular file under `dir`, with its contents. */
function filesUnder(dir: string): Array<{ file: string; text: string }> {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name))
    .map((file) => ({ file, text: fs.readFileSync(file, 'latin1') }));
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

describe('nks dev token create, refused', () => {
  const dir = tempRunDir('nks-dev-token-none-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it.each([
    [[], /nks dev token needs create/],
    [['list'], /nks dev token needs create/],
    [['create'], /--scopes is required \(keys:create, keys:sign, keys:read, admin\)/],
    [
      ['create', '--scopes', 'keys:sign,keys:wipe'],
      /unknown scope\(s\) keys:wipe: --scopes takes keys:create, keys:sign, keys:read, admin/,
    ],
    [['create', '--scopes', 'keys:sign,'], /--scopes is a comma-separated list without empty items/],
    [['create', '--scopes', 'keys:read,keys:read'], /--scopes names keys:read twice/],
    [['create', '--scopes', 'keys:read', '--name', 'a b'], /--name must be 1-64 characters/],
    [['create', '--scopes', 'keys:read', '--projects', 'default,nope'], /--projects: "nope" is not a project id/],
    [['create', '--scopes', 'admin', '--projects', 'default'], /--projects cannot go with the admin scope/],
    [['create', '--scopes', 'keys:read', '--expires', '2020-01-01T00:00:00Z'], /--expires 2020-01-01T00:00:00Z is not in the future/],
    [['create', '--scopes', 'keys:read', '--expires', 'tomorrow'], /--expires must be an ISO 8601 time with its zone .* or a duration/],
    [['create', '--scopes', 'keys:read', '--expires', '2030-01-01'], /--expires must be an ISO 8601 time with its zone/],
    [['create', '--scopes', 'keys:read', '--bogus'], /Unknown option '--bogus'/],
  ])('nks dev token %j: usage error (exit 2)', (args, message) => {
    const r = nks(dir, args);
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 2, stdout: '' });
    expect(r.stderr).toMatch(message);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('without a running dev stack: a clear error (exit 1), nothing written', () => {
    const none = nks(dir, ['create', '--scopes', 'keys:read']);
    expect({ status: none.status, stdout: none.stdout }).toEqual({ status: 1, stdout: '' });
    expect(none.stderr).toContain(
      `nks: no dev stack is running in ${dir} (no ${dir}/dev.pid): start it with "npm run dev -- --dir ${dir}"`,
    );

    // A dev.pid left by a stack that is gone (its pid: a process that has exited).
    const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    const pid = Number(dead.stdout.trim());
    fs.writeFileSync(path.join(dir, 'dev.pid'), String(pid));
    fs.writeFileSync(path.join(dir, 'parent.json'), '{"tokens": []}\n');
    const stale = nks(dir, ['create', '--scopes', 'keys:read']);
    expect({ status: stale.status, stdout: stale.stdout }).toEqual({ status: 1, stdout: '' });
    expect(stale.stderr).toContain(`no dev stack is running in ${dir} (pid ${pid} of ${dir}/dev.pid is gone)`);
    expect(fs.readFileSync(path.join(dir, 'parent.json'), 'utf8')).toBe('{"tokens": []}\n');
    fs.rmSync(path.join(dir, 'dev.pid'));
    fs.rmSync(path.join(dir, 'parent.json'));
  });
});

describe('nks dev token create, on a running dev stack', () => {
  let dev: DevStack;
  let dir: string;
  let config: string;
  beforeAll(async () => {
    dir = tempRunDir('nks-dev-token-');
    dev = await startDevStack(dir, ['--api-port', '0'], { readyWithinMs: 120_000 });
    config = path.join(dir, 'parent.json');
  }, 180_000);
  afterAll(async () => {
    await dev?.stop().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('appends the token atomically, in a shape the parent accepts, and prints it once (stored nowhere)', () => {
    const before = fs.statSync(config);
    const previous = JSON.parse(fs.readFileSync(config, 'utf8'));
    const r = nks(dir, ['create', '--scopes', 'keys:read,keys:sign', '--name', 'reader']);
    expect(r.status).toBe(0);
    // The token alone on standard output; what was done on standard error.
    expect(r.stdout).toMatch(/^nks_dev_[A-Za-z0-9_-]{32}\n$/);
    const token = r.stdout.trim();
    expect(r.stderr).toContain(`nks: token "reader" (scopes keys:read,keys:sign) added to ${config}; it is shown only this once`);
    expect(`${r.stdout}${r.stderr}`.split(token)).toHaveLength(2);

    const after = JSON.parse(fs.readFileSync(config, 'utf8'));
    expect(after).toEqual({
      ...previous,
      tokens: [...previous.tokens, { name: 'reader', sha256: sha256(token), scopes: ['keys:read', 'keys:sign'] }],
    });
    // Replaced by a rename (a new inode), not rewritten in place; mode 0600; no temporary file left.
    const st = fs.statSync(config);
    expect(st.ino).not.toBe(before.ino);
    expect(st.mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    // Only its hash is kept.
    expect(
      filesUnder(dir)
        .filter((f) => f.text.includes(token))
        .map((f) => f.file),
    ).toEqual([]);
    expect(dev.output()).not.toContain(token);

    // The parent's own configuration check (parseParentConfig) accepts the file.
    const checked = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'parent.js'), 'store', 'status', '--config', config], {
      encoding: 'utf8',
      timeout: CLI_WITHIN_MS,
    });
    expect({ status: checked.status, stderr: checked.stderr }).toEqual({ status: 0, stderr: '' });

    // The same name again: refused, the file untouched.
    const text = fs.readFileSync(config, 'utf8');
    const again = nks(dir, ['create', '--scopes', 'keys:read', '--name', 'reader']);
    expect({ status: again.status, stdout: again.stdout }).toEqual({ status: 2, stdout: '' });
    expect(again.stderr).toContain(`a token named "reader" exists already in ${config}: choose another --name`);
    expect(fs.readFileSync(config, 'utf8')).toBe(text);

    // The stack still runs (a parent without a SIGHUP handler is not sent one).
    const devJson = JSON.parse(fs.readFileSync(path.join(dir, 'dev.json'), 'utf8'));
    expect(devJson.processes.filter((x: { pid: number }) => gone(x.pid))).toEqual([]);
  });

  it('two at once: both tokens end up in the configuration', async () => {
    const run = (name: string) =>
      new Promise<number | null>((resolve) => {
        const c = spawn(process.execPath, [CLI, 'dev', 'token', 'create', '--scopes', 'keys:read', '--name', name], {
          env: { ...process.env, NKS_DEV_DIR: dir },
          stdio: 'ignore',
        });
        c.once('exit', resolve);
      });
    expect(await Promise.all([run('both-a'), run('both-b')])).toEqual([0, 0]);
    const names = JSON.parse(fs.readFileSync(config, 'utf8')).tokens.map((t: { name: string }) => t.name);
    expect(names).toEqual(expect.arrayContaining(['both-a', 'both-b']));
  });

  // Needs the parent's SIGHUP token reload and the optional `projects`/`expiresAt` token fields (item 19).
  it('[needs the parent SIGHUP reload] the new token works at once, within its scopes, without a restart', async () => {
    const r = nks(dir, ['create', '--scopes', 'keys:read', '--name', 'reload-reader']);
    expect(r.status).toBe(0);
    expect(r.stderr).not.toMatch(/do not reload tokens on SIGHUP/);
    const token = r.stdout.trim();
    const call = async (method: string, pathname: string, body?: unknown) =>
      (
        await fetch(`${dev.url}${pathname}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        })
      ).status;
    // The reload is asynchronous to the command: poll until the token is known (401 until then).
    const until = Date.now() + 10_000;
    while ((await call('GET', '/v1/keys?limit=1')) === 401 && Date.now() < until) await new Promise((res) => setTimeout(res, 50));
    expect(await call('GET', '/v1/keys?limit=1')).toBe(200);
    expect(await call('POST', '/v1/keys', { externalId: 'not-allowed' })).toBe(403);

    // Bound to a project and expiring: the parent accepts the fields.
    const limited = nks(dir, ['create', '--scopes', 'keys:sign', '--projects', 'default', '--expires', '1h', '--name', 'limited']);
    expect(limited.status).toBe(0);
    const entry = JSON.parse(fs.readFileSync(config, 'utf8')).tokens.find((t: { name: string }) => t.name === 'limited');
    expect(entry).toEqual({
      name: 'limited',
      sha256: sha256(limited.stdout.trim()),
      scopes: ['keys:sign'],
      projects: ['default'],
      expiresAt: expect.any(String),
    });
    expect(Date.parse(entry.expiresAt) - Date.now()).toBeGreaterThan(50 * 60_000);
    const checked = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'parent.js'), 'store', 'status', '--config', config], {
      encoding: 'utf8',
      timeout: CLI_WITHIN_MS,
    });
    expect({ status: checked.status, stderr: checked.stderr }).toEqual({ status: 0, stderr: '' });
  });
});
