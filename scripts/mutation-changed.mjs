// Mutation testing of only the security-critical modules that a change touches (for CI; docs/MUTATION.md):
//
//   node scripts/mutation-changed.mjs [--base REV | --since-measured | --all | --modules A,B] [--budget-minutes N]
//
// Modules: MUTATED in stryker.config.mjs. Changed: `git diff --name-only REV` (REV to the working tree, so
// uncommitted edits count too; default REV: HEAD~1). --since-measured (CI): REV is MEASURED_AT, the commit the
// floors were measured at, so every module changed since its floor was set is checked against it; without that
// commit in the clone, every module is. Runs `stryker run --mutate <changed modules>` (no global
// break threshold: a subset's overall score is not comparable), then checks each module's own score against
// its floor in MODULE_FLOORS and lists the survivors. Exit 0: nothing to test or every floor held; 1: a module
// scored below its floor, or Stryker failed; 2: bad arguments or no such REV; 3: the time budget ran out.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { MEASURED_AT, MODULE_FLOORS, MUTATED, REPORT_JSON } from '../stryker.config.mjs';
import { sameCode } from './same-code.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    base: { type: 'string' },
    'since-measured': { type: 'boolean', default: false },
    all: { type: 'boolean', default: false },
    modules: { type: 'string' },
    'budget-minutes': { type: 'string' },
  },
  strict: true,
});
const budgetMinutes = values['budget-minutes'] === undefined ? undefined : Number(values['budget-minutes']);
if (budgetMinutes !== undefined && !(budgetMinutes > 0)) {
  console.error('--budget-minutes must be a positive number');
  process.exit(2);
}

/** @param {string[]} args */
function git(args) {
  const res = spawnSync('git', args, { cwd: root, encoding: 'utf8' });
  return { ok: res.status === 0, out: res.stdout.trim(), err: res.stderr.trim() };
}

/**
 * Whether `file` compiles to the same code at `rev` as in the working tree (scripts/same-code.mjs).
 * @param {string} rev
 * @param {string} file
 */
function sameCodeSince(rev, file) {
  const before = git(['show', `${rev}:${file}`]);
  if (!before.ok || !existsSync(path.join(root, file))) return false;
  return sameCode(before.out, readFileSync(path.join(root, file), 'utf8'));
}

/** @type {string[]} */
let modules;
let all = values.all;
if (values['since-measured']) {
  if (MEASURED_AT && git(['rev-parse', '--verify', '--quiet', `${MEASURED_AT}^{commit}`]).ok) values.base = MEASURED_AT;
  else {
    console.log(`mutation: the floors' commit (MEASURED_AT: ${MEASURED_AT ?? 'none'}) is not in this clone; testing every module`);
    all = true;
  }
}
if (all) {
  modules = [...MUTATED];
} else if (values.modules !== undefined) {
  modules = values.modules.split(',').filter(Boolean);
  const unknown = modules.filter((m) => !MUTATED.includes(m));
  if (unknown.length) {
    console.error(`mutation: not under mutation testing (MUTATED in stryker.config.mjs): ${unknown.join(', ')}`);
    process.exit(2);
  }
} else {
  const base = values.base ?? 'HEAD~1';
  const resolved = git(['rev-parse', '--verify', '--quiet', `${base}^{commit}`]);
  if (!resolved.ok) {
    console.error(`mutation: cannot resolve the base revision ${base} (a shallow clone? fetch more history, or pass --all)`);
    process.exit(2);
  }
  const diff = git(['diff', '--name-only', resolved.out, '--']);
  if (!diff.ok) {
    console.error(`mutation: git diff failed: ${diff.err}`);
    process.exit(2);
  }
  const changed = new Set(diff.out.split('\n').filter(Boolean));
  const touched = MUTATED.filter((m) => changed.has(m));
  // A module whose compiled code is the same (only formatting or comments changed) keeps its measured score.
  const layoutOnly = touched.filter((m) => sameCodeSince(resolved.out, m));
  modules = touched.filter((m) => !layoutOnly.includes(m));
  console.log(
    `mutation: ${changed.size} file(s) changed since ${base} (${resolved.out.slice(0, 12)}); ${touched.length} of them under mutation testing`,
  );
  if (layoutOnly.length) console.log(`mutation: formatting or comments only, same code as measured: ${layoutOnly.join(', ')}`);
}
if (modules.length === 0) {
  console.log('mutation: no security-critical module changed; nothing to test');
  process.exit(0);
}
console.log(`mutation: mutating ${modules.join(', ')}`);

