/**
 * Policy rules on a request's facts (shared/src/policy/evaluate.ts, docs/POLICIES.md "Semantics"): every
 * condition field held and failed on every request type it can meet, with the text a caller reads; deny wins,
 * and once a policy has rules, what no rule allows is denied.
 */
import type { Hex } from 'viem';
import { policyDenied } from '../src/policy/decision';
import { requestFacts } from '../src/policy/facts';
import { compilePolicy, conditionFailure, ECHO_MAX_CHARS, evaluateRules, HASH_NOT_LISTED, NO_RULE_REASONS } from '../src/policy/evaluate';
import { PoliciesSchema, type PoliciesInput } from '../src/policy/schema';
import type { SignRequest } from '../src/signing/schema';
import {
  ALICE,
  approveData,
  authorizationRequest,
  batchCallsData,
  batchV06Data,
  batchV07Data,
  BOB,
  DAI,
  DELEGATE,
  digestRequest,
  ENTRY_POINT_06,
  ENTRY_POINT_07,
  ENTRY_POINT_08,
  executeData,
  MALLORY,
  messageRequest,
  PERMIT_DOMAIN,
  rawMessageRequest,
  SENDER,
  signedAuthorization,
  transactionRequest,
  transferData,
  typedDataRequest,
  USDC,
  userOperationRequest,
} from './policy-requests';

const lc = (a: string) => a.toLowerCase();
type ConditionInput = NonNullable<NonNullable<PoliciesInput['rules']>[number]['when']>;
const compile = (p: PoliciesInput) => compilePolicy(PoliciesSchema.parse(p));
/** One allow rule with condition `when`. */
const allowOnly = (when: ConditionInput) => compile({ rules: [{ name: 'r', effect: 'allow', when }] });

// Requests, one of each kind.
const digest = digestRequest();
const message = messageRequest();
const raw = rawMessageRequest(31);
const hash = rawMessageRequest(32);
const permit = typedDataRequest(PERMIT_DOMAIN);
const mail = typedDataRequest({}, 'Mail');
const legacy = transactionRequest('legacy', { value: '1000' });
const eip2930 = transactionRequest('eip2930');
const eip1559 = transactionRequest('eip1559', { value: '1001' });
const creation = transactionRequest('eip1559', { to: null, data: '0x6000' });
const usdcTransfer = (amount: bigint, to = ALICE) => transactionRequest('eip1559', { to: USDC, data: transferData(to, amount) });
const eip7702 = transactionRequest('eip7702', { authorizationList: [signedAuthorization(DELEGATE), signedAuthorization(MALLORY)] });
/** One blob at a blob gas price of 1 gwei (policy-requests.ts). */
const eip4844 = transactionRequest('eip4844', { value: '1002' });
const blobFee = 131_072n * 1_000_000_000n;
const auth = authorizationRequest(DELEGATE, 1);
const authAllChains = authorizationRequest(DELEGATE, 0);
const op06 = (callData: Hex) => userOperationRequest('0.6', callData);
const op07 = (callData: Hex) => userOperationRequest('0.7', callData);
const op06Execute = op06(executeData(USDC, 7n, transferData(ALICE, 1n)));
const op06Batch = op06(batchV06Data([USDC, DAI]));
const op07Execute = op07(executeData(BOB, 7n));
const op07Batch = op07(batchV07Data([USDC, BOB], [0n, 5n]));
const op07Calls = op07(
  batchCallsData([
    { target: USDC, value: 5n },
    { target: MALLORY, value: 7n },
  ]),
);
const op08 = (callData: Hex) => userOperationRequest('0.8', callData);
const op08Execute = op08(executeData(BOB, 7n));
const op08Calls = op08(
  batchCallsData([
    { target: USDC, value: 5n },
    { target: MALLORY, value: 7n },
  ]),
);
const opOther = op07(transferData(ALICE, 1n));
const opEmpty = op07(batchCallsData([]));
/** 30 gwei (the requests' gas price) × gas. */
const gwei30 = (gas: bigint) => (gas * 30_000_000_000n).toString();

