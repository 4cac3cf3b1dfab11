/**
 * A fake enclave for the parent's tests: an RPC server on the simulated vsock transport that speaks protocol
 * version 3 and signs records with a keystore identity of its own (Ed25519 over the record digest, as
 * docs/RECORDS.md says), so the parent's checks run against genuine signatures. It keeps its secp256k1 keys in
 * memory and signs messages for real; the test can hold sign requests, count calls, and change answers.
 * Projects: it makes and changes project records; for a JWT project it checks the JWT with jose against the
 * JWKS the test gives it (`jwks`), with the project's issuer and audience, and derives the subject as the
 * enclave does, so the parent's TrueWallet routes meet genuine refusals (the real enclave's JWT checks, with
 * every rule of docs/PROJECTS.md, are tested against the bundle).
 * Signing policies (docs/POLICIES.md): `projects.setPolicies` makes the next record with the policies given
 * (normalized by their schema, as the enclave's method parameters are); `projects.evaluatePolicy` records what
 * it is asked and answers `decision`; `signRefusal` is what keys.sign throws while set (a POLICY_DENIED, say).
 * The real evaluation is tested against the bundle.
 * The wallet routes' TLS (docs/TLS.md): `tls.create` makes a real P-256 key and PKCS#10 request (@peculiar/x509),
 * its "sealed" blob random bytes that only the fakes can open (`FAKE_KMS`, standing for KMS, so a fake started
 * again with the same identity unseals it); `tls.install` checks the identity's signature over the blob and that
 * the chain's leaf is the key's, and health reports what is installed.
 * The real enclave's side of every check is tested against the bundle (enclave/test, test/e2e).
 */
