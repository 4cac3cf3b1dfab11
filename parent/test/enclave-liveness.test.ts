/**
 * A frozen enclave, a busy one, a full queue and a parent restart, with real processes over simulated vsock
 * (issue 22, items 4, 7 and 8; docs/OPERATIONS.md, "A frozen enclave"):
 *
 * - SIGSTOP the enclave: a sign already waiting and new ones get 503 UNAVAILABLE (Retry-After) within
 *   about pingIntervalMs × pingMisses, far below the enclave deadline; /readyz says the enclave is not ready and
 *   `nks_enclave_up` is 0; SIGCONT: ready and signing again, on the same connections.
 * - A burst of cold signs held at KMS (the emulator's scripted `hold`) keeps the enclave's main thread free:
 *   it answers its probes and is never marked down.
 * - Beyond `enclave.maxQueued` enclave calls in flight, a sign is refused at once with 503 OVERLOADED, counted in
 *   `nks_enclave_queue_rejections_total`, and nothing more reaches the enclave.
 * - After a parent restart, the enclave's link to the new parent's KMS proxy is made when the parent says hello,
 *   not at the end of a backoff that grew while the parent was down.
 *
 * One stack for the file. Bounds are generous and in the safe direction; every phase polls for its event.
 */
import { tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

const DEADLINE_MS = 20_000;
const PING = { pingIntervalMs: 500, pingTimeoutMs: 500, pingMisses: 3 };
/** Room for the 8 held cold signs of the burst below and /readyz's health call beside them. */
const MAX_QUEUED = 10;
/** Generous: probes notice a frozen enclave within about 500 × 3 + 500 ms. */
const NOTICED_WITHIN_MS = 5_000;

const sign = (s: Stack, keyId: string, message = 'x') => s.api(`/v1/keys/${keyId}/sign`, { body: { type: 'message', message } });
const metric = async (s: Stack, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await s.metrics())?.[1] ?? NaN);
const logEntries = (lines: string[]) =>
  lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });

