/**
 * A full or failing disk (docs/RELIABILITY.md): the parent's database under the disk-fault shim
 * (test/chaos/disk-faults.c, LD_PRELOAD: writes fail with ENOSPC, fsync with EIO, on the database's files only).
 * Creates answer 503 STORAGE_UNAVAILABLE, retryable with Retry-After, /readyz says the database is not ready
 * (reads still work on a full disk: only a write can tell), warm signs and reads keep working, nothing
 * acknowledged is lost, and once the disk takes writes again readiness returns, by itself (the store's probe
 * write) or with the next write. Needs a C compiler (cc) for the shim.
 */
import { recoverMessageAddress } from 'viem';
import { tempRunDir } from '@nks/shared-test/helpers';
import { diskFaults, type DiskFaults } from '../chaos/disk-faults';
import { startStack, stackDbPath, waitReady, type Stack } from '../support/stack';

describe('a full or failing disk', () => {
  let s: Stack;
  let faults: DiskFaults;
  beforeAll(async () => {
    const runDir = tempRunDir('nks-full-');
    faults = diskFaults(stackDbPath(runDir), runDir);
    s = await startStack(runDir, { parentEnv: faults.env });
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    faults?.clear();
    await s?.stop();
  });

  const create = (externalId: string) => s.api('/v1/keys', { body: { externalId } });
  const readiness = async () => {
    const r = await s.api('/readyz', { token: null });
    return [r.status, r.body.checks?.database];
  };
  const refusal = (r: { status: number; body: any; headers: Headers }) => [
    r.status,
    r.body.error?.code,
    r.body.error?.retryable,
    r.headers.get('retry-after'),
  ];

  it('refuses writes retryably on a full disk, reports not ready, loses nothing, and is ready again once writes work', async () => {
    const before = await create('before-full');
    expect(before.status).toBe(201);
    const sign = (message: string) => s.api(`/v1/keys/${before.body.keyId}/sign`, { body: { type: 'message', message } });
    expect((await sign('warm up')).status).toBe(200);

    faults.full(true);
    try {
      const refused = await create('during-full');
      expect(refusal(refused)).toEqual([503, 'STORAGE_UNAVAILABLE', true, '1']);
      expect(refused.body.error.message).toMatch(/SQLITE_FULL/);
      // Reads answer on a full disk, so only the failed write tells: before the fix /readyz stayed 200 here.
      expect(await readiness()).toEqual([503, false]);
      expect(await readiness()).toEqual([503, false]); // the probe write fails too while the disk is full
      const signed = await sign('while full');
      expect([signed.status, await recoverMessageAddress({ message: 'while full', signature: signed.body.signature })]).toEqual([
        200,
        before.body.address,
      ]);
      expect((await s.api(`/v1/keys/${before.body.keyId}`, { token: 'read' })).status).toBe(200);
    } finally {
      faults.full(false);
    }

    // No caller write needed: /readyz's probe write succeeds now (a load balancer may have stopped sending).
    await waitReady(s);
    expect(await readiness()).toEqual([200, true]);
    const retried = await create('during-full');
    expect(retried.status).toBe(201); // the refused create stored nothing: the retry makes it
    const kept = await s.api(`/v1/keys/${before.body.keyId}`, { token: 'read' });
    expect([kept.status, kept.body.address]).toEqual([200, before.body.address]);
  }, 60_000);

  it('refuses writes retryably while fsync fails, and is ready again with the next write that succeeds', async () => {
    faults.failFsync(true);
    try {
      const refused = await create('during-eio');
      expect(refusal(refused)).toEqual([503, 'STORAGE_UNAVAILABLE', true, '1']);
      expect(refused.body.error.message).toMatch(/SQLITE_IOERR/);
      expect(await readiness()).toEqual([503, false]);
    } finally {
      faults.failFsync(false);
    }
    const retried = await create('during-eio');
    expect([201, 200]).toContain(retried.status); // a commit whose fsync failed may or may not have stayed
    expect(await readiness()).toEqual([200, true]);
    const again = await create('during-eio');
    expect([again.status, again.body.keyId]).toEqual([200, retried.body.keyId]);
  }, 60_000);
});
