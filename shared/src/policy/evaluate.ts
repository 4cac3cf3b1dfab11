/**
 * Rules evaluated on a request's facts (docs/POLICIES.md, "Semantics"). A policy is compiled once per project
 * record (sets of lower-case addresses, bigint maxima), so evaluating it is set lookups and comparisons: no
 * parsing, no allocation beyond the outcome texts.
 *
 * - A condition holds when every field it gives holds; a field on a fact the request does not have fails.
 * - Deny wins: the first deny rule that matches decides. Else the first allow rule that matches allows. Else a
 *   policy with rules denies ("no rule allows it"); one with only limits allows by rules.
 * - A `hash` message (32 raw bytes: blind signing) is allowed only by an allow rule that lists `hash` in its
 *   `messageKind`: a rule allowing messages by type alone does not allow one. Deny rules and limits' `when`
 *   read the condition as written.
 * Limits (counted by the enclave, enclave/src/policy/limits.ts) use `conditionFailure` for their `when`.
 */
import { quote } from '../echo';
import type { SignRequestType } from '../signing/request-types';
import type { RequestFacts, RuleOutcome } from './decision';
import type { Condition, Erc20Function, LimitScope, LimitWindow, MessageKind, Policies } from './schema';

export interface CompiledCondition {
  type?: ReadonlySet<SignRequestType>;
  chainId?: ReadonlySet<number>;
  /** Lower-case addresses, as the facts have them. */
  to?: ReadonlySet<string>;
  maxValue?: bigint;
  messageKind?: ReadonlySet<MessageKind>;
  maxFee?: bigint;
  selector?: ReadonlySet<string>;
  erc20?: { function?: ReadonlySet<Erc20Function>; recipient?: ReadonlySet<string>; maxAmount?: bigint };
  typedData?: { name?: ReadonlySet<string>; verifyingContract?: ReadonlySet<string>; primaryType?: ReadonlySet<string> };
  userOperation?: { sender?: ReadonlySet<string>; entryPoint?: ReadonlySet<string>; targets?: ReadonlySet<string> };
  delegate?: ReadonlySet<string>;
  maxGasPrice?: bigint;
}

export interface CompiledRule {
  name: string;
  effect: 'allow' | 'deny';
  when: CompiledCondition;
}

export interface CompiledLimit {
  name: string;
  scope: LimitScope;
  window: LimitWindow;
  maxCount?: number;
  maxValue?: bigint;
  /** Absent: the limit counts every request of the project. */
  when?: CompiledCondition;
}

export interface CompiledPolicy {
  rules: readonly CompiledRule[];
  limits: readonly CompiledLimit[];
}

/** The rules' part of a PolicyDecision (the enclave adds the limits'). */
export interface RulesDecision {
  allowed: boolean;
  /** The rule that decided: the first deny rule that matched, else the first allow rule that matched. */
  rule: string | null;
  reason: string;
  rules: RuleOutcome[];
}

/** Allow rules whose failed condition a "no rule allows it" reason quotes; the rest are counted. */
export const NO_RULE_REASONS = 3;
/** Characters of a caller's string (a typed-data name or primary type) quoted in a text (shared/src/echo.ts). */
export { ECHO_MAX_CHARS } from '../echo';

const lowerSet = (list: readonly string[] | undefined) => list && new Set(list.map((a) => a.toLowerCase()));

function compileCondition(c: Condition): CompiledCondition {
  const out: CompiledCondition = {};
  if (c.type) out.type = new Set(c.type);
  if (c.chainId) out.chainId = new Set(c.chainId);
  if (c.to) out.to = lowerSet(c.to);
  if (c.maxValue !== undefined) out.maxValue = BigInt(c.maxValue);
  if (c.messageKind) out.messageKind = new Set(c.messageKind);
  if (c.maxFee !== undefined) out.maxFee = BigInt(c.maxFee);
  if (c.selector) out.selector = lowerSet(c.selector);
  if (c.erc20) {
    const e: NonNullable<CompiledCondition['erc20']> = {};
    if (c.erc20.function) e.function = new Set(c.erc20.function);
    if (c.erc20.recipient) e.recipient = lowerSet(c.erc20.recipient);
    if (c.erc20.maxAmount !== undefined) e.maxAmount = BigInt(c.erc20.maxAmount);
    out.erc20 = e;
  }
  if (c.typedData) {
    const t: NonNullable<CompiledCondition['typedData']> = {};
    if (c.typedData.name) t.name = new Set(c.typedData.name);
    if (c.typedData.verifyingContract) t.verifyingContract = lowerSet(c.typedData.verifyingContract);
    if (c.typedData.primaryType) t.primaryType = new Set(c.typedData.primaryType);
    out.typedData = t;
  }
  if (c.userOperation) {
    const u: NonNullable<CompiledCondition['userOperation']> = {};
    if (c.userOperation.sender) u.sender = lowerSet(c.userOperation.sender);
    if (c.userOperation.entryPoint) u.entryPoint = lowerSet(c.userOperation.entryPoint);
    if (c.userOperation.targets) u.targets = lowerSet(c.userOperation.targets);
    out.userOperation = u;
  }
  if (c.delegate) out.delegate = lowerSet(c.delegate);
  if (c.maxGasPrice !== undefined) out.maxGasPrice = BigInt(c.maxGasPrice);
  return out;
}

