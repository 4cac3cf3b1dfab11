/**
 * The trust boundary in code (docs/ARCHITECTURE.md, "Folders, and what each may import"): enclave/ and parent/
 * never import each other, in either direction; shipped code never imports the simulators; shared/ depends on
 * nothing project-local but itself; client/ only on shared/.
 *
 * Imports are read with the TypeScript compiler's parser (every form: static, side-effect, type-only,
 * re-exports, `import x = require()`, `import()`, `require()`, `import('…')` types) and resolved with its
 * module resolution, so a path is judged by the file it reaches, not by how it is spelled. What each shipped
 * program really contains is read from esbuild's metafile for the same entry points and externals as
 * scripts/build.mjs. A folder with no files, or a rule that sees no import, fails rather than passing empty.
 */
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { build } from 'esbuild';

const root = path.resolve(__dirname, '..');
const compilerOptions: ts.CompilerOptions = {
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  resolveJsonModule: true,
  allowJs: true,
  paths: { '@nks/shared/*': ['./shared/src/*'], '@nks/shared-test/*': ['./shared/test/*'] },
  pathsBasePath: root,
};

function sourceFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.(ts|mts|cts)$/.test(e.name) && !e.name.endsWith('.d.ts'))
    .map((e) => path.join(e.parentPath, e.name));
}

interface FileImports {
  /** Literal module specifiers, in source order. */
  specifiers: string[];
  /** `import(x)` / `require(x)` with a computed argument: unanalysable, so reported. */
  computed: string[];
}

