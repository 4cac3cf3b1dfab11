// Type-checks every code folder against its own strict tsconfig (no emit).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const folders = ['shared', 'enclave', 'parent', 'client', 'sim', 'scripts', 'test'];
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');

/** A folder whose code has not landed yet has nothing to check (tsc would fail on "no inputs"). */
/** @param {string} dir */
function hasTypeScript(dir) {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).some(
    (e) => e.isFile() && /\.(ts|mjs)$/.test(e.name) && !e.parentPath.includes('node_modules'),
  );
}

let failed = 0;
for (const folder of folders) {
  const project = path.join(root, folder, 'tsconfig.json');
  if (!existsSync(project) || !hasTypeScript(path.join(root, folder))) continue;
  const started = Date.now();
  const res = spawnSync(process.execPath, [tsc, '-p', project], { stdio: 'inherit' });
  const ok = res.status === 0;
  if (!ok) failed++;
  console.log(`typecheck ${folder}: ${ok ? 'ok' : 'FAILED'} (${Date.now() - started} ms)`);
}
process.exit(failed ? 1 : 0);
