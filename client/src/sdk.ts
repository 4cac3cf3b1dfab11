/**
 * Typed client for the nitro-keystore caller API (README.md, "Caller API").
 *
 *   const ks = new KeystoreClient({ url: 'http://127.0.0.1:7070', token });
 *   const { key } = await ks.createKey({ externalId: 'user-42' });
 *   const sig = await ks.signMessage(key.keyId, 'hello');
 *
 * Errors are `KeystoreApiError` with the API's code, HTTP status, request id and whether a retry can help.
 * Requests that are safe to repeat (reads, signing, creation) are retried on retryable errors with jittered
 * backoff; a creation without an externalId carries an Idempotency-Key, so its retries cannot make two keys.
 *
 * Nothing the server says needs to be taken on trust: `verifyKey` checks a key's signed record against the
 * keystore identity you pin and the key you asked for, and its birth attestation against the PCR0s you approve;
 * `verifyIdentity` checks that the running enclave holds that identity (client/src/verify.ts, docs/RECORDS.md,
 * "What a client pins").
 *
 *   const key = await ks.getKey(keyId);
 *   verifyKey(key, { identityPublicKey: PINNED_IDENTITY, expected: { keyId }, expectedPcrs: { 0: APPROVED_PCR0S } });
 */
import {
  AttestationError,
  verifyBirthAttestation,
  type BirthVerifyOptions,
  type VerifiedAttestation,
  type VerifyOptions,
} from '@nks/shared/attestation';
import { backoffDelay, type BackoffOptions } from '@nks/shared/backoff';
import { detailsOf, isRetryableCode, type ErrorDetails } from '@nks/shared/errors';
import type { LimitOutcome, PolicyDecision, RuleOutcome } from '@nks/shared/policy/decision';
import { policyChangeTypedDataForWallet } from '@nks/shared/policy/approval';
import type { PoliciesView, PolicyApprovalView } from '@nks/shared/policy/views';
import {
  PoliciesSchema,
  type Approvers,
  type Condition,
  type Limit,
  type Policies,
  type PoliciesInput,
  type Rule,
} from '@nks/shared/policy/schema';
import type { TlsStatus } from '@nks/shared/enclave-api';
import type { JwtAlgorithm, ProjectAuth } from '@nks/shared/project-auth';
import type { KeyState, ProjectState, SignedRecord } from '@nks/shared/records';
import type { SignRequestType } from '@nks/shared/signing/request-types';
import type { SignRequestInput, SignResult } from '@nks/shared/signing/schema';
import { isDeepStrictEqual } from 'node:util';
import { VerificationError, type IdentityView } from './verify';

export type {
  Approvers,
  BirthVerifyOptions,
  Condition,
  ErrorDetails,
  Limit,
  LimitOutcome,
  Policies,
  PoliciesInput,
  PolicyDecision,
  Rule,
  RuleOutcome,
  JwtAlgorithm,
  KeyState,
  ProjectAuth,
  ProjectState,
  SignedRecord,
  SignRequestInput,
  SignRequestType,
  SignResult,
  VerifiedAttestation,
  VerifyOptions,
};
export { AttestationError };
export {
  fetchTlsEvidence,
  parseTlsOrigin,
  verifyTlsEvidence,
  type FetchTlsEvidenceOptions,
  type TlsEvidence,
  type VerifiedTlsKey,
  type VerifyTlsEvidenceOptions,
} from './tls';
export type { TlsStatus };
export {
  verifyGenesis,
  verifyIdentity,
  verifyKey,
  verifyPolicies,
  VerificationError,
  type ExpectedKey,
  type ExpectedPcrs,
  type GenesisOutput,
  type IdentitySection,
  type IdentityView,
  type VerificationErrorCode,
  type VerifiedGenesis,
  type VerifiedIdentity,
  type VerifiedKey,
  type VerifyGenesisOptions,
  type VerifyIdentityOptions,
  type VerifyKeyOptions,
  type VerifiedPolicies,
} from './verify';

