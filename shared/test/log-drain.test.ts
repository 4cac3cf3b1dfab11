/**
 * Found by an attacker's review (issue 22, the batched audit log): when stdout's reader is slower than the
 * writes, sonic-boom holds a backlog and retries its in-flight chunk every 100 ms; the synchronous flush at exit
 * skips that chunk, so an exit lost up to 16 KiB of lines from inside the stream — audit lines of signatures
 * already answered. `drainLogs` (shared/src/log.ts), awaited by the parent before an orderly exit, waits until
 * every stdout logger has written everything.
 *
 * A child process makes the parent's three loggers as it does (audit and access batched, the main one not),
 * writes a burst of lines to a stdout that a slow reader empties, and exits after `drainLogs`. Exiting without
 * it (mode "exit") lost a chunk of about 16 KiB in about half the runs here (the loss needs a write in flight at
 * the exit): too irregular for a test, so only the drained exit is asserted.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { tempRunDir } from './helpers';

const LINES = 8_000;
const LOG = path.resolve(__dirname, '../src/log.ts');

const CHILD = `
import { createLogger, drainLogs } from ${JSON.stringify(LOG)};
const audit = createLogger({ name: 'parent', level: 'info', redact: false, bufferBytes: 8192 }).child({ component: 'audit' });
const access = createLogger({ name: 'parent', level: 'info', redact: false, bufferBytes: 8192 }).child({ component: 'access' });
const main = createLogger({ name: 'parent', level: 'info' });
process.stdout; // as in the parent: stdout initialized, so a full pipe answers EAGAIN
const pad = 'x'.repeat(200);
let i = 0;
function burst() {
  for (let k = 0; k < 400; k++, i++) {
    audit.info({ keyId: 'k' + i, pad }, 'signed');
    access.info({ requestId: 'r' + i, pad }, 'request');
    if (k % 10 === 0) main.info({ n: i, pad }, 'main');
  }
  if (i < ${LINES}) setImmediate(burst);
  else if (process.argv[2] === 'drain') void drainLogs(60_000).then(() => process.exit(0));
  else process.exit(0);
}
burst();
`;

describe('drainLogs: every line written before an orderly exit, whatever the reader', () => {
  let runDir: string;
  let child: string;
  beforeAll(() => {
    runDir = tempRunDir();
    const entry = path.join(runDir, 'child.ts');
    fs.writeFileSync(entry, CHILD);
    child = path.join(runDir, 'child.js');
    buildSync({
      entryPoints: [entry],
      outfile: child,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      nodePaths: [path.resolve(__dirname, '../../node_modules')],
      logLevel: 'silent',
    });
  });
  afterAll(() => fs.rmSync(runDir, { recursive: true, force: true }));

  /** Runs the child with a slow reader on its stdout; the audit key ids and the other lines it received. */
  async function run(mode: 'drain' | 'exit'): Promise<{ audit: Set<string>; access: number; main: number; broken: number }> {
    const proc = spawn(process.execPath, [child, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    const chunks: Buffer[] = [];
    proc.stdout.on('data', (c: Buffer) => {
      chunks.push(c);
      proc.stdout.pause();
      setTimeout(() => proc.stdout.resume(), 50);
    });
    await new Promise((r) => proc.on('close', r));
    const out = { audit: new Set<string>(), access: 0, main: 0, broken: 0 };
    for (const line of Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean)) {
      try {
        const o = JSON.parse(line) as { component?: string; keyId?: string; msg?: string };
        if (o.component === 'audit') out.audit.add(o.keyId as string);
        else if (o.component === 'access') out.access += 1;
        else if (o.msg === 'main') out.main += 1;
      } catch {
        out.broken += 1;
      }
    }
    return out;
  }

  it('loses no line of any logger when the exit waits for drainLogs', async () => {
    const got = await run('drain');
    expect({ audit: got.audit.size, access: got.access, main: got.main, broken: got.broken }).toEqual({
      audit: LINES,
      access: LINES,
      main: LINES / 10,
      broken: 0,
    });
  }, 90_000);
});
