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
 * `disabled` is a separate flag, kept as it is by every transition and inherited by a successor: a rotation
 * does not undo an operator's hold. A record that does not fit the others (another
 * project, a predecessor that is not the one named) is the one KEY_INTEGRITY; a genuine record in a state that
 * does not allow the change is KEY_STATE naming the state. Who may ask is the vault's rule (`authorize`): for a
 * JWT project, the key's user with a JWT for exactly this change (auth/jwt.ts); no operator can.
 *
 * Each made record is remembered (records/verified.ts) before it is answered: from then on the record before is
 * refused, so a parent replaying a key's active record after its retirement gets KEY_INTEGRITY while the enclave
 * runs (across a restart: docs/SECURITY.md, "The key lifecycle"). A retired or cancelled key is dropped from the
 * key cache; it would be refused anyway (keys/vault.ts, `states`).
 *
 * An activate or cancel asked again with the same records (the answer was lost before the store kept it: a
 * crash, a failed write) is answered the records it made then, if they are still the newest, after the same
 * authorization: otherwise the records before are refused and the records made exist nowhere, and the user could
 * neither finish nor undo the change until the enclave restarts. Answering them again gives nobody anything new.
 */
import { KeystoreError } from '@nks/shared/errors';
import type { ActivateResult, CreateResult, SetDisabledResult } from '@nks/shared/enclave-api';
import type { LifecycleAction } from '@nks/shared/project-auth';
import { hex, type KeyRecord, type KeyState, type ProjectRecord, type SignedRecord } from '@nks/shared/records';
import type { JwtUser } from '../auth/jwt';
import type { KeystoreIdentity } from '../identity/keystore-identity';
import type { Verified, VerifiedRecords } from '../records/verified';
import { Lru } from '../records/lru';
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
  /**
   * Makes the successor of `predecessor`: a new key as keys.create makes one, in state pending, with its subject,
   * `predecessor` set to its key id, and its `disabled` flag (an operator's hold is not undone by a rotation).
   */
  make(keyId: string, project: ProjectRecord, predecessor: KeyRecord, attest: boolean): Promise<CreateResult>;
}

/** How many transitions' answers are kept for a repeated request (a few hundred bytes each). */
const ANSWERS_KEPT = 4096;

export class KeyLifecycle {
  /** The records made by recent activates and cancels, by the digests of the records they were made from. */
  private readonly answered = new Lru<string, ActivateResult | SetDisabledResult>(ANSWERS_KEPT);

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
    return this.deps.make(p.keyId, project.record, old.record, p.attest ?? false);
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
    const again = `activate\u0000${hex(key.digest)}\u0000${hex(before.digest)}`;
    const made = this.answered.get(again) as ActivateResult | undefined;
    if (made) return this.answerAgain(made, [made.record, made.predecessor], project, k, p.jwt, 'activate');
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
    // Both remembered, and both keys pinned (the retired one final, the successor never pending again), with no
    // wait between them: no request sees one change without the other. At the bound of pinned keys neither is
    // (OVERLOADED), and nothing has changed.
    records.rememberActivation(active, retired);
    this.deps.cache.forget(b.keyId);
    const result = { record: active, predecessor: retired };
    this.answered.set(again, result);
    return result;
  }

  async cancel(p: CancelInput): Promise<SetDisabledResult> {
    const { records } = this.deps;
    const key = records.key(p.record);
    const project = records.project(p.project);
    if (key.record.projectId !== project.record.projectId) throw records.refused();
    const again = `cancel\u0000${hex(key.digest)}`;
    const made = this.answered.get(again);
    if (made) return this.answerAgain(made, [made.record], project, key.record, p.jwt, 'cancel');
    records.current(key);
    records.current(project);
    if (key.record.state !== 'pending') throw keyStateError(key.record.state);
    const user = await this.deps.authorize(project.record, key.record, p.jwt, 'cancel');
    this.stillCurrent([key, project], user);
    const record = this.sign(nextKeyRecord(key, { state: 'cancelled' }, this.deps.now()));
    records.remember<KeyRecord>(record, 'key');
    this.deps.cache.forget(key.record.keyId);
    this.answered.set(again, { record });
    return { record };
  }

  /**
   * A transition asked again with the records it was made from: the same authorization as the first time, then
   * the records made then, if they are still the newest of their keys (KEY_INTEGRITY otherwise, as for any
   * superseded record). The project record must be current, as for any request.
   */
  private async answerAgain<R extends ActivateResult | SetDisabledResult>(
    made: R,
    records: SignedRecord[],
    project: Verified<ProjectRecord>,
    key: KeyRecord,
    jwt: string | undefined,
    action: LifecycleAction,
  ): Promise<R> {
    const r = this.deps.records;
    r.current(project);
    const user = await this.deps.authorize(project.record, key, jwt, action);
    r.stillCurrent(project);
    user?.stillValid();
    for (const signed of records) if (!r.isCurrent(r.key(signed))) throw r.refused();
    return made;
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
