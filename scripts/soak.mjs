// `npm run test:soak [-- OPTIONS] [-- JEST ARGS]`: runs the whole Jest suite N times in a row while a bounded
// CPU-heavy background load runs, stops at the first failing run, and ends with the line `N passed, M failed`.
// It always stops by itself: every run has a time limit, and the load ends with the soak (or at its own cap).
//
//   --runs N            runs (default 20)
//   --load N            background spinner processes, each keeping one CPU busy (default 1)
//   --run-timeout S     seconds a run may take before it is killed and counted as failed (default 900)
//   --keep-going        do not stop at the first failure
//   --no-build          use the existing dist/ (default: npm run build once first, as npm test would)
//   -- ARGS             passed to jest (e.g. -- --detectOpenHandles, or -- parent/test)
//
// Not part of CI. Each run's output goes to a log file in a temporary directory, named in the report.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const cut = argv.indexOf('--');
const own = cut >= 0 ? argv.slice(0, cut) : argv;
const jestArgs = cut >= 0 ? argv.slice(cut + 1) : [];
const { values } = parseArgs({
  args: own,
  options: {
    runs: { type: 'string', default: '20' },
    load: { type: 'string', default: '1' },
    'run-timeout': { type: 'string', default: '900' },
    'keep-going': { type: 'boolean', default: false },
    'no-build': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});
if (values.help) {
  console.log('usage: node scripts/soak.mjs [--runs N] [--load N] [--run-timeout S] [--keep-going] [--no-build] [-- JEST ARGS]');
  process.exit(0);
}
/** @type {(name: string, v: string | undefined, min: number, max: number) => number} */
const int = (name, v, min, max) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`soak: --${name} must be an integer in [${min}, ${max}]`);
    process.exit(2);
  }
  return n;
};
const runs = int('runs', values.runs, 1, 1000);
const loadProcs = int('load', values.load, 0, 64);
const runTimeoutMs = int('run-timeout', values['run-timeout'], 10, 24 * 3600) * 1000;

const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-soak-'));
/** @param {number} ms */
const fmt = (ms) => `${Math.floor(ms / 60_000)}m${String(Math.round((ms % 60_000) / 1000)).padStart(2, '0')}s`;
/** @param {string} line */
const say = (line) => process.stdout.write(`${line}\n`);

/**
 * A spinner keeps one CPU busy until the soak ends. It stops by itself at its cap (every run's limit plus a
 * margin), or as soon as this process is gone (its parent pid changes), so it can never outlive the soak.
 */
const loadCapMs = runs * runTimeoutMs + 10 * 60_000;
const SPINNER = `
const end = Date.now() + ${loadCapMs};
const parent = process.ppid;
let x = 0;
while (Date.now() < end && process.ppid === parent) {
  for (let i = 0; i < 2e6; i++) x = (x * 1103515245 + 12345) % 2147483648;
}
`;
/** @type {import('node:child_process').ChildProcess[]} */
const spinners = [];
const stopLoad = () => {
  for (const s of spinners.splice(0)) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
};

/** @type {import('node:child_process').ChildProcess | null} */
let current = null; // the running jest child
let interrupted = false;
/** @param {NodeJS.Signals} [signal] */
const killCurrent = (signal = 'SIGKILL') => {
  if (!current || current.exitCode !== null || current.signalCode !== null) return;
  try {
    process.kill(-(/** @type {number} */ (current.pid)), signal); // its whole process group: jest, its workers, every program a test started
  } catch {
    current.kill(signal);
  }
};
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    interrupted = true;
    killCurrent('SIGTERM');
    setTimeout(() => killCurrent('SIGKILL'), 5000).unref();
  });
}
process.on('exit', () => {
  killCurrent();
  stopLoad();
});

/**
 * One `npx jest` run in its own process group, output to `log`; resolves with its outcome.
 * @param {string} log
 * @returns {Promise<{ ok: boolean, code: number | null, signal: string | null, timedOut: boolean, ms: number }>}
 */
function runJest(log) {
  return new Promise((resolve) => {
    const out = fs.openSync(log, 'w');
    const started = Date.now();
    const child = spawn('npx', ['jest', ...jestArgs], {
      cwd: root,
      stdio: ['ignore', out, out],
      detached: true,
      env: { ...process.env, FORCE_COLOR: '0' },
    });
    current = child;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killCurrent('SIGTERM');
      setTimeout(() => killCurrent('SIGKILL'), 10_000).unref();
    }, runTimeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      // Whatever a failed run left behind in its group goes with it.
      try {
        process.kill(-(/** @type {number} */ (child.pid)), 'SIGKILL');
      } catch {
        /* the group is already gone */
      }
      fs.closeSync(out);
      current = null;
      resolve({ ok: code === 0 && !timedOut, code, signal, timedOut, ms: Date.now() - started });
    });
  });
}

/** @param {string} log */
function summaryOf(log) {
  const text = fs.readFileSync(log, 'utf8');
  const tests = /^Tests:\s+(.*)$/m.exec(text)?.[1] ?? 'no summary';
  const failed = [...text.matchAll(/^FAIL (\S+)/gm)].map((m) => m[1]);
  return { text, tests, failed: [...new Set(failed)] };
}

async function main() {
  if (!values['no-build']) {
    say('soak: building (npm run build)');
    const built = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
    if (built.status !== 0) {
      say('soak: the build failed');
      return 2;
    }
  }
  for (let i = 0; i < loadProcs; i++) spinners.push(spawn(process.execPath, ['-e', SPINNER], { stdio: 'ignore' }));
  say(
    `soak: ${runs} runs of npx jest${jestArgs.length ? ` ${jestArgs.join(' ')}` : ''} with ${loadProcs} CPU spinner(s) on ${os.cpus().length} CPUs; logs in ${logDir}`,
  );

  const t0 = Date.now();
  let passed = 0;
  let failed = 0;
  for (let i = 1; i <= runs && !interrupted; i++) {
    const log = path.join(logDir, `run-${String(i).padStart(2, '0')}.log`);
    const r = await runJest(log);
    const s = summaryOf(log);
    if (r.ok) passed += 1;
    else if (!interrupted) failed += 1;
    const what = r.ok
      ? 'passed'
      : interrupted
        ? 'interrupted'
        : r.timedOut
          ? `TIMED OUT after ${fmt(runTimeoutMs)}`
          : `FAILED (exit ${r.code ?? r.signal})`;
    say(`soak: run ${i}/${runs} ${what} in ${fmt(r.ms)}: ${s.tests}${s.failed.length ? `; failing: ${s.failed.join(', ')}` : ''}`);
    if (!r.ok && !interrupted) {
      // The failures as Jest reported them (its summary of failed tests), then where the whole log is.
      const at = s.text.indexOf('Summary of all failing tests');
      const tail = at >= 0 ? s.text.slice(at) : s.text.split('\n').slice(-80).join('\n');
      say(tail.trimEnd());
      say(`soak: full output of run ${i}: ${log}`);
      if (!values['keep-going']) break;
    }
  }
  stopLoad();
  say(`soak: ${passed + failed} of ${runs} runs in ${fmt(Date.now() - t0)}${interrupted ? ' (interrupted)' : ''}; logs in ${logDir}`);
  say(`${passed} passed, ${failed} failed`);
  return failed === 0 && !interrupted && passed === runs ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`soak: ${err?.stack ?? err}`);
    process.exit(2);
  },
);
