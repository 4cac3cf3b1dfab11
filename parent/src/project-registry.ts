/**
 * Projects (docs/PROJECTS.md): create, read, list, disable and enable, and set their signing policies
 * (docs/POLICIES.md). The enclave makes every project record (`projects.create` chooses the id and the project
 * key at random; `projects.setState` and `projects.setPolicies` make the next record);
 * the parent verifies each answer (signed by the keystore identity, and exactly what was asked) before it
 * stores it, and verifies a stored record before it hands it to the enclave. The name is the parent's own label.
 *
 * As for keys (key-registry.ts), none of these checks protects anything from the parent: the enclave checks
 * every project record again. They make an altered database, or an enclave answer that is not what was asked,
 * fail here and plainly.
 */
import { isDeepStrictEqual } from 'node:util';
import { KeystoreError } from '@nks/shared/errors';
import type { ProjectResult } from '@nks/shared/enclave-api';
import type { Logger } from '@nks/shared/log';
import type { ProjectAuth } from '@nks/shared/project-auth';
import { largestProjectRecordBytes, PROJECT_RECORD_MAX_BYTES, type ProjectSettings } from '@nks/shared/projects-schema';
import { policyChangeTypedDataForWallet } from '@nks/shared/policy/approval';
import type { PoliciesView, PolicyApprovalView } from '@nks/shared/policy/views';
import { isEmptyPolicy, type Policies } from '@nks/shared/policy/schema';
import {
  DEFAULT_PROJECT_ID,
  decodeProjectRecord,
  hex,
  type ProjectRecord,
  type ProjectState,
  type SignedRecord,
} from '@nks/shared/records';
import type { SignRequestType } from '@nks/shared/signing/request-types';
import type { RecordChecker } from './enclave-link/identity';
import type { EnclavePool } from './enclave-link/pool';
import type { KeyStore } from './store/key-store';
import { chained, type StoredProject } from './store/types';

export interface ProjectView {
  projectId: string;
  projectKey: string;
  name: string;
  auth: ProjectAuth;
  allowedOrigins: string[];
  allowedRequestTypes: SignRequestType[];
  state: ProjectState;
  createdAt: string;
  /** Its signing policies (docs/POLICIES.md): empty lists when it has none. */
  policies: Policies;
  /** The project's current record as the enclave signed it (canonical CBOR and signature, base64). */
  record: SignedRecord;
}

export type { PoliciesView, PolicyApprovalView };

/** No policy is shown as empty lists (a record without the field). */
export const policiesOf = (record: ProjectRecord): Policies => record.policies ?? { rules: [], limits: [] };

/** The policies `record` has after asking for `policies`: none when it is empty (the record leaves the field out). */
const withPolicies = (record: ProjectRecord, policies: Policies | undefined): ProjectRecord => {
  const { policies: _old, ...rest } = record;
  return isEmptyPolicy(policies) ? rest : { ...rest, policies: policies };
};

/** A stored project whose record verified, with that record. */
export interface VerifiedProject {
  stored: StoredProject;
  signed: SignedRecord;
  record: ProjectRecord;
  /** The record's digest (what the next record's `prev` names). */
  digest: Buffer;
}

/** The one message for a stored project whose record does not verify or does not match its row. */
const TAMPERED = 'the stored record does not verify: the database was altered or belongs to another keystore identity';
/** The one message for an enclave answer whose project record is not what was asked. */
export const BAD_PROJECT_ANSWER = 'the enclave answered with a project record that does not match the request';

/** Lists compared as sets: their order means nothing, and the enclave may keep another. */
const sameSet = (a: readonly string[], b: readonly string[]) => a.length === b.length && isDeepStrictEqual([...a].sort(), [...b].sort());

function sameAuth(a: ProjectAuth, b: ProjectAuth): boolean {
  if (a.type === 'token' || b.type === 'token') return a.type === b.type;
  const { algorithms: aa, ...ra } = a;
  const { algorithms: ba, ...rb } = b;
  return isDeepStrictEqual(ra, rb) && sameSet(aa, ba);
}

