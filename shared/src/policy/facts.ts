/**
 * The facts a policy is evaluated on (docs/POLICIES.md, "Facts"), read from a sign request after the request
 * schema parsed it: never from the caller's raw JSON, so a fact is what the enclave signs. Reading never
 * throws on a parsed request; what cannot be read is absent, and a condition on an absent fact does not hold.
 *
 * Calldata is decoded with viem's ABI decoder, after the selector says what to decode, and only within bounds
 * (USER_OPERATION_DECODE_LIMITS): the enclave's main thread runs this for every request of a project with a
 * policy, so what a request can make it decode is bounded (the heads of at most 64 calls, well under a
 * millisecond; scripts/bench.ts `--only policy` measures it).
 */
import { decodeAbiParameters, type AbiParameter, type Hex } from 'viem';
import type { SignRequest } from '../signing/schema';
import type { RequestFacts } from './decision';
import type { MessageKind } from './schema';

/** The calldata selectors read here (checked against their signatures with viem's toFunctionSelector in the tests). */
export const SELECTORS = {
  /** ERC-20 transfer(address,uint256) */
  transfer: '0xa9059cbb',
  /** ERC-20 approve(address,uint256) */
  approve: '0x095ea7b3',
  /** execute(address,uint256,bytes): SimpleAccount 0.6 / 0.7 / 0.8, Coinbase Smart Wallet */
  execute: '0xb61d27f6',
  /** executeBatch(address[],bytes[]): SimpleAccount 0.6 */
  executeBatchV06: '0x18dfb3c7',
  /** executeBatch(address[],uint256[],bytes[]): SimpleAccount 0.7 */
  executeBatchV07: '0x47e1da2a',
  /** executeBatch((address,uint256,bytes)[]): SimpleAccount 0.8 (BaseAccount's Call[]), Coinbase Smart Wallet */
  executeBatchCalls: '0x34fcd5be',
} as const;

/** Beyond these, a user operation's calls are not decoded: its targets and value are unknown (absent). */
export const USER_OPERATION_DECODE_LIMITS = { maxCallDataBytes: 16 * 1024, maxCalls: 64 } as const;

/** Blob gas one blob of an EIP-4844 transaction uses (GAS_PER_BLOB). */
export const GAS_PER_BLOB = 131_072n;

/** ERC-20 calldata: selector, a 32-byte address word, a 32-byte amount; nothing more. */
const ERC20_CALLDATA_BYTES = 4 + 32 + 32;
/*
 * What is decoded is only what the facts need, in layouts the ABI makes identical to the real parameters:
 * - an address is read as its 32-byte word (`bytes32`): no EIP-55 checksum is computed (a keccak per address;
 *   facts are lower-case), and a word with non-zero high bytes is refused (ABI coder v2 reverts on it) rather
 *   than truncated to its low 20 bytes;
 * - a `bytes` payload is never decoded: a `bytes[]` is read as the `uint256[]` of its element offsets (the
 *   same words: its length, then one word per element), and trailing `bytes` parameters are left out. Decoding
 *   payloads would copy them into hex strings, and offsets that share one tail multiply that work (viem bounds it
 *   at 32 x the input: some 200 ms of main thread for 16 KiB of callData). A payload that does not decode makes
 *   the account's call revert: nothing is signed for that the facts do not show.
 */
const WORD = { type: 'bytes32' } as const;
const UINT = { type: 'uint256' } as const;
const ERC20_PARAMS = [WORD, UINT] as const;
/** execute(address dest, uint256 value, bytes func): dest and value. */
const EXECUTE_PARAMS = [WORD, UINT] as const;
/** executeBatch(address[] dest, bytes[] func): dest, and func as its offsets (its length). */
const BATCH_V06_PARAMS = [{ type: 'bytes32[]' }, { type: 'uint256[]' }] as const;
/** executeBatch(address[] dest, uint256[] value, bytes[] func): dest, value, func's offsets. */
const BATCH_V07_PARAMS = [{ type: 'bytes32[]' }, { type: 'uint256[]' }, { type: 'uint256[]' }] as const;
/** executeBatch((address target, uint256 value, bytes data)[] calls): the calls' offsets; then each call's head. */
const BATCH_CALLS_PARAMS = [{ type: 'uint256[]' }] as const;
const CALL_HEAD = [WORD, UINT] as const;
/** One word: an offset, or an array's length. */
const ONE_WORD = [UINT] as const;

