/**
 * What policy evaluation works on and answers (docs/POLICIES.md): the facts read from a parsed sign request,
 * and a decision that names the rule or limit that decided and the condition that failed. The refusal a caller
 * gets (POLICY_DENIED, `policyDenied`) and the admin's dry run (`policies:evaluate`) are built from the same
 * decision, so what the dry run explains is what signing does.
 */
import { KeystoreError } from '../errors';
import type { SignRequestType } from '../signing/request-types';
import type { Erc20Function, LimitScope, LimitWindow, MessageKind } from './schema';

/**
 * The facts of one sign request, read from its parsed, validated form (never from bytes the caller chose as
 * such): a field is absent when it does not apply to the request, and a condition on an absent fact does not
 * hold. Addresses are lower-case here (the compiled policy compares lower-case).
 */
export interface RequestFacts {
  type: SignRequestType;
  /** Transaction, authorization (0 = every chain), user operation, EIP-712 domain (when it names one). */
  chainId?: number;
  /** Transactions only; null for a contract creation. */
  to?: string | null;
  /**
   * Native value moved, wei: a transaction's value (0 when absent); a user operation's decoded calls' values
   * summed (absent when its callData is not a call this reader decodes); 0 for text and raw messages and
   * authorizations. Absent (unknown) for what the enclave cannot read the value of: digests, `hash` messages
   * and typed data (a digest may be a transaction's, a typed-data message a Safe transaction's).
   */
  value?: bigint;
  /**
   * The most the request can pay for gas, wei: a transaction's gas × (gasPrice or maxFeePerGas) (gas absent: 0),
   * plus a blob transaction's blob gas × maxFeePerBlobGas;
   * a user operation's callGasLimit + verificationGasLimit + preVerificationGas (+ the paymaster's limits) ×
   * maxFeePerGas. Absent for other requests. Limits count value + fee (`cost`).
   */
  fee?: bigint;
  /** Message requests: `text`, `raw`, or `hash` (exactly 32 raw bytes). */
  messageKind?: MessageKind;
  /** Transactions whose calldata has at least 4 bytes: its first 4, lower-case 0x hex. */
  selector?: string;
  /** Transactions whose calldata is exactly an ERC-20 transfer or approve. */
  erc20?: { function: Erc20Function; recipient: string; amount: bigint };
  typedData?: { name?: string; verifyingContract?: string; primaryType: string };
  /** `targets` absent when the callData is not an execute / executeBatch call this reader decodes. */
  userOperation?: { sender: string; entryPoint: string; targets?: string[] };
  /** Authorization requests: the delegate this key's signature names (type-4 transactions have none: their tuples are others'). */
  delegates?: string[];
  /** Transactions (gasPrice, or maxFeePerGas) and user operations (maxFeePerGas). */
  gasPrice?: bigint;
}

export interface RuleOutcome {
  name: string;
  effect: 'allow' | 'deny';
  matched: boolean;
  /** When not matched: the first condition that did not hold, in words (e.g. `chainId 5 is not in the list`). */
  failed?: string;
}

export interface LimitOutcome {
  name: string;
  scope: LimitScope;
  window: LimitWindow;
  /** Whether the limit counts this request (its `when` holds). */
  applies: boolean;
  /** Used in the window before this request, and the maximum (absent maxima are not reported). */
  count?: { used: number; max: number };
  value?: { used: string; max: string };
  /** When the request would exceed it: why, in words. */
  exceeded?: string;
}

/** A policy's answer for one request. */
export interface PolicyDecision {
  allowed: boolean;
  /** The rule that decided: the first deny rule that matched, else the first allow rule that matched; null when none did. */
  rule: string | null;
  /** The limit that refused, if one did (rules allowed the request). */
  limit: string | null;
  /**
   * One sentence: why. Denied by a rule: the rule's condition that held (`type is digest`); denied because no
   * rule allows it: the first failed condition of (at most three) allow rules; denied by a limit: the limit's
   * `exceeded`. Allowed: which rule allowed it (or that the project has no rules).
   */
  reason: string;
  rules: RuleOutcome[];
  limits: LimitOutcome[];
}

/** The one refusal of a request a policy does not allow: 403 POLICY_DENIED, naming the rule or limit and why. */
export function policyDenied(decision: PolicyDecision): KeystoreError {
  const by =
    decision.limit !== null ? `limit "${decision.limit}"` : decision.rule !== null ? `rule "${decision.rule}"` : 'no rule allows it';
  return new KeystoreError('POLICY_DENIED', `denied by the project's policy (${by}): ${decision.reason}`, {
    details: { rule: decision.rule, limit: decision.limit, reason: decision.reason },
  });
}
