/**
 * Signing policies (docs/POLICIES.md): what a project's keys may sign, as a small declarative language held in
 * the project's signed record, so the parent can neither change nor drop it. One schema for every reader: the
 * caller API's validation and OpenAPI document, the enclave's method parameters, and the project record
 * decoder (records.ts), which accepts a policy only in the normalized form this schema outputs.
 *
 *   {rules: [{name, effect: "allow"|"deny", when: Condition}], limits: [{name, scope, window, maxCount?, maxValue?, when?}]}
 *
 * - Rules: deny wins; once any rule is set, a request no rule allows is denied. A condition is a conjunction of
 *   its fields; a list field holds when the request's value is in the list; a field that does not apply to the
 *   request (`to` for a message, `erc20` for calldata that is no ERC-20 transfer or approve) does not hold, so
 *   a rule that names it never matches that request (write allow-lists: a deny rule is easy to step around).
 * - Limits: count and native value (wei) per key or per project over a sliding hour or day, counted in enclave
 *   memory (reset by a restart, separate per instance: docs/POLICIES.md, "Known limits").
 *
 * Normalized form (what a record holds): addresses EIP-55 checksummed, selectors lower-case, amounts decimal
 * strings without leading zeros, every list distinct and non-empty, defaults filled. An empty policy (no rules,
 * no limits) is no policy: the record leaves the field out and the project behaves as one without policies.
 */
import { getAddress, isAddress } from 'viem';
import { z } from 'zod';
import { isWellFormedText } from '../project-auth';
import { SIGN_REQUEST_TYPES } from '../signing/request-types';

export const POLICY_MAX_RULES = 64;
export const POLICY_MAX_LIMITS = 16;
/** Entries of one list in a condition (addresses, chain ids, selectors, names). */
export const POLICY_MAX_LIST = 256;
export const POLICY_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}$/;
export const POLICY_NAME_EXPECTED = 'expected a name of 1-64 characters of [A-Za-z0-9 _.:-], starting with a letter or digit';
export const ERC20_FUNCTIONS = ['transfer', 'approve'] as const;
/**
 * What a `message` request signs: `text` (a string), `raw` (bytes), or `hash` (exactly 32 raw bytes: a digest
 * whose preimage the enclave does not see, e.g. the userOpHash an ERC-4337 account checks under EIP-191). A hash
 * is blind signing: only an allow rule that lists `hash` in `messageKind` allows it (docs/POLICIES.md).
 */
export const MESSAGE_KINDS = ['text', 'raw', 'hash'] as const;
export type MessageKind = (typeof MESSAGE_KINDS)[number];
/** At most this many approvers, and approvals in one change. */
export const POLICY_MAX_APPROVERS = 16;
export type Erc20Function = (typeof ERC20_FUNCTIONS)[number];
export const POLICY_EFFECTS = ['allow', 'deny'] as const;
export const LIMIT_SCOPES = ['key', 'project'] as const;
export type LimitScope = (typeof LIMIT_SCOPES)[number];
/** A limit's window slides: an hour in five-minute buckets, a day in one-hour buckets (docs/POLICIES.md). */
export const LIMIT_WINDOWS = ['hour', 'day'] as const;
export type LimitWindow = (typeof LIMIT_WINDOWS)[number];
export const LIMIT_MAX_COUNT = 1_000_000_000;

const UINT256_MAX = (1n << 256n) - 1n;
const distinct = <T>(list: readonly T[]) => new Set(list).size === list.length;
const list = <T extends z.ZodType>(item: T) =>
  z
    .array(item)
    .min(1, 'expected at least one entry (leave the field out to not restrict it)')
    .max(POLICY_MAX_LIST, `expected at most ${POLICY_MAX_LIST} entries`)
    .refine(distinct, 'expected distinct entries');

/** An address in any case (mixed case must be a valid EIP-55 checksum), normalized to its checksum form. */
export const PolicyAddressSchema = z
  .string()
  .refine((a) => isAddress(a, { strict: true }), 'expected a 20-byte 0x address (mixed case must be a valid EIP-55 checksum)')
  .transform((a) => getAddress(a));
/** An amount of wei (or of an ERC-20's base units): a decimal string, at most 2^256 - 1, normalized. */
export const WeiSchema = z
  .string()
  .regex(/^[0-9]{1,78}$/, 'expected an amount as a decimal string (wei, or the token base unit)')
  .refine((s) => BigInt(s) <= UINT256_MAX, 'expected an amount of at most 2^256 - 1')
  .transform((s) => BigInt(s).toString());
const selector = z
  .string()
  .regex(/^0x[0-9a-fA-F]{8}$/, 'expected a 4-byte function selector (0x and 8 hex digits)')
  .transform((s) => s.toLowerCase());
const chainId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const text = z.string().min(1).max(256).refine(isWellFormedText, 'expected well-formed Unicode text');

