/**
 * The disk-fault shim (disk-faults.c, an LD_PRELOAD library) built with the system's C compiler, and the
 * switches of one database's faults: full (writes fail with ENOSPC), failing fsync (EIO) and stalled fsync.
 * Used by the chaos suite and by the store tests; the faults are real system-call failures, no privileges needed.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from '../support/process';

/** Found from the repository root: this module also runs bundled (dist/chaos.js). */
const SOURCE = path.join(ROOT, 'test', 'chaos', 'disk-faults.c');

/**
 * Builds the shim (once per source version, in the temp directory) and returns its path. Throws a clear error
 * when there is no C compiler (`cc`): install one (Debian: apt-get install gcc libc6-dev).
 */
export function buildDiskFaultShim(source = SOURCE): string {
  const text = fs.readFileSync(source);
  const out = path.join(os.tmpdir(), `nks-disk-faults-${createHash('sha256').update(text).digest('hex').slice(0, 16)}.so`);
  if (fs.existsSync(out)) return out;
  const tmp = `${out}.${process.pid}.tmp`;
  const cc = spawnSync('cc', ['-shared', '-fPIC', '-O2', '-Wall', '-o', tmp, source, '-ldl'], { encoding: 'utf8' });
  if (cc.error || cc.status !== 0)
    throw new Error(
      `cannot build the disk-fault shim with cc (${cc.error?.message ?? cc.stderr.trim()}): install a C compiler (Debian: apt-get install gcc libc6-dev)`,
    );
  fs.renameSync(tmp, out);
  return out;
}

export interface DiskFaults {
  /** The environment that loads the shim for files whose path starts with `target`. */
  env: NodeJS.ProcessEnv;
  full(on: boolean): void;
  failFsync(on: boolean): void;
  stallFsync(on: boolean): void;
  /** Every fault off. */
  clear(): void;
}

/** The faults of the files under `target` (e.g. a database file: its WAL and journal too), switched by files in `controlDir`. */
export function diskFaults(target: string, controlDir: string): DiskFaults {
  const shim = buildDiskFaultShim();
  const control = {
    full: path.join(controlDir, 'fault-full'),
    eio: path.join(controlDir, 'fault-eio'),
    stall: path.join(controlDir, 'fault-stall'),
  };
  const set = (file: string, on: boolean) => (on ? fs.writeFileSync(file, '') : fs.rmSync(file, { force: true }));
  return {
    env: {
      LD_PRELOAD: [shim, process.env.LD_PRELOAD].filter(Boolean).join(' '),
      NKS_FAULT_PATH: target,
      NKS_FAULT_FULL: control.full,
      NKS_FAULT_EIO: control.eio,
      NKS_FAULT_STALL: control.stall,
    },
    full: (on) => set(control.full, on),
    failFsync: (on) => set(control.eio, on),
    stallFsync: (on) => set(control.stall, on),
    clear: () => Object.values(control).forEach((f) => set(f, false)),
  };
}
