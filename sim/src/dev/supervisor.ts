/**
 * Child processes of the local stack: started from dist/, their JSON log lines turned into one readable
 * line each, waited for by log message, and stopped within a bound: SIGTERM, then SIGKILL for whatever has not
 * exited in time (a frozen or slow-draining program never holds the stack up).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };
const COLORS: Record<string, string> = { kms: '36', nsm: '35', enclave: '32', parent: '34' };
const SKIP = new Set(['level', 'time', 'pid', 'name', 'msg', 'hostname', 'component']);

/** `12:00:01.123 parent  INFO  request method=POST route=/v1/keys status=201 ms=3.2` */
export function formatLine(label: string, line: string, color: boolean): string {
  // `parent1`, `enclave2`: an instance's programs take the color of their kind.
  const tag = color ? `\x1b[${COLORS[label.replace(/\d+$/, '')] ?? '37'}m${label.padEnd(7)}\x1b[0m` : label.padEnd(7);
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `${tag} ${line}`;
  }
  const time = typeof entry.time === 'number' ? new Date(entry.time).toISOString().slice(11, 23) : '';
  const level = LEVELS[entry.level as number] ?? String(entry.level ?? '');
  const rest = Object.entries(entry)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ');
  return `${time} ${tag} ${level} ${String(entry.msg ?? '')}${rest ? ` ${rest}` : ''}`;
}

export interface Child {
  label: string;
  process: ChildProcess;
  /** Every output line so far (JSON log entries and plain text alike). */
  lines(): string[];
  /** The first log entry with this message (or for which `msg` is true), once it is printed. */
  waitFor(msg: string | ((entry: Record<string, unknown>) => boolean), timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs` (default STOP_GRACE_MS); resolves once it has. */
  stop(graceMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

/**
 * How long a child of the stack may take to stop after SIGTERM before it is killed. The stack's programs stop
 * in well under this (the dev parent's drain is shorter still, provision.ts); a stopped (SIGSTOP) or stuck one
 * is killed, so Ctrl-C leaves nothing running after about this long.
 */
export const STOP_GRACE_MS = 1200;

/** Whether `pid` is stopped (SIGSTOP, or a debugger's), from its state in /proc/PID/stat (Linux). */
function stoppedProcess(pid: number | undefined): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^[Tt]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

/** Stops every child at once (each as `Child.stop`), all within `graceMs`. */
export async function stopChildren(children: Child[], graceMs = STOP_GRACE_MS): Promise<void> {
  await Promise.all(children.map((c) => c.stop(graceMs)));
}

export function startChild(
  label: string,
  script: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; print: (line: string) => void; color: boolean; cwd?: string },
): Child {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
  const seen: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const waiters: Array<() => void> = [];
  const onLine = (line: string) => {
    raw.push(line);
    try {
      seen.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* plain text (e.g. a startup error) */
    }
    opts.print(formatLine(label, line, opts.color));
    for (const w of waiters.splice(0)) w();
  };
  readline.createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', onLine);
  readline.createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', onLine);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      for (const w of waiters.splice(0)) w();
      resolve(code);
    }),
  );

  return {
    label,
    process: child,
    exited,
    lines: () => [...raw],
    async waitFor(msg, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      const matches = typeof msg === 'string' ? (e: Record<string, unknown>) => e.msg === msg : msg;
      for (;;) {
        const hit = seen.find(matches);
        if (hit) return hit;
        const what = typeof msg === 'string' ? `"${msg}"` : 'the expected log line';
        if (child.exitCode !== null) throw new Error(`${label} exited with code ${child.exitCode} before ${what}`);
        if (Date.now() > until) throw new Error(`${label} did not report ${what} within ${timeoutMs} ms`);
        await new Promise<void>((r) => {
          const t = setTimeout(r, 100);
          waiters.push(() => {
            clearTimeout(t);
            r();
          });
        });
      }
    },
    async stop(graceMs = STOP_GRACE_MS) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      // A stopped (SIGSTOP) process cannot drain: it is killed at once rather than after the grace period.
      child.kill(stoppedProcess(child.pid) ? 'SIGKILL' : 'SIGTERM');
      // SIGKILL also ends a stopped (SIGSTOP) process, which SIGTERM only reaches once it is continued.
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
