/**
 * `npm run dev` as a newcomer uses it: it reaches READY, the README walk-through runs as written against
 * it, Ctrl-C stops every process, a second start reuses the state, and a changed enclave image is refused
 * by KMS until its measurements are approved with --update-policy.
 *
 * Each test makes the state it needs in its own directory, and every stack listens on `--api-port 0`: the
 * port is the one printed on the READY line, never one picked beforehand and bound later.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempRunDir } from '../../shared/test/helpers';

const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
/** Generous bounds, only in the safe direction: a loaded machine starts the four programs slowly. */
const READY_WITHIN_MS = 90_000;
const STOP_WITHIN_MS = 30_000;
const CLI_WITHIN_MS = 30_000;

interface Dev {
  child: ChildProcess;
  output: () => string;
  url: string;
}

/** Every dev stack a test started; whatever happens in the test, none outlives it. */
const running = new Set<ChildProcess>();

async function startDev(dir: string, extra: string[] = []): Promise<Dev> {
  const child = spawn(process.execPath, [path.join(ROOT, 'scripts', 'dev.mjs'), '--no-build', '--dir', dir, '--api-port', '0', ...extra], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so a last-resort cleanup can stop every process of the stack
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let out = '';
  let onOutput = () => undefined as void;
  const more = (d: Buffer) => {
    out += d;
    onOutput();
  };
  child.stdout?.on('data', more);
  child.stderr?.on('data', more);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dev did not print READY within ${READY_WITHIN_MS} ms:\n${out}`)), READY_WITHIN_MS);
    const check = () => {
      const m = /^READY (http:\/\/\S+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1] as string);
      }
    };
    onOutput = check;
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`dev exited (${code}) before READY:\n${out}`));
    });
    check();
  }).catch(async (err: unknown) => {
    await interrupt({ child, output: () => out, url: '' }).catch(() => undefined);
    throw err;
  });
  onOutput = () => undefined;
  return { child, output: () => out, url };
}

/** Ctrl-C, and the exit code; a stack that does not stop in time is killed and the test fails. */
async function interrupt(dev: Dev): Promise<number | null> {
  const { child } = dev;
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGINT');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), STOP_WITHIN_MS)));
  const first = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (first === 'late') {
    child.kill('SIGKILL');
    await exited;
    throw new Error(`dev did not stop within ${STOP_WITHIN_MS} ms of Ctrl-C:\n${dev.output()}`);
  }
  return first;
}

/** Last resort, after a test that failed before its own Ctrl-C: stop the stack, then kill its process group. */
afterEach(async () => {
  for (const child of [...running]) {
    await interrupt({ child, output: () => '', url: '' }).catch(() => undefined);
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      /* the group is gone */
    }
  }
  running.clear();
});

function nks(dir: string, args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NKS_DEV_DIR: dir },
    timeout: CLI_WITHIN_MS,
  });
}

/** Processes still running with this state directory on their command line. */
function survivors(dir: string): string[] {
  const ps = spawnSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).stdout;
  return ps.split('\n').filter((l) => l.includes(dir) && !l.includes('ps -eo'));
}

/** A state directory provisioned by a first start, holding the key `alice`, with nothing running. */
async function provisionedWithKey(prefix: string): Promise<{ dir: string; keyId: string; address: string }> {
  const dir = tempRunDir(prefix);
  const dev = await startDev(dir);
  try {
    expect(dev.output()).toMatch(/first start: provisioning/);
    const created = nks(dir, ['keys', 'create', '--external-id', 'alice', '--json']);
    expect({ status: created.status, stderr: created.stderr }).toEqual({ status: 0, stderr: '' });
    const key = JSON.parse(created.stdout) as { keyId: string; address: string };
    return { dir, keyId: key.keyId, address: key.address };
  } finally {
    expect(await interrupt(dev)).toBe(0);
  }
}

describe('npm run dev', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reaches READY, runs the README walk-through as written, and stops everything on Ctrl-C', async () => {
    const dir = tempRunDir('nks-dev-');
    dirs.push(dir);
    const dev = await startDev(dir);
    try {
      expect(dev.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(Number(new URL(dev.url).port)).toBeGreaterThan(0);
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'dev.json'), 'utf8')).url).toBe(dev.url);
      expect(dev.output()).toMatch(/first start: provisioning/);
      expect(fs.statSync(path.join(dir, 'token')).mode & 0o777).toBe(0o600);
      expect(
        JSON.parse(fs.readFileSync(path.join(dir, 'key-policy.json'), 'utf8')).Statement.map((st: { Sid: string }) => st.Sid),
      ).toContain('EnclaveDecryptOnlyWhenAttested');

      // The walk-through block from the README, run by bash in a directory laid out like the repository.
      const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
      const block = /<!-- walkthrough -->\s*```sh\n([\s\S]*?)```/.exec(readme)?.[1];
      expect(block).toBeDefined();
      const work = path.join(dir, 'walkthrough');
      fs.mkdirSync(work);
      fs.symlinkSync(path.join(ROOT, 'dist'), path.join(work, 'dist'));
      fs.symlinkSync(dir, path.join(work, '.dev'));
      // No startup files, and no socket on stdin: bash reads /etc/bash.bashrc when its stdin is a socket (as
      // Node's pipes are) and SHLVL is unset, and that file fails under -u.
      const run = spawnSync('bash', ['--norc', '--noprofile', '-euo', 'pipefail', '-c', block as string], {
        cwd: work,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, NKS_DEV_DIR: '' },
        timeout: 10 * CLI_WITHIN_MS,
      });
      expect({ status: run.status, stderr: run.stderr }).toEqual({ status: 0, stderr: '' });
      expect(run.stdout).toMatch(/Created key/);
      expect(run.stdout).toMatch(/signature +0x[0-9a-f]{130}/);
      expect(run.stdout).toMatch(/serializedTransaction +0x02/);
      expect(run.stdout).toMatch(/VALID attestation document/);
    } finally {
      expect(await interrupt(dev)).toBe(0);
    }
    expect(dev.output()).toMatch(/dev: stopped/);
    expect(survivors(dir)).toEqual([]);
  }, 240_000);

  it('reuses its state on the next start: the same key still signs', async () => {
    const { dir, keyId, address } = await provisionedWithKey('nks-dev-reuse-');
    dirs.push(dir);
    const dev = await startDev(dir);
    try {
      expect(dev.output()).not.toMatch(/provisioning/);
      const list = JSON.parse(nks(dir, ['keys', 'list', '--external-id', 'alice', '--json']).stdout) as {
        keys: Array<{ keyId: string; address: string }>;
      };
      expect(list.keys).toEqual([expect.objectContaining({ keyId, address })]);
      const signed = nks(dir, ['sign', keyId, '--message', 'again', '--json']);
      expect(signed.status).toBe(0);
      expect(JSON.parse(signed.stdout).address).toBe(address);
    } finally {
      expect(await interrupt(dev)).toBe(0);
    }
  }, 240_000);

  it('refuses to unseal with a changed enclave image until --update-policy approves it', async () => {
    const { dir, keyId } = await provisionedWithKey('nks-dev-image-');
    dirs.push(dir);
    const changed = path.join(dir, 'enclave-changed.js');
    fs.writeFileSync(changed, `${fs.readFileSync(path.join(ROOT, 'dist', 'enclave.js'), 'utf8')}\n// a changed image\n`);
    let dev = await startDev(dir, ['--enclave-bundle', changed]);
    try {
      expect(dev.output()).toMatch(/the enclave image changed since provisioning/);
      expect(dev.output()).toMatch(/npm run dev -- --update-policy/);
      const refused = nks(dir, ['sign', keyId, '--message', 'nope']);
      expect(refused.status).toBe(1);
      expect(refused.stderr).toMatch(
        /KMS_ACCESS_DENIED \(HTTP 502\): KMS AccessDeniedException: .*kms:Decrypt.*is this enclave image approved in the key policy\?/,
      );
    } finally {
      expect(await interrupt(dev)).toBe(0);
    }

    dev = await startDev(dir, ['--enclave-bundle', changed, '--update-policy']);
    try {
      expect(dev.output()).toMatch(/key policy now approves PCR0/);
      expect(dev.output()).not.toMatch(/image changed since provisioning/);
      expect(nks(dir, ['sign', keyId, '--message', 'approved']).status).toBe(0);
    } finally {
      expect(await interrupt(dev)).toBe(0);
    }
  }, 240_000);
});
