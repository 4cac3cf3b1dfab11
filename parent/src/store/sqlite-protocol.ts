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

/**
 * A guard trigger's refusal (schema 6, migrations.ts): a write of a row no honest parent writes, met only when
 * the stored row was not written by this keystore. KEY_INTEGRITY, as readers answer such rows.
 */
export function guardErrorOf(err: unknown): KeystoreError | undefined {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (code !== 'SQLITE_CONSTRAINT_TRIGGER' || typeof message !== 'string' || !message.startsWith('nks: ')) return undefined;
  return new KeystoreError(
    'KEY_INTEGRITY',
    `the database refused the write (${message.slice(5)}): a stored row was not written by this keystore`,
    {
      cause: err,
    },
  );
}

export function storageErrorOf(err: unknown): KeystoreError | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !STORAGE_CODES.test(code)) return undefined;
  return new KeystoreError('STORAGE_UNAVAILABLE', `the database cannot take this now (${code}): retry later`, { cause: err });
}
