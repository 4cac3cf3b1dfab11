/**
 * Policy evaluation is total (docs/POLICIES.md, "Semantics"): on any request the request schema accepts and any
 * policy the policy schema accepts, `requestFacts` and `evaluateRules` return a decision that follows the rules'
 * order, and never throw. And the calls read from a user operation are the calls viem's full ABI decoder reads,
 * whenever both read them.
 */
import fc from 'fast-check';
import { decodeAbiParameters, decodeFunctionData, type Hex } from 'viem';
import { requestCost, requestFacts, SELECTORS } from '../src/policy/facts';
import { compilePolicy, conditionFailure, evaluateRules } from '../src/policy/evaluate';
import { PoliciesSchema, type PoliciesInput } from '../src/policy/schema';
import { MAX_BLOBS_PER_TRANSACTION, SignRequestSchema } from '../src/signing/schema';
import {
  ABI,
  ALICE,
  approveData,
  batchCallsData,
  blobVersionedHash,
  batchV06Data,
  batchV07Data,
  BOB,
  DAI,
  DELEGATE,
  ENTRY_POINT_06,
  ENTRY_POINT_07,
  executeData,
  MALLORY,
  SENDER,
  transferData,
  USDC,
} from './policy-requests';

const KNOWN = [USDC, DAI, ALICE, BOB, MALLORY, SENDER, DELEGATE, ENTRY_POINT_06, ENTRY_POINT_07];
const hexOf = (bytes: Uint8Array): Hex => `0x${Buffer.from(bytes).toString('hex')}`;
const address = fc.oneof(fc.constantFrom(...KNOWN), fc.uint8Array({ minLength: 20, maxLength: 20 }).map(hexOf));
const chainId = fc.oneof(fc.constantFrom(1, 5, 10, 137), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }));
const amount = fc.oneof(fc.constantFrom(0n, 1n, 1_000_000n, 10n ** 18n), fc.bigInt({ min: 0n, max: (1n << 256n) - 1n }));
const smallAmount = fc.bigInt({ min: 0n, max: 10n ** 20n });
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map(hexOf);

/** Account calls built with viem's encoder, the ERC-20 calls, and arbitrary bytes. */
const call = fc.record({ target: address, value: smallAmount, data: bytes(40) });
const validCallData = fc.oneof(
  fc.tuple(address, smallAmount, bytes(80)).map(([t, v, d]) => executeData(t, v, d)),
  fc.array(fc.tuple(address, bytes(40)), { maxLength: 6 }).map((cs) =>
    batchV06Data(
      cs.map((c) => c[0]),
      cs.map((c) => c[1]),
    ),
  ),
  fc.array(fc.tuple(address, smallAmount, bytes(40)), { maxLength: 6 }).chain((cs) =>
    fc.boolean().map((noValues) =>
      batchV07Data(
        cs.map((c) => c[0]),
        noValues ? [] : cs.map((c) => c[1]),
        cs.map((c) => c[2]),
      ),
    ),
  ),
  fc.array(call, { maxLength: 6 }).map(batchCallsData),
  fc.tuple(address, amount).map(([a, n]) => transferData(a, n)),
  fc.tuple(address, amount).map(([a, n]) => approveData(a, n)),
);
/** Valid encodings with bytes changed, cut or added: what a caller can send to the reader. */
const callData: fc.Arbitrary<Hex> = fc.oneof(
  { arbitrary: validCallData, weight: 3 },
  fc
    .tuple(validCallData, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.nat(), fc.boolean())
    .map(([data, flips, cut, doCut]) => {
      const b = Buffer.from(data.slice(2), 'hex');
      for (const [at, v] of flips) b[4 + (at % Math.max(1, b.length - 4))] = v;
      return hexOf(doCut ? b.subarray(0, cut % (b.length + 1)) : b);
    }),
  fc.tuple(fc.constantFrom(...Object.values(SELECTORS)), bytes(300)).map(([s, d]) => `${s}${d.slice(2)}` as Hex),
  bytes(64),
);

