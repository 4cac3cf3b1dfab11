/**
 * Review 19's attacks on the policy facts (F2–F5), replayed where the caller stands, against the real enclave
 * bundle: each is now refused with POLICY_DENIED naming the rule or limit and why (docs/POLICIES.md, "Blind
 * signing, EIP-7702 and gas"), and the request it was made from still signs where the policy allows it.
 * - F2: a 32-byte raw message (a userOpHash) signs the user operation the policy refuses: only a rule listing
 *   messageKind "hash" allows a hash.
 * - F3: a `delegate` rule allowed any type-4 transaction (a bogus authorization tuple): a transaction has no
 *   delegate.
 * - F4: gas is not value: a user operation with value 0 prefunds any amount of ether. `maxFee` caps it; limits
 *   count value + fee.
 * - F5: a digest (a transaction's) counted as value 0 under a maxValue limit: its value is unknown, refused.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { encodeFunctionData, getAddress, keccak256, parseAbi, recoverMessageAddress, serializeTransaction, type Hex } from 'viem';
import { getUserOperationHash } from 'viem/account-abstraction';
import type { CreateResult, ProjectResult } from '@nks/shared/enclave-api';
import { HASH_NOT_LISTED } from '@nks/shared/policy/evaluate';
import type { PoliciesInput } from '@nks/shared/policy/schema';
import type { SignedRecord } from '@nks/shared/records';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { startEnclaveHarness, type EnclaveHarness } from './harness';

jest.setTimeout(120_000);

const ALL_TYPES = ['digest', 'message', 'typedData', 'transaction', 'authorization', 'userOperation'];
const USDC = '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48';
const DAI = '0x6B175474E89094C44Da98b954EedeAC495271d0F';
const ENTRY_POINT_07 = '0x0000000071727De22E5E9d8BAf0edAc6f37da032';
const DELEGATE = '0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B';
const ATTACKER = getAddress('0x90f79bf6eb2c4f870365e785982e1f101e93b906');
const SENDER = '0x1111111111111111111111111111111111111111';
const ETH = 10n ** 18n;
const GWEI = 10n ** 9n;

const accountAbi = parseAbi(['function execute(address dest, uint256 value, bytes func)']);

/** A policy example of docs/POLICIES.md, as the page has it. */
function docsExample(name: string): PoliciesInput {
  const page = readFileSync(path.join(__dirname, '../../docs/POLICIES.md'), 'utf8');
  const json = new RegExp(`<!-- example: ${name} -->\\n\`\`\`json\\n([\\s\\S]*?)\\n\`\`\``).exec(page)?.[1];
  if (json === undefined) throw new Error(`docs/POLICIES.md has no example ${name}`);
  return JSON.parse(json) as PoliciesInput;
}

/** The review's policy: the docs' "app-user-operations" rule (before maxFee) and sign-in messages by type. */
const APP_USER_OPS: PoliciesInput = {
  rules: [
    {
      name: 'app-user-operations',
      effect: 'allow',
      when: {
        type: ['userOperation'],
        chainId: [8453],
        maxValue: '0',
        userOperation: { entryPoint: [ENTRY_POINT_07], targets: [USDC, DAI] },
      },
    },
    { name: 'sign-in', effect: 'allow', when: { type: ['message'] } },
  ],
  limits: [{ name: 'daily-ether', scope: 'key', window: 'day', maxValue: '0' }],
};