/** A parsed policy (PoliciesSchema's output) in the form evaluation reads. Pure; done once per project record. */
export function compilePolicy(p: Policies): CompiledPolicy {
  return {
    rules: p.rules.map((r) => ({ name: r.name, effect: r.effect, when: compileCondition(r.when) })),
    limits: p.limits.map((l) => {
      const limit: CompiledLimit = { name: l.name, scope: l.scope, window: l.window };
      if (l.maxCount !== undefined) limit.maxCount = l.maxCount;
      if (l.maxValue !== undefined) limit.maxValue = BigInt(l.maxValue);
      if (l.when) limit.when = compileCondition(l.when);
      return limit;
    }),
  };
}

/** Why a request has no such fact: the end of a "does not apply" text. */
function noFact(field: string, facts: RequestFacts): string {
  const t = facts.type;
  switch (field) {
    case 'chainId':
      return t === 'typedData' ? "the typed data's domain has no chainId" : `a ${t} request has no chain`;
    case 'to':
      return t === 'transaction' ? 'a contract creation has no recipient' : `a ${t} request has no recipient`;
    case 'selector':
      return t === 'transaction' ? 'the transaction has no calldata of 4 bytes or more' : `a ${t} request has no calldata`;
    case 'erc20':
      return t === 'transaction' ? 'the calldata is not an ERC-20 transfer or approve' : `a ${t} request is not an ERC-20 call`;
    case 'typedData':
      return `a ${t} request is not EIP-712 typed data`;
    case 'userOperation':
      return `a ${t} request is not a user operation`;
    case 'messageKind':
      return `a ${t} request is not a message`;
    case 'fee':
      return `a ${t} request pays no gas`;
    case 'delegate':
      // A type-4 transaction's authorization list is others' signatures, not this key's delegation.
      return 'only an authorization request names a delegate';
    default:
      return `a ${t} request has no gas price`;
  }
}

/** Why a request's value is unknown (docs/POLICIES.md, "Blind signing"). */
function valueUnknown(facts: RequestFacts): string {
  switch (facts.type) {
    case 'digest':
      return 'value is unknown (a digest is signed blind: it may be any transaction)';
    case 'message':
      return 'value is unknown (a 32-byte raw message is a hash, signed blind: it may be a user operation)';
    case 'typedData':
      return "value is unknown (typed data's message is not read)";
    default:
      return "value is unknown (the user operation's calls are not decoded)";
  }
}

const notIn = (field: string, shown: string | number) => `${field} ${shown} is not in the list`;
const above = (field: string, v: bigint, max: bigint) => `${field} ${v} is above the maximum ${max}`;
const doesNotApply = (field: string, facts: RequestFacts) => `${field} does not apply (${noFact(field, facts)})`;

/**
 * The first field of `c` that does not hold for `facts`, in words (naming the field and the request's value),
 * or null when the condition holds. Fields are checked in the schema's order.
 */
