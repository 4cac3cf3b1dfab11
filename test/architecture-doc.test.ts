/**
 * Keeps docs/ARCHITECTURE.md and docs/PROTOCOL.md true to the code (docs/ARCHITECTURE.md, "Keeping this page
 * true"), and the repository standing on its own:
 * - every repository path they (and every other page of docs/, every README, SECURITY.md and CHANGELOG.md) write in backticks exists,
 *   and every test they name with › contains the quoted test names;
 * - the enclave's npm packages listed in docs/ARCHITECTURE.md are exactly those esbuild bundles into the
 *   enclave program (same entry and externals as scripts/build.mjs), and every external it leaves out is named;
 * - every method of shared/src/enclave-api.ts is in both protocol tables, and the error table of
 *   docs/PROTOCOL.md equals ERROR_CODES;
 * - every citation of a page and section (`docs/X.md, "Section"`) anywhere in the repository names a page that
 *   exists and a heading or bold lead in it, and no file cites a document outside the repository.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { isBuiltin } from 'node:module';
import path from 'node:path';
import { build } from 'esbuild';
import { EnclaveApi, KmsProxyApi } from '@nks/shared/enclave-api';
import { ERROR_CODES } from '@nks/shared/errors';

const root = path.resolve(__dirname, '..');
const read = (rel: string) => fs.readFileSync(path.join(root, rel), 'utf8');
const ARCHITECTURE = 'docs/ARCHITECTURE.md';
const PROTOCOL = 'docs/PROTOCOL.md';
const DOCS = [ARCHITECTURE, PROTOCOL];

/** Inline code spans of a Markdown text, fenced blocks left out. */
function inlineCode(md: string): string[] {
  const prose = md.replace(/^```[^\n]*\n[\s\S]*?^```[^\n]*$/gm, '');
  return [...prose.matchAll(/`([^`\n]+)`/g)].map((m) => m[1] as string);
}

/** The body of the `## title` section (up to the next heading of level 2). */
function section(md: string, title: string): string {
  const start = md.search(new RegExp(`^## ${title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`, 'm'));
  if (start < 0) throw new Error(`no section "## ${title}"`);
  const rest = md.slice(start + 3);
  const end = rest.search(/^## /m);
  return end < 0 ? rest : rest.slice(0, end);
}

const TOP_FOLDERS = ['shared', 'enclave', 'parent', 'client', 'sim', 'scripts', 'test', 'docs', 'deploy'];
const ROOT_FILES = new Set([
  'README.md',
  'LICENSE',
  'SECURITY.md',
  'CHANGELOG.md',
  'Dockerfile.enclave',
  'package.json',
  'package-lock.json',
  'jest.config.js',
  'stryker.config.mjs',
  'tsconfig.base.json',
]);

/** `a/{b,c}.ts` -> `a/b.ts`, `a/c.ts`. */
function expandBraces(p: string): string[] {
  const m = /\{([^{}]*)\}/.exec(p);
  if (!m) return [p];
  return (m[1] as string).split(',').flatMap((alt) => expandBraces(p.slice(0, m.index) + alt + p.slice(m.index + m[0].length)));
}

/** Code spans that name a file or folder of the repository. */
function repositoryPaths(md: string): string[] {
  return inlineCode(md)
    .filter((s) => /^[A-Za-z0-9_.{},/-]+$/.test(s) && (ROOT_FILES.has(s) || TOP_FOLDERS.some((t) => s.startsWith(`${t}/`))))
    .flatMap(expandBraces);
}

/** Tracked text files (git ls-files), without the lockfile. */
function trackedTextFiles(): string[] {
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8' }).split('\0').filter(Boolean);
  return files.filter(
    (f) => f !== 'package-lock.json' && !f.startsWith('dist/') && fs.existsSync(path.join(root, f)) && !read(f).includes('\0'),
  );
}

/** npm package of a bundled file (the innermost node_modules), or null for a project file. */
function packageOf(file: string): string | null {
  const all = [...file.matchAll(/node_modules\/((?:@[^/]+\/)?[^/]+)/g)];
  return all.length ? ((all[all.length - 1] as RegExpMatchArray)[1] as string) : null;
}

describe('docs/ARCHITECTURE.md and docs/PROTOCOL.md', () => {
  const docs = Object.fromEntries(DOCS.map((d) => [d, read(d)])) as Record<string, string>;
  const architecture = docs[ARCHITECTURE] as string;
  const protocol = docs[PROTOCOL] as string;

  it.each(DOCS)('%s names only repository paths that exist', (doc) => {
    const paths = repositoryPaths(docs[doc] as string);
    expect(paths.length).toBeGreaterThan(10); // the extraction found them
    expect(paths.filter((p) => !fs.existsSync(path.join(root, p)))).toEqual([]);
  });

  it('every other page of docs/ and every README names only repository paths that exist', () => {
    // docs/NITRO-KMS.md names files of AWS's repositories; deploy/enclave.json is written by scripts/build-eif.sh
    // for the build only. A component README's paths may be relative to its folder or its src/.
    const outside = new Set(['docs/NITRO-KMS.md']);
    const generated = new Set(['deploy/enclave.json']);
    const pages = [
      ...fs
        .readdirSync(path.join(root, 'docs'))
        .filter((f) => f.endsWith('.md'))
        .map((f) => `docs/${f}`),
      ...trackedTextFiles().filter((f) => /(^|\/)README\.md$/.test(f)),
      'SECURITY.md',
      'CHANGELOG.md',
    ].filter((f) => !DOCS.includes(f) && !outside.has(f));
    expect(pages).toEqual(
      expect.arrayContaining(['docs/RECORDS.md', 'docs/OPERATIONS.md', 'docs/SEALING.md', 'README.md', 'client/README.md']),
    );
    const exists = (page: string, p: string) =>
      generated.has(p) ||
      [root, path.join(root, path.dirname(page)), path.join(root, path.dirname(page), 'src')].some((d) => fs.existsSync(path.join(d, p)));
    const missing = pages.flatMap((page) =>
      repositoryPaths(read(page))
        .filter((p) => !exists(page, p))
        .map((p) => `${page}: ${p}`),
    );
    expect(missing).toEqual([]);
  });

  it('names tests that contain the test names it quotes', () => {
    const cites = [...architecture.matchAll(/`([^`]+\.test\.ts)` › ((?:"[^"]+"(?:, )?)+)/g)].flatMap((m) =>
      [...(m[2] as string).matchAll(/"([^"]+)"/g)].map((n) => ({ file: m[1] as string, name: n[1] as string })),
    );
    expect(cites.length).toBeGreaterThan(15);
    expect(
      cites
        .filter(({ file, name }) => !fs.existsSync(path.join(root, file)) || !read(file).includes(name))
        .map((c) => `${c.file} › "${c.name}"`),
    ).toEqual([]);
  });

  it('lists exactly the npm packages esbuild bundles into the enclave program, and names what it leaves out', async () => {
    // The same entry and externals as scripts/build.mjs (read from it, so the two cannot differ).
    const externalDecl = /const external = (\[[^\]]*\]);/.exec(read('scripts/build.mjs'));
    expect(externalDecl).not.toBeNull();
    const external = JSON.parse((externalDecl?.[1] as string).replace(/'/g, '"')) as string[];
    const result = await build({
      absWorkingDir: root,
      entryPoints: ['enclave/src/main.ts'],
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      external,
      write: false,
      metafile: true,
      outfile: 'enclave.js',
      logLevel: 'silent',
    });
    const bundled = [
      ...new Set(
        Object.keys(result.metafile.inputs)
          .map(packageOf)
          .filter((p): p is string => p !== null),
      ),
    ].sort();
    expect(bundled).toContain('viem'); // the metafile was read

    const block = /<!-- enclave-packages -->([\s\S]*?)<!-- \/enclave-packages -->/.exec(architecture);
    expect(block).not.toBeNull();
    const listed = [...new Set(inlineCode(block?.[1] as string))].sort();
    expect(listed).toEqual(bundled);

    const leftOut = [
      ...new Set(
        Object.values(result.metafile.outputs).flatMap((o) => o.imports.filter((i) => i.external && !isBuiltin(i.path)).map((i) => i.path)),
      ),
    ];
    expect(leftOut.length).toBeGreaterThan(0);
    const named = inlineCode(architecture.replace(block?.[0] as string, ''));
    expect(leftOut.filter((p) => !named.includes(p))).toEqual([]);
  });

  it('has every method of shared/src/enclave-api.ts in both protocol tables', () => {
    const methods = [...Object.keys(EnclaveApi), ...Object.keys(KmsProxyApi)];
    expect(methods).toContain('keys.sign');
    for (const body of [section(protocol, 'Methods'), section(architecture, 'The protocol')]) {
      const table = body.split('\n').filter((l) => l.startsWith('| `'));
      const named = table.map((row) => inlineCode(row)[0]);
      expect(methods.filter((m) => !named.includes(m))).toEqual([]);
    }
  });

  it('has the error table of shared/src/errors.ts ERROR_CODES, code by code', () => {
    const rows = [...section(protocol, 'Errors').matchAll(/^\| `([A-Z_]+)` \| (-?\d+) \| (\d+) \| (yes|no) \|/gm)];
    const documented = Object.fromEntries(
      rows.map((r) => [r[1], { rpcCode: Number(r[2]), httpStatus: Number(r[3]), retryable: r[4] === 'yes' }]),
    );
    const registry = Object.fromEntries(
      Object.entries(ERROR_CODES).map(([code, info]) => [
        code,
        { rpcCode: info.rpcCode, httpStatus: info.httpStatus, retryable: info.retryable },
      ]),
    );
    expect(documented).toEqual(registry);
  });
});

describe('citations in the repository', () => {
  const self = path.relative(root, __filename);
  // This file spells out the patterns it looks for, so it is left out.
  const files = trackedTextFiles().filter((f) => f !== self);

  it('cite pages that exist, by a heading or bold lead they have', () => {
    /** Comment markers and line breaks folded, so a citation that wraps across comment lines is still seen. */
    const flat = (text: string) => text.replace(/[ \t]*\n[ \t]*(?:\*(?![*/])|\/\/|#(?!#))?[ \t]*/g, ' ');
    const leads = (md: string) => [
      // A numbered heading ("9. What to monitor") may be cited with or without its number.
      ...[...md.matchAll(/^#{1,6} +(.+?)\s*$/gm)].flatMap((m) => [m[1] as string, (m[1] as string).replace(/^\d+\.\s+/, '')]),
      ...[...md.matchAll(/\*\*([^*\n]+?)\.?\*\*/g)].map((m) => m[1] as string),
    ];
    const cites = files.flatMap((file) =>
      [...flat(read(file)).matchAll(/((?:docs\/[A-Z0-9-]+|(?:[a-z]+\/)?README)\.md), "([^"]+)"/g)].map((m) => ({
        file,
        page: m[1] as string,
        section: m[2] as string,
      })),
    );
    expect(cites.length).toBeGreaterThan(10);
    const broken = cites.filter(
      ({ page, section: title }) =>
        !fs.existsSync(path.join(root, page)) || !leads(read(page)).some((l) => l === title || l.startsWith(`${title}`)),
    );
    expect(broken.map((c) => `${c.file}: ${c.page}, "${c.section}"`)).toEqual([]);
  });

  it('cite no document outside the repository', () => {
    // Comments that point at documents only the team has: what they cite belongs in docs/.
    const outside = new RegExp(['DESIGN(?:\\.md|\\s*§)', 'nitro-kms-' + 'facts', '/work/' + 'shared'].join('|'));
    const citing = files.filter((f) => outside.test(read(f)));
    expect(citing).toEqual([]);
  });
});