const signedAuthorization = fc.record({
  address,
  chainId: fc.oneof(fc.constant(0), chainId),
  nonce: fc.nat(),
  r: fc.constant(`0x${'01'.repeat(32)}`),
  s: fc.constant(`0x${'02'.repeat(32)}`),
  yParity: fc.constantFrom(0, 1),
});
const wei = amount.map(String);
const transaction = fc
  .oneof(
    ...(['legacy', 'eip2930'] as const).map((type) =>
      fc.record({ type: fc.constant(type), gasPrice: wei }, { requiredKeys: ['type', 'gasPrice'] }),
    ),
    ...(['eip1559', 'eip7702'] as const).map((type) =>
      fc.record({
        type: fc.constant(type),
        maxFeePerGas: wei,
        maxPriorityFeePerGas: wei,
        ...(type === 'eip7702' ? { authorizationList: fc.array(signedAuthorization, { minLength: 1, maxLength: 3 }) } : {}),
      }),
    ),
    // A blob transaction always names `to` (this one replaces the common, nullable one).
    fc.record({
      type: fc.constant('eip4844'),
      to: address,
      maxFeePerGas: wei,
      maxPriorityFeePerGas: wei,
      maxFeePerBlobGas: wei,
      blobVersionedHashes: fc.array(fc.nat().map(blobVersionedHash), { minLength: 1, maxLength: MAX_BLOBS_PER_TRANSACTION }),
    }),
  )
  .chain((fees) =>
    fc
      .record(
        { chainId, nonce: fc.nat(), to: fc.oneof(address, fc.constant(null)), value: wei, data: callData, gas: fc.constant('21000') },
        { requiredKeys: ['chainId', 'nonce'] },
      )
      .map((common) => ({ type: 'transaction', transaction: { ...common, ...fees } })),
  );
const userOperation = fc
  .record({ version: fc.constantFrom('0.6', '0.7', '0.8'), chainId, entryPoint: address, sender: address, callData, maxFeePerGas: wei })
  .map(({ version, chainId: id, entryPoint, sender, callData: data, maxFeePerGas }) => ({
    type: 'userOperation',
    version,
    chainId: id,
    entryPoint,
    userOperation: {
      sender,
      nonce: '0',
      callData: data,
      callGasLimit: '1',
      verificationGasLimit: '1',
      preVerificationGas: '1',
      maxFeePerGas,
      maxPriorityFeePerGas: '1',
    },
  }));
const typedData = fc
  .record(
    { name: fc.oneof(fc.constantFrom('USD Coin', 'Dai Stablecoin'), fc.string({ maxLength: 80 })), chainId, verifyingContract: address },
    { requiredKeys: [] },
  )
  .chain((domain) =>
    fc.constantFrom('Permit', 'Mail', 'X').map((primaryType) => ({
      type: 'typedData',
      typedData: { domain, types: { [primaryType]: [{ name: 'a', type: 'uint256' }] }, primaryType, message: { a: '1' } },
    })),
  );
const request = fc.oneof(
  fc.uint8Array({ minLength: 32, maxLength: 32 }).map((d) => ({ type: 'digest', digest: hexOf(d) })),
  fc
    .oneof(
      fc.string(),
      bytes(40).map((raw) => ({ raw })),
      fc.uint8Array({ minLength: 32, maxLength: 32 }).map((raw) => ({ raw: hexOf(raw) })),
    )
    .map((message) => ({ type: 'message', message })),
  typedData,
  transaction,
  fc
    .record({ chainId: fc.oneof(fc.constant(0), chainId), address, nonce: fc.nat() })
    .map((authorization) => ({ type: 'authorization', authorization, allowAllChains: true })),
  userOperation,
);

