/**
 * `npm run dev -- --idp` and `--trust-ca` as a newcomer uses them (docs/PROJECTS.md, "Development"): the dev
 * stack trusts the IdP's CA in the enclave configuration, approves the changed image itself, creates one JWT
 * project and prints how to use it; the TrueWallet example (examples/truewallet/) runs against it as written;
 * a restart keeps the IdP, the project and the users' keys; a start without the options goes back to an image
 * without the CA. Bad `--trust-ca` files are refused before anything starts.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempRunDir } from '@nks/shared-test/helpers';
import { approvedByPolicy } from '../../sim/src/dev/provision';
import { makeTestCa } from '../../sim/src/idp/tls';

const ROOT = path.resolve(__dirname, '../..');
const READY_WITHIN_MS = 120_000;

interface Dev {
  child: ChildProcess;
  output: () => string;
  url: string;
}
const running = new Set<ChildProcess>();

function spawnDev(dir: string, extra: string[]): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, [path.join(ROOT, 'scripts', 'dev.mjs'), '--no-build', '--dir', dir, '--api-port', '0', ...extra], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d));
  child.stderr?.on('data', (d: Buffer) => (out += d));
  return { child, output: () => out };
}

async function startDev(dir: string, extra: string[] = []): Promise<Dev> {
  const { child, output } = spawnDev(dir, extra);
  const until = Date.now() + READY_WITHIN_MS;
  for (;;) {
    const m = /^READY (http:\/\/\S+)$/m.exec(output());
    if (m) return { child, output, url: m[1] as string };
    if (child.exitCode !== null) throw new Error(`dev exited (${child.exitCode}) before READY:\n${output()}`);
    if (Date.now() > until) {
      await interrupt(child);
      throw new Error(`dev did not print READY within ${READY_WITHIN_MS} ms:\n${output()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function interrupt(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  try {
    return await exited;
  } finally {
    clearTimeout(timer);
  }
}

afterEach(async () => {
  for (const child of [...running]) {
    await interrupt(child).catch(() => undefined);
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      /* the group is gone */
    }
  }
  running.clear();
});

/** The example, run as the README says (from the repository root, reading the stack's dev.json). */
function example(dir: string, user: string) {
  return spawnSync(process.execPath, [path.join(ROOT, 'examples', 'truewallet', 'truewallet.mjs'), '--dir', dir, '--user', user], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
  });
}

const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));

