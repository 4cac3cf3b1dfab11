/**
 * What can be signed (README.md, "Caller API"): the request shapes shared by the caller API (parent) and
 * `keys.sign` (enclave). Both sides validate with the same strict schemas; the enclave, which trusts nothing the
 * parent says, re-validates and derives the hash itself from the structured input.
 *
 * Field names follow viem (`TransactionSerializable`, `UserOperation` 0.6/0.7/0.8, `AuthorizationRequest`);
 * integers are decimal strings, 0x hex, or (when small) JSON numbers, and come out as bigint or number.
 */
import { z } from 'zod';
import type { ErrorCode, ErrorDetails } from '../errors';
import type { SignRequestType } from './request-types';
import { address as addressSchema, hex32 } from '../schema';
import {
  checkTypedDataBudget,
  domainFieldsOf,
  TYPED_DATA_LIMITS,
  type TypedDataLimits,
  type TypedDataShape,
  type TypedDataUsage,
} from './typed-data-budget';

const HEX = /^0x[0-9a-fA-F]*$/;
const MAX_DATA_HEX = 2 * 128 * 1024 + 2; // 128 KiB of calldata / init code / message bytes

export const hexData = z
  .string()
  .max(MAX_DATA_HEX, 'expected at most 128 KiB of hex data')
  .regex(HEX, 'expected 0x-prefixed hex')
  .refine((s) => s.length % 2 === 0, 'expected an even number of hex digits') as z.ZodType<`0x${string}`>;
// The shared shapes (../schema.ts), typed as the 0x strings viem takes.
export const bytes32 = hex32 as unknown as z.ZodType<`0x${string}`>;
export const address = addressSchema as unknown as z.ZodType<`0x${string}`>;

const UINT256_MAX = (1n << 256n) - 1n;

/** An unsigned integer as decimal string, 0x hex, or safe JSON integer; parsed to bigint within `max`. */
function uint(max: bigint, what: string) {
  return z.union([z.string().max(80), z.number().int().nonnegative().safe()]).transform((v, ctx) => {
    const s = String(v);
    if (!/^(0x[0-9a-fA-F]+|0|[1-9][0-9]*)$/.test(s)) {
      ctx.addIssue({ code: 'custom', message: `expected ${what} as a decimal string or 0x hex` });
      return z.NEVER;
    }
    const n = BigInt(s);
    if (n > max) {
      ctx.addIssue({ code: 'custom', message: `${what} out of range` });
      return z.NEVER;
    }
    return n;
  });
}

const uint256 = uint(UINT256_MAX, 'a uint256');
const uint64 = uint((1n << 64n) - 1n, 'a uint64');
/** Chain ids and nonces must fit a JavaScript number for viem. */
const safeUint = (what: string) => uint(BigInt(Number.MAX_SAFE_INTEGER), what).transform((n) => Number(n));
const chainId = safeUint('a chain id').refine((n) => n > 0, 'chain id must be positive');

const accessList = z
  .array(z.strictObject({ address, storageKeys: z.array(bytes32).max(1000) }))
  .max(1000)
  .optional();

const signedAuthorization = z.strictObject({
  address,
  chainId: safeUint('a chain id'),
  nonce: safeUint('a nonce'),
  r: bytes32,
  s: bytes32,
  yParity: z.union([z.literal(0), z.literal(1)]),
});

const txCommon = {
  chainId,
  nonce: safeUint('a nonce'),
  to: address.nullable().optional(),
  value: uint256.optional(),
  data: hexData.optional(),
  gas: uint64.optional(),
};

/** Blobs one EIP-4844 transaction may carry: EIP-7594's MAX_BLOBS_PER_TX (Osaka), viem's limit too. */
export const MAX_BLOBS_PER_TRANSACTION = 6;
/** A blob's versioned hash: 32 bytes, the first the version, 0x01 (VERSIONED_HASH_VERSION_KZG, EIP-4844). */
const blobVersionedHash = bytes32.refine(
  (h) => h.startsWith('01', 2),
  'expected a blob versioned hash: 32 bytes whose first byte is the version 0x01 (VERSIONED_HASH_VERSION_KZG, EIP-4844)',
);

