/**
 * The keys of JWT projects' users, for the TrueWallet routes (api/wallets.ts, docs/PROJECTS.md), independent
 * of HTTP. The parent finds a user's key by the subject it computes from the JWT's payload WITHOUT verifying
 * it (`jwtSubject(project issuer, payload[userClaim])`); every enclave call carries the JWT, and the enclave
 * verifies it and that its subject is the key's before it answers. So a parent that computes the wrong subject,
 * or a caller whose token does not verify, gets a refusal, never another user's key.
 *
 * One active key per (project, subject): the store's unique index, and here one creation per subject at a time
 * (a per-subject lock, not a shared result: each caller's own JWT is checked by the enclave, so a caller with a
 * forged token never receives the address a concurrent genuine caller was given).
 */
import { decodeJwt } from 'jose';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import { JWT_MAX_BYTES, jwtSubject, type JwtProjectAuth } from '@nks/shared/project-auth';
import type { ProjectRecord, SignedRecord } from '@nks/shared/records';
import type { SignRequestInput, SignResult } from '@nks/shared/signing/schema';
import type { EnclavePool } from './enclave/pool';
import { BAD_ANSWER, checkNewKey, newKeyId, type KeyRegistry } from './key-registry';
import type { VerifiedProject } from './project-registry';
import type { KeyStore, StoredKey } from './store/key-store';

/** A verified, active JWT project. */
export interface JwtProject extends VerifiedProject {
  record: ProjectRecord & { auth: JwtProjectAuth };
}

export class WalletKeys {
  /** The tail of the creations waiting per (project, subject); an entry goes when its chain is idle. */
  private readonly creating = new Map<string, Promise<unknown>>();

  constructor(
    private readonly keys: KeyRegistry,
    private readonly store: KeyStore,
    private readonly enclave: EnclavePool,
    private readonly logger: Logger,
  ) {}

  /**
   * The verified project of a project key, if it takes JWTs and is active. UNAUTHORIZED otherwise: an unknown
   * key, a disabled project, or a token project (these routes are for JWT projects only).
   */
  project(projectKey: string): JwtProject {
    const v = this.keys.projects.byKey(projectKey);
    if (!v) throw new KeystoreError('UNAUTHORIZED', 'unknown project key');
    if (v.record.state !== 'active') throw new KeystoreError('UNAUTHORIZED', 'this project is disabled');
    if (v.record.auth.type !== 'jwt') throw new KeystoreError('UNAUTHORIZED', 'this project does not take JWTs');
    return v as JwtProject;
  }

  /**
   * The verified project of a project key whatever its state or auth, for CORS: a browser page of an allowed
   * origin must be able to read every answer, the 401 of a disabled project included.
   */
  projectForCors(projectKey: string): VerifiedProject | undefined {
    return this.keys.projects.byKey(projectKey);
  }

  /**
   * The subject a JWT names in `project`, read from its payload without verifying it (the enclave verifies).
   * INVALID_JWT when it is not a JWT, or the user claim is missing or not a string.
   */
  subjectOf(project: JwtProject, jwt: string): string {
    if (Buffer.byteLength(jwt) > JWT_MAX_BYTES) throw new KeystoreError('INVALID_JWT', `the JWT is over ${JWT_MAX_BYTES} bytes`);
    let payload: Record<string, unknown>;
    try {
      payload = decodeJwt(jwt);
    } catch {
      throw new KeystoreError('INVALID_JWT', 'not a JWT (expected the compact form: three base64url parts, a JSON payload)');
    }
    const { userClaim, issuer } = project.record.auth;
    const subject = jwtSubject(issuer, payload[userClaim]);
    if (subject === null) throw new KeystoreError('INVALID_JWT', `the claim "${userClaim}" is missing, empty, not a string or too long`);
    return subject;
  }