export interface Key {
  keyId: string;
  address: `0x${string}`;
  publicKey: `0x${string}`;
  externalId: string | null;
  labels: Record<string, string>;
  createdAt: string;
  disabled: boolean;
  /** The project the key belongs to (`default`: the token project made at genesis); null for a key made before 0.4 and not migrated yet. */
  projectId: string | null;
  state: KeyState | null;
  /** The key's current record, signed by the keystore identity: check it with `verifyKey`. Null before migration. */
  record: SignedRecord | null;
  /** A successor's (docs/LIFECYCLE.md): the key it succeeds. */
  predecessor?: string;
  /** Birth attestation (base64 COSE_Sign1), when the key was created with `attest: true`. */
  attestation?: string;
}

/** A key in its subject's history (docs/LIFECYCLE.md), oldest first. */
export interface KeyHistoryEntry {
  keyId: string;
  address: `0x${string}`;
  /** pending, active, retired or cancelled (null for a key made before 0.4 and not migrated yet). */
  state: KeyState | null;
  disabled: boolean;
  /** The key it succeeds, or null. */
  predecessor: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A project (docs/PROJECTS.md): its record's content, the parent's name for it, and the record itself. */
export interface Project {
  projectId: string;
  /** Public: it goes into browser code (`{origin}/v1/{projectKey}/wallets/…`). `default` for the genesis project. */
  projectKey: string;
  name: string;
  auth: ProjectAuth;
  allowedOrigins: string[];
  allowedRequestTypes: SignRequestType[];
  state: ProjectState;
  createdAt: string;
  /** Its signing policies (docs/POLICIES.md), normalized; empty lists when it has none. */
  policies: Policies;
  /** The project's current record, signed by the keystore identity. */
  record: SignedRecord;
}

export type { PoliciesView, PolicyApprovalView };

/** What `createProject` sends: unset fields take the server's defaults (README.md, "Caller API"). */
export interface ProjectInput {
  /** 1-128 printable characters: the parent's label, not in the record. */
  name: string;
  auth:
    | { type: 'token' }
    | {
        type: 'jwt';
        issuer: string;
        audience: string;
        /** https only. */
        jwksUri: string;
        userClaim?: string;
        algorithms?: JwtAlgorithm[];
        maxTokenLifetime?: number;
      };
  allowedOrigins?: string[];
  allowedRequestTypes?: SignRequestType[];
  /** Signing policies from the start (docs/POLICIES.md); later: `setPolicies`. */
  policies?: PoliciesInput;
}

/**
 * A new TLS key for the wallet routes (`POST /v1/tls/keys`, docs/TLS.md): made in the enclave, not installed yet.
 * Get a certificate for `csr` and install the chain with `tls.install`.
 */
export interface TlsKeyCreated {
  /** The key's DER SubjectPublicKeyInfo, base64. */
  publicKey: string;
  /** PKCS#10 request, PEM: CN = names[0], subjectAltName = every name. */
  csr: string;
  /** COSE_Sign1, base64: user_data = tlsUserData(SPKI), no nonce. */
  attestation: string;
  names: string[];
  createdAt: string;
}

/** `GET /v1/tls`: what the enclave serves with now, and the keys the parent keeps. */
export interface TlsView {
  status: TlsStatus;
  /** The installed key (`publicKey`: DER SPKI, base64), or null. */
  current: { publicKey: string; names: string[]; notAfter: string; installedAt: string } | null;
  /** Keys made by `tls.createKey` and not installed (yet), newest first. */
  pending: Array<{ publicKey: string; names: string[]; createdAt: string }>;
}

export interface ClientOptions {
  url: string;
  /** The caller token; may be empty for the routes that need none (`identity()`, `ready()`). */
  token: string;
  /** Per attempt. Default 15 s. */
  timeoutMs?: number;
  /** Retries of repeatable requests on retryable errors. Default 2. */
  retries?: number;
  fetch?: typeof fetch;
}

/** Retries wait 50-100 ms, then 100-200 ms, …, at most 5 s. */
export const SDK_RETRY_BACKOFF: Readonly<BackoffOptions> = { initialMs: 100, maxMs: 5_000 };

export class KeystoreApiError extends Error {
  override readonly name = 'KeystoreApiError';
  /**
   * What the server said beside the message, when it did: for POLICY_DENIED, `{rule, limit, reason}` (the rule
   * or limit that refused, and why; docs/POLICIES.md).
   */
  readonly details: ErrorDetails | undefined;
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId: string | undefined,
    options?: ErrorOptions & { details?: ErrorDetails | undefined; retryAfterS?: number | undefined },
  ) {
    super(message, options);
    this.details = options?.details;
    this.retryAfterS = options?.retryAfterS;
  }
  /** The server's `Retry-After`, in seconds, when it gave one (503, and 429 `RATE_LIMITED`). */
  readonly retryAfterS: number | undefined;
  /** From the server's own error-code table (shared/src/errors.ts), so client and server agree. */
  get retryable(): boolean {
    return isRetryableCode(this.code);
  }
}

