/**
 * The SQLite engine's worker thread (sqlite-engine.ts): owns the database connection and runs one call at a time.
 * A statement stuck in fsync or on a lock blocks only this thread; the parent's event loop keeps answering.
 * Errors cross the thread boundary as plain data: a KeystoreError's code, message and details, or, for a
 * disk that is full, failing or locked, STORAGE_UNAVAILABLE (its SQLite code kept in the message, which names no path).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { KeystoreError } from '@nks/shared/errors';
import { SqliteDatabase } from './sqlite-db';
import { guardErrorOf, storageErrorOf, type WorkerReply, type WorkerRequest } from './sqlite-protocol';

const port = parentPort;
if (!port) throw new Error('sqlite-worker runs only as a worker thread');

function failure(err: unknown): WorkerReply['error'] {
  const e = guardErrorOf(err) ?? storageErrorOf(err) ?? err;
  if (e instanceof KeystoreError) return { code: e.code, message: e.message, details: e.details ?? null };
  return { code: 'INTERNAL', message: e instanceof Error ? `${e.name}: ${e.message}` : String(e), details: null };
}

let db: SqliteDatabase;
try {
  db = new SqliteDatabase((workerData as { file: string }).file);
  port.postMessage({ id: 0, value: { ready: true } } satisfies WorkerReply);
} catch (err) {
  port.postMessage({ id: 0, error: failure(err) } satisfies WorkerReply);
  process.exit(1);
}

port.on('message', ({ id, method, args, deadline }: WorkerRequest) => {
  let reply: WorkerReply;
  try {
    // Its caller was told STORAGE_UNAVAILABLE already (a stall held the queue): a write now would commit unanswered.
    if (deadline !== undefined && Date.now() > deadline)
      throw new KeystoreError('STORAGE_UNAVAILABLE', 'the database call expired before it ran: retry later');
    if (method === 'close') {
      db.close();
      reply = { id, value: null };
    } else {
      const fn = (db as unknown as Record<string, (...a: unknown[]) => unknown>)[method];
      if (typeof fn !== 'function') throw new Error(`no store method ${method}`);
      reply = { id, value: fn.apply(db, args) };
    }
  } catch (err) {
    reply = { id, error: failure(err) };
  }
  port.postMessage(reply);
});
