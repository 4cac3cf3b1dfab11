/**
 * `npm run dev`'s step lines across its two programs: the launcher (scripts/dev.mjs) counts its build as step 1
 * and dist/dev.js numbers its own after it; with `--no-build` the count starts at dist/dev.js's first step. A
 * start that fails at a step says which one it was on, and the step lines hold no secret (here: the password
 * of a `--database-url`). The full sequence of a start is checked by dev.test.ts on its first start.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempRunDir } from '@nks/shared-test/helpers';
import { freePort } from '../../sim/src/free-port';

const ROOT = path.resolve(__dirname, '../..');

/** A start against a PostgreSQL URL where nothing listens: it fails at its first step of its own, at once. */
async function failingStart(extra: string[]): Promise<{ status: number | null; stderr: string; stdout: string }> {
  const dir = tempRunDir('nks-dev-steps-');
  try {
    const port = await freePort(); // free now, and nothing listens on it
    const res = spawnSync(
      process.execPath,
      [
        path.join(ROOT, 'scripts', 'dev.mjs'),
        ...extra,
        '--dir',
        dir,
        '--api-port',
        '0',
        '--database',
        'postgres',
        '--database-url',
        `postgres://nks:hunter2-secret@127.0.0.1:${port}/nks`,
      ],
      { cwd: ROOT, encoding: 'utf8', timeout: 240_000 },
    );
    return { status: res.status, stderr: res.stderr, stdout: res.stdout };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('npm run dev step lines', () => {
  it('without a build: dist/dev.js numbers its 7 steps from 1, and stops at the one that failed', async () => {
    const r = await failingStart(['--no-build']);
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n').filter((l) => /^\[\d+\/\d+\]/.test(l))).toEqual(['[1/7] starting the KMS emulator and PostgreSQL…']);
    expect(r.stdout).toMatch(/dev: cannot use the PostgreSQL server at postgres:\/\/nks:\*\*\*@127\.0\.0\.1:\d+\/nks/);
    expect(`${r.stdout}${r.stderr}`).not.toContain('hunter2');
  });

  it('with its build: the launcher shows the build as step 1 of 8, and dist/dev.js goes on from 2', async () => {
    const r = await failingStart([]);
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n').filter((l) => /^\[\d+\/\d+\]/.test(l))).toEqual([
      '[1/8] building the bundles (scripts/build.mjs)…',
      '[2/8] starting the KMS emulator and PostgreSQL…',
    ]);
    expect(`${r.stdout}${r.stderr}`).not.toContain('hunter2');
  }, 240_000);
});