type TypedData = Extract<SignRequestInput, { type: 'typedData' }>['typedData'];
type Transaction = Extract<SignRequestInput, { type: 'transaction' }>['transaction'];
type Authorization = Extract<SignRequestInput, { type: 'authorization' }>['authorization'];
type UserOperationRequest = Extract<SignRequestInput, { type: 'userOperation' }>;

/**
 * Checks that `key.address` was born in an enclave as `key.keyId`: its birth attestation (from creation with
 * `attest: true`) must verify against the Nitro root (or `options.trustedRoots`) with the PCRs you expect
 * (`options.expectedPcrs`, PCR0 required: the PCR0 of an image you approve), and bind exactly this key id and
 * address. The chain is checked at the document's own time unless `options.at` says otherwise: a birth
 * attestation is evidence kept since the key's creation, and its leaf certificate lives about 3 hours. Throws
 * AttestationError; code LEGACY_BIRTH for a document from nitro-keystore 0.1, which is not evidence, and
 * PCR_REQUIRED without PCR0.
 */
export function verifyKeyBirth(key: Pick<Key, 'keyId' | 'address' | 'attestation'>, options: BirthVerifyOptions): VerifiedAttestation {
  if (!key.attestation) throw new AttestationError('MALFORMED', `key ${key.keyId} has no birth attestation (create it with attest: true)`);
  return verifyBirthAttestation(Buffer.from(key.attestation, 'base64'), key, { ...options, at: options.at ?? 'document' });
}

export class KeystoreClient {
  private readonly base: string;
  private readonly doFetch: typeof fetch;

  constructor(private readonly options: ClientOptions) {
    this.base = options.url.replace(/\/+$/, '');
    this.doFetch = options.fetch ?? fetch;
  }

  /**
   * The wallet routes' TLS key (admin token; docs/TLS.md). `createKey` makes a key in the enclave for these DNS
   * names (never retried: each call is a new key) and answers its CSR; `install` serves with the pending key and
   * this PEM chain (leaf first); `status` says what is served. Check a server with `fetchTlsEvidence` and
   * `verifyTlsEvidence`.
   */
  readonly tls = {
    createKey: (names: string[]): Promise<TlsKeyCreated> => this.request('POST', '/v1/tls/keys', { names }, false),
    install: (chain: string): Promise<TlsStatus> => this.request('PUT', '/v1/tls/certificate', { chain }),
    status: (): Promise<TlsView> => this.request('GET', '/v1/tls'),
  };

  private async request<T>(method: string, path: string, body?: unknown, repeatable = true): Promise<T> {
    return (await this.send<T>(method, path, body, repeatable)).body;
  }