/** The view of a stored project: its record's content, decoded (a view is read, not used; the record is attached to be checked). */
export function projectViewOf(stored: StoredProject): ProjectView {
  let record: ProjectRecord;
  try {
    record = decodeProjectRecord(Buffer.from(stored.signed.record, 'base64'));
  } catch (err) {
    throw new KeystoreError('KEY_INTEGRITY', `project ${stored.projectId}: ${TAMPERED}`, { cause: err });
  }
  return {
    projectId: stored.projectId,
    projectKey: record.projectKey,
    name: stored.name ?? stored.projectId,
    auth: record.auth,
    allowedOrigins: record.allowedOrigins,
    allowedRequestTypes: record.allowedRequestTypes,
    state: record.state,
    createdAt: new Date(record.createdAt).toISOString(),
    policies: policiesOf(record),
    record: stored.signed,
  };
}

/** The policies view of a verified project. */
export function policiesViewOf(p: VerifiedProject): PoliciesView {
  return {
    projectId: p.record.projectId,
    seq: p.record.seq,
    recordSha256: hex(p.digest),
    policies: policiesOf(p.record),
    record: p.signed,
  };
}

export class ProjectRegistry {
  /** One record change per project at a time: the second waits, then works from the record the first stored. */
  private readonly changing = new Map<string, Promise<unknown>>();

  constructor(
    private readonly store: KeyStore,
    private readonly enclave: EnclavePool,
    private readonly logger: Logger,
    /** The identity's record checker; IDENTITY_UNAVAILABLE until the enclave pool has learned the identity. */
    private readonly records: () => RecordChecker,
    /** Called once per new record whose policies changed (the metric nks_policy_changes_total). */
    private readonly onPolicyChange: () => void = () => undefined,
  ) {}

  /** A new project: the enclave makes its record from `settings`; the parent checks it holds exactly them, and stores it. */
  async create(name: string, settings: ProjectSettings): Promise<ProjectView> {
    const checker = this.records();
    const answer = await this.enclave.call('projects.create', { settings });
    const { record } = this.checkAnswer(checker, answer, (r) => {
      return (
        r.projectId !== DEFAULT_PROJECT_ID &&
        r.projectId.startsWith('p_') &&
        r.projectKey.startsWith('pk_') &&
        sameAuth(r.auth, settings.auth) &&
        sameSet(r.allowedOrigins, settings.allowedOrigins) &&
        sameSet(r.allowedRequestTypes, settings.allowedRequestTypes) &&
        // In order: the first rule that matches decides (docs/POLICIES.md).
        isDeepStrictEqual(withPolicies(r, settings.policies), r) &&
        r.state === 'active' &&
        r.seq === 0 &&
        r.prev === null
      );
    });
    let stored: StoredProject;
    try {
      stored = await this.store.insertProject(answer.record, record, name);
    } catch (err) {
      // An id or key the database already holds: random 128-bit values do not repeat; an enclave that says so is not answering truly.
      if (err instanceof KeystoreError && err.code === 'CONFLICT')
        throw new KeystoreError('KEY_INTEGRITY', BAD_PROJECT_ANSWER, { cause: err });
      throw err;
    }
    this.logger.info({ projectId: record.projectId, auth: record.auth.type, policies: record.policies !== undefined }, 'project created');
    return projectViewOf(stored);
  }

  async get(projectId: string): Promise<ProjectView> {
    const stored = await this.store.getProject(projectId);
    if (!stored) throw new KeystoreError('NOT_FOUND', `project ${projectId} does not exist`);
    return projectViewOf(stored);
  }

  async list(q: { limit: number; cursor?: string | undefined }): Promise<{ projects: ProjectView[]; nextCursor: string | null }> {
    const page = await this.store.listProjects(q.limit, q.cursor);
    return { projects: page.projects.map(projectViewOf), nextCursor: page.nextCursor };
  }

  /** Disables or enables a project: its next record, made by the enclave, verified and stored. Nothing changes when it already is as asked. */
  async setState(projectId: string, state: ProjectState): Promise<ProjectView> {
    if (!(await this.store.getProject(projectId))) throw new KeystoreError('NOT_FOUND', `project ${projectId} does not exist`);
    return this.serially(projectId, () => this.changeState(projectId, state));
  }

  /**
   * The policies of a project's current record (verified: a client can check them with the record). NOT_FOUND
   * for a project the database does not hold.
   */
  async policies(projectId: string): Promise<PoliciesView> {
    if (!(await this.store.getProject(projectId))) throw new KeystoreError('NOT_FOUND', `project ${projectId} does not exist`);
    return policiesViewOf(await this.byId(projectId));
  }

