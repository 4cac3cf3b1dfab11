/**
 * The keystore identity and the 0.4 migration in the local stack, done the way operators do them
 * (docs/OPERATIONS.md, "Genesis" and "Migration"), with the parent program's own subcommands:
 *
 * - genesis (first start, or a state directory from before 0.4): the enclave runs as the genesis image (its
 *   configuration has no identity), `parent genesis` asks it for the identity, the document is verified
 *   against the simulated Nitro root (chain, nonce, user_data binding the public key, and PCR0 = the genesis
 *   image's), and the identity is written into the enclave configuration, which makes the normal image;
 * - migration (a state directory with keys made before 0.4): the migration image (the normal configuration
 *   with `"mode": "migration"`, so its PCR0 differs) is approved in the key policy for the time of the
 *   migration only, `parent migrate` re-seals every key without a record, and the approval is removed.
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { USER_DATA_TAGS, taggedUserData } from '@nks/shared/attestation/user-data';
import { verifyAttestation } from '@nks/shared/attestation/verify';
import type { SignedRecord } from '@nks/shared/records';
import { measureImageFiles } from '../measure';
import { instancePaths } from './instances';
import { approveAlso, updatePolicy, DEV_PARENT_ROLE, type DevPaths, type Provisioned } from './provision';
import type { Child } from './supervisor';

/** Starts the programs of one phase; the stack stops them on Ctrl-C. Their exit is expected. */
export interface Phase {
  run(label: string, script: string, args: string[], env?: NodeJS.ProcessEnv, cwd?: string): Child;
  say(line: string): void;
  distDir: string;
  bundle: string;
  paths: DevPaths;
  /** The environment the parent program runs with (KMS endpoint and credentials). */
  parentEnv: NodeJS.ProcessEnv;
  kmsUrl: string;
}

interface GenesisFile {
  publicKey: string;
  blob: string;
  attestation: string;
  defaultProject: SignedRecord;
  nonce: string;
}

/**
 * The NSM simulator measuring `images` (bundle and configuration) as the enclave's PCR0-2: instance 0's unless
 * `instance` names another pair (instances.ts).
 */
export async function startNsm(phase: Phase, images: string[], instance = instancePaths(phase.paths, 0), label = 'nsm'): Promise<Child> {
  const nsm = phase.run(label, path.join(phase.distDir, 'nsm-sim.js'), [
    '--socket',
    instance.nsmSocket,
    '--state-dir',
    instance.nsmStateDir,
    ...images.flatMap((f) => ['--image', f]),
    '--parent-role-arn',
    DEV_PARENT_ROLE,
    '--instance-id',
    instance.instanceId,
  ]);
  await nsm.waitFor('NSM simulator ready');
  return nsm;
}

/** The keystore identity's public key in the enclave configuration, if it has one. */
export function identityOf(p: DevPaths): string | undefined {
  return (JSON.parse(fs.readFileSync(p.enclaveConfig, 'utf8')) as { identity?: { publicKey?: string } }).identity?.publicKey;
}

/** Genesis: makes the identity with the genesis image and writes it into the enclave configuration. */
export async function makeIdentity(phase: Phase): Promise<{ publicKey: string; genesisPcr0: string }> {
  const { paths: p, bundle } = phase;
  const genesisImage = measureImageFiles([bundle, p.enclaveConfig]);
  phase.say(`dev: no keystore identity yet: starting the genesis image (PCR0 ${genesisImage.PCR0})`);
  const nsm = await startNsm(phase, [bundle, p.enclaveConfig]);
  // In its run directory: an enclave configuration of the relative form finds its vsock and NSM there.
  const enclave = phase.run('enclave', bundle, ['--config', p.enclaveConfig], {}, p.runDir);
  try {
    await enclave.waitFor('enclave ready');
    const nonce = `0x${randomBytes(32).toString('hex')}`;
    fs.rmSync(p.genesis, { force: true }); // an earlier genesis that was never written into the configuration
    const cmd = phase.run(
      'genesis',
      path.join(phase.distDir, 'parent.js'),
      ['genesis', '--config', p.parentConfig, '--nonce', nonce, '--out', p.genesis, '--trusted-root', p.rootPem],
      phase.parentEnv,
    );
    const code = await cmd.exited;
    if (code !== 0) throw new Error(`parent genesis failed (exit code ${code})`);
    const out = JSON.parse(fs.readFileSync(p.genesis, 'utf8')) as GenesisFile;
    if (out.nonce !== nonce) throw new Error('the genesis output is not for this nonce');
    // The operator's check: the document is genuine (here: the simulated Nitro root), fresh (our nonce), binds
    // this public key, and was made by the genesis image we started.
    verifyAttestation(Buffer.from(out.attestation, 'base64'), {
      trustedRoots: [fs.readFileSync(p.rootPem, 'utf8')],
      expectedNonce: Buffer.from(nonce.slice(2), 'hex'),
      expectedUserData: taggedUserData(USER_DATA_TAGS.identity, Buffer.from(out.publicKey.slice(2), 'hex')),
      expectedPcrs: { 0: genesisImage.PCR0 },
    });
    const config = JSON.parse(fs.readFileSync(p.enclaveConfig, 'utf8')) as Record<string, unknown>;
    config.identity = { publicKey: out.publicKey, blob: out.blob, genesisDocument: out.attestation, defaultProject: out.defaultProject };
    fs.writeFileSync(p.enclaveConfig, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o644 });
    phase.say(
      `dev: keystore identity ${out.publicKey} made by the genesis image; its document verifies against the simulated Nitro root (nonce, public key, PCR0); written into ${p.enclaveConfig}`,
    );
    return { publicKey: out.publicKey, genesisPcr0: genesisImage.PCR0 };
  } finally {
    await enclave.stop();
    await nsm.stop();
  }
}

