/**
 * The keys of JWT projects' users for the wallet routes (routes.ts, docs/PROJECTS.md), independent of HTTP: the
 * enclave's side of what the parent's wallet store keeps (WalletStoreApi, shared/src/enclave-api.ts).
 *
 * The store is the parent's, so every answer is its word (docs/TLS.md): its shape is checked with the `…Answer`
 * schemas (a malformed answer, like no answer within `storeDeadlineMs`, is UNAVAILABLE: the parent denies
 * service, which it always can), and every record in it is verified here before it is used. A project record
 * must be genuine and be the project the path names; a key record genuine, of that project and of the subject
 * the verified JWT proves. A lie is KEY_INTEGRITY (VerifiedRecords.refused), never a refusal blamed on the
 * caller's JWT, and the vault (keys/vault.ts) checks the records, the blob and the JWT again before it answers.
 * The store sees project keys, project ids, subjects, key ids, records and blobs: never a JWT or a request body.
 *
 * One active key per (project, subject): the store's unique index, and here one creation per subject at a time
 * (a per-subject lock, not a shared result: each caller's own JWT is checked by the vault, so a caller with a
 * forged token never receives the address a concurrent genuine caller was given).
 *
 * The lifecycle (rotate, activate, cancel; docs/PROTOCOL.md, "Key lifecycle"): at most one pending key per
 * (project, subject), the store's too (`store.insertSuccessor` answers the one it keeps: SUCCESSOR_EXISTS). The
 * vault decides every transition from the records (keys/lifecycle.ts); the store only keeps what it answers,
 * activate's two records together (`store.updateRecords`).
 *
 * Project lookups are cached for `projectCacheMs` (default 2 s), "no such project" too, in a small LRU, and
 * concurrent lookups of one key share one store call: every request (and CORS preflight) needs its project, and
 * the public chooses the keys. A cached record weakens nothing: the parent could answer that same older record
 * anyway (docs/TLS.md, "What the parent can still do"), and an entry older than a record the enclave has seen
 * since (it disabled the project, say) is not used.
 */
import type { z } from 'zod';
import { KeystoreError } from '@nks/shared/errors';
import {
  StoreInsertSuccessorAnswer,
  StoreInsertUserKeyAnswer,
  StorePendingUserKeyAnswer,
  StoreProjectAnswer,
  StoreUpdateRecordsAnswer,
  StoreUserKeyAnswer,
  type StoredUserKey,
  type WalletStoreApi,
} from '@nks/shared/enclave-api';
import { newKeyId } from '@nks/shared/identifiers';
import type { Logger } from '@nks/shared/log';
import type { JwtProjectAuth, LifecycleAction } from '@nks/shared/project-auth';
import type { KeyState, ProjectRecord, SignedRecord } from '@nks/shared/records';
import type { MethodName, ParamsOf, RpcClient } from '@nks/shared/rpc';
import type { SignRequest, SignResult } from '@nks/shared/signing/schema';
import type { JwtVerifier } from '../auth/jwt';
import type { KeyVault } from '../keys/vault';
import { Lru } from '../records/lru';
import { entryWeight, type VerifiedRecords } from '../records/verified';

/** A project record the enclave verified, as the store answered it. */
export interface WalletProject {
  signed: SignedRecord;
  record: ProjectRecord;
}

/** A verified, active JWT project. */
export interface JwtProject extends WalletProject {
  record: ProjectRecord & { auth: JwtProjectAuth };
}

export interface WalletKeysDeps {
  store: Pick<RpcClient<WalletStoreApi>, 'call'>;
  records: VerifiedRecords;
  vault: Pick<KeyVault, 'create' | 'lookup' | 'sign' | 'successor' | 'activate' | 'cancel'>;
  jwt: Pick<JwtVerifier, 'subjectOf'>;
  logger: Logger;
  /** How long a store call may take (`wallets.storeDeadlineMs`). */
  deadlineMs: number;
  /** How long a project lookup is reused (`wallets.projectCacheMs`; 0: never). */
  projectCacheMs: number;
}

/** The project cache's bounds: entries, and the weight of their records (verified.ts, entryWeight). */
const PROJECT_CACHE_ENTRIES = 1024;
const PROJECT_CACHE_WEIGHT = 8 * 1024 * 1024;

