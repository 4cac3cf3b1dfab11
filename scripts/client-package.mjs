// Builds the `nitro-keystore-client` package (client/README.md, "The package") into OUTDIR/client-package:
//
//   package.json           client/package.json (the template: name, peers, bin, files) with the version of the
//                          top-level package.json, the entries' `exports`, and as `dependencies` exactly the
//                          packages the bundles and their types import (at the top-level package.json's versions)
//   esm/NAME.js            one ESM bundle per entry (package.json {"type":"module"} beside them)
//   cjs/NAME.js            the same as CommonJS ({"type":"commonjs"})
//   esm/types/, cjs/types/ the entries' type declarations: the main entry's bundled into one file
//                          (dts-bundle-generator: only the declarations it exports and what they use), the
//                          adapters' from tsc, their SDK types imported from `nitro-keystore-client` itself
//   bin/nks.cjs            the CLI's client commands (client/src/cli/client-main.ts)
//   README.md, LICENSE
//
// An entry whose source does not exist is left out (with its `exports` key): an adapter lands by adding its
// file. The adapters import the SDK as `nitro-keystore-client` itself (one copy of KeystoreClient and its errors,
// whichever entry a program loads first). Packages are never bundled: a bare import is a dependency (or a peer
// in the template), and one the top-level package.json does not have fails the build.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { builtinModules } from 'node:module';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { generateDtsBundle } from 'dts-bundle-generator';

/** The package's entries: `exports` subpath, bundle name, source. */
export const CLIENT_ENTRIES = [
  { subpath: '.', name: 'index', source: 'client/src/index.ts' },
  { subpath: './viem', name: 'viem', source: 'client/src/adapters/viem.ts' },
  { subpath: './ethers', name: 'ethers', source: 'client/src/adapters/ethers.ts' },
];
const CLI_SOURCE = 'client/src/cli/client-main.ts';
/** What the adapters take from the package's main entry instead of bundling their own copy. */
const MAIN_MODULES = ['client/src/index.ts', 'client/src/sdk.ts'];
const builtins = new Set(builtinModules);

/** `@scope/name/sub` → `@scope/name`, `name/sub` → `name`. */
export const packageNameOf = (/** @type {string} */ spec) =>
  spec
    .split('/')
    .slice(0, spec.startsWith('@') ? 2 : 1)
    .join('/');
const isBuiltin = (/** @type {string} */ spec) => spec.startsWith('node:') || builtins.has(packageNameOf(spec));

/**
 * @param {{root: string, outdir: string}} options
 * @returns {Promise<{dir: string, entries: string[]}>}
 */