/** [name, condition, request, the failed condition's text, or null when it holds] */
type Case = [string, ConditionInput, SignRequest, string | null];
const CASES: Record<string, Case[]> = {
  type: [
    ['a listed type', { type: ['transaction', 'typedData'] }, legacy, null],
    ['a listed user operation', { type: ['userOperation'] }, op06Execute, null],
    ['another type', { type: ['transaction'] }, digest, 'type digest is not in the list'],
    ['another type (message)', { type: ['typedData'] }, message, 'type message is not in the list'],
  ],
  chainId: [
    ["a transaction's chain", { chainId: [1] }, eip1559, null],
    ['another chain', { chainId: [5, 10] }, eip1559, 'chainId 1 is not in the list'],
    ['a digest', { chainId: [1] }, digest, 'chainId does not apply (a digest request has no chain)'],
    ['a message', { chainId: [1] }, message, 'chainId does not apply (a message request has no chain)'],
    ["a typed data domain's chain", { chainId: [1] }, permit, null],
    ['a typed data domain without chain', { chainId: [1] }, mail, "chainId does not apply (the typed data's domain has no chainId)"],
    ["an authorization's chain", { chainId: [1] }, auth, null],
    ['an authorization for every chain', { chainId: [1] }, authAllChains, 'chainId 0 is not in the list'],
    ['an authorization for every chain, allowed', { chainId: [0] }, authAllChains, null],
    ["a user operation's chain", { chainId: [1] }, op07Batch, null],
    ['a user operation on another chain', { chainId: [10] }, op06Batch, 'chainId 1 is not in the list'],
  ],
  to: [
    ['a listed recipient', { to: [BOB, ALICE] }, legacy, null],
    ['another recipient', { to: [ALICE] }, legacy, `to ${lc(BOB)} is not in the list`],
    ["a blob transaction's recipient", { to: [BOB] }, eip4844, null],
    ['a blob transaction to another recipient', { to: [ALICE] }, eip4844, `to ${lc(BOB)} is not in the list`],
    ['a contract creation', { to: [BOB] }, creation, 'to does not apply (a contract creation has no recipient)'],
    ['a user operation', { to: [BOB] }, op07Execute, 'to does not apply (a userOperation request has no recipient)'],
    ['typed data', { to: [USDC] }, permit, 'to does not apply (a typedData request has no recipient)'],
  ],
  maxValue: [
    ['value at the maximum', { maxValue: '1000' }, legacy, null],
    ['value above', { maxValue: '1000' }, eip1559, 'value 1001 is above the maximum 1000'],
    ["a blob transaction's value above", { maxValue: '1001' }, eip4844, 'value 1002 is above the maximum 1001'],
    ['no value field (0)', { maxValue: '0' }, eip2930, null],
    ['a digest: unknown', { maxValue: '0' }, digest, 'value is unknown (a digest is signed blind: it may be any transaction)'],
    ['a text message (0)', { maxValue: '0' }, message, null],
    ['a raw message (0)', { maxValue: '0' }, raw, null],
    [
      'a hash message: unknown',
      { maxValue: '0' },
      hash,
      'value is unknown (a 32-byte raw message is a hash, signed blind: it may be a user operation)',
    ],
    ["typed data: unknown (a Safe transaction's, say)", { maxValue: '0' }, permit, "value is unknown (typed data's message is not read)"],
    ['an authorization (0)', { maxValue: '0' }, auth, null],
    ["a user operation's execute value", { maxValue: '7' }, op07Execute, null],
    ["a user operation's batch values, summed", { maxValue: '11' }, op07Calls, 'value 12 is above the maximum 11'],
    ["a 0.7 batch's values, summed", { maxValue: '4' }, op07Batch, 'value 5 is above the maximum 4'],
    ["a 0.8 batch's values, summed", { maxValue: '11' }, op08Calls, 'value 12 is above the maximum 11'],
    [
      'a user operation whose calls are not decoded',
      { maxValue: '0' },
      opOther,
      "value is unknown (the user operation's calls are not decoded)",
    ],
  ],
  messageKind: [
    ['a text message', { messageKind: ['text'] }, message, null],
    ['a raw message of 31 bytes', { messageKind: ['raw'] }, raw, null],
    ['a raw message of 33 bytes', { messageKind: ['raw'] }, rawMessageRequest(33), null],
    ['an empty raw message', { messageKind: ['raw'] }, rawMessageRequest(0), null],
    ['a hash (32 raw bytes), listed', { messageKind: ['text', 'hash'] }, hash, null],
    ['a hash, not listed', { messageKind: ['text', 'raw'] }, hash, 'messageKind hash is not in the list'],
    ['a text message, not listed', { messageKind: ['raw'] }, message, 'messageKind text is not in the list'],
    ['a digest', { messageKind: ['hash'] }, digest, 'messageKind does not apply (a digest request is not a message)'],
    ['typed data', { messageKind: ['text'] }, permit, 'messageKind does not apply (a typedData request is not a message)'],
    ['a transaction', { messageKind: ['text'] }, legacy, 'messageKind does not apply (a transaction request is not a message)'],
  ],
  maxFee: [
    ['a legacy transaction: gas × gasPrice, at the maximum', { maxFee: gwei30(21_000n) }, legacy, null],
    ['an eip1559 transaction: gas × maxFeePerGas, above', { maxFee: '1' }, eip1559, `fee ${gwei30(21_000n)} is above the maximum 1`],
    ['a transaction without gas (it pays nothing)', { maxFee: '0' }, transactionRequest('eip1559', { gas: undefined }), null],
    [
      'a large gas limit',
      { maxFee: gwei30(21_000n) },
      transactionRequest('eip2930', { gas: 21_001 }),
      `fee ${gwei30(21_001n)} is above the maximum ${gwei30(21_000n)}`,
    ],
    ['an EIP-7702 transaction', { maxFee: gwei30(20_999n) }, eip7702, `fee ${gwei30(21_000n)} is above the maximum ${gwei30(20_999n)}`],
    [
      'a blob transaction: gas × maxFeePerGas + its blob gas × maxFeePerBlobGas, at the maximum',
      { maxFee: String(BigInt(gwei30(21_000n)) + blobFee) },
      eip4844,
      null,
    ],
    [
      'a blob transaction: its blob fee counts',
      { maxFee: gwei30(21_000n) },
      eip4844,
      `fee ${BigInt(gwei30(21_000n)) + blobFee} is above the maximum ${gwei30(21_000n)}`,
    ],
    [
      "a 0.8 user operation: the paymaster's gas limits count",
      { maxFee: gwei30(250_000n) },
      userOperationRequest('0.8', executeData(BOB, 0n), { paymaster: DAI, paymasterVerificationGasLimit: 7, paymasterPostOpGasLimit: 8 }),
      `fee ${gwei30(250_015n)} is above the maximum ${gwei30(250_000n)}`,
    ],
    ['a 0.6 user operation: its three gas limits × maxFeePerGas', { maxFee: gwei30(250_000n) }, op06Batch, null],
    [
      'a 0.6 user operation with a paymaster: verificationGasLimit counts three times',
      { maxFee: gwei30(250_000n) },
      userOperationRequest('0.6', batchV06Data([USDC]), { paymasterAndData: `0x${'12'.repeat(20)}` }),
      `fee ${gwei30(450_000n)} is above the maximum ${gwei30(250_000n)}`,
    ],
    [
      'a 0.7 user operation: preVerificationGas counts (the bundler is paid it in full)',
      { maxFee: gwei30(250_000n) },
      userOperationRequest('0.7', batchV06Data([USDC]), { preVerificationGas: '10000000000000' }),
      `fee ${gwei30(10_000_000_200_000n)} is above the maximum ${gwei30(250_000n)}`,
    ],
    [
      "a 0.7 user operation: the paymaster's gas limits count",
      { maxFee: gwei30(250_000n) },
      userOperationRequest('0.7', batchV06Data([USDC]), {
        paymaster: DAI,
        paymasterVerificationGasLimit: 7,
        paymasterPostOpGasLimit: 8,
      }),
      `fee ${gwei30(250_015n)} is above the maximum ${gwei30(250_000n)}`,
    ],
    ['a digest', { maxFee: '1' }, digest, 'fee does not apply (a digest request pays no gas)'],
    ['a message', { maxFee: '1' }, message, 'fee does not apply (a message request pays no gas)'],
    ['typed data', { maxFee: '1' }, permit, 'fee does not apply (a typedData request pays no gas)'],
    ['an authorization', { maxFee: '1' }, auth, 'fee does not apply (a authorization request pays no gas)'],
  ],
  selector: [
    ['a listed selector', { selector: ['0xa9059cbb'] }, usdcTransfer(1n), null],
    ['a listed selector, upper-case in the policy', { selector: ['0xA9059CBB'] }, usdcTransfer(1n), null],
    ['another selector', { selector: ['0x095ea7b3'] }, usdcTransfer(1n), 'selector 0xa9059cbb is not in the list'],
    ['no calldata', { selector: ['0xa9059cbb'] }, legacy, 'selector does not apply (the transaction has no calldata of 4 bytes or more)'],
    ['typed data', { selector: ['0xa9059cbb'] }, permit, 'selector does not apply (a typedData request has no calldata)'],
    ['a user operation', { selector: ['0xb61d27f6'] }, op06Execute, 'selector does not apply (a userOperation request has no calldata)'],
  ],
  erc20: [
    ['any ERC-20 call', { erc20: {} }, usdcTransfer(1n), null],
    ['a listed function', { erc20: { function: ['transfer'] } }, usdcTransfer(1n), null],
    [
      'another function',
      { erc20: { function: ['transfer'] } },
      transactionRequest('eip1559', { to: USDC, data: approveData(MALLORY, 1n) }),
      'erc20.function approve is not in the list',
    ],
    ['a listed recipient', { erc20: { recipient: [ALICE] } }, usdcTransfer(1n), null],
    [
      'another recipient',
      { erc20: { recipient: [ALICE] } },
      usdcTransfer(1n, MALLORY),
      `erc20.recipient ${lc(MALLORY)} is not in the list`,
    ],
    ['an amount at the maximum', { erc20: { maxAmount: '1000000' } }, usdcTransfer(1_000_000n), null],
    ['an amount above', { erc20: { maxAmount: '1000000' } }, usdcTransfer(5_000_000n), 'erc20.amount 5000000 is above the maximum 1000000'],
    ['no calldata', { erc20: {} }, legacy, 'erc20 does not apply (the calldata is not an ERC-20 transfer or approve)'],
    ['a message', { erc20: {} }, message, 'erc20 does not apply (a message request is not an ERC-20 call)'],
    // Calldata inside a user operation is the account's call, not an ERC-20 call of the signer's.
    [
      'a user operation calling transfer',
      { erc20: {} },
      op06Execute,
      'erc20 does not apply (a userOperation request is not an ERC-20 call)',
    ],
  ],
  typedData: [
    ['any typed data', { typedData: {} }, mail, null],
    ['a listed name', { typedData: { name: ['USD Coin', 'Dai Stablecoin'] } }, permit, null],
    ['another name', { typedData: { name: ['Dai Stablecoin'] } }, permit, 'typedData.name "USD Coin" is not in the list'],
    ['a domain without name', { typedData: { name: ['USD Coin'] } }, mail, 'typedData.name does not apply (the domain has no name)'],
    [
      'a long name, echoed in part',
      { typedData: { name: ['USD Coin'] } },
      typedDataRequest({ name: `${'😀'.repeat(40)}${'x'.repeat(100)}` }),
      `typedData.name "${'😀'.repeat(40)}${'x'.repeat(ECHO_MAX_CHARS - 40)}…" is not in the list`,
    ],
    [
      'a name of 64 characters outside the BMP, then more, echoed in part',
      { typedData: { name: ['USD Coin'] } },
      typedDataRequest({ name: `${'😀'.repeat(ECHO_MAX_CHARS)}xyz` }),
      `typedData.name "${'😀'.repeat(ECHO_MAX_CHARS)}…" is not in the list`,
    ],
    [
      'a name of exactly 64 characters, echoed whole',
      { typedData: { name: ['USD Coin'] } },
      typedDataRequest({ name: '😀'.repeat(ECHO_MAX_CHARS) }),
      `typedData.name "${'😀'.repeat(ECHO_MAX_CHARS)}" is not in the list`,
    ],
    [
      'a name with quotes and a control character, escaped',
      { typedData: { name: ['USD Coin'] } },
      typedDataRequest({ name: 'a"b\nc' }),
      'typedData.name "a\\"b\\nc" is not in the list',
    ],
    [
      'a long primary type, echoed in part',
      { typedData: { primaryType: ['Permit'] } },
      typedDataRequest({}, 'P'.repeat(200)),
      `typedData.primaryType "${'P'.repeat(ECHO_MAX_CHARS)}…" is not in the list`,
    ],
    ['a listed verifying contract', { typedData: { verifyingContract: [USDC] } }, permit, null],
    [
      'another verifying contract',
      { typedData: { verifyingContract: [DAI] } },
      permit,
      `typedData.verifyingContract ${lc(USDC)} is not in the list`,
    ],
    [
      'a domain without verifying contract',
      { typedData: { verifyingContract: [USDC] } },
      mail,
      'typedData.verifyingContract does not apply (the domain has no verifyingContract)',
    ],
    ['a listed primary type', { typedData: { primaryType: ['Permit'] } }, permit, null],
    ['another primary type', { typedData: { primaryType: ['Permit'] } }, mail, 'typedData.primaryType "Mail" is not in the list'],
    ['a transaction', { typedData: {} }, legacy, 'typedData does not apply (a transaction request is not EIP-712 typed data)'],
    ['a digest', { typedData: {} }, digest, 'typedData does not apply (a digest request is not EIP-712 typed data)'],
  ],
  userOperation: [
    ['any user operation', { userOperation: {} }, opOther, null],
    ['a listed sender', { userOperation: { sender: [SENDER] } }, op06Batch, null],
    ['another sender', { userOperation: { sender: [ALICE] } }, op06Batch, `userOperation.sender ${lc(SENDER)} is not in the list`],
    ['a listed entry point (0.6)', { userOperation: { entryPoint: [ENTRY_POINT_06] } }, op06Execute, null],
    ['a listed entry point (0.7)', { userOperation: { entryPoint: [ENTRY_POINT_07] } }, op07Execute, null],
    ['a listed entry point (0.8)', { userOperation: { entryPoint: [ENTRY_POINT_08] } }, op08Execute, null],
    [
      'a 0.8 operation, only 0.7 listed',
      { userOperation: { entryPoint: [ENTRY_POINT_07] } },
      op08Execute,
      `userOperation.entryPoint ${lc(ENTRY_POINT_08)} is not in the list`,
    ],
    ['a listed sender (0.8)', { userOperation: { sender: [SENDER] } }, op08Execute, null],
    ['0.8 execute to a listed target', { userOperation: { targets: [BOB] } }, op08Execute, null],
    [
      '0.8 executeBatch(Call[]), one target not listed',
      { userOperation: { targets: [USDC] } },
      op08Calls,
      `userOperation.targets ${lc(MALLORY)} is not in the list`,
    ],
    [
      'another entry point',
      { userOperation: { entryPoint: [ENTRY_POINT_07] } },
      op06Execute,
      `userOperation.entryPoint ${lc(ENTRY_POINT_06)} is not in the list`,
    ],
    ['0.6 execute to a listed target', { userOperation: { targets: [USDC] } }, op06Execute, null],
    ['0.6 batch, every target listed', { userOperation: { targets: [DAI, USDC] } }, op06Batch, null],
    [
      '0.6 batch, one target not listed',
      { userOperation: { targets: [USDC] } },
      op06Batch,
      `userOperation.targets ${lc(DAI)} is not in the list`,
    ],
    [
      '0.7 execute to another target',
      { userOperation: { targets: [USDC] } },
      op07Execute,
      `userOperation.targets ${lc(BOB)} is not in the list`,
    ],
    ['0.7 batch, every target listed', { userOperation: { targets: [USDC, BOB] } }, op07Batch, null],
    [
      'Coinbase batch, one target not listed',
      { userOperation: { targets: [USDC, BOB] } },
      op07Calls,
      `userOperation.targets ${lc(MALLORY)} is not in the list`,
    ],
    [
      'calls not decoded',
      { userOperation: { targets: [USDC] } },
      opOther,
      'userOperation.targets are unknown (the callData is not an execute or executeBatch call this keystore decodes)',
    ],
    ['an empty batch', { userOperation: { targets: [USDC] } }, opEmpty, 'userOperation.targets: the batch calls no target'],
    ['a transaction', { userOperation: {} }, eip1559, 'userOperation does not apply (a transaction request is not a user operation)'],
  ],
  delegate: [
    ["an authorization's listed delegate", { delegate: [DELEGATE] }, auth, null],
    ["an authorization's other delegate", { delegate: [ALICE] }, auth, `delegate ${lc(DELEGATE)} is not in the list`],
    // A type-4 transaction's authorization list is others' signatures: no delegation of this key.
    [
      'an EIP-7702 transaction, every delegate of its list listed',
      { delegate: [MALLORY, DELEGATE] },
      eip7702,
      'delegate does not apply (only an authorization request names a delegate)',
    ],
    ['another transaction', { delegate: [DELEGATE] }, eip1559, 'delegate does not apply (only an authorization request names a delegate)'],
    ['a user operation', { delegate: [DELEGATE] }, op07Execute, 'delegate does not apply (only an authorization request names a delegate)'],
    ['a message', { delegate: [DELEGATE] }, message, 'delegate does not apply (only an authorization request names a delegate)'],
  ],
  maxGasPrice: [
    ["a legacy transaction's gasPrice at the maximum", { maxGasPrice: '30000000000' }, legacy, null],
    ['a legacy transaction above', { maxGasPrice: '1000' }, legacy, 'gasPrice 30000000000 is above the maximum 1000'],
    ['an eip2930 transaction above', { maxGasPrice: '1000' }, eip2930, 'gasPrice 30000000000 is above the maximum 1000'],
    [
      "an eip1559 transaction's maxFeePerGas",
      { maxGasPrice: '29999999999' },
      eip1559,
      'gasPrice 30000000000 is above the maximum 29999999999',
    ],
    [
      "a blob transaction's maxFeePerGas (not its maxFeePerBlobGas: maxFee bounds that)",
      { maxGasPrice: '30000000000' },
      transactionRequest('eip4844', { maxFeePerBlobGas: '99000000000' }),
      null,
    ],
    ['a blob transaction above', { maxGasPrice: '1' }, eip4844, 'gasPrice 30000000000 is above the maximum 1'],
    ["a user operation's maxFeePerGas", { maxGasPrice: '30000000000' }, op06Batch, null],
    ['a 0.8 user operation above', { maxGasPrice: '1' }, op08Execute, 'gasPrice 30000000000 is above the maximum 1'],
    ['a user operation above', { maxGasPrice: '1' }, op07Batch, 'gasPrice 30000000000 is above the maximum 1'],
    ['a digest', { maxGasPrice: '1' }, digest, 'gasPrice does not apply (a digest request has no gas price)'],
    ['an authorization', { maxGasPrice: '1' }, auth, 'gasPrice does not apply (a authorization request has no gas price)'],
  ],
  'several fields': [
    [
      'all hold',
      { type: ['transaction'], chainId: [1], to: [USDC], erc20: { function: ['transfer'], maxAmount: '10' } },
      usdcTransfer(10n),
      null,
    ],
    [
      'the first that fails, in the schema order',
      { type: ['transaction'], chainId: [5], maxValue: '0' },
      eip1559,
      'chainId 1 is not in the list',
    ],
    ['type first', { chainId: [5], type: ['typedData'] }, digest, 'type digest is not in the list'],
    ['an empty condition', {}, digest, null],
  ],
};