describe('npm run dev -- --idp', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('trusts the IdP, approves the new image itself, makes a JWT project the example uses, and keeps it all across restarts', async () => {
    const dir = tempRunDir('nks-dev-idp-');
    dirs.push(dir);
    // A plain first start: no jwt section, the image the key policy approves.
    let dev = await startDev(dir);
    const plain = readJson(path.join(dir, 'dev.json'));
    expect(readJson(path.join(dir, 'enclave.json')).jwt).toBeUndefined();
    expect(plain.idp).toBeUndefined();
    expect(readJson(path.join(dir, 'parent.json')).egress).toEqual({ listen: 'vsock://3:8001', allowLoopback: true, allowedPorts: [443] });
    expect(await interrupt(dev.child)).toBe(0);

    // With --idp: the IdP's CA goes into the image, the changed image is approved, the project is created.
    dev = await startDev(dir, ['--idp']);
    let out = dev.output();
    const info = readJson(path.join(dir, 'dev.json'));
    const caPem = fs.readFileSync(path.join(dir, 'idp', 'ca.pem'), 'utf8');
    expect(readJson(path.join(dir, 'enclave.json')).jwt).toEqual({ trustedCas: [caPem] });
    expect(info.pcr0).not.toBe(plain.pcr0);
    expect(await approvedByPolicy(info.kmsUrl, info.keyArn)).toEqual([info.pcr0]);
    expect(out).toMatch(/the enclave configuration now trusts 1 CA\(s\) for JWKS servers \(jwt\.trustedCas\); its new image is approved/);
    expect(info.idp).toMatchObject({
      issuer: expect.stringMatching(/^https:\/\/localhost:\d+$/) as unknown,
      projectId: expect.stringMatching(/^p_[A-Za-z0-9_-]{22}$/) as unknown,
      projectKey: expect.stringMatching(/^pk_[A-Za-z0-9_-]{22}$/) as unknown,
    });
    expect(out).toContain(`project key ${info.idp.projectKey as string}, issuer ${info.idp.issuer as string}`);
    expect(out).toContain(`TrueWallet JWT signer URL ${info.wallets.url as string}/v1/${info.idp.projectKey as string}`);
    expect(info.idp.signerUrl).toBe(`${info.wallets.url as string}/v1/${info.idp.projectKey as string}`);
    expect(info.wallets.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(out).toContain(`curl -s --cacert ${path.join(dir, 'idp', 'ca.pem')} '${info.idp.issuer as string}/token?sub=alice'`);
    const port = Number(new URL(info.idp.issuer as string).port);
    expect(readJson(path.join(dir, 'parent.json')).egress.allowedPorts).toEqual([443, port]);

    const run = example(dir, 'alice');
    expect({ status: run.status, stderr: run.stderr }).toEqual({ status: 0, stderr: '' });
    expect(run.stdout).toMatch(/every signature recovers to the user's address/);
    expect(run.stdout.match(/^ok {3}/gm)).toHaveLength(6);
    const alice = /^address +(0x[0-9a-fA-F]{40})$/m.exec(run.stdout)?.[1];
    expect(alice).toBeDefined();
    expect(await interrupt(dev.child)).toBe(0);

    // Again with --idp: the same IdP (port, CA), image and project; alice has the same key.
    dev = await startDev(dir, ['--idp']);
    out = dev.output();
    const again = readJson(path.join(dir, 'dev.json'));
    expect([again.idp.issuer, again.idp.projectKey, again.pcr0]).toEqual([info.idp.issuer, info.idp.projectKey, info.pcr0]);
    expect(out).toMatch(/JWT project p_\S+ \(kept\)/);
    expect(out).not.toMatch(/the enclave configuration now/);
    const rerun = example(dir, 'alice');
    expect(rerun.status).toBe(0);
    expect(/^address +(0x[0-9a-fA-F]{40})$/m.exec(rerun.stdout)?.[1]).toBe(alice);
    expect(await interrupt(dev.child)).toBe(0);

    // Without the option: back to an image without the CA, approved again; the example says what to do.
    dev = await startDev(dir);
    expect(dev.output()).toMatch(/the enclave configuration now trusts no CA of its own for JWKS servers; its new image is approved/);
    expect(readJson(path.join(dir, 'enclave.json')).jwt).toBeUndefined();
    expect(readJson(path.join(dir, 'dev.json')).pcr0).toBe(plain.pcr0);
    const without = example(dir, 'alice');
    expect(without.status).toBe(1);
    expect(without.stderr).toMatch(/restart it with `npm run dev -- --idp`/);
    expect(await interrupt(dev.child)).toBe(0);
  }, 600_000);

  it('puts --trust-ca files into jwt.trustedCas, one certificate per entry, and allows --egress-port', async () => {
    const dir = tempRunDir('nks-dev-ca-');
    dirs.push(dir);
    const [a, b] = [await makeTestCa('dev test CA a'), await makeTestCa('dev test CA b')];
    const bundle = path.join(dir, '..', `${path.basename(dir)}-bundle.pem`);
    fs.writeFileSync(bundle, `${a.caPem}\n${b.caPem}`);
    try {
      const dev = await startDev(dir, ['--trust-ca', bundle, '--egress-port', '8443']);
      const trusted = readJson(path.join(dir, 'enclave.json')).jwt.trustedCas as string[];
      expect(trusted).toHaveLength(2);
      expect(trusted.map((pem) => pem.replace(/\s/g, ''))).toEqual([a.caPem, b.caPem].map((pem) => pem.replace(/\s/g, '')));
      expect(readJson(path.join(dir, 'parent.json')).egress.allowedPorts).toEqual([443, 8443]);
      expect(await interrupt(dev.child)).toBe(0);
    } finally {
      fs.rmSync(bundle, { force: true });
    }
  }, 300_000);

  it('refuses a --trust-ca file that is missing, holds no certificate or a broken one, and bad ports, before starting anything', async () => {
    const dir = tempRunDir('nks-dev-badca-');
    dirs.push(dir);
    const notPem = path.join(ROOT, 'package.json');
    const broken = `${dir}-broken.pem`;
    fs.writeFileSync(broken, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    try {
      for (const [args, message] of [
        [['--trust-ca', `${dir}-missing.pem`], /--trust-ca \S+-missing\.pem: ENOENT/],
        [['--trust-ca', notPem], /no PEM certificate/],
        [['--trust-ca', broken], /certificate 1 does not parse/],
        [['--egress-port', '0'], /--egress-port must be a port number/],
        [['--idp-port', '8444'], /--idp-port goes with --idp/],
      ] as const) {
        const { child, output } = spawnDev(dir, [...args]);
        const code = await new Promise<number | null>((r) => child.once('exit', r));
        expect({ args, code, message: message.test(output()) }).toEqual({ args, code: 2, message: true });
      }
      expect(fs.existsSync(path.join(dir, 'enclave.json'))).toBe(false); // nothing was provisioned
    } finally {
      fs.rmSync(broken, { force: true });
    }
  });
});
