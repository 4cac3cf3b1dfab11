// Bundles each runnable program into dist/<name>.js with esbuild and compiles the enclave's native addons
// (enclave/native: nsm.node for /dev/nsm, vsock.node for AF_VSOCK, secp256k1.node for signing with
// libsecp256k1) with node-gyp. libsecp256k1's C source comes from the npm package secp256k1 (pinned by the
// lockfile); every file is checked against enclave/native/libsecp256k1.sha256 and only those files are copied
// into <native dir>/libsecp256k1/ before compiling (docs/SIGNING-CURVE.md).
//
//   node scripts/build.mjs [--only NAME[,NAME]] [--outdir DIR] [--image-dir DIR] [--native-dir DIR]
//   node scripts/build.mjs --client-package [--outdir DIR]      (npm run build:client)
//
// --client-package builds only the nitro-keystore-client package, into DIR/client-package
// (scripts/client-package.mjs; client/README.md, "The package").
// --image-dir also assembles the enclave's bare run directory (what Dockerfile.enclave copies):
//   DIR/enclave.js, DIR/native/nsm.node, DIR/native/vsock.node, DIR/native/secp256k1.node
// --native-dir compiles the addons in DIR (a copy of enclave/native) instead of enclave/native itself
// (scripts/check-reproducible.mjs builds in fresh copies).
//
// Output is deterministic: same sources and lockfile, same bytes (no timestamps, absolute paths, random ids
// or source maps), so the enclave's PCR0 can be reproduced from a commit.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { chmodSync, copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { buildClientPackage } from './client-package.mjs';
import { stageLibsecp256k1 } from './libsecp256k1-source.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** One entry per runnable program. @type {{name: string, entry: string}[]} */
const programs = [
  { name: 'enclave', entry: 'enclave/src/main.ts' },
  { name: 'parent', entry: 'parent/src/main.ts' },
  // The SQLite engine's worker thread (parent/src/store/sqlite-engine.ts), loaded beside parent.js and cli.js.
  { name: 'store-worker', entry: 'parent/src/store/sqlite-worker.ts' },
  { name: 'cli', entry: 'client/src/cli/main.ts' },
  { name: 'dev', entry: 'sim/src/dev/main.ts' },
  { name: 'kms-emulator', entry: 'sim/src/kms/main.ts' },
  { name: 'nsm-sim', entry: 'sim/src/nsm/main.ts' },
  { name: 'bench', entry: 'scripts/bench.ts' },
  // Raw curve rates, noble against the enclave's libsecp256k1 addon (scripts/bench-curve.ts; bench.ts uses it too).
  { name: 'bench-curve', entry: 'scripts/bench-curve.ts' },
  { name: 'chaos', entry: 'scripts/chaos.ts' },
];

/** Native addons stay outside the bundles and are loaded at run time. */
// cbor-extract is cbor-x's optional native decoder; cbor-x falls back to JavaScript without it.
// pg-native: pg's optional native binding, never installed (pg's JavaScript client is used).
const external = ['better-sqlite3', 'cbor-extract', 'pg-native'];

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    outdir: { type: 'string' },
    'image-dir': { type: 'string' },
    'native-dir': { type: 'string' },
    'client-package': { type: 'boolean' },
  },
  strict: true,
});
const only = values.only ? values.only.split(',') : null;
const unknown = (only ?? []).filter((n) => !programs.some((p) => p.name === n));
if (unknown.length) throw new Error(`unknown program(s): ${unknown.join(', ')}`);
const outdir = path.resolve(root, values.outdir ?? 'dist');

if (values['client-package']) {
  if (values.only || values['image-dir'] || values['native-dir']) throw new Error('--client-package builds the client package only');
  const started = Date.now();
  const { dir, entries } = await buildClientPackage({ root, outdir });
  console.log(`built ${path.relative(root, dir) || dir} (entries ${entries.join(' ')}; ${Date.now() - started} ms)`);
  process.exit(0);
}

mkdirSync(outdir, { recursive: true });
for (const { name, entry } of programs.filter((p) => !only || only.includes(p.name))) {
  const started = Date.now();
  const outfile = path.join(outdir, `${name}.js`);
  await build({
    absWorkingDir: root,
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    external,
    legalComments: 'none',
    logLevel: 'warning',
    banner: { js: '#!/usr/bin/env node' },
  });
  chmodSync(outfile, 0o755);
  console.log(`built ${path.relative(root, outfile) || outfile} (${Date.now() - started} ms)`);
}

// The API reference page's script (parent/src/api/openapi.ts): Redoc's browser bundle and its licence, copied
// beside parent.js, so a release carries these two files rather than Redoc and its dependencies.
if (!only || only.includes('parent')) {
  const redoc = path.join(root, 'node_modules', 'redoc');
  copyFileSync(path.join(redoc, 'bundles', 'redoc.standalone.js'), path.join(outdir, 'redoc.standalone.js'));
  copyFileSync(path.join(redoc, 'LICENSE'), path.join(outdir, 'redoc.LICENSE'));
}

// The addons (enclave/native) are compiled with node-gyp against this Node's own headers when they are
// installed beside it (no download); otherwise node-gyp uses its configured or cached headers.
const nativeDir = values['native-dir'] ? path.resolve(root, values['native-dir']) : path.join(root, 'enclave', 'native');
const addons = ['nsm', 'vsock', 'secp256k1'];
const addonPath = (/** @type {string} */ name) => path.join(nativeDir, 'build', 'Release', `${name}.node`);
if (!only || only.includes('enclave')) {
  const gyp = path.join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  const nodedir = existsSync(path.join(prefix, 'include', 'node', 'node_version.h')) ? [`--nodedir=${prefix}`] : [];
  const runGyp = (/** @type {string[]} */ args) => {
    const res = spawnSync(process.execPath, [gyp, ...args, ...nodedir, '--loglevel=warn'], { cwd: nativeDir, stdio: 'inherit' });
    if (res.status !== 0) throw new Error(`node-gyp ${args[0]} failed in ${path.relative(root, nativeDir) || nativeDir}`);
  };
  const started = Date.now();
  stageLibsecp256k1({
    manifest: path.join(root, 'enclave', 'native', 'libsecp256k1.sha256'),
    nodeModules: path.join(root, 'node_modules'),
    dest: path.join(nativeDir, 'libsecp256k1'),
  });
  // (Re)configure when there is no Makefile yet or binding.gyp changed since (e.g. a target was added).
  const makefile = path.join(nativeDir, 'build', 'Makefile');
  if (!existsSync(makefile) || statSync(path.join(nativeDir, 'binding.gyp')).mtimeMs > statSync(makefile).mtimeMs) runGyp(['configure']);
  runGyp(['build']);
  for (const name of addons) {
    if (!existsSync(addonPath(name))) throw new Error(`node-gyp did not produce ${addonPath(name)}`);
  }
  console.log(`built ${addons.map((n) => path.relative(root, addonPath(n))).join(', ')} (${Date.now() - started} ms)`);
}

if (values['image-dir']) {
  const dir = path.resolve(root, values['image-dir']);
  mkdirSync(path.join(dir, 'native'), { recursive: true });
  copyFileSync(path.join(outdir, 'enclave.js'), path.join(dir, 'enclave.js'));
  for (const name of addons) copyFileSync(addonPath(name), path.join(dir, 'native', `${name}.node`));
  console.log(`assembled the enclave run directory in ${dir}`);
}
