/**
 * Reliability of the parent (parent/README.md, "Parts"): durable before acknowledged, idempotent creation
 * under concurrency, bounded in-flight work, and an enclave that stops and comes back under load.
 *
 * No timing bets: every phase waits for its event (a count of outcomes, readiness, KMS calls held by the
 * emulator), KMS faults are scripted ("fail the next N", "hold until released") rather than random, and the
 * only wall-clock bounds left are generous ones in the safe direction.
 */
import Database from 'better-sqlite3';
import { recoverMessageAddress } from 'viem';
import { tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

const sign = (s: Stack, keyId: string, message = 'x') => s.api(`/v1/keys/${keyId}/sign`, { body: { type: 'message', message } });

describe('durability and idempotency', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-rel-'));
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('keeps a key acknowledged with 201 when the parent is killed -9 right after', async () => {
    const created = await s.api('/v1/keys', { body: { externalId: 'durable-1' } });
    expect(created.status).toBe(201);
    await s.restartParent({ kill: true });
    await waitReady(s);
    const got = await s.api(`/v1/keys/${created.body.keyId}`);
    expect(got.status).toBe(200);
    expect(got.body.address).toBe(created.body.address);
    const signed = await sign(s, created.body.keyId, 'after crash');
    expect(signed.status).toBe(200);
    expect(await recoverMessageAddress({ message: 'after crash', signature: signed.body.signature })).toBe(created.body.address);
  }, 60_000);

  it('yields exactly one key for 50 concurrent creates of one external id', async () => {
    const results = await Promise.all(Array.from({ length: 50 }, () => s.api('/v1/keys', { body: { externalId: 'contested' } })));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((x) => x === 201)).toHaveLength(1);
    expect(statuses.filter((x) => x === 200)).toHaveLength(49);
    expect(new Set(results.map((r) => r.body.keyId)).size).toBe(1);
    const db = new Database(s.dbPath, { readonly: true });
    try {
      expect(db.prepare("SELECT COUNT(*) AS n FROM keys WHERE external_id = 'contested'").get()).toEqual({ n: 1 });
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    } finally {
      db.close();
    }
  });
});