import {
  generateKeyPairSync,
  randomBytes,
  sign as edSign,
  verify as edVerify,
  webcrypto,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { jwtVerify, type JWTVerifyGetKey } from 'jose';
import { z } from 'zod';
import { hashMessage, parseSignature } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { BLOB_ALG, encodeBlob } from '@nks/shared/blob';
import type {
  CreateResult,
  IdentityResult,
  LookupResult,
  ProjectResult,
  SignResult,
  TlsCreateResult,
  TlsStatus,
} from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import { silentLogger, type Logger } from '@nks/shared/log';
import type { PolicyDecision } from '@nks/shared/policy/decision';
import { isEmptyPolicy, PoliciesSchema, type Policies } from '@nks/shared/policy/schema';
import { jwtSubject } from '@nks/shared/project-auth';
import type { ProjectSettings } from '@nks/shared/projects-schema';
import {
  DEFAULT_PROJECT_ID,
  decodeKeyRecord,
  decodeProjectRecord,
  encodeRecord,
  hex,
  identityPublicKeyHex,
  recordDigest,
  type KeyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { RpcServer, rpcMethod } from '@nks/shared/rpc';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';
import { tlsBlobDigest } from '@nks/shared/tls-identity';
import type { Transport } from '@nks/shared/transport';
import { x509 } from '../../sim/src/nsm/x509';
import { blobSha256 } from '../src/key-registry';

export const FAKE_KMS_KEY_ARN = 'arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000';

/** A keystore identity for tests: signs records as the enclave does. */
export class TestIdentity {
  readonly privateKey: KeyObject;
  readonly publicKeyObject: KeyObject;
  readonly publicKey: string;

  constructor() {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    this.privateKey = privateKey;
    this.publicKeyObject = publicKey;
    this.publicKey = identityPublicKeyHex(publicKey);
  }

  sign(record: KeyRecord | ProjectRecord): SignedRecord {
    const cbor = encodeRecord(record);
    return { record: cbor.toString('base64'), signature: edSign(null, recordDigest(cbor), this.privateKey).toString('base64') };
  }

  project(over: Partial<ProjectRecord> = {}): ProjectRecord {
    return {
      v: 1,
      kind: 'project',
      projectId: DEFAULT_PROJECT_ID,
      projectKey: 'default',
      auth: { type: 'token' },
      allowedRequestTypes: [...SIGN_REQUEST_TYPES],
      allowedOrigins: [],
      state: 'active',
      seq: 0,
      prev: null,
      createdAt: 1_700_000_000_000,
      ...over,
    };
  }
}

/** A version 2 key blob of the right shape (its sealed bytes are random: nobody opens it). */
export function fakeKeyBlob(k: { keyId: string; address: string; projectId: string; subject: string | null }): string {
  return encodeBlob({
    v: 2,
    kind: 'key',
    alg: BLOB_ALG,
    kmsKeyArn: FAKE_KMS_KEY_ARN,
    ...k,
    createdAt: Date.now(),
    wrappedKey: randomBytes(256),
    iv: randomBytes(12),
    ciphertext: randomBytes(48),
  }).toString('base64');
}

interface CreateParams {
  keyId: string;
  project: SignedRecord;
  subject: string | null;
  attest?: boolean;
  jwt?: string;
}

interface SignParams {
  keyId: string;
  record: SignedRecord;
  project: SignedRecord;
  request: { type: string; message: string | { raw: `0x${string}` } };
  jwt?: string;
}

/** A record's `policies` field: absent for none (normalized by the schema, as the enclave's parameters are). */
const policiesField = (policies: unknown): { policies?: Policies } => {
  const p = policies === undefined ? undefined : PoliciesSchema.parse(policies);
  return isEmptyPolicy(p) ? {} : { policies: p };
};

/** What the fakes' "KMS" opens: a TLS blob (base64) -> the key it seals, its SPKI (base64). Shared by every fake. */
const FAKE_KMS = new Map<string, { spki: string }>();

export const NO_TLS: TlsStatus = { state: 'none', publicKey: null, names: [], notBefore: null, notAfter: null, fingerprint256: null };

interface Held {
  keyId: string;
  release: () => void;
}

export class FakeEnclave {
  readonly server: RpcServer;
  readonly identity: TestIdentity = new TestIdentity();
  readonly defaultProject: SignedRecord;
  private readonly keys = new Map<string, PrivateKeyAccount>();
  /** Calls by method. */
  readonly calls: Record<string, number> = {};
  /** Every `keys.sign` and `keys.setDisabled` request as received. */
  readonly signRequests: Array<{ keyId: string; record: SignedRecord; project: SignedRecord }> = [];
  /** Sign requests waiting for `release` (while `holding`), in arrival order. */
  readonly held: Held[] = [];
  private heldWaiters: Array<() => void> = [];
  holding = false;
  /** Sign with this account instead of the key's own (a substituted key). */
  signAs: PrivateKeyAccount | null = null;
  /** Every signature this enclave answered with. */
  readonly answered: SignResult[] = [];
  /** Changes an answer before it is sent (an enclave, or whatever answers in its place, that lies). */
  alter: {
    create?: (r: CreateResult) => CreateResult;
    setDisabled?: (r: KeyRecord) => KeyRecord;
    projectCreate?: (r: ProjectRecord) => ProjectRecord;
    projectSetState?: (r: ProjectRecord) => ProjectRecord;
    projectSetPolicies?: (r: ProjectRecord) => ProjectRecord;
    tlsCreate?: (r: TlsCreateResult) => TlsCreateResult;
    tlsInstall?: (r: TlsStatus) => TlsStatus;
  } = {};
  /** What the wallet routes are served with (health's `tls`). */
  tls: TlsStatus = NO_TLS;
  /** Every `tls.install` request as received. */
  readonly tlsInstalls: Array<{ blob: string; blobSignature: string; chain: string }> = [];
  /** `tls.install` answers this error while set (an enclave that cannot install: KMS down, say). */
  tlsInstallError: KeystoreError | null = null;
  /** The keys JWTs of JWT projects are checked with (jose's key resolver, e.g. `createLocalJWKSet`). */
  jwks: JWTVerifyGetKey | null = null;
  /** `keys.create` waits this long before answering (concurrent first calls overlap). */
  createDelayMs = 0;
  /** What projects.evaluatePolicy answers. */
  decision: PolicyDecision = { allowed: true, rule: null, limit: null, reason: 'the project has no policies', rules: [], limits: [] };
  /** Every projects.evaluatePolicy request as received. */
  readonly evaluations: Array<Record<string, unknown>> = [];
  /** keys.sign throws this while set (after its record checks), as the enclave's policy check does. */
  signRefusal: KeystoreError | null = null;
  /** Every projects.setPolicies `approvals` as received (undefined: none sent). */
  readonly approvalsReceived: Array<string[] | undefined> = [];
  /** projects.setPolicies waits for this before answering, while set. */
  setPoliciesGate: Promise<void> | null = null;
  /** Health's `policy` section. */
  policyHealth = { evaluations: 7, denials: { rule: 3, noRule: 2, limit: 1 }, trackedCounters: 4 };
  /** identity.get answers IDENTITY_UNAVAILABLE while true (a genesis image, or one still unsealing). */
  identityUnavailable = false;
  protocolVersion = 3;

  /** `identity`: another fake's, so this one stands for the same enclave started again. */
  constructor(logger: Logger = silentLogger(), identity?: TestIdentity) {
    if (identity) this.identity = identity;
    this.defaultProject = this.identity.sign(this.identity.project());
    const any = z.any();
    const count = <P, R>(method: string, fn: (p: P) => R) =>
      rpcMethod(any, (p: P) => {
        this.calls[method] = (this.calls[method] ?? 0) + 1;
        return fn(p);
      });
    this.server = new RpcServer({
      name: 'fake-enclave',
      logger,
      methods: {
        'enclave.hello': count('enclave.hello', () => ({
          protocolVersion: this.protocolVersion,
          supportedVersions: [this.protocolVersion],
          features: [],
          enclaveVersion: '0.4.0',
        })),
        'enclave.health': count('enclave.health', () => ({
          status: 'ok',
          kmsProxy: 'connected',
          mode: 'normal',
          uptimeMs: 1000,
          counters: { errors: {} },
          jwt: { clock: 'trusted', clockDriftMs: 12, verifications: 0, refusals: 0, jwksFetches: 0, jwksFetchFailures: 0, jwksCached: 0 },
          tls: this.tls,
          wallets: {
            connections: 3,
            connectionsRefused: 1,
            connectionsEvicted: 0,
            handshakeFailures: 2,
            requests: { ok: 5, invalid_jwt: 1 },
          },
          memory: { rssBytes: 1, heapUsedBytes: 1, externalBytes: 1 },
          policy: this.policyHealth,
        })),
        'identity.get': count('identity.get', (p: { nonce?: string }) => this.identityGet(p)),
        'keys.create': count('keys.create', (p: CreateParams) => this.create(p)),
        'keys.sign': count('keys.sign', (p: SignParams) => this.sign(p)),
        'keys.lookup': count('keys.lookup', (p: { record: SignedRecord; project: SignedRecord; jwt: string }) => this.lookup(p)),
        'projects.create': count('projects.create', (p: { settings: ProjectSettings }) => this.projectCreate(p.settings)),
        'projects.setState': count('projects.setState', (p: { project: SignedRecord; state: 'active' | 'disabled' }) =>
          this.projectSetState(p),
        ),
        'projects.setPolicies': count('projects.setPolicies', (p: { project: SignedRecord; policies: unknown; approvals?: string[] }) =>
          this.projectSetPolicies(p),
        ),
        'projects.evaluatePolicy': count('projects.evaluatePolicy', (p: Record<string, unknown>) => {
          this.evaluations.push(p);
          return this.decision;
        }),
        'keys.setDisabled': count('keys.setDisabled', (p: { record: SignedRecord; project: SignedRecord; disabled: boolean }) =>
          this.setDisabled(p),
        ),
        'keys.forget': count('keys.forget', (p: { keyId: string }) => ({ keyId: p.keyId, forgotten: false })),
        'attestation.get': count('attestation.get', () => ({ document: Buffer.from('fake document').toString('base64') })),
        'tls.create': count('tls.create', (p: { names: string[] }) => this.tlsCreate(p.names)),
        'tls.install': count('tls.install', (p: { blob: string; blobSignature: string; chain: string }) => this.tlsInstall(p)),
      },
    });
  }

  async listen(transport: Transport, address: string): Promise<void> {
    await this.server.listen(transport, address);
  }

  private identityGet(p: { nonce?: string }): IdentityResult {
    if (this.identityUnavailable) throw new KeystoreError('IDENTITY_UNAVAILABLE', 'the keystore identity is not available');
    return {
      publicKey: this.identity.publicKey,
      genesisDocument: Buffer.from('fake genesis document').toString('base64'),
      attestation: Buffer.from(`fake document for ${p.nonce ?? 'no nonce'}`).toString('base64'),
      defaultProject: this.defaultProject,
    };
  }

  /** The subject of a JWT project's user, from a JWT that verifies; the project's record decoded. */
  private async jwtUser(projectSigned: SignedRecord, jwt: string | undefined): Promise<{ project: ProjectRecord; subject: string | null }> {
    const project = decodeProjectRecord(Buffer.from(projectSigned.record, 'base64'));
    if (project.auth.type !== 'jwt') {
      if (jwt !== undefined) throw new KeystoreError('INVALID_PARAMS', 'a token project takes no JWT');
      return { project, subject: null };
    }
    if (jwt === undefined) throw new KeystoreError('FORBIDDEN', "a JWT project's key signs only with its user's JWT");
    if (!this.jwks) throw new KeystoreError('JWKS_UNAVAILABLE', 'no JWKS');
    const { auth } = project;
    let claims: Record<string, unknown>;
    try {
      claims = (await jwtVerify(jwt, this.jwks, { issuer: auth.issuer, audience: auth.audience, algorithms: auth.algorithms })).payload;
    } catch {
      throw new KeystoreError('INVALID_JWT', 'the JWT does not verify');
    }
    const subject = jwtSubject(auth.issuer, claims[auth.userClaim]);
    if (subject === null) throw new KeystoreError('INVALID_JWT', 'claim missing');
    return { project, subject };
  }

  private async create(p: CreateParams): Promise<CreateResult> {
    const { project, subject: jwtSubjectOf } = await this.jwtUser(p.project, p.jwt);
    if (project.state !== 'active') throw new KeystoreError('KEY_DISABLED', 'the project is disabled');
    const subject = project.auth.type === 'jwt' ? jwtSubjectOf : p.subject;
    if (this.createDelayMs) await new Promise((r) => setTimeout(r, this.createDelayMs));
    const account = privateKeyToAccount(generatePrivateKey());
    this.keys.set(p.keyId, account);
    const blob = fakeKeyBlob({ keyId: p.keyId, address: account.address, projectId: project.projectId, subject });
    const record: KeyRecord = {
      v: 1,
      kind: 'key',
      keyId: p.keyId,
      address: account.address,
      blobSha256: blobSha256(blob),
      projectId: project.projectId,
      subject,
      state: 'active',
      disabled: false,
      seq: 0,
      prev: null,
      origin: 'created',
      createdAt: Date.now(),
    };
    const result: CreateResult = {
      keyId: p.keyId,
      address: account.address,
      publicKey: account.publicKey,
      blob,
      record: this.identity.sign(record),
      ...(p.attest ? { attestation: Buffer.from(`birth of ${p.keyId}`).toString('base64') } : {}),
    };
    return this.alter.create ? this.alter.create(result) : result;
  }

  /** The key's record checked against the JWT's user, as the enclave does: another user's JWT is FORBIDDEN. */
  private async keyUser(p: { record: SignedRecord; project: SignedRecord; jwt?: string | undefined }): Promise<KeyRecord> {
    const record = decodeKeyRecord(Buffer.from(p.record.record, 'base64'));
    const { project, subject } = await this.jwtUser(p.project, p.jwt);
    if (project.auth.type === 'jwt' && subject !== record.subject) throw new KeystoreError('FORBIDDEN', 'this JWT is not for this key');
    if (project.state === 'disabled' || record.disabled) throw new KeystoreError('KEY_DISABLED', 'the key is disabled');
    return record;
  }

  private async lookup(p: { record: SignedRecord; project: SignedRecord; jwt: string }): Promise<LookupResult> {
    const record = await this.keyUser(p);
    return { keyId: record.keyId, address: record.address as `0x${string}` };
  }

  private async sign(p: SignParams): Promise<SignResult> {
    await this.keyUser(p);
    this.signRequests.push({ keyId: p.keyId, record: p.record, project: p.project });
    if (this.signRefusal) throw this.signRefusal;
    if (this.holding) {
      await new Promise<void>((release) => {
        this.held.push({ keyId: p.keyId, release });
        for (const w of this.heldWaiters.splice(0)) w();
      });
    }
    const account = this.signAs ?? (this.keys.get(p.keyId) as PrivateKeyAccount);
    if (p.request.type !== 'message') throw new KeystoreError('INVALID_PARAMS', 'this fake signs messages only');
    const signature = await account.signMessage({ message: p.request.message });
    const { r, s, v, yParity } = parseSignature(signature);
    const result = {
      signature,
      r,
      s,
      v: Number(v) as 27 | 28,
      yParity: yParity as 0 | 1,
      hash: hashMessage(p.request.message),
      address: account.address,
    };
    this.answered.push(result);
    return result;
  }

  private setDisabled(p: { record: SignedRecord; project: SignedRecord; disabled: boolean }): { record: SignedRecord } {
    const bytes = Buffer.from(p.record.record, 'base64');
    const old = decodeKeyRecord(bytes);
    let next: KeyRecord = { ...old, disabled: p.disabled, seq: old.seq + 1, prev: hex(recordDigest(bytes)), createdAt: Date.now() };
    if (this.alter.setDisabled) next = this.alter.setDisabled(next);
    return { record: this.identity.sign(next) };
  }

  private projectCreate(settings: ProjectSettings): ProjectResult {
    let record: ProjectRecord = this.identity.project({
      projectId: `p_${randomBytes(16).toString('base64url')}`,
      projectKey: `pk_${randomBytes(16).toString('base64url')}`,
      auth: settings.auth,
      allowedOrigins: settings.allowedOrigins,
      allowedRequestTypes: settings.allowedRequestTypes,
      createdAt: Date.now(),
      ...policiesField(settings.policies),
    });
    if (this.alter.projectCreate) record = this.alter.projectCreate(record);
    return { projectId: record.projectId, projectKey: record.projectKey, record: this.identity.sign(record) };
  }

  private projectSetState(p: { project: SignedRecord; state: 'active' | 'disabled' }): ProjectResult {
    const bytes = Buffer.from(p.project.record, 'base64');
    const old = decodeProjectRecord(bytes);
    let next: ProjectRecord = { ...old, state: p.state, seq: old.seq + 1, prev: hex(recordDigest(bytes)), createdAt: Date.now() };
    if (this.alter.projectSetState) next = this.alter.projectSetState(next);
    return { projectId: next.projectId, projectKey: next.projectKey, record: this.identity.sign(next) };
  }

  private async projectSetPolicies(p: { project: SignedRecord; policies: unknown; approvals?: string[] }): Promise<ProjectResult> {
    if (this.setPoliciesGate) await this.setPoliciesGate;
    this.approvalsReceived.push(p.approvals);
    const bytes = Buffer.from(p.project.record, 'base64');
    const { policies: current, ...old } = decodeProjectRecord(bytes);
    // A stand-in for the enclave's check (enclave/test/policy-approvals.test.ts tests the real one): it counts
    // the approvals given, it does not recover them.
    const got = p.approvals?.length ?? 0;
    if (current?.approvers && got < current.approvers.threshold)
      throw new KeystoreError(
        'FORBIDDEN',
        `changing this project's policies needs ${current.approvers.threshold} approvals of its approvers, got ${got}`,
      );
    let next: ProjectRecord = {
      ...old,
      ...policiesField(PoliciesSchema.parse(p.policies)),
      seq: old.seq + 1,
      prev: hex(recordDigest(bytes)),
      createdAt: Date.now(),
    };
    if (this.alter.projectSetPolicies) next = this.alter.projectSetPolicies(next);
    return { projectId: next.projectId, projectKey: next.projectKey, record: this.identity.sign(next) };
  }

  private async tlsCreate(names: string[]): Promise<TlsCreateResult> {
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
    const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: `CN=${names[0]}`,
      keys,
      signingAlgorithm: alg,
      extensions: [new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value })))],
    });
    const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey)).toString('base64');
    const blob = randomBytes(220).toString('base64');
    FAKE_KMS.set(blob, { spki });
    const result: TlsCreateResult = {
      publicKey: spki,
      blob,
      blobSignature: edSign(null, tlsBlobDigest(Buffer.from(blob, 'base64')), this.identity.privateKey).toString('base64'),
      csr: csr.toString('pem'),
      attestation: Buffer.from(`fake tls attestation of ${spki}`).toString('base64'),
    };
    return this.alter.tlsCreate ? this.alter.tlsCreate(result) : result;
  }

  private tlsInstall(p: { blob: string; blobSignature: string; chain: string }): TlsStatus {
    this.tlsInstalls.push(p);
    if (this.tlsInstallError) throw this.tlsInstallError;
    const signed = edVerify(
      null,
      tlsBlobDigest(Buffer.from(p.blob, 'base64')),
      this.identity.publicKeyObject,
      Buffer.from(p.blobSignature, 'base64'),
    );
    const sealed = FAKE_KMS.get(p.blob);
    if (!signed || !sealed) throw new KeystoreError('KEY_INTEGRITY', 'no');
    const leaf = new X509Certificate(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(p.chain)?.[0] ?? '');
    if (leaf.publicKey.export({ type: 'spki', format: 'der' }).toString('base64') !== sealed.spki)
      throw new KeystoreError('INVALID_PARAMS', 'the chain does not name this key');
    const status: TlsStatus = {
      state: 'installed',
      publicKey: sealed.spki,
      names: (leaf.subjectAltName ?? '').split(', ').flatMap((n) => (n.startsWith('DNS:') ? [n.slice(4)] : [])),
      notBefore: new Date(leaf.validFrom).toISOString(),
      notAfter: new Date(leaf.validTo).toISOString(),
      fingerprint256: leaf.fingerprint256.replace(/:/g, '').toLowerCase(),
    };
    this.tls = this.alter.tlsInstall ? this.alter.tlsInstall(status) : status;
    return this.tls;
  }

  /** Signs for `keyId` with `account` from now on (a key the test stored itself). */
  adopt(keyId: string, account: PrivateKeyAccount): void {
    this.keys.set(keyId, account);
  }

  /** Resolves once `n` sign requests are held. */
  async waitHeld(n: number): Promise<'held'> {
    while (this.held.length < n) await new Promise<void>((r) => this.heldWaiters.push(r));
    return 'held';
  }

  releaseAll(): void {
    this.holding = false;
    for (const h of this.held.splice(0)) h.release();
  }

  close(): Promise<void> {
    return this.server.close(100);
  }
}
