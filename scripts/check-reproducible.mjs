// Checks that the enclave build is reproducible: the bytes the enclave image is made of (and so PCR0) must not
// depend on where or by whom they were built.
//
//   node scripts/check-reproducible.mjs [--keep]
//
// Builds what Dockerfile.enclave builds (`scripts/build.mjs --only enclave --outdir … --image-dir …`) twice, in
// two temporary directories of different names and depths, each with its own fresh copy of enclave/native for
// node-gyp (never the shared enclave/native/build), and with different HOME, TMPDIR, LANG/LC_ALL, TZ, umask,
// make parallelism and working directory. Then compares every output file byte for byte (sha256), and checks
// that none embeds a build path (the work directories, their HOME, or this checkout, which both builds
// bundle from). Prints the digests; exits 1 listing the files that differ, 2 if a build fails.
// --keep leaves the two build directories in place for inspection.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { keep: { type: 'boolean', default: false } }, strict: true });

/** The absolute path of the Python node-gyp should use: a shim (pyenv) may depend on the HOME we replace. */
function realPython() {
  for (const candidate of [process.env.PYTHON ?? '', 'python3', 'python'].filter((c) => c !== '')) {
    const res = spawnSync(candidate, ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' });
    if (res.status === 0 && res.stdout.trim()) return res.stdout.trim();
  }
  throw new Error('no Python found for node-gyp');
}

/** @typedef {{ name: string, prefix: string, depth: string[], lang: string, tz: string, umask: string, jobs: string }} Variant */
/** @typedef {{ base: string, work: string, home: string, digests: Map<string, string> }} Built */

/** The two builds differ in everything that should not matter. @type {[Variant, Variant]} */
const variants = [
  { name: 'A', prefix: 'nks-repro-a-', depth: [], lang: 'C.UTF-8', tz: 'UTC0', umask: '022', jobs: '1' },
  { name: 'B', prefix: 'nks-reproducible-build-b-', depth: ['some', 'deeper', 'place'], lang: 'C', tz: 'XST-14', umask: '077', jobs: '2' },
];

/**
 * Files under `dir`, as paths relative to it, sorted.
 * @param {string} dir
 * @param {string} [prefix]
 * @returns {string[]}
 */
function listFiles(dir, prefix = '') {
  return readdirSync(path.join(dir, prefix), { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? listFiles(dir, path.join(prefix, e.name)) : [path.join(prefix, e.name)]))
    .sort();
}

/**
 * @param {Variant} variant
 * @param {string} python
 * @returns {Built}
 */
function build(variant, python) {
  const base = mkdtempSync(path.join(os.tmpdir(), variant.prefix));
  const work = path.join(base, ...variant.depth);
  const dirs = { home: path.join(work, 'home'), tmp: path.join(work, 'tmp'), native: path.join(work, 'src', 'enclave', 'native') };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  // A fresh copy of the addon sources: everything in enclave/native except a previous build.
  cpSync(path.join(root, 'enclave', 'native'), dirs.native, {
    recursive: true,
    filter: (src) => path.basename(src) !== 'build' || path.dirname(src) !== path.join(root, 'enclave', 'native'),
  });
  /** @type {Record<string, string>} */
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    PYTHON: python,
    HOME: dirs.home,
    TMPDIR: dirs.tmp,
    LANG: variant.lang,
    LC_ALL: variant.lang,
    TZ: variant.tz,
    JOBS: variant.jobs,
  };
  // Without Node's headers beside the node binary, node-gyp fetches them into its cache under HOME: point both
  // builds at the usual cache so they use the same headers and need no second download.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (!existsSync(path.join(prefix, 'include', 'node', 'node_version.h')))
    env.npm_config_devdir = path.join(os.homedir(), '.cache', 'node-gyp');
  const args = [
    path.join(root, 'scripts', 'build.mjs'),
    '--only',
    'enclave',
    '--outdir',
    path.join(work, 'out'),
    '--image-dir',
    path.join(work, 'image'),
    '--native-dir',
    dirs.native,
  ];
  const started = Date.now();
  // umask applies to the build and everything it runs.
  const res = spawnSync('/bin/sh', ['-c', `umask ${variant.umask} && exec "$@"`, 'sh', process.execPath, ...args], {
    cwd: work,
    env,
    encoding: 'utf8',
  });
  if (res.status !== 0) {
    process.stderr.write(`build ${variant.name} failed (in ${work}, left for inspection):\n${res.stdout}${res.stderr}`);
    process.exit(2);
  }
  const outputs = ['out', 'image'].flatMap((d) => listFiles(path.join(work, d)).map((f) => path.join(d, f)));
  const digests = new Map(
    outputs.map((f) => [
      f,
      createHash('sha256')
        .update(readFileSync(path.join(work, f)))
        .digest('hex'),
    ]),
  );
  console.log(
    `build ${variant.name}: ${work} (LANG=${variant.lang} TZ=${variant.tz} umask ${variant.umask} jobs ${variant.jobs}), ${Date.now() - started} ms`,
  );
  return { base, work, home: dirs.home, digests };
}

const python = realPython();
const a = build(variants[0], python);
const b = build(variants[1], python);
/** @type {string[]} */
const problems = [];
try {
  const files = [...new Set([...a.digests.keys(), ...b.digests.keys()])].sort();
  if (files.length === 0) problems.push('the builds produced no files');
  for (const f of files) {
    const da = a.digests.get(f);
    const db = b.digests.get(f);
    if (da === undefined || db === undefined) problems.push(`${f}: only built by ${da === undefined ? 'B' : 'A'}`);
    else if (da !== db) problems.push(`${f}: differs\n    A ${da}\n    B ${db}`);
  }
  // Both builds bundle from this checkout, so a path of it in the output would not show as a difference.
  const paths = [root, a.work, b.work, a.home, b.home];
  for (const build of [a, b]) {
    for (const f of build.digests.keys()) {
      const bytes = readFileSync(path.join(build.work, f));
      for (const p of paths) if (bytes.includes(Buffer.from(p))) problems.push(`${f}: contains the build path ${p}`);
    }
  }
  if (problems.length === 0) {
    console.log(`reproducible: ${files.length} files byte-identical across both builds`);
    for (const f of files) console.log(`  ${a.digests.get(f)}  ${f}`);
  } else {
    console.error(`NOT reproducible (${problems.length}):\n  ${[...new Set(problems)].join('\n  ')}`);
    for (const f of files) console.error(`  A ${a.digests.get(f) ?? '-'}  B ${b.digests.get(f) ?? '-'}  ${f}`);
  }
} finally {
  if (values.keep) console.log(`kept: ${a.base} ${b.base}`);
  else for (const d of [a.base, b.base]) rmSync(d, { recursive: true, force: true });
}
process.exit(problems.length === 0 ? 0 : 1);
