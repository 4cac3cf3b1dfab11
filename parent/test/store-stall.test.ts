/**
 * A database that stops answering (docs/STORAGE.md, "When the disk stalls"): SQLite's statements run in a worker
 * thread, so a write stuck on the disk does not stop the parent's event loop. Another process holds the
 * database's write lock here (what a stalled fsync looks like from the parent: a write that does not return):
 * warm signs, /healthz and /metrics keep answering while a create waits, the create fails as retryable 503
 * STORAGE_UNAVAILABLE at the store's deadline, /readyz says the database is not ready, and all is well again
 * once the lock is gone. No timing bets: the lock is held until the create has been answered.
 */
import Database from 'better-sqlite3';
import { recoverMessageAddress } from 'viem';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, stackDbPath, waitReady, type Stack } from '../../test/support/stack';

describe('a stalled database', () => {
  let s: Stack;
  let runDir: string;
  beforeAll(async () => {
    runDir = tempRunDir('nks-stall-');
    // 3 s: well under SQLite's own busy timeout (5 s), so the answer below is the deadline's, not SQLITE_BUSY's.
    s = await startStack(runDir, { parent: { database: { kind: 'sqlite', path: stackDbPath(runDir), timeoutMs: 3000 } } });
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('keeps warm signing, health and metrics answering while writes fail fast and retryably', async () => {
    const key = (await s.api('/v1/keys', { body: { externalId: 'before-stall' } })).body as { keyId: string; address: string };
    const sign = (message: string) => s.api(`/v1/keys/${key.keyId}/sign`, { body: { type: 'message', message } });
    expect((await sign('warm up')).status).toBe(200); // the key and its project are now cached

    const lock = new Database(s.dbPath);
    lock.exec('BEGIN EXCLUSIVE');
    try {
      let createAnswered = false;
      const create = s.api('/v1/keys', { body: { externalId: 'during-stall' } }).finally(() => (createAnswered = true));
      const during: Array<{ what: string; status: number; whileCreateWaited: boolean }> = [];
      for (let i = 0; i < 5; i++) {
        const r = await sign(`during ${i}`);
        during.push({ what: `sign ${i}`, status: r.status, whileCreateWaited: !createAnswered });
        expect(await recoverMessageAddress({ message: `during ${i}`, signature: r.body.signature })).toBe(key.address);
      }
      const health = await s.api('/healthz', { token: null });
      during.push({ what: 'healthz', status: health.status, whileCreateWaited: !createAnswered });
      const metrics = await fetch(`${s.metricsUrl}/metrics`);
      during.push({ what: 'metrics', status: metrics.status, whileCreateWaited: !createAnswered });
      // Before the create's answer: with statements on the event loop, every one of these waited for it.
      expect(during.filter((d) => d.status !== 200 || !d.whileCreateWaited)).toEqual([]);

      const created = await create;
      expect([created.status, created.body.error?.code, created.headers.get('retry-after')]).toEqual([503, 'STORAGE_UNAVAILABLE', '1']);
      expect(created.body.error.message).toMatch(/did not answer within 3000 ms/);
      const ready = await s.api('/readyz', { token: null });
      expect([ready.status, ready.body.checks?.database]).toEqual([503, false]);
    } finally {
      lock.exec('ROLLBACK');
      lock.close();
    }

    // The lock is gone: the same create is retried as the error says, and answers one key.
    await waitReady(s);
    const retried = await s.api('/v1/keys', { body: { externalId: 'during-stall' } });
    expect([201, 200]).toContain(retried.status);
    const again = await s.api('/v1/keys', { body: { externalId: 'during-stall' } });
    expect([again.status, again.body.keyId]).toEqual([200, retried.body.keyId]);
    expect((await sign('after')).status).toBe(200);
  }, 60_000);
});
