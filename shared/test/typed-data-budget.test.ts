/**
 * The typed-data complexity budget, enforced by the sign-request schema (parent and enclave alike) before
 * anything is hashed: real protocols' payloads pass, the attack shapes are refused with the limit named.
 */
import { TypedDataEncoder, keccak256 as ethersKeccak, toUtf8Bytes } from 'ethers';
import { SignRequestSchema } from '../src/signing/schema';
import { checkTypedDataBudget, TYPED_DATA_LIMITS, type TypedDataShape } from '../src/signing/typed-data-budget';
import { describeIssues } from '../src/schema';
import * as payloads from './typed-data-payloads';

type TypedData = payloads.TypedDataInput;

/** The schema's verdict: 'OK' or its INVALID_PARAMS message (as the parent and the enclave phrase it). */
function verdict(typedData: TypedData): string {
  const res = SignRequestSchema.safeParse({ type: 'typedData', typedData });
  return res.success ? 'OK' : describeIssues(res.error);
}

const budget = (typedData: TypedData) => checkTypedDataBudget(typedData);

/** keccak256 of the type string EIP-712 hashes for `primary` (computed by ethers, independently of viem). */
function typeHash(td: TypedData, primary: string): string {
  const { EIP712Domain: _domain, ...types } = td.types as Record<string, Array<{ name: string; type: string }>>;
  return ethersKeccak(toUtf8Bytes(TypedDataEncoder.from(types).encodeType(primary)));
}

describe('typed data that real protocols sign passes the budget', () => {
  const real: Array<[string, TypedData]> = [
    ['a Seaport order with 30 offer and 30 consideration items', payloads.seaportOrder(30, 30)],
    ['a Seaport order with 50 offer and 50 consideration items', payloads.seaportOrder(50, 50)],
    ['a Seaport bulk order of 128 orders (tree height 7)', payloads.seaportBulkOrder(7)],
    ['a Seaport bulk order of 256 orders (tree height 8)', payloads.seaportBulkOrder(8)],
    ['a Permit2 PermitBatch of 50 tokens', payloads.permit2Batch(50)],
    ['a UniswapX ExclusiveDutchOrder (Permit2 witness) with 3 outputs', payloads.uniswapXExclusiveDutchOrder(3)],
    ['a UniswapX V2DutchOrder (Permit2 witness) with 3 outputs', payloads.uniswapXV2DutchOrder(3)],
    ['a Safe transaction (SafeTx) carrying a MultiSend of 40 transfers', payloads.safeTransaction(40)],
  ];

  it.each(real)('%s', (_name, td) => {
    expect(verdict(td)).toBe('OK');
    const v = budget(td);
    expect(v.ok).toBe(true);
  });

  it("builds them from the protocols' real type definitions (their contracts' type hashes)", () => {
    expect(typeHash(payloads.seaportOrder(), 'OrderComponents')).toBe(payloads.SEAPORT_ORDER_TYPEHASH);
    expect(typeHash(payloads.permit2Batch(), 'PermitBatch')).toBe(payloads.PERMIT_BATCH_TYPEHASH);
    expect(typeHash(payloads.safeTransaction(), 'SafeTx')).toBe(payloads.SAFE_TX_TYPEHASH);
    const { ExclusiveDutchOrder, V2DutchOrder } = payloads.UNISWAPX_TYPE_STRINGS;
    expect(typeHash(payloads.uniswapXExclusiveDutchOrder(), 'ExclusiveDutchOrder')).toBe(ethersKeccak(toUtf8Bytes(ExclusiveDutchOrder)));
    expect(typeHash(payloads.uniswapXV2DutchOrder(), 'V2DutchOrder')).toBe(ethersKeccak(toUtf8Bytes(V2DutchOrder)));
  });

  it('counts what the encoder will visit (a Seaport order of 30 + 30 items)', () => {
    const v = budget(payloads.seaportOrder(30, 30));
    // The domain, the order, 60 items; 11 + 30·5 + 30·6 fields + 60 elements + 4 domain fields.
    expect(v).toEqual({
      ok: true,
      usage: expect.objectContaining({ types: 3, maxFields: 11, depth: 3, longestArray: 30, structInstances: 62, values: 405 }),
    });
  });

  it("lets the requests built to sit at the limits pass (the benchmark's worst cases)", () => {
    for (const td of [payloads.atLimitStructs(), payloads.atLimitValues(), payloads.atLimitTypeStrings()]) {
      expect(verdict(td)).toBe('OK');
      expect(JSON.stringify(td).length).toBeLessThan(1_000_000); // fits the enclave's 1 MiB frames
    }
    const structs = budget(payloads.atLimitStructs());
    expect(structs.ok && structs.usage.structInstances).toBe(TYPED_DATA_LIMITS.maxStructInstances);
    expect(structs.ok && structs.usage.values).toBeGreaterThan(TYPED_DATA_LIMITS.maxValues * 0.99);
  });
});

