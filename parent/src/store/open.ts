/** Opens the configured store (docs/STORAGE.md): its engine, migrated, behind the coherent cache. */
import fs from 'node:fs';
import Database from 'better-sqlite3';
import type { Logger } from '@nks/shared/log';
import type { DatabaseConfig } from '../config';
import { KeyStore } from './key-store';
import { PostgresEngine } from './postgres';
import { SCHEMA_VERSION } from './migrations';
import { SqliteEngine } from './sqlite-engine';
import type { StoreEngine, StoreStatus } from './types';

/** The engine of `db`; `migrate` overrides the configuration's choice (PostgreSQL) to bring the schema up to date. */
function sslOf(db: Extract<DatabaseConfig, { kind: 'postgres' }>) {
  return typeof db.ssl === 'boolean'
    ? db.ssl
    : { rejectUnauthorized: db.ssl.rejectUnauthorized, ...(db.ssl.ca ? { ca: fs.readFileSync(db.ssl.ca, 'utf8') } : {}) };
}

export async function openEngine(db: DatabaseConfig, logger?: Logger, options: { migrate?: boolean } = {}): Promise<StoreEngine> {
  if (db.kind === 'sqlite') return SqliteEngine.open({ path: db.path, timeoutMs: db.timeoutMs });
  return PostgresEngine.open({
    url: db.url,
    poolSize: db.poolSize,
    ssl: sslOf(db),
    statementTimeoutMs: db.statementTimeoutMs,
    connectTimeoutMs: db.connectTimeoutMs,
    migrate: options.migrate ?? db.migrate,
    ...(logger ? { logger } : {}),
  });
}

export async function openStore(db: DatabaseConfig, logger?: Logger): Promise<KeyStore> {
  return new KeyStore(await openEngine(db, logger), logger ? { logger } : {});
}

/**
 * Where the configured database is and its schema version, without migrating it (`parent store status`): a
 * SQLite file that does not exist yet is at version 0.
 */
export async function storeStatus(db: DatabaseConfig): Promise<StoreStatus & { pending: number }> {
  let status: StoreStatus;
  if (db.kind === 'postgres') {
    status = await PostgresEngine.versionOf({
      url: db.url,
      ssl: sslOf(db),
      connectTimeoutMs: db.connectTimeoutMs,
      statementTimeoutMs: db.statementTimeoutMs,
    });
  } else {
    let version = 0;
    if (fs.existsSync(db.path)) {
      const file = new Database(db.path, { readonly: true, fileMustExist: true });
      try {
        version = file.pragma('user_version', { simple: true }) as number;
      } finally {
        file.close();
      }
    }
    status = { engine: 'sqlite', location: db.path, schemaVersion: version, latestVersion: SCHEMA_VERSION };
  }
  return { ...status, pending: Math.max(0, status.latestVersion - status.schemaVersion) };
}