type Transaction = Extract<SignRequest, { type: 'transaction' }>['transaction'];
type UserOperationRequest = Extract<SignRequest, { type: 'userOperation' }>;
interface Calls {
  targets: string[];
  value: bigint;
}

const lower = (a: string): string => a.toLowerCase();
const selectorOf = (data: string | undefined): string | undefined =>
  data && data.length >= 10 ? data.slice(0, 10).toLowerCase() : undefined;
/** An address word's address (lower-case), or undefined when its 12 high bytes are not zero. */
const addressOf = (word: Hex): string | undefined => (/^0x0{24}/.test(word) ? `0x${word.slice(26).toLowerCase()}` : undefined);

/**
 * What `req` asks to sign, as facts. Total on a parsed request: it does not throw.
 *
 * Value is absent (unknown) where the enclave cannot see what is signed for: a digest may be a transaction's, a
 * 32-byte raw message a userOpHash (which an ERC-4337 account checks under EIP-191), typed data a Safe
 * transaction. Conditions and limits on value then fail closed (docs/POLICIES.md, "Blind signing").
 */
export function requestFacts(req: SignRequest): RequestFacts {
  switch (req.type) {
    case 'digest':
      return { type: 'digest' };
    case 'message': {
      const messageKind = messageKindOf(req.message);
      return messageKind === 'hash' ? { type: 'message', messageKind } : { type: 'message', messageKind, value: 0n };
    }
    case 'typedData': {
      const { domain, primaryType } = req.typedData;
      const typedData: NonNullable<RequestFacts['typedData']> = { primaryType };
      if (domain?.name !== undefined) typedData.name = domain.name;
      if (domain?.verifyingContract !== undefined) typedData.verifyingContract = lower(domain.verifyingContract);
      const facts: RequestFacts = { type: 'typedData', typedData };
      if (domain?.chainId !== undefined) facts.chainId = domain.chainId;
      return facts;
    }
    case 'authorization':
      return { type: 'authorization', chainId: req.authorization.chainId, value: 0n, delegates: [lower(req.authorization.address)] };
    case 'transaction':
      return transactionFacts(req.transaction);
    case 'userOperation':
      return userOperationFacts(req);
  }
}

/**
 * A request's cost, what limits with maxValue count (docs/POLICIES.md, "Limits"): the native value it moves plus
 * the most it can pay for gas (`fee`). Undefined when the value is unknown: such a limit then refuses it.
 */
export const requestCost = (facts: RequestFacts): bigint | undefined =>
  facts.value === undefined ? undefined : facts.value + (facts.fee ?? 0n);

/** A string is text; raw bytes are `raw`, or `hash` when exactly 32 long (a digest whose preimage is unseen). */
function messageKindOf(message: Extract<SignRequest, { type: 'message' }>['message']): MessageKind {
  if (typeof message === 'string') return 'text';
  return message.raw.length === 2 + 2 * 32 ? 'hash' : 'raw';
}

/*
 * A type-4 transaction's authorization list holds tuples other accounts signed: they are no delegation of this
 * key, so the transaction has no `delegates` fact and is governed by to, value and selector like any other.
 * A blob transaction's fee adds the most its blobs can cost (their blob gas × maxFeePerBlobGas) to its gas.
 */