export function conditionFailure(c: CompiledCondition, facts: RequestFacts): string | null {
  if (c.type && !c.type.has(facts.type)) return notIn('type', facts.type);
  if (c.chainId) {
    if (facts.chainId === undefined) return doesNotApply('chainId', facts);
    if (!c.chainId.has(facts.chainId)) return notIn('chainId', facts.chainId);
  }
  if (c.to) {
    if (facts.to === undefined || facts.to === null) return doesNotApply('to', facts);
    if (!c.to.has(facts.to)) return notIn('to', facts.to);
  }
  if (c.maxValue !== undefined) {
    if (facts.value === undefined) return valueUnknown(facts);
    if (facts.value > c.maxValue) return above('value', facts.value, c.maxValue);
  }
  if (c.messageKind) {
    if (facts.messageKind === undefined) return doesNotApply('messageKind', facts);
    if (!c.messageKind.has(facts.messageKind)) return notIn('messageKind', facts.messageKind);
  }
  if (c.maxFee !== undefined) {
    if (facts.fee === undefined) return doesNotApply('fee', facts);
    if (facts.fee > c.maxFee) return above('fee', facts.fee, c.maxFee);
  }
  if (c.selector) {
    if (facts.selector === undefined) return doesNotApply('selector', facts);
    if (!c.selector.has(facts.selector)) return notIn('selector', facts.selector);
  }
  if (c.erc20) {
    const e = facts.erc20;
    if (!e) return doesNotApply('erc20', facts);
    if (c.erc20.function && !c.erc20.function.has(e.function)) return notIn('erc20.function', e.function);
    if (c.erc20.recipient && !c.erc20.recipient.has(e.recipient)) return notIn('erc20.recipient', e.recipient);
    if (c.erc20.maxAmount !== undefined && e.amount > c.erc20.maxAmount) return above('erc20.amount', e.amount, c.erc20.maxAmount);
  }
  if (c.typedData) {
    const t = facts.typedData;
    if (!t) return doesNotApply('typedData', facts);
    if (c.typedData.name) {
      if (t.name === undefined) return 'typedData.name does not apply (the domain has no name)';
      if (!c.typedData.name.has(t.name)) return notIn('typedData.name', quote(t.name));
    }
    if (c.typedData.verifyingContract) {
      if (t.verifyingContract === undefined) return 'typedData.verifyingContract does not apply (the domain has no verifyingContract)';
      if (!c.typedData.verifyingContract.has(t.verifyingContract)) return notIn('typedData.verifyingContract', t.verifyingContract);
    }
    if (c.typedData.primaryType && !c.typedData.primaryType.has(t.primaryType)) return notIn('typedData.primaryType', quote(t.primaryType));
  }
  if (c.userOperation) {
    const u = facts.userOperation;
    if (!u) return doesNotApply('userOperation', facts);
    if (c.userOperation.sender && !c.userOperation.sender.has(u.sender)) return notIn('userOperation.sender', u.sender);
    if (c.userOperation.entryPoint && !c.userOperation.entryPoint.has(u.entryPoint)) return notIn('userOperation.entryPoint', u.entryPoint);
    if (c.userOperation.targets) {
      if (u.targets === undefined)
        return 'userOperation.targets are unknown (the callData is not an execute or executeBatch call this keystore decodes)';
      if (u.targets.length === 0) return 'userOperation.targets: the batch calls no target';
      for (const target of u.targets) if (!c.userOperation.targets.has(target)) return notIn('userOperation.targets', target);
    }
  }
  if (c.delegate) {
    if (!facts.delegates || facts.delegates.length === 0) return doesNotApply('delegate', facts);
    for (const d of facts.delegates) if (!c.delegate.has(d)) return notIn('delegate', d);
  }
  if (c.maxGasPrice !== undefined) {
    if (facts.gasPrice === undefined) return doesNotApply('gasPrice', facts);
    if (facts.gasPrice > c.maxGasPrice) return above('gasPrice', facts.gasPrice, c.maxGasPrice);
  }
  return null;
}

const listed = (what: string, items: readonly string[]) =>
  items.length === 1
    ? `${what} is ${items[0]}`
    : `${what} are ${items.slice(0, 3).join(', ')}${items.length > 3 ? ` and ${items.length - 3} more` : ''}`;