/** How many keys have no record yet (`parent migrate --pending`). */
export function keysToMigrate(phase: Phase): number {
  const res = spawnSync(
    process.execPath,
    [path.join(phase.distDir, 'parent.js'), 'migrate', '--pending', '--config', phase.paths.parentConfig],
    {
      encoding: 'utf8',
      env: { ...process.env, ...phase.parentEnv },
      timeout: 60_000,
    },
  );
  const line = res.stdout.split('\n').find((l) => l.startsWith('{"keysWithoutRecord"'));
  if (res.status !== 0 || !line) throw new Error(`parent migrate --pending failed (exit code ${res.status}): ${res.stderr.trim()}`);
  return (JSON.parse(line) as { keysWithoutRecord: number }).keysWithoutRecord;
}

export interface MigrationSummary {
  total: number;
  migrated: number;
  failed: number;
  remaining: number;
}

/**
 * Migrates the keys made before 0.4, if there are any: approves the migration image for the time of the
 * migration only, runs it with `parent migrate`, and approves the normal image alone again, whatever happened.
 */
export async function migrateKeys(phase: Phase, prov: Provisioned): Promise<MigrationSummary | null> {
  const pending = keysToMigrate(phase);
  if (pending === 0) return null;
  const { paths: p, bundle } = phase;
  phase.say(`dev: ${pending} key(s) made before 0.4 have no signed record: migrating them with the migration image`);
  const config = JSON.parse(fs.readFileSync(p.enclaveConfig, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(p.migrationConfig, `${JSON.stringify({ ...config, mode: 'migration' }, null, 2)}\n`, { mode: 0o644 });
  const normal = measureImageFiles([bundle, p.enclaveConfig]);
  const migration = measureImageFiles([bundle, p.migrationConfig]);
  try {
    await approveAlso(phase.kmsUrl, prov.keyArn, normal, migration);
    phase.say(`dev: the key policy approves the migration image (PCR0 ${migration.PCR0}) for the migration only`);
    const nsm = await startNsm(phase, [bundle, p.migrationConfig]);
    // The command first: the migration image unseals its identity and the old blobs through its KMS proxy.
    const cmd = phase.run('migrate', path.join(phase.distDir, 'parent.js'), ['migrate', '--config', p.parentConfig], phase.parentEnv);
    const enclave = phase.run('enclave', bundle, ['--config', p.migrationConfig], {}, p.runDir);
    try {
      const code = await cmd.exited;
      const finished = await cmd.waitFor('migration finished', 0).catch(() => undefined);
      if (code !== 0 || !finished) {
        throw new Error(`parent migrate failed (exit code ${code}); keys not migrated stay unusable: start again to retry`);
      }
      const summary = {
        total: Number(finished.total),
        migrated: Number(finished.migrated),
        failed: Number(finished.failed),
        remaining: Number(finished.remaining),
      };
      phase.say(`dev: migrated ${summary.migrated} of ${summary.total} key(s) to signed records`);
      return summary;
    } finally {
      await enclave.stop();
      await nsm.stop();
    }
  } finally {
    await updatePolicy(phase.kmsUrl, bundle, p, prov);
    fs.rmSync(p.migrationConfig, { force: true });
    phase.say(`dev: the migration image is no longer approved; the key policy approves PCR0 ${normal.PCR0} alone`);
  }
}
