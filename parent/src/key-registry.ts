/**
 * What the caller API does with keys, independent of HTTP: create (idempotent by external id), read, list,
 * sign through the enclave, disable and enable, the lifecycle (successor, activate, cancel, history:
 * docs/LIFECYCLE.md), and fetch attestation documents and the keystore identity.
 *
 * Every key carries a record signed by the keystore identity (docs/RECORDS.md). The registry verifies the
 * stored record and its project's record before it asks the enclave anything about a key (a row that does not
 * verify, or does not match the key's blob, is KEY_INTEGRITY and the enclave is never asked), and verifies
 * every record the enclave answers with before storing it. The enclave checks them all again: this is not
 * what protects keys from the parent, only what makes a damaged database fail early and clearly.
 */
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { decodeKeyBlob, type KeyBlob } from '@nks/shared/blob';
import type { CreateResult } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import { newKeyId } from '@nks/shared/identifiers';
import type { Logger } from '@nks/shared/log';
import {
  DEFAULT_PROJECT_ID,
  hex,
  recordDigest,
  type KeyRecord,
  type KeyState,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';
import type { SignBatchItem, SignRequestInput, SignResult } from '@nks/shared/signing/schema';
import type { PolicyDecision } from '@nks/shared/policy/decision';
import type { PoliciesInput } from '@nks/shared/policy/schema';
import { RecordChecker, type KnownIdentity } from './enclave-link/identity';
import type { EnclavePool } from './enclave-link/pool';
import { ProjectRegistry } from './project-registry';
import type { KeyStore } from './store/key-store';
import {
  chained,
  keyStateError,
  type IdempotencyClaim,
  type IdempotencyEntry,
  type KeyFilter,
  type Page,
  type StoredKey,
} from './store/types';

export interface KeyView {
  keyId: string;
  address: string;
  publicKey: string;
  externalId: string | null;
  labels: Record<string, string>;
  createdAt: string;
  disabled: boolean;
  /** From the key's signed record; null for a key made before 0.4 and not migrated yet. */
  projectId: string | null;
  state: KeyState | null;
  /** The key's current record as the enclave signed it (canonical CBOR and signature, base64). */
  record: SignedRecord | null;
  /** A successor's: the key it succeeds (docs/LIFECYCLE.md). */
  predecessor?: string;
  /** The birth attestation, when one was made at creation. */
  attestation?: string;
}

/** A key in a history (docs/LIFECYCLE.md): its state and times, without its record. */
export interface HistoryEntry {
  keyId: string;
  address: string;
  state: KeyState | null;
  disabled: boolean;
  predecessor: string | null;
  createdAt: string;
  updatedAt: string;
}

export const historyEntryOf = (k: StoredKey): HistoryEntry => ({
  keyId: k.keyId,
  address: k.address,
  state: k.state,
  disabled: k.disabled,
  predecessor: k.predecessor,
  createdAt: new Date(k.createdAt).toISOString(),
  updatedAt: new Date(k.updatedAt).toISOString(),
});

export function viewOf(k: StoredKey): KeyView {
  return {
    keyId: k.keyId,
    address: k.address,
    publicKey: k.publicKey,
    externalId: k.externalId,
    labels: k.labels,
    createdAt: new Date(k.createdAt).toISOString(),
    disabled: k.disabled,
    projectId: k.projectId,
    state: k.state,
    record: k.record,
    ...(k.predecessor ? { predecessor: k.predecessor } : {}),
    ...(k.attestation ? { attestation: k.attestation } : {}),
  };
}

/** What a create asks for (POST /v1/keys's body). */
export interface CreateInput {
  externalId?: string | undefined;
  labels?: Record<string, string> | undefined;
  attest?: boolean | undefined;
  projectId?: string | undefined;
}

/**
 * A create's answer: the key, whether this request made it, for an existing external id what of the request it
 * differs in (`mismatch`: field names only), and whether it is an Idempotency-Key's earlier answer (`replayed`).
 */
export interface CreateOutcome {
  record: StoredKey;
  created: boolean;
  mismatch?: MismatchField[];
  replayed?: boolean;
}

/** The fields of a create that an existing key of its external id can differ in. */
export type MismatchField = 'labels' | 'attest';

/** How long an Idempotency-Key is remembered with the key its create made. */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;

/** A label map in one order, so two maps compare (and hash) equal whatever order their names came in. */
const sortedLabels = (labels: Record<string, string> | undefined): Array<[string, string]> =>
  Object.entries(labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

/**
 * The digest an Idempotency-Key's entry keeps of its request: the body as the create reads it (absent labels are
 * none, absent `attest` false, absent `projectId` `default`; label order does not count).
 */
export function idempotencyDigest(input: CreateInput): string {
  const normalized = [input.externalId ?? null, sortedLabels(input.labels), input.attest ?? false, input.projectId ?? DEFAULT_PROJECT_ID];
  return createHash('sha256').update(JSON.stringify(normalized)).digest('hex');
}

/**
 * What of a create's request an existing key differs in, of the fields the request gives: its labels, whether it
 * has a birth attestation (`attest`). A request with the external id alone differs in nothing.
 */
export function mismatchOf(k: StoredKey, input: CreateInput): MismatchField[] {
  const out: MismatchField[] = [];
  if (input.labels !== undefined && JSON.stringify(sortedLabels(k.labels)) !== JSON.stringify(sortedLabels(input.labels)))
    out.push('labels');
  if (input.attest !== undefined && (k.attestation !== null) !== input.attest) out.push('attest');
  return out;
}

/** Key ids are chosen here: 128 random bits, URL-safe. */
export { newKeyId };

export const blobSha256 = (blob: string): string => hex(createHash('sha256').update(Buffer.from(blob, 'base64')).digest());

/** The one message for a stored key or project whose record (or blob) does not verify (the log says which key). */
export const TAMPERED_ROW = 'the stored record does not verify: the database was altered or belongs to another keystore identity';
/** The one message for an enclave answer whose record does not match what was asked. */
export const BAD_ANSWER = 'the enclave answered with a record that does not match the request';

/** A key the enclave made or re-sealed, checked against what was asked. */
export interface CheckedKey {
  made: CreateResult;
  record: KeyRecord;
}

/**
 * Checks a `keys.create`, `keys.migrate` or `keys.successor` answer: the record is signed by the identity, is
 * the key's first (seq 0, of this origin; active and enabled, or for a successor pending, naming `predecessor`
 * and disabled as `disabled` says: a successor inherits its predecessor's flag), names this key id, address, project and subject, and binds the blob returned; the blob is
 * version 2 for the same key. KEY_INTEGRITY otherwise.
 */
export function checkNewKey(
  checker: RecordChecker,
  made: CreateResult,
  expected: {
    keyId: string;
    projectId: string;
    subject: string | null;
    origin: 'created' | 'migrated';
    address?: string;
    predecessor?: string;
    disabled?: boolean;
  },
): CheckedKey {
  const fail = (cause?: unknown) => new KeystoreError('KEY_INTEGRITY', BAD_ANSWER, { cause });
  if (made?.keyId !== expected.keyId || typeof made.blob !== 'string') throw fail();
  let record: KeyRecord;
  let blob: KeyBlob;
  try {
    record = checker.key(made.record).record;
    blob = decodeKeyBlob(made.blob);
  } catch (err) {
    throw fail(err);
  }
  const ok =
    record.keyId === expected.keyId &&
    record.address === made.address &&
    (expected.address === undefined || record.address === expected.address) &&
    record.blobSha256 === blobSha256(made.blob) &&
    record.projectId === expected.projectId &&
    record.subject === expected.subject &&
    record.state === (expected.predecessor === undefined ? 'active' : 'pending') &&
    record.predecessor === expected.predecessor &&
    record.disabled === (expected.disabled ?? false) &&
    record.seq === 0 &&
    record.prev === null &&
    record.origin === expected.origin &&
    blob.keyId === expected.keyId &&
    blob.address === made.address &&
    blob.projectId === expected.projectId &&
    blob.subject === expected.subject;
  if (!ok) throw fail();
  return { made, record };
}

/** The answer to an operator route asked to act on a JWT project's key (docs/PROJECTS.md): only its user's JWT can. */
export const JWT_KEY_REFUSED = "a JWT project's key signs only with its user's JWT (the TrueWallet API), never with an operator token";
/** The answer to an operator route asked to change a JWT project key's lifecycle (docs/LIFECYCLE.md). */
export const JWT_LIFECYCLE_REFUSED =
  "a JWT project's key changes state only with its user's JWT carrying nks_action (the TrueWallet API: wallets/rotate, wallets/activate, wallets/cancel), never with an operator token";

/** The lifecycle transitions (docs/LIFECYCLE.md), as counted in `nks_key_transitions_total`. */
export type Transition = 'successor' | 'activate' | 'cancel';

export interface VerifiedKey {
  record: KeyRecord;
  digest: Buffer;
  signed: SignedRecord;
  project: { signed: SignedRecord; record: ProjectRecord };
}

export class KeyRegistry {
  /** One creation per external id at a time: concurrent requests for it share the first one's key, if it made one of it. */
  private readonly creating = new Map<
    string,
    Promise<{ record: StoredKey; created: boolean; idempotent?: IdempotencyEntry } | undefined>
  >();
  /** Creates by Idempotency-Key under way here (scope and key): a second one waits for the first, then finds its entry. */
  private readonly idempotent = new Map<string, Promise<unknown>>();
  /** One record change per key at a time: the second waits, then works from the record the first stored. */
  private readonly changing = new Map<string, Promise<unknown>>();
  private checker: RecordChecker | undefined;
  /** Per stored row object: the blob text hashed and its SHA-256 (blobDigestOf). */
  private readonly blobDigests = new WeakMap<StoredKey, { blob: string; sha256: string }>();
  readonly projects: ProjectRegistry;

  constructor(
    private readonly store: KeyStore,
    private readonly enclave: EnclavePool,
    private readonly logger: Logger,
    private readonly options: { onPolicyChange?: () => void; onTransition?: (t: Transition) => void } = {},
  ) {
    this.projects = new ProjectRegistry(store, enclave, logger, () => this.records(), options.onPolicyChange);
  }

  /**
   * The identity, once the pool has learned it (the enclave pool calls this). Seeds the default project's
   * record into the store if it has none; a stored one the identity did not sign is logged (every key of the
   * project then answers KEY_INTEGRITY).
   */
  async useIdentity(identity: KnownIdentity): Promise<void> {
    this.checker = new RecordChecker(identity);
    const seeded = await seedDefaultProject(this.store, this.checker);
    if (!seeded.ok)
      this.logger.error(
        { identity: identity.publicKey },
        'the default project stored in the database is not signed by the enclave identity: keys of this database will not sign',
      );
    const pending = await this.store.keysPendingDisable();
    if (pending.length > 0) void this.applyPendingDisables(pending);
    const { withoutRecord } = await this.store.counts();
    if (withoutRecord > 0)
      this.logger.warn(
        { keys: withoutRecord },
        'keys made before 0.4 have no signed record and cannot sign until migrated (parent migrate, with the migration image)',
      );
  }

  /**
   * Keys disabled before 0.4 are migrated with an enabled record (the migration image records no state but
   * "active, enabled"); the parent refuses them meanwhile. Once an enclave with the identity is up, their
   * disable is recorded through it, one key after another; a failure is logged and retried at the next start.
   */
  private async applyPendingDisables(keyIds: string[]): Promise<void> {
    try {
      await this.enclave.waitUp(60_000);
      for (const keyId of keyIds) await this.setDisabled(keyId, true);
      this.logger.info({ keys: keyIds.length }, 'recorded the disable of keys migrated while disabled');
    } catch (err) {
      this.logger.warn(
        { err },
        'could not record the disable of keys migrated while disabled; they stay refused, and it is retried at the next start',
      );
    }
  }

  /** The identity's record checker; IDENTITY_UNAVAILABLE until the enclave pool has learned the identity. */
  records(): RecordChecker {
    if (!this.checker) throw new KeystoreError('IDENTITY_UNAVAILABLE', 'the keystore identity is not known yet: the enclave is not ready');
    return this.checker;
  }

  /**
   * A key of a token project (`default` unless `projectId` names another). Idempotent by external id: the key
   * that has it is returned (CONFLICT if that key is another project's), with `mismatch` naming what of the
   * request it differs in (`labels`, `attest`). A JWT project's keys are made only through the TrueWallet API,
   * with their user's JWT: FORBIDDEN here.
   *
   * With an Idempotency-Key (`idempotency`: the caller's namespace and its key), the key a create of it made in the
   * last 24 hours is answered (`replayed`) when the request body is the same (normalized: `idempotencyDigest`),
   * and IDEMPOTENCY_KEY_REUSED when it is not; concurrent creates of one Idempotency-Key make one key, on one
   * instance or several (the store claims the entry in the key's transaction).
   */
  async create(input: CreateInput, idempotency?: { scope: string; key: string }): Promise<CreateOutcome> {
    if (!idempotency) return this.createOnce(input);
    const bodySha256 = idempotencyDigest(input);
    const id = `${idempotency.scope}\u0000${idempotency.key}`;
    const same = (entry: { bodySha256: string }) => {
      if (entry.bodySha256 !== bodySha256)
        throw new KeystoreError(
          'IDEMPOTENCY_KEY_REUSED',
          'this Idempotency-Key was used with another request body in the last 24 hours: use a new key for another request',
        );
    };
    // Creates of this Idempotency-Key here run one after another, each after the one before it has stored its entry
    // (or failed): registered before any await, so two of them never both pass the look-up below.
    const before = this.idempotent.get(id);
    const run = (async (): Promise<CreateOutcome> => {
      await before?.catch(() => undefined);
      const now = Date.now();
      const entry = await this.store.idempotency(idempotency.scope, idempotency.key, now);
      if (entry) {
        same(entry);
        return { record: await this.replayable(await this.get(entry.keyId), input), created: false, replayed: true };
      }
      const claim = { ...idempotency, bodySha256, now, expiresAt: now + IDEMPOTENCY_TTL_MS };
      const r = await this.createOnce(input, claim);
      if (!r.idempotent) return r;
      same(r.idempotent);
      return { record: await this.replayable(r.record, input), created: false, replayed: true };
    })();
    const tail = run.catch(() => undefined);
    this.idempotent.set(id, tail);
    void tail.then(() => {
      if (this.idempotent.get(id) === tail) this.idempotent.delete(id);
    });
    return run;
  }

  /**
   * The key an Idempotency-Key's entry names, as a replay of `input` answers it: a genuine key (`answerable`) that a
   * create of this very request could have made, its signed record of the request's project (a token project) and
   * subject (the external id, or none), made by a create (not migrated, not a successor). So an entry the database
   * alone wrote answers no key of another project or subject (KEY_INTEGRITY); docs/SECURITY.md, "Idempotency keys",
   * says what remains within one project.
   */
  private async replayable(k: StoredKey, input: CreateInput): Promise<StoredKey> {
    await this.answerable(k);
    const { record, project } = await this.verified(k);
    const ok =
      record.projectId === (input.projectId ?? DEFAULT_PROJECT_ID) &&
      record.subject === (input.externalId ?? null) &&
      record.origin === 'created' &&
      record.predecessor === undefined &&
      project.record.auth.type === 'token';
    if (!ok) {
      this.logger.warn({ keyId: k.keyId }, `refused key ${k.keyId}: an Idempotency-Key entry names a key its request did not make`);
      throw new KeystoreError('KEY_INTEGRITY', `key ${k.keyId}: ${TAMPERED_ROW}`);
    }
    return k;
  }

  private async createOnce(input: CreateInput, claim?: IdempotencyClaim): Promise<CreateOutcome & { idempotent?: IdempotencyEntry }> {
    const { externalId } = input;
    const projectId = input.projectId ?? DEFAULT_PROJECT_ID;
    const sameProject = (r: { record: StoredKey; created: boolean; idempotent?: IdempotencyEntry }) => {
      if (r.idempotent) return r;
      if ((r.record.projectId ?? DEFAULT_PROJECT_ID) !== projectId)
        throw new KeystoreError('CONFLICT', `externalId ${externalId} belongs to a key of another project`);
      return r.created ? r : { ...r, mismatch: mismatchOf(r.record, input) };
    };
    if (externalId === undefined) return this.createNew(input, projectId, claim);
    // A create of this external id under way here is shared only when it stored a key of this external id: not when
    // its insert answered another create's Idempotency-Key entry (another body's key), nor when it failed (its
    // error is for its request: this one looks up and creates again, and gets its own answer).
    for (let attempt = 0; ; attempt++) {
      const existing = await this.store.getByExternalId(externalId);
      if (existing) return sameProject({ record: await this.answerable(existing, externalId), created: false });
      const p = this.creating.get(externalId);
      if (!p || attempt === 2) {
        const own = this.createNew(input, projectId, claim);
        if (!p) {
          // Its failure is not the joiners' (they create again): the slot never rejects.
          const slot = own.then(
            (r) => r,
            () => undefined,
          );
          this.creating.set(externalId, slot);
          void slot.then(() => {
            if (this.creating.get(externalId) === slot) this.creating.delete(externalId);
          });
        }
        return sameProject(await own);
      }
      const shared = await p;
      if (shared && !shared.idempotent && shared.record.subject === externalId)
        return sameProject({ record: await this.answerable(shared.record, externalId), created: false });
    }
  }

  private async createNew(
    input: {
      externalId?: string | undefined;
      labels?: Record<string, string> | undefined;
      attest?: boolean | undefined;
    },
    projectId: string,
    claim?: IdempotencyClaim,
  ): Promise<{ record: StoredKey; created: boolean; idempotent?: IdempotencyEntry }> {
    const checker = this.records();
    if (projectId !== DEFAULT_PROJECT_ID && !(await this.store.getProject(projectId)))
      throw new KeystoreError('INVALID_PARAMS', `body.projectId: project ${projectId} does not exist`);
    const project = await this.project(projectId);
    if (project.record.auth.type === 'jwt')
      throw new KeystoreError(
        'FORBIDDEN',
        `project ${projectId} authorizes its users with JWTs: its keys are made through the TrueWallet API`,
      );
    if (project.record.state === 'disabled') throw new KeystoreError('KEY_DISABLED', `project ${projectId} is disabled`);
    const keyId = newKeyId();
    const subject = input.externalId ?? null;
    const made = await this.enclave.call('keys.create', { keyId, project: project.signed, subject, attest: input.attest ?? false });
    const { record } = checkNewKey(checker, made, { keyId, projectId: project.record.projectId, subject, origin: 'created' });
    const result = await this.store.insert(
      {
        keyId,
        externalId: input.externalId ?? null,
        address: made.address,
        publicKey: made.publicKey,
        blob: made.blob,
        labels: input.labels ?? {},
        attestation: made.attestation ?? null,
        createdAt: Date.now(),
        signed: made.record,
        record,
      },
      claim,
    );
    // A create of the same Idempotency-Key stored first: the key made here was never returned and is dropped.
    if (result.idempotent) return result;
    if (!result.created) {
      // Another writer (another instance, maybe) stored this external id first; the key made here was never
      // returned and is dropped. The winner is answered only if its row is a genuine key of this subject.
      this.logger.info({ externalId: input.externalId }, 'discarded a duplicate key for an existing external id');
      return { record: await this.answerable(result.record, subject), created: false };
    }
    return result;
  }

  async get(keyId: string): Promise<StoredKey> {
    const r = await this.store.get(keyId);
    if (!r) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
    return r;
  }

  /** A key as the database has it now, not as cached: what a change (under `serialized`) is decided on. */
  private async fresh(keyId: string): Promise<StoredKey> {
    const r = await this.store.getFresh(keyId);
    if (!r) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
    return r;
  }

  /**
   * A stored key as the API answers it: its record verified and matching the row (`verified`), and, when found by
   * external id, naming that external id as its subject. So no answer names a key the database alone put there:
   * with several instances on one database, a compromised one could otherwise write a row (an address of its own,
   * or another key's row under someone's external id) that an honest one would answer. A key without a record
   * (made before 0.4) is answered only on an engine no other instance writes (SQLite). KEY_INTEGRITY otherwise.
   */
  private async answerable(k: StoredKey, externalId?: string | null): Promise<StoredKey> {
    if (!k.record) {
      if (!this.store.engine.shared) return k;
      this.logger.warn({ keyId: k.keyId }, `refused key ${k.keyId}: a row without a signed record in a shared database`);
      throw new KeystoreError('KEY_INTEGRITY', `key ${k.keyId}: ${TAMPERED_ROW}`);
    }
    const { record } = await this.verified(k);
    if (externalId !== undefined && externalId !== null && record.subject !== externalId) {
      this.logger.warn({ keyId: k.keyId }, `refused key ${k.keyId}: its record is not of the external id it is stored under`);
      throw new KeystoreError('KEY_INTEGRITY', `key ${k.keyId}: ${TAMPERED_ROW}`);
    }
    return k;
  }

  /** Whether a key belongs to a JWT project (its users' keys: docs/SECURITY.md, "Who sees JWT users' keys"). */
  private async isJwtKey(k: StoredKey): Promise<boolean> {
    return k.projectId !== null && (await this.projects.byId(k.projectId)).record.auth.type === 'jwt';
  }

  /**
   * A key, for the read routes. `withJwtKeys: false` (a token below admin): a JWT project's key is answered as
   * one that does not exist, so such a token cannot list a project's users or their addresses.
   */
  async view(keyId: string, options: { withJwtKeys: boolean }): Promise<StoredKey> {
    const r = await this.answerable(await this.get(keyId));
    if (!options.withJwtKeys && (await this.isJwtKey(r))) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
    return r;
  }

  /**
   * Keys page by page, matching `filter` (by external id: the subject's key it names); `withJwtKeys: false` leaves
   * out the keys of JWT projects (as `view`), `projects` the keys of other projects (a bound token). Both, and
   * the filters, are in the query, so that neither a page nor its cursor counts the keys left out.
   */
  async list(
    q: { limit: number; cursor?: string | undefined; filter?: KeyFilter | undefined },
    options: { withJwtKeys: boolean; projects?: readonly string[] | undefined },
  ): Promise<Page> {
    const page = await this.store.list(q.limit, q.cursor, {
      withJwtKeys: options.withJwtKeys,
      projects: options.projects,
      filter: q.filter,
    });
    for (const k of page.keys) await this.answerable(k, q.filter?.externalId);
    if (options.withJwtKeys) return page;
    // The query left them out by a column; what counts is the verified project record.
    const keys: StoredKey[] = [];
    for (const k of page.keys) if (!(await this.isJwtKey(k))) keys.push(k);
    return { keys, nextCursor: page.nextCursor };
  }

  /**
   * Replaces a key's labels (PATCH /v1/keys/{keyId}): the caller's own names for it, in no record and used by no
   * policy, so the enclave is not asked. The route has checked the token reaches the key (`view`).
   */
  async setLabels(keyId: string, labels: Record<string, string>): Promise<StoredKey> {
    const r = await this.store.setLabels(keyId, labels);
    if (!r) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
    return this.answerable(r);
  }

  /** A stored project, verified. KEY_INTEGRITY if it is missing or does not verify. */
  private async project(projectId: string): Promise<{ signed: SignedRecord; record: ProjectRecord }> {
    const { signed, record } = await this.projects.byId(projectId);
    return { signed, record };
  }

  /**
   * The SHA-256 of a stored key's blob, remembered per row object (the store hands out the same object for a
   * cached row) with the blob text it was computed from: a warm sign hashes no blob, and a row whose blob is not
   * the one hashed is hashed again.
   */
  private blobDigestOf(k: StoredKey): string {
    const seen = this.blobDigests.get(k);
    if (seen && seen.blob === k.blob) return seen.sha256;
    const sha256 = blobSha256(k.blob);
    this.blobDigests.set(k, { blob: k.blob, sha256 });
    return sha256;
  }

  /**
   * A stored key with its verified record and project: the record is signed by the identity and matches the
   * row (key id, address, seq, project, subject, state, predecessor, disabled) and the blob's SHA-256; the project's record
   * is signed and is the key's project. KEY_INTEGRITY otherwise, before anything is sent to the enclave.
   */
  async verified(k: StoredKey): Promise<VerifiedKey> {
    if (!k.record) {
      throw new KeystoreError(
        'UNSUPPORTED_VERSION',
        `key ${k.keyId} was made before 0.4 and has no signed record: run the migration (parent migrate) before it can sign`,
      );
    }
    const checker = this.records();
    try {
      const { record, digest } = checker.key(k.record);
      const matches =
        record.keyId === k.keyId &&
        record.address === k.address &&
        record.seq === k.recordSeq &&
        record.projectId === k.projectId &&
        record.subject === k.subject &&
        record.state === k.state &&
        (record.predecessor ?? null) === k.predecessor &&
        record.disabled === (k.disabled && !k.disablePending) &&
        record.blobSha256 === this.blobDigestOf(k) &&
        chained(record, k.recordPrev);
      if (!matches) throw new KeystoreError('KEY_INTEGRITY', TAMPERED_ROW);
      const project = await this.project(record.projectId);
      return { record, digest, signed: k.record, project };
    } catch (err) {
      this.logger.warn({ keyId: k.keyId }, `refused key ${k.keyId}: ${TAMPERED_ROW}`);
      throw err instanceof KeystoreError && err.code === 'KEY_INTEGRITY'
        ? new KeystoreError('KEY_INTEGRITY', `key ${k.keyId}: ${TAMPERED_ROW}`, { cause: err })
        : err;
    }
  }

  /**
   * What a sign and a batch check before asking the enclave (which is the authority and checks all of it again):
   * the key's verified records, a JWT project's key (FORBIDDEN), a disabled key or project, a retired key.
   */
  private async signable(keyId: string): Promise<{ k: StoredKey; signed: SignedRecord; project: VerifiedKey['project'] }> {
    const k = await this.get(keyId);
    if (!k.record && k.disabled) throw new KeystoreError('KEY_DISABLED', `key ${keyId} is disabled`);
    const { record, signed, project } = await this.verified(k);
    if (project.record.auth.type === 'jwt') throw new KeystoreError('FORBIDDEN', `key ${keyId}: ${JWT_KEY_REFUSED}`);
    if (record.disabled || k.disablePending || project.record.state === 'disabled')
      throw new KeystoreError('KEY_DISABLED', `key ${keyId} is disabled`);
    if (record.state === 'retired' || record.state === 'cancelled')
      throw new KeystoreError('KEY_RETIRED', `key ${keyId} is ${record.state}`);
    return { k, signed, project };
  }

  /** The refusal of a request whose type the key's project does not allow, or undefined. */
  private static disallowed(project: VerifiedKey['project'], request: SignRequestInput): KeystoreError | undefined {
    const type = (request as { type?: unknown }).type;
    if (typeof type === 'string' && !(project.record.allowedRequestTypes as string[]).includes(type))
      return new KeystoreError('FORBIDDEN', `project ${project.record.projectId} does not allow ${type} requests`);
    return undefined;
  }

  /**
   * The enclave says only "no" when a record, the blob or an unseal fails (forged KMS answer or altered blob);
   * its health totals integrityFailures and failedOpens are what operators alert on.
   */
  private readonly refused =
    (keyId: string) =>
    (err: unknown): never => {
      if (err instanceof KeystoreError && err.code === 'KEY_INTEGRITY')
        this.logger.warn({ keyId }, 'the enclave refused the key: its record or blob was altered, or a KMS answer was not genuine');
      throw err;
    };

  /** An answer signed with another key than the row's is refused (KEY_INTEGRITY). */
  private static sameAddress(k: StoredKey, result: SignResult): SignResult {
    if (result.address !== k.address)
      throw new KeystoreError('KEY_INTEGRITY', `the enclave signed with ${result.address}, but key ${k.keyId} is ${k.address}`);
    return result;
  }

  /**
   * `request` is passed to the enclave as the caller sent it; the enclave validates and hashes it again.
   * `requestId` (the API's) travels to the enclave and its KMS call, for their log lines.
   */
  async sign(keyId: string, request: SignRequestInput, requestId?: string): Promise<SignResult> {
    const { k, signed, project } = await this.signable(keyId);
    const forbidden = KeyRegistry.disallowed(project, request);
    if (forbidden) throw forbidden;
    const result = await this.enclave
      .call('keys.sign', { keyId, blob: k.blob, record: signed, project: project.signed, request }, undefined, requestId)
      .catch(this.refused(keyId));
    return KeyRegistry.sameAddress(k, result);
  }

  /**
   * A batch of requests of one key (keys.signBatch): the same checks as `sign`, once; a request whose type the
   * project does not allow is answered here as `sign` answers it and not sent; the others go to the enclave in
   * one call, and each answer comes back in its request's place. An answer count or address that is not what was
   * asked fails the whole batch (KEY_INTEGRITY).
   */
  async signBatch(keyId: string, requests: SignRequestInput[], requestId?: string): Promise<SignBatchItem[]> {
    const { k, signed, project } = await this.signable(keyId);
    const answers: Array<SignBatchItem | undefined> = requests.map((request) => {
      const err = KeyRegistry.disallowed(project, request);
      return err ? { error: { code: err.code, message: err.message, retryable: err.retryable } } : undefined;
    });
    const sent = requests.filter((_, i) => answers[i] === undefined);
    if (sent.length === 0) return answers as SignBatchItem[];
    const { results } = await this.enclave
      .call('keys.signBatch', { keyId, blob: k.blob, record: signed, project: project.signed, requests: sent }, undefined, requestId)
      .catch(this.refused(keyId));
    if (!Array.isArray(results) || results.length !== sent.length)
      throw new KeystoreError('KEY_INTEGRITY', `the enclave answered ${String(results?.length)} of the ${sent.length} requests of a batch`);
    let next = 0;
    return answers.map((a) => {
      if (a) return a;
      const item = results[next++] as SignBatchItem;
      if ('result' in item) KeyRegistry.sameAddress(k, item.result);
      return item;
    });
  }

  /**
   * Disables or enables a key: the enclave signs the key's next record (`disabled` set, seq + 1), which is
   * verified and stored. Nothing changes (and no record is made) when the key already is as asked. A key made
   * before 0.4 has no record: its flag is set in the database as before (the migration carries it over).
   */
  async setDisabled(keyId: string, disabled: boolean): Promise<StoredKey> {
    return this.serialized(keyId, () => this.changeDisabled(keyId, disabled));
  }

  /**
   * Runs `change` of a key's record after the changes of that key asked before it, here and on every instance
   * sharing the database (its lock on the key id): each works from the record stored last (`fresh`), and no two
   * enclaves make rival records of one key (an enclave remembers lifecycle records it made, stored or not).
   */
  private serialized<T>(keyIds: string | readonly string[], change: () => Promise<T>): Promise<T> {
    const ids = [...new Set(typeof keyIds === 'string' ? [keyIds] : keyIds)];
    const before = Promise.all(ids.map((id) => (this.changing.get(id) ?? Promise.resolve()).catch(() => undefined)));
    // All the keys' locks in one call (one connection; the engine takes them in one order everywhere).
    const run = before.then(() => this.store.engine.withLocks(ids, change));
    const tail = run.catch(() => undefined);
    for (const id of ids) this.changing.set(id, tail);
    void tail.then(() => {
      for (const id of ids) if (this.changing.get(id) === tail) this.changing.delete(id);
    });
    return run;
  }

  /**
   * A key's next record as the enclave answered it: signed by the identity, and exactly `current` with `change`,
   * seq + 1 and chained to it (only its time is the enclave's). KEY_INTEGRITY otherwise, and nothing is stored.
   */
  private checkNext(
    answer: SignedRecord,
    current: { record: KeyRecord; digest: Buffer },
    change: Partial<Pick<KeyRecord, 'disabled' | 'state'>>,
  ): { record: KeyRecord; digest: Buffer } {
    let next: { record: KeyRecord; digest: Buffer };
    try {
      next = this.records().key(answer);
    } catch (err) {
      throw new KeystoreError('KEY_INTEGRITY', BAD_ANSWER, { cause: err });
    }
    const expected: KeyRecord = {
      ...current.record,
      ...change,
      seq: current.record.seq + 1,
      prev: hex(current.digest),
      createdAt: next.record.createdAt,
    };
    if (!isDeepStrictEqual(next.record, expected)) throw new KeystoreError('KEY_INTEGRITY', BAD_ANSWER);
    return next;
  }

  private async changeDisabled(keyId: string, disabled: boolean): Promise<StoredKey> {
    const k = await this.fresh(keyId);
    if (!k.record) {
      const r = await this.store.setLegacyDisabled(keyId, disabled);
      if (!r) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
      return r;
    }
    const { record, digest, signed, project } = await this.verified(k);
    if (record.disabled === disabled && !k.disablePending) return k;
    const answer = await this.enclave.call('keys.setDisabled', { record: signed, project: project.signed, disabled });
    const next = this.checkNext(answer?.record, { record, digest }, { disabled });
    return this.store.updateRecord(keyId, answer.record, next.record);
  }

  /**
   * A key for a lifecycle change through the caller API: verified, of a token project (a JWT project's keys
   * change only with their user's JWT: FORBIDDEN here, before the enclave, which refuses it too), in `state`
   * (KEY_STATE naming the state it is in otherwise). The enclave decides again from the signed record.
   */
  private async lifecycleKey(keyId: string, state: KeyState): Promise<{ k: StoredKey; v: VerifiedKey }> {
    const k = await this.fresh(keyId);
    const v = await this.verified(k);
    if (v.project.record.auth.type === 'jwt') throw new KeystoreError('FORBIDDEN', `key ${keyId}: ${JWT_LIFECYCLE_REFUSED}`);
    if (v.record.state !== state) throw keyStateError(keyId, v.record.state, state);
    return { k, v };
  }

  /**
   * A successor of an active key (docs/LIFECYCLE.md): a new key, same project and subject, state pending,
   * naming `keyId` as its predecessor; it signs, and becomes the subject's key when activated. It carries the
   * predecessor's external id and labels. SUCCESSOR_EXISTS when the subject has a pending key already (asked
   * before and after the enclave makes one: of concurrent requests, one is stored and the others answered so).
   */
  async successor(keyId: string, input: { attest?: boolean | undefined } = {}): Promise<StoredKey> {
    return this.serialized(keyId, () => this.makeSuccessor(keyId, input));
  }

  private async makeSuccessor(keyId: string, input: { attest?: boolean | undefined }): Promise<StoredKey> {
    const { k, v } = await this.lifecycleKey(keyId, 'active');
    const subject = v.record.subject;
    if (subject === null)
      throw new KeystoreError('INVALID_PARAMS', `key ${keyId} has no subject (made without an externalId): it cannot have a successor`);
    const exists = () => new KeystoreError('SUCCESSOR_EXISTS', `key ${keyId} already has a pending successor: activate or cancel it first`);
    if (await this.store.pendingKeyFor(v.record.projectId, subject)) throw exists();
    const newId = newKeyId();
    const made = await this.enclave.call('keys.successor', {
      keyId: newId,
      record: v.signed,
      project: v.project.signed,
      attest: input.attest ?? false,
    });
    const { record } = checkNewKey(this.records(), made, {
      keyId: newId,
      projectId: v.record.projectId,
      subject,
      origin: 'created',
      predecessor: keyId,
      disabled: v.record.disabled,
    });
    const result = await this.store.insertSuccessor({
      keyId: newId,
      externalId: k.externalId,
      address: made.address,
      publicKey: made.publicKey,
      blob: made.blob,
      labels: k.labels,
      attestation: made.attestation ?? null,
      createdAt: Date.now(),
      signed: made.record,
      record,
    });
    if (!result.created) throw exists();
    this.transition('successor', 'key successor made', {
      keyId: newId,
      predecessor: keyId,
      projectId: record.projectId,
      // Verified by checkNewKey above: only its digest is read here.
      newRecordSha256: hex(recordDigest(Buffer.from(made.record.record, 'base64'))),
      predecessorRecordSha256: hex(v.digest),
    });
    return result.record;
  }

  /**
   * Activates a pending key (docs/LIFECYCLE.md): the enclave makes its next record (active) and its
   * predecessor's (retired); both are checked, then stored in one transaction, or neither. After the other
   * changes of both keys, holding both keys' locks.
   */
  async activate(keyId: string): Promise<StoredKey> {
    // A key without predecessor is not pending: lifecycleKey answers KEY_STATE.
    const predecessorId = (await this.get(keyId)).predecessor;
    return this.serialized(predecessorId ? [keyId, predecessorId] : keyId, async () => {
      const { v } = await this.lifecycleKey(keyId, 'pending');
      const p = await this.verified(await this.fresh(predecessorId as string));
      const answer = await this.enclave.call('keys.activate', { record: v.signed, predecessor: p.signed, project: v.project.signed });
      const next = this.checkNext(answer?.record, v, { state: 'active' });
      const retired = this.checkNext(answer?.predecessor, p, { state: 'retired' });
      const [stored] = await this.store.updateRecords([
        { signed: answer.record, record: next.record },
        { signed: answer.predecessor, record: retired.record },
      ]);
      this.transition('activate', 'key activated, its predecessor retired', {
        keyId,
        predecessor: predecessorId,
        projectId: next.record.projectId,
        oldRecordSha256: hex(v.digest),
        newRecordSha256: hex(next.digest),
        predecessorOldRecordSha256: hex(p.digest),
        predecessorNewRecordSha256: hex(retired.digest),
      });
      return stored as StoredKey;
    });
  }

  /** Cancels a pending key (docs/LIFECYCLE.md): its next record says cancelled, and it never signs again. */
  async cancel(keyId: string): Promise<StoredKey> {
    return this.serialized(keyId, async () => {
      const { v } = await this.lifecycleKey(keyId, 'pending');
      const answer = await this.enclave.call('keys.cancel', { record: v.signed, project: v.project.signed });
      const next = this.checkNext(answer?.record, v, { state: 'cancelled' });
      const stored = await this.store.updateRecord(keyId, answer.record, next.record);
      this.transition('cancel', 'key cancelled', {
        keyId,
        predecessor: v.record.predecessor,
        projectId: next.record.projectId,
        oldRecordSha256: hex(v.digest),
        newRecordSha256: hex(next.digest),
      });
      return stored;
    });
  }

  /** A key's history: its subject's keys oldest first (a JWT project's, as `view`, only with `withJwtKeys`). */
  async history(keyId: string, options: { withJwtKeys: boolean }): Promise<StoredKey[]> {
    await this.view(keyId, options);
    const keys = await this.store.history(keyId);
    for (const k of keys) await this.answerable(k);
    return keys;
  }

  /** Counts and logs a transition; the record hashes name the records before and after (the records say the rest). */
  private transition(t: Transition, msg: string, fields: Record<string, unknown>): void {
    this.options.onTransition?.(t);
    this.logger.info({ transition: t, ...fields }, msg);
  }

  /**
   * A dry run of a project's policy (docs/POLICIES.md) on `request`: its record's policy, or `policies` (not
   * stored) when given; `keyId` (a key of the project, else KEY_NOT_FOUND) adds the key's own limit counters.
   * The enclave decides (nothing is counted or signed); the answer is the same whether allowed or not.
   */
  async evaluatePolicy(
    projectId: string,
    input: { request: SignRequestInput; keyId?: string | undefined; policies?: PoliciesInput | undefined },
  ): Promise<PolicyDecision> {
    if (!(await this.store.getProject(projectId))) throw new KeystoreError('NOT_FOUND', `project ${projectId} does not exist`);
    const project = await this.project(projectId);
    let record: SignedRecord | undefined;
    if (input.keyId !== undefined) {
      const k = await this.get(input.keyId);
      if (k.projectId !== projectId) throw new KeystoreError('KEY_NOT_FOUND', `key ${input.keyId} is not a key of project ${projectId}`);
      record = (await this.verified(k)).signed;
    }
    return this.enclave.call('projects.evaluatePolicy', {
      project: project.signed,
      request: input.request,
      ...(record ? { record } : {}),
      ...(input.policies !== undefined ? { policies: input.policies } : {}),
    });
  }

  async attestation(nonce?: string): Promise<{ document: string }> {
    return this.enclave.call('attestation.get', nonce ? { nonce } : {});
  }

  /** The keystore identity: its public key, the genesis document, and a fresh document for `nonce`. */
  async identity(nonce?: string): Promise<{ publicKey: string; genesisDocument: string; attestation: string }> {
    const known = this.records().identity;
    const res = await this.enclave.call('identity.get', nonce ? { nonce } : {});
    if (res?.publicKey !== known.publicKey || typeof res.attestation !== 'string')
      throw new KeystoreError('IDENTITY_UNAVAILABLE', 'the enclave answered for another keystore identity');
    return { publicKey: res.publicKey, genesisDocument: res.genesisDocument, attestation: res.attestation };
  }
}

/**
 * Stores the identity's default project record if the database has none. `ok` is false when the stored one
 * is not signed by this identity.
 */
export async function seedDefaultProject(store: KeyStore, checker: RecordChecker): Promise<{ ok: boolean }> {
  const { record } = checker.project(checker.identity.defaultProject);
  const stored = await store.seedProject(checker.identity.defaultProject, record);
  try {
    checker.project(stored.signed);
    return { ok: true };
  } catch {
    return { ok: false };
  }
}