  /**
   * The user's address (TrueWallet get-address), always from the enclave: `keys.lookup` for the user's key,
   * or `keys.create` on first use.
   */
  async address(project: JwtProject, jwt: string, subject: string): Promise<{ keyId: string; address: string }> {
    const { key, made } = await this.userKey(project, jwt, subject);
    if (made) return { keyId: key.keyId, address: made };
    const v = this.verifiedFor(key, project);
    const res = await this.enclave.call('keys.lookup', { record: v.signed, project: project.signed, jwt });
    if (res?.keyId !== key.keyId || res.address !== key.address) throw new KeystoreError('KEY_INTEGRITY', BAD_ANSWER);
    return { keyId: res.keyId, address: res.address };
  }

  /** A signature with the user's key (made on first use, as get-address would); `request` goes to the enclave as sent. */
  async sign(project: JwtProject, jwt: string, subject: string, request: SignRequestInput): Promise<SignResult> {
    const { key } = await this.userKey(project, jwt, subject);
    const v = this.verifiedFor(key, project);
    const result = await this.enclave.call('keys.sign', {
      keyId: key.keyId,
      blob: key.blob,
      record: v.signed,
      project: project.signed,
      request,
      jwt,
    });
    if (result?.address !== key.address)
      throw new KeystoreError(
        'KEY_INTEGRITY',
        `the enclave signed with ${String(result?.address)}, but key ${key.keyId} is ${key.address}`,
      );
    return result;
  }

  /** The key's verified record, which must be of this project (KEY_INTEGRITY otherwise: the row was moved). */
  private verifiedFor(key: StoredKey, project: JwtProject): { signed: SignedRecord } {
    const v = this.keys.verified(key);
    if (v.record.projectId !== project.record.projectId)
      throw new KeystoreError('KEY_INTEGRITY', `key ${key.keyId}: the stored record is not of project ${project.record.projectId}`);
    return v;
  }

  /**
   * The user's active key: stored, or made now with the user's JWT (`made` is then the address the enclave
   * answered). Creations for one subject run one at a time, each looking again once it may start.
   */
  private async userKey(project: JwtProject, jwt: string, subject: string): Promise<{ key: StoredKey; made: string | null }> {
    const projectId = project.record.projectId;
    const stored = this.store.activeKeyFor(projectId, subject);
    if (stored) return { key: stored, made: null };
    const lock = `${projectId}\n${subject}`;
    const before = this.creating.get(lock) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(() => this.create(project, jwt, subject));
    const tail = run.catch(() => undefined);
    this.creating.set(lock, tail);
    void tail.then(() => {
      if (this.creating.get(lock) === tail) this.creating.delete(lock);
    });
    return run;
  }

  private async create(project: JwtProject, jwt: string, subject: string): Promise<{ key: StoredKey; made: string | null }> {
    const projectId = project.record.projectId;
    const stored = this.store.activeKeyFor(projectId, subject);
    if (stored) return { key: stored, made: null };
    const checker = this.keys.records();
    const keyId = newKeyId();
    const made = await this.enclave.call('keys.create', { keyId, project: project.signed, subject: null, jwt });
    // The enclave derived the subject from the verified JWT: it must be the one the parent looked up.
    const { record } = checkNewKey(checker, made, { keyId, projectId, subject, origin: 'created' });
    const result = this.store.insert({
      keyId,
      externalId: null,
      address: made.address,
      publicKey: made.publicKey,
      blob: made.blob,
      labels: {},
      attestation: null,
      createdAt: Date.now(),
      signed: made.record,
      record,
    });
    if (!result.created) {
      // Another writer of this database stored the user's key first: the one made here was never answered and is dropped.
      this.logger.info({ projectId, keyId }, 'discarded a duplicate key for a JWT user who already has one');
      return { key: result.record, made: null };
    }
    this.logger.info({ projectId, keyId: result.record.keyId }, 'created a key for a JWT user');
    return { key: result.record, made: made.address };
  }
}
