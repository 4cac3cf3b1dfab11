/**
 * Production operations that can be checked here (no Docker engine, nitro-cli or Nitro hardware):
 * shellcheck on every script, the Dockerfile's pinning and final-stage contents, the reproducible enclave
 * bundle, the enclave starting from a bare directory, and the scripts' behaviour against a stand-in nitro-cli.
 */
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '@nks/shared/log';
import { RpcClient } from '@nks/shared/rpc';
import { DEFAULT_ENCLAVE_ADDRESS, SimulatedVsockTransport } from '@nks/shared/transport';
import type { EnclaveApi } from '@nks/shared/enclave-api';
import { IDENTITY_PUBLIC_KEY_RE } from '@nks/shared/identifiers';
import { SECURITY_EPOCH } from '@nks/shared/release';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { startProgram } from './support/process';
import { linkTools, OPS_SCRIPT_TOOLS } from './support/tools';

const ROOT = path.resolve(__dirname, '..');
const SCRIPTS = fs.readdirSync(path.join(ROOT, 'scripts')).filter((f) => f.endsWith('.sh'));

describe('operations scripts', () => {
  it('exist', () => {
    expect(SCRIPTS).toEqual(
      expect.arrayContaining(['build-eif.sh', 'run-enclave.sh', 'stop-enclave.sh', 'approve-image.sh', 'genesis.sh', 'lib.sh']),
    );
  });

  it.each(SCRIPTS)('%s passes shellcheck', (script) => {
    const res = spawnSync('shellcheck', ['-x', path.join('scripts', script)], { cwd: ROOT, encoding: 'utf8' });
    if (res.error) throw new Error(`shellcheck is needed for this test (apt-get install shellcheck): ${res.error.message}`);
    expect({ status: res.status, output: res.stdout + res.stderr }).toEqual({ status: 0, output: '' });
  });

  it.each(SCRIPTS.filter((s) => s !== 'lib.sh'))('%s is strict (set -euo pipefail) and executable', (script) => {
    const file = path.join(ROOT, 'scripts', script);
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^#!\/usr\/bin\/env bash\n[\s\S]*?^set -euo pipefail$/m);
    expect(fs.statSync(file).mode & 0o111).not.toBe(0);
  });
});

/** Checks the rules for Dockerfile.enclave; returns the violations. */
function dockerfileViolations(text: string): string[] {
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim().replace(/\s+/g, ' '))
    .filter((l) => l && !l.startsWith('#'));
  const out: string[] = [];
  const froms = lines.map((l, i) => [l, i] as const).filter(([l]) => /^FROM\s/i.test(l));
  if (froms.length < 2) out.push('not multi-stage');
  // Base images come only through the two build arguments, which have no default: build-eif.sh passes the
  // digests recorded in deploy/base-images.env (checked below).
  for (const [l] of froms)
    if (!/^FROM\s+\$\{(BUILDER_IMAGE|RUNTIME_IMAGE)\}(\s+AS\s+\S+)?$/i.test(l))
      out.push(`base image not from BUILDER_IMAGE/RUNTIME_IMAGE: ${l}`);
  for (const arg of ['BUILDER_IMAGE', 'RUNTIME_IMAGE'])
    if (!lines.includes(`ARG ${arg}`)) out.push(`ARG ${arg} missing or given a default`);
  for (const l of lines.filter((x) => /^RUN\b.*apt-get install/.test(x))) {
    const pkgs =
      /apt-get install(.*?)(&&|$)/
        .exec(l)?.[1]
        ?.split(/\s+/)
        .filter((w) => w && !w.startsWith('-')) ?? [];
    for (const p of pkgs) if (!/^[a-z0-9.+-]+=[A-Za-z0-9.+:~-]+$/.test(p)) out.push(`build package not pinned to a version: ${p}`);
  }
  const last = froms[froms.length - 1]?.[1] ?? 0;
  const allowed = new Set([
    '/build/app/enclave.js',
    '/build/app/native/nsm.node',
    '/build/app/native/vsock.node',
    '/build/app/native/secp256k1.node',
    '/build/app/enclave.json',
  ]);
  for (const l of lines.slice(last + 1)) {
    const op = (l.split(/\s+/)[0] ?? '').toUpperCase();
    if (op === 'RUN' || op === 'ADD') out.push(`final stage runs or adds: ${l}`);
    if (op === 'COPY') {
      const parts = l.split(/\s+/).slice(1);
      const flags = parts.filter((p) => p.startsWith('--'));
      const [src, ...rest] = parts.filter((p) => !p.startsWith('--'));
      if (!flags.includes('--from=builder') || rest.length !== 1 || !src || !allowed.has(src))
        out.push(`final stage copies something not allowed: ${l}`);
    }
  }
  return out;
}

