/**
 * Signing policies in the enclave (docs/POLICIES.md): the project record's policy applied to each sign request,
 * in two steps of KeyVault.sign (keys/vault.ts):
 *
 * - `checkRules`, before any KMS call (a refused cold sign costs no Decrypt): the request's facts, read from its
 *   parsed form, against the rules;
 * - `reserve`, after the last check of the records and right before the signature: the limits checked and the
 *   request counted in one synchronous step (limits.ts), on its cost (value + the most it can pay for gas:
 *   requestCost); `release` if no signature is made.
 *
 * A project without policies is not evaluated at all. A policy is compiled once per verified record object (the
 * records cache hands out the same object for the same record: records/verified.ts), so a warm sign pays set
 * lookups, not parsing. A refusal is POLICY_DENIED (`policyDenied`), counted by what refused it (health).
 * `evaluate` is the admin's dry run: the same decision, every rule's and limit's outcome, nothing counted.
 */
import type { EnclaveHealth } from '@nks/shared/enclave-api';
import { policyDenied, type PolicyDecision, type RequestFacts } from '@nks/shared/policy/decision';
import { compilePolicy, conditionFailure, evaluateRules, type CompiledPolicy, type RulesDecision } from '@nks/shared/policy/evaluate';
import { requestCost, requestFacts } from '@nks/shared/policy/facts';
import { isEmptyPolicy, type Policies } from '@nks/shared/policy/schema';
import type { ProjectRecord } from '@nks/shared/records';
import type { SignRequest } from '@nks/shared/signing/schema';
import type { LimitCheck, LimitCounters, LimitsAnswer, Reservation, SigningKey } from './limits';

export const NO_POLICIES_REASON = 'the project has no policies';

/** A request the rules allowed, on its way to the limits. */
export interface RulesPassed {
  projectId: string;
  policy: CompiledPolicy;
  facts: RequestFacts;
  rules: RulesDecision;
}

/** Each limit of the policy, and whether its `when` holds for the request. */
const limitChecks = (policy: CompiledPolicy, facts: RequestFacts): LimitCheck[] =>
  policy.limits.map((limit) => ({ limit, applies: limit.when === undefined || conditionFailure(limit.when, facts) === null }));

/** The decision of rules that allowed the request and of its limits. */
function decisionOf(rules: RulesDecision, limits: LimitsAnswer): PolicyDecision {
  const { denied } = limits;
  return {
    allowed: denied === null,
    rule: rules.rule,
    limit: denied?.name ?? null,
    reason: denied?.exceeded ?? rules.reason,
    rules: rules.rules,
    limits: limits.outcomes,
  };
}

export class PolicyEnforcer {
  /** Sign requests a policy was evaluated on. */
  evaluations = 0;
  /** POLICY_DENIED answers to sign requests: by a deny rule, by no allow rule, by a limit. */
  readonly denials = { rule: 0, noRule: 0, limit: 0 };
  private readonly compiled = new WeakMap<ProjectRecord, CompiledPolicy>();

  constructor(private readonly counters: LimitCounters) {}

  /** Health's `policy` block. */
  stats(): EnclaveHealth['policy'] {
    return { evaluations: this.evaluations, denials: { ...this.denials }, trackedCounters: this.counters.size };
  }

  /** The compiled policy of a verified project record (once per record object); null without policies. */
  private policyOf(record: ProjectRecord): CompiledPolicy | null {
    if (!record.policies) return null;
    let policy = this.compiled.get(record);
    if (!policy) this.compiled.set(record, (policy = compilePolicy(record.policies)));
    return policy;
  }

  /** The rules on a sign request: POLICY_DENIED, or what `reserve` needs (null: the project has no policies). */
  checkRules(project: ProjectRecord, request: SignRequest): RulesPassed | null {
    const policy = this.policyOf(project);
    if (!policy) return null;
    this.evaluations += 1;
    const facts = requestFacts(request);
    const rules = evaluateRules(policy, facts);
    if (!rules.allowed) {
      if (rules.rule === null) this.denials.noRule += 1;
      else this.denials.rule += 1;
      throw policyDenied({ ...rules, limit: null, limits: [] });
    }
    return { projectId: project.projectId, policy, facts, rules };
  }

  /**
   * The limits on a request the rules allowed, signed with `key`: POLICY_DENIED, or the request counted (the
   * reservation to `release` if no signature is made; null when nothing was counted).
   */
  reserve(passed: RulesPassed | null, key: SigningKey): Reservation | null {
    if (!passed || passed.policy.limits.length === 0) return null;
    const answer = this.counters.reserve(passed.projectId, key, limitChecks(passed.policy, passed.facts), requestCost(passed.facts));
    if (answer.denied) {
      this.denials.limit += 1;
      throw policyDenied(decisionOf(passed.rules, answer));
    }
    return answer.reservation;
  }

  release(reservation: Reservation | null): void {
    this.counters.release(reservation);
  }

  /**
   * The dry run: what `policies` (a project's, or one proposed) decides on `request` signed with `key` (null:
   * a key-scoped limit reads as a key that has signed nothing). Every rule's and limit's outcome; counts
   * nothing, counted in no health counter.
   */
  evaluate(projectId: string, policies: Policies | undefined, request: SignRequest, key: SigningKey | null): PolicyDecision {
    if (isEmptyPolicy(policies)) {
      return { allowed: true, rule: null, limit: null, reason: NO_POLICIES_REASON, rules: [], limits: [] };
    }
    const policy = compilePolicy(policies as Policies);
    const facts = requestFacts(request);
    const rules = evaluateRules(policy, facts);
    const limits = this.counters.usage(projectId, key, limitChecks(policy, facts), requestCost(facts));
    if (!rules.allowed) return { ...rules, limit: null, limits: limits.outcomes };
    return decisionOf(rules, limits);
  }
}