export async function buildClientPackage({ root, outdir }) {
  const dir = path.join(outdir, 'client-package');
  rmSync(dir, { recursive: true, force: true });
  const template = JSON.parse(readFileSync(path.join(root, 'client', 'package.json'), 'utf8'));
  const top = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  const entries = CLIENT_ENTRIES.filter((e) => existsSync(path.join(root, e.source)));
  const [main, ...adapters] = entries;
  if (main?.name !== 'index') throw new Error('client/src/index.ts is missing');

  /** Bare imports of the bundles and declarations: package name → a file that imports it. */
  const imported = new Map();
  const note = (/** @type {string} */ spec, /** @type {string} */ by) => {
    if (!isBuiltin(spec) && packageNameOf(spec) !== template.name && !imported.has(packageNameOf(spec)))
      imported.set(packageNameOf(spec), by);
  };
  const mainFiles = new Set(MAIN_MODULES.map((p) => path.join(root, p)));
  /** @type {import('esbuild').Plugin} */
  const selfReference = {
    name: 'nitro-keystore-client-self-reference',
    setup(b) {
      b.onResolve({ filter: /^\.\.?\// }, (args) => {
        const base = path.resolve(args.resolveDir, args.path);
        const hit = [base, `${base}.ts`, path.join(base, 'index.ts')].some((f) => mainFiles.has(f));
        return hit ? { path: template.name, external: true } : undefined;
      });
    },
  };
  const common = /** @type {const} */ ({
    absWorkingDir: root,
    bundle: true,
    platform: 'node',
    target: 'node20',
    packages: 'external',
    legalComments: 'none',
    logLevel: 'warning',
    metafile: true,
  });
  const collect = (/** @type {import('esbuild').Metafile} */ meta) => {
    for (const [file, input] of Object.entries(meta.inputs)) for (const i of input.imports) if (i.external) note(i.path, file);
  };
  for (const format of /** @type {const} */ (['esm', 'cjs'])) {
    const formatDir = path.join(dir, format);
    const groups = [
      { list: [main], plugins: [] },
      { list: adapters, plugins: [selfReference] },
    ];
    for (const { list, plugins } of groups.filter((g) => g.list.length)) {
      const res = await build({
        ...common,
        entryPoints: Object.fromEntries(list.map((e) => [e.name, e.source])),
        outdir: formatDir,
        format,
        plugins,
      });
      collect(res.metafile);
    }
    writeFileSync(path.join(formatDir, 'package.json'), `${JSON.stringify({ type: format === 'esm' ? 'module' : 'commonjs' })}\n`);
  }
  const cli = path.join(dir, 'bin', 'nks.cjs');
  collect(
    (
      await build({
        ...common,
        entryPoints: [CLI_SOURCE],
        outfile: cli,
        format: 'cjs',
        define: { NKS_CLIENT_VERSION: JSON.stringify(top.version) },
        banner: { js: '#!/usr/bin/env node' },
      })
    ).metafile,
  );
  chmodSync(cli, 0o755);

  for (const format of ['esm', 'cjs']) mkdirSync(path.join(dir, format, 'types'), { recursive: true });
  const typeFiles = emitDeclarations(root, main, adapters, template.name);
  for (const [rel, text] of typeFiles) {
    for (const { fileName } of specifiers(text)) if (!fileName.startsWith('.')) note(fileName, `${rel} (declarations)`);
    for (const format of ['esm', 'cjs']) {
      const file = path.join(dir, format, 'types', rel);
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, text);
    }
  }

  /** @type {Record<string, string>} */
  const dependencies = {};
  /** @type {Record<string, string>} */
  const peerDependencies = {};
  for (const [name, by] of [...imported].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const version = top.dependencies?.[name] ?? top.devDependencies?.[name];
    if (!version) throw new Error(`the client package imports ${name} (${by}), which the top-level package.json does not have`);
    const peer = template.peerDependencies?.[name];
    if (peer) {
      const tested = version.split('.').map(Number);
      const min = /^\^(\d+)\.(\d+)\.(\d+)$/.exec(peer)?.slice(1).map(Number);
      const order = min?.map((n, i) => Math.sign((tested[i] ?? 0) - n)).find((d) => d !== 0) ?? 0;
      const satisfied = min !== undefined && tested[0] === min[0] && order >= 0;
      if (!satisfied) throw new Error(`client/package.json: peer ${name} "${peer}" (a ^x.y.z range) must admit the tested ${version}`);
      peerDependencies[name] = peer;
    } else {
      if (top.dependencies?.[name] === undefined)
        throw new Error(`the client package imports ${name} (${by}), a devDependency of the top level`);
      dependencies[name] = version;
    }
  }
  const peerMeta = Object.fromEntries(Object.entries(template.peerDependenciesMeta ?? {}).filter(([name]) => name in peerDependencies));

  /** @type {Record<string, unknown>} */
  const exportsMap = {};
  for (const e of entries) {
    const types = (/** @type {string} */ format) => `./${format}/types/${e.source.replace(/\.ts$/, '.d.ts')}`;
    exportsMap[e.subpath] = {
      import: { types: types('esm'), default: `./esm/${e.name}.js` },
      require: { types: types('cjs'), default: `./cjs/${e.name}.js` },
    };
  }
  exportsMap['./package.json'] = './package.json';
  const manifest = {
    name: template.name,
    version: top.version,
    description: template.description,
    license: template.license,
    keywords: template.keywords,
    engines: template.engines,
    // Here, not in client/package.json: esbuild would read it there while bundling the server's programs too.
    sideEffects: false,
    main: './cjs/index.js',
    types: `./cjs/types/${main.source.replace(/\.ts$/, '.d.ts')}`,
    exports: exportsMap,
    bin: template.bin,
    files: template.files,
    dependencies,
    ...(Object.keys(peerDependencies).length ? { peerDependencies } : {}),
    ...(Object.keys(peerMeta).length ? { peerDependenciesMeta: peerMeta } : {}),
  };
  writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  copyFileSync(path.join(root, 'client', 'README.md'), path.join(dir, 'README.md'));
  copyFileSync(path.join(root, 'LICENSE'), path.join(dir, 'LICENSE'));
  return { dir, entries: entries.map((e) => e.subpath) };
}

