// libsecp256k1's C source for the enclave's secp256k1 addon (enclave/native/secp256k1.c, docs/SIGNING-CURVE.md):
// taken from the npm package the manifest names (pinned with its integrity hash by package-lock.json), checked
// file by file against the manifest's SHA-256 before anything is compiled, and copied, those files only, into
// the directory node-gyp compiles from (binding.gyp: libsecp256k1/). scripts/build.mjs calls it.
//
// The manifest (enclave/native/libsecp256k1.sha256): `#` comment lines, then `package NAME VERSION SUBDIR`,
// then one `SHA256  PATH` line per file, PATH relative to node_modules/NAME/SUBDIR (sha256sum's format).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * @param {{ manifest: string, nodeModules: string, dest: string }} where
 * @returns {{ package: string, version: string, files: string[] }}
 */
export function stageLibsecp256k1({ manifest, nodeModules, dest }) {
  const name = path.basename(manifest);
  const lines = readFileSync(manifest, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'));
  const header = /^package (\S+) (\S+) (\S+)$/.exec(lines[0] ?? '');
  if (!header) throw new Error(`${name}: the first line must be "package NAME VERSION SUBDIR"`);
  const [, pkg = '', version = '', subdir = ''] = header;
  const pkgDir = path.join(nodeModules, pkg);
  /** @type {{ version?: string }} */
  let installed;
  try {
    installed = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  } catch {
    throw new Error(`libsecp256k1 source: the npm package ${pkg} is not installed (run npm ci)`);
  }
  if (installed.version !== version) {
    throw new Error(`libsecp256k1 source: node_modules/${pkg} is version ${installed.version}, ${name} pins ${version} (run npm ci)`);
  }
  const files = lines.slice(1).map((line) => {
    const m = /^([0-9a-f]{64}) {2}([A-Za-z0-9_.][A-Za-z0-9_./-]*)$/.exec(line);
    if (!m || !m[2] || m[2].split('/').some((part) => part === '..' || part === '.' || part === '')) {
      throw new Error(`${name}: not a "SHA256  PATH" line: ${line}`);
    }
    return { sha256: m[1], file: m[2] };
  });
  if (files.length === 0) throw new Error(`${name}: lists no files`);
  /** @type {string[]} */
  const mismatched = [];
  const contents = files.map(({ sha256, file }) => {
    const from = path.join(pkgDir, subdir, file);
    if (!existsSync(from)) {
      mismatched.push(`${file}: missing`);
      return Buffer.alloc(0);
    }
    const bytes = readFileSync(from);
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== sha256) mismatched.push(`${file}: sha256 ${actual}, expected ${sha256}`);
    return bytes;
  });
  if (mismatched.length) {
    throw new Error(
      `libsecp256k1 source in node_modules/${pkg}/${subdir} does not match ${name}; refusing to compile it:\n  ${mismatched.join('\n  ')}`,
    );
  }
  // Only files that differ are (re)written, so an unchanged source keeps its mtime and make does not recompile
  // it; anything else in the directory is removed, so an #include of an unlisted file cannot compile.
  const wanted = new Set(files.map(({ file }) => path.join(dest, file)));
  const removeOthers = (/** @type {string} */ dir) => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) removeOthers(p);
      else if (!wanted.has(p)) rmSync(p, { force: true });
    }
  };
  removeOthers(dest);
  files.forEach(({ file }, i) => {
    const to = path.join(dest, file);
    const bytes = /** @type {Buffer} */ (contents[i]);
    if (existsSync(to) && readFileSync(to).equals(bytes)) return;
    mkdirSync(path.dirname(to), { recursive: true });
    writeFileSync(to, bytes);
  });
  return { package: pkg, version, files: files.map((f) => f.file) };
}
