#!/usr/bin/env node
/**
 * `npm run bench [-- options]`: builds (npm run build), then runs the benchmark (dist/bench.js) with the options.
 * `--no-build` skips the build and runs what dist/ holds (the benchmark says so; it fails clearly when dist/ has
 * no benchmark). Every other option is the benchmark's own (scripts/bench.ts).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const noBuild = args.includes('--no-build');
const rest = args.filter((a) => a !== '--no-build');
const bench = path.join(root, 'dist', 'bench.js');

if (noBuild) {
  if (!fs.existsSync(bench)) {
    console.error('bench: --no-build, but dist/bench.js does not exist: run `npm run build` first (or leave out --no-build)');
    process.exit(2);
  }
  console.error(`bench: --no-build: running dist/ as built at ${fs.statSync(bench).mtime.toISOString()}`);
} else {
  const built = spawnSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { cwd: root, stdio: 'inherit' });
  if (built.status !== 0) process.exit(built.status ?? 1);
}
const run = spawnSync(process.execPath, [bench, ...rest], { cwd: root, stdio: 'inherit' });
process.exit(run.status ?? (run.signal ? 1 : 0));
