/**
 * `npm run dev` as a newcomer uses it: it reaches READY, the README walk-through runs as written against
 * it, Ctrl-C stops every process, a second start reuses the state, and a changed enclave image is refused
 * by KMS until its measurements are approved with --update-policy.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { tempRunDir } from '../../shared/test/helpers';

const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'dist', 'cli.js');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

interface Dev {
  child: ChildProcess;
  output: () => string;
  url: string;
}

async function startDev(dir: string, port: number, extra: string[] = []): Promise<Dev> {
  const child = spawn(process.execPath, [path.join(ROOT, 'scripts', 'dev.mjs'), '--no-build', '--dir', dir, '--api-port', String(port), ...extra], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  const until = Date.now() + 60_000;
  for (;;) {
    const m = /^READY (http:\/\/\S+)$/m.exec(out);
    if (m) return { child, output: () => out, url: m[1] as string };
    if (child.exitCode !== null) throw new Error(`dev exited (${child.exitCode}) before READY:\n${out}`);
    if (Date.now() > until) throw new Error(`dev did not print READY:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function interrupt(dev: Dev): Promise<number | null> {
  const exited = new Promise<number | null>((r) => dev.child.once('exit', (code) => r(code)));
  dev.child.kill('SIGINT');
  return exited;
}

function nks(dir: string, args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NKS_DEV_DIR: dir } });
}

/** Processes still running with this state directory on their command line. */
function survivors(dir: string): string[] {
  const ps = spawnSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).stdout;
  return ps.split('\n').filter((l) => l.includes(dir) && !l.includes('ps -eo'));
}

describe('npm run dev', () => {
  let dir: string;
  let port: number;

  beforeAll(async () => {
    dir = tempRunDir('nks-dev-');
    port = await freePort();
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reaches READY, runs the README walk-through as written, and stops everything on Ctrl-C', async () => {
    const dev = await startDev(dir, port);
    try {
      expect(dev.url).toBe(`http://127.0.0.1:${port}`);
      expect(dev.output()).toMatch(/first start: provisioning/);
      expect(fs.statSync(path.join(dir, 'token')).mode & 0o777).toBe(0o600);
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'key-policy.json'), 'utf8')).Statement.map((st: { Sid: string }) => st.Sid)).toContain('EnclaveDecryptOnlyWhenAttested');

      // The walk-through block from the README, run by bash in a directory laid out like the repository.
      const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
      const block = /<!-- walkthrough -->\s*```sh\n([\s\S]*?)```/.exec(readme)?.[1];
      expect(block).toBeDefined();
      const work = path.join(dir, 'walkthrough');
      fs.mkdirSync(work);
      fs.symlinkSync(path.join(ROOT, 'dist'), path.join(work, 'dist'));
      fs.symlinkSync(dir, path.join(work, '.dev'));
      const run = spawnSync('bash', ['-euo', 'pipefail', '-c', block as string], { cwd: work, encoding: 'utf8', env: { ...process.env, NKS_DEV_DIR: '' } });
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
  });

  it('reuses its state on the next start: the same key still signs', async () => {
    const dev = await startDev(dir, port);
    try {
      expect(dev.output()).not.toMatch(/provisioning/);
      const list = JSON.parse(nks(dir, ['keys', 'list', '--external-id', 'alice', '--json']).stdout) as { keys: Array<{ keyId: string; address: string }> };
      expect(list.keys).toHaveLength(1);
      const signed = nks(dir, ['sign', (list.keys[0] as { keyId: string }).keyId, '--message', 'again', '--json']);
      expect(signed.status).toBe(0);
      expect(JSON.parse(signed.stdout).address).toBe((list.keys[0] as { address: string }).address);
    } finally {
      expect(await interrupt(dev)).toBe(0);
    }
  });

  it('refuses to unseal with a changed enclave image until --update-policy approves it', async () => {
    const changed = path.join(dir, 'enclave-changed.js');
    fs.writeFileSync(changed, `${fs.readFileSync(path.join(ROOT, 'dist', 'enclave.js'), 'utf8')}\n// a changed image\n`);
    let dev = await startDev(dir, port, ['--enclave-bundle', changed]);
    const keyId = (JSON.parse(nks(dir, ['keys', 'list', '--external-id', 'alice', '--json']).stdout) as { keys: Array<{ keyId: string }> }).keys[0]?.keyId as string;
    try {
      expect(dev.output()).toMatch(/the enclave image changed since provisioning/);
      expect(dev.output()).toMatch(/npm run dev -- --update-policy/);
      const refused = nks(dir, ['sign', keyId, '--message', 'nope']);
      expect(refused.status).toBe(1);
      expect(refused.stderr).toMatch(/KMS_ACCESS_DENIED \(HTTP 502\): KMS AccessDeniedException: .*kms:Decrypt.*is this enclave image approved in the key policy\?/);
    } finally {
      expect(await interrupt(dev)).toBe(0);
    }

    dev = await startDev(dir, port, ['--enclave-bundle', changed, '--update-policy']);
    try {
      expect(dev.output()).toMatch(/key policy now approves PCR0/);
      expect(dev.output()).not.toMatch(/image changed since provisioning/);
      expect(nks(dir, ['sign', keyId, '--message', 'approved']).status).toBe(0);
    } finally {
      expect(await interrupt(dev)).toBe(0);
    }
  });
});
