/**
 * The facts a policy reads from a parsed sign request (shared/src/policy/facts.ts, docs/POLICIES.md "Facts"):
 * every request type, ERC-20 calldata read exactly, user operation calls decoded for the accounts named, and
 * the decoding bounds beyond which targets and value are unknown.
 */
import { concat, encodeAbiParameters, toFunctionSelector, type Hex } from 'viem';
import { SignRequestSchema } from '../src/signing/schema';
import { GAS_PER_BLOB, requestCost, requestFacts, SELECTORS, USER_OPERATION_DECODE_LIMITS } from '../src/policy/facts';
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
  blobVersionedHash,
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

describe('selectors', () => {
  it('are the selectors of the signatures they name', () => {
    expect(SELECTORS).toEqual({
      transfer: toFunctionSelector('transfer(address,uint256)'),
      approve: toFunctionSelector('approve(address,uint256)'),
      execute: toFunctionSelector('execute(address,uint256,bytes)'),
      executeBatchV06: toFunctionSelector('executeBatch(address[],bytes[])'),
      executeBatchV07: toFunctionSelector('executeBatch(address[],uint256[],bytes[])'),
      executeBatchCalls: toFunctionSelector('executeBatch((address,uint256,bytes)[])'),
    });
  });
});

describe('facts of requests without calldata', () => {
  it('digest: the type only; its value is unknown (it may be any transaction)', () => {
    expect(requestFacts(digestRequest())).toEqual({ type: 'digest' });
  });

  it.each([
    ['a string', messageRequest(), { messageKind: 'text', value: 0n }],
    ['an empty string', SignRequestSchema.parse({ type: 'message', message: '' }), { messageKind: 'text', value: 0n }],
    [
      'a string of 0x and 64 hex digits (text: EIP-191 signs its characters)',
      SignRequestSchema.parse({ type: 'message', message: `0x${'ab'.repeat(32)}` }),
      { messageKind: 'text', value: 0n },
    ],
    ['raw bytes (0)', rawMessageRequest(0), { messageKind: 'raw', value: 0n }],
    ['raw bytes (31)', rawMessageRequest(31), { messageKind: 'raw', value: 0n }],
    ['raw bytes (33)', rawMessageRequest(33), { messageKind: 'raw', value: 0n }],
    ['raw bytes (32): a hash, value unknown', rawMessageRequest(32), { messageKind: 'hash' }],
  ] as const)('message of %s: its kind', (_name, req, facts) => {
    expect(requestFacts(req)).toEqual({ type: 'message', ...facts });
  });

  it("typed data: the domain's chain, name and contract (lower-case) when given, and the primary type", () => {
    // No value: the message is not read (a Safe transaction's typed data moves ether).
    expect(requestFacts(typedDataRequest(PERMIT_DOMAIN))).toEqual({
      type: 'typedData',
      chainId: 1,
      typedData: { name: 'USD Coin', verifyingContract: lc(USDC), primaryType: 'Permit' },
    });
    expect(requestFacts(typedDataRequest({}, 'Mail'))).toEqual({ type: 'typedData', typedData: { primaryType: 'Mail' } });
    expect(requestFacts(typedDataRequest({ chainId: 0 }))).toMatchObject({ chainId: 0 });
  });

  it('authorization: its chain (0 included), its delegate, no value', () => {
    expect(requestFacts(authorizationRequest(DELEGATE, 10))).toEqual({
      type: 'authorization',
      chainId: 10,
      value: 0n,
      delegates: [lc(DELEGATE)],
    });
    expect(requestFacts(authorizationRequest(DELEGATE, 0))).toMatchObject({ chainId: 0 });
  });
});