describe.each(Object.entries(CASES))('the condition field %s', (_field, cases) => {
  it.each(cases)('%s', (_name, when, req, failed) => {
    const policy = allowOnly(when);
    const facts = requestFacts(req);
    expect(conditionFailure(policy.rules[0]!.when, facts)).toBe(failed);
    const decision = evaluateRules(policy, facts);
    expect(decision.rules).toEqual([{ name: 'r', effect: 'allow', matched: failed === null, ...(failed === null ? {} : { failed }) }]);
    expect(decision.allowed).toBe(failed === null);
    expect(decision.rule).toBe(failed === null ? 'r' : null);
    if (failed !== null) expect(decision.reason).toBe(`rule "r": ${failed}`);
  });
});

describe('a hash message is blind signing: only an allow rule listing messageKind "hash" allows it', () => {
  const decide = (when: ConditionInput, req: SignRequest, effect: 'allow' | 'deny' = 'allow') =>
    evaluateRules(compile({ rules: [{ name: 'r', effect, when }] }), requestFacts(req));
  const allowedBy = (when: ConditionInput, req: SignRequest) => decide(when, req).allowed;

  it.each<[string, ConditionInput, string]>([
    ['an empty condition', {}, HASH_NOT_LISTED],
    ['messages by type', { type: ['message'] }, HASH_NOT_LISTED],
    ['message and digest types', { type: ['message', 'digest'] }, HASH_NOT_LISTED],
    [
      'a value cap (a hash has no known value)',
      { maxValue: '0' },
      'value is unknown (a 32-byte raw message is a hash, signed blind: it may be a user operation)',
    ],
  ])('an allow rule of %s does not allow a hash, saying why', (_name, when, failed) => {
    const d = decide(when, hash);
    expect(d).toMatchObject({ allowed: false, rule: null, reason: `rule "r": ${failed}` });
    expect(d.rules).toEqual([{ name: 'r', effect: 'allow', matched: false, failed }]);
  });

  it('the failed text of a rule that would otherwise allow a hash', () => {
    expect(HASH_NOT_LISTED).toBe(
      'a 32-byte raw message is a hash (a user operation\'s, say): only a rule listing messageKind "hash" allows it',
    );
    expect(decide({ type: ['message'] }, hash).reason).toBe(`rule "r": ${HASH_NOT_LISTED}`);
  });

  it('a rule listing "hash" allows it; text and other raw messages are allowed by type alone', () => {
    expect(allowedBy({ type: ['message'], messageKind: ['hash'] }, hash)).toBe(true);
    expect(allowedBy({ messageKind: ['text', 'raw', 'hash'] }, hash)).toBe(true);
    for (const req of [message, raw, rawMessageRequest(33), rawMessageRequest(0)]) expect(allowedBy({ type: ['message'] }, req)).toBe(true);
  });

  it('a rule listing hash but failing another field reports that field', () => {
    expect(decide({ messageKind: ['hash'], chainId: [1] }, hash).reason).toBe(
      'rule "r": chainId does not apply (a message request has no chain)',
    );
  });

  it('deny rules and limits are not narrowed: they read the condition as written', () => {
    expect(decide({ type: ['message'] }, hash, 'deny')).toMatchObject({ allowed: false, rule: 'r', reason: 'type is message' });
    const policy = compile({ limits: [{ name: 'messages', scope: 'key', window: 'day', maxCount: 1, when: { type: ['message'] } }] });
    expect(conditionFailure(policy.limits[0]!.when!, requestFacts(hash))).toBeNull();
  });
});

