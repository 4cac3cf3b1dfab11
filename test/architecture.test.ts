/**
 * The trust boundary in code (DESIGN §2): enclave/ and parent/ never import each other, shipped code never
 * imports the simulators, shared/ depends on nothing project-local but itself, client/ only on shared/.
 */
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(__dirname, '..');
const IMPORT_RE = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|require\(\s*['"]([^'"]+)['"]\s*\)/g;

function sourceFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.(ts|mts|cts)$/.test(e.name))
    .map((e) => path.join(e.parentPath, e.name));
}

/** Project folders (top-level) that a file's relative imports reach. */
function importedFolders(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (!spec || !spec.startsWith('.')) continue;
    const target = path.relative(root, path.resolve(path.dirname(file), spec));
    out.push(target.split(path.sep)[0] as string);
  }
  return out;
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
  { from: 'parent/test', allowed: ['parent', 'shared', 'sim', 'test'] },
];

describe('architecture', () => {
  it.each(rules)('$from imports only from $allowed', ({ from, allowed }) => {
    const violations = sourceFiles(path.join(root, from)).flatMap((file) =>
      importedFolders(file)
        .filter((folder) => !allowed.includes(folder))
        .map((folder) => `${path.relative(root, file)} -> ${folder}/`),
    );
    expect(violations).toEqual([]);
  });

  it('ships no simulator code in the enclave bundle', () => {
    // esbuild marks each bundled module with a `// <path>` comment; `npm test` builds dist/ first.
    const bundle = fs.readFileSync(path.join(root, 'dist', 'enclave.js'), 'utf8');
    const modules = [...bundle.matchAll(/^\/\/ ((?:enclave|shared|sim|parent|client)\/[^\n]+)$/gm)].map((m) => m[1] as string);
    expect(modules.some((m) => m.startsWith('enclave/src/'))).toBe(true);
    expect(modules.filter((m) => !m.startsWith('enclave/src/') && !m.startsWith('shared/src/'))).toEqual([]);
  });

  it('finds relative imports the way the rules need (self-check)', () => {
    const probe = path.join(root, 'enclave', 'src', '__probe__.ts');
    const text = "import { x } from '../../parent/src/y';\nexport * from '../../shared/src/z';\nconst a = require('../../sim/src/k');";
    const found = [...text.matchAll(IMPORT_RE)].map((m) => path.relative(root, path.resolve(path.dirname(probe), (m[1] ?? m[2] ?? m[3]) as string)).split(path.sep)[0]);
    expect(found).toEqual(['parent', 'shared', 'sim']);
  });
});
