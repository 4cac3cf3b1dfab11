/**
 * What a PostgreSQL failure means to a caller, and database URLs made fit for logs. A database that is down,
 * unreachable, too slow, full or briefly contended is STORAGE_UNAVAILABLE (503, retryable), with a short cause
 * and never the URL or its password; other errors (a bug, a constraint the engine does not expect) pass as
 * they are.
 */
import pg from 'pg';
import { KeystoreError } from '@nks/shared/errors';
import { redactText } from '@nks/shared/redact';

const SQLSTATE_CAUSES: Record<string, string> = {
  '57P01': 'the database server is shutting down',
  '57P02': 'the database server crashed',
  '57P03': 'the database server is not accepting connections yet',
  '57014': 'a database statement timed out',
  '40001': 'a database transaction could not be serialized',
  '40P01': 'a database deadlock',
  '53100': 'the database disk is full',
  '58030': 'the database server has a disk I/O error',
  // A failover leaves connections on a server that became a read-only replica.
  '25006': 'the database is read-only',
};
const SQLSTATE_CLASS_CAUSES: Record<string, string> = {
  '08': 'the database connection failed',
  '53': 'the database is out of resources',
};
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** node-postgres's own errors (no code): a connection lost, a pool or client timeout. */
const CLIENT_MESSAGES: Array<[RegExp, string]> = [
  // The pool's wait for a connection, and a client's own connect (pg destroys its socket with "timeout expired").
  [/timeout exceeded when trying to connect|connection timeout|^timeout expired$/i, 'no database connection within the connect timeout'],
  [/Query read timeout/i, 'a database query timed out'],
  [/Connection terminated|not queryable|Connection ended/i, 'the database connection was lost'],
];

/** Read by shape, not `instanceof Error`: a socket's errors may come from another realm (a test's VM context). */
function cause(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { code, message } = err as { code?: unknown; message?: unknown };
  if (typeof code === 'string') {
    if (NETWORK_CODES.has(code)) return `the database is unreachable (${code})`;
    const known = SQLSTATE_CAUSES[code] ?? (code.length === 5 ? SQLSTATE_CLASS_CAUSES[code.slice(0, 2)] : undefined);
    if (known) return `${known} (${code})`;
  }
  return typeof message === 'string' ? CLIENT_MESSAGES.find(([re]) => re.test(message))?.[1] : undefined;
}

/** Whether the database is the trouble (rather than the request): the error STORAGE_UNAVAILABLE stands for. */
export const isUnavailable = (err: unknown): boolean => cause(err) !== undefined;

/** The CHECK constraints of schema 6 that no honest parent's write breaks (postgres-migrations.ts). */
const GUARD_CONSTRAINTS = new Set(['keys_record_present', 'keys_no_disable_pending']);

/**
 * Whether the database refused a write as no honest parent makes it (schema 6's triggers, SQLSTATE 23000 and
 * "nks:", and its CHECKs): a row someone else wrote is not what an honest parent stores (KEY_INTEGRITY).
 */
export function isGuardViolation(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { code, message, constraint } = err as { code?: unknown; message?: unknown; constraint?: unknown };
  return (
    (code === '23000' && typeof message === 'string' && message.startsWith('nks:')) ||
    (code === '23514' && typeof constraint === 'string' && GUARD_CONSTRAINTS.has(constraint))
  );
}

/**
 * Whether a connection that failed with `err` must be destroyed rather than returned to the pool: anything but a
 * database's answer (a lost or timed-out connection), and the answers that mean the session is no good: its
 * server became a read-only replica (a failover), is shutting down or restarting, or the connection failed.
 */
export function spoilsSession(err: unknown): boolean {
  if (err instanceof KeystoreError) return false;
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  if (!(err instanceof pg.DatabaseError) || typeof code !== 'string') return true;
  return code === '25006' || code === '57P01' || code === '57P02' || code === '57P03' || code.startsWith('08');
}

/**
 * `err` as STORAGE_UNAVAILABLE if the database is the trouble, as KEY_INTEGRITY if the database refused a write
 * no honest parent makes (isGuardViolation; an honest caller meets it only when another writer has tampered with
 * the row); otherwise `err` itself.
 */
export function storageError(err: unknown): unknown {
  if (err instanceof KeystoreError) return err;
  if (isGuardViolation(err))
    return new KeystoreError('KEY_INTEGRITY', 'the database refused this write: the stored row is not one an honest parent wrote', {
      cause: err,
    });
  const why = cause(err);
  return why === undefined ? err : new KeystoreError('STORAGE_UNAVAILABLE', why, { cause: err });
}

/** A pg error's fields worth logging (its message scrubbed of any URL password). */
export function describeError(err: unknown): { code?: string; message: string } {
  const { code, message } = (typeof err === 'object' && err !== null ? err : {}) as { code?: unknown; message?: unknown };
  return { ...(typeof code === 'string' ? { code } : {}), message: redactText(typeof message === 'string' ? message : String(err)) };
}