/**
 * The module specifiers of a declaration file (imports, re-exports, `import('…')` types, references), as
 * TypeScript reads them (not those in comments), each with its position in `text` (quotes excluded).
 * @param {string} text
 */
function specifiers(text) {
  const info = ts.preProcessFile(text, true, true);
  // An import's pos is its opening quote; a reference directive's, its first character.
  return [...info.importedFiles, ...info.typeReferenceDirectives].map((f) => {
    const pos = text.slice(f.pos, f.end) === f.fileName ? f.pos : f.pos + 1;
    if (text.slice(pos, pos + f.fileName.length) !== f.fileName) throw new Error(`${f.fileName} is not where TypeScript said`);
    return { fileName: f.fileName, pos, end: pos + f.fileName.length };
  });
}

/**
 * The entries' declarations as package-relative `.d.ts` path (client/src/…) → text. The main entry's are one file
 * (dts-bundle-generator; it imports only packages). The adapters' come from tsc --emitDeclarationOnly: their
 * imports of the SDK become `packageName` (the same declarations the main entry has: a KeystoreClient from it is
 * the adapters' KeystoreClient), and any other file of this repository they reach comes along, its imports
 * rewritten to relative `.js` specifiers (what `moduleResolution` node16 needs in ESM and accepts in CommonJS).
 * @param {string} root
 * @param {{source: string}} main
 * @param {{source: string}[]} adapters
 * @param {string} packageName
 * @returns {Map<string, string>}
 */
function emitDeclarations(root, main, adapters, packageName) {
  /** @type {Map<string, string>} */
  const files = new Map();
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'nks-client-types-'));
  try {
    const tsconfig = path.join(tmp, 'tsconfig.json');
    const out = path.join(tmp, 'out');
    writeFileSync(
      tsconfig,
      JSON.stringify({
        extends: path.join(root, 'tsconfig.base.json'),
        compilerOptions: {
          noEmit: false,
          declaration: true,
          emitDeclarationOnly: true,
          outDir: out,
          rootDir: root,
          types: ['node'],
          typeRoots: [path.join(root, 'node_modules', '@types')],
        },
        files: [main, ...adapters].map((e) => path.join(root, e.source)),
      }),
    );
    const [bundled] = generateDtsBundle(
      [{ filePath: path.join(root, main.source), output: { noBanner: true, exportReferencedTypes: false } }],
      {
        preferredConfigPath: tsconfig,
      },
    );
    files.set(main.source.replace(/\.ts$/, '.d.ts'), /** @type {string} */ (bundled));
    if (!adapters.length) return files;

    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const res = spawnSync(process.execPath, [tsc, '-p', tsconfig], { cwd: root, encoding: 'utf8' });
    if (res.status !== 0) throw new Error(`tsc (client package declarations) failed:\n${res.stdout}${res.stderr}`);
    const mainDeclarations = new Set(MAIN_MODULES.map((m) => m.replace(/\.ts$/, '.d.ts')));
    const pending = adapters.map((e) => e.source.replace(/\.ts$/, '.d.ts'));
    while (pending.length) {
      const rel = /** @type {string} */ (pending.pop());
      if (files.has(rel)) continue;
      let text = readFileSync(path.join(out, rel), 'utf8');
      for (const { fileName: spec, pos, end } of specifiers(text).sort((a, b) => b.pos - a.pos)) {
        let target;
        if (spec.startsWith('@nks/shared/')) target = path.join('shared', 'src', spec.slice('@nks/shared/'.length));
        else if (spec.startsWith('.')) target = path.join(path.dirname(rel), spec);
        else continue;
        const file = [`${target}.d.ts`, path.join(target, 'index.d.ts')].find((f) => existsSync(path.join(out, f)));
        if (!file) throw new Error(`${rel}: no declarations for ${spec}`);
        let replacement;
        if (mainDeclarations.has(file)) replacement = packageName;
        else {
          pending.push(file);
          replacement = path.relative(path.dirname(rel), file).replace(/\.d\.ts$/, '.js');
          if (!replacement.startsWith('.')) replacement = `./${replacement}`;
        }
        text = text.slice(0, pos) + replacement + text.slice(end);
      }
      files.set(rel, text);
    }
    return files;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
