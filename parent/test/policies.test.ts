/**
 * Signing policies in the parent (docs/POLICIES.md), in this process against the fake enclave (fake-enclave.ts:
 * genuine record signatures): `GET`/`PUT /v1/projects/{id}/policies` and `POST …/policies:evaluate`, every
 * 400, 404 and refusal of a token below admin; enclave answers that are not what was asked, refused and not
 * stored; the compare-and-swap on the project's seq; POLICY_DENIED's `details` passed on; the metrics. The
 * enclave's own evaluation and enforcement are tested against the bundle (enclave/test, test/e2e).
 */
import fs from 'node:fs';
import path from 'node:path';
import { recoverTypedDataAddress } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { policyChangeTypedData } from '@nks/shared/policy/approval';
import { policyDenied, type PolicyDecision } from '@nks/shared/policy/decision';
import { PoliciesSchema } from '@nks/shared/policy/schema';
import { openProjectRecord, recordDigest, hex, type ProjectRecord } from '@nks/shared/records';
import { captureLogger, tempRunDir, type CapturedLogger } from '@nks/shared-test/helpers';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { hashToken } from '../src/api/auth';
import { startParent, type RunningParent } from '../src/app';
import { parseParentConfig } from '../src/config';
import { FAKE_KMS_KEY_ARN, FakeEnclave } from './fake-enclave';
import { call, type Answer, type CallInit } from './http-client';

const ENCLAVE = 'vsock://16:5000';
const TOKENS = { admin: 'nks_test_admin', full: 'nks_test_full' };
const USDC = '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48';
const NO_PROJECT = `p_${'A'.repeat(22)}`;
const [a1, a2] = [privateKeyToAccount(generatePrivateKey()), privateKeyToAccount(generatePrivateKey())];

/** A policy as a caller writes it: a lower-case address, an upper-case selector, an amount with a leading zero. */
const POLICY = {
  rules: [
    { name: 'no blind signing', effect: 'deny', when: { type: ['digest'] } },
    { name: 'usdc', effect: 'allow', when: { to: [USDC.toLowerCase()], selector: ['0xA9059CBB'], erc20: { maxAmount: '01000000' } } },
  ],
  limits: [{ name: 'daily', scope: 'key', window: 'day', maxCount: 100 }],
};
/** The same in normalized form (what the record holds and the API answers). */
const NORMALIZED = {
  rules: [
    { name: 'no blind signing', effect: 'deny', when: { type: ['digest'] } },
    { name: 'usdc', effect: 'allow', when: { to: [USDC], selector: ['0xa9059cbb'], erc20: { maxAmount: '1000000' } } },
  ],
  limits: [{ name: 'daily', scope: 'key', window: 'day', maxCount: 100 }],
};

const DENIED: PolicyDecision = {
  allowed: false,
  rule: 'no blind signing',
  limit: null,
  reason: 'type is digest',
  rules: [{ name: 'no blind signing', effect: 'deny', matched: true }],
  limits: [],
};