function transactionFacts(tx: Transaction): RequestFacts {
  const gasPrice = tx.type === 'legacy' || tx.type === 'eip2930' ? tx.gasPrice : tx.maxFeePerGas;
  const blobFee = tx.type === 'eip4844' ? BigInt(tx.blobVersionedHashes.length) * GAS_PER_BLOB * tx.maxFeePerBlobGas : 0n;
  const facts: RequestFacts = {
    type: 'transaction',
    chainId: tx.chainId,
    to: tx.to ? lower(tx.to) : null,
    value: tx.value ?? 0n,
    // Without gas the transaction cannot be mined (its intrinsic gas is 21,000): it pays no gas (a blob fee is
    // still counted, the most it could pay).
    fee: (tx.gas ?? 0n) * gasPrice + blobFee,
    gasPrice,
  };
  const selector = selectorOf(tx.data);
  if (selector !== undefined) facts.selector = selector;
  const erc20 = tx.data !== undefined && selector !== undefined ? erc20Of(tx.data, selector) : undefined;
  if (erc20) facts.erc20 = erc20;
  return facts;
}

/** transfer(to, amount) or approve(spender, amount), exactly: 68 bytes, an address word with its high 12 bytes zero. */
function erc20Of(data: string, selector: string): RequestFacts['erc20'] {
  const fn = selector === SELECTORS.transfer ? 'transfer' : selector === SELECTORS.approve ? 'approve' : undefined;
  if (fn === undefined || data.length !== 2 + 2 * ERC20_CALLDATA_BYTES) return undefined;
  const d = decode(ERC20_PARAMS, argsOf(data));
  const recipient = d && addressOf(d[0]);
  return recipient === undefined || d === undefined ? undefined : { function: fn, recipient, amount: d[1] };
}

function userOperationFacts(req: UserOperationRequest): RequestFacts {
  const op = req.userOperation;
  const userOperation: NonNullable<RequestFacts['userOperation']> = { sender: lower(op.sender), entryPoint: lower(req.entryPoint) };
  const facts: RequestFacts = {
    type: 'userOperation',
    chainId: req.chainId,
    userOperation,
    fee: userOperationGas(req) * op.maxFeePerGas,
    gasPrice: op.maxFeePerGas,
  };
  const calls = callsOf(op.callData);
  if (calls) {
    userOperation.targets = calls.targets;
    facts.value = calls.value;
  }
  return facts;
}

/**
 * The most gas a user operation can be charged for: what the EntryPoint computes its prefund from (taken from the
 * sender's deposit, or its paymaster's), preVerificationGas included, which goes in full to the bundler. 0.7 and
 * 0.8 add the paymaster's own limits; 0.6 counts verificationGasLimit three times when there is a paymaster (it also
 * bounds the paymaster's validation and postOp).
 */
function userOperationGas(req: UserOperationRequest): bigint {
  const common = req.userOperation.callGasLimit + req.userOperation.preVerificationGas;
  if (req.version === '0.6') {
    const { verificationGasLimit, paymasterAndData } = req.userOperation;
    return common + verificationGasLimit * (paymasterAndData !== undefined && paymasterAndData.length > 2 ? 3n : 1n);
  }
  const { verificationGasLimit, paymasterVerificationGasLimit, paymasterPostOpGasLimit } = req.userOperation;
  return common + verificationGasLimit + (paymasterVerificationGasLimit ?? 0n) + (paymasterPostOpGasLimit ?? 0n);
}

/**
 * The calls of an execute / executeBatch callData (the accounts named in SELECTORS), or undefined when the
 * callData is another call, does not decode, or is beyond USER_OPERATION_DECODE_LIMITS. A batch whose lists
 * disagree in length reverts in the account, so it is not read as calls either.
 */
