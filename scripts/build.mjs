// Bundles each runnable program into dist/<name>.js with esbuild.
// Output is deterministic: no timestamps, no absolute paths, no source maps with local paths.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** One entry per runnable program; add programs here as they appear. @type {{name: string, entry: string}[]} */
export const programs = [
  { name: 'enclave', entry: 'enclave/src/main.ts' },
  { name: 'parent', entry: 'parent/src/main.ts' },
  { name: 'cli', entry: 'client/src/cli/main.ts' },
  { name: 'dev', entry: 'sim/src/dev/main.ts' },
  { name: 'kms-emulator', entry: 'sim/src/kms/main.ts' },
  { name: 'nsm-sim', entry: 'sim/src/nsm/main.ts' },
];

/** Native addons stay outside the bundle and are loaded at run time. */
// cbor-extract is cbor-x's optional native decoder; cbor-x falls back to JavaScript without it.
const external = ['node-vsock-linux-x64-gnu', 'better-sqlite3', 'cbor-extract'];

mkdirSync(path.join(root, 'dist'), { recursive: true });
for (const { name, entry } of programs) {
  const started = Date.now();
  await build({
    absWorkingDir: root,
    entryPoints: [entry],
    outfile: `dist/${name}.js`,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    external,
    legalComments: 'none',
    logLevel: 'warning',
    banner: { js: '#!/usr/bin/env node' },
  });
  chmodSync(path.join(root, 'dist', `${name}.js`), 0o755);
  console.log(`built dist/${name}.js (${Date.now() - started} ms)`);
}

// The NSM addon (enclave/native) is compiled with node-gyp against this Node's own headers when they are
// installed beside it (no download); otherwise node-gyp uses its configured or cached headers.
const nativeDir = path.join(root, 'enclave', 'native');
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
