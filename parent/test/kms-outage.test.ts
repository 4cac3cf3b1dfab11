/**
 * KMS faults answered fast and honestly (issue 22, items 5, 6, 11, 12; docs/OPERATIONS.md, "Deadlines" and
 * "Readiness"), over the real processes and the KMS emulator's scripted faults:
 * - deadlines nest from one table, and a configuration out of that order is refused;
 * - an unreachable or failing KMS is 503 KMS_UNAVAILABLE within the proxy's budget, logged with its real cause,
 *   counted into the `kms` readiness check (reported, not gating) and a metric; one answer resets it; a silent
 *   one is asked again within the budget, then is the proxy's TIMEOUT;
 * - under throttling that does not stop, every failing request is 503 KMS_THROTTLED, never 504;
 * - a key policy that stops approving the running image makes /readyz 503 with `unseal: false`, and ready again
 *   once it approves; the canary behind it is rate-limited whatever the parent does.
 */
import { PutKeyPolicyCommand } from '@aws-sdk/client-kms';
import { tempRunDir } from '@nks/shared-test/helpers';
import { DEADLINE_ORDER, DEADLINES, deadlineMarginMs, nests } from '@nks/shared/deadlines';
import { ConfigError } from '@nks/shared/config-file';
import { KMS_UNREADY_AFTER } from '../src/kms/proxy';
import { parseParentConfig, PARENT_CONFIG_DEFAULTS } from '../src/config';
import { attestedPolicy } from '../../test/support/platform';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const minimal = (over: { api?: object; enclave?: object; kmsProxy?: object } = {}) => ({
  api: { listen: { host: '127.0.0.1', port: 0 }, ...over.api },
  tokens: [{ name: 't', sha256: 'a'.repeat(64), scopes: ['admin'] }],
  database: { path: '/tmp/x.db' },
  enclave: { ...over.enclave },
  kmsProxy: { allowedKeyArns: [ARN], region: 'us-east-1', ...over.kmsProxy },
});

