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
 */
import { randomBytes } from 'node:crypto';
import type { ProjectResult } from '@nks/shared/enclave-api';
import type { ProjectSettings } from '@nks/shared/projects-schema';
import { hex, RECORD_VERSION, type ProjectRecord, type ProjectState, type SignedRecord } from '@nks/shared/records';
import type { KeystoreIdentity } from './identity/keystore-identity';
import type { VerifiedRecords } from './records/verified';

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

  private signed(record: ProjectRecord): ProjectResult {
    const { signed } = this.deps.identity().sign(record);
    // The newest record of the project from now on: the one before is refused.
    const { record: made } = this.deps.records.remember<ProjectRecord>(signed, 'project');
    // A disabled project's keys sign nothing (KeyVault.sign checks the project's record again after every
    // wait): their secrets leave the cache now, as a disabled key's do.
    if (made.state !== 'active') this.deps.onDisabled?.(made.projectId);
    return { projectId: made.projectId, projectKey: made.projectKey, record: signed };
  }
}