describe('typed data built to be costly is refused before hashing, naming the limit', () => {
  const refusals: Array<[string, () => TypedData, string, RegExp]> = [
    [
      '250 chained types and thousands of structs with empty arrays (the reported 5.8 s request)',
      () => payloads.chainedTypes(250, 4000),
      'maxTypes',
      /^params\.typedData\.types: .*251 types, more than the 32 allowed \(maxTypes\)/,
    ],
    [
      '30 chained types with 250-character names, 1000 times',
      () => payloads.chainedTypes(30, 1000, 250),
      'maxTypeStringChars',
      /message\.items0\[\d+\]: .*type strings.*\(maxTypeStringChars/,
    ],
    ['30,000 empty arrays', () => payloads.emptyArrays(30, 1000), 'maxValues', /message\.f\d+: .*more than 16384 values .*\(maxValues\)/],
    [
      'a recursive struct nested 1000 deep',
      () => payloads.deepNesting(1000),
      'maxDepth',
      /message(\.children\[0\])+: .*deeper than 32 levels .*\(maxDepth\)/,
    ],
    [
      'an array of 100,000 elements',
      () => payloads.hugeArray(100_000),
      'maxArrayLength',
      /message\.values: .*100000 elements, more than the 1024 allowed \(maxArrayLength\)/,
    ],
    ['a Seaport bulk order of 512 orders', () => payloads.seaportBulkOrder(9), 'maxValues', /\(maxValues\)/],
    [
      '3000 empty structs',
      () => ({
        types: {
          P: [
            { name: 'a', type: 'E[]' },
            { name: 'b', type: 'E[]' },
            { name: 'c', type: 'E[]' },
          ],
          E: [],
        },
        primaryType: 'P',
        message: { a: Array(1000).fill({}), b: Array(1000).fill({}), c: Array(1000).fill({}) },
      }),
      'maxStructInstances',
      /more than 2048 struct values to encode \(maxStructInstances\)/,
    ],
    [
      'a type with 65 fields',
      () => ({ types: { P: Array.from({ length: 65 }, (_, i) => ({ name: `f${i}`, type: 'bool' })) }, primaryType: 'P', message: {} }),
      'maxFieldsPerType',
      /types\.P: .*65 fields, more than the 64 allowed \(maxFieldsPerType\)/,
    ],
    [
      'an array type of 40 dimensions',
      () => ({
        types: { P: [{ name: 'a', type: `uint8${'[]'.repeat(40)}` }] },
        primaryType: 'P',
        message: {
          a: (function nest(d: number): unknown {
            return d === 0 ? [] : [nest(d - 1)];
          })(40),
        },
      }),
      'maxDepth',
      /\(maxDepth\)/,
    ],
  ];

  it.each(refusals)('%s', (_name, make, limit, message) => {
    const td = make();
    const v = budget(td);
    expect(v.ok ? 'ok' : v.limit).toBe(limit);
    expect(verdict(td)).toMatch(message);
  });

  it('refuses values the encoder could not encode, with the path', () => {
    const types = {
      P: [
        { name: 'list', type: 'uint256[]' },
        { name: 'inner', type: 'I' },
      ],
      I: [{ name: 'x', type: 'uint256' }],
    };
    expect(verdict({ types, primaryType: 'P', message: { list: '1', inner: { x: 1 } } })).toBe(
      'params.typedData.message.list: expected an array for type "uint256[]"',
    );
    expect(verdict({ types, primaryType: 'P', message: { list: [], inner: [1] } })).toBe(
      'params.typedData.message.inner: expected an object for struct type "I"',
    );
    expect(verdict({ types, primaryType: 'P', message: { list: [] } })).toBe(
      'params.typedData.message.inner is required ("I", a field of "P")',
    );
  });

  it('takes primaryType EIP712Domain only with an empty message (viem signs the domain alone)', () => {
    const domain = { name: 'Pay', version: '1', chainId: 1 };
    const types = { Payment: [{ name: 'to', type: 'address' }] };
    const td = (message: unknown): TypedDataShape => ({ domain, types, primaryType: 'EIP712Domain', message });
    expect(checkTypedDataBudget(td({})).ok).toBe(true);
    for (const message of [{ to: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC' }, [], null, 'x']) {
      expect(checkTypedDataBudget(td(message))).toMatchObject({ ok: false, limit: 'shape', path: ['message'] });
    }
    const res = SignRequestSchema.safeParse({ type: 'typedData', typedData: td({ note: 1 }) });
    expect(res.success || describeIssues(res.error, 'params')).toBe(
      'params.typedData.message: with primaryType "EIP712Domain" only the domain is signed: message must be {}',
    );
  });

  it('counts every visit, so shared references (a DAG built in-process) cannot amplify the walk', () => {
    const leaf = { x: '1' };
    const inner = { leaves: Array(1000).fill(leaf) };
    const td = {
      types: { P: [{ name: 'inners', type: 'I[]' }], I: [{ name: 'leaves', type: 'L[]' }], L: [{ name: 'x', type: 'uint256' }] },
      primaryType: 'P',
      message: { inners: Array(1000).fill(inner) },
    };
    const v = budget(td);
    expect(v.ok ? 'ok' : v.limit).toBe('maxStructInstances');
  });

  it("applies limits passed to it (the defaults are the schema's)", () => {
    const td = payloads.permit2Batch(20);
    expect(checkTypedDataBudget(td as unknown as TypedDataShape, { ...TYPED_DATA_LIMITS, maxArrayLength: 10 })).toMatchObject({
      ok: false,
      limit: 'maxArrayLength',
      path: ['message', 'details'],
    });
    expect(checkTypedDataBudget(td as unknown as TypedDataShape, { ...TYPED_DATA_LIMITS, maxStructInstances: 5 })).toMatchObject({
      ok: false,
      limit: 'maxStructInstances',
    });
  });
});