/** What a rule (or a limit) applies to: every field given must hold (docs/POLICIES.md, "A policy"). */
export const ConditionSchema = z.strictObject({
  /** The sign request's type. */
  type: list(z.enum(SIGN_REQUEST_TYPES)).optional(),
  /** The request's chain: a transaction's, an authorization's (0: every chain), a user operation's, an EIP-712 domain's. */
  chainId: list(chainId).optional(),
  /** A transaction's recipient (a contract creation has none and never matches). */
  to: list(PolicyAddressSchema).optional(),
  /** The native value moved, in wei: a transaction's value, or the sum of a user operation's decoded calls. */
  maxValue: WeiSchema.optional(),
  /** A message request's kind (`text`, `raw`, `hash`); an allow rule matches a `hash` only when it lists it here. */
  messageKind: list(z.enum(MESSAGE_KINDS)).optional(),
  /**
   * The most the request can pay for gas, wei: a transaction's gas × (gasPrice or maxFeePerGas), plus a blob
   * transaction's blob gas × maxFeePerBlobGas; a user operation's gas limits summed × maxFeePerGas.
   */
  maxFee: WeiSchema.optional(),
  /** A transaction's 4-byte function selector (calldata of at least 4 bytes). */
  selector: list(selector).optional(),
  /** A transaction whose calldata is exactly an ERC-20 transfer(to, amount) or approve(spender, amount). */
  erc20: z
    .strictObject({
      function: list(z.enum(ERC20_FUNCTIONS)).optional(),
      /** transfer's `to`, approve's `spender`. */
      recipient: list(PolicyAddressSchema).optional(),
      maxAmount: WeiSchema.optional(),
    })
    .optional(),
  /** An EIP-712 request's domain and primary type (its chain id: `chainId`). */
  typedData: z
    .strictObject({
      name: list(text).optional(),
      verifyingContract: list(PolicyAddressSchema).optional(),
      primaryType: list(text).optional(),
    })
    .optional(),
  /** A user operation's sender, entry point and the targets of its decoded execute / executeBatch calls (all in the list). */
  userOperation: z
    .strictObject({
      sender: list(PolicyAddressSchema).optional(),
      entryPoint: list(PolicyAddressSchema).optional(),
      targets: list(PolicyAddressSchema).optional(),
    })
    .optional(),
  /**
   * The EIP-7702 delegate an authorization request names (what this key delegates its account to). A type-4
   * transaction's authorization list holds tuples others signed: it is no fact of the transaction's signer.
   */
  delegate: list(PolicyAddressSchema).optional(),
  /** A transaction's gasPrice or maxFeePerGas, a user operation's maxFeePerGas, in wei. */
  maxGasPrice: WeiSchema.optional(),
});
export type Condition = z.output<typeof ConditionSchema>;

const name = z.string().regex(POLICY_NAME_RE, POLICY_NAME_EXPECTED);

export const RuleSchema = z.strictObject({
  name,
  effect: z.enum(POLICY_EFFECTS),
  /** `{}` (the default) matches every request. */
  when: ConditionSchema.default({}),
});
export type Rule = z.output<typeof RuleSchema>;

export const LimitSchema = z
  .strictObject({
    name,
    /** Counted per key (each key its own budget) or per project (all its keys together). */
    scope: z.enum(LIMIT_SCOPES),
    window: z.enum(LIMIT_WINDOWS),
    /** Signatures in the window. */
    maxCount: z.number().int().min(1).max(LIMIT_MAX_COUNT).optional(),
    /** Native value (wei) signed for in the window; a request whose value cannot be known is refused by it. */
    maxValue: WeiSchema.optional(),
    /** The requests the limit counts (default: all the project's signatures). */
    when: ConditionSchema.optional(),
  })
  .refine((l) => l.maxCount !== undefined || l.maxValue !== undefined, 'expected maxCount, maxValue or both');
export type Limit = z.output<typeof LimitSchema>;

/**
 * Who must approve a change of the project's policies (docs/POLICIES.md, "Approvers"): Ethereum addresses whose
 * EIP-712 signatures over the change (approval.ts) the enclave checks; `threshold` distinct ones. Without
 * approvers the parent's admin token is what authorizes a change; with them, a compromised parent cannot change,
 * relax or drop the policy (nor the approvers) while the enclave runs.
 */
export const ApproversSchema = z
  .strictObject({
    addresses: list(PolicyAddressSchema).max(POLICY_MAX_APPROVERS, `expected at most ${POLICY_MAX_APPROVERS} approvers`),
    threshold: z.number().int().min(1).max(POLICY_MAX_APPROVERS),
  })
  .refine((a) => a.threshold <= a.addresses.length, {
    message: 'expected a threshold of at most the number of approvers',
    path: ['threshold'],
  });
export type Approvers = z.output<typeof ApproversSchema>;

export const PoliciesSchema = z
  .strictObject({
    rules: z.array(RuleSchema).max(POLICY_MAX_RULES, `expected at most ${POLICY_MAX_RULES} rules`).default([]),
    limits: z.array(LimitSchema).max(POLICY_MAX_LIMITS, `expected at most ${POLICY_MAX_LIMITS} limits`).default([]),
    approvers: ApproversSchema.optional(),
  })
  .refine((p) => distinct([...p.rules.map((r) => r.name), ...p.limits.map((l) => l.name)]), {
    message: 'expected distinct names across rules and limits (a refusal names the rule or limit)',
  });
export type Policies = z.output<typeof PoliciesSchema>;
export type PoliciesInput = z.input<typeof PoliciesSchema>;

/** No rules, no limits and no approvers: the same as no policy (a record leaves the field out). */
export const isEmptyPolicy = (p: Policies | undefined): boolean =>
  !p || (p.rules.length === 0 && p.limits.length === 0 && p.approvers === undefined);