export const TransactionSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('legacy'), ...txCommon, gasPrice: uint256 }),
  z.strictObject({ type: z.literal('eip2930'), ...txCommon, gasPrice: uint256, accessList }),
  z.strictObject({ type: z.literal('eip1559'), ...txCommon, maxFeePerGas: uint256, maxPriorityFeePerGas: uint256, accessList }),
  z.strictObject({
    type: z.literal('eip7702'),
    ...txCommon,
    maxFeePerGas: uint256,
    maxPriorityFeePerGas: uint256,
    accessList,
    authorizationList: z.array(signedAuthorization).min(1).max(64),
  }),
  /*
   * A blob transaction is signed over its blob versioned hashes; the blobs, commitments and proofs (the
   * sidecars) are not part of what is signed, so they are not taken: the caller wraps the signed transaction
   * with them to broadcast it (README.md, "Caller API").
   */
  z.strictObject({
    type: z.literal('eip4844'),
    ...txCommon,
    to: z
      .string({
        error: (issue) =>
          issue.input == null ? 'an EIP-4844 transaction cannot create a contract: `to` must name the recipient' : undefined,
      })
      .pipe(addressSchema) as unknown as z.ZodType<`0x${string}`>,
    maxFeePerGas: uint256,
    maxPriorityFeePerGas: uint256,
    maxFeePerBlobGas: uint256,
    accessList,
    blobVersionedHashes: z
      .array(blobVersionedHash)
      .min(1, 'a blob transaction carries at least one blob: expected its versioned hashes')
      .max(MAX_BLOBS_PER_TRANSACTION, `a transaction carries at most ${MAX_BLOBS_PER_TRANSACTION} blobs (EIP-7594)`),
  }),
]);

export const AuthorizationSchema = z.strictObject({ chainId: safeUint('a chain id'), address, nonce: safeUint('a nonce') });

const userOpCommon = {
  sender: address,
  nonce: uint256,
  callData: hexData,
  callGasLimit: uint256,
  verificationGasLimit: uint256,
  preVerificationGas: uint256,
  maxFeePerGas: uint256,
  maxPriorityFeePerGas: uint256,
  /** Ignored: the signature is what is being produced. */
  signature: hexData.optional(),
};

export const UserOperationV06Schema = z.strictObject({
  ...userOpCommon,
  initCode: hexData.optional(),
  paymasterAndData: hexData.optional(),
});
export const UserOperationV07Schema = z.strictObject({
  ...userOpCommon,
  factory: address.optional(),
  factoryData: hexData.optional(),
  paymaster: address.optional(),
  paymasterVerificationGasLimit: uint256.optional(),
  paymasterPostOpGasLimit: uint256.optional(),
  paymasterData: hexData.optional(),
});

/** EntryPoint 0.8's EIP-7702 marker: a `factory` of 0x7702 (padded) says the sender is an EIP-7702 account. */
export const EIP7702_FACTORY_MARKER = '0x7702000000000000000000000000000000000000';
/**
 * The sender's EIP-7702 authorization (viem's `authorization`): only its `address`, the delegate, enters the
 * userOpHash, in place of the marker (the EntryPoint reads the sender's delegate from its code). Its signature,
 * when given, is not read: it is the bundler's to send.
 */
const userOperationAuthorization = z.strictObject({
  address,
  chainId: safeUint('a chain id'),
  nonce: safeUint('a nonce'),
  r: bytes32.optional(),
  s: bytes32.optional(),
  yParity: z.union([z.literal(0), z.literal(1)]).optional(),
});
/**
 * EntryPoint 0.8 takes 0.7's packed fields, hashed under EIP-712, and EIP-7702 senders. viem hashes a
 * 0x7702 factory without an authorization as the marker itself, which no EntryPoint does, and ignores an
 * authorization with any other factory: both are refused rather than signed over a hash the chain does not use.
 */
export const UserOperationV08Schema = z
  .strictObject({ ...UserOperationV07Schema.shape, authorization: userOperationAuthorization.optional() })
  .superRefine((op, ctx) => {
    const eip7702 = op.factory?.toLowerCase() === EIP7702_FACTORY_MARKER;
    if (eip7702 && !op.authorization)
      ctx.addIssue({
        code: 'custom',
        path: ['authorization'],
        message: `an EIP-7702 user operation (factory ${EIP7702_FACTORY_MARKER}) needs the sender's authorization: its delegate address is part of the userOpHash`,
      });
    if (!eip7702 && op.authorization)
      ctx.addIssue({
        code: 'custom',
        path: ['authorization'],
        message: `an authorization applies only to an EIP-7702 user operation, whose factory is ${EIP7702_FACTORY_MARKER}`,
      });
  });

