/**
 * The facts a policy is evaluated on (docs/POLICIES.md, "Facts"), read from a sign request after the request
 * schema parsed it: never from the caller's raw JSON, so a fact is what the enclave signs. Reading never
 * throws on a parsed request; what cannot be read is absent, and a condition on an absent fact does not hold.
 *
 * Calldata is decoded with viem's ABI decoder, after the selector says what to decode, and only within bounds
 * (USER_OPERATION_DECODE_LIMITS): the enclave's main thread runs this for every request of a project with a
 * policy, so a request cannot buy more decoding work than a few microseconds.
 */
import { decodeAbiParameters, type Hex } from 'viem';
import type { SignRequest } from '../signing/schema';
import type { RequestFacts } from './decision';

/** The calldata selectors read here (checked against their signatures with viem's toFunctionSelector in the tests). */
export const SELECTORS = {
  /** ERC-20 transfer(address,uint256) */
  transfer: '0xa9059cbb',
  /** ERC-20 approve(address,uint256) */
  approve: '0x095ea7b3',
  /** execute(address,uint256,bytes): SimpleAccount 0.6 / 0.7, Coinbase Smart Wallet */
  execute: '0xb61d27f6',
  /** executeBatch(address[],bytes[]): SimpleAccount 0.6 */
  executeBatchV06: '0x18dfb3c7',
  /** executeBatch(address[],uint256[],bytes[]): SimpleAccount 0.7 */
  executeBatchV07: '0x47e1da2a',
  /** executeBatch((address,uint256,bytes)[]): Coinbase Smart Wallet */
  executeBatchCalls: '0x34fcd5be',
} as const;

/** Beyond these, a user operation's calls are not decoded: its targets and value are unknown (absent). */
export const USER_OPERATION_DECODE_LIMITS = { maxCallDataBytes: 16 * 1024, maxCalls: 64 } as const;

/** ERC-20 calldata: selector, a 32-byte address word, a 32-byte amount; nothing more. */
const ERC20_CALLDATA_BYTES = 4 + 32 + 32;
const ERC20_PARAMS = [{ type: 'address' }, { type: 'uint256' }] as const;
const EXECUTE_PARAMS = [{ type: 'address' }, { type: 'uint256' }, { type: 'bytes' }] as const;
const BATCH_V06_PARAMS = [{ type: 'address[]' }, { type: 'bytes[]' }] as const;
const BATCH_V07_PARAMS = [{ type: 'address[]' }, { type: 'uint256[]' }, { type: 'bytes[]' }] as const;
const BATCH_CALLS_PARAMS = [
  {
    type: 'tuple[]',
    components: [
      { name: 'target', type: 'address' },
      { name: 'value', type: 'uint256' },
      { name: 'data', type: 'bytes' },
    ],
  },
] as const;

type Transaction = Extract<SignRequest, { type: 'transaction' }>['transaction'];
type UserOperationRequest = Extract<SignRequest, { type: 'userOperation' }>;
interface Calls {
  targets: string[];
  value: bigint;
}

const lower = (a: string): string => a.toLowerCase();
const selectorOf = (data: string | undefined): string | undefined =>
  data && data.length >= 10 ? data.slice(0, 10).toLowerCase() : undefined;
/** The ABI-encoded arguments after a 4-byte selector. */
const argsOf = (data: string): Hex => `0x${data.slice(10)}`;

