/**
 * The key lifecycle in the enclave (docs/RECORDS.md, "Key states"; docs/PROTOCOL.md, "Key lifecycle"):
 * `pending → active | cancelled`, `active → retired`, each a new enclave-signed record (seq + 1, prev = the
 * digest of the record before), decided here from the signed records the parent hands back:
 *
 * - successor: the key must be `active` (a disabled one too: its owner may well want to replace it) in an active
 *   project; the new key (made like keys.create, no KMS call) is `pending`, same project and subject, and all
 *   its records name the key it succeeds (`predecessor`).
 * - activate: the key must be `pending`, `predecessor` the current record of the key its records name (same
 *   project and subject), `active`, in an active project; both next records are made and remembered together.
 * - cancel: the key must be `pending` (in any project state: giving a key up takes no power away from anyone).
 *
 * `disabled` is a separate flag, kept as it is by every transition. A record that does not fit the others (another
 * project, a predecessor that is not the one named) is the one KEY_INTEGRITY; a genuine record in a state that
 * does not allow the change is KEY_STATE naming the state. Who may ask is the vault's rule (`authorize`): for a
 * JWT project, the key's user with a JWT for exactly this change (auth/jwt.ts); no operator can.
 *
 * Each made record is remembered (records/verified.ts) before it is answered: from then on the record before is
 * refused, so a parent replaying a key's active record after its retirement gets KEY_INTEGRITY while the enclave
 * runs (across a restart: docs/SECURITY.md, "The key lifecycle"). A retired or cancelled key is dropped from the
 * key cache; it would be refused anyway (keys/vault.ts, `states`).
 */
import { KeystoreError } from '@nks/shared/errors';
import type { ActivateResult, CreateResult, SetDisabledResult } from '@nks/shared/enclave-api';
import type { LifecycleAction } from '@nks/shared/project-auth';
import { hex, type KeyRecord, type KeyState, type ProjectRecord, type SignedRecord } from '@nks/shared/records';
import type { JwtUser } from '../auth/jwt';
import type { KeystoreIdentity } from '../identity/keystore-identity';
import type { Verified, VerifiedRecords } from '../records/verified';
import type { KeyCache } from './cache';

/** A transition from a state that does not allow it: the state named, in the message and in `details`. */
export function keyStateError(state: KeyState, which: 'key' | 'predecessor' = 'key'): KeystoreError {
  return new KeystoreError('KEY_STATE', `the ${which} is ${state}`, { details: { state } });
}

/** The next record of a key: `change` applied, seq + 1, prev = the digest of the record before, made now. */
export function nextKeyRecord(key: Verified<KeyRecord>, change: Partial<Pick<KeyRecord, 'state' | 'disabled'>>, now: number): KeyRecord {
  // The spread keeps every other field, `predecessor` included.
  return { ...key.record, ...change, seq: key.record.seq + 1, prev: hex(key.digest), createdAt: now };
}

export interface SuccessorInput {
  keyId: string;
  record: SignedRecord;
  project: SignedRecord;
  attest?: boolean | undefined;
  jwt?: string | undefined;
}
export interface ActivateInput {
  record: SignedRecord;
  predecessor: SignedRecord;
  project: SignedRecord;
  jwt?: string | undefined;
}
export interface CancelInput {
  record: SignedRecord;
  project: SignedRecord;
  jwt?: string | undefined;
}

export interface LifecycleDeps {
  records: VerifiedRecords;
  identity: () => KeystoreIdentity;
  cache: Pick<KeyCache, 'forget'>;
  now: () => number;
  /**
   * Whether the caller may change `key`: the vault's rule (keys/vault.ts). A token project takes no JWT; a JWT
   * project's change needs its user's JWT for `action`. Answers the verified user (undefined for a token project).
   */
  authorize(project: ProjectRecord, key: KeyRecord, jwt: string | undefined, action: LifecycleAction): Promise<JwtUser | undefined>;
  /** Makes the successor: a new key as keys.create makes one, in state pending with `predecessor` set. */
  make(keyId: string, project: ProjectRecord, subject: string | null, predecessor: string, attest: boolean): Promise<CreateResult>;
}

export class KeyLifecycle {
  constructor(private readonly deps: LifecycleDeps) {}

  async successor(p: SuccessorInput): Promise<CreateResult> {
    const { records } = this.deps;
    const old = records.key(p.record);
    const project = records.project(p.project);
    if (old.record.projectId !== project.record.projectId) throw records.refused();
    records.current(old);
    records.current(project);
    if (old.record.state !== 'active') throw keyStateError(old.record.state);
    activeProject(project.record);
    if (p.keyId === old.record.keyId) throw new KeystoreError('INVALID_PARAMS', 'a successor needs a key id of its own');
    const user = await this.deps.authorize(project.record, old.record, p.jwt, 'rotate');
    // The JWT check may have waited (a JWKS fetch): the key may have been changed meanwhile.
    this.stillCurrent([old, project], user);
    return this.deps.make(p.keyId, project.record, old.record.subject, old.record.keyId, p.attest ?? false);
  }

  async activate(p: ActivateInput): Promise<ActivateResult> {
    const { records } = this.deps;
    const key = records.key(p.record);
    const before = records.key(p.predecessor);
    const project = records.project(p.project);
    const k = key.record;
    const b = before.record;
    if (
      k.projectId !== project.record.projectId ||
      b.projectId !== project.record.projectId ||
      k.predecessor !== b.keyId ||
      k.subject !== b.subject
    )
      throw records.refused();
    records.current(key);
    records.current(before);
    records.current(project);
    if (k.state !== 'pending') throw keyStateError(k.state);
    if (b.state !== 'active') throw keyStateError(b.state, 'predecessor');
    activeProject(project.record);
    const user = await this.deps.authorize(project.record, k, p.jwt, 'activate');
    this.stillCurrent([key, before, project], user);
    const now = this.deps.now();
    const active = this.sign(nextKeyRecord(key, { state: 'active' }, now));
    const retired = this.sign(nextKeyRecord(before, { state: 'retired' }, now));
    // Both remembered with no wait between them: no request sees one change without the other.
    records.remember<KeyRecord>(active, 'key');
    records.remember<KeyRecord>(retired, 'key');
    this.deps.cache.forget(b.keyId);
    return { record: active, predecessor: retired };
  }

  async cancel(p: CancelInput): Promise<SetDisabledResult> {
    const { records } = this.deps;
    const key = records.key(p.record);
    const project = records.project(p.project);
    if (key.record.projectId !== project.record.projectId) throw records.refused();
    records.current(key);
    records.current(project);
    if (key.record.state !== 'pending') throw keyStateError(key.record.state);
    const user = await this.deps.authorize(project.record, key.record, p.jwt, 'cancel');
    this.stillCurrent([key, project], user);
    const record = this.sign(nextKeyRecord(key, { state: 'cancelled' }, this.deps.now()));
    records.remember<KeyRecord>(record, 'key');
    this.deps.cache.forget(key.record.keyId);
    return { record };
  }

  /** After a wait: the records still the newest seen (so their states are those of now), the JWT unexpired. */
  private stillCurrent(all: Array<Verified<KeyRecord> | Verified<ProjectRecord>>, user: JwtUser | undefined): void {
    for (const v of all) this.deps.records.stillCurrent(v);
    user?.stillValid();
  }

  private sign(record: KeyRecord): SignedRecord {
    return this.deps.identity().sign(record).signed;
  }
}

/** Keys are made and activated only in an active project. */
function activeProject(project: ProjectRecord): void {
  if (project.state !== 'active') throw new KeystoreError('KEY_DISABLED', 'the project is disabled');
}
