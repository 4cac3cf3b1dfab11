/**
 * The SQLite engine's worker under a stall (docs/STORAGE.md, "When the disk stalls"): calls sent to the worker and
 * not answered, timed out or not, are at most `maxQueue` (beyond it refused at once), and a call whose caller
 * stopped waiting is not run when the worker reaches it, so a write answered 503 does not commit afterwards (the
 * one already running at the deadline may: it was under way). Another connection's write lock is the stall here.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { tempRunDir } from '@nks/shared-test/helpers';
import { SqliteEngine } from '../src/store/sqlite-engine';
import { newKey } from './store-fixtures';

it('bounds the worker queue during a stall and never runs a call its caller gave up on', async () => {
  const file = path.join(tempRunDir('nks-sqlite-q-'), 'keys.db');
  const engine = await SqliteEngine.open({ path: file, timeoutMs: 200, maxQueue: 5 });
  const lock = new Database(file);
  lock.exec('BEGIN EXCLUSIVE');
  const outcomes: string[] = [];
  try {
    for (let round = 0; round < 8; round++) {
      const calls = Array.from({ length: 5 }, (_, i) => {
        const n = round * 5 + i;
        return engine.insert(newKey(`k${n}`, `ext${n}`, { subject: `s${n}` })).then(
          () => 'ok',
          (e: { code?: string; message?: string }) => `${e.code}: ${/not keeping up/.test(e.message ?? '') ? 'refused' : 'timed out'}`,
        );
      });
      outcomes.push(...(await Promise.all(calls)));
    }
  } finally {
    lock.exec('ROLLBACK');
    lock.close();
  }
  // The first five waited their deadline; the worker still held them, so the next 35 were refused at once.
  expect(outcomes.slice(0, 5)).toEqual(Array(5).fill('STORAGE_UNAVAILABLE: timed out'));
  expect(outcomes.slice(5)).toEqual(Array(35).fill('STORAGE_UNAVAILABLE: refused'));
  // The disk is back: the engine answers again, and of the abandoned writes at most the one that was running committed.
  let counts: { total: number } | undefined;
  for (let i = 0; i < 100 && !counts; i++) {
    counts = await engine.counts().catch(() => undefined);
    if (!counts) await new Promise((r) => setTimeout(r, 100));
  }
  expect(counts?.total).toBeLessThanOrEqual(1);
  expect((await engine.insert(newKey('after', 'after', { subject: 'after' }))).created).toBe(true);
  await engine.close();
}, 60_000);