interface CachedProject {
  /** The lookup: in flight, or its answer (a failure is not kept). */
  lookup: Promise<WalletProject | null>;
  /** When the answer stops being used; Infinity while in flight. */
  until: number;
  weight: number;
}

/**
 * The project of the wallet routes: a verified project (WalletKeys.project), if it takes JWTs and is active.
 * UNAUTHORIZED otherwise: an unknown key, a disabled project, or a token project (the routes are for JWT projects).
 */
export function jwtProjectOf(v: WalletProject | null): JwtProject {
  if (!v) throw new KeystoreError('UNAUTHORIZED', 'unknown project key');
  if (v.record.state !== 'active') throw new KeystoreError('UNAUTHORIZED', 'this project is disabled');
  if (v.record.auth.type !== 'jwt') throw new KeystoreError('UNAUTHORIZED', 'this project does not take JWTs');
  return v as JwtProject;
}

const sameRecord = (a: SignedRecord, b: SignedRecord) => a.record === b.record && a.signature === b.signature;
const successorExists = () => new KeystoreError('SUCCESSOR_EXISTS', 'this user has a pending key already: activate or cancel it first');

export class WalletKeys {
  /** The tail of the creations waiting per (project, subject); an entry goes when its chain is idle. */
  private readonly creating = new Map<string, Promise<unknown>>();
  private readonly projects = new Lru<string, CachedProject>(PROJECT_CACHE_ENTRIES, {
    maxWeight: PROJECT_CACHE_WEIGHT,
    weigh: (_key, entry) => entry.weight,
  });

  constructor(private readonly deps: WalletKeysDeps) {}

  /**
   * The verified record of a project key whatever its state or auth (for CORS: a browser page of an allowed
   * origin must be able to read every answer, the 401 of a disabled project included); null when the store
   * knows no such project. From the cache when it has a current answer (see the file comment).
   */
  async project(projectKey: string): Promise<WalletProject | null> {
    const { projectCacheMs, records } = this.deps;
    if (projectCacheMs === 0) return this.lookup(projectKey);
    const cached = this.projects.get(projectKey);
    if (cached && cached.until > Date.now()) {
      const v = await cached.lookup;
      if (v === null || records.isCurrent(v)) return v;
    }
    const entry: CachedProject = { lookup: this.lookup(projectKey), until: Infinity, weight: 256 };
    this.projects.set(projectKey, entry);
    const forget = () => {
      if (this.projects.get(projectKey) === entry) this.projects.delete(projectKey);
    };
    entry.lookup.then((v) => {
      if (this.projects.get(projectKey) !== entry) return;
      entry.until = Date.now() + projectCacheMs;
      if (!v) return;
      // Weighed again, at its record's size.
      entry.weight = entryWeight(v.signed.record, v.signed.signature);
      this.projects.set(projectKey, entry);
    }, forget);
    return entry.lookup;
  }

  private async lookup(projectKey: string): Promise<WalletProject | null> {
    const { project } = await this.ask('store.project', { projectKey }, StoreProjectAnswer);
    if (project === null) return null;
    const { records } = this.deps;
    const v = records.project(project);
    // Another project's genuine record is a lie about which project the path names.
    if (v.record.projectKey !== projectKey) throw records.refused();
    // An older record than the newest seen (a replay of the project before it was disabled) is refused.
    records.current(v);
    return { signed: project, record: v.record };
  }

  /**
   * The subject a JWT proves in `project` (for a lifecycle `action`: a JWT for exactly that change), verified
   * (auth/jwt.ts): INVALID_JWT or JWKS_UNAVAILABLE otherwise.
   */
  subjectOf(project: JwtProject, jwt: string, action?: LifecycleAction): Promise<string> {
    return this.deps.jwt.subjectOf(jwt, project.record.auth, action);
  }