const userOp07 = (callData: Hex, over: Record<string, string> = {}) => ({
  sender: SENDER,
  nonce: '0',
  callData,
  callGasLimit: '100000',
  verificationGasLimit: '100000',
  preVerificationGas: '50000',
  maxFeePerGas: '1000000000',
  maxPriorityFeePerGas: '1000000000',
  ...over,
});
const userOpRequest = (callData: Hex, over: Record<string, string> = {}) => ({
  type: 'userOperation',
  version: '0.7',
  chainId: 8453,
  entryPoint: ENTRY_POINT_07,
  userOperation: userOp07(callData, over),
});
const drain = encodeFunctionData({ abi: accountAbi, functionName: 'execute', args: [ATTACKER, 100n * ETH, '0x'] });
const usdcCall = encodeFunctionData({ abi: accountAbi, functionName: 'execute', args: [USDC, 0n, '0x'] });
/** The userOpHash of userOpRequest(drain): what SimpleAccount checks an EIP-191 signature over. */
const drainHash = getUserOperationHash({
  chainId: 8453,
  entryPointAddress: ENTRY_POINT_07,
  entryPointVersion: '0.7',
  userOperation: {
    sender: SENDER,
    nonce: 0n,
    callData: drain,
    callGasLimit: 100000n,
    verificationGasLimit: 100000n,
    preVerificationGas: 50000n,
    maxFeePerGas: GWEI,
    maxPriorityFeePerGas: GWEI,
    signature: '0x',
  },
});
const eip1559 = (over: Record<string, unknown> = {}) => ({
  type: 'eip1559',
  chainId: 1,
  nonce: 0,
  to: ATTACKER,
  value: (100n * ETH).toString(),
  gas: '21000',
  maxFeePerGas: '100',
  maxPriorityFeePerGas: '1',
  ...over,
});
/** An authorization tuple signed by nobody (r = s = 1): the chain skips it, the transaction stays valid. */
const BOGUS_TUPLE = { address: DELEGATE, chainId: 1, nonce: 0, r: `0x${'00'.repeat(31)}01`, s: `0x${'00'.repeat(31)}01`, yParity: 0 };

interface Refusal {
  code: string;
  details: { rule: string | null; limit: string | null; reason: string };
}