describe('Dockerfile.enclave', () => {
  const text = fs.readFileSync(path.join(ROOT, 'Dockerfile.enclave'), 'utf8');

  it('pins every base image by digest and copies only the bundle, addons and configuration into the final stage', () => {
    expect(dockerfileViolations(text)).toEqual([]);
    expect(text).toMatch(/SOURCE_DATE_EPOCH/);
  });

  it('the check catches an unpinned base image and an extra file in the final stage', () => {
    const bad = text
      .replace('FROM ${RUNTIME_IMAGE}', 'FROM gcr.io/distroless/nodejs24-debian12:latest')
      .replace('WORKDIR /app', 'COPY --from=builder /src/node_modules /app/node_modules\nWORKDIR /app');
    const v = dockerfileViolations(bad);
    expect(v).toEqual([expect.stringMatching(/^base image not from BUILDER_IMAGE/), expect.stringMatching(/node_modules/)]);
    expect(dockerfileViolations(text.replace('ARG RUNTIME_IMAGE', 'ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12:latest'))).toEqual(
      ['ARG RUNTIME_IMAGE missing or given a default'],
    );
    expect(dockerfileViolations(text.replace('make=4.3-4.1', 'make'))).toEqual(['build package not pinned to a version: make']);
    expect(dockerfileViolations(`${text}\nRUN echo hi`)).toEqual([expect.stringMatching(/final stage runs/)]);
  });

  it('takes its base images by digest from deploy/base-images.env, or says plainly that none is recorded yet', () => {
    const env = Object.fromEntries(
      fs
        .readFileSync(path.join(ROOT, 'deploy', 'base-images.env'), 'utf8')
        .split('\n')
        .filter((l) => /^[A-Z_]+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(Object.keys(env).sort()).toEqual(['BUILDER_IMAGE', 'BUILDER_TAG', 'RESOLVED_AT', 'RUNTIME_IMAGE', 'RUNTIME_TAG']);
    if (env.RESOLVED_AT === 'never') {
      expect([env.BUILDER_IMAGE, env.RUNTIME_IMAGE]).toEqual(['', '']);
    } else {
      expect(env.RESOLVED_AT).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      for (const k of ['BUILDER', 'RUNTIME'])
        expect(env[`${k}_IMAGE`]).toBe(`${(env[`${k}_TAG`] ?? '').split('@')[0]}@${env[`${k}_IMAGE`]?.split('@')[1]}`);
      for (const k of ['BUILDER_IMAGE', 'RUNTIME_IMAGE']) expect(env[k]).toMatch(/^[a-z0-9./_:-]+@sha256:[0-9a-f]{64}$/);
    }
  });

  it('copies into the builder every source file the enclave bundle is built from', () => {
    for (const p of [
      'package.json',
      'package-lock.json',
      'scripts/build.mjs',
      'shared/src',
      'enclave/src',
      'enclave/native/binding.gyp',
      'enclave/native/nsm.c',
      'enclave/native/vsock.c',
      'enclave/native/secp256k1.c',
      'enclave/native/secp256k1_core.c',
      'enclave/native/secp256k1_core.h',
      'enclave/native/libsecp256k1.sha256',
      'scripts/libsecp256k1-source.mjs',
    ]) {
      expect(text).toMatch(new RegExp(`^COPY [^\\n]*${p.replace(/[.]/g, '\\.')}`, 'm'));
    }
  });
});

describe('reproducible enclave bundle and bare-directory start', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-img-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const build = (out: string, image?: string) =>
    spawnSync(
      process.execPath,
      [path.join(ROOT, 'scripts', 'build.mjs'), '--only', 'enclave', '--outdir', out, ...(image ? ['--image-dir', image] : [])],
      { cwd: ROOT, encoding: 'utf8' },
    );

  it('builds byte-identical dist/enclave.js twice from the same tree, with no absolute paths', () => {
    const a = build(path.join(dir, 'a'), path.join(dir, 'app'));
    const b = build(path.join(dir, 'b'));
    expect([a.status, b.status]).toEqual([0, 0]);
    const first = fs.readFileSync(path.join(dir, 'a', 'enclave.js'));
    expect(first.equals(fs.readFileSync(path.join(dir, 'b', 'enclave.js')))).toBe(true);
    expect(first.includes(Buffer.from(ROOT))).toBe(false);
    expect(first.equals(fs.readFileSync(path.join(ROOT, 'dist', 'enclave.js')))).toBe(true); // what the tests ran
  });

  it('runs the enclave from a directory holding only its bundle, native addons and configuration', async () => {
    const app = path.join(dir, 'app');
    expect(fs.readdirSync(app).sort()).toEqual(['enclave.js', 'native']);
    expect(fs.readdirSync(path.join(app, 'native')).sort()).toEqual(['nsm.node', 'secp256k1.node', 'vsock.node']);
    // Nothing to resolve packages from above it either.
    for (let d = app; d !== path.dirname(d); d = path.dirname(d)) expect(fs.existsSync(path.join(d, 'node_modules'))).toBe(false);

    const runDir = tempRunDir('nks-bare-');
    const nsm = startProgram('nsm-sim', ['--socket', path.join(runDir, 'nsm.sock'), '--state-dir', path.join(runDir, 'nsm')]);
    try {
      await nsm.waitForLog((e) => e.msg === 'NSM simulator ready');
      fs.writeFileSync(
        path.join(app, 'enclave.json'),
        JSON.stringify({
          kmsKeyArn: 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab',
          kmsPublicKey: generateKeyPairSync('rsa', { modulusLength: 2048 })
            .publicKey.export({ type: 'spki', format: 'der' })
            .toString('base64'),
          listen: DEFAULT_ENCLAVE_ADDRESS,
          transport: { kind: 'simulated', runDir },
          nsm: { kind: 'simulated', socket: path.join(runDir, 'nsm.sock') },
        }),
      );
      const check = spawnSync(process.execPath, [path.join(app, 'enclave.js'), '--check-config'], {
        cwd: '/',
        encoding: 'utf8',
        env: { PATH: process.env.PATH },
      });
      expect([check.status, check.stdout]).toEqual([0, expect.stringContaining('is valid')]);

      // Started with a clean environment from /, reading enclave.json beside the bundle.
      const enclave = spawn(process.execPath, [path.join(app, 'enclave.js')], {
        cwd: '/',
        env: { PATH: process.env.PATH },
        stdio: 'ignore',
      });
      const client = new RpcClient<EnclaveApi>({
        name: 'bare',
        transport: new SimulatedVsockTransport(runDir),
        address: DEFAULT_ENCLAVE_ADDRESS,
        logger: silentLogger(),
      });
      try {
        await client.waitConnected(15_000);
        // No identity in its configuration: the genesis image, which makes one and serves nothing else.
        const health = await client.call('enclave.health', {});
        expect(health).toMatchObject({ status: 'ok', nsm: 'simulated' });
        const genesis = await client.call('identity.genesis', { nonce: '0x0102' });
        expect(genesis.publicKey).toMatch(IDENTITY_PUBLIC_KEY_RE);
        const refused = await rejection(client.call('keys.create', { keyId: 'bare-1', project: genesis.defaultProject, subject: null }));
        expect(refused.code).toBe('IDENTITY_UNAVAILABLE');
      } finally {
        await client.close();
        enclave.kill('SIGTERM');
        await new Promise((r) => enclave.once('exit', r));
      }
    } finally {
      await nsm.stop();
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  });
});

describe('scripts against a stand-in nitro-cli', () => {
  let dir: string;
  let bin: string;
  const log = () => fs.readFileSync(path.join(dir, 'nitro-cli.log'), 'utf8');

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-ops-'));
    bin = path.join(dir, 'bin');
    linkTools(bin, OPS_SCRIPT_TOOLS); // only the tools the scripts may use
    fs.writeFileSync(path.join(dir, 'fake.eif'), 'eif');
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const withNitroCli = (describeOutput = '[]') => {
    fs.writeFileSync(
      path.join(bin, 'nitro-cli'),
      `#!/bin/bash\necho "$*" >> ${dir}/nitro-cli.log\nif [[ "$1" == describe-enclaves ]]; then cat <<'J'\n${describeOutput}\nJ\nfi\n`,
      { mode: 0o755 },
    );
    fs.rmSync(path.join(dir, 'nitro-cli.log'), { force: true });
  };
  const run = (script: string, args: string[], env: Record<string, string> = {}) =>
    spawnSync(path.join(ROOT, 'scripts', script), args, { cwd: ROOT, encoding: 'utf8', env: { PATH: bin, ...env } });

  it('run-enclave.sh starts with the pinned CID, CPUs and memory, and no debug mode unless asked', () => {
    withNitroCli();
    const env = { NKS_EIF: path.join(dir, 'fake.eif'), NKS_ENCLAVE_CID: '16', NKS_ENCLAVE_CPUS: '2', NKS_ENCLAVE_MEMORY_MIB: '1024' };
    const ok = run('run-enclave.sh', ['--env', '/nonexistent'], env);
    expect(ok.status).toBe(0);
    expect(log()).toContain('run-enclave --eif-path');
    expect(log()).toContain('--enclave-cid 16 --cpu-count 2 --memory 1024 --enclave-name nitro-keystore');
    expect(log()).not.toContain('--debug-mode');
    withNitroCli();
    const debug = run('run-enclave.sh', ['--env', '/nonexistent', '--debug-mode'], env);
    expect(debug.status).toBe(0);
    expect(log()).toContain('--debug-mode');
    expect(debug.stderr).toMatch(/WARNING: debug mode/);
  });

  it('run-enclave.sh replaces a leftover enclave of the same name, and its monitor exits when the enclave is gone', () => {
    withNitroCli('[{"EnclaveName": "nitro-keystore", "State": "TERMINATING"}]');
    const res = run('run-enclave.sh', ['--env', '/nonexistent', '--monitor'], {
      NKS_EIF: path.join(dir, 'fake.eif'),
      NKS_ENCLAVE_CID: '16',
      NKS_MONITOR_INTERVAL: '1',
    });
    expect(log()).toMatch(/terminate-enclave --enclave-name nitro-keystore[\s\S]*run-enclave/);
    expect(res.status).toBe(1);
    expect(res.stderr).toMatch(/enclave nitro-keystore is not running any more/);
  });

  it('reads nitro-cli describe-enclaves as JSON: compact output, another enclave whose name extends ours, and output that is not JSON', () => {
    const env = { NKS_EIF: path.join(dir, 'fake.eif'), NKS_ENCLAVE_CID: '16', NKS_MONITOR_INTERVAL: '1' };
    // Compact JSON (no spaces after colons) naming our enclave: grep on '"EnclaveName": "x"' missed it.
    withNitroCli('[{"EnclaveName":"nitro-keystore","State":"RUNNING"}]');
    expect(run('stop-enclave.sh', []).status).toBe(0);
    expect(log()).toContain('terminate-enclave --enclave-name nitro-keystore');
    // Only "nitro-keystore-canary" runs: nothing of ours to stop, and the monitor sees ours gone.
    withNitroCli('[{"EnclaveName": "nitro-keystore-canary", "State": "RUNNING"}]');
    expect(run('stop-enclave.sh', []).stderr).toMatch(/no enclave named nitro-keystore is running/);
    const monitor = run('run-enclave.sh', ['--env', '/nonexistent', '--monitor'], env);
    expect([monitor.status, monitor.stderr]).toEqual([1, expect.stringMatching(/not running any more \(state: gone\)/)]);
    expect(log()).not.toContain('terminate-enclave');
    withNitroCli('Error: could not connect');
    const garbled = run('stop-enclave.sh', []);
    expect([garbled.status, garbled.stderr]).toEqual([
      1,
      expect.stringMatching(/output that is not a list of enclaves: Error: could not connect/),
    ]);
  });

  it('run-enclave.sh refuses a missing or reserved CID and says what is missing', () => {
    withNitroCli();
    expect(run('run-enclave.sh', ['--env', '/nonexistent'], { NKS_EIF: path.join(dir, 'fake.eif') }).stderr).toMatch(
      /NKS_ENCLAVE_CID is not set: pin the CID/,
    );
    expect(run('run-enclave.sh', ['--env', '/nonexistent'], { NKS_EIF: path.join(dir, 'fake.eif'), NKS_ENCLAVE_CID: '3' }).stderr).toMatch(
      /must be a number from 4/,
    );
    expect(run('run-enclave.sh', ['--env', '/nonexistent'], { NKS_EIF: '/nope.eif', NKS_ENCLAVE_CID: '16' }).stderr).toMatch(
      /EIF \/nope.eif does not exist/,
    );
    expect(run('run-enclave.sh', ['--bogus']).status).toBe(2);
    fs.rmSync(path.join(bin, 'nitro-cli'));
    expect(run('run-enclave.sh', ['--env', '/nonexistent'], { NKS_EIF: path.join(dir, 'fake.eif'), NKS_ENCLAVE_CID: '16' }).stderr).toMatch(
      /nitro-cli is required but not found/,
    );
  });

  it('stop-enclave.sh terminates the named enclave, or says none runs', () => {
    withNitroCli('[{"EnclaveName": "nitro-keystore", "State": "RUNNING"}]');
    expect(run('stop-enclave.sh', []).status).toBe(0);
    expect(log()).toContain('terminate-enclave --enclave-name nitro-keystore');
    withNitroCli('[]');
    const none = run('stop-enclave.sh', []);
    expect([none.status, none.stderr]).toEqual([0, expect.stringMatching(/no enclave named nitro-keystore is running/)]);
  });

  it('build-eif.sh checks its prerequisites and inputs', () => {
    expect(run('build-eif.sh', []).status).toBe(2);
    expect(run('build-eif.sh', ['--config', '/nonexistent.json']).stderr).toMatch(
      /does not exist \(start from deploy\/enclave.example.json\)/,
    );
    const example = path.join(ROOT, 'deploy', 'enclave.example.json');
    expect(run('build-eif.sh', ['--config', example]).stderr).toMatch(/docker is required but not found/);
  });

  /** Runs `snippet` in bash with scripts/lib.sh sourced, on the restricted PATH. */
  const withLib = (snippet: string) =>
    spawnSync('bash', ['-c', `set -euo pipefail; source scripts/lib.sh; ${snippet}`], { cwd: ROOT, encoding: 'utf8', env: { PATH: bin } });
  const config = (name: string, value: object) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, JSON.stringify(value));
    return file;
  };

  it("build-eif.sh's epoch comes from the configuration, or the release's SECURITY_EPOCH, never below it", () => {
    expect(withLib('release_security_epoch .').stdout).toBe(`${SECURITY_EPOCH}\n`);
    const none = config('no-epoch.json', { kmsKeyArn: 'k' });
    expect(withLib(`config_security_epoch ${none} 2`).stdout).toBe('2\n');
    expect(withLib(`config_security_epoch ${config('epoch-5.json', { securityEpoch: 5 })} 2`).stdout).toBe('5\n');
    const low = withLib(`config_security_epoch ${config('epoch-1.json', { securityEpoch: 1 })} 2`);
    expect([low.status, low.stderr]).toEqual([1, expect.stringMatching(/securityEpoch 1 is below this release's 2: the enclave refuses/)]);
    const text = withLib(`config_security_epoch ${config('epoch-text.json', { securityEpoch: 'two' })} 2`);
    expect([text.status, text.stderr]).toEqual([1, expect.stringMatching(/securityEpoch must be a positive integer, got two/)]);
    // build-eif.sh checks it before anything else is needed (docker is not on this PATH).
    const refused = run('build-eif.sh', ['--config', path.join(dir, 'epoch-1.json')]);
    expect([refused.status, refused.stderr]).toEqual([1, expect.stringMatching(/securityEpoch 1 is below/)]);
  });

  it("build-eif.sh's image mode: genesis without identity, else normal or migration; both go into the measurements", () => {
    const identity = { publicKey: `0x${'11'.repeat(32)}` };
    expect(withLib(`config_mode ${config('genesis.json', {})}`).stdout).toBe('genesis\n');
    expect(withLib(`config_mode ${config('normal.json', { identity })}`).stdout).toBe('normal\n');
    expect(withLib(`config_mode ${config('migration.json', { identity, mode: 'migration' })}`).stdout).toBe('migration\n');
    const orphan = withLib(`config_mode ${config('orphan.json', { mode: 'migration' })}`);
    expect([orphan.status, orphan.stderr]).toEqual([1, expect.stringMatching(/mode migration needs the identity section/)]);
    expect(withLib(`config_mode ${config('odd.json', { identity, mode: 'debug' })}`).stderr).toMatch(
      /mode must be normal or migration, got debug/,
    );

    const nitro = config('nitro-cli-out.json', {
      Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: 'ab'.repeat(48), PCR1: 'cd'.repeat(48) },
    });
    const out = path.join(dir, 'measurements.json');
    expect(withLib(`write_measurements ${nitro} 2 normal ${out}`).status).toBe(0);
    expect(JSON.parse(fs.readFileSync(out, 'utf8'))).toEqual({
      Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: 'ab'.repeat(48), PCR1: 'cd'.repeat(48) },
      SecurityEpoch: 2,
      EnclaveMode: 'normal',
    });
    const broken = withLib(`write_measurements ${config('nitro-cli-error.json', { error: 'E' })} 2 normal ${out}`);
    expect([broken.status, broken.stderr]).toEqual([1, expect.stringMatching(/has no Measurements.PCR0/)]);
  });

  describe('genesis.sh', () => {
    const nonce = '0x5eed5eed5eed5eed';
    let parentJs: string;
    let parentConfig: string;
    const genesisArgs = (out: string, extra: string[] = []) => [
      '--eif',
      path.join(dir, 'fake.eif'),
      '--nonce',
      nonce,
      '--out',
      out,
      '--config',
      parentConfig,
      '--env',
      '/nonexistent',
      '--parent-js',
      parentJs,
      ...extra,
    ];
    beforeAll(() => {
      // A stand-in for dist/parent.js: logs its arguments and writes what `parent genesis --out` writes (or fails).
      parentJs = path.join(dir, 'parent-stand-in.js');
      fs.writeFileSync(
        parentJs,
        `const fs = require('fs');
         const args = process.argv.slice(2);
         fs.appendFileSync(${JSON.stringify(path.join(dir, 'parent.log'))}, args.join(' ') + '\\n');
         if (process.env.GENESIS_FAILS) { process.stderr.write('parent: the enclave did not answer\\n'); process.exit(1); }
         const out = args[args.indexOf('--out') + 1];
         fs.writeFileSync(out, JSON.stringify({ publicKey: '0x' + '22'.repeat(32), blob: 'b', attestation: 'a', defaultProject: {}, nonce: args[args.indexOf('--nonce') + 1] }));
         process.stdout.write(JSON.stringify({ out }) + '\\n');`,
      );
      parentConfig = config('parent.json', { enclave: { address: 'vsock://16:5000' } });
    });
    const parentLog = () => fs.readFileSync(path.join(dir, 'parent.log'), 'utf8');

    it('runs the genesis image, has the parent make the identity, terminates the enclave and says what to verify off-host', () => {
      withNitroCli();
      fs.rmSync(path.join(dir, 'parent.log'), { force: true });
      const out = path.join(dir, 'genesis-out.json');
      const r = run('genesis.sh', genesisArgs(out), { NKS_ENCLAVE_CID: '16' });
      expect({ status: r.status, stderr: r.stderr }).toEqual({
        status: 0,
        stderr: expect.stringContaining(`genesis done: keystore identity 0x${'22'.repeat(32)}`),
      });
      expect(log()).toMatch(
        /^describe-enclaves\nrun-enclave --eif-path \S+fake\.eif --enclave-cid 16 --cpu-count 2 --memory 1024 --enclave-name nitro-keystore-genesis\nterminate-enclave --enclave-name nitro-keystore-genesis\n$/,
      );
      expect(log()).not.toContain('--debug-mode');
      // The step it is on, numbered, on stderr: the last one is the enclave's termination.
      expect([...r.stderr.matchAll(/^\[(\d)\/4\] \S.*…$/gm)].map((m) => Number(m[1]))).toEqual([1, 2, 3, 4]);
      expect(r.stderr).toMatch(/^\[4\/4\] terminating the genesis enclave nitro-keystore-genesis…$/m);
      expect(parentLog()).toBe(`genesis --config ${parentConfig} --nonce ${nonce} --out ${out}\n`);
      expect(r.stderr).toContain(`nks genesis verify ${out} --pcr0 <genesis PCR0> --nonce ${nonce} --out identity.json`);
      expect(r.stderr).toMatch(/OFF this host/);
      // Never over an earlier output: it may hold the identity in use.
      withNitroCli();
      const again = run('genesis.sh', genesisArgs(out), { NKS_ENCLAVE_CID: '16' });
      expect([again.status, again.stderr]).toEqual([1, expect.stringMatching(/exists: genesis never replaces an earlier output/)]);
      expect(fs.existsSync(path.join(dir, 'nitro-cli.log'))).toBe(false);
    });

    it('terminates the enclave when the parent fails, and writes nothing', () => {
      withNitroCli();
      const out = path.join(dir, 'genesis-failed.json');
      const r = run('genesis.sh', genesisArgs(out), { NKS_ENCLAVE_CID: '16', GENESIS_FAILS: '1' });
      expect([r.status, r.stderr]).toEqual([
        1,
        expect.stringMatching(/the enclave did not answer[\s\S]*the parent's genesis command failed/),
      ]);
      expect(log()).toMatch(/run-enclave [^\n]*\nterminate-enclave --enclave-name nitro-keystore-genesis\n$/);
      expect(fs.existsSync(out)).toBe(false);
      // The step it failed at, then the termination.
      expect([...r.stderr.matchAll(/^\[(\d)\/4\]/gm)].map((m) => Number(m[1]))).toEqual([1, 2, 3, 4]);
    });

    it('refuses a missing or malformed nonce, a busy CID, and a missing EIF, before starting anything', () => {
      withNitroCli('[{"EnclaveName": "nitro-keystore", "EnclaveCID": 16, "State": "RUNNING"}]');
      const out = path.join(dir, 'genesis-refused.json');
      const busy = run('genesis.sh', genesisArgs(out), { NKS_ENCLAVE_CID: '16' });
      expect([busy.status, busy.stderr]).toEqual([1, expect.stringMatching(/enclave nitro-keystore runs with CID 16: stop it first/)]);
      expect(log()).toBe('describe-enclaves\n');
      const bad = run(
        'genesis.sh',
        genesisArgs(out).map((a) => (a === nonce ? '5eed' : a)),
        { NKS_ENCLAVE_CID: '16' },
      );
      expect([bad.status, bad.stderr]).toEqual([1, expect.stringMatching(/--nonce must be 1-512 bytes of 0x-prefixed hex/)]);
      const noEif = run(
        'genesis.sh',
        genesisArgs(out).map((a) => (a.endsWith('fake.eif') ? '/nope.eif' : a)),
        { NKS_ENCLAVE_CID: '16' },
      );
      expect(noEif.stderr).toMatch(/EIF \/nope.eif does not exist/);
      expect(run('genesis.sh', ['--eif', path.join(dir, 'fake.eif'), '--out', out]).status).toBe(2);
      expect(run('genesis.sh', genesisArgs(out)).stderr).toMatch(/NKS_ENCLAVE_CID is not set/);
      expect(fs.existsSync(out)).toBe(false);
    });
  });

  it('approve-image.sh produces the policy from nks policy (dry run), and needs the AWS CLI to install it', () => {
    const m = path.join(dir, 'measurements.json');
    fs.writeFileSync(
      m,
      JSON.stringify({
        Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: 'ab'.repeat(48), PCR1: 'cd'.repeat(48), PCR2: 'ef'.repeat(48) },
      }),
    );
    const args = [
      '--key-arn',
      'arn:aws:kms:us-east-1:111122223333:key/k',
      '--parent-role-arn',
      'arn:aws:iam::111122223333:role/p',
      '--admin',
      'arn:aws:iam::111122223333:role/a',
      '--image-approver-role-arn',
      'arn:aws:iam::111122223333:role/i',
      '--break-glass-role-arn',
      'arn:aws:iam::111122223333:role/b',
      '--measurements',
      m,
    ];
    const current = path.join(dir, 'current-policy.json');
    fs.writeFileSync(current, JSON.stringify({ Version: '2012-10-17', Id: 'key-default-1', Statement: [] }));
    const dry = run('approve-image.sh', [...args, '--dry-run', '--current-policy', current]);
    expect(dry.status).toBe(0);
    expect(JSON.parse(dry.stdout).Statement.map((s: { Sid: string }) => s.Sid)).toContain('DenyDecryptOutsideApprovedEnclaves');
    // The measurements carry no SecurityEpoch (made before 0.4): an epoch-1 image, refused over an epoch-2 policy.
    fs.writeFileSync(current, dry.stdout.replace('"nitro-keystore-key-policy-epoch-1"', '"nitro-keystore-key-policy-epoch-2"'));
    const down = run('approve-image.sh', [...args, '--dry-run', '--current-policy', current]);
    expect([down.status, down.stderr]).toEqual([
      2,
      expect.stringMatching(/installed policy approves security epoch 2; an image of epoch 1/),
    ]);
    expect(run('approve-image.sh', args).stderr).toMatch(/aws is required but not found/);
    const debugImage = run('approve-image.sh', [
      '--key-arn',
      'k',
      '--parent-role-arn',
      'arn:aws:iam::111122223333:role/p',
      '--admin',
      'arn:aws:iam::111122223333:role/a',
      '--image-approver-role-arn',
      'arn:aws:iam::111122223333:role/i',
      '--break-glass-role-arn',
      'arn:aws:iam::111122223333:role/b',
      '--pcr0',
      '0'.repeat(96),
      '--security-epoch',
      '2',
      '--dry-run',
      '--current-policy',
      current,
    ]);
    expect(debugImage.status).not.toBe(0);
    expect(debugImage.stderr).toMatch(/debug images cannot be approved/);
  });
});