  /**
   * A successor of the user's active key (state pending): its address. SUCCESSOR_EXISTS when one is pending
   * already (asked first, so no key is made for nothing; the store's insert decides between concurrent ones).
   */
  async rotate(project: JwtProject, jwt: string, subject: string): Promise<{ keyId: string; address: string }> {
    const active = await this.stored(project, subject);
    if (!active) throw new KeystoreError('KEY_NOT_FOUND', 'this user has no key yet');
    if (await this.pending(project, subject)) throw successorExists();
    const keyId = newKeyId();
    const made = await this.deps.vault.successor({ keyId, record: active.record, project: project.signed, jwt });
    const key: StoredUserKey = { keyId, blob: made.blob, record: made.record };
    const { inserted, key: kept } = await this.ask(
      'store.insertSuccessor',
      { keyId, address: made.address, publicKey: made.publicKey, blob: made.blob, record: made.record },
      StoreInsertSuccessorAnswer,
    );
    if (!inserted) {
      // Another request stored a successor first: the one made here was never answered and is dropped.
      this.mine(kept, project, subject, ['pending', 'cancelled']);
      throw successorExists();
    }
    if (kept.keyId !== keyId || kept.blob !== key.blob || !sameRecord(kept.record, key.record)) throw this.deps.records.refused();
    this.deps.logger.info({ projectId: project.record.projectId, keyId, predecessor: active.keyId }, 'made a successor for a JWT user');
    return { keyId, address: made.address };
  }

  /**
   * The user's pending key, the one at `address` (the user names it: the store might hold another successor),
   * becomes their key, the one it succeeds retired: its address.
   */
  async activate(project: JwtProject, jwt: string, subject: string, address?: string): Promise<{ keyId: string; address: string }> {
    if (address === undefined) throw new KeystoreError('INVALID_PARAMS', 'activate names the address of the pending key');
    const pending = await this.pendingOrNone(project, subject, address);
    const active = await this.stored(project, subject);
    // A pending key without the key it succeeds: the store's answers do not fit together.
    if (!active) throw this.deps.records.refused();
    const { record, predecessor } = await this.deps.vault.activate({
      record: pending.record,
      predecessor: active.record,
      project: project.signed,
      jwt,
    });
    await this.ask('store.updateRecords', { records: [record, predecessor] }, StoreUpdateRecordsAnswer);
    this.deps.logger.info({ projectId: project.record.projectId, keyId: pending.keyId, retired: active.keyId }, 'activated a successor');
    return { keyId: pending.keyId, address: this.addressOf(pending) };
  }

  /** The user's pending key (the one at `address`, if given) is given up (it never signs again): its address. */
  async cancel(project: JwtProject, jwt: string, subject: string, address?: string): Promise<{ keyId: string; address: string }> {
    const pending = await this.pendingOrNone(project, subject, address);
    const { record } = await this.deps.vault.cancel({ record: pending.record, project: project.signed, jwt });
    await this.ask('store.updateRecords', { records: [record] }, StoreUpdateRecordsAnswer);
    this.deps.logger.info({ projectId: project.record.projectId, keyId: pending.keyId }, 'cancelled a successor');
    return { keyId: pending.keyId, address: this.addressOf(pending) };
  }

  /** The user's address (TrueWallet get-address): `vault.lookup` of the user's key, or the key made on first use. */
  async address(project: JwtProject, jwt: string, subject: string): Promise<{ keyId: string; address: string }> {
    const { key, made } = await this.userKey(project, jwt, subject);
    if (made) return { keyId: key.keyId, address: made };
    return this.deps.vault.lookup(key.record, project.signed, jwt);
  }

  /** A signature with the user's key (made on first use, as get-address would). */
  async sign(project: JwtProject, jwt: string, subject: string, request: SignRequest): Promise<SignResult> {
    const { key } = await this.userKey(project, jwt, subject);
    return this.deps.vault.sign({ keyId: key.keyId, blob: key.blob, record: key.record, project: project.signed, request, jwt });
  }

  /**
   * Asks the store, within the deadline, and checks the answer's shape. Whatever goes wrong is UNAVAILABLE with
   * a fixed text (the store's own error code at most): the parent's words never reach the caller.
   */
  private async ask<M extends MethodName<WalletStoreApi>, S extends z.ZodType>(
    method: M,
    params: ParamsOf<WalletStoreApi, M>,
    schema: S,
  ): Promise<z.output<S>> {
    let answer: unknown;
    try {
      answer = await this.deps.store.call(method, params, { deadlineMs: this.deps.deadlineMs });
    } catch (err) {
      const code = err instanceof KeystoreError ? err.code : 'INTERNAL';
      throw new KeystoreError('UNAVAILABLE', `the wallet store did not answer ${method} (${code})`);
    }
    const res = schema.safeParse(answer);
    if (!res.success) throw new KeystoreError('UNAVAILABLE', `the wallet store answered ${method} with a malformed answer`);
    return res.data;
  }

