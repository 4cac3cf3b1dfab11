/**
 * Projects (docs/RECORDS.md, docs/PROTOCOL.md): the enclave makes and changes project records, so a project's
 * id, its auth and its state are what the identity signed, not what the parent says.
 *
 * - `create`: the settings (re-validated by the method's schema, defaults filled) in a first record: seq 0,
 *   active, with an id (`p_`) and a public project key (`pk_`) of 16 random bytes each (base64url) chosen here,
 *   so the parent can neither pick nor predict them.
 * - `setState`: the project's next record with `state` set (seq + 1, prev = the digest of the one given),
 *   which must be genuine and the newest the enclave has seen; the enclave then refuses the one before. The
 *   auth and everything else stay as they are: another auth is another project.
 * - `setPolicies` (docs/POLICIES.md): the same, with `policies` replaced (an empty policy leaves the field out:
 *   the project then signs as one without policies). A disabled project's too. When the current policy names
 *   approvers, only with enough of their signatures over this change (policy/approvals.ts): the parent alone
 *   cannot change it. Logged with the digests of the record before and after, never the policy itself.
 * - `evaluatePolicy`: the admin's dry run of the project's policy (or of a proposed one) on a request, with
 *   one of its keys if given: the decision, nothing counted, nothing signed, no KMS call.
 */
import { randomBytes } from 'node:crypto';
import type { Hex } from 'viem';
import type { ProjectResult } from '@nks/shared/enclave-api';
import type { Logger } from '@nks/shared/log';
import type { PolicyDecision } from '@nks/shared/policy/decision';
import { isEmptyPolicy, type Policies } from '@nks/shared/policy/schema';
import type { ProjectSettings } from '@nks/shared/projects-schema';
import { hex, RECORD_VERSION, type ProjectRecord, type ProjectState, type SignedRecord } from '@nks/shared/records';
import type { SignRequest } from '@nks/shared/signing/schema';
import type { KeystoreIdentity } from './identity/keystore-identity';
import { checkApprovals } from './policy/approvals';
import type { PolicyEnforcer } from './policy/enforcer';
import type { Verified, VerifiedRecords } from './records/verified';

/** 16 random bytes as base64url: 22 characters. */
const randomId = (prefix: string) => `${prefix}${randomBytes(16).toString('base64url')}`;

export class Projects {
  creates = 0;

  constructor(
    private readonly deps: {
      records: VerifiedRecords;
      identity: () => KeystoreIdentity;
      /** Told when a project is disabled (the key cache drops its keys). */
      onDisabled?: (projectId: string) => void;
      policy: PolicyEnforcer;
      logger: Logger;
      now?: () => number;
    },
  ) {}

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  create(settings: ProjectSettings): ProjectResult {
    const record: ProjectRecord = {
      v: RECORD_VERSION,
      kind: 'project',
      projectId: randomId('p_'),
      projectKey: randomId('pk_'),
      auth: settings.auth.type === 'token' ? { type: 'token' } : { ...settings.auth, algorithms: [...settings.auth.algorithms] },
      allowedRequestTypes: [...settings.allowedRequestTypes],
      allowedOrigins: [...settings.allowedOrigins],
      state: 'active',
      seq: 0,
      prev: null,
      createdAt: this.now(),
      ...(isEmptyPolicy(settings.policies) ? {} : { policies: settings.policies }),
    };
    this.creates += 1;
    return this.signed(record);
  }

  setState(signed: SignedRecord, state: ProjectState): ProjectResult {
    const { records } = this.deps;
    const project = records.project(signed);
    records.current(project);
    return this.signed({ ...project.record, state, seq: project.record.seq + 1, prev: hex(project.digest), createdAt: this.now() });
  }

  async setPolicies(signed: SignedRecord, policies: Policies, approvals?: readonly string[]): Promise<ProjectResult> {
    const { records } = this.deps;
    const project = records.project(signed);
    records.current(project);
    const { projectId } = project.record;
    const approvedBy = await checkApprovals(
      project.record.policies,
      { projectId, recordDigest: hex(project.digest) as Hex, policies },
      approvals,
    );
    // Recovering is asynchronous: the record must still be the newest (another change may have come in between).
    records.current(project);
    const { policies: _old, ...rest } = project.record;
    const next: ProjectRecord = {
      ...rest,
      seq: project.record.seq + 1,
      prev: hex(project.digest),
      createdAt: this.now(),
      ...(isEmptyPolicy(policies) ? {} : { policies }),
    };
    const { result, made } = this.make(next);
    this.deps.logger.info(
      { projectId: next.projectId, seq: next.seq, oldRecordDigest: hex(project.digest), newRecordDigest: hex(made.digest), approvedBy },
      isEmptyPolicy(policies) ? "removed a project's policies" : "set a project's policies",
    );
    return result;
  }

  /** The dry run (see the file comment). */
  evaluatePolicy(p: {
    project: SignedRecord;
    request: SignRequest;
    record?: SignedRecord | undefined;
    policies?: Policies | undefined;
  }): PolicyDecision {
    const { records } = this.deps;
    const project = records.project(p.project);
    records.current(project);
    let key = null;
    if (p.record) {
      const k = records.key(p.record);
      if (k.record.projectId !== project.record.projectId) throw records.refused();
      records.current(k);
      key = { keyId: k.record.keyId, address: k.record.address };
    }
    const policies = p.policies ?? project.record.policies;
    return this.deps.policy.evaluate(project.record.projectId, policies, p.request, key);
  }

  private signed(record: ProjectRecord): ProjectResult {
    return this.make(record).result;
  }

  private make(record: ProjectRecord): { result: ProjectResult; made: Verified<ProjectRecord> } {
    const { signed } = this.deps.identity().sign(record);
    // The newest record of the project from now on: the one before is refused.
    const made = this.deps.records.remember<ProjectRecord>(signed, 'project');
    const { projectId, projectKey, state } = made.record;
    // A disabled project's keys sign nothing (KeyVault.sign checks the project's record again after every
    // wait): their secrets leave the cache now, as a disabled key's do.
    if (state !== 'active') this.deps.onDisabled?.(projectId);
    return { result: { projectId, projectKey, record: signed }, made };
  }
}
