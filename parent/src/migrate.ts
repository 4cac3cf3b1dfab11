/**
 * `parent migrate` (docs/OPERATIONS.md, "Migration"): with the enclave running the migration image, re-seals
 * every key made before 0.4 (a version 1 blob and no record) as a version 2 blob in the `default` project, for
 * the subject the key's external id names (or none), with a first record of origin "migrated".
 *
 * The daemon must not run meanwhile: this command serves the enclave's KMS proxy itself (the migration image
 * unseals the identity and every version 1 blob through it) and writes the database. Each key is stored in
 * its own transaction as soon as its answer is checked, so an interrupted run loses nothing and the next run
 * goes on with the keys still without a record; a run with nothing left to do changes nothing.
 */
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import { Progress } from '@nks/shared/progress';
import { DEFAULT_PROJECT_ID } from '@nks/shared/records';
import { createTransport } from '@nks/shared/transport';
import { enclavePoolFor, kmsClientFor, kmsProxyFor } from './app';
import type { ParentConfig } from './config';
import { RecordChecker } from './enclave-link/identity';
import { checkNewKey, seedDefaultProject } from './key-registry';
import { openStore } from './store/open';
import type { StoredKey } from './store/types';

export interface MigrationSummary {
  /** Keys without a record when the run started. */
  total: number;
  migrated: number;
  failed: number;
  /** Keys still without a record when the run ended (failed ones, or ones made meanwhile by an old daemon). */
  remaining: number;
}

export interface MigrationOptions {
  /** Keys migrated at once (each is a KMS Decrypt in the enclave). */
  concurrency?: number;
  /** How long to wait for the migration image to be up with its identity unsealed. */
  waitMs?: number;
  /** A progress line at most this often. */
  progressEveryMs?: number;
  /**
   * The operator's view of the run (shared/src/progress.ts): its steps, and a bar of the keys done (stderr by
   * default; JSON lines with `parent migrate --json`). The log's progress lines are kept as they were.
   */
  progress?: Progress;
}

/** The steps of a run, as `[n/MIGRATION_STEPS]` lines. */
export const MIGRATION_STEPS = 3;

const BATCH = 200;

/** How many keys still have no record (`parent migrate --pending`): nothing else is done, no enclave needed. */
export async function keysToMigrate(config: ParentConfig): Promise<number> {
  const store = await openStore(config.database);
  try {
    return (await store.counts()).withoutRecord;
  } finally {
    await store.close();
  }
}

export async function runMigration(config: ParentConfig, logger: Logger, opts: MigrationOptions = {}): Promise<MigrationSummary> {
  const concurrency = Math.max(1, Math.min(opts.concurrency ?? 4, 64));
  const store = await openStore(config.database, logger);
  const transport = createTransport(config.transport);
  const kms = kmsClientFor(config);
  const proxy = kmsProxyFor(config, kms, logger);
  const pool = enclavePoolFor(config, transport, logger);
  const steps = opts.progress ?? new Progress({ total: MIGRATION_STEPS, stream: { write: () => true } }); // none asked for: none shown
  try {
    steps.next('waiting for the migration image (serving its KMS proxy)');
    await proxy.listen(transport, config.kmsProxy.listen);
    pool.start();
    await pool.waitUp(opts.waitMs ?? 120_000);
    const { mode } = await pool.call('enclave.health', {});
    if (mode !== 'migration') {
      throw new KeystoreError(
        'UNSUPPORTED_VERSION',
        `the enclave is not running the migration image (its mode is ${String(mode)}): start it with "mode": "migration" in its configuration`,
      );
    }
    steps.next("checking the enclave's keystore identity and the default project");
    const identity = pool.identity;
    if (!identity) throw new KeystoreError('IDENTITY_UNAVAILABLE', 'the enclave did not report its keystore identity');
    const checker = new RecordChecker(identity);
    if (!(await seedDefaultProject(store, checker)).ok) {
      throw new KeystoreError(
        'KEY_INTEGRITY',
        `the default project in the database is not signed by the enclave's identity ${identity.publicKey}: this database belongs to another keystore`,
      );
    }
    const project = ((await store.getProject(DEFAULT_PROJECT_ID)) as { signed: { record: string; signature: string } }).signed;

    const total = (await store.counts()).withoutRecord;
    const summary: MigrationSummary = { total, migrated: 0, failed: 0, remaining: total };
    logger.info({ keys: total, identity: identity.publicKey }, total ? 'migrating keys made before 0.4' : 'no key to migrate');
    steps.next(`migrating ${total} key(s) made before 0.4`);
    const bar = steps.count('keys', total);
    let lastProgress = Date.now();
    const progress = (force = false) => {
      if (!force && Date.now() - lastProgress < (opts.progressEveryMs ?? 5000)) return;
      lastProgress = Date.now();
      logger.info({ migrated: summary.migrated, failed: summary.failed, total }, 'migration progress');
    };

    const migrateOne = async (k: StoredKey) => {
      const subject = k.externalId ?? null;
      try {
        const made = await pool.call('keys.migrate', { keyId: k.keyId, blob: k.blob, project, subject });
        const { record } = checkNewKey(checker, made, {
          keyId: k.keyId,
          projectId: DEFAULT_PROJECT_ID,
          subject,
          origin: 'migrated',
          address: k.address,
        });
        if (made.publicKey !== k.publicKey) throw new KeystoreError('KEY_INTEGRITY', 'the enclave answered with another public key');
        if (await store.migrateKey(k.keyId, made.blob, made.record, record)) summary.migrated += 1;
      } catch (err) {
        summary.failed += 1;
        const code = err instanceof KeystoreError ? err.code : 'INTERNAL';
        logger.error({ keyId: k.keyId, code, err }, `could not migrate key ${k.keyId}`);
      }
      bar.tick();
      progress();
    };

    let after = 0;
    for (;;) {
      const batch = await store.keysWithoutRecord(after, BATCH);
      if (batch.length === 0) break;
      after = (batch[batch.length - 1] as { rowSeq: number }).rowSeq;
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(concurrency, batch.length) }, async () => {
          while (next < batch.length) await migrateOne(batch[next++] as StoredKey);
        }),
      );
    }
    if (total) progress(true);
    summary.remaining = (await store.counts()).withoutRecord;
    bar.done(`${summary.migrated} migrated, ${summary.failed} failed, ${summary.remaining} left`);
    logger.info(summary, 'migration finished');
    return summary;
  } finally {
    await pool.close();
    await proxy.close(1000);
    kms.destroy();
    await store.close();
  }
}