const typedDataField = z.strictObject({ name: z.string().min(1).max(256), type: z.string().min(1).max(256) });
/** Typed data's shape and its domain rule, without the budget (TypedDataSchema adds it; a batch adds its own). */
const TypedDataShapeSchema = z
  .strictObject({
    domain: z
      .strictObject({
        name: z.string().max(1024).optional(),
        version: z.string().max(256).optional(),
        chainId: safeUint('a chain id').optional(),
        verifyingContract: address.optional(),
        salt: bytes32.optional(),
      })
      .optional(),
    types: z.record(z.string().min(1).max(256), z.array(typedDataField).max(256)),
    primaryType: z.string().min(1).max(256),
    message: z.record(z.string(), z.unknown()),
  })
  .superRefine((td, ctx) => {
    // A caller-supplied EIP712Domain replaces the type viem derives from `domain`: a field present in `domain`
    // but missing from it (chainId, verifyingContract) would silently drop out of the hash. Only the exact
    // canonical type of the domain given is accepted (or none, and it is derived).
    const given = Object.hasOwn(td.types, 'EIP712Domain') ? td.types.EIP712Domain : undefined;
    if (given) {
      const expected = domainFieldsOf(td.domain);
      const same = given.length === expected.length && given.every((f, i) => f.name === expected[i]?.name && f.type === expected[i]?.type);
      if (!same) {
        const canonical = `EIP712Domain(${expected.map((f) => `${f.type} ${f.name}`).join(',')})`;
        ctx.addIssue({
          code: 'custom',
          path: ['types', 'EIP712Domain'],
          // The budget's check of the message against its types (below) would only add noise to this one.
          continue: false,
          message: `must list exactly the fields present in domain, in the canonical order (name, version, chainId, verifyingContract, salt) with their canonical types: ${canonical}; or leave EIP712Domain out of types`,
        });
        return;
      }
    }
  });

/** The budget and the message checked against its types (typed-data-budget.ts), before anything is hashed. */
function budgetIssue(
  td: TypedDataShape,
  limits: TypedDataLimits,
  ctx: z.RefinementCtx,
  at: Array<string | number> = [],
  note = '',
): TypedDataUsage | undefined {
  const verdict = checkTypedDataBudget(td, limits);
  if (verdict.ok) return verdict.usage;
  const { path, message, expected, required } = verdict;
  ctx.addIssue({
    code: 'custom',
    path: [...at, ...path],
    message: message + note,
    ...(expected ? { params: { expected, ...(required ? { required } : {}) } } : {}),
  });
  return undefined;
}

export const TypedDataSchema = TypedDataShapeSchema.superRefine((td, ctx) => {
  budgetIssue(td, TYPED_DATA_LIMITS, ctx);
});

/** The sign request union, with `typedData` checked by the schema given (one request's budget, or none in a batch). */
const signRequestSchemaWith = (typedData: typeof TypedDataShapeSchema) =>
  z.discriminatedUnion('type', [
    z.strictObject({ type: z.literal('digest'), digest: bytes32 }),
    z.strictObject({ type: z.literal('message'), message: z.union([z.string().max(128 * 1024), z.strictObject({ raw: hexData })]) }),
    z.strictObject({ type: z.literal('typedData'), typedData }),
    z.strictObject({ type: z.literal('transaction'), transaction: TransactionSchema }),
    z
      .strictObject({
        type: z.literal('authorization'),
        authorization: AuthorizationSchema,
        /** Required (true) to sign an authorization with chain id 0, which is valid on every chain (EIP-7702). */
        allowAllChains: z.boolean().optional(),
      })
      .superRefine((req, ctx) => {
        if (req.authorization.chainId === 0 && req.allowAllChains !== true) {
          ctx.addIssue({
            code: 'custom',
            path: ['authorization', 'chainId'],
            message: 'chain id 0 makes the delegation valid on every chain; refused unless the request also says "allowAllChains": true',
          });
        }
      }),
    z.discriminatedUnion('version', [
      z.strictObject({
        type: z.literal('userOperation'),
        version: z.literal('0.6'),
        chainId,
        entryPoint: address,
        userOperation: UserOperationV06Schema,
      }),
      z.strictObject({
        type: z.literal('userOperation'),
        version: z.literal('0.7'),
        chainId,
        entryPoint: address,
        userOperation: UserOperationV07Schema,
      }),
      z.strictObject({
        type: z.literal('userOperation'),
        version: z.literal('0.8'),
        chainId,
        entryPoint: address,
        userOperation: UserOperationV08Schema,
      }),
    ]),
  ]);

