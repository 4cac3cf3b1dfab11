/**
 * EIP-712 payloads for the typed-data budget: real protocols' type definitions (which must keep working),
 * the attack shapes (which must be refused), and requests built to sit at the budget's limits (for the
 * benchmark's worst case). Test and benchmark code only.
 */
import type { SignRequestInput } from '../src/signing/schema';
import { TYPED_DATA_LIMITS, type TypedDataLimits } from '../src/signing/typed-data-budget';

export type TypedDataInput = Extract<SignRequestInput, { type: 'typedData' }>['typedData'];
type Field = { name: string; type: string };

const hex = (seed: number, bytes: number) =>
  `0x${(seed >>> 0)
    .toString(16)
    .padStart(8, '0')
    .repeat(Math.ceil(bytes / 4))
    .slice(0, bytes * 2)}`;
const addr = (seed: number) => hex(seed * 2654435761, 20);

// ---------------------------------------------------------------------------------------------------------
// Seaport 1.6 (OpenSea): OrderComponents; the type string is Seaport's ORDER_TYPEHASH preimage.

export const SEAPORT_TYPES = {
  OrderComponents: [
    { name: 'offerer', type: 'address' },
    { name: 'zone', type: 'address' },
    { name: 'offer', type: 'OfferItem[]' },
    { name: 'consideration', type: 'ConsiderationItem[]' },
    { name: 'orderType', type: 'uint8' },
    { name: 'startTime', type: 'uint256' },
    { name: 'endTime', type: 'uint256' },
    { name: 'zoneHash', type: 'bytes32' },
    { name: 'salt', type: 'uint256' },
    { name: 'conduitKey', type: 'bytes32' },
    { name: 'counter', type: 'uint256' },
  ],
  OfferItem: [
    { name: 'itemType', type: 'uint8' },
    { name: 'token', type: 'address' },
    { name: 'identifierOrCriteria', type: 'uint256' },
    { name: 'startAmount', type: 'uint256' },
    { name: 'endAmount', type: 'uint256' },
  ],
  ConsiderationItem: [
    { name: 'itemType', type: 'uint8' },
    { name: 'token', type: 'address' },
    { name: 'identifierOrCriteria', type: 'uint256' },
    { name: 'startAmount', type: 'uint256' },
    { name: 'endAmount', type: 'uint256' },
    { name: 'recipient', type: 'address' },
  ],
} satisfies Record<string, Field[]>;
/** keccak256 of Seaport's OrderComponents type string (`_ORDER_TYPEHASH` in Seaport's contracts). */
export const SEAPORT_ORDER_TYPEHASH = '0xfa445660b7e21515a59617fcd68910b487aa5808b8abda3d78bc85df364b2c2f';
const SEAPORT_DOMAIN = {
  name: 'Seaport',
  version: '1.6',
  chainId: 1,
  verifyingContract: '0x0000000000000068F116a894984e2DB1123eB395' as const,
};

function seaportComponents(offers: number, considerations: number, seed = 1) {
  const offerer = addr(seed);
  return {
    offerer,
    zone: '0x0000000000000000000000000000000000000000',
    offer: Array.from({ length: offers }, (_, i) => ({
      itemType: 2,
      token: addr(1000 + (i % 7)),
      identifierOrCriteria: String(10_000 + i),
      startAmount: '1',
      endAmount: '1',
    })),
    consideration: Array.from({ length: considerations }, (_, i) => ({
      itemType: i % 3 === 0 ? 0 : 1,
      token: i % 3 === 0 ? '0x0000000000000000000000000000000000000000' : '0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2',
      identifierOrCriteria: '0',
      startAmount: String(975_000_000_000_000_000n + BigInt(i)),
      endAmount: String(975_000_000_000_000_000n + BigInt(i)),
      recipient: i % 2 === 0 ? offerer : '0x0000a26b00c1F0DF003000390027140000fAa719',
    })),
    orderType: 0,
    startTime: '1718000000',
    endTime: '1720592000',
    zoneHash: hex(0, 32),
    salt: '0x360c6ebe0000000000000000000000000000000000000000d1bc3cc2b0b0f5a3',
    conduitKey: '0x0000007b02230091a7ed01230072f7006a004d60a8d4e71d599b8104250f0000',
    counter: '0',
  };
}

/** A Seaport order with `offers` NFTs offered and `considerations` payments (fees, royalties, proceeds). */
export function seaportOrder(offers = 30, considerations = 30): TypedDataInput {
  return {
    domain: SEAPORT_DOMAIN,
    types: SEAPORT_TYPES,
    primaryType: 'OrderComponents',
    message: seaportComponents(offers, considerations),
  };
}