describe('facts of transactions', () => {
  it.each([
    ['legacy', 30_000_000_000n],
    ['eip2930', 30_000_000_000n],
    ['eip1559', 30_000_000_000n],
    ['eip7702', 30_000_000_000n],
  ] as const)('%s: chain, recipient, value, gas price, fee; no delegates', (type, gasPrice) => {
    const facts = requestFacts(transactionRequest(type, { value: '1000', ...(type === 'legacy' ? { gasPrice: '7' } : {}) }));
    expect(facts).toMatchObject({
      type: 'transaction',
      chainId: 1,
      to: lc(BOB),
      value: 1000n,
      gasPrice: type === 'legacy' ? 7n : gasPrice,
      fee: 21_000n * (type === 'legacy' ? 7n : gasPrice),
    });
    expect(facts.selector).toBeUndefined();
    expect(facts.erc20).toBeUndefined();
    expect(facts.delegates).toBeUndefined();
    expect(facts.messageKind).toBeUndefined();
  });

  it('fee: gas × maxFeePerGas (not the priority fee); 0 without gas', () => {
    const tx = (over: Record<string, unknown>) => requestFacts(transactionRequest('eip1559', over)).fee;
    expect(tx({ gas: 100_000, maxFeePerGas: '99', maxPriorityFeePerGas: '98' })).toBe(9_900_000n);
    expect(tx({ gas: '0xffffffffffffffff', maxFeePerGas: (1n << 200n).toString() })).toBe(((1n << 64n) - 1n) << 200n);
    expect(tx({ gas: undefined })).toBe(0n);
  });

  it('gas price: maxFeePerGas for fee-market transactions', () => {
    expect(requestFacts(transactionRequest('eip1559', { maxFeePerGas: '99', maxPriorityFeePerGas: '1' })).gasPrice).toBe(99n);
  });

  it('value 0 when absent; to null for a contract creation (absent or null)', () => {
    expect(requestFacts(transactionRequest('eip1559')).value).toBe(0n);
    expect(requestFacts(transactionRequest('eip1559', { to: null, data: '0x6000' })).to).toBeNull();
    expect(requestFacts(transactionRequest('eip1559', { to: undefined, data: '0x6000' })).to).toBeNull();
  });

  it("eip7702: no delegates (its authorization list holds others' signatures), a transaction like any other", () => {
    const facts = requestFacts(
      transactionRequest('eip7702', { authorizationList: [signedAuthorization(DELEGATE), signedAuthorization(MALLORY, 0)] }),
    );
    expect(facts).toEqual({
      type: 'transaction',
      chainId: 1,
      to: lc(BOB),
      value: 0n,
      fee: 21_000n * 30_000_000_000n,
      gasPrice: 30_000_000_000n,
    });
  });

  it("eip4844: a transaction like eip1559 whose fee adds each blob's blob gas × maxFeePerBlobGas", () => {
    const gwei = 1_000_000_000n;
    expect(GAS_PER_BLOB).toBe(2n ** 17n); // EIP-4844's GAS_PER_BLOB
    expect(requestFacts(transactionRequest('eip4844', { value: '1000' }))).toEqual({
      type: 'transaction',
      chainId: 1,
      to: lc(BOB),
      value: 1000n,
      fee: 21_000n * 30n * gwei + 131_072n * gwei,
      gasPrice: 30n * gwei,
    });
    const blobs = [1, 2, 3].map(blobVersionedHash);
    expect(requestFacts(transactionRequest('eip4844', { blobVersionedHashes: blobs, maxFeePerBlobGas: '5' })).fee).toBe(
      21_000n * 30n * gwei + 3n * 131_072n * 5n,
    );
    // Without gas it cannot be mined; its blob fee is still counted (the most it could pay).
    expect(requestFacts(transactionRequest('eip4844', { gas: undefined, maxFeePerBlobGas: '5' })).fee).toBe(131_072n * 5n);
    expect(requestFacts(transactionRequest('eip4844', { to: USDC, data: transferData(ALICE, 9n) }))).toMatchObject({
      to: lc(USDC),
      selector: SELECTORS.transfer,
      erc20: { function: 'transfer', recipient: lc(ALICE), amount: 9n },
    });
  });

  it('selector: the first 4 bytes of calldata of 4 bytes or more, lower-case', () => {
    expect(requestFacts(transactionRequest('eip1559', { data: '0xDEADBEEF' })).selector).toBe('0xdeadbeef');
    expect(requestFacts(transactionRequest('eip1559', { data: '0xdeadbeef00' })).selector).toBe('0xdeadbeef');
    expect(requestFacts(transactionRequest('eip1559', { data: '0xdeadbe' })).selector).toBeUndefined();
    expect(requestFacts(transactionRequest('eip1559', { data: '0x' })).selector).toBeUndefined();
  });

  it('erc20: transfer and approve, exactly', () => {
    expect(requestFacts(transactionRequest('eip1559', { to: USDC, data: transferData(ALICE, 5_000_000n) }))).toMatchObject({
      to: lc(USDC),
      value: 0n,
      selector: SELECTORS.transfer,
      erc20: { function: 'transfer', recipient: lc(ALICE), amount: 5_000_000n },
    });
    expect(requestFacts(transactionRequest('legacy', { to: DAI, data: approveData(MALLORY, (1n << 256n) - 1n) })).erc20).toEqual({
      function: 'approve',
      recipient: lc(MALLORY),
      amount: (1n << 256n) - 1n,
    });
  });

  it('erc20: absent for calldata that is not exactly a transfer or approve', () => {
    const transfer = transferData(ALICE, 5n);
    const dirty = `${transfer.slice(0, 10)}${'ff'.repeat(12)}${transfer.slice(34)}` as Hex; // address word with high bytes set
    const transferFrom = concat([
      toFunctionSelector('transferFrom(address,address,uint256)'),
      encodeAbiParameters([{ type: 'address' }, { type: 'uint256' }], [ALICE, 5n]),
    ]);
    for (const [name, data] of [
      ['a byte more', `${transfer}00`],
      ['a byte less', transfer.slice(0, -2)],
      ['dirty address high bytes', dirty],
      ['another selector, same shape', transferFrom],
      ['just the selector', SELECTORS.transfer],
    ] as const) {
      const facts = requestFacts(transactionRequest('eip1559', { to: USDC, data }));
      expect([name, facts.erc20]).toEqual([name, undefined]);
      expect(facts.selector).toBe(data.slice(0, 10));
    }
  });
});

