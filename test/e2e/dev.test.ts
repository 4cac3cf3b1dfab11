/**
 * `npm run dev` as a newcomer uses it: it reaches READY with a keystore identity made by the genesis image
 * (its document verified against the simulated Nitro root), with the wallet routes served by the enclave over TLS
 * (its own key, a certificate of the dev CA kept in <dir>/tls, `WALLETS https://127.0.0.1:PORT` just before READY,
 * `nks tls verify` VALID), the README walk-through runs as written against
 * it, Ctrl-C stops every process, a second start reuses the state, a changed enclave image cannot unseal the
 * identity (KMS refuses it) until its measurements are approved with --update-policy, and a state directory from before 0.4 gets an
 * identity and its keys migrated with the migration image, approved for the migration only.
 *
 * Each test makes the state it needs in its own directory, and every stack listens on `--api-port 0`: the
 * port is the one printed on the READY line, never one picked beforehand and bound later.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { recoverMessageAddress } from 'viem';
import { taggedUserData, USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { verifyAttestation } from '@nks/shared/attestation/verify';
import { identityPublicKey, openKeyRecord } from '@nks/shared/records';
import { tempRunDir } from '@nks/shared-test/helpers';
import { measureContents } from '../../sim/src/measure';
import { SimulatedNitroCa } from '../../sim/src/nsm/ca';
import {
  approvedByPolicy,
  DEV_ADMIN_ACCESS_KEY,
  DEV_ADMIN_ROLE,
  DEV_PARENT_ROLE,
  devPaths,
  ensureTokenAndParentConfig,
  provision,
} from '../../sim/src/dev/provision';
import { processesUsing } from '../support/dev-stack';
import { legacyKey, writeLegacyDatabase } from '../support/legacy';
import { startProgram } from '../support/process';

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
  /** The WALLETS line's URL (empty for the stand-in of a stack that did not start). */
  walletsUrl: string;
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
    await interrupt({ child, output: () => out, url: '', walletsUrl: '' }).catch(() => undefined);
    throw err;
  });
  onOutput = () => undefined;
  // The WALLETS line comes right before READY.
  const walletsUrl = new RegExp(`^WALLETS (https://\\S+)\nREADY ${url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm').exec(out)?.[1] ?? '';
  return { child, output: () => out, url, walletsUrl };
}

/** A start that is expected to stop by itself before READY: its exit code and output. */
async function devUntilExit(dir: string, extra: string[] = []): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [path.join(ROOT, 'scripts', 'dev.mjs'), '--no-build', '--dir', dir, '--api-port', '0', ...extra], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  running.add(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d));
  child.stderr?.on('data', (d: Buffer) => (out += d));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  running.delete(child);
  return { code, output: out };
}

/** The caller API of a running dev stack, with its token. */
async function devApi(dev: Dev, dir: string, pathname: string, body?: unknown): Promise<{ status: number; body: any }> {
  const token = fs.readFileSync(path.join(dir, 'token'), 'utf8').trim();
  const res = await fetch(`${dev.url}${pathname}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: await res.json() };
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
    await interrupt({ child, output: () => '', url: '', walletsUrl: '' }).catch(() => undefined);
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
      // Its steps, numbered on stderr (shared/src/progress.ts), all of them before READY; --no-build: the
      // launcher's build is not one of them.
      const beforeReady = dev.output().split(/^READY /m)[0] as string;
      expect([...beforeReady.matchAll(/^\[(\d+)\/7\] \S.*…$/gm)].map((m) => Number(m[1]))).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(beforeReady).toMatch(/^\[3\/7\] the keystore identity…\n(.*\n)*dev: no keystore identity yet: starting the genesis image/m);
      expect(beforeReady).toMatch(/^ +none without a signed record$/m);
      expect(fs.statSync(path.join(dir, 'token')).mode & 0o777).toBe(0o600);

      // The wallet routes: served by the enclave over TLS with its own key, under the dev CA kept in <dir>/tls.
      expect(dev.walletsUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const devState = JSON.parse(fs.readFileSync(path.join(dir, 'dev.json'), 'utf8'));
      expect(devState.wallets).toMatchObject({ url: dev.walletsUrl, caPem: path.join(dir, 'tls', 'ca.pem') });
      expect(fs.statSync(path.join(dir, 'tls', 'ca-key.pem')).mode & 0o777).toBe(0o600);
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'parent.json'), 'utf8')).wallets).toEqual({
        publicUrl: dev.walletsUrl,
        relay: { host: '127.0.0.1', port: Number(new URL(dev.walletsUrl).port) },
      });
      expect(dev.output()).toMatch(
        /dev: wallet routes served by the enclave at https:\/\/127\.0\.0\.1:\d+ over TLS with its own key \(made now;/,
      );
      const verified = nks(dir, ['tls', 'verify']);
      expect({ status: verified.status, stderr: verified.stderr }).toEqual({ status: 0, stderr: '' });
      expect(verified.stdout).toMatch(new RegExp(`^VALID TLS key of ${dev.walletsUrl}: the connection ends in an attested enclave`));
      expect(verified.stdout).toContain(`spki sha256`);
      // The dev CA is trusted through an agent of its own (Node's store does not hold it).
      const health = await undiciFetch(`${dev.walletsUrl}/v1/health`, {
        dispatcher: new Agent({ connect: { ca: fs.readFileSync(devState.wallets.caPem, 'utf8') } }),
      });
      expect(health.status).toBe(200);

      // Genesis: the identity in the enclave configuration is the one the API serves, made by the genesis image
      // (the configuration without it) and bound to the public key, as the simulated Nitro root attests.
      const output = dev.output();
      expect(output).toMatch(/dev: no keystore identity yet: starting the genesis image \(PCR0 [0-9a-f]{96}\)/);
      expect(output).toMatch(
        /dev: keystore identity 0x[0-9a-f]{64} made by the genesis image; its document verifies against the simulated Nitro root/,
      );
      expect(output).not.toMatch(/migrat/);
      const enclaveConfig = JSON.parse(fs.readFileSync(path.join(dir, 'enclave.json'), 'utf8'));
      const { identity, ...genesisConfig } = enclaveConfig;
      const served = await devApi(dev, dir, '/v1/identity?nonce=0x01');
      expect([served.status, served.body.publicKey, served.body.genesisDocument]).toEqual([
        200,
        identity.publicKey,
        identity.genesisDocument,
      ]);
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'parent.json'), 'utf8')).identity).toEqual({ publicKey: identity.publicKey });
      const genesisImage = measureContents([
        fs.readFileSync(path.join(ROOT, 'dist', 'enclave.js')),
        Buffer.from(`${JSON.stringify(genesisConfig, null, 2)}\n`),
      ]);
      const genesisDoc = verifyAttestation(Buffer.from(identity.genesisDocument, 'base64'), {
        trustedRoots: [fs.readFileSync(path.join(dir, 'nsm', 'root.pem'), 'utf8')],
        expectedUserData: taggedUserData(USER_DATA_TAGS.identity, Buffer.from(identity.publicKey.slice(2), 'hex')),
        expectedPcrs: { 0: genesisImage.PCR0 },
        at: 'document', // evidence kept since genesis
      });
      expect(genesisDoc.document.nonce?.toString('hex')).toBe(
        JSON.parse(fs.readFileSync(path.join(dir, 'genesis.json'), 'utf8')).nonce.slice(2),
      );
      // The key policy approves the image with the identity, not the genesis image.
      const devJson = JSON.parse(fs.readFileSync(path.join(dir, 'dev.json'), 'utf8'));
      expect(await approvedByPolicy(devJson.kmsUrl, devJson.keyArn)).toEqual([devJson.pcr0]);
      expect(devJson.pcr0).not.toBe(genesisImage.PCR0);
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
    expect(processesUsing(dir)).toEqual([]);
  }, 240_000);

  it('reuses its state on the next start: the same key still signs', async () => {
    const { dir, keyId, address } = await provisionedWithKey('nks-dev-reuse-');
    dirs.push(dir);
    const fingerprint = JSON.parse(fs.readFileSync(path.join(dir, 'tls', 'installed.json'), 'utf8')).fingerprint256 as string;
    expect(fingerprint).toMatch(/^[0-9a-f]{64}$/);
    const dev = await startDev(dir);
    try {
      expect(dev.output()).not.toMatch(/provisioning/);
      expect(dev.output()).not.toMatch(/genesis image|migrat/);
      // The same steps, those with nothing to do saying so.
      expect(dev.output()).toMatch(
        /^\[2\/7\] the KMS key, the enclave configuration and the key policy…\n(?:.*\n)*? +kept from an earlier start/m,
      );
      expect(dev.output()).toMatch(/^\[3\/7\] the keystore identity…\n(?:.*\n)*? +kept: 0x[0-9a-f]+$/m);
      // The dev CA and the certificate it issued are kept: the parent installed its current key again.
      expect(dev.output()).toMatch(/wallet routes served by the enclave at \S+ over TLS with its own key \(kept;/);
      expect(dev.output()).not.toMatch(/made the dev CA/);
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'tls', 'installed.json'), 'utf8')).fingerprint256).toBe(fingerprint);
      expect(nks(dir, ['tls', 'verify']).status).toBe(0);
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
    const refused = await devUntilExit(dir, ['--enclave-bundle', changed]);
    expect(refused.code).toBe(1);
    expect(refused.output).toMatch(/the enclave image changed since provisioning/);
    // KMS itself refuses: the emulator evaluates the key policy against the enclave's attested PCR0.
    expect(refused.output).toMatch(
      /dev: the enclave could not unseal the keystore identity: KMS_ACCESS_DENIED: KMS AccessDeniedException: .*kms:Decrypt.*is this enclave image approved in the key policy\?.*npm run dev -- --update-policy/,
    );
    expect(refused.output).not.toMatch(/READY/);
    expect(processesUsing(dir)).toEqual([]);

    const dev = await startDev(dir, ['--enclave-bundle', changed, '--update-policy']);
    try {
      expect(dev.output()).toMatch(/key policy now approves PCR0/);
      expect(dev.output()).not.toMatch(/image changed since provisioning/);
      expect(nks(dir, ['sign', keyId, '--message', 'approved']).status).toBe(0);
    } finally {
      expect(await interrupt(dev)).toBe(0);
    }
  }, 240_000);

  it('gives a state directory from before 0.4 an identity and migrates its keys, approving the migration image only meanwhile', async () => {
    // The directory as 0.3's first start left it: its KMS key, an enclave configuration without identity, the
    // parent configuration and token, and a database of schema 1 with keys sealed as version 1 blobs.
    const dir = tempRunDir('nks-dev-old-');
    dirs.push(dir);
    const p = devPaths(dir);
    fs.mkdirSync(p.runDir, { recursive: true });
    await SimulatedNitroCa.open(path.join(p.nsmStateDir, 'nsm-ca.json'), { instanceId: 'i-0dev00000000000000' });
    const kms = startProgram('kms-emulator', [
      '--port',
      '0',
      '--state',
      p.kmsState,
      '--trust-root',
      p.rootPem,
      '--principal',
      DEV_PARENT_ROLE,
      '--access-key',
      `${DEV_ADMIN_ACCESS_KEY}=${DEV_ADMIN_ROLE}`,
    ]);
    let old: ReturnType<typeof legacyKey>[];
    try {
      const url = String((await kms.waitForLog((e) => e.msg === 'KMS emulator listening')).url);
      const prov = await provision(url, p);
      ensureTokenAndParentConfig(p, prov.keyArn, 0);
      const kmsPublicKey = JSON.parse(fs.readFileSync(p.enclaveConfig, 'utf8')).kmsPublicKey as string;
      old = [
        legacyKey('k_old_alice', { keyArn: prov.keyArn, kmsPublicKey }, { externalId: 'alice' }),
        legacyKey('k_old_plain', { keyArn: prov.keyArn, kmsPublicKey }),
      ];
      writeLegacyDatabase(p.database, old);
    } finally {
      await kms.stop();
    }

    const dev = await startDev(dir);
    try {
      const output = dev.output();
      expect(output).not.toMatch(/first start: provisioning/);
      const steps = [
        /dev: no keystore identity yet: starting the genesis image/,
        /dev: keystore identity 0x[0-9a-f]{64} made by the genesis image/,
        /dev: 2 key\(s\) made before 0.4 have no signed record: migrating them with the migration image/,
        /dev: the key policy approves the migration image \(PCR0 [0-9a-f]{96}\) for the migration only/,
        /dev: migrated 2 of 2 key\(s\) to signed records/,
        /dev: the migration image is no longer approved; the key policy approves PCR0 [0-9a-f]{96} alone/,
        /^READY /m,
      ];
      const at = steps.map((re) => output.search(re));
      expect(at.every((i) => i >= 0)).toBe(true);
      expect([...at].sort((a, b) => a - b)).toEqual(at); // in this order
      expect(fs.existsSync(p.migrationConfig)).toBe(false);
      const devJson = JSON.parse(fs.readFileSync(p.devJson, 'utf8'));
      expect(await approvedByPolicy(devJson.kmsUrl, devJson.keyArn)).toEqual([devJson.pcr0]);

      // Every key 0.3 made signs with the same address, and carries a record of origin "migrated".
      const identity = identityPublicKey(devJson.identity);
      for (const k of old) {
        const signed = await devApi(dev, dir, `/v1/keys/${k.keyId}/sign`, { type: 'message', message: 'from 0.3' });
        expect([k.keyId, signed.status]).toEqual([k.keyId, 200]);
        expect(await recoverMessageAddress({ message: 'from 0.3', signature: signed.body.signature })).toBe(k.address);
        const view = (await devApi(dev, dir, `/v1/keys/${k.keyId}`)).body;
        expect(openKeyRecord(view.record, identity).record).toMatchObject({ keyId: k.keyId, subject: k.externalId, origin: 'migrated' });
      }
    } finally {
      expect(await interrupt(dev)).toBe(0);
    }

    // The next start has nothing left to do.
    const again = await startDev(dir);
    try {
      expect(again.output()).not.toMatch(/genesis image|migrat/);
    } finally {
      expect(await interrupt(again)).toBe(0);
    }
  }, 240_000);
});