function callsOf(callData: string): Calls | undefined {
  if (callData.length > 2 + 2 * USER_OPERATION_DECODE_LIMITS.maxCallDataBytes) return undefined;
  const selector = selectorOf(callData);
  const args = argsOf(callData);
  let targets: Array<string | undefined>;
  let value: bigint;
  switch (selector) {
    case SELECTORS.execute: {
      const d = decode(EXECUTE_PARAMS, args);
      if (!d) return undefined;
      [targets, value] = [[addressOf(d[0])], d[1]];
      break;
    }
    case SELECTORS.executeBatchV06: {
      const d = arraysFit(args, 2) ? decode(BATCH_V06_PARAMS, args) : undefined;
      if (!d || d[0].length !== d[1].length) return undefined;
      [targets, value] = [d[0].map(addressOf), 0n];
      break;
    }
    case SELECTORS.executeBatchV07: {
      // SimpleAccount 0.7: an empty value list means no value for every call.
      const d = arraysFit(args, 3) ? decode(BATCH_V07_PARAMS, args) : undefined;
      if (!d || d[0].length !== d[2].length || (d[1].length !== 0 && d[1].length !== d[0].length)) return undefined;
      [targets, value] = [d[0].map(addressOf), sum(d[1])];
      break;
    }
    case SELECTORS.executeBatchCalls: {
      const calls = callHeadsOf(args);
      if (!calls) return undefined;
      [targets, value] = [calls.map((c) => c.target), sum(calls.map((c) => c.value))];
      break;
    }
    default:
      return undefined;
  }
  if (targets.length > USER_OPERATION_DECODE_LIMITS.maxCalls || targets.some((t) => t === undefined)) return undefined;
  return { targets: targets as string[], value };
}

/**
 * executeBatch((address,uint256,bytes)[]): each call's target and value. The arguments start with the array's
 * offset; there, its length and one offset per call (relative to the word after the length); a call starts
 * with its target and value words. viem decodes each of those where the ABI puts it.
 */
function callHeadsOf(args: Uint8Array): Array<{ target: string | undefined; value: bigint }> | undefined {
  const array = arraysFit(args, 1) ? decode(ONE_WORD, args)?.[0] : undefined;
  const offsets = array === undefined ? undefined : decode(BATCH_CALLS_PARAMS, args); // the same head word, followed
  if (array === undefined || !offsets) return undefined;
  const calls: Array<{ target: string | undefined; value: bigint }> = [];
  for (const offset of offsets[0]) {
    if (offset > BigInt(args.length)) return undefined;
    const call = decode(CALL_HEAD, args, Number(array) + 32 + Number(offset));
    if (!call) return undefined;
    calls.push({ target: addressOf(call[0]), value: call[1] });
  }
  return calls;
}

/**
 * Whether the first `count` arguments, each a dynamic array (its head word an offset to its length), have at
 * most USER_OPERATION_DECODE_LIMITS.maxCalls elements: read before decoding them, as viem's decoder costs
 * microseconds per element and 16 KiB holds some 500. Each element takes a word of the arguments (here: an
 * address, a value or an offset), so arguments of at most that many words need no reading.
 */
function arraysFit(args: Uint8Array, count: number): boolean {
  if (args.length <= 32 * USER_OPERATION_DECODE_LIMITS.maxCalls) return true;
  for (let i = 0; i < count; i++) {
    const offset = decode(ONE_WORD, args, 32 * i)?.[0];
    const length = offset !== undefined && offset < BigInt(args.length) ? decode(ONE_WORD, args, Number(offset))?.[0] : undefined;
    if (length === undefined || length > BigInt(USER_OPERATION_DECODE_LIMITS.maxCalls)) return false;
  }
  return true;
}

const sum = (values: readonly bigint[]): bigint => values.reduce((a, b) => a + b, 0n);

/** The ABI-encoded arguments after a 4-byte selector, as bytes (Node's hex decoder: viem's is slower). */
const argsOf = (data: string): Uint8Array => Buffer.from(data.slice(10), 'hex');

/** viem's decoder on `args` from `at`; undefined when they do not decode. */
function decode<const P extends readonly AbiParameter[]>(params: P, args: Uint8Array, at = 0) {
  if (at >= args.length) return undefined;
  try {
    return decodeAbiParameters(params, args.subarray(at));
  } catch {
    return undefined;
  }
}
