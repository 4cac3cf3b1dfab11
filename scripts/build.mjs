// Bundles each runnable program into dist/<name>.js with esbuild and compiles the NSM addon with node-gyp.
//
//   node scripts/build.mjs [--only NAME[,NAME]] [--outdir DIR] [--image-dir DIR]
//
// --image-dir also assembles the enclave's bare run directory (what Dockerfile.enclave copies):
//   DIR/enclave.js, DIR/native/nsm.node, DIR/native/node-vsock.linux-x64-gnu.node
//
// Output is deterministic: same sources and lockfile, same bytes (no timestamps, absolute paths, random ids
// or source maps), so the enclave's PCR0 can be reproduced from a commit.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { chmodSync, copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** One entry per runnable program. @type {{name: string, entry: string}[]} */
const programs = [
  { name: 'enclave', entry: 'enclave/src/main.ts' },
  { name: 'parent', entry: 'parent/src/main.ts' },
  { name: 'cli', entry: 'client/src/cli/main.ts' },
  { name: 'dev', entry: 'sim/src/dev/main.ts' },
  { name: 'kms-emulator', entry: 'sim/src/kms/main.ts' },
  { name: 'nsm-sim', entry: 'sim/src/nsm/main.ts' },
  { name: 'bench', entry: 'scripts/bench.ts' },
];

/** Native addons stay outside the bundles and are loaded at run time. */
// cbor-extract is cbor-x's optional native decoder; cbor-x falls back to JavaScript without it.
const external = ['node-vsock-linux-x64-gnu', 'better-sqlite3', 'cbor-extract'];

const { values } = parseArgs({ options: { only: { type: 'string' }, outdir: { type: 'string' }, 'image-dir': { type: 'string' } }, strict: true });
const only = values.only ? values.only.split(',') : null;
const unknown = (only ?? []).filter((n) => !programs.some((p) => p.name === n));
if (unknown.length) throw new Error(`unknown program(s): ${unknown.join(', ')}`);
const outdir = path.resolve(root, values.outdir ?? 'dist');

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

// The NSM addon (enclave/native) is compiled with node-gyp against this Node's own headers when they are
// installed beside it (no download); otherwise node-gyp uses its configured or cached headers.
const nativeDir = path.join(root, 'enclave', 'native');
const nsmAddon = path.join(nativeDir, 'build', 'Release', 'nsm.node');
if (!only || only.includes('enclave')) {
  const gyp = path.join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  const nodedir = existsSync(path.join(prefix, 'include', 'node', 'node_version.h')) ? [`--nodedir=${prefix}`] : [];
  const runGyp = (/** @type {string[]} */ args) => {
    const res = spawnSync(process.execPath, [gyp, ...args, ...nodedir, '--loglevel=warn'], { cwd: nativeDir, stdio: 'inherit' });
    if (res.status !== 0) throw new Error(`node-gyp ${args[0]} failed in enclave/native`);
  };
  const started = Date.now();
  if (!existsSync(path.join(nativeDir, 'build', 'Makefile'))) runGyp(['configure']);
  runGyp(['build']);
  console.log(`built enclave/native/build/Release/nsm.node (${Date.now() - started} ms)`);
}

if (values['image-dir']) {
  const dir = path.resolve(root, values['image-dir']);
  mkdirSync(path.join(dir, 'native'), { recursive: true });
  const vsockAddon = createRequire(path.join(root, 'package.json')).resolve('node-vsock-linux-x64-gnu');
  copyFileSync(path.join(outdir, 'enclave.js'), path.join(dir, 'enclave.js'));
  copyFileSync(nsmAddon, path.join(dir, 'native', 'nsm.node'));
  copyFileSync(vsockAddon, path.join(dir, 'native', 'node-vsock.linux-x64-gnu.node'));
  console.log(`assembled the enclave run directory in ${dir}`);
}
