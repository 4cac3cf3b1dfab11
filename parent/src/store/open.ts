/** Opens the configured store (docs/STORAGE.md): its engine, migrated, behind the coherent cache. */
import type { Logger } from '@nks/shared/log';
import type { DatabaseConfig } from '../config';
import { KeyStore } from './key-store';
import { SqliteEngine } from './sqlite-engine';
import type { StoreEngine } from './types';

export async function openEngine(db: DatabaseConfig, logger?: Logger): Promise<StoreEngine> {
  if (db.kind === 'sqlite') return SqliteEngine.open({ path: db.path, timeoutMs: db.timeoutMs });
  void logger;
  throw new Error('the PostgreSQL engine is not in this build');
}

export async function openStore(db: DatabaseConfig, logger?: Logger): Promise<KeyStore> {
  return new KeyStore(await openEngine(db, logger), logger ? { logger } : {});
}
