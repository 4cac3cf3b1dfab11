/**
 * Which storage failures are the disk's or the server's (503 STORAGE_UNAVAILABLE, retryable) rather than a
 * bug's (500 INTERNAL): SQLite's result codes and PostgreSQL's SQLSTATEs, mapped as the engines map them.
 */
import { KeystoreError } from '@nks/shared/errors';
import { storageError } from '../src/store/postgres-errors';
import { storageErrorOf } from '../src/store/sqlite-protocol';

const code = (e: unknown) => (e instanceof KeystoreError ? `${e.code}: ${e.message}` : 'passed as it is');

it('maps PostgreSQL disk-full, I/O and out-of-resources errors to STORAGE_UNAVAILABLE and leaves others alone', () => {
  const pgError = (sqlstate: string) => Object.assign(new Error(`pg says ${sqlstate}`), { code: sqlstate });
  expect(
    Object.fromEntries(
      ['53100', '58030', '53200', '53300', '53400', '42P01', '23505', '58P01'].map((c) => [c, code(storageError(pgError(c)))]),
    ),
  ).toEqual({
    '53100': 'STORAGE_UNAVAILABLE: the database disk is full (53100)',
    '58030': 'STORAGE_UNAVAILABLE: the database server has a disk I/O error (58030)',
    '53200': 'STORAGE_UNAVAILABLE: the database is out of resources (53200)',
    '53300': 'STORAGE_UNAVAILABLE: the database is out of resources (53300)',
    '53400': 'STORAGE_UNAVAILABLE: the database is out of resources (53400)',
    '42P01': 'passed as it is',
    '23505': 'passed as it is',
    '58P01': 'passed as it is',
  });
});

it('maps SQLite full, I/O, busy and read-only errors to STORAGE_UNAVAILABLE and leaves others alone', () => {
  const sqliteError = (c: string) => Object.assign(new Error(`sqlite says ${c}`), { code: c });
  const codes = [
    'SQLITE_FULL',
    'SQLITE_IOERR',
    'SQLITE_IOERR_FSYNC',
    'SQLITE_IOERR_WRITE',
    'SQLITE_BUSY',
    'SQLITE_READONLY',
    'SQLITE_CONSTRAINT_UNIQUE',
    'SQLITE_ERROR',
  ];
  expect(Object.fromEntries(codes.map((c) => [c, code(storageErrorOf(sqliteError(c)) ?? 'none')]))).toEqual({
    SQLITE_FULL: 'STORAGE_UNAVAILABLE: the database cannot take this now (SQLITE_FULL): retry later',
    SQLITE_IOERR: 'STORAGE_UNAVAILABLE: the database cannot take this now (SQLITE_IOERR): retry later',
    SQLITE_IOERR_FSYNC: 'STORAGE_UNAVAILABLE: the database cannot take this now (SQLITE_IOERR_FSYNC): retry later',
    SQLITE_IOERR_WRITE: 'STORAGE_UNAVAILABLE: the database cannot take this now (SQLITE_IOERR_WRITE): retry later',
    SQLITE_BUSY: 'STORAGE_UNAVAILABLE: the database cannot take this now (SQLITE_BUSY): retry later',
    SQLITE_READONLY: 'STORAGE_UNAVAILABLE: the database cannot take this now (SQLITE_READONLY): retry later',
    SQLITE_CONSTRAINT_UNIQUE: 'passed as it is',
    SQLITE_ERROR: 'passed as it is',
  });
});