describe('enclave stopped and restarted under load', () => {
  // Generous, so that cold signs after the restart never race it; failing fast is shown by failures being 503
  // UNAVAILABLE or OVERLOADED (a request that waited for the deadline would be a 504 TIMEOUT).
  const ENCLAVE_DEADLINE_MS = 10_000;
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-load-'), { parentEnclave: { deadlineMs: ENCLAVE_DEADLINE_MS } });
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('fails in-flight requests fast and retryably, hangs none, and recovers', async () => {
    const keys = await Promise.all(
      Array.from({ length: 4 }, () => s.api('/v1/keys', { body: {} }).then((r) => r.body as { keyId: string })),
    );
    type Phase = 'before kill' | 'down' | 'after ready';
    let phase: Phase = 'before kill';
    let stop = false;
    // Each outcome carries the phase in which its request was sent, not its position in the list: a request
    // sent while the enclave was down may well complete after it is back.
    const outcomes: Array<{ phase: Phase; status: number; code?: string; retryAfter: string | null; ms: number }> = [];
    const count = (pred: (o: (typeof outcomes)[number]) => boolean) => outcomes.filter(pred).length;
    const worker = async (i: number) => {
      let n = 0;
      while (!stop) {
        const key = keys[(i + n++) % keys.length] as { keyId: string };
        const sentIn = phase;
        const t0 = Date.now();
        const res = await fetch(`${s.url}/v1/keys/${key.keyId}/sign`, {
          method: 'POST',
          headers: { authorization: `Bearer ${s.tokens.full}`, 'content-type': 'application/json' },
          body: JSON.stringify({ type: 'message', message: `m${n}` }),
          signal: AbortSignal.timeout(2 * ENCLAVE_DEADLINE_MS), // a hang shows up as an abort, and fails the test
        });
        const body = (await res.json()) as { error?: { code: string } };
        outcomes.push({
          phase: sentIn,
          status: res.status,
          code: body.error?.code,
          retryAfter: res.headers.get('retry-after'),
          ms: Date.now() - t0,
        });
        if (res.status !== 200) await new Promise((r) => setTimeout(r, 20)); // not synchronisation: a client's pause before retrying
      }
    };
    const workers = Array.from({ length: 8 }, (_, i) => worker(i));
    try {
      await waitFor(() => count((o) => o.status === 200) >= 20, 30_000, 'signs before the kill');
      phase = 'down';
      s.enclave.child.kill('SIGKILL');
      await s.enclave.exited;
      // While the enclave is down, requests fail: wait until a number of them have.
      await waitFor(() => count((o) => o.phase === 'down' && o.status !== 200) >= 8, 30_000, 'failures while the enclave is down');
      await s.startEnclave();
      await waitReady(s);
      phase = 'after ready';
      await waitFor(() => count((o) => o.phase === 'after ready') >= 16, 30_000, 'requests after the restart');
    } finally {
      stop = true;
      await Promise.allSettled(workers);
    }
    await Promise.all(workers); // a worker that failed (e.g. an aborted hang) fails the test

    const failures = outcomes.filter((o) => o.status !== 200);
    expect(failures.length).toBeGreaterThanOrEqual(8);
    for (const f of failures) {
      expect(f.status).toBe(503);
      expect(['UNAVAILABLE', 'OVERLOADED']).toContain(f.code);
      expect(f.retryAfter).toBe('1');
      expect(f.ms).toBeLessThan(ENCLAVE_DEADLINE_MS); // never waited for the deadline
    }
    const before = outcomes.filter((o) => o.phase === 'before kill' && o.status === 200);
    expect(before.length).toBeGreaterThanOrEqual(20);
    const later = outcomes.filter((o) => o.phase === 'after ready');
    expect(later.length).toBeGreaterThanOrEqual(16);
    expect(later.filter((o) => o.status !== 200)).toEqual([]);
  }, 120_000);
});