describe('facts of user operations', () => {
  const op = (version: '0.6' | '0.7' | '0.8', callData: Hex) => requestFacts(userOperationRequest(version, callData));

  it('sender, entry point, chain, gas price (maxFeePerGas), fee, lower-case', () => {
    expect(op('0.6', executeData(BOB, 0n))).toMatchObject({
      type: 'userOperation',
      chainId: 1,
      gasPrice: 30_000_000_000n,
      fee: 250_000n * 30_000_000_000n,
      userOperation: { sender: lc(SENDER), entryPoint: lc(ENTRY_POINT_06) },
    });
    expect(op('0.7', executeData(BOB, 0n)).userOperation?.entryPoint).toBe(lc(ENTRY_POINT_07));
    expect(op('0.8', executeData(BOB, 0n))).toMatchObject({
      type: 'userOperation',
      chainId: 1,
      gasPrice: 30_000_000_000n,
      fee: 250_000n * 30_000_000_000n,
      userOperation: { sender: lc(SENDER), entryPoint: lc(ENTRY_POINT_08) },
    });
  });

  it.each([
    ['0.6, the three gas limits', '0.6', {}, 250_000n],
    ['0.6, an empty paymasterAndData', '0.6', { paymasterAndData: '0x' }, 250_000n],
    ['0.6 with a paymaster: verificationGasLimit × 3', '0.6', { paymasterAndData: `0x${'12'.repeat(20)}` }, 450_000n],
    ['0.7, the three gas limits', '0.7', {}, 250_000n],
    ['0.7, preVerificationGas (paid to the bundler)', '0.7', { preVerificationGas: '10000000000000' }, 10_000_000_200_000n],
    ['0.7, the paymaster limits', '0.7', { paymaster: DAI, paymasterVerificationGasLimit: 7, paymasterPostOpGasLimit: 8 }, 250_015n],
    ['0.7, one paymaster limit', '0.7', { paymaster: DAI, paymasterPostOpGasLimit: 8 }, 250_008n],
    ['0.8, the three gas limits', '0.8', {}, 250_000n],
    ['0.8, the paymaster limits', '0.8', { paymaster: DAI, paymasterVerificationGasLimit: 7, paymasterPostOpGasLimit: 8 }, 250_015n],
  ] as const)('fee of a user operation: %s, × maxFeePerGas', (_name, version, over, gas) => {
    const facts = requestFacts(userOperationRequest(version, executeData(BOB, 0n), over));
    expect(facts.fee).toBe(gas * 30_000_000_000n);
  });

  it.each(['0.6', '0.7', '0.8'] as const)('%s execute(dest, value, func): the target and its value', (version) => {
    expect(op(version, executeData(USDC, 7n, transferData(ALICE, 1n)))).toMatchObject({
      value: 7n,
      userOperation: { targets: [lc(USDC)] },
    });
  });

  it('SimpleAccount 0.6 executeBatch(address[], bytes[]): every target, no value', () => {
    expect(op('0.6', batchV06Data([USDC, DAI], [transferData(ALICE, 1n), '0x']))).toMatchObject({
      value: 0n,
      userOperation: { targets: [lc(USDC), lc(DAI)] },
    });
    // Lists of different lengths revert in the account: not read as calls.
    const f = op('0.6', batchV06Data([USDC, DAI], ['0x']));
    expect([f.userOperation?.targets, f.value]).toEqual([undefined, undefined]);
  });

  it('SimpleAccount 0.7 executeBatch(address[], uint256[], bytes[]): every target, values summed (an empty value list is no value)', () => {
    expect(op('0.7', batchV07Data([USDC, BOB], [0n, 5n]))).toMatchObject({ value: 5n, userOperation: { targets: [lc(USDC), lc(BOB)] } });
    expect(op('0.7', batchV07Data([USDC, BOB], []))).toMatchObject({ value: 0n, userOperation: { targets: [lc(USDC), lc(BOB)] } });
    for (const [values, datas] of [
      [[1n], ['0x', '0x']],
      [[1n, 2n], ['0x']],
    ] as const) {
      const f = op('0.7', batchV07Data([USDC, BOB], [...values], [...datas]));
      expect([f.userOperation?.targets, f.value]).toEqual([undefined, undefined]);
    }
  });

  it('Coinbase executeBatch((address, uint256, bytes)[]): every target, values summed', () => {
    expect(
      op(
        '0.7',
        batchCallsData([
          { target: USDC, value: 0n, data: transferData(ALICE, 1n) },
          { target: BOB, value: 3n },
          { target: ALICE, value: 4n },
        ]),
      ),
    ).toMatchObject({ value: 7n, userOperation: { targets: [lc(USDC), lc(BOB), lc(ALICE)] } });
  });

  it("SimpleAccount 0.8 executeBatch(Call[]), BaseAccount's (address, uint256, bytes)[]: every target, values summed", () => {
    const calls = [
      { target: USDC, value: 0n, data: transferData(ALICE, 1n) },
      { target: BOB, value: 2n },
    ];
    expect(op('0.8', batchCallsData(calls))).toMatchObject({ value: 2n, userOperation: { targets: [lc(USDC), lc(BOB)] } });
    // 0.7's executeBatch(address[], uint256[], bytes[]) is no function of a 0.8 SimpleAccount, but the facts are
    // what the callData calls: an account that has it runs those calls.
    expect(op('0.8', batchV07Data([USDC], [0n]))).toMatchObject({ userOperation: { targets: [lc(USDC)] } });
  });

  it('an EIP-7702 user operation (0.8): its authorization is no fact (the sender signed it, not this request)', () => {
    const facts = requestFacts(
      userOperationRequest('0.8', executeData(BOB, 1n), {
        factory: '0x7702000000000000000000000000000000000000',
        authorization: { address: DELEGATE, chainId: 1, nonce: 0 },
      }),
    );
    expect(facts).toMatchObject({ value: 1n, userOperation: { sender: lc(SENDER), entryPoint: lc(ENTRY_POINT_08), targets: [lc(BOB)] } });
    expect(facts.delegates).toBeUndefined();
  });

  it('an empty batch: no targets, no value', () => {
    expect(op('0.6', batchV06Data([]))).toMatchObject({ value: 0n, userOperation: { targets: [] } });
    expect(op('0.7', batchCallsData([]))).toMatchObject({ value: 0n, userOperation: { targets: [] } });
  });

  it('other or malformed callData: targets and value unknown (absent)', () => {
    const execute = executeData(BOB, 1n);
    const batch = batchCallsData([{ target: BOB, value: 1n }]);
    const dirty = (data: Hex, word: number) => `${data.slice(0, 10 + 64 * word)}ff${data.slice(12 + 64 * word)}` as Hex;
    for (const [name, callData] of [
      ['another call', transferData(ALICE, 1n)],
      ['no callData', '0x'],
      ['a selector only', SELECTORS.execute],
      ['execute truncated to its target', execute.slice(0, 2 + 8 + 64)],
      ['execute with a dirty target word', dirty(execute, 0)],
      ['a 0.6 batch with a dirty target word', dirty(batchV06Data([BOB, ALICE]), 4)],
      ['a 0.6 batch whose offset is past the end', dirty(batchV06Data([BOB]), 0)],
      ['a Coinbase batch whose call offset is past the end', dirty(batch, 2)],
      ['a Coinbase batch whose array offset is past the end', dirty(batch, 0)],
      ['a Coinbase batch with a dirty target word', dirty(batch, 3)],
      ['a Coinbase batch truncated in a call', batch.slice(0, 2 + 8 + 64 * 4)],
    ] as const) {
      const f = op('0.7', callData as Hex);
      expect([name, f.userOperation?.targets, f.value]).toEqual([name, undefined, undefined]);
      expect(f.userOperation?.sender).toBe(lc(SENDER));
    }
  });

  it("reads calls' heads, not their payloads: a payload that does not decode reverts in the account", () => {
    const execute = executeData(BOB, 1n, '0x1234');
    const badPayload = `${execute.slice(0, 10 + 128)}${'00'.repeat(31)}ff${execute.slice(10 + 192)}` as Hex; // func's offset past the end
    expect(op('0.6', badPayload)).toMatchObject({ value: 1n, userOperation: { targets: [lc(BOB)] } });
  });
});