  /**
   * Replaces a project's policies (an empty policy removes them): its next record, made by the enclave from the
   * newest stored one, verified (exactly the stored record with these policies, seq + 1) and stored. Nothing
   * changes when the record already has them. A disabled project's policies change too.
   */
  async setPolicies(projectId: string, policies: Policies, approvals?: string[]): Promise<PoliciesView> {
    if (!(await this.store.getProject(projectId))) throw new KeystoreError('NOT_FOUND', `project ${projectId} does not exist`);
    return this.serially(projectId, () => this.changePolicies(projectId, policies, approvals));
  }

  /**
   * What an approver signs for changing the project's policies from its current record to `policies`
   * (docs/POLICIES.md, "Approvers"): good for that one change of that one record. `EIP712Domain` is spelled out
   * so a wallet's `eth_signTypedData_v4` hashes the same domain.
   */
  async approval(projectId: string, policies: Policies): Promise<PolicyApprovalView> {
    if (!(await this.store.getProject(projectId))) throw new KeystoreError('NOT_FOUND', `project ${projectId} does not exist`);
    const current = await this.byId(projectId);
    const recordSha256 = hex(current.digest) as `0x${string}`;
    return {
      projectId,
      seq: current.record.seq,
      recordSha256,
      approvers: current.record.policies?.approvers ?? null,
      typedData: policyChangeTypedDataForWallet(projectId, recordSha256, policies),
    };
  }

  /** One record change per project at a time (state or policies): each works from the record the one before stored. */
  private serially<T>(projectId: string, change: () => Promise<T>): Promise<T> {
    const before = this.changing.get(projectId) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(change);
    const tail = run.catch(() => undefined);
    this.changing.set(projectId, tail);
    void tail.then(() => {
      if (this.changing.get(projectId) === tail) this.changing.delete(projectId);
    });
    return run;
  }

  private async changeState(projectId: string, state: ProjectState): Promise<ProjectView> {
    const current = await this.byId(projectId);
    if (current.record.state === state) return projectViewOf(current.stored);
    const checker = this.records();
    const answer = await this.enclave.call('projects.setState', { project: current.signed, state });
    const { record } = this.checkAnswer(checker, answer, (r) =>
      isDeepStrictEqual(r, { ...current.record, state, seq: current.record.seq + 1, prev: hex(current.digest), createdAt: r.createdAt }),
    );
    const stored = await this.store.updateProjectRecord(projectId, answer.record, record);
    this.logger.info({ projectId, state }, `project ${state === 'disabled' ? 'disabled' : 'enabled'}`);
    return projectViewOf(stored);
  }

  private async changePolicies(projectId: string, policies: Policies, approvals?: string[]): Promise<PoliciesView> {
    const current = await this.byId(projectId);
    const wanted = withPolicies(current.record, policies);
    if (isDeepStrictEqual(wanted, current.record)) return policiesViewOf(current);
    // The enclave refuses a record over the limit too; this says so before asking it, as creation does.
    const size = largestProjectRecordBytes({ ...current.record, policies });
    if (size > PROJECT_RECORD_MAX_BYTES)
      throw new KeystoreError(
        'INVALID_PARAMS',
        `body: the project's record would be ${size} bytes, over the ${PROJECT_RECORD_MAX_BYTES} a record may have: write fewer or shorter rules, limits or lists`,
      );
    const checker = this.records();
    // Approvals are the enclave's to check (a FORBIDDEN from it is the caller's answer as is).
    const answer = await this.enclave.call('projects.setPolicies', {
      project: current.signed,
      policies,
      ...(approvals === undefined ? {} : { approvals }),
    });
    const next = this.checkAnswer(checker, answer, (r) =>
      isDeepStrictEqual(r, { ...wanted, seq: current.record.seq + 1, prev: hex(current.digest), createdAt: r.createdAt }),
    );
    const stored = await this.store.updateProjectRecord(projectId, answer.record, next.record);
    this.onPolicyChange();
    // The hashes name both records (the policies themselves are in them, not in the log).
    this.logger.info(
      {
        projectId,
        seq: next.record.seq,
        oldRecordSha256: hex(current.digest),
        newRecordSha256: hex(next.digest),
        rules: policies.rules.length,
        limits: policies.limits.length,
        approvals: approvals?.length ?? 0,
      },
      'project policies changed',
    );
    return policiesViewOf({ stored, signed: stored.signed, record: next.record, digest: next.digest });
  }

