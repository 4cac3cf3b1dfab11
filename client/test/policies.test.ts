/**
 * Signing policies in the client (docs/POLICIES.md): the SDK's `getPolicies`, `setPolicies`, `evaluatePolicy`
 * and `KeystoreApiError.details`; `verifyPolicies` against records a test identity signs; and `nks policies` as
 * a program (dist/cli.js: `npm run build`) against a stand-in API that records what it is asked — what it
 * prints, and its usage errors (exit 2) before anything is sent. The routes themselves are tested in
 * parent/test/policies.test.ts, the whole path in test/e2e/policies.test.ts.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { recoverTypedDataAddress } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { policiesDigest, policyChangeTypedData, policyChangeTypedDataForWallet } from '@nks/shared/policy/approval';
import { PoliciesSchema } from '@nks/shared/policy/schema';
import { recordDigest, hex } from '@nks/shared/records';
import { tempRunDir } from '@nks/shared-test/helpers';
import {
  KeystoreApiError,
  KeystoreClient,
  verifyPolicies,
  VerificationError,
  type Policies,
  type PoliciesView,
  type PolicyDecision,
} from '../src/sdk';
import { defaultProjectRecord, makeIdentity } from './keystore-fixtures';

const CLI = path.resolve(__dirname, '../../dist/cli.js');
jest.setTimeout(120_000);

const PROJECT_ID = `p_${'A'.repeat(22)}`;
const USDC = '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48' as const;
const POLICIES: Policies = {
  rules: [
    { name: 'no blind signing', effect: 'deny' as const, when: { type: ['digest' as const] } },
    { name: 'usdc', effect: 'allow' as const, when: { to: [USDC], erc20: { function: ['transfer' as const], maxAmount: '1000000' } } },
  ],
  limits: [{ name: 'daily', scope: 'key' as const, window: 'day' as const, maxCount: 100, maxValue: '5000' }],
};
const identity = makeIdentity();
const signedRecord = identity.sign(
  defaultProjectRecord({
    projectId: PROJECT_ID,
    projectKey: `pk_${'B'.repeat(22)}`,
    seq: 3,
    prev: `0x${'cd'.repeat(32)}`,
    policies: POLICIES,
  }),
);
const VIEW: PoliciesView = {
  projectId: PROJECT_ID,
  seq: 3,
  recordSha256: hex(recordDigest(Buffer.from(signedRecord.record, 'base64'))),
  policies: POLICIES,
  record: signedRecord,
};
const DECISION: PolicyDecision = {
  allowed: false,
  rule: null,
  limit: null,
  reason: 'no rule allows it: rule "usdc": to 0x0000000000000000000000000000000000000001 is not in the list',
  rules: [
    { name: 'no blind signing', effect: 'deny', matched: false, failed: 'type transaction is not in the list' },
    { name: 'usdc', effect: 'allow', matched: false, failed: 'to 0x0000000000000000000000000000000000000001 is not in the list' },
  ],
  limits: [{ name: 'daily', scope: 'key', window: 'day', applies: true, count: { used: 3, max: 100 }, value: { used: '10', max: '5000' } }],
};
const DENIED_BODY = {
  error: {
    code: 'POLICY_DENIED',
    message: 'denied by the project\'s policy (rule "no blind signing"): type is digest',
    retryable: false,
    requestId: 'r1',
    details: { rule: 'no blind signing', limit: null, reason: 'type is digest' },
  },
};
const REQUEST = {
  type: 'transaction',
  transaction: {
    type: 'eip1559',
    chainId: 1,
    nonce: 0,
    to: '0x0000000000000000000000000000000000000001',
    value: '1000',
    gas: 21000,
    maxFeePerGas: '1',
    maxPriorityFeePerGas: '1',
  },
};

interface Seen {
  method: string;
  url: string;
  body: unknown;
  authorization: string | undefined;
}

/** A stand-in API: answers each request with `answer`, and records it. */
async function standIn(answer: (req: Seen) => { status: number; body: unknown }) {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      const s: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        body: text ? JSON.parse(text) : undefined,
        authorization: req.headers.authorization,
      };
      seen.push(s);
      const a = answer(s);
      res.writeHead(a.status, { 'content-type': 'application/json' }).end(JSON.stringify(a.body));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function nks(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, NKS_URL: '', NKS_TOKEN: '', NKS_DEV_DIR: '/nonexistent', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

describe('signing policies in the SDK', () => {
  it('gets, sets and evaluates on their routes; a set is retried like a read (the same policy again changes nothing)', async () => {
    let failNext = 0;
    const api = await standIn((req) => {
      if (failNext > 0) {
        failNext -= 1;
        return { status: 503, body: { error: { code: 'UNAVAILABLE', message: 'restarting', retryable: true, requestId: 'r0' } } };
      }
      if (req.url.endsWith('policies:evaluate')) return { status: 200, body: DECISION };
      return { status: 200, body: VIEW };
    });
    try {
      const c = new KeystoreClient({ url: api.url, token: 'admin-token' });
      expect(await c.getPolicies(PROJECT_ID)).toEqual(VIEW);
      expect(api.seen.at(-1)).toEqual({
        method: 'GET',
        url: `/v1/projects/${PROJECT_ID}/policies`,
        body: undefined,
        authorization: 'Bearer admin-token',
      });
      failNext = 1;
      expect(await c.setPolicies(PROJECT_ID, POLICIES)).toEqual(VIEW);
      expect(api.seen.slice(-2).map((s) => [s.method, s.url, s.body])).toEqual([
        ['PUT', `/v1/projects/${PROJECT_ID}/policies`, POLICIES],
        ['PUT', `/v1/projects/${PROJECT_ID}/policies`, POLICIES],
      ]);
      const input = { request: REQUEST as never, keyId: 'k1', policies: { rules: [] } };
      expect(await c.evaluatePolicy(PROJECT_ID, input)).toEqual(DECISION);
      expect(api.seen.at(-1)).toMatchObject({ method: 'POST', url: `/v1/projects/${PROJECT_ID}/policies:evaluate`, body: input });
    } finally {
      await api.close();
    }
  });

  it("carries an error's details (POLICY_DENIED: the rule or limit and why), and none when there are none or they are malformed", async () => {
    const bodies: unknown[] = [
      DENIED_BODY,
      { error: { code: 'KEY_NOT_FOUND', message: 'no', requestId: 'r2' } },
      { error: { ...DENIED_BODY.error, details: { reason: 5 } } },
    ];
    const api = await standIn(() => ({ status: 403, body: bodies.shift() }));
    try {
      const c = new KeystoreClient({ url: api.url, token: 't' });
      const denied = (await c.signDigest('k1', `0x${'11'.repeat(32)}`).catch((e: unknown) => e)) as KeystoreApiError;
      expect(denied).toBeInstanceOf(KeystoreApiError);
      expect([denied.status, denied.code, denied.retryable, denied.details]).toEqual([
        403,
        'POLICY_DENIED',
        false,
        DENIED_BODY.error.details,
      ]);
      expect(denied.message).toBe(DENIED_BODY.error.message);
      expect(api.seen).toHaveLength(1); // not retried
      expect(((await c.getKey('k1').catch((e: unknown) => e)) as KeystoreApiError).details).toBeUndefined();
      expect(((await c.getKey('k1').catch((e: unknown) => e)) as KeystoreApiError).details).toBeUndefined();
    } finally {
      await api.close();
    }
  });
});

describe('verifyPolicies', () => {
  const options = { identityPublicKey: identity.publicKey, projectId: PROJECT_ID };

  it('accepts a view whose policies are those of a record the identity signed, of the project asked for', () => {
    const v = verifyPolicies(VIEW, options);
    expect([v.record.seq, v.recordDigest, v.policies]).toEqual([3, VIEW.recordSha256, POLICIES]);
    expect(v.checks).toEqual([
      `record signature verifies with the pinned identity (record ${VIEW.recordSha256}, seq 3)`,
      `the record is of project ${PROJECT_ID}`,
      "the view's policies are the record's: 2 rule(s), 1 limit(s), seq, recordSha256",
    ]);
    // A record without policies: empty lists.
    const none = identity.sign(defaultProjectRecord({ projectId: PROJECT_ID }));
    expect(verifyPolicies({ projectId: PROJECT_ID, policies: { rules: [], limits: [] }, record: none }, options).policies).toEqual({
      rules: [],
      limits: [],
    });
  });

  it.each<[string, Partial<PoliciesView> | ((v: PoliciesView) => unknown), string, RegExp]>([
    [
      'laxer policies',
      { policies: { rules: [POLICIES.rules[1] as never], limits: [] } },
      'VIEW_MISMATCH',
      /policies: the view shows other rules or limits/,
    ],
    ['no policies', { policies: { rules: [], limits: [] } }, 'VIEW_MISMATCH', /policies: /],
    ['another seq', { seq: 4 }, 'VIEW_MISMATCH', /seq: the view says 4, the record 3/],
    ['another digest', { recordSha256: `0x${'00'.repeat(32)}` }, 'VIEW_MISMATCH', /recordSha256: /],
    [
      'a record of another project',
      { record: identity.sign(defaultProjectRecord({ policies: POLICIES })) },
      'KEY_MISMATCH',
      /is of project default, not project p_A/,
    ],
    [
      'a record another identity signed',
      { record: makeIdentity().sign(defaultProjectRecord({ projectId: PROJECT_ID, policies: POLICIES })) },
      'RECORD_SIGNATURE',
      /does not verify/,
    ],
    [
      'an altered record',
      { record: { ...signedRecord, signature: identity.sign(defaultProjectRecord()).signature } },
      'RECORD_SIGNATURE',
      /does not verify/,
    ],
    ['no record', { record: undefined as never }, 'MALFORMED', /has no signed record/],
  ])('refuses a view with %s', (_name, change, code, message) => {
    const view = typeof change === 'function' ? (change(VIEW) as PoliciesView) : { ...VIEW, ...change };
    const err = (() => {
      try {
        verifyPolicies(view, options);
      } catch (e) {
        return e as VerificationError;
      }
      throw new Error('expected a failure');
    })();
    expect(err).toBeInstanceOf(VerificationError);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
  });
});

describe('nks policies', () => {
  let dir: string;
  beforeAll(() => {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" (or node scripts/build.mjs --only cli) first`);
    dir = tempRunDir('nks-policies-cli-');
    fs.writeFileSync(
      path.join(dir, 'policy.json'),
      JSON.stringify({
        ...POLICIES,
        rules: [{ ...POLICIES.rules[0] }, { ...POLICIES.rules[1], when: { ...POLICIES.rules[1]?.when, to: [USDC.toLowerCase()] } }],
      }),
    );
    fs.writeFileSync(path.join(dir, 'request.json'), JSON.stringify(REQUEST));
    fs.writeFileSync(path.join(dir, 'identity.json'), JSON.stringify({ publicKey: identity.publicKey }));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = (name: string) => path.join(dir, name);

  it('gets (and checks the record with --identity), sets from a file, and evaluates, for people and as JSON', async () => {
    const api = await standIn((req) => (req.url.endsWith(':evaluate') ? { status: 200, body: DECISION } : { status: 200, body: VIEW }));
    try {
      const env = { NKS_URL: api.url, NKS_TOKEN: 'admin-token' };
      const got = await nks(['policies', 'get', '--project', PROJECT_ID], env);
      expect({ status: got.status, stderr: got.stderr }).toEqual({ status: 0, stderr: '' });
      expect(got.stdout).toBe(
        [
          `projectId     ${PROJECT_ID}`,
          'seq           3',
          `recordSha256  ${VIEW.recordSha256}`,
          'rules (2; a matching deny rule refuses, else a matching allow rule allows, else refused):',
          '  1. deny  "no blind signing" when type in [digest]',
          `  2. allow "usdc" when to in [${USDC}], erc20.function in [transfer], erc20.amount ≤ 1000000`,
          'limits (1):',
          '  "daily": at most 100 signature(s) and 5000 wei per key per day',
          '',
        ].join('\n'),
      );
      const checked = await nks(['policies', 'get', '--project', PROJECT_ID, '--identity', file('identity.json'), '--json'], env);
      expect(checked.status).toBe(0);
      expect(JSON.parse(checked.stdout)).toEqual({ ...VIEW, verified: expect.arrayContaining([`the record is of project ${PROJECT_ID}`]) });
      // A record of another identity: INVALID, exit 1.
      const other = await nks(['policies', 'get', '--project', PROJECT_ID, '--identity', makeIdentity().publicKey], env);
      expect([other.status, other.stdout]).toEqual([1, expect.stringMatching(/^INVALID policies: RECORD_SIGNATURE: /)]);

      const set = await nks(['policies', 'set', '--project', PROJECT_ID, '--file', file('policy.json')], env);
      expect({ status: set.status, stderr: set.stderr }).toEqual({ status: 0, stderr: '' });
      expect(set.stdout).toMatch(new RegExp(`^Set the signing policies of project ${PROJECT_ID}\n`));
      // Sent normalized (the checksummed address).
      expect(api.seen.at(-1)).toMatchObject({ method: 'PUT', url: `/v1/projects/${PROJECT_ID}/policies`, body: POLICIES });

      const evaluated = await nks(['policies', 'evaluate', '--project', PROJECT_ID, '--request', file('request.json'), '--key', 'k1'], env);
      expect({ status: evaluated.status, stderr: evaluated.stderr }).toEqual({ status: 0, stderr: '' });
      expect(evaluated.stdout).toBe(
        [
          `DENIED: ${DECISION.reason}`,
          'rules:',
          '  deny  "no blind signing": no match: type transaction is not in the list',
          '  allow "usdc": no match: to 0x0000000000000000000000000000000000000001 is not in the list',
          'limits:',
          '  "daily" (per key, day): within (count 3/100, value 10/5000 wei used before this request)',
          '',
        ].join('\n'),
      );
      expect(api.seen.at(-1)).toMatchObject({
        method: 'POST',
        url: `/v1/projects/${PROJECT_ID}/policies:evaluate`,
        body: { request: REQUEST, keyId: 'k1' },
      });
      const tried = await nks(
        ['policies', 'evaluate', '--project', PROJECT_ID, '--request', file('request.json'), '--file', file('policy.json'), '--json'],
        env,
      );
      expect([tried.status, JSON.parse(tried.stdout)]).toEqual([0, DECISION]);
      expect(api.seen.at(-1)?.body).toEqual({ request: REQUEST, policies: POLICIES });
    } finally {
      await api.close();
    }
  });

  it('prints a refusal with its code and exits 1', async () => {
    const api = await standIn(() => ({
      status: 404,
      body: { error: { code: 'NOT_FOUND', message: `project ${PROJECT_ID} does not exist`, retryable: false, requestId: 'r9' } },
    }));
    try {
      const r = await nks(['policies', 'get', '--project', PROJECT_ID], { NKS_URL: api.url, NKS_TOKEN: 't' });
      expect([r.status, r.stderr]).toEqual([1, `nks: NOT_FOUND (HTTP 404): project ${PROJECT_ID} does not exist [request r9]\n`]);
    } finally {
      await api.close();
    }
  });

  it('exits 2 on usage errors, naming the field, without asking the API', async () => {
    fs.writeFileSync(file('bad-policy.json'), JSON.stringify({ rules: [{ name: 'a', effect: 'allow', when: { to: ['0x1234'] } }] }));
    fs.writeFileSync(file('bad-request.json'), JSON.stringify({ type: 'digest', digest: '0x12' }));
    fs.writeFileSync(file('not-json.json'), '{rules');
    const api = await standIn(() => ({ status: 500, body: {} }));
    try {
      const env = { NKS_URL: api.url, NKS_TOKEN: 't' };
      const cases: Array<[string[], RegExp]> = [
        [['policies'], /usage: nks policies get\|set\|evaluate\|approve .*the KMS key policy is "nks policy"/],
        [['policies', 'delete', '--project', PROJECT_ID], /usage: nks policies/],
        [['policies', 'get'], /--project is required/],
        [['policies', 'get', '--project', PROJECT_ID, '--identity', '0x12'], /--identity takes 0x and 64/],
        [['policies', 'get', PROJECT_ID], /Unexpected argument|expected 0 argument/],
        [['policies', 'set', '--project', PROJECT_ID], /--file is required/],
        [['policies', 'set', '--project', PROJECT_ID, '--file', file('missing.json')], /cannot read .*missing\.json: ENOENT/],
        [['policies', 'set', '--project', PROJECT_ID, '--file', file('not-json.json')], /not-json\.json is not valid JSON/],
        [
          ['policies', 'set', '--project', PROJECT_ID, '--file', file('bad-policy.json')],
          /bad-policy\.json is not a policy: .*bad-policy\.json\.rules\[0\]\.when\.to\[0\]: expected a 20-byte/,
        ],
        [['policies', 'evaluate', '--project', PROJECT_ID], /--request is required/],
        [
          ['policies', 'evaluate', '--project', PROJECT_ID, '--request', file('bad-request.json')],
          /bad-request\.json is not a sign request: .*\.digest: /,
        ],
        [
          ['policies', 'evaluate', '--project', PROJECT_ID, '--request', file('request.json'), '--file', file('bad-policy.json')],
          /is not a policy/,
        ],
        [
          ['policies', 'evaluate', '--project', PROJECT_ID, '--request', file('request.json'), '--key', 'a b'],
          /--key a b: expected 1-64 characters/,
        ],
        [['policies', 'evaluate', '--project', PROJECT_ID, '--request', file('request.json'), '--sign'], /Unknown option '--sign'/],
        [
          ['policies', 'set', '--project', PROJECT_ID, '--file', file('policy.json'), '--approval', '0x12'],
          /--approval 0x12: expected a 65-byte/,
        ],
        [['policies', 'approve', '--project', PROJECT_ID], /--file is required/],
        [['policies', 'approve', '--project', PROJECT_ID, '--file', file('policy.json')], /either --key-file FILE .* or --typed-data/],
        [
          [
            'policies',
            'approve',
            '--project',
            PROJECT_ID,
            '--file',
            file('policy.json'),
            '--typed-data',
            '--key-file',
            file('policy.json'),
          ],
          /either --key-file FILE .* or --typed-data/,
        ],
        [
          ['policies', 'approve', '--project', PROJECT_ID, '--file', file('policy.json'), '--key-file', file('request.json')],
          /request\.json is not a secp256k1 private key \(32 bytes as hex, 0x optional\)/,
        ],
        [
          ['policies', 'approve', '--project', PROJECT_ID, '--file', file('policy.json'), '--typed-data', '--record', '0x12'],
          /--record 0x12: expected a record digest/,
        ],
        [
          ['policy', 'get', '--project', PROJECT_ID],
          /nks policy writes the KMS key policy; a project's signing policies are "nks policies get"/,
        ],
      ];
      const runs = await Promise.all(cases.map(([args]) => nks(args, env)));
      cases.forEach(([args, message], i) => {
        const r = runs[i] as Awaited<ReturnType<typeof nks>>;
        expect({ args, status: r.status }).toEqual({ args, status: 2 });
        expect(r.stderr).toMatch(message);
      });
      expect(api.seen).toEqual([]);
    } finally {
      await api.close();
    }
  });

  it('tells the two policy commands apart in its help', async () => {
    const help = (await nks(['--help'])).stdout;
    expect(help).toMatch(/nks policies get --project ID/);
    expect(help).toMatch(/a project's signing policies \(admin token; docs\/POLICIES\.md\)/);
    expect(help).toMatch(/writes the KMS key policy \(docs\/KEY-POLICY\.md.*not signing policies/s);
  });
  it("the SDK's policyApproval refuses typed data that is not the change to the policies asked (a parent's lie)", async () => {
    const approvers = { addresses: [privateKeyToAccount(generatePrivateKey()).address], threshold: 1 };
    const wanted = { ...POLICIES, approvers };
    const laxer = { rules: [{ name: 'all', effect: 'allow' as const }], approvers };
    const record = VIEW.recordSha256 as `0x${string}`;
    const view = (id: string, policies: typeof wanted | typeof laxer) => ({
      projectId: id,
      seq: VIEW.seq,
      recordSha256: record,
      approvers,
      typedData: policyChangeTypedDataForWallet(id, record, PoliciesSchema.parse(policies)),
    });
    for (const lie of [view(PROJECT_ID, laxer), view('p_BBBBBBBBBBBBBBBBBBBBBB', wanted)]) {
      const api = await standIn(() => ({ status: 200, body: lie }));
      try {
        const err = await new KeystoreClient({ url: api.url, token: 'admin-token' }).policyApproval(PROJECT_ID, wanted).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(VerificationError);
        expect((err as VerificationError).code).toBe('VIEW_MISMATCH');
      } finally {
        await api.close();
      }
    }
  });

  it('approve: signs the change of the current record with a local key, or prints its typed data for a wallet; set sends approvals', async () => {
    const key = generatePrivateKey();
    const approver = privateKeyToAccount(key);
    fs.writeFileSync(file('approver.key'), `${key.slice(2)}\n`);
    const approved = { ...POLICIES, approvers: { addresses: [approver.address.toLowerCase()], threshold: 1 } };
    fs.writeFileSync(file('approved.json'), JSON.stringify(approved));
    const normalized = PoliciesSchema.parse(approved);
    const expected = policyChangeTypedData(PROJECT_ID, VIEW.recordSha256 as `0x${string}`, normalized);
    const withApprovers = (addresses: string[]) => ({ ...VIEW, policies: { ...POLICIES, approvers: { addresses, threshold: 1 } } });
    let answer: unknown = withApprovers([approver.address]);
    // What the parent answers for POST …/policies:approval: the change to `approved` (the SDK checks it is).
    const approvalView = {
      projectId: PROJECT_ID,
      seq: VIEW.seq,
      recordSha256: VIEW.recordSha256,
      approvers: normalized.approvers,
      typedData: policyChangeTypedDataForWallet(PROJECT_ID, VIEW.recordSha256 as `0x${string}`, normalized),
    };
    const api = await standIn((req) =>
      req.method === 'GET' ? { status: 200, body: answer } : { status: 200, body: req.url.endsWith(':approval') ? approvalView : VIEW },
    );
    try {
      const env = { NKS_URL: api.url, NKS_TOKEN: 'admin-token' };
      const args = ['policies', 'approve', '--project', PROJECT_ID, '--file', file('approved.json')];
      const signed = await nks([...args, '--key-file', file('approver.key'), '--json'], env);
      expect({ status: signed.status, stderr: signed.stderr }).toEqual({ status: 0, stderr: '' });
      const out = JSON.parse(signed.stdout);
      expect(out).toEqual({
        projectId: PROJECT_ID,
        recordSha256: VIEW.recordSha256,
        policiesSha256: policiesDigest(normalized),
        approver: approver.address,
        signature: expect.stringMatching(/^0x[0-9a-f]{130}$/),
      });
      expect(await recoverTypedDataAddress({ ...expected, signature: out.signature })).toBe(approver.address);
      expect(api.seen).toEqual([expect.objectContaining({ method: 'GET', url: `/v1/projects/${PROJECT_ID}/policies` })]);

      // The typed data for a wallet: the wallet's signature (EIP712Domain listed) is the same approval.
      const printed = await nks([...args, '--typed-data'], env);
      expect(printed.status).toBe(0);
      const typed = JSON.parse(printed.stdout);
      expect(typed.types.EIP712Domain).toEqual([
        { name: 'name', type: 'string' },
        { name: 'version', type: 'string' },
      ]);
      expect(await approver.signTypedData(typed)).toBe(out.signature);

      // Offline, from a digest the approver got elsewhere: no API call.
      const seen = api.seen.length;
      const offline = await nks([...args, '--key-file', file('approver.key'), '--record', VIEW.recordSha256, '--json']);
      expect([offline.status, JSON.parse(offline.stdout).signature]).toEqual([0, out.signature]);
      expect(api.seen.length).toBe(seen);

      // Someone who is not an approver is told the enclave will not count it.
      answer = withApprovers([USDC]);
      const outsider = await nks([...args, '--key-file', file('approver.key')], env);
      expect(outsider.status).toBe(0);
      expect(outsider.stderr).toMatch(new RegExp(`warning: ${approver.address} is not one of this project's approvers`));
      expect(outsider.stdout).toMatch(/^Approved the change of project .* to:\napprovers: 1 of \[0x/);
      // An answer whose digest is not its record's: nothing signed.
      answer = { ...VIEW, recordSha256: `0x${'00'.repeat(32)}` };
      const lied = await nks([...args, '--key-file', file('approver.key')], env);
      expect([lied.status, lied.stdout]).toEqual([1, '']);
      expect(lied.stderr).toMatch(/names another project or record .*: not approved/);

      const sent = await nks(
        [
          'policies',
          'set',
          '--project',
          PROJECT_ID,
          '--file',
          file('approved.json'),
          '--approval',
          out.signature,
          '--approval',
          `0x${'ab'.repeat(65)}`,
        ],
        env,
      );
      expect(sent.status).toBe(0);
      expect(api.seen.at(-1)).toMatchObject({
        method: 'PUT',
        body: { ...normalized, approvals: [out.signature, `0x${'ab'.repeat(65)}`] },
      });

      // The SDK: policyApproval and setPolicies with approvals, on their routes.
      const client = new KeystoreClient({ url: api.url, token: 'admin-token' });
      expect((await client.policyApproval(PROJECT_ID, approved)).typedData).toEqual(approvalView.typedData);
      expect(api.seen.at(-1)).toMatchObject({
        method: 'POST',
        url: `/v1/projects/${PROJECT_ID}/policies:approval`,
        body: { policies: approved },
      });
      await client.setPolicies(PROJECT_ID, approved, { approvals: [out.signature] });
      expect(api.seen.at(-1)?.body).toEqual({ ...approved, approvals: [out.signature] });
    } finally {
      await api.close();
    }
  });
});