describe('bounded in-flight work and scripted KMS faults', () => {
  const MAX_IN_FLIGHT = 3;
  let s: Stack;
  beforeAll(async () => {
    // Long deadlines on every hop: a KMS call held by the test must not time out while the test looks at it.
    s = await startStack(tempRunDir('nks-cap-'), {
      parentApi: { maxInFlight: MAX_IN_FLIGHT, requestTimeoutMs: 60_000 },
      parentEnclave: { deadlineMs: 50_000 },
      parentKmsProxy: { deadlineMs: 40_000 },
      enclave: { limits: { kmsDeadlineMs: 45_000 } },
    });
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });
  afterEach(async () => {
    await s?.platform.setFaults({ hold: false, throttleNext: 0, errorNext: 0, ops: [] });
  });

  const newKeys = async (n: number) => {
    const keys: Array<{ keyId: string; address: string }> = [];
    for (let i = 0; i < n; i++) keys.push((await s.api('/v1/keys', { body: {} })).body);
    return keys;
  };
  const overloadedTotal = async () => Number(/^nks_http_overloaded_total (\d+)/m.exec(await s.metrics())?.[1] ?? 0);

  it('answers 503 OVERLOADED with Retry-After for exactly the requests beyond the in-flight cap', async () => {
    const keys = await newKeys(MAX_IN_FLIGHT + 5);
    const overloadedBefore = await overloadedTotal();
    // Cold signs hold their KMS Decrypt in the emulator: the first MAX_IN_FLIGHT requests stay in flight.
    await s.platform.setFaults({ hold: true, ops: ['Decrypt'] });
    const inFlight = keys.slice(0, MAX_IN_FLIGHT).map((k) => sign(s, k.keyId));
    await s.platform.waitHeld(MAX_IN_FLIGHT);
    // Every further request is refused at once (nothing is released until they all have their answer).
    const beyond = await Promise.all(keys.slice(MAX_IN_FLIGHT).map((k) => sign(s, k.keyId)));
    expect(beyond.map((r) => [r.status, r.body.error?.code, r.headers.get('retry-after')])).toEqual(
      beyond.map(() => [503, 'OVERLOADED', '1']),
    );
    expect((await s.platform.faults()).held).toBe(MAX_IN_FLIGHT);
    await s.platform.setFaults({ hold: false });
    const served = await Promise.all(inFlight);
    expect(served.map((r) => r.status)).toEqual(Array(MAX_IN_FLIGHT).fill(200));
    expect((await overloadedTotal()) - overloadedBefore).toBe(5);
    // With the cap free again, the refused requests go through.
    expect((await Promise.all(keys.slice(MAX_IN_FLIGHT, 2 * MAX_IN_FLIGHT).map((k) => sign(s, k.keyId)))).map((r) => r.status)).toEqual(
      Array(MAX_IN_FLIGHT).fill(200),
    );
  }, 60_000);

  it('retries KMS throttling and succeeds within the deadline', async () => {
    const [key] = await newKeys(1);
    const before = (await s.platform.stats()).Decrypt?.errors.ThrottlingException ?? 0;
    await s.platform.setFaults({ throttleNext: 3, ops: ['Decrypt'] });
    const res = await sign(s, key!.keyId);
    expect(res.status).toBe(200);
    expect(await recoverMessageAddress({ message: 'x', signature: res.body.signature })).toBe(key!.address);
    expect(((await s.platform.stats()).Decrypt?.errors.ThrottlingException ?? 0) - before).toBe(3);
    expect((await s.platform.faults()).throttleNext).toBe(0);
  }, 60_000);

  it('rides out KMS 500s by retrying', async () => {
    const keys = await newKeys(5);
    const before = (await s.platform.stats()).Decrypt?.errors.KMSInternalException ?? 0;
    // Two failures before each of the five cold signs' Decrypts succeeds (each sign retries its own).
    const results = [];
    for (const k of keys) {
      await s.platform.setFaults({ errorNext: 2, ops: ['Decrypt'] });
      results.push(await sign(s, k.keyId));
    }
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(((await s.platform.stats()).Decrypt?.errors.KMSInternalException ?? 0) - before).toBe(10);
  }, 60_000);
});

describe('KMS throttling that does not stop', () => {
  const KMS_DEADLINE_MS = 3000;
  let s: Stack;
  beforeAll(async () => {
    // A proxy deadline short enough that giving up takes 3 s, long enough for a cold sign on a loaded machine.
    s = await startStack(tempRunDir('nks-thr-'), { parentKmsProxy: { deadlineMs: KMS_DEADLINE_MS } });
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('retries until the proxy deadline, then reports it as retryable; the key signs once KMS answers', async () => {
    const key = (await s.api('/v1/keys', { body: {} })).body as { keyId: string };
    const before = (await s.platform.stats()).Decrypt?.errors.ThrottlingException ?? 0;
    await s.platform.setFaults({ throttleNext: 1_000_000, ops: ['Decrypt'] });
    let res;
    try {
      res = await sign(s, key.keyId);
    } finally {
      await s.platform.setFaults({ throttleNext: 0 });
    }
    expect(((await s.platform.stats()).Decrypt?.errors.ThrottlingException ?? 0) - before).toBeGreaterThan(1); // retried
    // The proxy gives up with KMS's last answer (503 KMS_THROTTLED, Retry-After 1), before any outer deadline:
    // the fault that happened is the one the caller is told (shared/src/deadlines.ts), never a 504.
    expect([res.status, res.body.error.code, res.headers.get('retry-after')]).toEqual([503, 'KMS_THROTTLED', '1']);
    expect((await sign(s, key.keyId)).status).toBe(200);
  }, 60_000);
});