/** Lists drawn from small pools, so conditions both hold and fail. */
const list = <T>(arb: fc.Arbitrary<T>) => fc.uniqueArray(arb, { minLength: 1, maxLength: 4 });
const condition = fc.record(
  {
    type: list(fc.constantFrom('digest', 'message', 'typedData', 'transaction', 'authorization', 'userOperation')),
    chainId: list(fc.constantFrom(0, 1, 5, 10)),
    to: list(fc.constantFrom(...KNOWN)),
    maxValue: fc.constantFrom('0', '1000', '1000000000000000000'),
    messageKind: list(fc.constantFrom('text', 'raw', 'hash')),
    maxFee: fc.constantFrom('0', '21000', '630000000000000', '1000000000000000000'),
    selector: list(fc.constantFrom(...Object.values(SELECTORS), '0xDEADBEEF')),
    erc20: fc.record(
      {
        function: list(fc.constantFrom('transfer', 'approve')),
        recipient: list(fc.constantFrom(...KNOWN)),
        maxAmount: fc.constantFrom('0', '1000000'),
      },
      { requiredKeys: [] },
    ),
    typedData: fc.record(
      {
        name: list(fc.constantFrom('USD Coin', 'Dai Stablecoin')),
        verifyingContract: list(fc.constantFrom(...KNOWN)),
        primaryType: list(fc.constantFrom('Permit', 'Mail')),
      },
      { requiredKeys: [] },
    ),
    userOperation: fc.record(
      {
        sender: list(fc.constantFrom(...KNOWN)),
        entryPoint: list(fc.constantFrom(ENTRY_POINT_06, ENTRY_POINT_07)),
        targets: list(fc.constantFrom(...KNOWN)),
      },
      { requiredKeys: [] },
    ),
    delegate: list(fc.constantFrom(DELEGATE, MALLORY)),
    maxGasPrice: fc.constantFrom('1', '30000000000'),
  },
  { requiredKeys: [] },
);
type ConditionInput = NonNullable<NonNullable<PoliciesInput['rules']>[number]['when']>;
/** Conditions, and some broad ones that hold on many requests (so that rules match, a hash message among them). */
const ruleCondition = fc.oneof(
  { arbitrary: condition, weight: 3 },
  fc.constantFrom<ConditionInput>({}, { type: ['message'] }, { type: ['message', 'digest'] }, { messageKind: ['hash'] }, { maxValue: '0' }),
);
const policies = fc
  .record({
    rules: fc.array(fc.record({ effect: fc.constantFrom('allow', 'deny'), when: ruleCondition }), { maxLength: 8 }),
    limits: fc.array(
      fc.record(
        {
          scope: fc.constantFrom('key', 'project'),
          window: fc.constantFrom('hour', 'day'),
          maxCount: fc.constant(10),
          maxValue: fc.constant('1000'),
          when: condition,
        },
        { requiredKeys: ['scope', 'window', 'maxCount'] },
      ),
      { maxLength: 3 },
    ),
  })
  .map(({ rules, limits }): PoliciesInput => ({
    rules: rules.map((r, i) => ({ name: `rule ${i}`, ...r })),
    limits: limits.map((l, i) => ({ name: `limit ${i}`, ...l })),
  }));

/** The calls' target words (addresses as their full 32-byte words), by viem's decoder. */
function targetWords(data: Hex): Hex[] {
  const args: Hex = `0x${data.slice(10)}`;
  switch (data.slice(0, 10)) {
    case SELECTORS.execute:
      return [decodeAbiParameters([{ type: 'bytes32' }, { type: 'uint256' }, { type: 'bytes' }], args)[0]];
    case SELECTORS.executeBatchV06:
      return [...decodeAbiParameters([{ type: 'bytes32[]' }, { type: 'bytes[]' }], args)[0]];
    case SELECTORS.executeBatchV07:
      return [...decodeAbiParameters([{ type: 'bytes32[]' }, { type: 'uint256[]' }, { type: 'bytes[]' }], args)[0]];
    default: {
      const calls = [{ type: 'tuple[]', components: [{ type: 'bytes32' }, { type: 'uint256' }, { type: 'bytes' }] }] as const;
      return decodeAbiParameters(calls, args)[0].map((c) => c[0]);
    }
  }
}