  /** An enclave's project answer: the record is signed by the identity, names the answer's id and key, and passes `expected`. */
  private checkAnswer(
    checker: RecordChecker,
    answer: ProjectResult,
    expected: (r: ProjectRecord) => boolean,
  ): { record: ProjectRecord; digest: Buffer } {
    let opened: { record: ProjectRecord; digest: Buffer };
    try {
      opened = checker.project(answer?.record);
    } catch (err) {
      throw new KeystoreError('KEY_INTEGRITY', BAD_PROJECT_ANSWER, { cause: err });
    }
    const r = opened.record;
    if (answer.projectId !== r.projectId || answer.projectKey !== r.projectKey || !expected(r))
      throw new KeystoreError('KEY_INTEGRITY', BAD_PROJECT_ANSWER);
    return opened;
  }

  /**
   * A stored project with its record verified and matching its row (id, seq, and the copied key and state).
   * KEY_INTEGRITY if it is missing or does not verify.
   */
  async byId(projectId: string): Promise<VerifiedProject> {
    const stored = await this.store.getProject(projectId);
    if (!stored) throw new KeystoreError('KEY_INTEGRITY', `project ${projectId} is not in the database`);
    return this.verify(stored);
  }

  /** The stored project of a project key, verified; undefined if no project has this key. */
  async byKey(projectKey: string): Promise<VerifiedProject | undefined> {
    const stored = await this.store.getProjectByKey(projectKey);
    if (!stored) return undefined;
    const v = this.verify(stored);
    if (v.record.projectKey !== projectKey) throw this.tampered(stored.projectId);
    return v;
  }

  private verify(stored: StoredProject): VerifiedProject {
    let opened: { record: ProjectRecord; digest: Buffer };
    try {
      opened = this.records().project(stored.signed);
    } catch (err) {
      if (err instanceof KeystoreError && err.code === 'IDENTITY_UNAVAILABLE') throw err;
      throw this.tampered(stored.projectId, err);
    }
    const { record, digest } = opened;
    const matches =
      record.projectId === stored.projectId &&
      record.seq === stored.seq &&
      (stored.projectKey === null || stored.projectKey === record.projectKey) &&
      (stored.state === null || stored.state === record.state) &&
      // The columns queries select by (a token below admin's lists leave out JWT projects' keys by auth_type).
      (stored.authType === null || stored.authType === record.auth.type) &&
      chained(record, stored.recordPrev);
    if (!matches) throw this.tampered(stored.projectId);
    return { stored, signed: stored.signed, record, digest };
  }

  private tampered(projectId: string, cause?: unknown): KeystoreError {
    this.logger.warn({ projectId }, `refused project ${projectId}: ${TAMPERED}`);
    return new KeystoreError('KEY_INTEGRITY', `project ${projectId}: ${TAMPERED}`, { cause });
  }

  /**
   * The hosts of the `jwksUri` of every active JWT project whose record verifies (lower case): the egress relay
   * allows connections to these (docs/PROJECTS.md, "JWKS"). Empty until the identity is known. Cheap enough
   * to call per relay connection: one query, and records verified once (the checker remembers them).
   */
  private lastJwksHosts: string[] | undefined;

  async jwksHosts(): Promise<string[]> {
    let projects: StoredProject[];
    try {
      projects = await this.store.activeJwtProjects();
    } catch (err) {
      // The database is down: the hosts known last, so JWKS refreshes do not fail with it.
      if (this.lastJwksHosts) return this.lastJwksHosts;
      throw err;
    }
    const hosts = new Set<string>();
    for (const stored of projects) {
      try {
        const { record } = this.verify(stored);
        if (record.state === 'active' && record.auth.type === 'jwt') hosts.add(new URL(record.auth.jwksUri).hostname);
      } catch {
        // Not known yet (no identity), or refused and logged: its host is not allowed.
      }
    }
    this.lastJwksHosts = [...hosts];
    return this.lastJwksHosts;
  }
}
