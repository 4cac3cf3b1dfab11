/** What the SQLite engine and its worker thread exchange, and which SQLite failures are the disk's, not a bug's. */
import { KeystoreError, type ErrorCode, type ErrorDetails } from '@nks/shared/errors';

export interface WorkerRequest {
  id: number;
  method: string;
  args: unknown[];
  /** When the caller stops waiting (ms since the epoch): a call still queued then is not run at all. */
  deadline?: number;
}

export interface WorkerReply {
  id: number;
  value?: unknown;
  error?: { code: ErrorCode; message: string; details: ErrorDetails | null };
}

/**
 * SQLite result codes that say the storage cannot take the write now (https://sqlite.org/rescode.html): full,
 * failing I/O, locked by another process past the busy timeout, read-only or gone. Retryable: 503.
 */
const STORAGE_CODES = /^SQLITE_(FULL|IOERR|BUSY|LOCKED|READONLY|CANTOPEN|PROTOCOL|NOMEM)/;

export function storageErrorOf(err: unknown): KeystoreError | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !STORAGE_CODES.test(code)) return undefined;
  return new KeystoreError('STORAGE_UNAVAILABLE', `the database cannot take this now (${code}): retry later`, { cause: err });
}