  /**
   * A key the store answered, checked to be the user's in this project, and in one of `states` (what the store
   * was asked for), before anything acts on it.
   */
  private mine(key: StoredUserKey, project: JwtProject, subject: string, states: readonly KeyState[]): StoredUserKey {
    const { records } = this.deps;
    const { record } = records.key(key.record);
    if (
      record.keyId !== key.keyId ||
      record.projectId !== project.record.projectId ||
      record.subject !== subject ||
      !states.includes(record.state)
    ) {
      throw records.refused();
    }
    return key;
  }

  /**
   * The user's key as the store answers it. Its record must say active (or retired: the vault then answers
   * KEY_RETIRED): a pending successor is the user's key only once the user activates it, so a store that
   * answers one here is lying (KEY_INTEGRITY), and cannot make get-address or sign use it early.
   */
  private async stored(project: JwtProject, subject: string): Promise<StoredUserKey | null> {
    const { key } = await this.ask('store.userKey', { projectId: project.record.projectId, subject }, StoreUserKeyAnswer);
    return key && this.mine(key, project, subject, ['active', 'retired']);
  }

  /** The user's pending successor as the store answers it: its record must say pending (or cancelled, as above). */
  private async pending(project: JwtProject, subject: string): Promise<StoredUserKey | null> {
    const { key } = await this.ask('store.pendingUserKey', { projectId: project.record.projectId, subject }, StorePendingUserKeyAnswer);
    return key && this.mine(key, project, subject, ['pending', 'cancelled']);
  }

  private async pendingOrNone(project: JwtProject, subject: string, address?: string): Promise<StoredUserKey> {
    const pending = await this.pending(project, subject);
    if (!pending) throw new KeystoreError('KEY_NOT_FOUND', 'this user has no pending key');
    if (address !== undefined && this.addressOf(pending).toLowerCase() !== address.toLowerCase()) {
      throw new KeystoreError('KEY_NOT_FOUND', 'this user has no pending key at this address');
    }
    return pending;
  }

  /** The address a stored key's (verified, cached) record names. */
  private addressOf(key: StoredUserKey): string {
    return this.deps.records.key(key.record).record.address;
  }

  /**
   * The user's active key: stored, or made now with the user's JWT (`made` is then the address the vault
   * answered). Creations for one subject run one at a time, each looking again once it may start.
   */
  private async userKey(project: JwtProject, jwt: string, subject: string): Promise<{ key: StoredUserKey; made: string | null }> {
    const stored = await this.stored(project, subject);
    if (stored) return { key: stored, made: null };
    const lock = `${project.record.projectId}\n${subject}`;
    const before = this.creating.get(lock) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(() => this.create(project, jwt, subject));
    const tail = run.catch(() => undefined);
    this.creating.set(lock, tail);
    void tail.then(() => {
      if (this.creating.get(lock) === tail) this.creating.delete(lock);
    });
    return run;
  }

  private async create(project: JwtProject, jwt: string, subject: string): Promise<{ key: StoredUserKey; made: string | null }> {
    const stored = await this.stored(project, subject);
    if (stored) return { key: stored, made: null };
    const projectId = project.record.projectId;
    const keyId = newKeyId();
    // The vault verifies the JWT again and takes the key's subject from it: the one looked up above.
    const made = await this.deps.vault.create(keyId, project.signed, null, false, jwt);
    const key: StoredUserKey = { keyId, blob: made.blob, record: made.record };
    const { inserted, key: kept } = await this.ask(
      'store.insertUserKey',
      { keyId, address: made.address, publicKey: made.publicKey, blob: made.blob, record: made.record },
      StoreInsertUserKeyAnswer,
    );
    if (inserted) {
      // "Kept": then what it kept is the key made here.
      if (kept.keyId !== keyId || kept.blob !== key.blob || !sameRecord(kept.record, key.record)) throw this.deps.records.refused();
      this.deps.logger.info({ projectId, keyId }, 'created a key for a JWT user');
      return { key, made: made.address };
    }
    // Another request stored the user's key first: the one made here was never answered and is dropped, and the
    // stored one is checked like any other.
    this.deps.logger.info({ projectId, keyId }, 'discarded a duplicate key for a JWT user who already has one');
    return { key: this.mine(kept, project, subject, ['active', 'retired']), made: null };
  }
}
