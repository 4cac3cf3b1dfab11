/**
 * Signing policies end to end (docs/POLICIES.md), over real processes (NSM simulator, KMS emulator, the enclave
 * bundle, the parent): a policy set with `nks policies set` (dist/cli.js), enforced by the enclave on what it
 * signs — a deny rule, no allow rule, a limit, each a 403 POLICY_DENIED with its details — while allowed requests
 * sign; `nks policies evaluate` explains without counting; the policies read back with a record that verifies with
 * the keystore identity; the metrics; and a parent that puts the project's older record (without the policy) back
 * in its database, refused by the enclave; a policy with approvers, changed only with their signatures
 * (`nks policies approve`, `set --approval`). One stack.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { encodeFunctionData, erc20Abi, keccak256, recoverTransactionAddress, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { KeystoreApiError, KeystoreClient, verifyPolicies, type Key, type PoliciesInput, type Project } from '../../client/src/sdk';
import { tempRunDir } from '@nks/shared-test/helpers';
import { ROOT } from '../support/process';
import { startStack, waitReady, type Stack } from '../support/stack';
import { dropGuards } from '../support/tamper';

const CLI = path.join(ROOT, 'dist', 'cli.js');
const USDC = '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48';
const BOB = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';

const POLICY = {
  rules: [
    { name: 'no blind signing', effect: 'deny', when: { type: ['digest'] } },
    {
      name: 'usdc transfers',
      effect: 'allow',
      when: { type: ['transaction'], chainId: [1], to: [USDC.toLowerCase()], erc20: { function: ['transfer'], maxAmount: '1000000' } },
    },
    { name: 'messages', effect: 'allow', when: { type: ['message'] } },
  ],
  limits: [{ name: 'messages per hour', scope: 'key', window: 'hour', maxCount: 2, when: { type: ['message'] } }],
};

const transfer = (amount: bigint, to: string = USDC) => ({
  type: 'eip1559' as const,
  chainId: 1,
  nonce: 0,
  to: to as Hex,
  value: '0',
  gas: '60000',
  maxFeePerGas: '30000000000',
  maxPriorityFeePerGas: '1000000000',
  data: encodeFunctionData({ abi: erc20Abi, functionName: 'transfer', args: [BOB, amount] }),
});

function nks(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, NKS_DEV_DIR: '/nonexistent', ...env } });
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

describe('signing policies end to end', () => {
  let s: Stack;
  let admin: KeystoreClient;
  let signer: KeystoreClient;
  let project: Project;
  let key: Key;
  let dir: string;
  const env = () => ({ NKS_URL: s.url, NKS_TOKEN: s.tokens.admin });
  const refusal = async (p: Promise<unknown>) => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KeystoreApiError);
    return err as KeystoreApiError;
  };

  beforeAll(async () => {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first`);
    dir = tempRunDir('nks-e2e-policies-');
    s = await startStack(dir);
    await waitReady(s);
    admin = new KeystoreClient({ url: s.url, token: s.tokens.admin });
    signer = new KeystoreClient({ url: s.url, token: s.tokens.full });
    project = await admin.createProject({
      name: 'treasury',
      auth: { type: 'token' },
      allowedRequestTypes: ['digest', 'message', 'transaction'],
    });
    key = (await signer.createKey({ projectId: project.projectId })).key;
  }, 90_000);

  afterAll(async () => {
    await s?.stop();
  });

  it('signs as before without a policy; nks policies set makes the next record, and the enclave enforces it', async () => {
    const digest = keccak256('0x01');
    expect((await signer.signDigest(key.keyId, digest)).address).toBe(key.address);

    fs.writeFileSync(path.join(dir, 'policy.json'), JSON.stringify(POLICY));
    const set = await nks(['policies', 'set', '--project', project.projectId, '--file', path.join(dir, 'policy.json'), '--json'], env());
    expect({ status: set.status, stderr: set.stderr }).toEqual({ status: 0, stderr: '' });
    const view = JSON.parse(set.stdout) as { seq: number; policies: { rules: Array<{ when: { to?: string[] } }> } };
    expect(view.seq).toBe(1);
    expect(view.policies.rules[1]?.when.to).toEqual([USDC]); // normalized: checksummed

    // A deny rule: 403 with the rule and the condition, in the message and in `details`.
    const raw = await s.api(`/v1/keys/${key.keyId}/sign`, { token: 'full', body: { type: 'digest', digest } });
    expect([raw.status, raw.body]).toEqual([
      403,
      {
        error: {
          code: 'POLICY_DENIED',
          message: `denied by the project's policy (rule "no blind signing"): type is digest`,
          retryable: false,
          requestId: raw.headers.get('x-request-id'),
          details: { rule: 'no blind signing', limit: null, reason: 'type is digest' },
        },
      },
    ]);

    // Allowed: an ERC-20 transfer within the maximum, signed for real.
    const ok = await signer.signTransaction(key.keyId, transfer(500_000n));
    expect(await recoverTransactionAddress({ serializedTransaction: ok.serializedTransaction as `0x02${string}` })).toBe(key.address);

    // No rule allows it: over the maximum, or another recipient; each rule's failed condition named.
    const over = await refusal(signer.signTransaction(key.keyId, transfer(5_000_000n)));
    expect([over.status, over.code, over.details?.rule, over.details?.limit]).toEqual([403, 'POLICY_DENIED', null, null]);
    expect(over.details?.reason).toBe(
      'rule "usdc transfers": erc20.amount 5000000 is above the maximum 1000000; rule "messages": type transaction is not in the list',
    );
    const elsewhere = await refusal(signer.signTransaction(key.keyId, transfer(1n, BOB)));
    expect(elsewhere.details?.reason).toMatch(new RegExp(`^rule "usdc transfers": to ${BOB.toLowerCase()} is not in the list;`));

    // A limit: two messages an hour, the third refused by it (the rule that allowed it named too).
    for (const m of ['one', 'two']) expect((await signer.signMessage(key.keyId, m)).address).toBe(key.address);
    const third = await refusal(signer.signMessage(key.keyId, 'three'));
    expect([third.status, third.code, third.details?.rule, third.details?.limit]).toEqual([
      403,
      'POLICY_DENIED',
      'messages',
      'messages per hour',
    ]);
    expect(third.message).toMatch(/^denied by the project's policy \(limit "messages per hour"\): /);
  });

  it('explains a decision without counting (nks policies evaluate), and tries a policy before it is set', async () => {
    fs.writeFileSync(path.join(dir, 'message.json'), JSON.stringify({ type: 'message', message: 'four' }));
    const explained = await nks(
      ['policies', 'evaluate', '--project', project.projectId, '--request', path.join(dir, 'message.json'), '--key', key.keyId, '--json'],
      env(),
    );
    expect({ status: explained.status, stderr: explained.stderr }).toEqual({ status: 0, stderr: '' });
    const decision = JSON.parse(explained.stdout) as Record<string, unknown>;
    expect(decision).toMatchObject({
      allowed: false,
      rule: 'messages',
      limit: 'messages per hour',
      rules: [
        { name: 'no blind signing', matched: false, failed: 'type message is not in the list' },
        { name: 'usdc transfers', matched: false },
        { name: 'messages', matched: true },
      ],
      limits: [{ name: 'messages per hour', applies: true, count: { used: 2, max: 2 } }],
    });
    // Evaluating counted nothing: still two used.
    const again = await admin.evaluatePolicy(project.projectId, { request: { type: 'message', message: 'x' }, keyId: key.keyId });
    expect(again.limits[0]?.count).toEqual({ used: 2, max: 2 });
    // A policy tried, not stored: it decides this answer only.
    const tried = await admin.evaluatePolicy(project.projectId, {
      request: { type: 'digest', digest: keccak256('0x02') },
      policies: { rules: [{ name: 'anything', effect: 'allow' }] },
    });
    expect([tried.allowed, tried.rule]).toEqual([true, 'anything']);
    expect((await admin.getPolicies(project.projectId)).seq).toBe(1);
  });

  it('reads the policies back with a record that verifies with the keystore identity; the metrics count', async () => {
    const { publicKey } = await admin.identity(`0x${randomBytes(16).toString('hex')}`);
    const view = await admin.getPolicies(project.projectId);
    const verified = verifyPolicies(view, { identityPublicKey: publicKey, projectId: project.projectId });
    expect(verified.policies.rules.map((r) => r.name)).toEqual(['no blind signing', 'usdc transfers', 'messages']);
    expect(verified.record.seq).toBe(1);
    expect((await admin.getProject(project.projectId)).policies).toEqual(view.policies);

    const metrics = await s.metrics();
    const value = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? NaN);
    expect(value(/^nks_policy_changes_total (\d+)$/m)).toBe(1);
    expect(value(/^nks_policy_denials_total\{by="rule"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^nks_policy_denials_total\{by="no_rule"\} (\d+)$/m)).toBeGreaterThanOrEqual(2);
    expect(value(/^nks_policy_denials_total\{by="limit"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
  });

  it("refuses the project's older record, without the policy, put back by the parent while the enclave runs", async () => {
    // What a compromised parent would do: store the record from before the policy (genuine, seq 0) in its place.
    const db = new Database(s.dbPath);
    try {
      dropGuards(db);
      db.prepare('UPDATE projects SET record = ?, signature = ?, seq = 0 WHERE project_id = ?').run(
        project.record.record,
        project.record.signature,
        project.projectId,
      );
    } finally {
      db.close();
    }
    await s.restartParent(); // a new parent reads the row from the database (the old one has the newer one cached)
    await waitReady(s);
    admin = new KeystoreClient({ url: s.url, token: s.tokens.admin }); // its port is a new one
    signer = new KeystoreClient({ url: s.url, token: s.tokens.full });
    const replayed = await refusal(signer.signDigest(key.keyId, keccak256('0x03')));
    expect([replayed.status, replayed.code]).toEqual([500, 'KEY_INTEGRITY']);
    expect(replayed.details).toBeUndefined();
  });
  it('a policy with approvers changes only with their signatures: nks policies approve (a key file, or a wallet) then set --approval', async () => {
    const [k1, k2] = [generatePrivateKey(), generatePrivateKey()];
    const [a1, a2] = [privateKeyToAccount(k1), privateKeyToAccount(k2)];
    const guarded = await admin.createProject({
      name: 'guarded',
      auth: { type: 'token' },
      allowedRequestTypes: ['digest', 'message'],
      policies: { ...(POLICY as PoliciesInput), approvers: { addresses: [a1.address, a2.address], threshold: 2 } },
    });
    const lax = {
      rules: [{ name: 'anything', effect: 'allow' as const }],
      approvers: { addresses: [a1.address, a2.address], threshold: 2 },
    };
    // The admin token alone (the parent alone) cannot relax it.
    const refused = await refusal(admin.setPolicies(guarded.projectId, lax));
    expect([refused.status, refused.code, refused.message]).toEqual([
      403,
      'FORBIDDEN',
      "changing this project's policies needs 2 approvals of its approvers, got 0",
    ]);
    fs.writeFileSync(path.join(dir, 'lax.json'), JSON.stringify(lax));
    fs.writeFileSync(path.join(dir, 'a1.key'), k1);
    const approve = ['policies', 'approve', '--project', guarded.projectId, '--file', path.join(dir, 'lax.json')];
    const one = await nks([...approve, '--key-file', path.join(dir, 'a1.key'), '--json'], env());
    expect({ status: one.status, stderr: one.stderr }).toEqual({ status: 0, stderr: '' });
    const typed = await nks([...approve, '--typed-data'], env());
    const second = await a2.signTypedData(JSON.parse(typed.stdout)); // what a wallet would answer
    const first = (JSON.parse(one.stdout) as { signature: string }).signature;
    // One approver and someone who is none: one approval.
    const outsider = await privateKeyToAccount(generatePrivateKey()).signTypedData(JSON.parse(typed.stdout));
    const set = ['policies', 'set', '--project', guarded.projectId, '--file', path.join(dir, 'lax.json')];
    const short = await nks([...set, '--approval', first, '--approval', outsider], env());
    expect([short.status, short.stderr]).toEqual([1, expect.stringMatching(/FORBIDDEN \(HTTP 403\): .* got 1/)]);
    const done = await nks([...set, '--approval', first, '--approval', second, '--json'], env());
    expect({ status: done.status, stderr: done.stderr }).toEqual({ status: 0, stderr: '' });
    expect(JSON.parse(done.stdout)).toMatchObject({ seq: 1, policies: { rules: [{ name: 'anything' }] } });
  });
});
