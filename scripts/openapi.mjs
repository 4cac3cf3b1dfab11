// Writes docs/openapi.json: the caller API's OpenAPI document as the parent generates it from its routes'
// schemas (parent/src/api/openapi.ts). `npm run openapi`; parent/test/openapi.test.ts fails when they differ.
import { build } from 'esbuild';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'docs', 'openapi.json');
const dir = mkdtempSync(path.join(tmpdir(), 'nks-openapi-'));
try {
  const bundle = path.join(dir, 'openapi.cjs');
  await build({
    absWorkingDir: root,
    entryPoints: ['parent/src/api/openapi-document.ts'],
    outfile: bundle,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    external: ['better-sqlite3', 'cbor-extract', 'pg-native'],
    logLevel: 'warning',
  });
  // The bundle's own require resolves packages (the Redoc bundle) from the repository's node_modules.
  const { generateOpenApi } = createRequire(path.join(root, 'package.json'))(bundle);
  writeFileSync(out, await generateOpenApi());
  console.log(`wrote ${path.relative(root, out)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