describe('deadlines that nest', () => {
  it('orders the table: each layer ends at least a margin before its caller', () => {
    const values = DEADLINE_ORDER.map((k) => DEADLINES[k]);
    for (let i = 1; i < values.length; i++) expect(nests(values[i]!, values[i - 1]!)).toBe(true);
    expect(values).toEqual([...values].sort((a, b) => b - a));
  });

  it('takes the defaults of both programs from the table', () => {
    const c = parseParentConfig(minimal());
    expect([c.api.requestTimeoutMs, c.enclave.deadlineMs, c.kmsProxy.deadlineMs]).toEqual([
      DEADLINES.apiRequestMs,
      DEADLINES.enclaveCallMs,
      DEADLINES.kmsProxyMs,
    ]);
    expect(PARENT_CONFIG_DEFAULTS.kmsProxy.deadlineMs).toBe(DEADLINES.kmsProxyMs);
    // The enclave's (limits.kmsDeadlineMs): enclave/test/unseal-canary.test.ts.
  });

  it.each([
    [{ kmsProxy: { deadlineMs: 10_000 } }, 'config.kmsProxy.deadlineMs (10000 ms)', 'config.enclave.deadlineMs (10000 ms)'],
    [{ enclave: { deadlineMs: 12_000 }, kmsProxy: { deadlineMs: 11_800 } }, 'config.kmsProxy.deadlineMs', 'config.enclave.deadlineMs'],
    [
      { api: { requestTimeoutMs: 10_000 }, enclave: { deadlineMs: 10_000 } },
      'config.enclave.deadlineMs (10000 ms)',
      'config.api.requestTimeoutMs (10000 ms)',
    ],
    [{ api: { requestTimeoutMs: 5_000 }, enclave: { deadlineMs: 8_000 } }, 'config.enclave.deadlineMs', 'config.api.requestTimeoutMs'],
  ])('refuses a configuration whose deadlines do not nest (%j)', (over, inner, outer) => {
    let err: unknown;
    try {
      parseParentConfig(minimal(over));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(inner);
    expect((err as Error).message).toContain(outer);
  });

  it('shortens an unset deadline to nest inside a shorter one that calls it', () => {
    const c = parseParentConfig(minimal({ api: { requestTimeoutMs: 5_000 } }));
    expect([c.enclave.deadlineMs, c.kmsProxy.deadlineMs]).toEqual([4_500, 4_000]);
    const d = parseParentConfig(minimal({ enclave: { deadlineMs: 5_000 } }));
    expect([d.api.requestTimeoutMs, d.enclave.deadlineMs, d.kmsProxy.deadlineMs]).toEqual([DEADLINES.apiRequestMs, 5_000, 4_500]);
    // Never lengthened: a longer caller keeps the table's defaults.
    const e = parseParentConfig(minimal({ api: { requestTimeoutMs: 60_000 } }));
    expect([e.enclave.deadlineMs, e.kmsProxy.deadlineMs]).toEqual([DEADLINES.enclaveCallMs, DEADLINES.kmsProxyMs]);
  });

  it('accepts deadlines that nest by exactly the margin', () => {
    const enclave = 5000;
    const c = parseParentConfig(
      minimal({
        api: { requestTimeoutMs: enclave + 1000 },
        enclave: { deadlineMs: enclave },
        kmsProxy: { deadlineMs: enclave - deadlineMarginMs(enclave) },
      }),
    );
    expect(c.kmsProxy.deadlineMs).toBe(4500);
  });
});

const sign = (s: Stack, keyId: string, message = 'x') => s.api(`/v1/keys/${keyId}/sign`, { body: { type: 'message', message } });

describe('KMS outages over the real stack', () => {
  // The stack's own nesting: API 15 s > parent -> enclave 6 s > enclave's KMS 5 s > proxy 4.5 s > one attempt 2 s.
  const PROXY_MS = 4500;
  const CANARY_MS = 1000;
  let s: Stack;
  const cold: Array<{ keyId: string; address: string }> = [];
  const readyz = async () => (await s.api('/readyz', { token: null })) as { status: number; body: { checks: Record<string, boolean> } };
  const gauge = async () => Number(/^nks_kms_consecutive_failures (\d+)$/m.exec(await s.metrics())?.[1]);
  const metricsText = async () => await s.metrics();
  /** The enclave's health counters, as the parent's /metrics mirrors them. */
  const counters = async () => {
    const text = await metricsText();
    const get = (name: string) => Number(new RegExp(`^nks_enclave_counter\\{counter="${name}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    return { kmsCalls: get('kmsCalls'), identityKmsCalls: get('identityKmsCalls'), unsealCanaries: get('unsealCanaries') };
  };
  const unsealState = async () => /^nks_enclave_unseal\{state="(\w+)"\} 1$/m.exec(await metricsText())?.[1];
  const until = async <T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 30_000): Promise<T> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = await get();
      if (ok(v)) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const newKey = async () => {
    const r = await s.api('/v1/keys', { body: {} });
    expect(r.status).toBe(201);
    return r.body as { keyId: string; address: string };
  };

  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-kmsout-'), {
      parentEnclave: { deadlineMs: 6000 },
      parentKmsProxy: { deadlineMs: PROXY_MS },
      enclave: { limits: { kmsDeadlineMs: 5000, unsealCanaryMs: CANARY_MS } },
    });
    await waitReady(s);
    for (let i = 0; i < 8; i++) cold.push(await newKey());
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });
  afterEach(async () => {
    await s.platform.setFaults({ unreachable: 'none', throttleNext: 0, errorNext: 0, errorStatus: 500, hold: false, ops: [] });
  });

  it('answers an unreachable KMS with 503 KMS_UNAVAILABLE, logs the cause, reports kms:false (still ready), and recovers', async () => {
    await s.platform.setFaults({ unreachable: 'reset', ops: ['Decrypt'] });
    for (let i = 0; i < KMS_UNREADY_AFTER; i++) {
      const res = await sign(s, cold[0]!.keyId);
      expect([res.status, res.body.error.code, res.headers.get('retry-after')]).toEqual([503, 'KMS_UNAVAILABLE', '1']);
    }
    // The log names the network error, not just "Error".
    const line = await s.parent.waitForLog(
      (e) => e.msg?.toString().startsWith('KMS decrypt refused') === true && e.code === 'KMS_UNAVAILABLE',
    );
    expect(line).toMatchObject({ kms: { networkCode: 'ECONNRESET' } });
    expect(await gauge()).toBe(KMS_UNREADY_AFTER);
    // Reported, not gating: warm keys still sign.
    const r = await readyz();
    expect([r.status, r.body.checks.kms, r.body.checks.unseal]).toEqual([200, false, true]);

    await s.platform.setFaults({ unreachable: 'none' });
    expect((await sign(s, cold[0]!.keyId)).status).toBe(200);
    expect(await gauge()).toBe(0);
    expect((await readyz()).body.checks.kms).toBe(true);
  }, 60_000);

  it('asks a KMS that says nothing again within the budget, then ends it at the proxy with TIMEOUT naming KMS', async () => {
    await s.platform.setFaults({ unreachable: 'silent', ops: ['Decrypt'] });
    const before = (await s.platform.stats()).Decrypt?.errors.NoAnswer ?? 0;
    const res = await sign(s, cold[1]!.keyId);
    // The innermost layer's fault (KMS silent), not an outer layer's deadline.
    expect([res.status, res.body.error.code]).toEqual([504, 'TIMEOUT']);
    expect(res.body.error.message).toMatch(/^KMS did not answer within \d+ ms$/);
    // Each request had at most 2 s of the 4.5 s: a second one was made.
    expect(((await s.platform.stats()).Decrypt?.errors.NoAnswer ?? 0) - before).toBe(2);
  }, 60_000);

  it('answers KMS 5xx with 503 KMS_UNAVAILABLE and logs the HTTP status and AWS request id', async () => {
    await s.platform.setFaults({ errorNext: 1_000_000, errorStatus: 503, ops: ['Decrypt'] });
    const res = await sign(s, cold[1]!.keyId);
    expect([res.status, res.body.error.code]).toEqual([503, 'KMS_UNAVAILABLE']);
    const line = await s.parent.waitForLog(
      (e) => e.msg?.toString().startsWith('KMS decrypt refused') === true && (e.kms as { httpStatus?: number })?.httpStatus === 503,
    );
    expect(line.kms).toMatchObject({ name: 'KMSInternalException', httpStatus: 503, requestId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
  }, 60_000);

  it('answers every request under throttling that does not stop with 503 KMS_THROTTLED, never 504', async () => {
    await s.platform.setFaults({ throttleNext: 1_000_000, ops: ['Decrypt'] });
    const results = await Promise.all(cold.slice(2, 8).map((k) => sign(s, k.keyId)));
    expect(results.map((r) => [r.status, r.body.error?.code, r.headers.get('retry-after')])).toEqual(
      Array(6).fill([503, 'KMS_THROTTLED', '1']),
    );
    expect((await readyz()).body.checks.kms).toBe(false);
    await s.platform.setFaults({ throttleNext: 0 });
    expect((await sign(s, cold[2]!.keyId)).status).toBe(200);
  }, 60_000);

  it('reports unseal:false (503) when the key policy stops approving this image, and is ready again once it approves', async () => {
    const approver = s.platform.kms('AKIDAPPROVER');
    const setPolicy = (pcr0: string) =>
      approver.send(new PutKeyPolicyCommand({ KeyId: s.platform.keyArn, PolicyName: 'default', Policy: attestedPolicy(pcr0) }));
    const before = await counters();
    try {
      await setPolicy('ab'.repeat(48));
      const res = await sign(s, cold[3]!.keyId);
      expect([res.status, res.body.error.code]).toEqual([502, 'KMS_ACCESS_DENIED']);
      const r = await until('readyz 503', readyz, (x) => x.status === 503);
      expect(r.body.checks).toMatchObject({ unseal: false, enclave: true, kms: true });
      expect(await unsealState()).toBe('failing');
      // The enclave says why with the code only.
      expect(await s.enclave.waitForLog((e) => e.msg === 'this enclave cannot unseal')).toMatchObject({ code: 'KMS_ACCESS_DENIED' });
      // Exactly one user-key Decrypt for the one cold sign; the canary's are counted apart.
      const c = await counters();
      expect(c.kmsCalls - before.kmsCalls).toBe(1);
      expect(c.unsealCanaries - before.unsealCanaries).toBeGreaterThanOrEqual(1);
      expect(c.identityKmsCalls - before.identityKmsCalls).toBe(c.unsealCanaries - before.unsealCanaries);
    } finally {
      await setPolicy(s.platform.pcr0);
      approver.destroy();
    }
    // The canary runs while failing (once a second here) and sees the approval: ready without any sign.
    const back = await until('readyz 200', readyz, (x) => x.status === 200);
    expect(back.body.checks.unseal).toBe(true);
    expect(await unsealState()).toBe('ok');
    expect((await sign(s, cold[3]!.keyId)).status).toBe(200);
  }, 60_000);

  it('rate-limits the canary however many refusals the parent causes', async () => {
    const approver = s.platform.kms('AKIDAPPROVER');
    const setPolicy = (pcr0: string) =>
      approver.send(new PutKeyPolicyCommand({ KeyId: s.platform.keyArn, PolicyName: 'default', Policy: attestedPolicy(pcr0) }));
    // A canary of an earlier test may have run within CANARY_MS: let its window pass, so the first refusal here
    // starts one.
    await new Promise((r) => setTimeout(r, CANARY_MS));
    const before = (await counters()).unsealCanaries;
    const started = Date.now();
    try {
      await setPolicy('cd'.repeat(48));
      // 20 cold signs, each refused: each would start a canary without the rate limit.
      for (let i = 0; i < 20; i++) expect((await sign(s, cold[4 + (i % 4)]!.keyId)).status).toBe(502);
    } finally {
      await setPolicy(s.platform.pcr0);
      approver.destroy();
    }
    // The canary a refusal started may still be under way: its count is taken once it is.
    const runs = (await until('a canary counted', counters, (c) => c.unsealCanaries > before)).unsealCanaries - before;
    // At most one per CANARY_MS (plus the one a refusal may start at once): a bound in the safe direction.
    expect(runs).toBeGreaterThanOrEqual(1);
    expect(runs).toBeLessThanOrEqual(Math.ceil((Date.now() - started) / CANARY_MS) + 1);
    expect(runs).toBeLessThan(20);
    await until('readyz 200', readyz, (x) => x.status === 200);
  }, 60_000);
});