describe('rule order: deny wins, then the first allow, else denied', () => {
  type RuleInput = NonNullable<PoliciesInput['rules']>[number];
  const NO_BLIND: RuleInput = { name: 'no-blind', effect: 'deny', when: { type: ['digest', 'message'] } };
  const ANYTHING: RuleInput = { name: 'anything', effect: 'allow', when: {} };

  it('a deny rule that matches denies, wherever it stands, naming what matched', () => {
    const policy = compile({ rules: [ANYTHING, NO_BLIND] });
    const decision = evaluateRules(policy, requestFacts(digest));
    expect(decision).toEqual({
      allowed: false,
      rule: 'no-blind',
      reason: 'type is digest',
      rules: [
        { name: 'anything', effect: 'allow', matched: true },
        { name: 'no-blind', effect: 'deny', matched: true },
      ],
    });
    expect(evaluateRules(policy, requestFacts(legacy))).toMatchObject({ allowed: true, rule: 'anything' });
  });

  it('the first deny rule that matches decides; its reason names every field that held', () => {
    const policy = compile({
      rules: [
        { name: 'no-7702-everywhere', effect: 'deny', when: { type: ['authorization'], chainId: [0] } },
        { name: 'no-auth', effect: 'deny', when: { type: ['authorization'] } },
      ],
    });
    expect(evaluateRules(policy, requestFacts(authAllChains))).toMatchObject({
      allowed: false,
      rule: 'no-7702-everywhere',
      reason: 'type is authorization and chainId is 0',
    });
    expect(evaluateRules(policy, requestFacts(auth))).toMatchObject({ rule: 'no-auth', reason: 'type is authorization' });
  });

  it('deny reasons describe each field that held', () => {
    const deny = (when: ConditionInput, req: SignRequest) =>
      evaluateRules(compile({ rules: [{ name: 'd', effect: 'deny', when }] }), requestFacts(req)).reason;
    expect(deny({}, digest)).toBe('the rule has no condition (it matches every request)');
    expect(deny({ to: [USDC], maxValue: '5', selector: ['0xa9059cbb'] }, usdcTransfer(1n))).toBe(
      `to is ${lc(USDC)} and value 0 is at most 5 and selector is 0xa9059cbb`,
    );
    expect(deny({ erc20: {} }, usdcTransfer(1n))).toBe('erc20.function is transfer');
    expect(deny({ erc20: { recipient: [ALICE], maxAmount: '9' } }, usdcTransfer(1n))).toBe(
      `erc20.recipient is ${lc(ALICE)} and erc20.amount 1 is at most 9`,
    );
    expect(deny({ typedData: {} }, permit)).toBe('typedData.primaryType is "Permit"');
    expect(deny({ typedData: { name: ['USD Coin'], verifyingContract: [USDC] } }, permit)).toBe(
      `typedData.name is "USD Coin" and typedData.verifyingContract is ${lc(USDC)}`,
    );
    expect(deny({ userOperation: {} }, op06Batch)).toBe(`userOperation.sender is ${lc(SENDER)}`);
    expect(deny({ userOperation: { entryPoint: [ENTRY_POINT_06], targets: [USDC, DAI] } }, op06Batch)).toBe(
      `userOperation.entryPoint is ${lc(ENTRY_POINT_06)} and userOperation.targets are ${lc(USDC)}, ${lc(DAI)}`,
    );
    expect(deny({ delegate: [DELEGATE] }, auth)).toBe(`delegate is ${lc(DELEGATE)}`);
    expect(deny({ type: ['message'], messageKind: ['hash'] }, hash)).toBe('type is message and messageKind is hash');
    expect(deny({ maxFee: gwei30(21_000n) }, legacy)).toBe(`fee ${gwei30(21_000n)} is at most ${gwei30(21_000n)}`);
    expect(deny({ maxGasPrice: '30000000000' }, legacy)).toBe('gasPrice 30000000000 is at most 30000000000');
  });

  it('the first allow rule that matches allows, saying which', () => {
    const policy = compile({
      rules: [
        { name: 'usdc', effect: 'allow', when: { to: [USDC] } },
        { name: 'mainnet', effect: 'allow', when: { chainId: [1] } },
      ],
    });
    expect(evaluateRules(policy, requestFacts(usdcTransfer(1n)))).toMatchObject({
      allowed: true,
      rule: 'usdc',
      reason: `allowed by rule "usdc": to is ${lc(USDC)}`,
    });
    expect(evaluateRules(policy, requestFacts(legacy))).toMatchObject({
      allowed: true,
      rule: 'mainnet',
      reason: 'allowed by rule "mainnet": chainId is 1',
    });
  });

  it(`no rule allows it: denied, quoting the first ${NO_RULE_REASONS} allow rules' failed conditions and counting the rest`, () => {
    const rules = ['a', 'b', 'c', 'd', 'e'].map((name, i) => ({ name, effect: 'allow' as const, when: { chainId: [100 + i] } }));
    const policy = compile({ rules: [NO_BLIND, ...rules] });
    const decision = evaluateRules(policy, requestFacts(legacy));
    expect(decision).toMatchObject({
      allowed: false,
      rule: null,
      reason:
        'rule "a": chainId 1 is not in the list; rule "b": chainId 1 is not in the list; rule "c": chainId 1 is not in the list; and 2 more',
    });
    expect(decision.rules).toHaveLength(6);
    expect(decision.rules[0]).toEqual({ name: 'no-blind', effect: 'deny', matched: false, failed: 'type transaction is not in the list' });
    expect(evaluateRules(compile({ rules: rules.slice(0, 2) }), requestFacts(legacy)).reason).toBe(
      'rule "a": chainId 1 is not in the list; rule "b": chainId 1 is not in the list',
    );
    const denial = policyDenied({ ...decision, limit: null, limits: [] });
    expect([denial.code, denial.message, denial.details]).toEqual([
      'POLICY_DENIED',
      `denied by the project's policy (no rule allows it): ${decision.reason}`,
      { rule: null, limit: null, reason: decision.reason },
    ]);
  });

  it('a policy of deny rules only denies everything else, saying it has no allow rules', () => {
    const decision = evaluateRules(compile({ rules: [NO_BLIND] }), requestFacts(legacy));
    expect(decision).toMatchObject({
      allowed: false,
      rule: null,
      reason: 'the policy has no allow rules (once a policy has rules, only what a rule allows is signed)',
    });
  });

  it('a policy of limits only allows by rules', () => {
    const policy = compile({ limits: [{ name: 'daily', scope: 'key', window: 'day', maxCount: 10 }] });
    expect(evaluateRules(policy, requestFacts(digest))).toEqual({
      allowed: true,
      rule: null,
      reason: 'the policy has no rules',
      rules: [],
    });
  });

  it('a deny rule names its refusal in the error a caller gets', () => {
    const decision = evaluateRules(compile({ rules: [NO_BLIND, ANYTHING] }), requestFacts(message));
    const denial = policyDenied({ ...decision, limit: null, limits: [] });
    expect([denial.message, denial.details]).toEqual([
      `denied by the project's policy (rule "no-blind"): type is message`,
      { rule: 'no-blind', limit: null, reason: 'type is message' },
    ]);
  });
});

