/**
 * The enclave's key operations (docs/RECORDS.md): create (no KMS call), sign (cache, or exactly one attested
 * KMS Decrypt per cold key, shared by concurrent requests), set disabled, forget, and migrate (the migration
 * image only). Every operation on a key first checks the signed records the parent hands back:
 *
 * - sign: both signatures (verified records are cached, see records/verified.ts), the key record is for this
 *   key id and in this project, neither is older than the newest seen (then they are the newest), the blob is
 *   the one the record names (its SHA-256; skipped when the cached key was opened from this exact blob text,
 *   whose hash and binding the cache entry holds), and a cold blob is a version 2 key blob bound to the
 *   record's key id, address, project and subject; the unsealed key's address is the blob's. Then the states
 *   and the project's allowed request types, then the project's policy rules (docs/POLICIES.md). All of it
 *   before any KMS call or signature. The policy's limits are checked and counted after the last check of the
 *   records, right before the signature (taken back if no signature is made).
 * - create and migrate make the key's first record (seq 0); setDisabled its next one (seq + 1, prev = the
 *   digest of the one before). The lifecycle (successor, activate, cancel) is keys/lifecycle.ts; who may ask
 *   for it is `authorize` here.
 * - JWT projects (docs/PROTOCOL.md, `jwt`): create, sign and lookup of a JWT project's key need the user's JWT,
 *   verified here (auth/jwt.ts) before any KMS call or signature; its subject is the key's. A sign without one
 *   is FORBIDDEN: no operator token can sign with a JWT user's key. A token project takes no JWT. The same
 *   for a lifecycle change, whose JWT must also be for exactly that change (auth/jwt.ts): no operator token
 *   can make, activate or cancel a JWT user's successor.
 * - After every wait (a JWT check, which may fetch the JWKS; a KMS answer) and right before the signature, the
 *   records are checked again: still the newest the enclave has seen (it may have disabled the key or the
 *   project meanwhile, at the parent's request), in the states they allow, and the JWT still unexpired. The
 *   parent can delay a request; it cannot make it act on what the enclave has since superseded
 *   (docs/SECURITY.md, "A waiting request acts on the records of now").
 *
 * Integrity failures are one KEY_INTEGRITY with one fixed message, counted (VerifiedRecords.refused); states are
 * answered plainly: KEY_RETIRED, KEY_DISABLED, FORBIDDEN.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { birthContent, USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { BLOB_VERSION_V1, decodeBlobBase64, decodeKeyBlob, encodeBlob, type KeyBlob, type KeyBlobV1 } from '@nks/shared/blob';
import { asKeystoreError, KeystoreError } from '@nks/shared/errors';
import { POLICY_APPROVAL_DOMAIN } from '@nks/shared/policy/approval';
import type { ActivateResult, CreateResult, LookupResult, SetDisabledResult, SignBatchResult } from '@nks/shared/enclave-api';
import type { JwtProjectAuth, LifecycleAction } from '@nks/shared/project-auth';
import type { JwtUser } from '../auth/jwt';
import {
  hex,
  isFinalKeyState,
  RECORD_VERSION,
  type KeyOrigin,
  type KeyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { SIGN_BATCH_MAX_REQUESTS, type SignBatchItem, type SignRequest, type SignResult } from '@nks/shared/signing/schema';
import { addressOf, generateSecret, publicKeyOf } from '../crypto/secp256k1';
import type { KeystoreIdentity } from '../identity/keystore-identity';
import type { Unsealer } from '../kms/unseal';
import type { NsmClient } from '../nsm/client';
import type { PolicyEnforcer, RulesPassed } from '../policy/enforcer';
import type { Verified, VerifiedRecords } from '../records/verified';
import type { SignerPool } from '../signing/pool';
import type { KeyCache, CachedKey } from './cache';
import { KeyLifecycle, nextKeyRecord, type ActivateInput, type CancelInput, type SuccessorInput } from './lifecycle';
import { sealSecret } from './seal';

/** What a successor takes from the key it succeeds (keys/lifecycle.ts). */
interface SuccessorOf {
  keyId: string;
  disabled: boolean;
}

const sha256Hex = (b: Uint8Array) => hex(createHash('sha256').update(b).digest());

/** What reach() checked for a sign: the verified records, the cached key or the cold blob, the JWT's user. */
interface Reach {
  key: Verified<KeyRecord>;
  project: Verified<ProjectRecord>;
  cached: CachedKey | undefined;
  blob: KeyBlob | undefined;
  user: JwtUser | undefined;
}

