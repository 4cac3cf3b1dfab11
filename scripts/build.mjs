// Bundles each runnable program into dist/<name>.js with esbuild.
// Output is deterministic: no timestamps, no absolute paths, no source maps with local paths.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** One entry per runnable program; add programs here as they appear. @type {{name: string, entry: string}[]} */
export const programs = [
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
  console.log(`built dist/${name}.js (${Date.now() - started} ms)`);
}
if (programs.length === 0) console.log('build: no programs yet');
