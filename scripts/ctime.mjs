// npm run test:ctime: the enclave's signing code checked for secret-dependent branches and memory addresses under
// valgrind, as libsecp256k1's own valgrind_ctime_test.c does (docs/SIGNING-CURVE.md, "Checked with valgrind").
//
// 1. Reads the compiler flags and defines node-gyp used for the libsecp256k1 target and the secp256k1 addon from
//    the makefiles it generated from binding.gyp (enclave/native/build/*.target.mk, Release; `npm run build`
//    writes them: the pre-script runs it), so the flags have one definition, binding.gyp plus node-gyp's own.
// 2. Compiles libsecp256k1 (the hash-checked copy the build staged) and the addon's plain-C core
//    (enclave/native/secp256k1_core.c) with exactly those flags plus -g (line numbers in valgrind's report; GCC's
//    -g does not change the code), and checks each object's .text is byte-identical to the addon's object.
// 3. Links them with test/ctime/valgrind_ctime.c, runs it under `valgrind --error-exitcode=1 --track-origins=yes`,
//    and compares every report (function, file:line, kind) with test/ctime/known-findings.txt: a report not
//    listed fails, and so does a listed one no longer reported (the list must describe this source exactly).
// 4. Builds the harness twice more with a deliberately secret-dependent branch and a secret-indexed load
//    (NKS_CTIME_INJECT=1, 2) and fails unless valgrind reports each: the check is shown able to fail every run.
//
// NKS_CTIME_CFLAGS="..." appends flags to both compiles (an experiment: e.g. "-O2" or "-UUSE_ASM_X86_64"); the
// code then differs from the addon's, so the .text comparison is skipped and the run says so.
//
// Without valgrind, its headers or a C compiler it skips, naming the Debian packages, unless CI or
// NKS_CTIME_REQUIRED=1 is set (.ci/run sets it and installs them): then it fails.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(root, 'enclave', 'native');
const buildDir = path.join(nativeDir, 'build');
const harness = path.join(root, 'test', 'ctime', 'valgrind_ctime.c');
const knownFile = path.join(root, 'test', 'ctime', 'known-findings.txt');
const required = process.env.NKS_CTIME_REQUIRED === '1' || Boolean(process.env.CI);

/** @param {string} msg */
function fail(msg) {
  console.error(`test:ctime: FAILED: ${msg}`);
  process.exit(1);
}

/**
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ cwd?: string, allowFail?: boolean }} [opts]
 */