/** What a condition that holds matched, in words (`type is digest and chainId is 1`): a deny rule's reason. */
export function conditionMatch(c: CompiledCondition, facts: RequestFacts): string {
  const parts: string[] = [];
  if (c.type) parts.push(`type is ${facts.type}`);
  if (c.chainId) parts.push(`chainId is ${facts.chainId}`);
  if (c.to) parts.push(`to is ${facts.to}`);
  if (c.maxValue !== undefined) parts.push(`value ${facts.value} is at most ${c.maxValue}`);
  if (c.messageKind) parts.push(`messageKind is ${facts.messageKind}`);
  if (c.maxFee !== undefined) parts.push(`fee ${facts.fee} is at most ${c.maxFee}`);
  if (c.selector) parts.push(`selector is ${facts.selector}`);
  const e = facts.erc20;
  if (c.erc20 && e) {
    if (c.erc20.function || (!c.erc20.recipient && c.erc20.maxAmount === undefined)) parts.push(`erc20.function is ${e.function}`);
    if (c.erc20.recipient) parts.push(`erc20.recipient is ${e.recipient}`);
    if (c.erc20.maxAmount !== undefined) parts.push(`erc20.amount ${e.amount} is at most ${c.erc20.maxAmount}`);
  }
  const t = facts.typedData;
  if (c.typedData && t) {
    if (c.typedData.name) parts.push(`typedData.name is ${quote(t.name ?? '')}`);
    if (c.typedData.verifyingContract) parts.push(`typedData.verifyingContract is ${t.verifyingContract}`);
    if (c.typedData.primaryType || (!c.typedData.name && !c.typedData.verifyingContract))
      parts.push(`typedData.primaryType is ${quote(t.primaryType)}`);
  }
  const u = facts.userOperation;
  if (c.userOperation && u) {
    if (c.userOperation.sender || (!c.userOperation.entryPoint && !c.userOperation.targets))
      parts.push(`userOperation.sender is ${u.sender}`);
    if (c.userOperation.entryPoint) parts.push(`userOperation.entryPoint is ${u.entryPoint}`);
    if (c.userOperation.targets) parts.push(listed('userOperation.targets', u.targets ?? []));
  }
  if (c.delegate) parts.push(listed(facts.delegates?.length === 1 ? 'delegate' : 'delegates', facts.delegates ?? []));
  if (c.maxGasPrice !== undefined) parts.push(`gasPrice ${facts.gasPrice} is at most ${c.maxGasPrice}`);
  return parts.length === 0 ? 'the rule has no condition (it matches every request)' : parts.join(' and ');
}

/** The failed text of an allow rule that holds on a hash message it does not name (docs/POLICIES.md, "Blind signing"). */
export const HASH_NOT_LISTED =
  'a 32-byte raw message is a hash (a user operation\'s, say): only a rule listing messageKind "hash" allows it';

/** Why rule `r` does not match `facts`, or null when it does: its condition, and for allow rules the hash exception. */
function ruleFailure(r: CompiledRule, facts: RequestFacts): string | null {
  const failed = conditionFailure(r.when, facts);
  if (failed !== null || r.effect === 'deny' || facts.messageKind !== 'hash') return failed;
  return r.when.messageKind?.has('hash') ? null : HASH_NOT_LISTED;
}

/**
 * The rules' decision on `facts`: every rule's outcome, and which rule decided and why (docs/POLICIES.md,
 * "Semantics"). Total: it does not throw on facts `requestFacts` made.
 */
export function evaluateRules(policy: CompiledPolicy, facts: RequestFacts): RulesDecision {
  const rules: RuleOutcome[] = [];
  let deny: CompiledRule | undefined;
  let allow: CompiledRule | undefined;
  for (const r of policy.rules) {
    const failed = ruleFailure(r, facts);
    if (failed === null) {
      rules.push({ name: r.name, effect: r.effect, matched: true });
      if (r.effect === 'deny') deny ??= r;
      else allow ??= r;
    } else {
      rules.push({ name: r.name, effect: r.effect, matched: false, failed });
    }
  }
  if (deny) return { allowed: false, rule: deny.name, reason: conditionMatch(deny.when, facts), rules };
  if (allow)
    return { allowed: true, rule: allow.name, reason: `allowed by rule "${allow.name}": ${conditionMatch(allow.when, facts)}`, rules };
  if (policy.rules.length === 0) return { allowed: true, rule: null, reason: 'the policy has no rules', rules };
  return { allowed: false, rule: null, reason: noRuleReason(rules), rules };
}

/** Why no rule allows it: the failed condition of the first few allow rules, then how many more. */
function noRuleReason(rules: readonly RuleOutcome[]): string {
  const allows = rules.filter((r) => r.effect === 'allow');
  if (allows.length === 0) return 'the policy has no allow rules (once a policy has rules, only what a rule allows is signed)';
  const quoted = allows.slice(0, NO_RULE_REASONS).map((r) => `rule "${r.name}": ${r.failed ?? ''}`);
  if (allows.length > NO_RULE_REASONS) quoted.push(`and ${allows.length - NO_RULE_REASONS} more`);
  return quoted.join('; ');
}
