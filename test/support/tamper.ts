/**
 * Tests that stand where a compromised single-instance parent stands alter its SQLite file. The file's guard
 * triggers (schema 6, parent/src/store/migrations.ts) refuse rows no honest parent writes, but whoever can write
 * the file can drop them, and so does such a test first: what it shows is what the readers (the parent's checks,
 * the enclave) do with the altered rows.
 */
import type Database from 'better-sqlite3';

export function dropGuards(db: Database.Database): void {
  for (const t of ['keys_guard_insert', 'keys_guard_update', 'projects_guard_update', 'tls_keys_guard_update'])
    db.exec(`DROP TRIGGER IF EXISTS ${t}`);
}