describe('policy evaluation is total', () => {
  it('never throws on a valid request and a valid policy, and decides by the rules’ order', () => {
    fc.assert(
      fc.property(request, policies, (rawRequest, rawPolicy) => {
        const req = SignRequestSchema.parse(rawRequest);
        const policy = compilePolicy(PoliciesSchema.parse(rawPolicy));
        const facts = requestFacts(req);
        const decision = evaluateRules(policy, facts);
        for (const l of policy.limits) if (l.when) conditionFailure(l.when, facts);

        expect(decision.rules.map((r) => [r.name, r.effect])).toEqual(policy.rules.map((r) => [r.name, r.effect]));
        for (const r of decision.rules) expect(r.matched ? r.failed : typeof r.failed).toBe(r.matched ? undefined : 'string');
        const deny = decision.rules.find((r) => r.matched && r.effect === 'deny');
        const allow = decision.rules.find((r) => r.matched && r.effect === 'allow');
        const rule = deny ?? allow ?? null;
        expect(decision.rule).toBe(rule && rule.name);
        expect(decision.allowed).toBe(!deny && (allow !== undefined || policy.rules.length === 0));
        expect(decision.reason.length).toBeGreaterThan(0);
        // Each rule matches when its condition holds, but an allow rule matches a hash message only when it lists
        // "hash" (deny rules read the condition as written).
        policy.rules.forEach((r, k) => {
          const holds = conditionFailure(r.when, facts) === null;
          const hashGate = r.effect === 'deny' || facts.messageKind !== 'hash' || r.when.messageKind?.has('hash') === true;
          expect(decision.rules[k]?.matched).toBe(holds && hashGate);
        });
        // Value is unknown exactly where the enclave cannot see it; the cost adds the fee to a known value.
        const blind = facts.type === 'digest' || facts.type === 'typedData' || facts.messageKind === 'hash';
        if (blind) expect(facts.value).toBeUndefined();
        else if (facts.type !== 'userOperation') expect(typeof facts.value).toBe('bigint');
        expect(requestCost(facts)).toBe(facts.value === undefined ? undefined : facts.value + (facts.fee ?? 0n));
        expect(facts.delegates === undefined).toBe(facts.type !== 'authorization');
        for (const a of [facts.to, facts.userOperation?.sender, ...(facts.userOperation?.targets ?? []), ...(facts.delegates ?? [])]) {
          if (typeof a === 'string') expect(a).toBe(a.toLowerCase());
        }
      }),
      { numRuns: 250 },
    );
  });

  it("reads a user operation's calls as viem's full decoder does, whenever both read them", () => {
    let compared = 0;
    fc.assert(
      fc.property(callData, fc.constantFrom('0.6', '0.7', '0.8'), (data, version) => {
        const facts = requestFacts(
          SignRequestSchema.parse({
            type: 'userOperation',
            version,
            chainId: 1,
            entryPoint: ENTRY_POINT_07,
            userOperation: {
              sender: SENDER,
              nonce: 0,
              callData: data,
              callGasLimit: 1,
              verificationGasLimit: 1,
              preVerificationGas: 1,
              maxFeePerGas: 1,
              maxPriorityFeePerGas: 1,
            },
          }),
        );
        let full: { targets: string[]; value: bigint } | undefined;
        try {
          const d = decodeFunctionData({ abi: ABI, data });
          if (d.functionName === 'execute') full = { targets: [d.args[0]], value: d.args[1] };
          else if (d.functionName === 'executeBatch' && d.args.length === 1)
            full = { targets: d.args[0].map((c) => c.target), value: d.args[0].reduce((s, c) => s + c.value, 0n) };
          else if (d.functionName === 'executeBatch' && d.args.length === 2 && d.args[0].length === d.args[1].length)
            full = { targets: [...d.args[0]], value: 0n };
          else if (d.functionName === 'executeBatch' && d.args.length === 3 && d.args[0].length === d.args[2].length)
            full =
              d.args[1].length === 0 || d.args[1].length === d.args[0].length
                ? { targets: [...d.args[0]], value: d.args[1].reduce((s, v) => s + v, 0n) }
                : undefined;
        } catch {
          full = undefined;
        }
        const mine = facts.userOperation?.targets && { targets: facts.userOperation.targets, value: facts.value };
        if (mine && full) {
          compared += 1;
          expect(mine).toEqual({ targets: full.targets.map((t) => t.toLowerCase()), value: full.value });
        }
        // viem reads calls the facts do not only where a target's word has dirty high bytes (viem truncates it).
        if (full && !mine) expect(targetWords(data).some((w) => !/^0x0{24}/.test(w))).toBe(true);
      }),
      { numRuns: 300 },
    );
    expect(compared).toBeGreaterThan(50);
  });
});
