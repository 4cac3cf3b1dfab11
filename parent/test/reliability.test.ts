/**
 * Reliability of the parent (DESIGN §9): durable before acknowledged, idempotent creation under concurrency,
 * bounded in-flight work, and an enclave that stops and comes back under load.
 */
import Database from 'better-sqlite3';
import { recoverMessageAddress } from 'viem';
import { tempRunDir } from '../../shared/test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

describe('durability and idempotency', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-rel-'));
    await waitReady(s);
  }, 60_000);
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
    const signed = await s.api(`/v1/keys/${created.body.keyId}/sign`, { body: { type: 'message', message: 'after crash' } });
    expect(signed.status).toBe(200);
    expect(await recoverMessageAddress({ message: 'after crash', signature: signed.body.signature })).toBe(created.body.address);
  });

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
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-load-'), { parent: { enclave: { address: 'vsock://16:5000', poolSize: 2, deadlineMs: 3000 } } });
    await waitReady(s);
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('fails in-flight requests fast and retryably, hangs none, and recovers', async () => {
    const keys = await Promise.all(Array.from({ length: 4 }, () => s.api('/v1/keys', { body: {} }).then((r) => r.body)));
    let stop = false;
    const outcomes: Array<{ status: number; code?: string; retryAfter: string | null; ms: number }> = [];
    const worker = async (i: number) => {
      let n = 0;
      while (!stop) {
        const key = keys[(i + n++) % keys.length];
        const t0 = Date.now();
        const ctrl = AbortSignal.timeout(8000); // a hang would show up as an abort
        const res = await fetch(`${s.url}/v1/keys/${key.keyId}/sign`, {
          method: 'POST',
          headers: { authorization: `Bearer ${s.tokens.full}`, 'content-type': 'application/json' },
          body: JSON.stringify({ type: 'message', message: `m${n}` }),
          signal: ctrl,
        });
        const body = (await res.json()) as { error?: { code: string } };
        outcomes.push({ status: res.status, code: body.error?.code, retryAfter: res.headers.get('retry-after'), ms: Date.now() - t0 });
        if (res.status !== 200) await new Promise((r) => setTimeout(r, 20));
      }
    };
    const workers = Array.from({ length: 8 }, (_, i) => worker(i));
    await new Promise((r) => setTimeout(r, 500));
    const beforeKill = outcomes.length;
    s.enclave.child.kill('SIGKILL');
    await s.enclave.exited;
    await new Promise((r) => setTimeout(r, 700));
    await s.startEnclave();
    await waitReady(s);
    const afterRestart = outcomes.length;
    await new Promise((r) => setTimeout(r, 700));
    stop = true;
    await Promise.all(workers);

    expect(beforeKill).toBeGreaterThan(10);
    const failures = outcomes.filter((o) => o.status !== 200);
    expect(failures.length).toBeGreaterThan(0);
    for (const f of failures) {
      expect(f.status).toBe(503);
      expect(['UNAVAILABLE', 'OVERLOADED']).toContain(f.code);
      expect(f.retryAfter).toBe('1');
      expect(f.ms).toBeLessThan(3500); // within the enclave deadline, never hanging
    }
    const later = outcomes.slice(afterRestart);
    expect(later.length).toBeGreaterThan(5);
    expect(later.every((o) => o.status === 200)).toBe(true);
  });
});

describe('bounded in-flight work and KMS faults', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-cap-'), { parentApi: { maxInFlight: 3 } });
    await waitReady(s);
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('answers 503 OVERLOADED with Retry-After beyond the in-flight cap', async () => {
    const keys = [];
    for (let i = 0; i < 8; i++) keys.push((await s.api('/v1/keys', { body: {} })).body);
    await s.platform.setFaults({ latencyMs: 400 }); // cold signs now take at least 400 ms
    try {
      const results = await Promise.all(keys.map((k) => s.api(`/v1/keys/${k.keyId}/sign`, { body: { type: 'message', message: 'x' } })));
      const overloaded = results.filter((r) => r.status === 503);
      expect(overloaded.length).toBeGreaterThanOrEqual(4);
      for (const r of overloaded) {
        expect(r.body.error.code).toBe('OVERLOADED');
        expect(r.headers.get('retry-after')).toBe('1');
      }
      expect(results.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(1);
      expect(String((await s.api('/metrics', { token: null })).body)).toMatch(/nks_http_overloaded_total [1-9]/);
    } finally {
      await s.platform.setFaults({ latencyMs: 0 });
    }
  });

  it('retries KMS throttling within the deadline, then reports it as retryable', async () => {
    const key = (await s.api('/v1/keys', { body: {} })).body;
    await s.platform.setFaults({ throttleRate: 1 });
    try {
      const res = await s.api(`/v1/keys/${key.keyId}/sign`, { body: { type: 'message', message: 'x' } });
      expect(res.status).toBe(503);
      expect(res.body.error.code).toBe('KMS_THROTTLED');
      expect(res.headers.get('retry-after')).toBe('1');
      const stats = await s.platform.stats();
      expect(stats.Decrypt?.errors.ThrottlingException).toBeGreaterThan(1); // retried
    } finally {
      await s.platform.setFaults({ throttleRate: 0 });
    }
    expect((await s.api(`/v1/keys/${key.keyId}/sign`, { body: { type: 'message', message: 'x' } })).status).toBe(200);
  });

  it('rides out intermittent KMS 500s by retrying', async () => {
    const keys = [];
    for (let i = 0; i < 5; i++) keys.push((await s.api('/v1/keys', { body: {} })).body);
    await s.platform.setFaults({ errorRate: 0.5 });
    try {
      const results = [];
      for (const k of keys) results.push(await s.api(`/v1/keys/${k.keyId}/sign`, { body: { type: 'message', message: 'x' } }));
      expect(results.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(4);
    } finally {
      await s.platform.setFaults({ errorRate: 0 });
    }
  });
});