export const SignRequestSchema = signRequestSchemaWith(TypedDataSchema);

/**
 * Batch signing (README.md, "Caller API"): at most SIGN_BATCH_MAX_REQUESTS requests of one key, each a
 * SignRequestSchema request (its own limits and the typed-data budget), in a body of at most
 * SIGN_BATCH_MAX_BYTES. The enclave's frames hold one such batch with its key's blob and records
 * (ENCLAVE_MAX_FRAME_BYTES, shared/src/enclave-api.ts).
 */
export const SIGN_BATCH_MAX_REQUESTS = 100;
export const SIGN_BATCH_MAX_BYTES = 1024 * 1024;
/** What typed data costs to check and hash (the limits on one structure's size stay per request). */
const COST_LIMITS = ['maxStructInstances', 'maxValues', 'maxTypeStringChars'] as const;
const COST_USAGE = { maxStructInstances: 'structInstances', maxValues: 'values', maxTypeStringChars: 'typeStringChars' } as const;

/**
 * The typed data of a whole batch shares ONE request's budget for what costs work (struct values, values, type-string
 * characters), so a batch costs at most what the costliest single request does to check (on the parent's and the
 * enclave's main threads) and to hash; each request is checked against what the earlier ones left, in order, and
 * the check stops at the first that does not fit.
 */
export const SignBatchRequestsSchema = z
  .array(signRequestSchemaWith(TypedDataShapeSchema))
  .min(1, 'expected at least one request')
  .max(SIGN_BATCH_MAX_REQUESTS, `expected at most ${SIGN_BATCH_MAX_REQUESTS} requests`)
  .superRefine((requests, ctx) => {
    const left: TypedDataLimits = { ...TYPED_DATA_LIMITS };
    for (const [i, request] of requests.entries()) {
      if (request.type !== 'typedData') continue;
      const note = i > 0 ? " (the typed data of a batch shares one request's budget: sign large typed data on its own)" : '';
      const usage = budgetIssue(request.typedData, left, ctx, [i, 'typedData'], note);
      if (!usage) return;
      for (const limit of COST_LIMITS) left[limit] -= usage[COST_USAGE[limit]];
    }
  });

export type SignRequest = z.output<typeof SignRequestSchema>;
export type SignRequestInput = z.input<typeof SignRequestSchema>;
export type SignType = SignRequest['type'];

export interface SignResult {
  /** r ‖ s ‖ v, 65 bytes, v 27/28. */
  signature: `0x${string}`;
  r: `0x${string}`;
  s: `0x${string}`;
  v: 27 | 28;
  yParity: 0 | 1;
  /** The 32-byte digest that was signed. */
  hash: `0x${string}`;
  address: `0x${string}`;
  /** For transactions: the signed, serialized transaction (EIP-4844: without the blob sidecars). */
  serializedTransaction?: `0x${string}`;
  /** For transactions: keccak-256 of `serializedTransaction`, the hash the chain knows the transaction by. */
  transactionHash?: `0x${string}`;
  /** For user operations: the EntryPoint's userOpHash (signed as is in 0.8; 0.6 and 0.7 sign its EIP-191 hash). */
  userOperationHash?: `0x${string}`;
}

/** One answer of a batch, in the request's place: its result, or the error a single sign would have answered. */
export type SignBatchItem =
  { result: SignResult } | { error: { code: ErrorCode; message: string; retryable: boolean; details?: ErrorDetails } };

/** Compile-time check: the schema's variants are exactly SIGN_REQUEST_TYPES. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const requestTypesMatch: Same<SignType, SignRequestType> = true;
void requestTypesMatch;