describe('enclave liveness (real processes)', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-live-'), {
      parentApi: { requestTimeoutMs: DEADLINE_MS + 10_000 },
      parentEnclave: { deadlineMs: DEADLINE_MS, maxQueued: MAX_QUEUED, ...PING },
      // Cold signs held at KMS must outlive the test's look at them: long deadlines below the enclave call's.
      parentKmsProxy: { deadlineMs: 15_000 },
      enclave: { limits: { kmsDeadlineMs: 18_000 } },
    });
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    s?.enclave.child.kill('SIGCONT');
    await s?.platform.setFaults({ hold: false }).catch(() => undefined);
    await s?.stop();
  });

  it('answers 503 UNAVAILABLE within seconds when the enclave is frozen, reports it not ready, and recovers', async () => {
    const key = (await s.api('/v1/keys', { body: {} })).body as { keyId: string };
    expect((await sign(s, key.keyId, 'warm')).status).toBe(200);
    const missesBefore = await metric(s, 'nks_enclave_ping_misses_total');

    s.enclave.child.kill('SIGSTOP');
    try {
      // A sign sent to the frozen enclave: without the probe it would wait the whole 20 s deadline for a 504.
      const started = Date.now();
      const waiting = await sign(s, key.keyId, 'frozen');
      const waited = Date.now() - started;
      expect([waiting.status, waiting.body.error?.code, waiting.headers.get('retry-after')]).toEqual([503, 'UNAVAILABLE', '1']);
      expect(waited).toBeLessThan(NOTICED_WITHIN_MS);
      process.stdout.write(`a sign to the frozen enclave answered 503 after ${waited} ms\n`);

      const ready = await s.api('/readyz', { token: null });
      expect([ready.status, ready.body.checks.enclave]).toEqual([503, false]);
      expect(await metric(s, 'nks_enclave_up')).toBe(0);
      expect((await metric(s, 'nks_enclave_ping_misses_total')) - missesBefore).toBeGreaterThanOrEqual(PING.pingMisses);

      // New requests fail at once while it stays frozen.
      const t1 = Date.now();
      const next = await sign(s, key.keyId, 'still frozen');
      expect([next.status, next.body.error?.code, next.headers.get('retry-after')]).toEqual([503, 'UNAVAILABLE', '1']);
      expect(Date.now() - t1).toBeLessThan(NOTICED_WITHIN_MS);
    } finally {
      s.enclave.child.kill('SIGCONT');
    }

    await waitReady(s, 15_000);
    expect(await metric(s, 'nks_enclave_up')).toBe(1);
    const after = await sign(s, key.keyId, 'thawed');
    expect(after.status).toBe(200);
    const parentLog = logEntries(s.parentLogs().split('\n'));
    expect(parentLog.some((e) => String(e.msg).includes('not used until it answers again'))).toBe(true);
    expect(parentLog.some((e) => String(e.msg).includes('answers again: back in use'))).toBe(true);
    // The same connections came back: none was dropped and made again.
    expect(parentLog.filter((e) => String(e.msg).includes('connection closed; reconnecting'))).toEqual([]);
  }, 60_000);

  it('does not mark the enclave down while a burst of cold signs waits on KMS', async () => {
    const keys: Array<{ keyId: string }> = [];
    for (let i = 0; i < 8; i++) keys.push((await s.api('/v1/keys', { body: {} })).body);
    await s.platform.setFaults({ hold: true, ops: ['Decrypt'] });
    const signs: Array<ReturnType<typeof sign>> = [];
    try {
      for (const k of keys) signs.push(sign(s, k.keyId, 'cold'));
      await s.platform.waitHeld(keys.length);
      // Longer than pingMisses probes: the enclave must stay up (and ready) throughout.
      const until = Date.now() + 2 * PING.pingIntervalMs * PING.pingMisses;
      while (Date.now() < until) {
        const ready = await s.api('/readyz', { token: null });
        expect([ready.status, ready.body.checks.enclave]).toEqual([200, true]);
        expect(await metric(s, 'nks_enclave_up')).toBe(1);
        await new Promise((r) => setTimeout(r, 100));
      }
      // Still waiting on KMS (a request held past the proxy's 2 s attempt cap is asked again, and held too).
      expect((await s.platform.faults()).held).toBeGreaterThanOrEqual(keys.length);
    } finally {
      await s.platform.setFaults({ hold: false });
    }
    expect((await Promise.all(signs)).map((r) => r.status)).toEqual(Array(keys.length).fill(200));
  }, 60_000);

  it('refuses signs beyond enclave.maxQueued at once with 503 OVERLOADED, and counts them', async () => {
    const keys: Array<{ keyId: string }> = [];
    for (let i = 0; i < MAX_QUEUED + 2; i++) keys.push((await s.api('/v1/keys', { body: {} })).body);
    const before = await metric(s, 'nks_enclave_queue_rejections_total');
    await s.platform.setFaults({ hold: true, ops: ['Decrypt'] });
    const held: Array<ReturnType<typeof sign>> = [];
    try {
      for (const k of keys.slice(0, MAX_QUEUED)) held.push(sign(s, k.keyId, 'cold'));
      await s.platform.waitHeld(MAX_QUEUED);
      const beyond = await Promise.all(keys.slice(MAX_QUEUED).map((k) => sign(s, k.keyId, 'beyond')));
      expect(beyond.map((r) => [r.status, r.body.error?.code, r.headers.get('retry-after')])).toEqual([
        [503, 'OVERLOADED', '1'],
        [503, 'OVERLOADED', '1'],
      ]);
      expect((await s.platform.faults()).held).toBe(MAX_QUEUED); // nothing more reached the enclave
    } finally {
      await s.platform.setFaults({ hold: false });
    }
    expect((await Promise.all(held)).map((r) => r.status)).toEqual(Array(MAX_QUEUED).fill(200));
    // The two signs, and any of the parent's own calls (the log puller's, a health read) made while it was full.
    expect((await metric(s, 'nks_enclave_queue_rejections_total')) - before).toBeGreaterThanOrEqual(2);
  }, 60_000);

  it("reconnects the enclave's KMS-proxy link when the restarted parent says hello", async () => {
    const enclaveLogFrom = s.enclave.lines.length;
    await s.stopParent();
    // Long enough for the enclave's reconnect backoff to its KMS proxy to reach its ceiling (2 s): without the
    // hint, the link comes back up to 2 s after the new parent listens.
    await waitFor(
      () => logEntries(s.enclave.lines.slice(enclaveLogFrom)).some((e) => e.msg === 'kms-proxy connect failed'),
      10_000,
      "the enclave's KMS-proxy link to fail",
    );
    await new Promise((r) => setTimeout(r, 4000));
    await s.startParent(); // resolves on its 'parent ready' log line (listening)
    const started = Date.now();
    await waitReady(s, 15_000);
    const readyAfterMs = Date.now() - started;
    const reconnected = logEntries(s.enclave.lines.slice(enclaveLogFrom)).filter((e) => e.msg === 'kms-proxy reconnected');
    expect(reconnected).toHaveLength(1);
    // Made early, on the parent's hello (RpcClient.retryNow), not by the backoff timer.
    expect(reconnected[0]).toMatchObject({ early: true });
    expect(readyAfterMs).toBeLessThan(15_000);
    process.stdout.write(`parent listening to /readyz 200: ${readyAfterMs} ms\n`);
  }, 60_000);
});