describe('signing policies in the parent', () => {
  let runDir: string;
  let enclave: FakeEnclave;
  let parent: RunningParent;
  let log: CapturedLogger;

  beforeEach(async () => {
    runDir = tempRunDir('nks-policies-');
    log = captureLogger('debug');
    enclave = new FakeEnclave();
    await enclave.listen(new SimulatedVsockTransport(runDir), ENCLAVE);
    const config = parseParentConfig({
      api: { listen: { host: '127.0.0.1', port: 0 } },
      metrics: { listen: { host: '127.0.0.1', port: 0 } },
      tokens: [
        { name: 'admin', sha256: hashToken(TOKENS.admin), scopes: ['admin'] },
        { name: 'full', sha256: hashToken(TOKENS.full), scopes: ['keys:create', 'keys:sign', 'keys:read'] },
      ],
      database: { path: path.join(runDir, 'keys.db') },
      transport: { kind: 'simulated', runDir },
      enclave: { address: ENCLAVE, poolSize: 2, connectTimeoutMs: 1000, deadlineMs: 5000 },
      kmsProxy: { listen: 'vsock://3:8000', allowedKeyArns: [FAKE_KMS_KEY_ARN], region: 'us-east-1', endpoint: 'http://127.0.0.1:9' },
      wallets: { relay: { host: '127.0.0.1', port: 0 } },
      logLevel: 'debug',
    });
    parent = await startParent(config, log.logger);
    await parent.pool.waitUp(5000);
  });
  afterEach(async () => {
    enclave?.releaseAll();
    await parent?.stop();
    await enclave?.close();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const api = (pathname: string, init: CallInit = {}) => call(parent.url, pathname, { token: TOKENS.admin, ...init });
  /** The Prometheus text, from the operational listener. */
  const scrape = async () => String((await call(parent.metricsUrl as string, '/metrics')).body);
  const put = (projectId: string, body: unknown, init: CallInit = {}) =>
    api(`/v1/projects/${projectId}/policies`, { method: 'PUT', body, ...init });
  const evaluate = (projectId: string, body: unknown, init: CallInit = {}) =>
    api(`/v1/projects/${projectId}/policies:evaluate`, { method: 'POST', ...(body === undefined ? {} : { body }), ...init });
  const code = (r: Answer) => [r.status, r.body?.error?.code];
  const opened = (signed: { record: string; signature: string }) => openProjectRecord(signed, enclave.identity.publicKeyObject).record;
  const digestOf = (signed: { record: string }) => hex(recordDigest(Buffer.from(signed.record, 'base64')));
  const tokenProject = async (body: Record<string, unknown> = {}) => {
    const res = await api('/v1/projects', { body: { name: 'Server app', auth: { type: 'token' }, ...body } });
    expect([res.status, res.body?.error]).toEqual([201, undefined]);
    return res.body as { projectId: string; record: { record: string; signature: string }; policies: unknown };
  };

  it('reads, replaces (a new record, seq + 1, normalized) and removes a project policy; a repeat changes nothing', async () => {
    const p = await tokenProject();
    expect(p.policies).toEqual({ rules: [], limits: [] });
    const before = await api(`/v1/projects/${p.projectId}/policies`);
    expect(before.body).toEqual({
      projectId: p.projectId,
      seq: 0,
      recordSha256: digestOf(p.record),
      policies: { rules: [], limits: [] },
      record: p.record,
    });

    const set = await put(p.projectId, POLICY);
    expect([set.status, set.body.error]).toEqual([200, undefined]);
    expect(set.body).toEqual({
      projectId: p.projectId,
      seq: 1,
      recordSha256: digestOf(set.body.record),
      policies: NORMALIZED,
      record: expect.any(Object),
    });
    // The record says the same, signed by the identity, and is the next one of the project.
    const record = opened(set.body.record);
    expect(record).toMatchObject({ projectId: p.projectId, seq: 1, prev: digestOf(p.record), policies: NORMALIZED, state: 'active' });
    expect((await api(`/v1/projects/${p.projectId}/policies`)).body).toEqual(set.body);
    expect((await api(`/v1/projects/${p.projectId}`)).body).toMatchObject({ policies: NORMALIZED, record: set.body.record });
    const listed = (await api('/v1/projects')).body.projects.find((x: { projectId: string }) => x.projectId === p.projectId);
    expect(listed.policies).toEqual(NORMALIZED);

    // The same policy again (as written or normalized): no new record.
    expect((await put(p.projectId, NORMALIZED)).body).toEqual(set.body);
    expect((await put(p.projectId, POLICY)).body.seq).toBe(1);
    expect(enclave.calls['projects.setPolicies']).toBe(1);

    // Every change logged with both records' hashes, never the policy itself.
    const changed = log.lines().filter((l) => l.msg === 'project policies changed');
    expect(changed).toEqual([
      expect.objectContaining({
        projectId: p.projectId,
        seq: 1,
        oldRecordSha256: digestOf(p.record),
        newRecordSha256: set.body.recordSha256,
        rules: 2,
        limits: 1,
      }),
    ]);
    expect(log.text()).not.toContain(USDC.toLowerCase().slice(2));
    expect(log.text()).not.toContain(USDC.slice(2));

    // {} removes it: the record has no policies field, as one made before policies existed.
    const removed = await put(p.projectId, {});
    expect([removed.status, removed.body.seq, removed.body.policies]).toEqual([200, 2, { rules: [], limits: [] }]);
    expect('policies' in opened(removed.body.record)).toBe(false);
    expect((await put(p.projectId, { rules: [], limits: [] })).body.seq).toBe(2);

    const metrics = await scrape();
    expect(metrics).toMatch(/^nks_policy_changes_total 2$/m);
  });

  it('creates a project with policies, checks the record holds exactly them, and changes a disabled one', async () => {
    const p = await tokenProject({ policies: POLICY });
    expect(p.policies).toEqual(NORMALIZED);
    expect(opened(p.record)).toMatchObject({ seq: 0, policies: NORMALIZED });
    await api(`/v1/projects/${p.projectId}/disable`, { method: 'POST' });
    const set = await put(p.projectId, { rules: [{ name: 'messages', effect: 'allow', when: { type: ['message'] } }] });
    expect([set.status, set.body.seq]).toEqual([200, 2]);
    expect(opened(set.body.record)).toMatchObject({ state: 'disabled', policies: { rules: [{ name: 'messages' }], limits: [] } });

    // An enclave that drops, or changes, the policies asked for at creation: refused, nothing stored.
    for (const change of [
      ({ policies: _p, ...r }: ProjectRecord) => r,
      (r: ProjectRecord) => ({ ...r, policies: { rules: [...(r.policies?.rules ?? [])].reverse(), limits: r.policies?.limits ?? [] } }),
    ]) {
      enclave.alter.projectCreate = change;
      const res = await api('/v1/projects', { body: { name: 'x', auth: { type: 'token' }, policies: POLICY } });
      expect([...code(res), res.body.error.message]).toEqual([
        500,
        'KEY_INTEGRITY',
        'the enclave answered with a project record that does not match the request',
      ]);
    }
    enclave.alter.projectCreate = (r) => ({ ...r, policies: NORMALIZED as ProjectRecord['policies'] });
    expect(code(await api('/v1/projects', { body: { name: 'x', auth: { type: 'token' } } }))).toEqual([500, 'KEY_INTEGRITY']);
    expect((await api('/v1/projects')).body.projects).toHaveLength(2);
  });

  it.each<[string, (r: ProjectRecord) => ProjectRecord]>([
    ['other policies', (r) => ({ ...r, policies: { rules: [], limits: NORMALIZED.limits as never } })],
    ['no policies', ({ policies: _p, ...r }) => r],
    ['another state', (r) => ({ ...r, state: 'disabled' })],
    ['more request types', (r) => ({ ...r, allowedRequestTypes: ['digest', 'message'] })],
    ['a seq further on', (r) => ({ ...r, seq: r.seq + 1 })],
    ['another prev', (r) => ({ ...r, prev: `0x${'ab'.repeat(32)}` })],
  ])('refuses a projects.setPolicies answer with %s, and keeps the stored record', async (_name, change) => {
    const p = await tokenProject({ allowedRequestTypes: ['message'] });
    enclave.alter.projectSetPolicies = change;
    const res = await put(p.projectId, POLICY);
    expect([...code(res), res.body.error.message]).toEqual([
      500,
      'KEY_INTEGRITY',
      'the enclave answered with a project record that does not match the request',
    ]);
    expect((await api(`/v1/projects/${p.projectId}/policies`)).body).toMatchObject({ seq: 0, record: p.record });
    expect(await scrape()).toMatch(/^nks_policy_changes_total 0$/m);
  });

  it('stores a change only on the record it was made from: a record stored meanwhile is CONFLICT, and kept', async () => {
    const p = await tokenProject();
    let open!: () => void;
    enclave.setPoliciesGate = new Promise<void>((r) => (open = r));
    const pending = put(p.projectId, POLICY);
    while (!enclave.calls['projects.setPolicies']) await new Promise((r) => setTimeout(r, 5));
    // Another writer of the same database (another parent process) stores the project's next record first.
    const other = await parent.pool.call('projects.setState', { project: p.record, state: 'disabled' });
    await parent.store.updateProjectRecord(p.projectId, other.record, opened(other.record));
    open();
    const res = await pending;
    expect([...code(res), res.body.error.message]).toEqual([409, 'CONFLICT', `project ${p.projectId} changed meanwhile; retry`]);
    expect((await api(`/v1/projects/${p.projectId}/policies`)).body).toMatchObject({ seq: 1, policies: { rules: [], limits: [] } });
    // A retry works from the newest record.
    enclave.setPoliciesGate = null;
    const retried = await put(p.projectId, POLICY);
    expect([retried.status, retried.body.seq]).toEqual([200, 2]);
    expect(opened(retried.body.record)).toMatchObject({ state: 'disabled', policies: NORMALIZED, prev: digestOf(other.record) });
  });

  it('serializes changes of one project: concurrent PUTs and a disable each work from the record before', async () => {
    const p = await tokenProject();
    const answers = await Promise.all([
      put(p.projectId, POLICY),
      api(`/v1/projects/${p.projectId}/disable`, { method: 'POST' }),
      put(p.projectId, { rules: [{ name: 'all', effect: 'allow' }] }),
    ]);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
    const last = (await api(`/v1/projects/${p.projectId}/policies`)).body;
    expect([last.seq, opened(last.record).state, last.policies.rules.map((r: { name: string }) => r.name)]).toEqual([
      3,
      'disabled',
      ['all'],
    ]);
  });

  it.each<[string, unknown, RegExp]>([
    ['no body', undefined, /^body: a policy is required/],
    ['a list', [], /^body: /],
    ['an unknown field', { rules: [], owner: 'me' }, /^body: unknown field\(s\) "owner"$/],
    ['a rule without a name', { rules: [{ effect: 'allow' }] }, /^body\.rules\[0\]\.name is required$/],
    ['a bad name', { rules: [{ name: '-x', effect: 'allow' }] }, /^body\.rules\[0\]\.name: expected a name of 1-64 characters/],
    ['an unknown effect', { rules: [{ name: 'a', effect: 'maybe' }] }, /^body\.rules\[0\]\.effect: /],
    ['an unknown condition', { rules: [{ name: 'a', effect: 'allow', when: { from: [USDC] } }] }, /^body\.rules\[0\]\.when: unknown field/],
    [
      'a bad address',
      { rules: [{ name: 'a', effect: 'allow', when: { to: ['0x1234'] } }] },
      /^body\.rules\[0\]\.when\.to\[0\]: expected a 20-byte/,
    ],
    [
      'a bad checksum',
      { rules: [{ name: 'a', effect: 'allow', when: { to: [USDC.replace('A0b', 'a0B')] } }] },
      /^body\.rules\[0\]\.when\.to\[0\]: .*EIP-55/,
    ],
    [
      'an empty list',
      { rules: [{ name: 'a', effect: 'allow', when: { chainId: [] } }] },
      /^body\.rules\[0\]\.when\.chainId: expected at least one/,
    ],
    [
      'a list twice',
      { rules: [{ name: 'a', effect: 'allow', when: { chainId: [1, 1] } }] },
      /^body\.rules\[0\]\.when\.chainId: expected distinct/,
    ],
    [
      'a bad selector',
      { rules: [{ name: 'a', effect: 'allow', when: { selector: ['0xa9059c'] } }] },
      /when\.selector\[0\]: expected a 4-byte/,
    ],
    ['an amount as a number', { rules: [{ name: 'a', effect: 'allow', when: { maxValue: 5 } }] }, /^body\.rules\[0\]\.when\.maxValue: /],
    [
      'a hex amount',
      { rules: [{ name: 'a', effect: 'allow', when: { maxValue: '0x10' } }] },
      /when\.maxValue: expected an amount as a decimal/,
    ],
    ['an amount over 2^256', { rules: [{ name: 'a', effect: 'allow', when: { maxGasPrice: '9'.repeat(78) } }] }, /at most 2\^256 - 1/],
    [
      'an unknown ERC-20 function',
      { rules: [{ name: 'a', effect: 'allow', when: { erc20: { function: ['mint'] } } }] },
      /erc20\.function\[0\]: /,
    ],
    [
      'a limit without a maximum',
      { limits: [{ name: 'l', scope: 'key', window: 'day' }] },
      /^body\.limits\[0\]: expected maxCount, maxValue or both$/,
    ],
    ['an unknown window', { limits: [{ name: 'l', scope: 'key', window: 'week', maxCount: 1 }] }, /^body\.limits\[0\]\.window: /],
    ['an unknown scope', { limits: [{ name: 'l', scope: 'user', window: 'day', maxCount: 1 }] }, /^body\.limits\[0\]\.scope: /],
    ['a count of 0', { limits: [{ name: 'l', scope: 'key', window: 'day', maxCount: 0 }] }, /^body\.limits\[0\]\.maxCount: /],
    [
      'a name twice',
      { rules: [{ name: 'a', effect: 'allow' }], limits: [{ name: 'a', scope: 'key', window: 'day', maxCount: 1 }] },
      /^body: expected distinct names across rules and limits/,
    ],
    [
      '65 rules',
      { rules: Array.from({ length: 65 }, (_, i) => ({ name: `r${i}`, effect: 'allow' })) },
      /^body\.rules: expected at most 64 rules$/,
    ],
  ])('refuses a PUT of %s with 400 naming the field, before the enclave', async (_name, body, message) => {
    const res = await api('/v1/projects/default/policies', { method: 'PUT', ...(body === undefined ? {} : { body }) });
    expect(code(res)).toEqual([400, 'INVALID_PARAMS']);
    expect(res.body.error.message).toMatch(message);
    expect(enclave.calls['projects.setPolicies']).toBeUndefined();
  });

  it('refuses a policy that would make the record larger than 32 KiB, before the enclave, at creation and on PUT', async () => {
    const addresses = (n: number) => Array.from({ length: 256 }, (_, i) => `0x${(n * 256 + i + 1).toString(16).padStart(40, '0')}`);
    const big = { rules: [0, 1, 2, 3].map((n) => ({ name: `r${n}`, effect: 'allow', when: { to: addresses(n) } })) };
    const res = await put('default', big);
    expect(code(res)).toEqual([400, 'INVALID_PARAMS']);
    expect(res.body.error.message).toMatch(/^body: the project's record would be \d+ bytes, over the 32768 a record may have: write fewer/);
    const created = await api('/v1/projects', { body: { name: 'x', auth: { type: 'token' }, policies: big } });
    expect(created.body.error.message).toMatch(/^body\.policies: the project's record would be \d+ bytes, over the 32768/);
    expect([enclave.calls['projects.setPolicies'], enclave.calls['projects.create']]).toEqual([undefined, undefined]);
    // Just under: accepted (about 7 KiB of addresses).
    expect((await put('default', { rules: [{ name: 'r', effect: 'allow', when: { to: addresses(0) } }] })).status).toBe(200);
  });

  it('evaluates a request through the enclave as sent, with the key and the policy to try; 200 whether allowed or not', async () => {
    const p = await tokenProject({ policies: POLICY });
    const key = (await api('/v1/keys', { token: TOKENS.full, body: { projectId: p.projectId } })).body;
    enclave.decision = DENIED;
    const request = {
      type: 'transaction',
      transaction: {
        type: 'eip1559',
        chainId: 1,
        nonce: 0,
        to: USDC,
        value: '1000',
        gas: 21000,
        maxFeePerGas: '1',
        maxPriorityFeePerGas: '1',
      },
    };
    const res = await evaluate(p.projectId, { request, keyId: key.keyId, policies: { rules: [{ name: 'x', effect: 'allow' }] } });
    expect([res.status, res.body]).toEqual([200, DENIED]);
    expect(enclave.evaluations).toEqual([
      { project: p.record, request, record: key.record, policies: { rules: [{ name: 'x', effect: 'allow' }] } },
    ]);
    // Without key and policy: the project's record only.
    enclave.decision = { ...DENIED, allowed: true, rule: 'usdc', reason: 'allowed by rule "usdc"' };
    expect((await evaluate(p.projectId, { request: { type: 'message', message: 'hi' } })).body.allowed).toBe(true);
    expect(enclave.evaluations[1]).toEqual({ project: p.record, request: { type: 'message', message: 'hi' } });
    expect(enclave.calls['keys.sign']).toBeUndefined();
  });

  it.each<[string, unknown, RegExp]>([
    ['no body', undefined, /^body: a body \{"request"/],
    ['no request', { keyId: 'k' }, /^body\.request is required$/],
    ['an unknown request type', { request: { type: 'everything' } }, /^body\.request\.type: /],
    ['a bad request', { request: { type: 'digest', digest: '0x12' } }, /^body\.request\.digest: /],
    ['a bad key id', { request: { type: 'message', message: 'm' }, keyId: 'not a key' }, /^body\.keyId: /],
    [
      'a bad policy',
      { request: { type: 'message', message: 'm' }, policies: { rules: [{ name: 'a' }] } },
      /^body\.policies\.rules\[0\]\.effect: /,
    ],
    ['an unknown field', { request: { type: 'message', message: 'm' }, sign: true }, /^body: unknown field\(s\) "sign"$/],
  ])('refuses an evaluation with %s: 400 naming the field, before the enclave', async (_name, body, message) => {
    const res = await evaluate('default', body);
    expect(code(res)).toEqual([400, 'INVALID_PARAMS']);
    expect(res.body.error.message).toMatch(message);
    expect(enclave.calls['projects.evaluatePolicy']).toBeUndefined();
  });

  it('answers 404 for unknown projects and keys not of the project, 401/403 below admin, 405 for other methods', async () => {
    const p = await tokenProject();
    const key = (await api('/v1/keys', { token: TOKENS.full, body: {} })).body; // a key of `default`
    const message = { request: { type: 'message', message: 'm' } };
    expect(code(await api(`/v1/projects/${NO_PROJECT}/policies`))).toEqual([404, 'NOT_FOUND']);
    expect(code(await put(NO_PROJECT, POLICY))).toEqual([404, 'NOT_FOUND']);
    expect(code(await evaluate(NO_PROJECT, message))).toEqual([404, 'NOT_FOUND']);
    expect(code(await api('/v1/projects/not-an-id/policies'))).toEqual([404, 'NOT_FOUND']);
    expect(code(await api('/v1/projects/default/policies:explain', { body: message }))).toEqual([404, 'NOT_FOUND']);
    const other = await evaluate(p.projectId, { ...message, keyId: key.keyId });
    expect([...code(other), other.body.error.message]).toEqual([
      404,
      'KEY_NOT_FOUND',
      `key ${key.keyId} is not a key of project ${p.projectId}`,
    ]);
    expect(code(await evaluate(p.projectId, { ...message, keyId: 'k_AAAAAAAAAAAAAAAAAAAAAA' }))).toEqual([404, 'KEY_NOT_FOUND']);

    for (const [token, status, c] of [
      [TOKENS.full, 403, 'FORBIDDEN'],
      ['', 401, 'UNAUTHORIZED'],
    ] as const) {
      expect(code(await api('/v1/projects/default/policies', { token }))).toEqual([status, c]);
      expect(code(await put('default', POLICY, { token }))).toEqual([status, c]);
      expect(code(await evaluate('default', message, { token }))).toEqual([status, c]);
    }
    const wrong = await api('/v1/projects/default/policies', { method: 'POST', body: POLICY });
    expect([...code(wrong), wrong.headers.allow]).toEqual([405, 'METHOD_NOT_ALLOWED', 'GET, PUT']);
    const get = await api('/v1/projects/default/policies:evaluate');
    expect([...code(get), get.headers.allow, get.body.error.message]).toEqual([
      405,
      'METHOD_NOT_ALLOWED',
      'POST',
      'GET is not allowed on /v1/projects/{projectId}/policies:evaluate',
    ]);
    expect(code(await api('/v1/projects/default/policies', { body: {}, method: 'GET' }))).toEqual([400, 'INVALID_REQUEST']);
    expect(enclave.calls['projects.setPolicies'] ?? 0).toBe(0);
    expect(enclave.calls['projects.evaluatePolicy'] ?? 0).toBe(0);
  });

  it("passes on the enclave's POLICY_DENIED with its details, and exports the enclave's policy counters", async () => {
    const key = (await api('/v1/keys', { token: TOKENS.full, body: {} })).body;
    enclave.signRefusal = policyDenied(DENIED);
    const res = await api(`/v1/keys/${key.keyId}/sign`, { token: TOKENS.full, body: { type: 'message', message: 'hi' } });
    expect([res.status, res.body]).toEqual([
      403,
      {
        error: {
          code: 'POLICY_DENIED',
          message: `denied by the project's policy (rule "no blind signing"): type is digest`,
          retryable: false,
          requestId: res.headers['x-request-id'],
          details: { rule: 'no blind signing', limit: null, reason: 'type is digest' },
        },
      },
    ]);
    // Other errors carry no details.
    const other = await api('/v1/keys/k_AAAAAAAAAAAAAAAAAAAAAA', { token: TOKENS.full });
    expect(Object.keys(other.body.error)).toEqual(['code', 'message', 'retryable', 'requestId']);

    const metrics = await scrape();
    expect(metrics).toMatch(/^# TYPE nks_policy_denials_total counter$/m);
    expect(metrics).toMatch(/^nks_policy_denials_total\{by="rule"\} 3$/m);
    expect(metrics).toMatch(/^nks_policy_denials_total\{by="no_rule"\} 2$/m);
    expect(metrics).toMatch(/^nks_policy_denials_total\{by="limit"\} 1$/m);
    expect(metrics).toMatch(/^nks_policy_evaluations_total 7$/m);
    expect(metrics).toMatch(/^nks_policy_tracked_counters 4$/m);
    // The enclave's totals as they are at each scrape (a restarted enclave starts again from 0).
    enclave.policyHealth = { evaluations: 1, denials: { rule: 0, noRule: 0, limit: 1 }, trackedCounters: 0 };
    const later = await scrape();
    expect(later).toMatch(/^nks_policy_denials_total\{by="rule"\} 0$/m);
    expect(later).toMatch(/^nks_policy_evaluations_total 1$/m);
  });
  it('approvers: PUT passes approvals beside the policy to the enclave, answers its FORBIDDEN as 403; :approval gives the typed data', async () => {
    const approvers = { addresses: [a1.address, a2.address], threshold: 2 };
    const p = await tokenProject({ policies: { ...POLICY, approvers } });
    // The typed data an approver signs: this project, its current record, the normalized policies.
    const lax = { rules: [{ name: 'all', effect: 'allow' }], approvers };
    const asked = await api(`/v1/projects/${p.projectId}/policies:approval`, { method: 'POST', body: { policies: lax } });
    expect(asked.status).toBe(200);
    const expected = policyChangeTypedData(p.projectId, digestOf(p.record) as `0x${string}`, PoliciesSchema.parse(lax));
    expect(asked.body).toEqual({
      projectId: p.projectId,
      seq: 0,
      recordSha256: digestOf(p.record),
      approvers: { addresses: [a1.address, a2.address], threshold: 2 },
      typedData: {
        ...expected,
        types: {
          EIP712Domain: [
            { name: 'name', type: 'string' },
            { name: 'version', type: 'string' },
          ],
          ...expected.types,
        },
      },
    });
    // What an approver's wallet signs from that JSON is what the enclave checks (the domain type changes nothing).
    const signature = await a1.signTypedData(asked.body.typedData);
    expect(await recoverTypedDataAddress({ ...expected, signature })).toBe(a1.address);

    // Without approvals: the enclave's FORBIDDEN, as it said it, and nothing stored.
    const refused = await put(p.projectId, lax);
    expect([refused.status, refused.body.error.code, refused.body.error.message]).toEqual([
      403,
      'FORBIDDEN',
      "changing this project's policies needs 2 approvals of its approvers, got 0",
    ]);
    expect((await api(`/v1/projects/${p.projectId}/policies`)).body.seq).toBe(0);
    // With approvals: passed on as given, and not part of the policy.
    const approvals = [signature, await a2.signTypedData(asked.body.typedData)];
    const set = await put(p.projectId, { ...lax, approvals });
    expect([set.status, set.body.seq, set.body.policies]).toEqual([200, 1, PoliciesSchema.parse(lax)]);
    expect(enclave.approvalsReceived).toEqual([undefined, approvals]);
    expect('approvals' in (opened(set.body.record).policies ?? {})).toBe(false);
    expect(log.lines().find((l) => l.msg === 'project policies changed')).toMatchObject({ approvals: 2 });

    // Bad approvals: 400 before the enclave is asked.
    const sig = `0x${'1'.repeat(130)}`;
    for (const [approvalsSent, message] of [
      [['0x1234'], 'body.approvals[0]: expected a 65-byte signature as 0x hex (130 hex digits)'],
      ['0x12', 'body.approvals:'],
      [Array.from({ length: 17 }, (_, i) => `0x${String(i).padStart(130, '0')}`), 'body.approvals: expected at most 16 approvals'],
      [[sig, sig.toUpperCase().replace('0X', '0x')], 'body.approvals: expected distinct approvals'],
    ] as const) {
      const bad = await put(p.projectId, { ...lax, rules: [], approvals: approvalsSent });
      expect([...code(bad), bad.body.error.message]).toEqual([400, 'INVALID_PARAMS', expect.stringContaining(message)]);
    }
    expect(enclave.calls['projects.setPolicies']).toBe(2);
    // :approval: admin only, a policy required, 404 for an unknown project.
    const at = `/v1/projects/${p.projectId}/policies:approval`;
    expect(code(await api(at, { method: 'POST', body: { policies: lax }, token: TOKENS.full }))).toEqual([403, 'FORBIDDEN']);
    expect(code(await api(at, { method: 'POST' }))).toEqual([400, 'INVALID_PARAMS']);
    expect(code(await api(at, { method: 'POST', body: lax }))).toEqual([400, 'INVALID_PARAMS']);
    expect(code(await api(`/v1/projects/${NO_PROJECT}/policies:approval`, { method: 'POST', body: { policies: lax } }))).toEqual([
      404,
      'NOT_FOUND',
    ]);
  });
});
