/**
 * Signing policies in the enclave (docs/POLICIES.md), against the real enclave bundle over simulated vsock
 * (KMS emulator, NSM simulator), the test standing where a fully compromised parent would:
 * - a policy refuses a sign with POLICY_DENIED naming the rule or limit and why, before any KMS call;
 * - the parent can neither replay an older project record with a laxer policy (or none), nor edit or drop the
 *   policy in a record: KEY_INTEGRITY;
 * - projects.setPolicies makes the next record; projects.evaluatePolicy is a dry run that counts nothing;
 * - limits count per key and per project, refuse beyond the maximum, take back a failed signature's count, and
 *   fail closed when the enclave tracks as many counters as its configuration allows;
 * - a project without policies signs as before.
 */
import { ERROR_CODES } from '@nks/shared/errors';
import { decodeCanonicalCbor } from '@nks/shared/cbor';
import type { CreateResult, ProjectResult } from '@nks/shared/enclave-api';
import type { PoliciesInput } from '@nks/shared/policy/schema';
import { decodeProjectRecord, encodeRecord, hex, recordDigest, type ProjectRecord, type SignedRecord } from '@nks/shared/records';
import { rejection, tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { NO_POLICIES_REASON } from '../src/policy/enforcer';
import { TRACKING_FULL } from '../src/policy/limits';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { digestOf, startEnclaveHarness, type EnclaveHarness } from './harness';

jest.setTimeout(120_000);

const ALL_TYPES = ['digest', 'message', 'typedData', 'transaction', 'authorization', 'userOperation'];
const TO = '0x000000000000000000000000000000000000dEaD';
const INTEGRITY = ['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE];

const recordOf = (s: SignedRecord): ProjectRecord => decodeProjectRecord(Buffer.from(s.record, 'base64'));
const digest = (i: number) => ({ type: 'digest', digest: digestOf(i) }) as const;
const message = (text: string) => ({ type: 'message', message: text }) as const;
/** An EIP-1559 transfer; a tip above the fee cap passes the schema and fails at the signature (viem refuses it). */
const tx = (value: number, over: Record<string, unknown> = {}) =>
  ({
    type: 'transaction',
    transaction: {
      type: 'eip1559',
      chainId: 1,
      nonce: 0,
      to: TO,
      value: String(value),
      maxFeePerGas: '100',
      maxPriorityFeePerGas: '1',
      ...over,
    },
  }) as never;

describe('signing policies in the enclave (real bundle, the test in the parent seat)', () => {
  let h: EnclaveHarness;
  let n = 0;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-pol-'));
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
  });

  const newProject = (policies?: PoliciesInput): Promise<ProjectResult> =>
    h.client.call('projects.create', {
      settings: { auth: { type: 'token' }, allowedRequestTypes: ALL_TYPES, ...(policies ? { policies } : {}) } as never,
    });
  const newKey = (project: ProjectResult) => h.create(`pol-${++n}`, { project: project.record });
  const sign = (key: CreateResult, project: SignedRecord, request: unknown) =>
    h.client.call('keys.sign', { keyId: key.keyId, blob: key.blob, record: key.record, project, request: request as never });
  const setPolicies = (project: SignedRecord, policies: PoliciesInput) => h.client.call('projects.setPolicies', { project, policies });
  const evaluate = (project: SignedRecord, request: unknown, more: { record?: SignedRecord; policies?: PoliciesInput } = {}) =>
    h.client.call('projects.evaluatePolicy', { project, request: request as never, ...more });
  const health = () => h.client.call('enclave.health', {});
  const refusal = async (p: Promise<unknown>) => {
    const err = await rejection(p);
    return { code: err.code, message: err.message, details: err.details };
  };

  it('a project without policies signs as before: no field in its record, no evaluation', async () => {
    const plain = await newProject();
    const empty = await newProject({ rules: [], limits: [] });
    for (const p of [plain, empty]) {
      const map = decodeCanonicalCbor(Buffer.from(p.record.record, 'base64'), { maxDepth: 8 }) as Map<string, unknown>;
      expect([...map.keys()].sort()).toEqual(
        [
          'allowedOrigins',
          'allowedRequestTypes',
          'auth',
          'createdAt',
          'kind',
          'prev',
          'projectId',
          'projectKey',
          'seq',
          'state',
          'v',
        ].sort(),
      );
    }
    const key = await newKey(plain);
    const before = (await health()).policy;
    await sign(key, plain.record, digest(1));
    await sign(key, plain.record, tx(10 ** 6));
    await h.signDigest(await h.create(`pol-${++n}`), 2); // the default project
    expect((await health()).policy).toEqual(before);
    expect(await evaluate(plain.record, digest(3))).toEqual({
      allowed: true,
      rule: null,
      limit: null,
      reason: NO_POLICIES_REASON,
      rules: [],
      limits: [],
    });
  });

  it('a rule refuses a sign before any KMS call: POLICY_DENIED (403) naming the rule and the condition, counted in health', async () => {
    const p = await newProject({
      rules: [
        { name: 'no blind signing', effect: 'deny', when: { type: ['digest'] } },
        { name: 'messages', effect: 'allow', when: { type: ['message'] } },
      ],
    });
    const key = await newKey(p); // cold: never signed
    const before = await health();
    const decrypts = await h.decryptCalls();
    expect(await refusal(sign(key, p.record, digest(1)))).toEqual({
      code: 'POLICY_DENIED',
      message: `denied by the project's policy (rule "no blind signing"): type is digest`,
      details: { rule: 'no blind signing', limit: null, reason: 'type is digest' },
    });
    expect(await refusal(sign(key, p.record, tx(1)))).toEqual({
      code: 'POLICY_DENIED',
      message: `denied by the project's policy (no rule allows it): rule "messages": type transaction is not in the list`,
      details: { rule: null, limit: null, reason: 'rule "messages": type transaction is not in the list' },
    });
    expect(ERROR_CODES.POLICY_DENIED.httpStatus).toBe(403);
    const after = await health();
    // No Decrypt for a refused cold sign.
    expect([after.counters.kmsCalls, await h.decryptCalls()]).toEqual([before.counters.kmsCalls, decrypts]);
    expect(after.policy.denials).toEqual({
      rule: before.policy.denials.rule + 1,
      noRule: before.policy.denials.noRule + 1,
      limit: before.policy.denials.limit,
    });
    expect(after.policy.evaluations).toBe(before.policy.evaluations + 2);
    expect(after.counters.errors.POLICY_DENIED).toBe((before.counters.errors.POLICY_DENIED ?? 0) + 2);
    // What the policy allows is signed (one Decrypt now).
    await sign(key, p.record, message('allowed'));
    expect((await health()).counters.kmsCalls).toBe(before.counters.kmsCalls + 1);
  });

  it('projects.setPolicies makes the next record; the parent cannot replay one with a laxer policy or none, nor change it on an old record', async () => {
    const p0 = await newProject();
    const key = await newKey(p0);
    await sign(key, p0.record, digest(1)); // warm from here
    const lax = await setPolicies(p0.record, { rules: [{ name: 'all', effect: 'allow', when: {} }] });
    const strict = await setPolicies(lax.record, {
      rules: [{ name: 'text only', effect: 'allow', when: { type: ['message'] } }],
      limits: [{ name: 'hourly', scope: 'key', window: 'hour', maxCount: 1000 }],
    });
    const [r0, r1, r2] = [recordOf(p0.record), recordOf(lax.record), recordOf(strict.record)];
    const { policies: _1, seq: _s1, prev: _p1, createdAt: _c1, ...rest1 } = r1;
    const { policies: _2, seq: _s2, prev: _p2, createdAt: _c2, ...rest2 } = r2;
    const { seq: _s0, prev: _p0, createdAt: _c0, ...rest0 } = r0;
    expect([rest1, rest2]).toEqual([rest0, rest0]);
    expect([r1.seq, r1.prev, r2.seq, r2.prev]).toEqual([
      1,
      hex(recordDigest(Buffer.from(p0.record.record, 'base64'))),
      2,
      hex(recordDigest(Buffer.from(lax.record.record, 'base64'))),
    ]);
    // Normalized and defaults filled, as the record holds it.
    expect(r2.policies).toEqual({
      rules: [{ name: 'text only', effect: 'allow', when: { type: ['message'] } }],
      limits: [{ name: 'hourly', scope: 'key', window: 'hour', maxCount: 1000 }],
    });
    expect(strict.projectId).toBe(p0.projectId);
    const logged = await h.enclave.waitForLog((e) => e.projectId === p0.projectId && e.seq === 2);
    expect(logged).toMatchObject({
      msg: "set a project's policies",
      oldRecordDigest: r2.prev,
      newRecordDigest: hex(recordDigest(Buffer.from(strict.record.record, 'base64'))),
    });
    expect(JSON.stringify(logged)).not.toMatch(/"policies"|text only|hourly/);

    // The warm key follows the policy of now.
    expect((await refusal(sign(key, strict.record, digest(2)))).code).toBe('POLICY_DENIED');
    await sign(key, strict.record, message('ok'));
    // The parent hands the records from before (no policy, an allow-all policy): refused, as is changing one.
    const failures = (await health()).counters.integrityFailures;
    for (const old of [p0.record, lax.record]) {
      expect(Object.values(await refusal(sign(key, old, digest(3)))).slice(0, 2)).toEqual(INTEGRITY);
      expect(Object.values(await refusal(setPolicies(old, { rules: [] }))).slice(0, 2)).toEqual(INTEGRITY);
      expect(Object.values(await refusal(evaluate(old, digest(3)))).slice(0, 2)).toEqual(INTEGRITY);
    }
    expect((await health()).counters.integrityFailures).toBe(failures + 6);

    // A disabled project's policies can be set too; an empty policy removes the field.
    const off = await h.client.call('projects.setState', { project: strict.record, state: 'disabled' });
    const cleared = await setPolicies(off.record, { rules: [], limits: [] });
    const r4 = recordOf(cleared.record);
    expect([r4.seq, r4.state, 'policies' in r4]).toEqual([4, 'disabled', false]);
    expect(await h.enclave.waitForLog((e) => e.projectId === p0.projectId && e.seq === 4)).toMatchObject({
      msg: "removed a project's policies",
    });
  });

  it('a parent that edits or drops the policy in a record gets KEY_INTEGRITY, with no KMS call', async () => {
    const p = await newProject({ rules: [{ name: 'messages', effect: 'allow', when: { type: ['message'] } }] });
    const key = await newKey(p);
    const record = recordOf(p.record);
    const forge = (r: ProjectRecord): SignedRecord => ({ record: encodeRecord(r).toString('base64'), signature: p.record.signature });
    const { policies: _dropped, ...without } = record;
    const forged = [
      forge({ ...record, policies: { rules: [{ name: 'messages', effect: 'allow', when: { type: ['message', 'digest'] } }], limits: [] } }),
      forge({ ...record, policies: { rules: [{ name: 'messages', effect: 'allow', when: {} }], limits: [] } }),
      forge(without),
    ];
    const before = await health();
    for (const f of forged) {
      expect(Object.values(await refusal(sign(key, f, digest(1)))).slice(0, 2)).toEqual(INTEGRITY);
      expect(Object.values(await refusal(setPolicies(f, { rules: [] }))).slice(0, 2)).toEqual(INTEGRITY);
    }
    const after = await health();
    expect([after.counters.integrityFailures, after.counters.kmsCalls]).toEqual([
      before.counters.integrityFailures + 6,
      before.counters.kmsCalls,
    ]);
    expect(after.policy.evaluations).toBe(before.policy.evaluations);
  });

  it('limits count per key and per project, refuse beyond the maximum, and take back the count of a failed signature', async () => {
    const p = await newProject({
      limits: [
        { name: 'per key', scope: 'key', window: 'hour', maxCount: 2 },
        { name: 'project wei', scope: 'project', window: 'day', maxValue: '1000', when: { type: ['transaction'] } },
      ],
    });
    const [a, b, c] = [await newKey(p), await newKey(p), await newKey(p)];
    // A signature that fails after the limits were counted (viem refuses a tip above the fee cap): taken back.
    const bad = tx(1000, { maxPriorityFeePerGas: '101' });
    for (let i = 0; i < 3; i++) expect((await refusal(sign(a, p.record, bad))).code).toBe('INVALID_PARAMS');
    const tracked = (await health()).policy.trackedCounters;

    await sign(a, p.record, message('1'));
    await sign(a, p.record, tx(600));
    expect(await refusal(sign(a, p.record, message('3')))).toEqual({
      code: 'POLICY_DENIED',
      message: `denied by the project's policy (limit "per key"): 2 signatures in the last hour, the maximum is 2`,
      details: { rule: null, limit: 'per key', reason: '2 signatures in the last hour, the maximum is 2' },
    });
    // Another key has its own count, but the project's value is shared.
    expect((await refusal(sign(b, p.record, tx(401)))).details).toEqual({
      rule: null,
      limit: 'project wei',
      reason: 'value 401 with 600 signed in the last day is above the maximum 1000',
    });
    await sign(b, p.record, tx(400));
    await sign(b, p.record, message('not a transaction: not counted in wei'));
    expect((await refusal(sign(c, p.record, tx(1)))).details?.limit).toBe('project wei');
    const after = await health();
    // Counters: per key for a and b, and the project's; none left for the failed signatures.
    expect(after.policy.trackedCounters).toBe(tracked + 3);
    expect(after.policy.denials.limit).toBeGreaterThanOrEqual(3);
  });

  it('a sign held at KMS acts on the policy of now, and limits are counted right before the signature', async () => {
    const p = await newProject({
      rules: [{ name: 'texts', effect: 'allow', when: { type: ['message'] } }],
      limits: [{ name: 'once', scope: 'key', window: 'hour', maxCount: 1 }],
    });
    const [a, b] = [await newKey(p), await newKey(p)];
    /** Holds every KMS answer until the returned function is called. */
    const hold = () => {
      let open!: () => void;
      const held = new Promise<void>((resolve) => (open = resolve));
      h.forge = async () => {
        await held;
        return undefined;
      };
      return open;
    };
    try {
      // Two cold signs of one key share one Decrypt; both pass the rules, and only one fits the limit.
      let open = hold();
      let asked = h.proxyRequests.length;
      const both = Promise.allSettled([sign(a, p.record, message('1')), sign(a, p.record, message('2'))]);
      await waitFor(() => h.proxyRequests.length === asked + 1, 10_000, 'the Decrypt asked');
      open();
      const settled = await both;
      expect(settled.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
      const reason = (settled.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason;
      expect([reason.code, reason.details?.limit]).toEqual(['POLICY_DENIED', 'once']);

      // The project's policy changes while b's sign waits for KMS: it acts on the policy of now (its record is old).
      open = hold();
      asked = h.proxyRequests.length;
      const late = refusal(sign(b, p.record, message('3')));
      await waitFor(() => h.proxyRequests.length === asked + 1, 10_000, 'the Decrypt asked');
      const changed = await setPolicies(p.record, {
        rules: [{ name: 'texts', effect: 'allow', when: { type: ['message', 'typedData'] } }],
        limits: [{ name: 'once', scope: 'key', window: 'hour', maxCount: 1 }],
      });
      open();
      expect(Object.values(await late).slice(0, 2)).toEqual(INTEGRITY);
      // It was refused before its limits were counted: b's one signature is still to be had.
      h.forge = null;
      await sign(b, changed.record, message('4'));
      expect((await refusal(sign(b, changed.record, message('5')))).details?.limit).toBe('once');
    } finally {
      h.forge = null;
    }
  });

  it('evaluatePolicy: the decision of the record policy or of a proposed one, with a key, counting nothing and calling no KMS', async () => {
    const p = await newProject({
      rules: [
        { name: 'no digests', effect: 'deny', when: { type: ['digest'] } },
        { name: 'small transfers', effect: 'allow', when: { type: ['transaction'], to: [TO], maxValue: '100' } },
        { name: 'messages', effect: 'allow', when: { type: ['message'] } },
      ],
      limits: [{ name: 'twice', scope: 'key', window: 'day', maxCount: 2 }],
    });
    const key = await newKey(p);
    const before = await health();
    const decision = await evaluate(p.record, tx(500), { record: key.record });
    expect(decision).toEqual({
      allowed: false,
      rule: null,
      limit: null,
      reason: expect.stringMatching(
        /^rule "small transfers": value 500 is above the maximum 100; rule "messages": type transaction is not in the list$/,
      ),
      rules: [
        { name: 'no digests', effect: 'deny', matched: false, failed: 'type transaction is not in the list' },
        { name: 'small transfers', effect: 'allow', matched: false, failed: 'value 500 is above the maximum 100' },
        { name: 'messages', effect: 'allow', matched: false, failed: 'type transaction is not in the list' },
      ],
      limits: [{ name: 'twice', scope: 'key', window: 'day', applies: true, count: { used: 0, max: 2 } }],
    });
    // Dry runs count nothing: the key still signs twice.
    for (let i = 0; i < 3; i++) expect((await evaluate(p.record, tx(50), { record: key.record })).allowed).toBe(true);
    await sign(key, p.record, tx(50));
    expect(await evaluate(p.record, message('m'), { record: key.record })).toMatchObject({
      allowed: true,
      rule: 'messages',
      limits: [{ name: 'twice', applies: true, count: { used: 1, max: 2 } }],
    });
    await sign(key, p.record, message('m'));
    const full = await evaluate(p.record, message('m'), { record: key.record });
    expect(full).toMatchObject({
      allowed: false,
      rule: 'messages',
      limit: 'twice',
      reason: '2 signatures in the last day, the maximum is 2',
    });
    expect((await refusal(sign(key, p.record, message('m')))).details).toEqual({ rule: 'messages', limit: 'twice', reason: full.reason });
    // Without a key: a key-scoped limit reads as a key that signed nothing.
    expect((await evaluate(p.record, message('m'))).allowed).toBe(true);
    // A proposed policy, not stored.
    expect(
      await evaluate(p.record, digest(1), {
        record: key.record,
        policies: { rules: [{ name: 'digests', effect: 'allow', when: { type: ['digest'] } }] },
      }),
    ).toEqual({
      allowed: true,
      rule: 'digests',
      limit: null,
      reason: 'allowed by rule "digests": type is digest',
      rules: [{ name: 'digests', effect: 'allow', matched: true }],
      limits: [],
    });
    expect((await evaluate(p.record, digest(1), { policies: { rules: [], limits: [] } })).reason).toBe(NO_POLICIES_REASON);
    expect((await evaluate(p.record, digest(1))).rule).toBe('no digests');
    // A key of another project, a forged key record, a policy the schema refuses.
    const stranger = await h.create(`pol-${++n}`);
    expect(Object.values(await refusal(evaluate(p.record, digest(1), { record: stranger.record }))).slice(0, 2)).toEqual(INTEGRITY);
    const sig = Buffer.from(key.record.signature, 'base64');
    sig[0] = (sig[0] as number) ^ 1;
    const forgedKey = { ...key.record, signature: sig.toString('base64') };
    expect(Object.values(await refusal(evaluate(p.record, digest(1), { record: forgedKey }))).slice(0, 2)).toEqual(INTEGRITY);
    const invalid = await refusal(
      evaluate(p.record, digest(1), { policies: { limits: [{ name: 'x', scope: 'key', window: 'week' }] } as never }),
    );
    expect(invalid.code).toBe('INVALID_PARAMS');
    const after = await health();
    // Two signatures' worth of evaluations and no more; one Decrypt (the first sign).
    expect(after.policy.evaluations).toBe(before.policy.evaluations + 3);
    expect(after.counters.kmsCalls).toBe(before.counters.kmsCalls + 1);
  });

  it('setPolicies refuses a policy that would make the record too large, naming its size', async () => {
    const p = await newProject();
    const addresses = (k: number) => Array.from({ length: 256 }, (_, i) => `0x${(k * 1000 + i).toString(16).padStart(40, '0')}`);
    const rules = Array.from({ length: 8 }, (_, k) => ({ name: `r${k}`, effect: 'allow' as const, when: { to: addresses(k) } }));
    const err = await refusal(setPolicies(p.record, { rules }));
    expect([err.code, err.message]).toEqual([
      'INVALID_PARAMS',
      expect.stringMatching(/^the record would be \d+ bytes, over the 32768 a record may have$/),
    ]);
    // Nothing was made: the record given is still the newest.
    await setPolicies(p.record, { rules: rules.slice(0, 1) });
  });

  // Last: restarts the enclave with room for two counters (a restart also starts every counter again).
  it('fails closed when the enclave tracks as many limit counters as configured: a request needing another is refused', async () => {
    await h.restartEnclave({ policy: { maxTrackedCounters: 2 } });
    const p = await newProject({ limits: [{ name: 'per key', scope: 'key', window: 'hour', maxCount: 100 }] });
    const [a, b, c] = [await newKey(p), await newKey(p), await newKey(p)];
    await sign(a, p.record, message('a'));
    await sign(b, p.record, message('b'));
    const full = { rule: null, limit: 'per key', reason: TRACKING_FULL };
    expect((await refusal(sign(c, p.record, message('c')))).details).toEqual(full);
    expect(await evaluate(p.record, message('c'), { record: c.record })).toMatchObject({ allowed: false, ...full });
    // The counters held keep counting.
    await sign(a, p.record, message('a again'));
    expect((await evaluate(p.record, message('a'), { record: a.record })).limits[0]?.count).toEqual({ used: 2, max: 100 });
    expect((await health()).policy).toEqual({ evaluations: 4, denials: { rule: 0, noRule: 0, limit: 1 }, trackedCounters: 2 });
  });
});