/** Every module a file names, found by walking its syntax tree. */
function importsOf(file: string, text = fs.readFileSync(file, 'utf8')): FileImports {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const specifiers: string[] = [];
  const computed: string[] = [];
  const literal = (n: ts.Node | undefined) => (n && (ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n)) ? n.text : undefined);
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier) {
      const s = literal(node.moduleSpecifier);
      if (s !== undefined) specifiers.push(s);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      const s = literal(node.moduleReference.expression);
      if (s !== undefined) specifiers.push(s);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      const s = literal(node.argument.literal);
      if (s !== undefined) specifiers.push(s);
    } else if (ts.isCallExpression(node)) {
      const callee = node.expression;
      const name =
        callee.kind === ts.SyntaxKind.ImportKeyword
          ? 'import'
          : ts.isIdentifier(callee)
            ? callee.text
            : ts.isPropertyAccessExpression(callee)
              ? callee.getText(sf)
              : '';
      if (
        ['import', 'require', 'require.resolve', 'jest.mock', 'jest.doMock', 'jest.requireActual', 'jest.requireMock'].includes(name) &&
        node.arguments.length > 0
      ) {
        const s = literal(node.arguments[0]);
        if (s !== undefined) specifiers.push(s);
        else if (name === 'import' || name === 'require')
          computed.push(
            `${name}(${node.arguments[0]?.getText(sf)}) at line ${sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1}`,
          );
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return { specifiers, computed };
}

/** The project folder (top-level: enclave, parent, shared, …) a specifier reaches, null for a package or built-in, or 'UNRESOLVED'. */
function targetFolder(file: string, spec: string): string | null {
  const resolved = ts.resolveModuleName(spec, file, compilerOptions, ts.sys).resolvedModule;
  if (!resolved) return spec.startsWith('.') || spec.startsWith('/') ? 'UNRESOLVED' : null;
  const rel = path.relative(root, resolved.resolvedFileName);
  if (resolved.isExternalLibraryImport || rel.startsWith('..') || rel.split(path.sep).includes('node_modules')) return null;
  return rel.split(path.sep)[0] as string;
}

interface Edge {
  from: string;
  spec: string;
  folder: string;
}

function projectEdges(file: string, text?: string): { edges: Edge[]; problems: string[] } {
  const { specifiers, computed } = importsOf(file, text);
  const from = path.relative(root, file);
  const edges: Edge[] = [];
  const problems = computed.map((c) => `${from}: computed ${c}`);
  for (const spec of specifiers) {
    const folder = targetFolder(file, spec);
    if (folder === 'UNRESOLVED') problems.push(`${from}: cannot resolve '${spec}'`);
    else if (folder !== null) edges.push({ from, spec, folder });
  }
  return { edges, problems };
}

const rules: Array<{ from: string; allowed: string[] }> = [
  { from: 'shared/src', allowed: ['shared'] },
  { from: 'enclave/src', allowed: ['enclave', 'shared'] },
  { from: 'parent/src', allowed: ['parent', 'shared'] },
  { from: 'client/src', allowed: ['client', 'shared'] },
  // The dev stack (sim/src/dev) provisions with the operators' policy generator from client/.
  { from: 'sim/src', allowed: ['sim', 'shared', 'client'] },
  // Tests may use simulators and helpers, but the two sides still never reach into each other.
  { from: 'enclave/test', allowed: ['enclave', 'shared', 'sim', 'test'] },
  // The caller API's tests also drive it through its SDK (what its retries and errors make of an answer).
  { from: 'parent/test', allowed: ['parent', 'shared', 'sim', 'client', 'test'] },
  { from: 'shared/test', allowed: ['shared', 'sim', 'test'] },
  { from: 'client/test', allowed: ['client', 'shared', 'sim', 'test'] },
  { from: 'sim/test', allowed: ['sim', 'shared', 'client', 'test'] },
  // The multi-process tests run the built programs; they drive them through the client and the simulators.
  // The repository checks also test the build and operations scripts' own logic (scripts/image-argv.mjs).
  { from: 'test', allowed: ['test', 'shared', 'sim', 'client', 'scripts'] },
];

/** The shipped programs, as scripts/build.mjs bundles them, and the project folders each may contain. */
const shipped: Array<{ name: string; entry: string; allowed: string[] }> = [
  { name: 'enclave', entry: 'enclave/src/main.ts', allowed: ['enclave/src/', 'shared/src/'] },
  { name: 'parent', entry: 'parent/src/main.ts', allowed: ['parent/src/', 'shared/src/'] },
  { name: 'cli', entry: 'client/src/cli/main.ts', allowed: ['client/src/', 'shared/src/'] },
];
const EXTERNAL = ['better-sqlite3', 'cbor-extract'];

/** Project files (not packages) esbuild puts in the bundle of `entry`. */
async function bundledProjectFiles(entry: string): Promise<string[]> {
  const result = await build({
    absWorkingDir: root,
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    external: EXTERNAL,
    write: false,
    metafile: true,
    outfile: 'out.js',
    logLevel: 'silent',
  });
  return Object.keys(result.metafile.inputs).filter((f) => !f.split('/').includes('node_modules'));
}

describe('architecture', () => {
  it.each(rules)('$from imports only from $allowed', ({ from, allowed }) => {
    const files = sourceFiles(path.join(root, from));
    expect(files.length).toBeGreaterThan(0); // a moved or renamed folder must not pass with nothing checked
    const all = files.map((f) => projectEdges(f));
    expect(all.flatMap((a) => a.problems)).toEqual([]);
    const edges = all.flatMap((a) => a.edges);
    expect(edges.length).toBeGreaterThan(0); // the analysis saw this folder's imports
    expect(edges.filter((e) => !allowed.includes(e.folder)).map((e) => `${e.from} -> ${e.spec} (${e.folder}/)`)).toEqual([]);
  });

  it('keeps enclave/ and parent/ apart in both directions, sources and tests alike', () => {
    const edges = ['enclave', 'parent'].flatMap((side) => sourceFiles(path.join(root, side)).flatMap((f) => projectEdges(f).edges));
    expect(edges.some((e) => e.from.startsWith('enclave/'))).toBe(true);
    expect(edges.some((e) => e.from.startsWith('parent/'))).toBe(true);
    const crossing = edges.filter(
      (e) => (e.from.startsWith('enclave/') && e.folder === 'parent') || (e.from.startsWith('parent/') && e.folder === 'enclave'),
    );
    expect(crossing.map((e) => `${e.from} -> ${e.spec}`)).toEqual([]);
  });

  it.each(shipped)('bundles only $allowed into the $name program (esbuild metafile)', async ({ entry, allowed }) => {
    expect(fs.existsSync(path.join(root, entry))).toBe(true);
    const files = await bundledProjectFiles(entry);
    expect(files).toContain(entry);
    expect(files.length).toBeGreaterThan(5);
    expect(files.filter((f) => !allowed.some((a) => f.startsWith(a)))).toEqual([]);
  });

  it('ships no simulator, parent or client module in the built enclave bundle', () => {
    // esbuild marks each bundled module with a `// <path>` comment; `npm test` builds dist/ first.
    const bundle = fs.readFileSync(path.join(root, 'dist', 'enclave.js'), 'utf8');
    const modules = [...bundle.matchAll(/^\/\/ ((?:enclave|shared|sim|parent|client)\/[^\n]+)$/gm)].map((m) => m[1] as string);
    expect(modules).toContain('enclave/src/main.ts');
    expect(modules.filter((m) => !m.startsWith('enclave/src/') && !m.startsWith('shared/src/'))).toEqual([]);
  });

  it('finds every form of import, resolves it to the folder it reaches, and reports what it cannot read (self-check)', () => {
    const probe = path.join(root, 'enclave', 'src', '__probe__.ts');
    const text = [
      "import '../../parent/src/metrics';", // side effect only, no `from`
      "import type { KeyView } from '../../parent/src/key-registry';",
      'import {\n  a, // a comment\n  b,\n} from "@nks/shared/errors";',
      "export * from '../../sim/src/measure';",
      "export { c } from '../../client/src/policy';",
      "import fs = require('../../parent/src/config');",
      "const d = await import('../../sim/src/nsm/ca');",
      'const e = require(`../../parent/src/app`);',
      "type F = import('../../parent/src/kms/proxy').KmsProxy;",
      "import { g } from '../../enclave/src/crypto/secp256k1.ts';",
      "import { z } from 'zod';",
      "import os from 'node:os';",
      'const h = require(someName);',
      "import { missing } from './does-not-exist';",
      "// import '../../parent/src/not-an-import';",
      'const s = \'import x from "../../parent/src/in-a-string"\';',
    ].join('\n');
    const { edges, problems } = projectEdges(probe, text);
    expect(edges.map((e) => e.folder)).toEqual([
      'parent',
      'parent',
      'shared',
      'sim',
      'client',
      'parent',
      'sim',
      'parent',
      'parent',
      'enclave',
    ]);
    expect(problems).toEqual([
      'enclave/src/__probe__.ts: computed require(someName) at line 16',
      "enclave/src/__probe__.ts: cannot resolve './does-not-exist'",
    ]);
  });
});