describe('compilePolicy', () => {
  it('compiles limits: names, scopes, windows, bigint maxima and their conditions', () => {
    const policy = compile({
      limits: [
        { name: 'per key', scope: 'key', window: 'day', maxValue: '1000000000000000000', when: { type: ['transaction'], to: [USDC] } },
        { name: 'project', scope: 'project', window: 'hour', maxCount: 100 },
      ],
    });
    expect(policy.rules).toEqual([]);
    expect(policy.limits).toEqual([
      {
        name: 'per key',
        scope: 'key',
        window: 'day',
        maxValue: 10n ** 18n,
        when: { type: new Set(['transaction']), to: new Set([lc(USDC)]) },
      },
      { name: 'project', scope: 'project', window: 'hour', maxCount: 100 },
    ]);
    const when = policy.limits[0]!.when!;
    expect(conditionFailure(when, requestFacts(usdcTransfer(1n)))).toBeNull();
    expect(conditionFailure(when, requestFacts(digest))).toBe('type digest is not in the list');
  });

  it('is pure: compiling twice gives equal policies, and the parsed policy is untouched', () => {
    const parsed = PoliciesSchema.parse({ rules: [{ name: 'a', effect: 'allow', when: { to: [USDC], erc20: { recipient: [ALICE] } } }] });
    const copy = structuredClone(parsed);
    expect(compilePolicy(parsed)).toEqual(compilePolicy(parsed));
    expect(parsed).toEqual(copy);
  });
});