type SignBatchItemError = Extract<SignBatchItem, { error: unknown }>['error'];

export type SignBatchInput = Omit<SignParams, 'request'> & { requests: SignRequest[] };

export interface SignParams {
  keyId: string;
  blob: string;
  record: SignedRecord;
  project: SignedRecord;
  request: SignRequest;
  jwt?: string | undefined;
}

/** What proves a JWT project's user (auth/jwt.ts), for a lifecycle `action` when given. */
export interface JwtSubjects {
  user(token: string, auth: JwtProjectAuth, action?: LifecycleAction): Promise<JwtUser>;
}

/** The same answer whichever part of the subject differs (issuer or user). */
export const NOT_THIS_USER_MESSAGE = "the JWT is not for this key's user";
export const SIGN_WITHOUT_JWT_MESSAGE = "a JWT project's key signs only with its user's JWT";
export const CREATE_WITHOUT_JWT_MESSAGE = "a JWT project's key is created only with its user's JWT";
export const TOKEN_PROJECT_JWT_MESSAGE = 'a token project takes no JWT';
export const LIFECYCLE_WITHOUT_JWT_MESSAGE = "a JWT project's key changes state only with its user's JWT";

const keyLeftCache = () => new KeystoreError('UNAVAILABLE', 'the key left the cache before it signed; retry');
const tokenProjectJwt = () => new KeystoreError('INVALID_PARAMS', TOKEN_PROJECT_JWT_MESSAGE);
const notThisUser = () => new KeystoreError('FORBIDDEN', NOT_THIS_USER_MESSAGE);

export class KeyVault {
  creates = 0;
  signs = 0;
  migrations = 0;
  private readonly inflight = new Map<string, Promise<CachedKey>>();
  private readonly lifecycle: KeyLifecycle;

