/**
 * The local stack (dist/dev.js) as a test drives it: started in a process group of its own, its INSTANCE and
 * READY lines read, its callers' API reached per instance with the stack's token, stopped with Ctrl-C (and its
 * group killed if it does not stop in time).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './process';

export interface DevInstance {
  index: number;
  url: string;
  parentPid: number;
  enclavePid: number;
}

export interface ApiAnswer {
  /** The HTTP status, or -1 when no answer came (connection refused or reset, or the client's own bound). */
  status: number;
  body: any;
  /** How long the request took, ms. */
  ms: number;
  /** When it was sent (Date.now()). */
  at: number;
  error?: string;
}

export interface DevStack {
  child: ChildProcess;
  dir: string;
  url: string;
  token: string;
  instances: DevInstance[];
  output(): string;
  /** The first match of `re` in the output from now on or before, within `timeoutMs`. */
  waitForOutput(re: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** A caller request to instance `index` with the stack's token (`body`: POST with JSON). */
  api(index: number, pathname: string, init?: { method?: string; body?: unknown; timeoutMs?: number }): Promise<ApiAnswer>;
  /** Ctrl-C; resolves with the exit code. A stack still running after `withinMs` is killed (group) and this throws. */
  stop(withinMs?: number): Promise<number | null>;
}

const INSTANCE_RE = /^INSTANCE (\d+) (http:\/\/\S+) parentPid=(\d+) enclavePid=(\d+)$/gm;

/**
 * Every live process whose command line names `dir` (a stack's leftovers), as `pid args`: read from /proc, as `ps`
 * (procps, not on every machine) would.
 */
export function processesUsing(dir: string): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid || gone(Number(entry))) continue;
    let args: string;
    try {
      args = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    } catch {
      continue; // exited since the listing
    }
    if (args.includes(dir)) found.push(`${entry} ${args}`);
  }
  return found;
}

/** Whether `pid` is gone: no such process, or a zombie (it has exited; only its parent has not reaped it yet). */
export function gone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** The live (not zombie) processes of process group `pgid`, as `pid command`. */
export function liveInGroup(pgid: number): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // pid (comm) state ppid pgrp ...
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z') found.push(`${entry} ${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))}`);
  }
  return found;
}

/** The stack's processes as it lists them: dist/dev.js (dev.pid) and every child in dev.json's `processes`. */
export function stackProcesses(dir: string): Array<{ label: string; pid: number }> {
  const devPid = Number(fs.readFileSync(path.join(dir, 'dev.pid'), 'utf8'));
  const listed = (JSON.parse(fs.readFileSync(path.join(dir, 'dev.json'), 'utf8')) as { processes: Array<{ label: string; pid: number }> })
    .processes;
  return [{ label: 'dev', pid: devPid }, ...listed];
}

/**
 * Starts `dist/dev.js --dir DIR ...args` (or, with `npm`, what `npm run dev` runs: scripts/dev.mjs --no-build; with
 * `npmRun`, `npm run dev -- --no-build …` itself) and resolves once it printed READY.
 */
export async function startDevStack(
  dir: string,
  args: string[],
  opts: { readyWithinMs?: number; npm?: boolean; npmRun?: boolean; env?: NodeJS.ProcessEnv } = {},
): Promise<DevStack> {
  const readyWithinMs = opts.readyWithinMs ?? 180_000;
  const program = opts.npm ? [path.join(ROOT, 'scripts', 'dev.mjs'), '--no-build'] : [path.join(ROOT, 'dist', 'dev.js')];
  const [command, argv] = opts.npmRun
    ? ['npm', ['run', '--silent', 'dev', '--', '--no-build', '--dir', dir, ...args]]
    : [process.execPath, [...program, '--dir', dir, ...args]];
  const child = spawn(command, argv, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
    detached: true, // its own process group: the last resort kills every process of the stack
  });
  let out = '';
  const listeners = new Set<() => void>();
  const more = (d: Buffer) => {
    out += d.toString('utf8');
    for (const l of [...listeners]) l();
  };
  child.stdout?.on('data', more);
  child.stderr?.on('data', more);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const waitForOutput = (re: RegExp, timeoutMs: number) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const m = new RegExp(re.source, re.flags.replace('g', '')).exec(out);
        if (m) {
          done();
          resolve(m);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          done();
          reject(new Error(`dev exited (${child.exitCode ?? child.signalCode}) before printing ${re}:\n${out}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`dev did not print ${re} within ${timeoutMs} ms:\n${out}`));
      }, timeoutMs);
      const onExit = () => check();
      const done = () => {
        clearTimeout(timer);
        listeners.delete(check);
        child.off('exit', onExit);
      };
      listeners.add(check);
      child.on('exit', onExit);
      check();
    });

  const killGroup = () => {
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      /* the group is gone */
    }
  };
  const stop = async (withinMs = 60_000) => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    child.kill('SIGINT');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), withinMs)));
    const first = await Promise.race([exited, late]);
    clearTimeout(timer);
    if (first === 'late') {
      killGroup();
      await exited;
      throw new Error(`dev did not stop within ${withinMs} ms of Ctrl-C:\n${out.slice(-4000)}`);
    }
    return first;
  };

  let ready: RegExpExecArray;
  try {
    ready = await waitForOutput(/^READY (http:\/\/\S+)$/m, readyWithinMs);
  } catch (err) {
    await stop(30_000).catch(() => undefined);
    killGroup();
    throw err;
  }
  const instances = [...out.matchAll(INSTANCE_RE)].map((m) => ({
    index: Number(m[1]),
    url: m[2] as string,
    parentPid: Number(m[3]),
    enclavePid: Number(m[4]),
  }));
  const token = fs.readFileSync(path.join(dir, 'token'), 'utf8').trim();

  const api: DevStack['api'] = async (index, pathname, init = {}) => {
    const instance = instances[index];
    if (!instance) throw new Error(`no instance ${index}`);
    const at = Date.now();
    const method = init.method ?? (init.body === undefined ? 'GET' : 'POST');
    try {
      const res = await fetch(`${instance.url}${pathname}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
        signal: AbortSignal.timeout(init.timeoutMs ?? 30_000),
      });
      const text = await res.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        /* kept as text */
      }
      return { status: res.status, body, ms: Date.now() - at, at };
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      return { status: -1, body: undefined, ms: Date.now() - at, at, error: cause ?? (err as Error).name ?? String(err) };
    }
  };

  return { child, dir, url: ready[1] as string, token, instances, output: () => out, waitForOutput, api, stop };
}