/** What `req` asks to sign, as facts. Total on a parsed request: it does not throw. */
export function requestFacts(req: SignRequest): RequestFacts {
  switch (req.type) {
    case 'digest':
    case 'message':
      return { type: req.type, value: 0n };
    case 'typedData': {
      const { domain, primaryType } = req.typedData;
      const typedData: NonNullable<RequestFacts['typedData']> = { primaryType };
      if (domain?.name !== undefined) typedData.name = domain.name;
      if (domain?.verifyingContract !== undefined) typedData.verifyingContract = lower(domain.verifyingContract);
      const facts: RequestFacts = { type: 'typedData', value: 0n, typedData };
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

function transactionFacts(tx: Transaction): RequestFacts {
  const facts: RequestFacts = {
    type: 'transaction',
    chainId: tx.chainId,
    to: tx.to ? lower(tx.to) : null,
    value: tx.value ?? 0n,
    gasPrice: tx.type === 'legacy' || tx.type === 'eip2930' ? tx.gasPrice : tx.maxFeePerGas,
  };
  const selector = selectorOf(tx.data);
  if (selector !== undefined) facts.selector = selector;
  const erc20 = tx.data !== undefined && selector !== undefined ? erc20Of(tx.data, selector) : undefined;
  if (erc20) facts.erc20 = erc20;
  if (tx.type === 'eip7702') facts.delegates = tx.authorizationList.map((a) => lower(a.address));
  return facts;
}

/** transfer(to, amount) or approve(spender, amount), exactly: 68 bytes, an address word with its high 12 bytes zero. */
function erc20Of(data: string, selector: string): RequestFacts['erc20'] {
  const fn = selector === SELECTORS.transfer ? 'transfer' : selector === SELECTORS.approve ? 'approve' : undefined;
  if (fn === undefined || data.length !== 2 + 2 * ERC20_CALLDATA_BYTES) return undefined;
  // viem's decoder takes an address word's low 20 bytes; a token compiled with ABI coder v2 reverts on dirty high
  // bytes, one with v1 ignores them. Either way such calldata is no plain transfer: no erc20 fact.
  if (!/^0{24}$/.test(data.slice(10, 34))) return undefined;
  const decoded = decode(ERC20_PARAMS, data);
  return decoded && { function: fn, recipient: lower(decoded[0]), amount: decoded[1] };
}

function userOperationFacts(req: UserOperationRequest): RequestFacts {
  const op = req.userOperation;
  const userOperation: NonNullable<RequestFacts['userOperation']> = { sender: lower(op.sender), entryPoint: lower(req.entryPoint) };
  const facts: RequestFacts = { type: 'userOperation', chainId: req.chainId, userOperation, gasPrice: op.maxFeePerGas };
  const calls = callsOf(op.callData);
  if (calls) {
    userOperation.targets = calls.targets;
    facts.value = calls.value;
  }
  return facts;
}

/**
 * The calls of an execute / executeBatch callData (the accounts named in SELECTORS), or undefined when the
 * callData is another call, malformed, or beyond USER_OPERATION_DECODE_LIMITS. A batch whose lists disagree in
 * length reverts in the account, so it is not read as calls either.
 */
function callsOf(callData: string): Calls | undefined {
  if (callData.length > 2 + 2 * USER_OPERATION_DECODE_LIMITS.maxCallDataBytes) return undefined;
  let calls: Calls | undefined;
  switch (selectorOf(callData)) {
    case SELECTORS.execute: {
      const d = decode(EXECUTE_PARAMS, callData);
      calls = d && { targets: [lower(d[0])], value: d[1] };
      break;
    }
    case SELECTORS.executeBatchV06: {
      const d = decode(BATCH_V06_PARAMS, callData);
      calls = d && d[0].length === d[1].length ? { targets: d[0].map(lower), value: 0n } : undefined;
      break;
    }
    case SELECTORS.executeBatchV07: {
      // SimpleAccount 0.7: an empty value list means no value for every call.
      const d = decode(BATCH_V07_PARAMS, callData);
      calls =
        d && d[0].length === d[2].length && (d[1].length === 0 || d[1].length === d[0].length)
          ? { targets: d[0].map(lower), value: sum(d[1]) }
          : undefined;
      break;
    }
    case SELECTORS.executeBatchCalls: {
      const d = decode(BATCH_CALLS_PARAMS, callData);
      calls = d && { targets: d[0].map((c) => lower(c.target)), value: sum(d[0].map((c) => c.value)) };
      break;
    }
  }
  return calls && calls.targets.length <= USER_OPERATION_DECODE_LIMITS.maxCalls ? calls : undefined;
}

const sum = (values: readonly bigint[]): bigint => values.reduce((a, b) => a + b, 0n);

/** viem's decoder on the arguments after the selector; undefined when they do not decode. */
function decode<const P extends readonly { type: string }[]>(params: P, data: string) {
  try {
    return decodeAbiParameters(params, argsOf(data));
  } catch {
    return undefined;
  }
}