  constructor(
    private readonly deps: {
      cache: KeyCache;
      unsealer: Unsealer;
      nsm: NsmClient;
      kmsKeyArn: string;
      kmsPublicKey: KeyObject;
      /** Where requests are hashed and signed (signer threads; see SignerPool). */
      signers: SignerPool;
      records: VerifiedRecords;
      /** The unsealed identity; the methods are served only once it is ready. */
      identity: () => KeystoreIdentity;
      /** JWT projects' users (auth/jwt.ts). */
      jwt: JwtSubjects;
      /** The projects' signing policies (policy/enforcer.ts). */
      policy: PolicyEnforcer;
      now?: () => number;
    },
  ) {
    this.lifecycle = new KeyLifecycle({
      records: deps.records,
      identity: deps.identity,
      cache: deps.cache,
      now: () => this.now(),
      authorize: (project, key, jwt, action) => this.authorize(project, key, jwt, action),
      make: (keyId, project, predecessor, attest) =>
        this.make(keyId, project.projectId, predecessor.subject, attest, {
          origin: 'created',
          successorOf: { keyId: predecessor.keyId, disabled: predecessor.disabled },
        }),
    });
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** A genuine, current, active project record (for making keys in it). */
  private activeProject(signed: SignedRecord): Verified<ProjectRecord> {
    const project = this.deps.records.project(signed);
    this.deps.records.current(project);
    if (project.record.state !== 'active') throw new KeystoreError('KEY_DISABLED', 'the project is disabled');
    return project;
  }

  async create(keyId: string, projectRecord: SignedRecord, subjectIn: string | null, attest: boolean, jwt?: string): Promise<CreateResult> {
    const project = this.activeProject(projectRecord);
    const subject = await this.owner(project.record, subjectIn, jwt);
    // The JWT check may have waited for the JWKS: the project may have been disabled meanwhile. (The birth
    // attestation below comes after the key and its record exist: a key made just before a disable.)
    this.deps.records.stillCurrent(project);
    return this.make(keyId, project.record.projectId, subject, attest, { origin: 'created' });
  }

  /** A new key (no KMS call) with its first record, and its birth attestation if asked; counted in `creates`. */
  private async make(
    keyId: string,
    projectId: string,
    subject: string | null,
    attest: boolean,
    how: { origin: KeyOrigin; successorOf?: SuccessorOf },
  ): Promise<CreateResult> {
    const secret = generateSecret();
    let result: CreateResult;
    try {
      const pub = publicKeyOf(secret);
      const address = addressOf(pub);
      result = this.seal(secret, { keyId, address, projectId, subject, ...how });
      result.publicKey = `0x${Buffer.from(pub).toString('hex')}`;
    } finally {
      secret.fill(0);
    }
    if (attest) {
      const doc = await this.deps.nsm.attest({ tag: USER_DATA_TAGS.birth, content: birthContent(keyId, result.address) });
      result.attestation = doc.toString('base64');
    }
    this.creates += 1;
    return result;
  }

  /** keys.successor, keys.activate, keys.cancel (keys/lifecycle.ts). */
  successor(p: SuccessorInput): Promise<CreateResult> {
    return this.lifecycle.successor(p);
  }
  activate(p: ActivateInput): Promise<ActivateResult> {
    return this.lifecycle.activate(p);
  }
  cancel(p: CancelInput): Promise<SetDisabledResult> {
    return this.lifecycle.cancel(p);
  }

  /**
   * Who may change a key's lifecycle: in a token project whoever the parent let ask (no JWT); in a JWT project
   * only the key's user, with a verified JWT for exactly `action`. Answers the user, to check again after a wait.
   */
  private async authorize(
    project: ProjectRecord,
    key: KeyRecord,
    jwt: string | undefined,
    action: LifecycleAction,
  ): Promise<JwtUser | undefined> {
    if (project.auth.type === 'token') {
      if (jwt !== undefined) throw tokenProjectJwt();
      return undefined;
    }
    if (jwt === undefined) throw new KeystoreError('FORBIDDEN', LIFECYCLE_WITHOUT_JWT_MESSAGE);
    const user = await this.deps.jwt.user(jwt, project.auth, action);
    if (user.subject !== key.subject) throw notThisUser();
    return user;
  }

  /** Who a new key belongs to: the caller's subject in a token project, the verified JWT's in a JWT project. */
  private async owner(project: ProjectRecord, subject: string | null, jwt: string | undefined): Promise<string | null> {
    if (project.auth.type === 'token') {
      if (jwt !== undefined) throw tokenProjectJwt();
      return subject;
    }
    if (subject !== null) {
      throw new KeystoreError('INVALID_PARAMS', "a JWT project's key takes its subject from the JWT: subject must be null");
    }
    if (jwt === undefined) throw new KeystoreError('FORBIDDEN', CREATE_WITHOUT_JWT_MESSAGE);
    return (await this.deps.jwt.user(jwt, project.auth)).subject;
  }

  /**
   * Seals `secret` as a version 2 key blob and signs the key's first record: `active`, or `pending` for a
   * successor (whose records name its predecessor from now on, and which starts disabled if it was).
   */
  private seal(
    secret: Uint8Array,
    k: { keyId: string; address: `0x${string}`; projectId: string; subject: string | null; origin: KeyOrigin; successorOf?: SuccessorOf },
  ): CreateResult {
    const { successorOf, ...bound } = k;
    const blob = encodeBlob(
      sealSecret(secret, { ...bound, kmsKeyArn: this.deps.kmsKeyArn, kmsPublicKey: this.deps.kmsPublicKey, createdAt: this.now() }),
    );
    const record: KeyRecord = {
      v: RECORD_VERSION,
      kind: 'key',
      keyId: k.keyId,
      address: k.address,
      blobSha256: sha256Hex(blob),
      projectId: k.projectId,
      subject: k.subject,
      state: 'active',
      disabled: false,
      seq: 0,
      prev: null,
      origin: k.origin,
      createdAt: this.now(),
      ...(successorOf === undefined ? {} : { state: 'pending' as const, predecessor: successorOf.keyId, disabled: successorOf.disabled }),
    };
    const { signed } = this.deps.identity().sign(record);
    this.deps.records.remember<KeyRecord>(signed, 'key');
    return { keyId: k.keyId, address: k.address, publicKey: '0x', blob: blob.toString('base64'), record: signed };
  }

  async sign(p: SignParams): Promise<SignResult> {
    const { records } = this.deps;
    const r = await this.reach(p);
    usable(r.key.record, r.project.record, p.request);
    // The project's rules (docs/POLICIES.md), before any KMS call: a refused cold sign costs no Decrypt.
    const passed = this.deps.policy.checkRules(r.project.record, p.request);
    const cached = r.cached ?? (await this.unsealShared(p.blob, r.blob as KeyBlob, r.key.record.blobSha256));
    // Other cold signs' keys, or a smaller cache (cache.configure), may have evicted (and zeroed) it meanwhile.
    if (!this.deps.cache.holds(p.keyId, cached)) throw keyLeftCache();
    // The last check, with no wait between it and the signature (the KMS answer may have come late): the
    // records are still the newest, so the states usable() read in them are those of now, and the policy the
    // rules read is the project's policy of now; the JWT unexpired.
    records.stillCurrent(r.key);
    records.stillCurrent(r.project);
    r.user?.stillValid();
    return this.signOne(passed, r.key.record, p.request, cached);
  }

  /**
   * keys.signBatch (docs/PROTOCOL.md, "Batch signing"): what a sequence of keys.sign calls with the same key, blob,
   * records and JWT would answer, each request's answer in its place, with one check of the records and the JWT
   * and at most one unseal. What concerns the key (its records, blob, JWT, states, an unseal) fails the whole
   * batch, as it would every sign of the sequence; what concerns one request (its type, the policy's rules and
   * limits, its hashing) fails that request only. The rules are evaluated and the limits counted per request, in
   * order; every request is signed (or handed to a signer thread) synchronously after the last check of the
   * records, with no wait between them.
   */
  async signBatch(p: SignBatchInput): Promise<SignBatchResult> {
    const { records } = this.deps;
    // The RPC schema bounds the count (SignBatchParams); said again here, where the loop is.
    if (p.requests.length < 1 || p.requests.length > SIGN_BATCH_MAX_REQUESTS)
      throw new KeystoreError('INVALID_PARAMS', `a batch has 1 to ${SIGN_BATCH_MAX_REQUESTS} requests`);
    const r = await this.reach(p);
    const k = r.key.record;
    states(k, r.project.record);
    const checked = p.requests.map((request): { passed: RulesPassed | null } | { error: unknown } => {
      try {
        allowed(r.project.record, request);
        return { passed: this.deps.policy.checkRules(r.project.record, request) };
      } catch (error) {
        return { error };
      }
    });
    // No request passed its rules: no KMS call, as for a sequence of refused single signs.
    let cached = r.cached;
    if (!cached && checked.some((c) => 'passed' in c)) cached = await this.unsealShared(p.blob, r.blob as KeyBlob, k.blobSha256);
    // As for a single sign: a key evicted (and zeroed) since it was looked up, while reach() or the KMS answered
    // (another request's keys.forget or cache.configure can run then), fails the whole batch as retryable.
    if (cached && !this.deps.cache.holds(p.keyId, cached)) throw keyLeftCache();
    records.stillCurrent(r.key);
    records.stillCurrent(r.project);
    r.user?.stillValid();
    const key = cached;
    const signed = checked.map((c, i) => {
      if ('error' in c || !key) return Promise.reject('error' in c ? c.error : new KeystoreError('INTERNAL', 'no key'));
      try {
        return this.signOne(c.passed, k, p.requests[i] as SignRequest, key);
      } catch (err) {
        return Promise.reject(err);
      }
    });
    const settled = await Promise.allSettled(signed);
    return { results: settled.map((s) => (s.status === 'fulfilled' ? { result: s.value } : { error: itemError(s.reason) })) };
  }

  /**
   * The limits checked and counted in one step, right before the signature (taken back if none is made), then the
   * signature. Its caller made the last check of the records with no wait since.
   */
  private signOne(passed: RulesPassed | null, k: KeyRecord, request: SignRequest, cached: CachedKey): Promise<SignResult> {
    const reservation = this.deps.policy.reserve(passed, { keyId: k.keyId, address: k.address });
    return this.deps.signers.sign(request, cached.secret, cached.address).then(
      (result) => {
        this.signs += 1;
        return result;
      },
      (err: unknown) => {
        this.deps.policy.release(reservation);
        throw err;
      },
    );
  }

  /**
   * What a sign needs of its key, checked once however many requests it carries: the records genuine, current,
   * of this key and one project; the cached key opened from this exact blob or the cold blob bound to the record;
   * a JWT project's user's JWT (checked again after its wait). Answers what was checked, and the cached key if any.
   */
  private async reach(p: Omit<SignParams, 'request'>): Promise<Reach> {
    const { records } = this.deps;
    // Looked up before any check, so the cache's counters depend only on the key id and blob sent, never on
    // which check refuses the request.
    const cached = this.deps.cache.get(p.keyId, p.blob);
    const key = records.key(p.record);
    const project = records.project(p.project);
    if (key.record.keyId !== p.keyId || key.record.projectId !== project.record.projectId) throw records.refused();
    records.current(key);
    records.current(project);
    const k = key.record;

    let blob: KeyBlob | undefined;
    if (cached) {
      // Opened from this exact blob text, whose hash and binding were checked then.
      if (
        cached.blobSha256 !== k.blobSha256 ||
        cached.address !== k.address ||
        cached.projectId !== k.projectId ||
        cached.subject !== k.subject
      )
        throw records.refused();
    } else {
      blob = this.coldBlob(p.blob, k);
    }

    const { auth } = project.record;
    let user: JwtUser | undefined;
    if (auth.type === 'token') {
      if (p.jwt !== undefined) throw tokenProjectJwt();
    } else {
      // After the record checks (a refused record costs no JWT check, nor a JWKS fetch), before any KMS call.
      if (p.jwt === undefined) throw new KeystoreError('FORBIDDEN', SIGN_WITHOUT_JWT_MESSAGE);
      user = await this.deps.jwt.user(p.jwt, auth);
      if (user.subject !== k.subject) throw notThisUser();
      // Other requests ran while the JWT was checked: one may have made a newer record of the key or the
      // project (disabled either), or dropped (and zeroed) the cached key. The first is refused; the second
      // starts again, as a cold sign: the same checks, with what the enclave holds now.
      records.stillCurrent(key);
      records.stillCurrent(project);
      if (cached && !this.deps.cache.holds(p.keyId, cached)) return this.reach(p);
    }
    return { key, project, cached, blob, user };
  }

  /** The blob the record names, decoded and bound to it, or KEY_INTEGRITY. A version 1 blob never matches. */
  private coldBlob(b64: string, k: KeyRecord): KeyBlob {
    const { records } = this.deps;
    const bytes = Buffer.from(b64, 'base64');
    // One text per blob: another base64 spelling of the same bytes (free bits in the last character) would
    // miss the cache, which is keyed on the text, and cost another KMS Decrypt.
    if (bytes.toString('base64') !== b64 || sha256Hex(bytes) !== k.blobSha256) throw records.refused();
    let blob: KeyBlob;
    try {
      blob = decodeKeyBlob(b64);
    } catch (err) {
      throw records.refused(err);
    }
    if (
      blob.kmsKeyArn !== this.deps.kmsKeyArn ||
      blob.keyId !== k.keyId ||
      blob.address !== k.address ||
      blob.projectId !== k.projectId ||
      blob.subject !== k.subject
    )
      throw records.refused();
    return blob;
  }

  /**
   * A JWT project's user asks for their key: the records genuine, current and of one project, the JWT the
   * record's user's, the project active and the key neither retired, cancelled nor disabled. No KMS call.
   */
  async lookup(recordIn: SignedRecord, projectIn: SignedRecord, jwt: string): Promise<LookupResult> {
    const { records } = this.deps;
    const key = records.key(recordIn);
    const project = records.project(projectIn);
    if (key.record.projectId !== project.record.projectId) throw records.refused();
    records.current(key);
    records.current(project);
    const { auth } = project.record;
    if (auth.type === 'token') throw tokenProjectJwt();
    if ((await this.deps.jwt.user(jwt, auth)).subject !== key.record.subject) throw notThisUser();
    // The JWT check may have waited (a JWKS fetch): the answer is about the records of now.
    records.stillCurrent(key);
    records.stillCurrent(project);
    states(key.record, project.record);
    return { keyId: key.record.keyId, address: key.record.address as `0x${string}` };
  }

  async setDisabled(recordIn: SignedRecord, projectIn: SignedRecord, disabled: boolean): Promise<SetDisabledResult> {
    const { records } = this.deps;
    const key = records.key(recordIn);
    const project = records.project(projectIn);
    if (key.record.projectId !== project.record.projectId) throw records.refused();
    records.current(key);
    records.current(project);
    if (isFinalKeyState(key.record.state)) throw new KeystoreError('KEY_RETIRED', `the key is ${key.record.state}`);
    const record = nextKeyRecord(key, { disabled }, this.now());
    const { signed } = this.deps.identity().sign(record);
    // From now on the record before is refused: this one is the newest the enclave has seen.
    records.remember<KeyRecord>(signed, 'key');
    if (disabled) this.deps.cache.forget(record.keyId);
    return { record: signed };
  }

  /**
   * The migration image: a version 1 blob (releases up to 0.3) unsealed as usual (one attested Decrypt), then
   * re-sealed as version 2 in `project` for `subject`, with a first record of origin "migrated".
   */
  async migrate(keyId: string, b64: string, projectRecord: SignedRecord, subject: string | null): Promise<CreateResult> {
    const project = this.activeProject(projectRecord);
    // A JWT project's key belongs to the user a verified JWT names; the migration image has no JWT to check.
    if (project.record.auth.type === 'jwt') throw new KeystoreError('FORBIDDEN', 'keys are migrated into token projects only');
    let old: KeyBlobV1;
    try {
      const blob = decodeBlobBase64(b64, { acceptV1: true });
      if (blob.v !== BLOB_VERSION_V1) throw new Error('not a version 1 blob');
      old = blob;
    } catch (err) {
      throw this.deps.records.refused(err);
    }
    if (old.keyId !== keyId || old.kmsKeyArn !== this.deps.kmsKeyArn) throw this.deps.records.refused();
    const opened = await this.deps.unsealer.unseal(old);
    let result: CreateResult;
    try {
      // The unseal waited for KMS: the project may have been changed meanwhile.
      this.deps.records.stillCurrent(project);
      const pub = publicKeyOf(opened.secret);
      result = this.seal(opened.secret, {
        keyId,
        address: opened.address,
        projectId: project.record.projectId,
        subject,
        origin: 'migrated',
      });
      result.publicKey = `0x${Buffer.from(pub).toString('hex')}`;
    } finally {
      opened.secret.fill(0);
    }
    this.migrations += 1;
    return result;
  }

  forget(keyId: string): boolean {
    return this.deps.cache.forget(keyId);
  }

  /** Concurrent cold signs of the same blob share one unseal (one KMS Decrypt). */
  private unsealShared(b64: string, blob: KeyBlob, blobSha256: string): Promise<CachedKey> {
    const flightKey = `${blob.keyId}\u0000${b64}`;
    let p = this.inflight.get(flightKey);
    if (!p) {
      p = this.unseal(b64, blob, blobSha256).finally(() => this.inflight.delete(flightKey));
      this.inflight.set(flightKey, p);
    }
    return p;
  }

  private async unseal(b64: string, blob: KeyBlob, blobSha256: string): Promise<CachedKey> {
    const { secret, address } = await this.deps.unsealer.unseal(blob);
    return this.deps.cache.set(blob.keyId, { secret, address, blob: b64, blobSha256, projectId: blob.projectId, subject: blob.subject });
  }
}

/**
 * What the records' states allow: a retired or cancelled key never signs, a disabled key or project does not
 * now. A pending key signs (a successor may have to sign during a social recovery, before it is activated).
 */
function usable(k: KeyRecord, project: ProjectRecord, request: SignRequest): void {
  states(k, project);
  allowed(project, request);
}

/** The request types the project allows, and never a policy-change approval. */
function allowed(project: ProjectRecord, request: SignRequest): void {
  if (!project.allowedRequestTypes.includes(request.type)) {
    throw new KeystoreError('FORBIDDEN', `the project does not allow ${request.type} requests`);
  }
  // An approval of a policy change is an approver's own signature, made outside this keystore: a key held here
  // that signed one would let whoever asks the enclave to sign (a compromised parent, for a token project)
  // approve changes itself (docs/POLICIES.md, "Approvers"). A blind digest of the same hash cannot be told
  // apart: approvers must not be keys of this keystore.
  if (request.type === 'typedData' && request.typedData.domain?.name === POLICY_APPROVAL_DOMAIN.name) {
    throw new KeystoreError('FORBIDDEN', 'keys of this keystore do not sign policy-change approvals');
  }
}

/** A request's error in a batch's answer: the code, message, retryability and details a single sign would answer. */
function itemError(err: unknown): SignBatchItemError {
  const ke = asKeystoreError(err);
  return { code: ke.code, message: ke.message, retryable: ke.retryable, ...(ke.details ? { details: ke.details } : {}) };
}

/** The states of `usable`, without the request type (keys.lookup, a batch). */
function states(k: KeyRecord, project: ProjectRecord): void {
  if (isFinalKeyState(k.state)) throw new KeystoreError('KEY_RETIRED', `the key is ${k.state}`);
  if (project.state !== 'active') throw new KeystoreError('KEY_DISABLED', 'the project is disabled');
  if (k.disabled) throw new KeystoreError('KEY_DISABLED', 'the key is disabled');
}
