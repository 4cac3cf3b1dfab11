/** Helpers for the tests of the vsock addon (enclave/native/vsock.c) and the transport built on it. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import vm from 'node:vm';
import v8 from 'node:v8';
import { loadVsockBinding, type VsockBinding, type VsockEvent, type VsockHandle } from '../src/transport/vsock';

/** The development build of the addon (what `loadVsockBinding()` loads in tests). */
export const VSOCK_ADDON_PATH = path.resolve(__dirname, '../../enclave/native/build/Release/vsock.node');

export const binding: VsockBinding = loadVsockBinding();

/** Every handle a test made: closed after each test whatever its outcome (close is idempotent). */
const opened = new Set<VsockHandle>();
export function track<T extends VsockHandle | VsockHandle[]>(h: T): T {
  for (const x of Array.isArray(h) ? h : [h]) opened.add(x);
  return h;
}
export function closeTracked(): void {
  for (const h of opened) binding.close(h);
  opened.clear();
}

/**
 * Records one handle's events. `until(cond)` resolves once `cond()` holds, checked after every event (and at
 * once), so tests wait for events, not for time; Jest's timeout bounds a wait that never ends.
 */
export class Events {
  readonly log: Array<{ event: VsockEvent; arg: unknown }> = [];
  readonly data: Buffer[] = [];
  private waiters: Array<{ cond: () => boolean; resolve: () => void }> = [];

  constructor(private readonly also?: (event: VsockEvent, arg: unknown) => void) {}

  readonly cb = (event: VsockEvent, arg?: unknown): void => {
    this.log.push({ event, arg });
    if (event === 'data') this.data.push(arg as Buffer);
    this.also?.(event, arg);
    this.check();
  };

  count(event: VsockEvent): number {
    return this.log.filter((e) => e.event === event).length;
  }

  bytes(): number {
    return this.data.reduce((n, b) => n + b.length, 0);
  }

  text(): string {
    return Buffer.concat(this.data).toString();
  }

  until(cond: () => boolean): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ cond, resolve }));
  }

  private check(): void {
    this.waiters = this.waiters.filter((w) => {
      if (!w.cond()) return true;
      w.resolve();
      return false;
    });
  }
}

/** Lets the event loop go round `n` times (each round polls for I/O): "nothing happened meanwhile" checks. */
export async function loopTurns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

/** The error `fn` throws (fails the test if it does not throw). */
export function thrown(fn: () => unknown): NodeJS.ErrnoException & { syscall?: string } {
  try {
    fn();
  } catch (e) {
    return e as NodeJS.ErrnoException;
  }
  throw new Error('expected an exception');
}

let gcFn: (() => void) | null = null;
/** A full garbage collection (as Jest's own --detectOpenHandles does it). */
export function gc(): void {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
    v8.setFlagsFromString('--no-expose-gc');
  }
  gcFn();
}

/** Runs `script` (CommonJS) in a fresh Node process; a process that hangs is killed after 20 s. */
export function runNode(script: string, options: { ulimitFiles?: number } = {}) {
  const res = options.ulimitFiles
    ? spawnSync('bash', ['-c', `ulimit -n ${options.ulimitFiles} && exec "$0" -e "$1"`, process.execPath, script], {
        encoding: 'utf8',
        timeout: 20_000,
      })
    : spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
  const last = res.stdout.trim().split('\n').pop() ?? '';
  let out: unknown = null;
  try {
    out = JSON.parse(last);
  } catch {
    /* not JSON: reported through `stdout` */
  }
  return { status: res.status, signal: res.signal, stderr: res.stderr, stdout: res.stdout, out };
}
