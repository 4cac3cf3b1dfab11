/**
 * The examples of docs/POLICIES.md are valid policies and do what the page says they do: each is read from the
 * page (the JSON block after its `<!-- example: name -->` marker), parsed by the policy schema, and evaluated on
 * the requests the text says it allows and denies, with the texts it quotes.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { policyDenied } from '../src/policy/decision';
import { requestCost, requestFacts } from '../src/policy/facts';
import { compilePolicy, conditionFailure, evaluateRules, HASH_NOT_LISTED } from '../src/policy/evaluate';
import { PoliciesSchema } from '../src/policy/schema';
import type { SignRequest } from '../src/signing/schema';
import {
  ALICE,
  approveData,
  authorizationRequest,
  batchCallsData,
  BOB,
  DAI,
  DELEGATE,
  digestRequest,
  ENTRY_POINT_06,
  executeData,
  MALLORY,
  messageRequest,
  PERMIT_DOMAIN,
  rawMessageRequest,
  signedAuthorization,
  transactionRequest,
  transferData,
  typedDataRequest,
  USDC,
  userOperationRequest,
} from './policy-requests';

const page = readFileSync(path.join(__dirname, '../../docs/POLICIES.md'), 'utf8');
const examples = new Map(
  [...page.matchAll(/<!-- example: ([a-z0-9-]+) -->\n```json\n([\s\S]*?)\n```/g)].map((m) => [m[1] as string, m[2] as string]),
);
const policy = (name: string) => {
  const json = examples.get(name);
  if (json === undefined) throw new Error(`docs/POLICIES.md has no example ${name}`);
  return compilePolicy(PoliciesSchema.parse(JSON.parse(json)));
};
const decide = (name: string, req: SignRequest) => evaluateRules(policy(name), requestFacts(req));
/** The refusal's message, as a caller reads it. */
const refusal = (name: string, req: SignRequest) => {
  const d = decide(name, req);
  expect(d.allowed).toBe(false);
  return policyDenied({ ...d, limit: null, limits: [] }).message;
};
const USDC_TX = (data: `0x${string}`, over: Record<string, unknown> = {}) => transactionRequest('eip1559', { to: USDC, data, ...over });