const report = path.join(root, REPORT_JSON);
rmSync(report, { force: true });
const started = Date.now();
const stryker = path.join(root, 'node_modules', '@stryker-mutator', 'core', 'bin', 'stryker.js');
const child = spawn(process.execPath, [stryker, 'run', '--mutate', modules.join(',')], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, NKS_MUTATION_PARTIAL: '1' },
  detached: true, // its own process group, so the budget can end Stryker and every runner and test process it started
});
let overBudget = false;
const budget =
  budgetMinutes === undefined
    ? undefined
    : setTimeout(() => {
        overBudget = true;
        console.error(`mutation: over the ${budgetMinutes}-minute budget; stopping Stryker`);
        try {
          process.kill(-(child.pid ?? 0), 'SIGTERM');
          setTimeout(() => {
            try {
              process.kill(-(child.pid ?? 0), 'SIGKILL');
            } catch {
              // already gone
            }
          }, 30_000).unref();
        } catch {
          // already gone
        }
      }, budgetMinutes * 60_000);
for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.on(sig, () => {
    try {
      process.kill(-(child.pid ?? 0), sig);
    } catch {
      // already gone
    }
  });
}
const code = await new Promise((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
if (budget) clearTimeout(budget);
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
if (overBudget) {
  console.error(
    `mutation: stopped after ${minutes} min (budget ${budgetMinutes} min); run \`npm run test:mutation -- --mutate ${modules.join(',')}\` locally`,
  );
  process.exit(3);
}
if (code !== 0 || !existsSync(report)) {
  console.error(`mutation: Stryker failed (exit ${code}) after ${minutes} min`);
  process.exit(1);
}

/** @typedef {{ line: number, column: number }} Position 1-based, as in Stryker's JSON report */
/** @typedef {{ id: string, mutatorName: string, replacement?: string, status: string, location: { start: Position, end: Position } }} Mutant */
/** @type {{ files: Record<string, { source: string, mutants: Mutant[] }> }} */
const json = JSON.parse(readFileSync(report, 'utf8'));
let failed = 0;
console.log(`\nmutation: per-module scores after ${minutes} min (floor = the measured score in docs/MUTATION.md)`);
for (const m of modules) {
  const file = Object.entries(json.files).find(([name]) => path.resolve(root, name) === path.resolve(root, m))?.[1];
  const lines = (file?.source ?? '').split('\n');
  /** The mutated code as written (its first line). @param {Mutant} x */
  const original = (x) => {
    const { start, end } = x.location;
    const line = lines[start.line - 1] ?? '';
    return line.slice(start.column - 1, end.line === start.line ? end.column - 1 : undefined);
  };
  const short = (/** @type {string} */ t) => (t.length > 70 ? `${t.slice(0, 67)}...` : t);
  const mutants = file?.mutants ?? [];
  const count = (/** @type {string[]} */ ...statuses) => mutants.filter((x) => statuses.includes(x.status)).length;
  const detected = count('Killed', 'Timeout');
  const valid = detected + count('Survived', 'NoCoverage');
  const score = valid === 0 ? 100 : (100 * detected) / valid;
  const floor = MODULE_FLOORS[m] ?? 0;
  const ok = score >= floor;
  if (!ok) failed++;
  console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${m}: ${score.toFixed(2)} (floor ${floor}; ${detected} of ${valid} detected)`);
  for (const s of mutants.filter((x) => x.status === 'Survived' || x.status === 'NoCoverage')) {
    console.log(
      `         ${s.status === 'NoCoverage' ? 'not covered' : 'survived'} ${m}:${s.location.start.line}:${s.location.start.column} ${s.mutatorName}: ${short(original(s))} -> ${short(s.replacement ?? '')}`,
    );
  }
}
if (failed) {
  console.error(
    `mutation: ${failed} module(s) below their floor: kill the new survivors with a test, or explain them in docs/MUTATION.md and lower the floor there and in stryker.config.mjs`,
  );
  process.exit(1);
}
console.log('mutation: every module at or above its floor');