  /** One logical request: retried on retryable errors (and network failures) when `repeatable`. */
  private async send<T>(
    method: string,
    path: string,
    body: unknown,
    repeatable: boolean,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: T }> {
    const attempts = repeatable ? (this.options.retries ?? 2) + 1 : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once<T>(method, path, body, headers);
      } catch (err) {
        const retry = err instanceof KeystoreApiError ? err.retryable : err instanceof TypeError; // TypeError: network failure
        if (!retry || attempt >= attempts) throw err;
        let delay = backoffDelay(attempt - 1, SDK_RETRY_BACKOFF);
        // The token's rate limit: not before its window ends, and not at all if that is longer than a backoff.
        if (err instanceof KeystoreApiError && err.code === 'RATE_LIMITED') {
          const waitMs = (err.retryAfterS ?? 1) * 1000;
          if (waitMs > SDK_RETRY_BACKOFF.maxMs) throw err;
          delay = Math.max(delay, waitMs);
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private async once<T>(
    method: string,
    path: string,
    body?: unknown,
    extra?: Record<string, string>,
  ): Promise<{ status: number; body: T }> {
    const res = await this.doFetch(`${this.base}${path}`, {
      method,
      headers: {
        ...extra,
        ...(this.options.token ? { authorization: `Bearer ${this.options.token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.options.timeoutMs ?? 15_000),
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch (err) {
      throw new KeystoreApiError(
        res.status,
        'BAD_RESPONSE',
        `the server answered ${res.status} with a body that is not JSON`,
        res.headers.get('x-request-id') ?? undefined,
        { cause: err },
      );
    }
    if (!res.ok) {
      const e = (parsed as { error?: { code?: string; message?: string; requestId?: string; details?: unknown } })?.error;
      const details = detailsOf(e?.details);
      const after = /^\d{1,6}$/.test(res.headers.get('retry-after') ?? '') ? Number(res.headers.get('retry-after')) : undefined;
      throw new KeystoreApiError(
        res.status,
        e?.code ?? `HTTP_${res.status}`,
        e?.message ?? res.statusText,
        e?.requestId ?? res.headers.get('x-request-id') ?? undefined,
        details || after !== undefined
          ? { ...(details ? { details } : {}), ...(after !== undefined ? { retryAfterS: after } : {}) }
          : undefined,
      );
    }
    return { status: res.status, body: parsed as T };
  }

  /**
   * Creates a key, or returns the existing one for `externalId` (`created: false`). In the `default` project,
   * or the token project `projectId` names (a JWT project's keys are made by its users, through the
   * TrueWallet API). For a token without `keys:read`, an existing key is answered as `{keyId, created: false}`
   * only (creating is not a way to read a key): read it with a token that may.
   */
  async createKey(
    input: { externalId?: string; labels?: Record<string, string>; attest?: boolean; projectId?: string } = {},
  ): Promise<{ key: Key; created: boolean }> {
    // Without an externalId, an Idempotency-Key (one per logical create, the same on its retries) makes it safe to
    // retry: the server answers a retry with the key the first attempt made (README.md, "Caller API").
    const headers = input.externalId === undefined ? { 'idempotency-key': globalThis.crypto.randomUUID() } : undefined;
    const res = await this.send<Key>('POST', '/v1/keys', input, true, headers);
    return { key: res.body, created: res.status === 201 };
  }

  /** A key (`KEY_NOT_FOUND` for a JWT project's key unless the token has `admin`: their records name the users). */
  getKey(keyId: string): Promise<Key> {
    return this.request('GET', `/v1/keys/${encodeURIComponent(keyId)}`);
  }

  async findKeyByExternalId(externalId: string): Promise<Key | undefined> {
    const page = await this.listKeys({ externalId });
    return page.keys[0];
  }

  /** A page of keys; JWT projects' keys are listed only for a token with `admin`. */
  listKeys(q: { externalId?: string; limit?: number; cursor?: string } = {}): Promise<{ keys: Key[]; nextCursor: string | null }> {
    const params = new URLSearchParams();
    if (q.externalId !== undefined) params.set('externalId', q.externalId);
    if (q.limit !== undefined) params.set('limit', String(q.limit));
    if (q.cursor !== undefined) params.set('cursor', q.cursor);
    const qs = params.toString();
    return this.request('GET', `/v1/keys${qs ? `?${qs}` : ''}`);
  }

  /** Every key, page by page. */
  async *allKeys(pageSize = 500): AsyncGenerator<Key> {
    let cursor: string | undefined;
    do {
      const page = await this.listKeys({ limit: pageSize, ...(cursor ? { cursor } : {}) });
      yield* page.keys;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }

  sign(keyId: string, request: SignRequestInput): Promise<SignResult> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/sign`, request);
  }

  signDigest(keyId: string, digest: `0x${string}`): Promise<SignResult> {
    return this.sign(keyId, { type: 'digest', digest });
  }

  signMessage(keyId: string, message: string | { raw: `0x${string}` }): Promise<SignResult> {
    return this.sign(keyId, { type: 'message', message });
  }

  signTypedData(keyId: string, typedData: TypedData): Promise<SignResult> {
    return this.sign(keyId, { type: 'typedData', typedData });
  }

  signTransaction(keyId: string, transaction: Transaction): Promise<SignResult> {
    return this.sign(keyId, { type: 'transaction', transaction });
  }

  /** `allowAllChains` is required for `chainId` 0: such a delegation is valid on every chain. */
  signAuthorization(keyId: string, authorization: Authorization, options: { allowAllChains?: boolean } = {}): Promise<SignResult> {
    return this.sign(keyId, { type: 'authorization', authorization, ...(options.allowAllChains ? { allowAllChains: true } : {}) });
  }

  signUserOperation(keyId: string, request: Omit<UserOperationRequest, 'type'>): Promise<SignResult> {
    return this.sign(keyId, { type: 'userOperation', ...request });
  }

  disableKey(keyId: string): Promise<Key> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/disable`);
  }

  enableKey(keyId: string): Promise<Key> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/enable`);
  }

  /**
   * The key lifecycle (docs/LIFECYCLE.md), for a token project's keys. `successor` (keys:create) makes a new
   * key for the same subject, `pending` (it signs) and naming `keyId` as its predecessor; SUCCESSOR_EXISTS while
   * one is pending. `activate` (admin) makes a pending key the subject's active key and retires its predecessor;
   * `cancel` (admin) gives a pending key up. A change from the wrong state is KEY_STATE (`details.state` names
   * the state). None is retried: a repeat after a lost answer would answer KEY_STATE or SUCCESSOR_EXISTS; read
   * `history` instead. A JWT project's keys change only with their user's JWT (the TrueWallet API).
   */
  successor(keyId: string, options: { attest?: boolean } = {}): Promise<Key> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/successor`, options, false);
  }

  activate(keyId: string): Promise<Key> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/activate`, undefined, false);
  }

  cancel(keyId: string): Promise<Key> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/cancel`, undefined, false);
  }

  /** The key's subject's keys, oldest first, with states and times (a key without subject: itself). */
  async history(keyId: string): Promise<KeyHistoryEntry[]> {
    return (await this.request<{ keys: KeyHistoryEntry[] }>('GET', `/v1/keys/${encodeURIComponent(keyId)}/history`)).keys;
  }

  /** Creates a project (admin token). Never retried: a repeat would make a second project. */
  createProject(input: ProjectInput): Promise<Project> {
    return this.request('POST', '/v1/projects', input, false);
  }

  getProject(projectId: string): Promise<Project> {
    return this.request('GET', `/v1/projects/${encodeURIComponent(projectId)}`);
  }

  listProjects(q: { limit?: number; cursor?: string } = {}): Promise<{ projects: Project[]; nextCursor: string | null }> {
    const params = new URLSearchParams();
    if (q.limit !== undefined) params.set('limit', String(q.limit));
    if (q.cursor !== undefined) params.set('cursor', q.cursor);
    const qs = params.toString();
    return this.request('GET', `/v1/projects${qs ? `?${qs}` : ''}`);
  }

  /** Every project, page by page (the `default` project first). */
  async *allProjects(pageSize = 500): AsyncGenerator<Project> {
    let cursor: string | undefined;
    do {
      const page = await this.listProjects({ limit: pageSize, ...(cursor ? { cursor } : {}) });
      yield* page.projects;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }

  /** A disabled project's keys sign nothing and its TrueWallet routes answer 401; enabling resumes them. */
  disableProject(projectId: string): Promise<Project> {
    return this.request('POST', `/v1/projects/${encodeURIComponent(projectId)}/disable`);
  }

  enableProject(projectId: string): Promise<Project> {
    return this.request('POST', `/v1/projects/${encodeURIComponent(projectId)}/enable`);
  }

  /** A project's signing policies (admin token; docs/POLICIES.md), with the signed record that holds them. */
  getPolicies(projectId: string): Promise<PoliciesView> {
    return this.request('GET', `/v1/projects/${encodeURIComponent(projectId)}/policies`);
  }

  /**
   * Replaces a project's signing policies as a whole (admin token): the enclave makes the project's next record
   * with them. `{}` removes them. Setting the same policies again changes nothing, so it is retried like a read.
   * When the current policy has approvers, `approvals` carries `threshold` of their signatures over this change
   * (`policyApproval`); without them the enclave refuses it (403 FORBIDDEN).
   */
  setPolicies(projectId: string, policies: PoliciesInput, options: { approvals?: readonly string[] } = {}): Promise<PoliciesView> {
    const body = options.approvals ? { ...policies, approvals: [...options.approvals] } : policies;
    return this.request('PUT', `/v1/projects/${encodeURIComponent(projectId)}/policies`, body);
  }

  /**
   * The typed data an approver signs for changing the project's current policies to `policies` (admin token).
   * The server's answer is the parent's word: its typed data is checked to be exactly the change to `policies`
   * of the project and record it names (computed here), so a parent cannot have a laxer policy approved in a
   * wallet that shows only digests. Check `recordSha256` against a record you verified (`getPolicies` +
   * `verifyPolicies`) to be sure it is the current one.
   */
  async policyApproval(projectId: string, policies: PoliciesInput): Promise<PolicyApprovalView> {
    const view = await this.request<PolicyApprovalView>('POST', `/v1/projects/${encodeURIComponent(projectId)}/policies:approval`, {
      policies,
    });
    const expected = policyChangeTypedDataForWallet(projectId, view.recordSha256, PoliciesSchema.parse(policies));
    if (view.projectId !== projectId || !isDeepStrictEqual(view.typedData, expected)) {
      throw new VerificationError('VIEW_MISMATCH', 'the approval the server answered is not the change of this project to these policies');
    }
    return view;
  }

  /**
   * A dry run (admin token): what the project's policy — or `policies`, to try one before setting it — decides
   * on `request`, with every rule's and limit's outcome (`keyId`: that key's limit counters). Nothing is signed
   * or counted; a denial is an answer here (`allowed: false`), not an error.
   */
  evaluatePolicy(
    projectId: string,
    input: { request: SignRequestInput; keyId?: string; policies?: PoliciesInput },
  ): Promise<PolicyDecision> {
    return this.request('POST', `/v1/projects/${encodeURIComponent(projectId)}/policies:evaluate`, input);
  }

  /** An attestation document from the enclave (base64), carrying `nonce` when given (0x hex). */
  attestation(nonce?: `0x${string}`): Promise<{ document: string }> {
    return this.request('GET', `/v1/attestation${nonce ? `?nonce=${nonce}` : ''}`);
  }

  /**
   * The keystore identity (no token needed): its public key, the genesis document, and a fresh attestation of
   * the running enclave carrying `nonce` (0x hex, 1-512 bytes). Check it with `verifyIdentity`.
   */
  identity(nonce: `0x${string}`): Promise<IdentityView> {
    return this.request('GET', `/v1/identity?nonce=${nonce}`);
  }

  async ready(): Promise<boolean> {
    const res = await this.doFetch(`${this.base}/readyz`, { signal: AbortSignal.timeout(this.options.timeoutMs ?? 15_000) }).catch(
      () => null,
    );
    return res?.status === 200;
  }
}