describe('requestCost: value + fee, what limits count', () => {
  it.each([
    ['a transaction', transactionRequest('eip1559', { value: '1000' }), 1000n + 21_000n * 30_000_000_000n],
    ['a user operation', userOperationRequest('0.7', executeData(BOB, 5n)), 5n + 250_000n * 30_000_000_000n],
    ['a 0.8 user operation', userOperationRequest('0.8', executeData(BOB, 5n)), 5n + 250_000n * 30_000_000_000n],
    ['a blob transaction', transactionRequest('eip4844', { value: '1000' }), 1000n + 21_000n * 30_000_000_000n + 131_072n * 1_000_000_000n],
    ['a user operation whose calls are not decoded', userOperationRequest('0.7', transferData(ALICE, 1n)), undefined],
    ['a text message', messageRequest(), 0n],
    ['a raw message', rawMessageRequest(20), 0n],
    ['a hash message', rawMessageRequest(32), undefined],
    ['an authorization', authorizationRequest(DELEGATE, 1), 0n],
    ['a digest', digestRequest(), undefined],
    ['typed data', typedDataRequest(PERMIT_DOMAIN), undefined],
  ] as const)('%s', (_name, req, cost) => {
    expect(requestCost(requestFacts(req))).toBe(cost);
  });
});

