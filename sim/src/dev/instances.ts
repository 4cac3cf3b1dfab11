/**
 * The pairs of a multi-instance dev stack (`--instances N`): N parent+enclave pairs, each as on a host of its
 * own, sharing only what a fleet shares (docs/STORAGE.md): the database, the keystore identity, the token and
 * the enclave image.
 *
 * Each pair has its own simulated vsock (a run directory: `vsock://CID:PORT` is a socket file in it, so every
 * pair uses the usual addresses without meeting another's), its own NSM simulator in that directory (its own
 * instance id, so PCR4 differs, under the same simulated Nitro root, which the KMS emulator trusts), its own
 * parent configuration (API port, wallets relay port, run directory), and its own enclave process, run in that
 * directory. The enclave configuration is one file for all: its run directory is relative (provision.ts,
 * `useRelativeRunDir`), so every enclave measures the same.
 *
 * Instance 0 is the single-instance stack's: `<dir>/run`, `<dir>/parent.json`, `<dir>/nsm`. Instance i > 0:
 * `<dir>/run-i` (or `/tmp/nks-dev-<hash>-i` when that path is too long for a socket), `<dir>/parent-i.json`,
 * `<dir>/nsm-i` (a copy of the simulated CA's state, renewed there on its own).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { DevPaths } from './provision';

export const MAX_INSTANCES = 16;
/** The simulated EC2 instance of instance 0 (the single-instance stack's, as before). */
export const DEV_INSTANCE_ID = 'i-0dev00000000000000';

export interface InstancePaths {
  index: number;
  /** The pair's simulated vsock and NSM socket; the enclave's working directory. */
  runDir: string;
  parentConfig: string;
  nsmStateDir: string;
  nsmSocket: string;
  /** The simulated EC2 instance id (the NSM simulator's PCR4 and certificate names). */
  instanceId: string;
}

const tooLong = (runDir: string) => Buffer.byteLength(path.join(runDir, 'vsock', '4294967295.4294967295.sock')) > 107;

export function instancePaths(p: DevPaths, index: number): InstancePaths {
  if (index === 0) {
    return {
      index,
      runDir: p.runDir,
      parentConfig: p.parentConfig,
      nsmStateDir: p.nsmStateDir,
      nsmSocket: path.join(p.runDir, 'nsm.sock'),
      instanceId: DEV_INSTANCE_ID,
    };
  }
  let runDir = `${p.runDir}-${index}`;
  if (tooLong(runDir)) runDir = path.join('/tmp', `nks-dev-${createHash('sha256').update(p.dir).digest('hex').slice(0, 12)}-${index}`);
  return {
    index,
    runDir,
    parentConfig: path.join(p.dir, `parent-${index}.json`),
    nsmStateDir: path.join(p.dir, `nsm-${index}`),
    nsmSocket: path.join(runDir, 'nsm.sock'),
    instanceId: `i-0dev${index.toString(16).padStart(14, '0')}`,
  };
}

/**
 * Makes the pair's directories; for i > 0, its NSM simulator's state is a copy of instance 0's (the same root,
 * which the KMS emulator trusts), taken at every start.
 */
export function prepareInstance(p: DevPaths, ip: InstancePaths): void {
  fs.mkdirSync(ip.runDir, { recursive: true, mode: 0o700 });
  if (ip.index === 0) return;
  fs.mkdirSync(ip.nsmStateDir, { recursive: true, mode: 0o700 });
  fs.copyFileSync(path.join(p.nsmStateDir, 'nsm-ca.json'), path.join(ip.nsmStateDir, 'nsm-ca.json'));
  fs.chmodSync(path.join(ip.nsmStateDir, 'nsm-ca.json'), 0o600);
}

/**
 * Each parent's pool: at most 10 connections, fewer with many instances so that all of them (and a LISTEN
 * connection each) stay within the embedded server's 100 connections, with room for an operator's psql.
 */
export function poolSizeFor(instances: number): number {
  return Math.max(2, Math.min(10, Math.floor(90 / instances) - 1));
}