describe('docs/POLICIES.md examples', () => {
  it('has the examples this test checks, each a valid policy', () => {
    expect([...examples.keys()]).toEqual([
      'no-blind-signing',
      'chain-allow-list',
      'usdc-payouts',
      'usdc-permit',
      'app-user-operations',
      'eip7702-delegate',
      'gas-price-cap',
      'daily-value-limit',
    ]);
    for (const json of examples.values()) expect(() => PoliciesSchema.parse(JSON.parse(json))).not.toThrow();
  });

  it('no-blind-signing: denies digests, allows the rest', () => {
    expect(refusal('no-blind-signing', digestRequest())).toBe(`denied by the project's policy (rule "no-blind-signing"): type is digest`);
    expect(decide('no-blind-signing', messageRequest()).allowed).toBe(true);
    expect(decide('no-blind-signing', rawMessageRequest(20)).allowed).toBe(true);
    expect(refusal('no-blind-signing', rawMessageRequest(32))).toBe(
      `denied by the project's policy (no rule allows it): rule "everything-else": ${HASH_NOT_LISTED}`,
    );
  });

  it('chain-allow-list: chains 1 and 8453 only; nothing without a chain', () => {
    expect(decide('chain-allow-list', transactionRequest('legacy')).allowed).toBe(true);
    expect(refusal('chain-allow-list', transactionRequest('eip1559', { chainId: 10 }))).toBe(
      `denied by the project's policy (no rule allows it): rule "mainnet-and-base": chainId 10 is not in the list`,
    );
    expect(decide('chain-allow-list', authorizationRequest(DELEGATE, 0)).reason).toBe(
      'rule "mainnet-and-base": chainId 0 is not in the list',
    );
    expect(decide('chain-allow-list', digestRequest()).allowed).toBe(false);
    expect(decide('chain-allow-list', messageRequest()).allowed).toBe(false);
    expect(decide('chain-allow-list', typedDataRequest({})).allowed).toBe(false);
  });

  it('usdc-payouts: transfers to the listed recipients, up to 1,000 USDC, without ether', () => {
    expect(decide('usdc-payouts', USDC_TX(transferData(ALICE, 1_000_000_000n))).allowed).toBe(true);
    expect(decide('usdc-payouts', USDC_TX(transferData(BOB, 1n))).allowed).toBe(true);
    expect(refusal('usdc-payouts', USDC_TX(transferData(ALICE, 5_000_000_000n)))).toBe(
      `denied by the project's policy (no rule allows it): rule "usdc-payouts": erc20.amount 5000000000 is above the maximum 1000000000`,
    );
    expect(decide('usdc-payouts', USDC_TX(approveData(ALICE, 1n))).reason).toBe(
      'rule "usdc-payouts": erc20.function approve is not in the list',
    );
    expect(decide('usdc-payouts', USDC_TX(transferData(MALLORY, 1n))).allowed).toBe(false);
    expect(decide('usdc-payouts', USDC_TX(transferData(ALICE, 1n), { value: '1' })).allowed).toBe(false);
    expect(decide('usdc-payouts', transactionRequest('eip1559', { to: DAI, data: transferData(ALICE, 1n) })).allowed).toBe(false);
  });

  it('usdc-permit: Permit typed data of USDC on mainnet only', () => {
    expect(decide('usdc-permit', typedDataRequest(PERMIT_DOMAIN)).allowed).toBe(true);
    expect(decide('usdc-permit', typedDataRequest({ ...PERMIT_DOMAIN, verifyingContract: DAI })).allowed).toBe(false);
    expect(decide('usdc-permit', typedDataRequest(PERMIT_DOMAIN, 'Mail')).allowed).toBe(false);
    expect(decide('usdc-permit', typedDataRequest({ ...PERMIT_DOMAIN, chainId: 5 })).allowed).toBe(false);
  });

  it('app-user-operations: v0.7, on Base, only the listed targets, no ether', () => {
    const op = (callData: `0x${string}`, version: '0.6' | '0.7' = '0.7') => userOperationRequest(version, callData, {});
    const onBase = (req: SignRequest) => ({ ...req, chainId: 8453 }) as SignRequest;
    expect(
      decide(
        'app-user-operations',
        onBase(
          op(
            batchCallsData([
              { target: USDC, value: 0n },
              { target: DAI, value: 0n },
            ]),
          ),
        ),
      ).allowed,
    ).toBe(true);
    expect(
      decide(
        'app-user-operations',
        onBase(
          op(
            batchCallsData([
              { target: USDC, value: 0n },
              { target: MALLORY, value: 0n },
            ]),
          ),
        ),
      ).reason,
    ).toBe(`rule "app-user-operations": userOperation.targets ${MALLORY.toLowerCase()} is not in the list`);
    expect(
      decide(
        'app-user-operations',
        onBase(userOperationRequest('0.7', executeData(USDC, 0n), { preVerificationGas: '10000000000000', maxFeePerGas: '1000000000' })),
      ).reason,
    ).toBe('rule "app-user-operations": fee 10000000200000000000000 is above the maximum 10000000000000000');
    expect(decide('app-user-operations', onBase(op(transferData(ALICE, 1n)))).reason).toBe(
      'rule "app-user-operations": value is unknown (the user operation\'s calls are not decoded)',
    );
    expect(decide('app-user-operations', onBase(op(executeData(USDC, 1n)))).allowed).toBe(false);
    expect(decide('app-user-operations', onBase(op(executeData(USDC, 0n), '0.6'))).reason).toContain(
      `userOperation.entryPoint ${ENTRY_POINT_06.toLowerCase()} is not in the list`,
    );
    expect(decide('app-user-operations', op(executeData(USDC, 0n))).allowed).toBe(false); // chain 1
  });

  it("eip7702-delegate: this key's delegation to the audited delegate on chain 1; type-4 transactions are transactions", () => {
    expect(decide('eip7702-delegate', authorizationRequest(DELEGATE, 1)).allowed).toBe(true);
    expect(decide('eip7702-delegate', authorizationRequest(DELEGATE, 0)).reason).toBe(
      'rule "known-delegate": chainId 0 is not in the list',
    );
    expect(decide('eip7702-delegate', authorizationRequest(MALLORY, 1)).reason).toBe(
      `rule "known-delegate": delegate ${MALLORY.toLowerCase()} is not in the list`,
    );
    // A type-4 transaction naming the delegate is not allowed by it: its list is others' signatures.
    for (const authorizationList of [[signedAuthorization(DELEGATE)], [signedAuthorization(DELEGATE), signedAuthorization(MALLORY)]])
      expect(decide('eip7702-delegate', transactionRequest('eip7702', { authorizationList })).reason).toBe(
        'rule "known-delegate": type transaction is not in the list',
      );
    // Nor by the same rule widened to transactions: a type-4 transaction has no delegate.
    const widened = compilePolicy(
      PoliciesSchema.parse({
        rules: [{ name: 'w', effect: 'allow', when: { type: ['authorization', 'transaction'], delegate: [DELEGATE] } }],
      }),
    );
    expect(evaluateRules(widened, requestFacts(transactionRequest('eip7702'))).reason).toBe(
      'rule "w": delegate does not apply (only an authorization request names a delegate)',
    );
  });

  it('gas-price-cap: transactions up to 200 gwei', () => {
    expect(decide('gas-price-cap', transactionRequest('legacy', { gasPrice: '200000000000' })).allowed).toBe(true);
    expect(decide('gas-price-cap', transactionRequest('legacy', { gasPrice: '300000000000' })).reason).toBe(
      'rule "capped-transactions": gasPrice 300000000000 is above the maximum 200000000000',
    );
  });

  it('daily-value-limit: digests and hash messages refused by rules; the limits count what moves ether, gas included', () => {
    const p = policy('daily-value-limit');
    expect(refusal('daily-value-limit', digestRequest())).toBe(`denied by the project's policy (rule "no-blind-signing"): type is digest`);
    expect(decide('daily-value-limit', rawMessageRequest(32)).reason).toBe(`rule "everything-else": ${HASH_NOT_LISTED}`);
    for (const req of [messageRequest(), typedDataRequest(PERMIT_DOMAIN), transactionRequest('eip1559'), authorizationRequest()])
      expect(decide('daily-value-limit', req).allowed).toBe(true);
    expect(p.limits).toMatchObject([
      { name: 'daily-ether', scope: 'key', window: 'day', maxValue: 10n ** 18n },
      { name: 'hourly-transactions', scope: 'project', window: 'hour', maxCount: 100 },
    ]);
    const counts = (req: SignRequest) => conditionFailure(p.limits[0]!.when!, requestFacts(req)) === null;
    // What daily-ether counts has a known cost (value + gas), unless a user operation's calls are not decoded.
    const tx = transactionRequest('eip1559', { value: '1000' });
    expect([counts(tx), requestCost(requestFacts(tx))]).toEqual([true, 1000n + 21_000n * 30_000_000_000n]);
    const opUndecoded = userOperationRequest('0.7', transferData(ALICE, 1n));
    expect([counts(opUndecoded), requestCost(requestFacts(opUndecoded))]).toEqual([true, undefined]);
    for (const req of [digestRequest(), rawMessageRequest(32), typedDataRequest(PERMIT_DOMAIN)]) {
      expect([counts(req), requestCost(requestFacts(req))]).toEqual([false, undefined]);
    }
  });
});