describe('decoding bounds (docs/POLICIES.md, "Known limits")', () => {
  const { maxCalls, maxCallDataBytes } = USER_OPERATION_DECODE_LIMITS;
  const targets = (n: number) => Array.from({ length: n }, (_, i) => `0x${(i + 1).toString(16).padStart(40, '0')}`);

  it(`decodes up to ${maxCalls} calls; one more: targets and value unknown`, () => {
    expect(maxCalls).toBe(64);
    expect(requestFacts(userOperationRequest('0.6', batchV06Data(targets(maxCalls)))).userOperation?.targets).toHaveLength(maxCalls);
    const over = requestFacts(userOperationRequest('0.6', batchV06Data(targets(maxCalls + 1))));
    expect([over.userOperation?.targets, over.value]).toEqual([undefined, undefined]);
    const overCalls = requestFacts(
      userOperationRequest('0.7', batchCallsData(targets(maxCalls + 1).map((target) => ({ target, value: 1n })))),
    );
    expect([overCalls.userOperation?.targets, overCalls.value]).toEqual([undefined, undefined]);
  });

  it(`decodes callData of up to ${maxCallDataBytes} bytes; a byte more: targets and value unknown`, () => {
    expect(maxCallDataBytes).toBe(16 * 1024);
    // execute(dest, value, func) with func grown to put the callData at exactly the bound (it then ends in padding).
    const sized = (bytes: number): Hex => {
      const base = executeData(BOB, 1n, '0x').length / 2 - 1; // 4 + 4 words
      const callData = executeData(BOB, 1n, `0x${'ab'.repeat(bytes - base - 32)}`);
      return `${callData}${'00'.repeat(bytes - (callData.length / 2 - 1))}` as Hex;
    };
    expect(sized(maxCallDataBytes).length).toBe(2 + 2 * maxCallDataBytes);
    expect(requestFacts(userOperationRequest('0.7', sized(maxCallDataBytes)))).toMatchObject({
      value: 1n,
      userOperation: { targets: [lc(BOB)] },
    });
    const over = requestFacts(userOperationRequest('0.7', sized(maxCallDataBytes + 1)));
    expect([over.userOperation?.targets, over.value]).toEqual([undefined, undefined]);
  });

  // Their cost is measured by `npm run bench -- --only policy` (the 64-call decoding bound row), not here.
  it('the costliest callData within the bounds reads at most 64 calls, or none', () => {
    const words = (xs: Array<bigint | number>) => xs.map((x) => BigInt(x).toString(16).padStart(64, '0')).join('');
    const fill = (selector: string, body: string) => `${selector}${body}`.padEnd(2 + 2 * maxCallDataBytes, '0') as Hex;
    const most = Math.floor((maxCallDataBytes - 4 - 96) / 32); // words that fit after the heads
    const cases: Array<[string, Hex]> = [
      // Every payload offset pointing at one 11 KiB tail: decoding payloads would copy it 64 times.
      [
        'shared payload tails',
        `${SELECTORS.executeBatchV06}${words([64, 64 + 32 + 32 * 64, 64])}${targets(64)
          .map((t) => t.slice(2).padStart(64, '0'))
          .join(
            '',
          )}${words([64, ...Array<number>(64).fill(32 * 64)])}${encodeAbiParameters([{ type: 'bytes' }], [`0x${'cd'.repeat(11 * 1024)}`]).slice(66)}` as Hex,
      ],
      // As many targets as 16 KiB holds (refused only after decoding: more than 64 calls).
      ['a 0.6 batch of ~500 targets', fill(SELECTORS.executeBatchV06, words([64, 64, most, ...Array<number>(most).fill(1)]))],
      // As many calls as fit, all at one offset.
      ['a Coinbase batch of ~500 calls', fill(SELECTORS.executeBatchCalls, words([32, most, ...Array<number>(most).fill(0)]))],
      ['a Coinbase batch of 64 calls', fill(SELECTORS.executeBatchCalls, words([32, 64, ...Array<number>(64).fill(0), 1, 2]))],
    ];
    for (const [name, callData] of cases) {
      expect([name, callData.length <= 2 + 2 * maxCallDataBytes]).toEqual([name, true]);
      const facts = requestFacts(userOperationRequest('0.6', callData));
      const targets = facts.userOperation?.targets;
      expect([name, targets === undefined || targets.length <= 64]).toEqual([name, true]);
      expect([name, targets === undefined]).toEqual([name, facts.value === undefined]);
    }
  });
});