describe('review 19 F2–F5, replayed against the real enclave bundle: refused', () => {
  let h: EnclaveHarness;
  let n = 0;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-r19-facts-'));
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
  });

  const newProject = (policies: PoliciesInput, types: string[] = ALL_TYPES): Promise<ProjectResult> =>
    h.client.call('projects.create', { settings: { auth: { type: 'token' }, allowedRequestTypes: types, policies } as never });
  const newKey = (project: ProjectResult) => h.create(`r19-facts-${++n}`, { project: project.record });
  const sign = (key: CreateResult, project: SignedRecord, request: unknown) =>
    h.client.call('keys.sign', { keyId: key.keyId, blob: key.blob, record: key.record, project, request: request as never });
  const refused = async (p: Promise<unknown>): Promise<Refusal> => {
    const err = await rejection(p);
    return { code: err.code, details: err.details as Refusal['details'] };
  };

  describe('F2: a 32-byte raw message (a userOpHash) is blind signing', () => {
    it('a rule allowing messages by type no longer signs a hash: the user operation it hashes stays refused', async () => {
      const p = await newProject(APP_USER_OPS, ['message', 'userOperation', 'typedData']);
      const key = await newKey(p);
      expect((await refused(sign(key, p.record, userOpRequest(drain)))).code).toBe('POLICY_DENIED');
      // The same user operation as a message (TrueWallet: POST …/wallets/sign {message_type: "hash"}).
      expect(await refused(sign(key, p.record, { type: 'message', message: { raw: drainHash } }))).toEqual({
        code: 'POLICY_DENIED',
        details: {
          rule: null,
          limit: null,
          reason: `rule "app-user-operations": type message is not in the list; rule "sign-in": ${HASH_NOT_LISTED}`,
        },
      });
      // Sign-in messages still sign: text, and raw bytes of another length.
      await sign(key, p.record, { type: 'message', message: 'Sign in to app.example' });
      await sign(key, p.record, { type: 'message', message: { raw: `0x${'ab'.repeat(20)}` } });
    });

    it('a rule listing messageKind "hash" signs it (so the refusal above is the rule, not the request)', async () => {
      const p = await newProject({
        rules: [{ name: 'user-op-hashes', effect: 'allow', when: { type: ['message'], messageKind: ['hash'] } }],
      });
      const key = await newKey(p);
      const sig = await sign(key, p.record, { type: 'message', message: { raw: drainHash } });
      expect(await recoverMessageAddress({ message: { raw: drainHash }, signature: sig.signature })).toBe(key.address);
      expect((await refused(sign(key, p.record, { type: 'message', message: 'hello' }))).details.reason).toBe(
        'rule "user-op-hashes": messageKind text is not in the list',
      );
    });

    it('deny rules are not narrowed: a deny rule on messages denies a hash', async () => {
      const p = await newProject({
        rules: [
          { name: 'no-messages', effect: 'deny', when: { type: ['message'] } },
          { name: 'hashes', effect: 'allow', when: { messageKind: ['hash'] } },
        ],
      });
      const key = await newKey(p);
      expect(await refused(sign(key, p.record, { type: 'message', message: { raw: drainHash } }))).toEqual({
        code: 'POLICY_DENIED',
        details: { rule: 'no-messages', limit: null, reason: 'type is message' },
      });
    });
  });

  describe('F3: a type-4 transaction is no delegation of this key', () => {
    it("the review's known-delegate rule (authorization and transaction) no longer allows a type-4 transfer", async () => {
      const p = await newProject({
        rules: [
          { name: 'known-delegate', effect: 'allow', when: { type: ['authorization', 'transaction'], chainId: [1], delegate: [DELEGATE] } },
        ],
      });
      const key = await newKey(p);
      const tx = { type: 'transaction', transaction: { ...eip1559({ type: 'eip7702' }), authorizationList: [BOGUS_TUPLE] } };
      expect(await refused(sign(key, p.record, tx))).toEqual({
        code: 'POLICY_DENIED',
        details: {
          rule: null,
          limit: null,
          reason: 'rule "known-delegate": delegate does not apply (only an authorization request names a delegate)',
        },
      });
      // This key's own delegation to the listed delegate still signs.
      await sign(key, p.record, { type: 'authorization', authorization: { chainId: 1, address: DELEGATE, nonce: 0 } });
    });

    it("the docs' eip7702-delegate example allows the authorization, not a type-4 transaction", async () => {
      const p = await newProject(docsExample('eip7702-delegate'));
      const key = await newKey(p);
      await sign(key, p.record, { type: 'authorization', authorization: { chainId: 1, address: DELEGATE, nonce: 0 } });
      const tx = { type: 'transaction', transaction: { ...eip1559({ type: 'eip7702' }), authorizationList: [BOGUS_TUPLE] } };
      expect((await refused(sign(key, p.record, tx))).details.reason).toBe('rule "known-delegate": type transaction is not in the list');
    });
  });

  describe('F4: gas is cost', () => {
    // preVerificationGas is paid in full to the bundler (the caller, bundling it himself): 10^13 gas at 1 gwei.
    const prefunding = userOpRequest(usdcCall, { preVerificationGas: '10000000000000' });
    const fee = (10n ** 13n + 200_000n) * GWEI;

    it('a maxFee in the rule refuses a user operation that prefunds 10,000 ether of gas; a normal one signs', async () => {
      expect(fee > 10_000n * ETH).toBe(true);
      const p = await newProject({
        rules: [
          {
            name: 'app-user-operations',
            effect: 'allow',
            when: {
              type: ['userOperation'],
              chainId: [8453],
              maxValue: '0',
              maxGasPrice: '1000000000',
              maxFee: (10n ** 16n).toString(),
              userOperation: { entryPoint: [ENTRY_POINT_07], targets: [USDC] },
            },
          },
        ],
      });
      const key = await newKey(p);
      const reason = `rule "app-user-operations": fee ${fee} is above the maximum ${10n ** 16n}`;
      const decision = await h.client.call('projects.evaluatePolicy', {
        project: p.record,
        request: prefunding as never,
        record: key.record,
      });
      expect([decision.allowed, decision.reason]).toEqual([false, reason]);
      expect(await refused(sign(key, p.record, prefunding))).toEqual({
        code: 'POLICY_DENIED',
        details: { rule: null, limit: null, reason },
      });
      expect((await sign(key, p.record, userOpRequest(usdcCall))).userOperationHash).toMatch(/^0x[0-9a-f]{64}$/);
    });

    // Needs the enclave's limits to count requestCost (value + fee): p19-limits.
    it("the review's policy (maxGasPrice only, a daily value limit of 0): the limit counts the gas and refuses it", async () => {
      const p = await newProject({
        rules: [
          {
            name: 'app-user-operations',
            effect: 'allow',
            when: {
              type: ['userOperation'],
              chainId: [8453],
              maxValue: '0',
              maxGasPrice: '1000000000',
              userOperation: { entryPoint: [ENTRY_POINT_07], targets: [USDC] },
            },
          },
        ],
        limits: [{ name: 'daily-ether', scope: 'key', window: 'day', maxValue: '0' }],
      });
      const key = await newKey(p);
      const err = await refused(sign(key, p.record, prefunding));
      expect([err.code, err.details.rule, err.details.limit]).toEqual(['POLICY_DENIED', 'app-user-operations', 'daily-ether']);
      expect(err.details.reason).toContain(String(fee));
    });
  });

  describe('F5: a digest has no known value', () => {
    it('a maxValue limit that counts digests refuses them (and typed data, and hash messages); text messages sign', async () => {
      const p = await newProject({ limits: [{ name: 'daily-ether', scope: 'key', window: 'day', maxValue: ETH.toString() }] });
      const key = await newKey(p);
      expect((await refused(sign(key, p.record, { type: 'transaction', transaction: eip1559() }))).details.limit).toBe('daily-ether');
      const unsigned = serializeTransaction({
        type: 'eip1559',
        chainId: 1,
        nonce: 0,
        to: ATTACKER,
        value: 100n * ETH,
        gas: 21000n,
        maxFeePerGas: 100n,
        maxPriorityFeePerGas: 1n,
      });
      const typedData = {
        domain: { name: 'Safe', chainId: 1, verifyingContract: DAI },
        types: { SafeTx: [{ name: 'to', type: 'address' }] },
        primaryType: 'SafeTx',
        message: { to: ATTACKER },
      };
      for (const request of [
        { type: 'digest', digest: keccak256(unsigned) },
        { type: 'message', message: { raw: keccak256(unsigned) } },
        { type: 'typedData', typedData },
      ]) {
        const err = await refused(sign(key, p.record, request));
        expect([request.type, err.code, err.details.rule, err.details.limit]).toEqual([request.type, 'POLICY_DENIED', null, 'daily-ether']);
        expect(err.details.reason).toMatch(/^value unknown/);
      }
      await sign(key, p.record, { type: 'message', message: 'hello' });
    });

    it("the docs' daily-value-limit example refuses the digest by rule and the hash message for want of a rule", async () => {
      const p = await newProject(docsExample('daily-value-limit'));
      const key = await newKey(p);
      const hash = keccak256(serializeTransaction({ type: 'eip1559', chainId: 1, to: ATTACKER, value: 100n * ETH, maxFeePerGas: 1n }));
      expect((await refused(sign(key, p.record, { type: 'digest', digest: hash }))).details).toEqual({
        rule: 'no-blind-signing',
        limit: null,
        reason: 'type is digest',
      });
      expect((await refused(sign(key, p.record, { type: 'message', message: { raw: hash } }))).details.reason).toBe(
        `rule "everything-else": ${HASH_NOT_LISTED}`,
      );
      // Transactions are counted (100 ether is over the day's 1), text messages sign.
      expect((await refused(sign(key, p.record, { type: 'transaction', transaction: eip1559() }))).details.limit).toBe('daily-ether');
      await sign(key, p.record, { type: 'message', message: 'hello' });
    });
  });
});