/** A Seaport bulk order (BulkOrder: a complete binary tree of 2^height orders, signed once). */
export function seaportBulkOrder(height: number, offers = 1, considerations = 3): TypedDataInput {
  const tree = (h: number, seed: number): unknown =>
    h === 0 ? seaportComponents(offers, considerations, seed) : [tree(h - 1, seed * 2), tree(h - 1, seed * 2 + 1)];
  return {
    domain: SEAPORT_DOMAIN,
    types: { BulkOrder: [{ name: 'tree', type: `OrderComponents${'[2]'.repeat(height)}` }], ...SEAPORT_TYPES },
    primaryType: 'BulkOrder',
    message: { tree: tree(height, 1) },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Permit2 (Uniswap): AllowanceTransfer's PermitBatch.

export const PERMIT2 = '0x000000000022D473030F116dDEE9F6B43aC78BA3' as const;
/** keccak256 of `PermitBatch(PermitDetails[] details,...)PermitDetails(...)` (Permit2's PERMIT_BATCH_TYPEHASH). */
export const PERMIT_BATCH_TYPEHASH = '0xaf1b0d30d2cab0380e68f0689007e3254993c596f2fdd0aaa7f4d04f79440863';

export function permit2Batch(tokens = 20): TypedDataInput {
  return {
    domain: { name: 'Permit2', chainId: 1, verifyingContract: PERMIT2 },
    types: {
      PermitBatch: [
        { name: 'details', type: 'PermitDetails[]' },
        { name: 'spender', type: 'address' },
        { name: 'sigDeadline', type: 'uint256' },
      ],
      PermitDetails: [
        { name: 'token', type: 'address' },
        { name: 'amount', type: 'uint160' },
        { name: 'expiration', type: 'uint48' },
        { name: 'nonce', type: 'uint48' },
      ],
    },
    primaryType: 'PermitBatch',
    message: {
      details: Array.from({ length: tokens }, (_, i) => ({
        token: addr(2000 + i),
        amount: '1461501637330902918203684832716283019655932542975',
        expiration: '1720592000',
        nonce: String(i),
      })),
      spender: '0x3fC91A3afd70395Cd496C647d5a6CC9D4B2b7FAD',
      sigDeadline: '1718001800',
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// UniswapX: orders are signed as Permit2 PermitWitnessTransferFrom with the order as witness.

const ORDER_INFO: Field[] = [
  { name: 'reactor', type: 'address' },
  { name: 'swapper', type: 'address' },
  { name: 'nonce', type: 'uint256' },
  { name: 'deadline', type: 'uint256' },
  { name: 'additionalValidationContract', type: 'address' },
  { name: 'additionalValidationData', type: 'bytes' },
];
const DUTCH_OUTPUT: Field[] = [
  { name: 'token', type: 'address' },
  { name: 'startAmount', type: 'uint256' },
  { name: 'endAmount', type: 'uint256' },
  { name: 'recipient', type: 'address' },
];
const TOKEN_PERMISSIONS: Field[] = [
  { name: 'token', type: 'address' },
  { name: 'amount', type: 'uint256' },
];
const witnessTransfer = (witnessType: string): Field[] => [
  { name: 'permitted', type: 'TokenPermissions' },
  { name: 'spender', type: 'address' },
  { name: 'nonce', type: 'uint256' },
  { name: 'deadline', type: 'uint256' },
  { name: 'witness', type: witnessType },
];

/** The contracts' type strings (ExclusiveDutchOrderLib / V2DutchOrderLib ORDER_TYPE), for the tests. */
export const UNISWAPX_TYPE_STRINGS = {
  ExclusiveDutchOrder:
    'ExclusiveDutchOrder(OrderInfo info,uint256 decayStartTime,uint256 decayEndTime,address exclusiveFiller,uint256 exclusivityOverrideBps,address inputToken,uint256 inputStartAmount,uint256 inputEndAmount,DutchOutput[] outputs)' +
    'DutchOutput(address token,uint256 startAmount,uint256 endAmount,address recipient)' +
    'OrderInfo(address reactor,address swapper,uint256 nonce,uint256 deadline,address additionalValidationContract,bytes additionalValidationData)',
  V2DutchOrder:
    'V2DutchOrder(OrderInfo info,address cosigner,address baseInputToken,uint256 baseInputStartAmount,uint256 baseInputEndAmount,DutchOutput[] baseOutputs)' +
    'DutchOutput(address token,uint256 startAmount,uint256 endAmount,address recipient)' +
    'OrderInfo(address reactor,address swapper,uint256 nonce,uint256 deadline,address additionalValidationContract,bytes additionalValidationData)',
};

const swapper = '0x8c1b2c4f6a0ad0d1c4e2b0fe0ee5c8df7a1c6b5e';
const outputs = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    token: i === 0 ? '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48' : '0xdAC17F958D2ee523a2206206994597C13D831ec7',
    startAmount: String(2_000_000_000 - i * 1000),
    endAmount: String(1_990_000_000 - i * 1000),
    recipient: i === 0 ? swapper : '0x27213E28D7fDA5c57Fe9e5dD923818DBCcf71c47',
  }));

/** An ExclusiveDutchOrder (UniswapX v1) as Permit2 witness. */
export function uniswapXExclusiveDutchOrder(nOutputs = 2): TypedDataInput {
  return {
    domain: { name: 'Permit2', chainId: 1, verifyingContract: PERMIT2 },
    types: {
      PermitWitnessTransferFrom: witnessTransfer('ExclusiveDutchOrder'),
      TokenPermissions: TOKEN_PERMISSIONS,
      ExclusiveDutchOrder: [
        { name: 'info', type: 'OrderInfo' },
        { name: 'decayStartTime', type: 'uint256' },
        { name: 'decayEndTime', type: 'uint256' },
        { name: 'exclusiveFiller', type: 'address' },
        { name: 'exclusivityOverrideBps', type: 'uint256' },
        { name: 'inputToken', type: 'address' },
        { name: 'inputStartAmount', type: 'uint256' },
        { name: 'inputEndAmount', type: 'uint256' },
        { name: 'outputs', type: 'DutchOutput[]' },
      ],
      OrderInfo: ORDER_INFO,
      DutchOutput: DUTCH_OUTPUT,
    },
    primaryType: 'PermitWitnessTransferFrom',
    message: {
      permitted: { token: '0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2', amount: '1000000000000000000' },
      spender: '0x6000da47483062A0D734Ba3dc7576Ce6A0B645C4',
      nonce: '1993353164669688581970088190602701610467397285665',
      deadline: '1718000120',
      witness: {
        info: {
          reactor: '0x6000da47483062A0D734Ba3dc7576Ce6A0B645C4',
          swapper,
          nonce: '1993353164669688581970088190602701610467397285665',
          deadline: '1718000120',
          additionalValidationContract: '0x0000000000000000000000000000000000000000',
          additionalValidationData: '0x',
        },
        decayStartTime: '1718000060',
        decayEndTime: '1718000120',
        exclusiveFiller: '0xff8Ba4D1fC3762f6154cc942CCF30049A2A0cEC6',
        exclusivityOverrideBps: '100',
        inputToken: '0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2',
        inputStartAmount: '1000000000000000000',
        inputEndAmount: '1000000000000000000',
        outputs: outputs(nOutputs),
      },
    },
  };
}

/** A V2DutchOrder (UniswapX v2, cosigned) as Permit2 witness. */
export function uniswapXV2DutchOrder(nOutputs = 2): TypedDataInput {
  return {
    domain: { name: 'Permit2', chainId: 1, verifyingContract: PERMIT2 },
    types: {
      PermitWitnessTransferFrom: witnessTransfer('V2DutchOrder'),
      TokenPermissions: TOKEN_PERMISSIONS,
      V2DutchOrder: [
        { name: 'info', type: 'OrderInfo' },
        { name: 'cosigner', type: 'address' },
        { name: 'baseInputToken', type: 'address' },
        { name: 'baseInputStartAmount', type: 'uint256' },
        { name: 'baseInputEndAmount', type: 'uint256' },
        { name: 'baseOutputs', type: 'DutchOutput[]' },
      ],
      OrderInfo: ORDER_INFO,
      DutchOutput: DUTCH_OUTPUT,
    },
    primaryType: 'PermitWitnessTransferFrom',
    message: {
      permitted: { token: '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48', amount: '5000000000' },
      spender: '0x00000011F84B9aa48e5f8aA8B9897600006289Be',
      nonce: '1993353164669688581970088190602701610467397285666',
      deadline: '1718000300',
      witness: {
        info: {
          reactor: '0x00000011F84B9aa48e5f8aA8B9897600006289Be',
          swapper,
          nonce: '1993353164669688581970088190602701610467397285666',
          deadline: '1718000300',
          additionalValidationContract: '0x0000000000000000000000000000000000000000',
          additionalValidationData: '0x',
        },
        cosigner: '0x4449cd34d1eb1fedcf02a1be3834ffde8e6a6180',
        baseInputToken: '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48',
        baseInputStartAmount: '5000000000',
        baseInputEndAmount: '5000000000',
        baseOutputs: outputs(nOutputs),
      },
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Safe (Gnosis Safe ≥ 1.3): SafeTx, domain {chainId, verifyingContract}, here a MultiSend of token transfers.

export const SAFE_TX_TYPEHASH = '0xbb8310d486368db6bd6f849402fdd73ad53d316b5a4b2644ad6efe0f941286d8';

export function safeTransaction(transfers = 40): TypedDataInput {
  // multiSend(bytes transactions): each packed as operation(1) ‖ to(20) ‖ value(32) ‖ dataLength(32) ‖ data.
  const transfer = (i: number) => `a9059cbb${'0'.repeat(24)}${addr(3000 + i).slice(2)}${(1_000_000 + i).toString(16).padStart(64, '0')}`;
  const packed = Array.from(
    { length: transfers },
    (_, i) =>
      `00${'dAC17F958D2ee523a2206206994597C13D831ec7'.toLowerCase()}${'0'.repeat(64)}${(68).toString(16).padStart(64, '0')}${transfer(i)}`,
  ).join('');
  const bytesLen = packed.length / 2;
  const data =
    `0x8d80ff0a${(32).toString(16).padStart(64, '0')}${bytesLen.toString(16).padStart(64, '0')}${packed}${'0'.repeat((64 - (packed.length % 64)) % 64)}` as `0x${string}`;
  return {
    domain: { chainId: 1, verifyingContract: '0x849D52316331967b6fF1198e5E32A0eB168D039d' },
    types: {
      EIP712Domain: [
        { name: 'chainId', type: 'uint256' },
        { name: 'verifyingContract', type: 'address' },
      ],
      SafeTx: [
        { name: 'to', type: 'address' },
        { name: 'value', type: 'uint256' },
        { name: 'data', type: 'bytes' },
        { name: 'operation', type: 'uint8' },
        { name: 'safeTxGas', type: 'uint256' },
        { name: 'baseGas', type: 'uint256' },
        { name: 'gasPrice', type: 'uint256' },
        { name: 'gasToken', type: 'address' },
        { name: 'refundReceiver', type: 'address' },
        { name: 'nonce', type: 'uint256' },
      ],
    },
    primaryType: 'SafeTx',
    message: {
      to: '0x40A2aCCbd92BCA938b02010E17A5b8929b49130D', // MultiSendCallOnly 1.3.0
      value: '0',
      data,
      operation: 1,
      safeTxGas: '0',
      baseGas: '0',
      gasPrice: '0',
      gasToken: '0x0000000000000000000000000000000000000000',
      refundReceiver: '0x0000000000000000000000000000000000000000',
      nonce: '42',
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Attack shapes (each must be refused by the budget).

/** The reported attack: `types` chained T0 → T1[] → … → T(n-1), and `instances` structs with empty arrays. */
export function chainedTypes(nTypes = 250, instances = 4000, nameLength = 1): TypedDataInput {
  const types: Record<string, Field[]> = {};
  const name = 'a'.repeat(nameLength);
  for (let i = 0; i < nTypes; i++) types[`T${i}`] = i < nTypes - 1 ? [{ name, type: `T${i + 1}[]` }] : [{ name: 'x', type: 'uint256' }];
  const chunks = Math.ceil(instances / 1000);
  types.P = Array.from({ length: chunks }, (_, c) => ({ name: `items${c}`, type: 'T0[]' }));
  const message: Record<string, unknown> = {};
  for (let c = 0; c < chunks; c++)
    message[`items${c}`] = Array.from({ length: Math.min(1000, instances - c * 1000) }, () => ({ [name]: [] }));
  return { types, primaryType: 'P', message };
}

/** Thousands of empty arrays (each one a keccak and an ABI encoding), `perField` per field over `fields` fields. */
export function emptyArrays(fields = 30, perField = 1000): TypedDataInput {
  const P = Array.from({ length: fields }, (_, i) => ({ name: `f${i}`, type: 'uint256[][]' }));
  const message = Object.fromEntries(P.map((f) => [f.name, Array.from({ length: perField }, () => [])]));
  return { types: { P }, primaryType: 'P', message };
}

/** A recursive type nested `depth` levels deep. */
export function deepNesting(depth = 1000): TypedDataInput {
  let node: Record<string, unknown> = { v: '1', children: [] };
  for (let i = 1; i < depth; i++) node = { v: String(i), children: [node] };
  return {
    types: {
      Node: [
        { name: 'v', type: 'uint256' },
        { name: 'children', type: 'Node[]' },
      ],
    },
    primaryType: 'Node',
    message: node,
  };
}

/** One array of `length` uint256 elements. */
export function hugeArray(length = 100_000): TypedDataInput {
  return {
    types: { P: [{ name: 'values', type: 'uint256[]' }] },
    primaryType: 'P',
    message: { values: Array.from({ length }, (_, i) => String(i)) },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Requests at the budget's limits (the benchmark's worst cases; each passes the budget).

/**
 * Everything at once: as many struct values as allowed, each with as many string fields as the value budget
 * leaves (each string is hashed on its own), and field names as long as the type-string budget and
 * `maxBytes` of JSON allow (the enclave's frames are at most 1 MiB).
 */
export function atLimitStructs(limits: TypedDataLimits = TYPED_DATA_LIMITS, maxBytes = 1_000_000): TypedDataInput {
  const n = limits.maxStructInstances - 2; // the domain and the message are struct values too
  const arrays = Math.ceil(n / limits.maxArrayLength);
  const k = Math.max(1, Math.min(limits.maxFieldsPerType, Math.floor((limits.maxValues - 2 - arrays - n) / n)));
  const perInstance = Math.floor((limits.maxTypeStringChars * 0.97) / n);
  const build = (nameLength: number): TypedDataInput => {
    const S: Field[] = Array.from({ length: k }, (_, i) => ({ name: `${'s'.repeat(nameLength)}${i}`, type: 'string' }));
    const P = Array.from({ length: arrays }, (_, i) => ({ name: `s${i}`, type: 'S[]' }));
    const item = (j: number) => Object.fromEntries(S.map((f, x) => [f.name, `${j}.${x}`]));
    const message: Record<string, unknown> = {};
    for (let i = 0; i < arrays; i++)
      message[`s${i}`] = Array.from({ length: Math.min(limits.maxArrayLength, n - i * limits.maxArrayLength) }, (_, j) => item(j));
    return { domain: { name: 'Budget', chainId: 1 }, types: { P, S }, primaryType: 'P', message };
  };
  let nameLength = Math.max(2, Math.min(250, Math.floor((perInstance - 3) / k) - 'string ,'.length - 3));
  let td = build(nameLength);
  for (let size = JSON.stringify(td).length; size > maxBytes && nameLength > 2; size = JSON.stringify(td).length) {
    nameLength = Math.max(2, Math.floor(nameLength * (maxBytes / size) * 0.98));
    td = build(nameLength);
  }
  return td;
}

/** As many values as allowed, all strings in arrays (each hashed on its own). */
export function atLimitValues(limits: TypedDataLimits = TYPED_DATA_LIMITS): TypedDataInput {
  const per = limits.maxArrayLength;
  const arrays = Math.min(limits.maxFieldsPerType, Math.floor((limits.maxValues - 2) / (per + 1)));
  const P = Array.from({ length: arrays }, (_, i) => ({ name: `a${i}`, type: 'string[]' }));
  const message = Object.fromEntries(P.map((f, i) => [f.name, Array.from({ length: per }, (_, j) => `value ${i}/${j}`)]));
  return { domain: { name: 'Budget', chainId: 1 }, types: { P }, primaryType: 'P', message };
}

/** The largest type strings: a type of maxFieldsPerType long-named fields, repeated while the character budget lasts. */
export function atLimitTypeStrings(limits: TypedDataLimits = TYPED_DATA_LIMITS): TypedDataInput {
  const Big: Field[] = Array.from({ length: limits.maxFieldsPerType }, (_, i) => ({ name: `${'f'.repeat(250)}${i}`, type: 'uint8' }));
  const perInstance = 'Big()'.length + Big.reduce((n, f) => n + f.type.length + f.name.length + 2, 0);
  const copies = Math.min(limits.maxArrayLength, Math.floor((limits.maxTypeStringChars * 0.97) / perInstance));
  const value = Object.fromEntries(Big.map((f, i) => [f.name, i]));
  return {
    domain: { name: 'Budget', chainId: 1 },
    types: { P: [{ name: 'items', type: 'Big[]' }], Big },
    primaryType: 'P',
    message: { items: Array.from({ length: copies }, () => ({ ...value })) },
  };
}
