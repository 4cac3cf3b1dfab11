/**
 * Running the built programs (dist/*.js) as real processes in tests: start one, wait for a JSON log line,
 * collect its output, stop it (or kill -9 it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** The repository root: found upwards from this file, whether run from sources or from a bundle in dist/. */
function findRoot(): string {
  for (let d = __dirname; d !== path.dirname(d); d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json')) && fs.existsSync(path.join(d, 'scripts', 'build.mjs'))) return d;
  }
  throw new Error(`cannot find the repository root above ${__dirname}`);
}

export const ROOT = findRoot();
export const dist = (name: string) => path.join(ROOT, 'dist', `${name}.js`);

export interface Running {
  child: ChildProcess;
  /** Every stdout and stderr line so far. */
  lines: string[];
  /** Resolves with the first JSON log line for which `match` is true. */
  waitForLog(match: (entry: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Sends `signal` (default SIGTERM) and waits for the exit; a program still running after `killAfterMs` gets SIGKILL. */
  stop(signal?: NodeJS.Signals, killAfterMs?: number): Promise<number | null>;
  exited: Promise<number | null>;
}

/**
 * `keepLines: false` keeps only the first 1,000 lines (enough to see startup), for long benchmark runs.
 * `cpus` runs the program on those CPUs only (taskset), e.g. to give a simulated enclave its own vCPU.
 */
export function startProgram(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  opts: { keepLines?: boolean; cpus?: string } = {},
): Running {
  // NKS_PROFILE_DIR: each program writes a V8 CPU profile there when it exits (npm run bench -- --profile).
  const profile = process.env.NKS_PROFILE_DIR
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env.NKS_PROFILE_DIR}`, `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`]
    : [];
  const argv = [...profile, dist(name), ...args];
  const child = spawn(opts.cpus ? 'taskset' : process.execPath, opts.cpus ? ['-c', opts.cpus, process.execPath, ...argv] : argv, {
    env: { ...process.env, LOG_LEVEL: 'debug', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  const onText = (buf: Buffer) => {
    if (opts.keepLines === false && lines.length >= 1000) return;
    lines.push(...buf.toString('utf8').split('\n').filter(Boolean));
    for (const w of waiters.splice(0)) w();
  };
  let partialOut = '';
  child.stdout?.on('data', (b: Buffer) => {
    const text = partialOut + b.toString('utf8');
    const cut = text.lastIndexOf('\n');
    partialOut = text.slice(cut + 1);
    if (cut >= 0) onText(Buffer.from(text.slice(0, cut + 1)));
  });
  child.stderr?.on('data', onText);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      for (const w of waiters.splice(0)) w();
      resolve(code);
    }),
  );

  const parsed = () =>
    lines.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });

  return {
    child,
    lines,
    exited,
    // Generous: under a loaded machine a program can take several seconds to start; a bound only in the safe direction.
    async waitForLog(match, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const hit = parsed().find(match);
        if (hit) return hit;
        if (child.exitCode !== null)
          throw new Error(`${name} exited (${child.exitCode}) before the expected log line:\n${lines.join('\n')}`);
        if (Date.now() > until) throw new Error(`timed out waiting for a log line from ${name}:\n${lines.join('\n')}`);
        await new Promise<void>((r) => {
          const t = setTimeout(r, 50);
          waiters.push(() => {
            clearTimeout(t);
            r();
          });
        });
      }
    },
    async stop(signal = 'SIGTERM', killAfterMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      // A program that does not stop must not outlive the test (nor keep Jest from exiting).
      const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
