/**
 * The dev stack (dist/dev.js) as the chaos suite drives it: a temp state directory, `--api-port 0` on the first
 * start and that port again on a restart (the load keeps its target), the disk-fault shim loaded for the
 * database's files (<dir>/keys.db), and the pids of its programs for kill -9 and SIGSTOP.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDevStack, type DevStack } from '../support/dev-stack';
import { diskFaults, type DiskFaults } from './disk-faults';
import type { Target } from './load';

export interface ChaosStack {
  dir: string;
  port: number;
  /** The KMS emulator's URL (a restart of the stack gives it another port). */
  kmsUrl(): string;
  faults: DiskFaults;
  target(): Target;
  /** The parent's metrics listener (from dev.json: a new port after each restart). */
  metricsUrl(): string;
  parentPid(): number;
  enclavePid(): number;
  /** The KMS emulator's pid (a child of dev.js). */
  kmsPid(): number;
  /** Waits for dev.js to exit (a parent or enclave killed stops a one-instance stack) and starts it again. */
  restart(): Promise<void>;
  /** POSTs the KMS emulator's faults (`/__emulator/faults`); resolves with what it answers. */
  kmsFaults(patch?: Record<string, unknown>): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

function childPid(devPid: number, script: string): number {
  const ps = spawnSync('ps', ['-o', 'pid=,args=', '--ppid', String(devPid)], { encoding: 'utf8' }).stdout;
  const line = ps.split('\n').find((l) => l.includes(script));
  if (!line) throw new Error(`no ${script} under dev.js (pid ${devPid})`);
  return Number(line.trim().split(/\s+/)[0]);
}

export async function startChaosStack(): Promise<ChaosStack> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-chaos-'));
  const faults = diskFaults(path.join(dir, 'keys.db'), dir);
  let dev: DevStack = await startDevStack(dir, ['--api-port', '0'], { env: faults.env });
  const port = Number(new URL(dev.url).port);
  const devJson = () =>
    JSON.parse(fs.readFileSync(path.join(dir, 'dev.json'), 'utf8')) as { kmsUrl: string; instances: Array<{ metricsUrl: string }> };
  const kmsUrl = () => devJson().kmsUrl;
  const instance = () => {
    const i = dev.instances[0];
    if (!i) throw new Error('the dev stack printed no INSTANCE line');
    return i;
  };
  const exited = async (withinMs: number) => {
    const until = Date.now() + withinMs;
    while (dev.child.exitCode === null && dev.child.signalCode === null && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  };
  return {
    dir,
    port,
    kmsUrl,
    faults,
    target: () => ({ url: dev.url, token: dev.token }),
    metricsUrl: () => devJson().instances[0]?.metricsUrl ?? '',
    parentPid: () => instance().parentPid,
    enclavePid: () => instance().enclavePid,
    kmsPid: () => childPid(dev.child.pid as number, 'kms-emulator.js'),
    async restart() {
      await exited(30_000);
      await dev.stop(30_000);
      dev = await startDevStack(dir, ['--api-port', String(port)], { env: faults.env, readyWithinMs: 120_000 });
    },
    async kmsFaults(patch) {
      const res = await fetch(`${kmsUrl()}/__emulator/faults`, {
        method: patch ? 'POST' : 'GET',
        ...(patch ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(patch) } : {}),
      });
      if (!res.ok) throw new Error(`the KMS emulator refused ${JSON.stringify(patch)}: ${res.status} ${await res.text()}`);
      return (await res.json()) as Record<string, unknown>;
    },
    async stop() {
      faults.clear();
      await dev.stop(30_000).catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