function run(cmd, args, opts = {}) {
  const res = spawnSync(cmd, args, { cwd: opts.cwd ?? root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (res.error) fail(`${cmd}: ${res.error.message}`);
  if (res.status !== 0 && !opts.allowFail) fail(`${cmd} ${args.join(' ')} exited ${res.status}:\n${res.stdout}${res.stderr}`);
  return res;
}

// --- tools ---------------------------------------------------------------------------------------------------
const cc = process.env.CC || 'cc';
const has = (/** @type {string} */ cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
const missing = [];
if (!has(cc)) missing.push('gcc libc6-dev (a C compiler)');
if (!has('objcopy')) missing.push('binutils (objcopy)');
if (!has('valgrind') || !existsSync('/usr/include/valgrind/memcheck.h')) missing.push('valgrind (the tool and valgrind/memcheck.h)');
if (missing.length) {
  const msg = `needs the Debian packages ${missing.join(', ')}: apt-get install valgrind gcc libc6-dev binutils`;
  if (required) fail(msg);
  console.log(`test:ctime: SKIPPED: ${msg}`);
  process.exit(0);
}

// --- flags from node-gyp's makefiles ----------------------------------------------------------------------------
/**
 * The words of `NAME := a \ b \ c` in a gyp-generated makefile, $(srcdir) replaced by the addon directory.
 * @param {string} mk
 * @param {string} name
 */
function makeVar(mk, name) {
  const lines = mk.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`${name} :=`));
  if (start < 0) fail(`${name} not found in a makefile node-gyp generated`);
  const words = [];
  for (let i = start; i < lines.length; i++) {
    const line = /** @type {string} */ (lines[i]);
    const body = i === start ? line.slice(`${name} :=`.length) : line;
    const cont = body.trimEnd().endsWith('\\');
    words.push(
      ...body
        .replace(/\\\s*$/, '')
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    );
    if (!cont) break;
  }
  return words.map((w) => w.replace(/^'(.*)'$/, '$1').replaceAll('$(srcdir)', nativeDir));
}

/** @param {string} target */
function targetFlags(target) {
  const file = path.join(buildDir, `${target}.target.mk`);
  if (!existsSync(file)) fail(`${path.relative(root, file)} is missing: run npm run build first`);
  const mk = readFileSync(file, 'utf8');
  return ['DEFS_Release', 'INCS_Release', 'CFLAGS_Release', 'CFLAGS_C_Release'].flatMap((v) => makeVar(mk, v));
}

const extra = (process.env.NKS_CTIME_CFLAGS ?? '').split(/\s+/).filter(Boolean);
const libFlags = [...targetFlags('libsecp256k1'), ...extra];
const addonFlags = [...targetFlags('secp256k1'), ...extra];
const objDir = path.join(buildDir, 'Release', 'obj.target');
const addonObjects = {
  lib: path.join(objDir, 'libsecp256k1', 'libsecp256k1', 'src', 'secp256k1.o'),
  core: path.join(objDir, 'secp256k1', 'secp256k1_core.o'),
};
for (const f of Object.values(addonObjects)) if (!existsSync(f)) fail(`${path.relative(root, f)} is missing: run npm run build first`);

const tmp = mkdtempSync(path.join(os.tmpdir(), 'nks-ctime-'));
try {
  // Compiled from the addon directory, as node-gyp does (its -ffile-prefix-map and relative paths then match).
  const lib = path.join(tmp, 'lib.o');
  const core = path.join(tmp, 'core.o');
  run(cc, [...libFlags, '-g', '-c', 'libsecp256k1/src/secp256k1.c', '-o', lib], { cwd: nativeDir });
  run(cc, [...addonFlags, '-g', '-c', 'secp256k1_core.c', '-o', core], { cwd: nativeDir });
  const text = (/** @type {string} */ obj) => {
    const out = path.join(tmp, `${path.basename(obj)}.text`);
    run('objcopy', ['-O', 'binary', '--only-section=.text', obj, out]);
    return readFileSync(out);
  };
  for (const [ours, theirs] of extra.length
    ? []
    : [
        [lib, addonObjects.lib],
        [core, addonObjects.core],
      ]) {
    if (!text(/** @type {string} */ (ours)).equals(text(/** @type {string} */ (theirs)))) {
      fail(
        `the code compiled here differs from the addon's ${path.relative(root, /** @type {string} */ (theirs))}: the flags were not read right`,
      );
    }
  }
  const optLevel = [...libFlags].reverse().find((f) => /^-O/.test(f));
  const asm = libFlags.includes('-DUSE_ASM_X86_64=1') && !extra.includes('-UUSE_ASM_X86_64') ? 'x86-64 assembly on' : 'x86-64 assembly off';
  console.log(
    extra.length
      ? `test:ctime: EXPERIMENT with NKS_CTIME_CFLAGS=${extra.join(' ')} (effective ${optLevel}, ${asm}): not the addon's code`
      : `test:ctime: libsecp256k1 and secp256k1_core.c compiled as node-gyp compiles them (effective ${optLevel}, ${asm}); .text identical to the addon's objects`,
  );

  /** @param {number} inject */
  const findings = (inject) => {
    const obj = path.join(tmp, `harness${inject}.o`);
    const exe = path.join(tmp, `harness${inject}`);
    const defs = inject ? [`-DNKS_CTIME_INJECT=${inject}`] : [];
    run(cc, [...addonFlags, ...defs, '-g', `-I${nativeDir}`, '-c', harness, '-o', obj], { cwd: nativeDir });
    run(cc, ['-pthread', obj, core, lib, '-o', exe]);
    const res = run('valgrind', ['--error-exitcode=1', '--track-origins=yes', '--num-callers=4', exe], { allowFail: true });
    if (!res.stdout.includes('rounds done'))
      fail(`the harness did not run to completion (exit ${res.status}):\n${res.stdout}${res.stderr}`);
    if (res.status !== 0 && res.status !== 1) fail(`valgrind exited ${res.status}:\n${res.stderr}`);
    return { status: res.status, reports: parseReports(res.stderr), log: res.stderr };
  };

  const known = readKnown();
  const base = findings(0);
  const seen = new Set(base.reports.map((r) => r.key));
  const unexpected = base.reports.filter((r) => !known.has(r.key));
  const gone = [...known.keys()].filter((k) => !seen.has(k));
  for (const r of base.reports) {
    const k = known.get(r.key);
    console.log(`  ${k?.cls ?? 'NEW'}: ${r.key}${k ? ` (${k.why})` : ''}`);
  }
  if (base.status !== 0 && base.reports.length === 0) fail(`valgrind reported errors it could not be parsed:\n${base.log}`);
  if (unexpected.length) {
    fail(
      `valgrind reports secret-dependent code not in ${path.relative(root, knownFile)}:\n  ${unexpected.map((r) => r.key).join('\n  ')}\n${base.log}`,
    );
  }
  if (gone.length) fail(`listed in ${path.relative(root, knownFile)} but no longer reported (update the list):\n  ${gone.join('\n  ')}`);
  const open = base.reports.filter((r) => known.get(r.key)?.cls === 'open');
  console.log(
    `test:ctime: ${base.reports.length} reports, all listed in ${path.relative(root, knownFile)}` +
      (open.length ? `; ${open.length} OPEN (a secret-dependent branch in the signing path: docs/SIGNING-CURVE.md)` : ''),
  );

  for (const [inject, what] of [
    [1, 'a branch on the secret'],
    [2, 'a table lookup indexed by the secret'],
  ]) {
    const run2 = findings(/** @type {number} */ (inject));
    const caught = run2.reports.filter((r) => r.fn.startsWith('inject_leak') && !known.has(r.key));
    if (run2.status !== 1 || caught.length === 0) fail(`valgrind did not report ${what} added to the harness: the check cannot fail`);
    console.log(`test:ctime: self-check: ${what} is reported (${caught.map((r) => r.key).join('; ')})`);
  }
  console.log('test:ctime: passed');
} finally {
  if (!process.env.NKS_CTIME_KEEP) rmSync(tmp, { recursive: true, force: true });
}

/**
 * valgrind's error blocks: the first line names the kind, the first frame the function and line.
 * @param {string} log
 */
function parseReports(log) {
  /** @type {{ key: string, fn: string }[]} */
  const out = [];
  const lines = log.split('\n').map((l) => l.replace(/^==\d+== ?/, ''));
  for (let i = 0; i < lines.length; i++) {
    const kind = /** @type {string} */ (lines[i]);
    if (
      !/^(Conditional jump or move depends on uninitialised value|Use of uninitialised value of size|Syscall param|Invalid (read|write))/.test(
        kind,
      )
    )
      continue;
    const frame = /^\s+at 0x[0-9A-F]+: (\S+) \(([^)]+)\)/.exec(lines[i + 1] ?? '');
    const fn = frame?.[1] ?? '?';
    out.push({ key: `${fn} ${frame?.[2] ?? '?'}: ${kind.replace(/\(s\)$/, '')}`, fn });
  }
  return [...new Map(out.map((r) => [r.key, r])).values()];
}

function readKnown() {
  /** @type {Map<string, { cls: string, why: string }>} */
  const known = new Map();
  for (const line of readFileSync(knownFile, 'utf8').split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const m = /^(public|unreachable|open) \| ([^|]+?) \| (.+)$/.exec(line);
    if (!m) fail(`${path.relative(root, knownFile)}: not "public|unreachable|open | REPORT | WHY": ${line}`);
    known.set(/** @type {string} */ (m?.[2]), { cls: /** @type {string} */ (m?.[1]), why: /** @type {string} */ (m?.[3]) });
  }
  return known;
}
