/**
 * Typed client for the nitro-keystore caller API (README.md, "Caller API").
 *
 *   const ks = new KeystoreClient({ url: 'http://127.0.0.1:7070', token });
 *   const { key } = await ks.createKey({ externalId: 'user-42' });
 *   const sig = await ks.signMessage(key.keyId, 'hello');
 *
 * Errors are `KeystoreApiError` with the API's code, HTTP status, request id and whether a retry can help; a
 * network failure is code `NETWORK` and a call the server did not answer in time `CLIENT_TIMEOUT` (status 0).
 * Requests that are safe to repeat (reads, signing, creation) are retried on those and on the server's retryable
 * codes, with jittered backoff; a creation without an externalId carries an Idempotency-Key, the same on its
 * retries, so they cannot make two keys. Anything else thrown (a TypeError from the caller's input, a bug) is thrown as it is, at once.
 * Every method takes `CallOptions` last: `{requestId, signal, deadlineMs}`. `bigint`s anywhere in a request
 * (viem's transactions, typed data) are sent as decimal strings. The shapes each method answers: client/README.md.
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
import { detailsOf, isRetryableCode, type ErrorDetails, type ValidationIssue } from '@nks/shared/errors';
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
import { SIGN_BATCH_MAX_REQUESTS, type SignBatchItem, type SignRequestInput, type SignResult } from '@nks/shared/signing/schema';
import { isDeepStrictEqual } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, fetch as undiciFetch } from 'undici';
import { REQUEST_ID_RE } from '@nks/shared/identifiers';
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
  /** `http(s)://host[:port]`; with `socketPath`, the host is only the Host header (e.g. `http://localhost`). */
  url: string;
  /** The caller token; may be empty for the routes that need none (`identity()`, `ready()`). */
  token: string;
  /** Per attempt. Default 15 s. Past it: `CLIENT_TIMEOUT`, retried like a network failure. */
  timeoutMs?: number;
  /** Retries of repeatable requests on retryable errors. Default 2. */
  retries?: number;
  /** The API on a Unix socket (the parent's `api.listen: {socket}`). */
  socketPath?: string;
  /** PEM CA certificate(s) to trust for an `https://` API with a private certificate (instead of the system's). */
  ca?: string;
  fetch?: typeof fetch;
}

/** What every method takes last. */
export interface CallOptions {
  /**
   * Sent as `x-request-id` (1-128 of `A-Za-z0-9_.:-`, else a TypeError before anything is sent): the parent takes
   * it as the request's id, logs it and echoes it, on every attempt of this call. Errors carry it.
   */
  requestId?: string;
  /** Aborts the call, retries included: a `KeystoreApiError` with code `ABORTED` (never retryable). */
  signal?: AbortSignal;
  /**
   * Bounds the whole call, retries and their waits included, in milliseconds: past it, `CLIENT_TIMEOUT`. Not sent
   * to the server (the parent has no deadline header; its own deadline is `api.requestTimeoutMs`).
   */
  deadlineMs?: number;
}

/**
 * One answer of `signBatch`, in its request's place: the signature, or the error the single route would have
 * answered (status 200, that of the batch's answer; `batchIndex` says which request), or, for a request still
 * pending when a retry round was refused as a whole, that round's error (with its status).
 */
export type SignBatchOutcome = { result: SignResult; error?: undefined } | { error: KeystoreApiError; result?: undefined };

/** Codes the SDK itself gives (status 0): the server never answers them. */
export const CLIENT_ERROR_CODES = ['NETWORK', 'CLIENT_TIMEOUT', 'ABORTED'] as const;

/**
 * `T` where every plain `number` may also be a `bigint`, as viem's transaction and typed-data objects carry them
 * (sent as decimal strings, which the API takes for every integer).
 */
export type WithBigint<T> = T extends number
  ? number extends T
    ? T | bigint
    : T
  : T extends string | boolean | null | undefined
    ? T
    : T extends readonly (infer U)[]
      ? WithBigint<U>[]
      : T extends object
        ? { [K in keyof T]: WithBigint<T[K]> }
        : T;

/**
 * The headers that make `createKey(input)` safe to repeat after an answer that did not come (network failure,
 * timeout) or a retryable error. An `externalId` does by itself (a repeat answers the key the first attempt made);
 * without one, an Idempotency-Key, one per logical create and the same on its retries, does (README.md, "Caller API").
 */
export function createKeyHeaders(input: { externalId?: string }): Record<string, string> | undefined {
  return input.externalId === undefined ? { 'idempotency-key': globalThis.crypto.randomUUID() } : undefined;
}

/** `value` as validation issues if it is a short array of `{path, expected, received}` strings, else undefined (the server's word). */
function issuesOf(value: unknown): ValidationIssue[] | undefined {
  if (!Array.isArray(value) || value.length === 0 || value.length > 64) return undefined;
  const fields = ['path', 'expected', 'received'] as const;
  const ok = value.every(
    (i: unknown) =>
      typeof i === 'object' &&
      i !== null &&
      fields.every((f) => typeof (i as Record<string, unknown>)[f] === 'string' && ((i as Record<string, string>)[f]?.length ?? 0) <= 1024),
  );
  return ok ? value.map((i: Record<string, string>) => ({ path: i.path!, expected: i.expected!, received: i.received! })) : undefined;
}

/** A `signBatch` retry round's error `err`, refused as a whole, as the answer of the request at `index`. */
function slotError(err: KeystoreApiError, index: number): KeystoreApiError {
  const error = new KeystoreApiError(err.status, err.code, err.message, err.requestId, {
    cause: err,
    details: err.details,
    issues: err.issues,
    retryAfterS: err.retryAfterS,
    retryable: err.retryable,
  });
  error.batchIndex = index;
  return error;
}

/** Retries wait 50-100 ms, then 100-200 ms, …, at most 5 s. */
export const SDK_RETRY_BACKOFF: Readonly<BackoffOptions> = { initialMs: 100, maxMs: 5_000 };

/**
 * The wait before retry number `attempt` (1 for the first) after the retryable `err`: the backoff, and for the
 * token's rate limit not before its window ends (`Retry-After`, 1 s if not given); undefined when that is longer
 * than a backoff can be (the error stands: the SDK does not sit out a long window).
 */
function retryDelay(err: KeystoreApiError, attempt: number): number | undefined {
  const delay = backoffDelay(attempt - 1, SDK_RETRY_BACKOFF);
  if (err.code !== 'RATE_LIMITED') return delay;
  const waitMs = (err.retryAfterS ?? 1) * 1000;
  return waitMs > SDK_RETRY_BACKOFF.maxMs ? undefined : Math.max(delay, waitMs);
}

export class KeystoreApiError extends Error {
  override readonly name = 'KeystoreApiError';
  /**
   * What the server said beside the message, when it did: for POLICY_DENIED, `{rule, limit, reason}` (the rule
   * or limit that refused, and why; docs/POLICIES.md).
   */
  readonly details: ErrorDetails | undefined;
  /**
   * For INVALID_PARAMS: each problem with the request, `{path, expected, received}` (the server's `details`
   * array; README.md, "Caller API"), the first of which the message names.
   */
  readonly issues: readonly ValidationIssue[] | undefined;
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId: string | undefined,
    options?: ErrorOptions & {
      details?: ErrorDetails | undefined;
      issues?: readonly ValidationIssue[] | undefined;
      retryAfterS?: number | undefined;
      retryable?: boolean;
    },
  ) {
    super(message, options);
    this.details = options?.details;
    this.issues = options?.issues;
    this.retryAfterS = options?.retryAfterS;
    this.clientRetryable = options?.retryable;
  }
  /** The server's `Retry-After`, in seconds, when it gave one (503, and 429 `RATE_LIMITED`). */
  readonly retryAfterS: number | undefined;
  /** In a `signBatch` answer: the place of the request this error is for. */
  batchIndex: number | undefined;
  private readonly clientRetryable: boolean | undefined;
  /**
   * A server code: from the server's own error-code table (shared/src/errors.ts), so client and server agree.
   * `NETWORK` and `CLIENT_TIMEOUT`: whether the call may be repeated (every SDK call but a TLS key's creation and
   * the key lifecycle's changes); `ABORTED`: never.
   */
  get retryable(): boolean {
    return this.clientRetryable ?? isRetryableCode(this.code);
  }
}

/**
 * A failure of the connection itself, as undici (Node's fetch) reports it: `TypeError('fetch failed')` when the
 * request could not be made or answered, `TypeError('terminated')` when the answer broke off, with the system
 * error (ECONNREFUSED, ECONNRESET, UND_ERR_SOCKET…) as cause. Nothing else: a TypeError of a bug is not one.
 */
function isNetworkFailure(err: unknown): boolean {
  // By name, not instanceof: Node's fetch throws its own realm's TypeError (another one under a test sandbox).
  const e0 = err as { name?: unknown; message?: unknown } | null;
  if (e0?.name === 'TypeError' && (e0.message === 'fetch failed' || e0.message === 'terminated')) return true;
  let e = err as { code?: unknown; cause?: unknown } | null | undefined;
  for (let depth = 0; e && typeof e === 'object' && depth < 4; depth++, e = e.cause as typeof e) {
    if (typeof e.code === 'string' && /^(E[A-Z0-9]+|UND_ERR_[A-Z_]+)$/.test(e.code)) return true;
  }
  return false;
}

const bigintAsDecimal = (_key: string, value: unknown): unknown => (typeof value === 'bigint' ? value.toString() : value);

function checkCallOptions(call: CallOptions): void {
  if (call.requestId !== undefined && (typeof call.requestId !== 'string' || !REQUEST_ID_RE.test(call.requestId)))
    throw new TypeError('requestId must be 1-128 characters of A-Z, a-z, 0-9, _ . : -');
  if (call.deadlineMs !== undefined && !(typeof call.deadlineMs === 'number' && call.deadlineMs > 0 && call.deadlineMs <= 2 ** 31 - 1))
    throw new RangeError('deadlineMs must be a positive number of milliseconds');
}

type TypedData = WithBigint<Extract<SignRequestInput, { type: 'typedData' }>['typedData']>;
type Transaction = WithBigint<Extract<SignRequestInput, { type: 'transaction' }>['transaction']>;
type Authorization = WithBigint<Extract<SignRequestInput, { type: 'authorization' }>['authorization']>;
type UserOperationRequest = WithBigint<Extract<SignRequestInput, { type: 'userOperation' }>>;

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
    // A URL that cannot be one is the caller's mistake: said here, not found as a "network failure" later.
    if (!(URL.canParse(this.base) && /^https?:$/.test(new URL(this.base).protocol)))
      throw new TypeError(`not an http(s):// URL: ${options.url}`);
    if ((options.socketPath !== undefined || options.ca !== undefined) && options.fetch)
      throw new TypeError('socketPath and ca configure the built-in transport: not with a fetch of your own');
    if (options.socketPath !== undefined || options.ca !== undefined) {
      const dispatcher = new Agent({
        connect: {
          ...(options.socketPath !== undefined ? { socketPath: options.socketPath } : {}),
          ...(options.ca !== undefined ? { ca: options.ca } : {}),
        },
      });
      this.doFetch = ((url: string, init: RequestInit) =>
        undiciFetch(url, { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher })) as unknown as typeof fetch;
    } else this.doFetch = options.fetch ?? fetch;
  }

  /**
   * The wallet routes' TLS key (admin token; docs/TLS.md). `createKey` makes a key in the enclave for these DNS
   * names (never retried: each call is a new key) and answers its CSR; `install` serves with the pending key and
   * this PEM chain (leaf first); `status` says what is served. Check a server with `fetchTlsEvidence` and
   * `verifyTlsEvidence`.
   */
  readonly tls = {
    createKey: (names: string[], call?: CallOptions): Promise<TlsKeyCreated> =>
      this.request('POST', '/v1/tls/keys', { names }, false, call),
    install: (chain: string, call?: CallOptions): Promise<TlsStatus> => this.request('PUT', '/v1/tls/certificate', { chain }, true, call),
    status: (call?: CallOptions): Promise<TlsView> => this.request('GET', '/v1/tls', undefined, true, call),
  };

  private async request<T>(method: string, path: string, body?: unknown, repeatable = true, call: CallOptions = {}): Promise<T> {
    return (await this.send<T>(method, path, body, repeatable, call)).body;
  }

  /**
   * One logical request: retried, when `repeatable`, on retryable errors (the server's retryable codes, NETWORK,
   * CLIENT_TIMEOUT of one attempt) within `call.deadlineMs`; anything else is thrown at once.
   */
  private async send<T>(
    method: string,
    path: string,
    body: unknown,
    repeatable: boolean,
    call: CallOptions = {},
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: T }> {
    checkCallOptions(call);
    // Before anything is sent: a body that cannot be JSON (a cycle) is a TypeError of the caller's, not retried.
    const payload = body === undefined ? undefined : JSON.stringify(body, bigintAsDecimal);
    const deadline = call.deadlineMs !== undefined ? AbortSignal.timeout(call.deadlineMs) : undefined;
    const attempts = repeatable ? (this.options.retries ?? 2) + 1 : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once<T>(method, path, payload, call, deadline, repeatable, headers);
      } catch (err) {
        if (!(err instanceof KeystoreApiError) || !err.retryable || attempt >= attempts || deadline?.aborted) throw err;
        const delay = retryDelay(err, attempt);
        if (delay === undefined) throw err;
        const stops = [call.signal, deadline].filter((s): s is AbortSignal => s !== undefined);
        try {
          await sleep(delay, undefined, stops.length ? { signal: AbortSignal.any(stops) } : {});
        } catch (stopped) {
          throw this.stoppedError(stopped, call, deadline, undefined, repeatable, err);
        }
      }
    }
  }

  /** Why a wait or a fetch ended early: the caller's signal (ABORTED), the deadline or the attempt's timeout. */
  private stoppedError(
    err: unknown,
    call: CallOptions,
    deadline: AbortSignal | undefined,
    attempt: AbortSignal | undefined,
    repeatable: boolean,
    last?: KeystoreApiError,
  ): unknown {
    const id = call.requestId;
    if (call.signal?.aborted)
      return new KeystoreApiError(0, 'ABORTED', 'the call was aborted', id, { cause: call.signal.reason, retryable: false });
    if (deadline?.aborted)
      return new KeystoreApiError(0, 'CLIENT_TIMEOUT', `no answer within the call's deadline (deadlineMs ${call.deadlineMs})`, id, {
        cause: last ?? err,
        retryable: repeatable,
      });
    if (attempt?.aborted)
      return new KeystoreApiError(0, 'CLIENT_TIMEOUT', `no answer within ${this.options.timeoutMs ?? 15_000} ms (timeoutMs)`, id, {
        cause: err,
        retryable: repeatable,
      });
    if (isNetworkFailure(err)) {
      const cause = ((err as { cause?: unknown }).cause ?? err) as { code?: unknown; message?: unknown };
      const reason = typeof cause.code === 'string' ? cause.code : String(cause.message ?? cause);
      return new KeystoreApiError(0, 'NETWORK', `cannot reach the keystore API at ${this.base}: ${reason}`, id, {
        cause: err,
        retryable: repeatable,
      });
    }
    return err;
  }

  private async once<T>(
    method: string,
    path: string,
    payload: string | undefined,
    call: CallOptions,
    deadline: AbortSignal | undefined,
    repeatable: boolean,
    extra?: Record<string, string>,
  ): Promise<{ status: number; body: T }> {
    const attempt = AbortSignal.timeout(this.options.timeoutMs ?? 15_000);
    const signal = AbortSignal.any([attempt, ...[call.signal, deadline].filter((s): s is AbortSignal => s !== undefined)]);
    let res: Response;
    let text: string;
    try {
      res = await this.doFetch(`${this.base}${path}`, {
        method,
        headers: {
          ...extra,
          ...(this.options.token ? { authorization: `Bearer ${this.options.token}` } : {}),
          ...(payload !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(call.requestId !== undefined ? { 'x-request-id': call.requestId } : {}),
        },
        body: payload,
        signal,
      });
      text = await res.text();
    } catch (err) {
      throw this.stoppedError(err, call, deadline, attempt, repeatable);
    }
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
      const issues = issuesOf(e?.details);
      const after = /^\d{1,6}$/.test(res.headers.get('retry-after') ?? '') ? Number(res.headers.get('retry-after')) : undefined;
      throw new KeystoreApiError(
        res.status,
        e?.code ?? `HTTP_${res.status}`,
        e?.message ?? res.statusText,
        e?.requestId ?? res.headers.get('x-request-id') ?? undefined,
        details || issues || after !== undefined
          ? { ...(details ? { details } : {}), ...(issues ? { issues } : {}), ...(after !== undefined ? { retryAfterS: after } : {}) }
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
    call?: CallOptions,
  ): Promise<{ key: Key; created: boolean; mismatch?: Array<'labels' | 'attest'> }> {
    const res = await this.send<Key & { created?: false; mismatch?: Array<'labels' | 'attest'> }>(
      'POST',
      '/v1/keys',
      input,
      true,
      call,
      createKeyHeaders(input),
    );
    // The key in the one Key shape; whether this call made it, and for an existing external id what of the input
    // it differs in (README.md, "Caller API"), beside it.
    const { created: _created, mismatch, ...key } = res.body;
    return { key, created: res.status === 201, ...(mismatch ? { mismatch } : {}) };
  }

  /** A key (`KEY_NOT_FOUND` for a JWT project's key unless the token has `admin`: their records name the users). */
  getKey(keyId: string, call?: CallOptions): Promise<Key> {
    return this.request('GET', `/v1/keys/${encodeURIComponent(keyId)}`, undefined, true, call);
  }

  async findKeyByExternalId(externalId: string, call?: CallOptions): Promise<Key | undefined> {
    const page = await this.listKeys({ externalId }, call);
    return page.keys[0];
  }

  /** A page of keys; JWT projects' keys are listed only for a token with `admin`. */
  listKeys(
    q: { externalId?: string; limit?: number; cursor?: string } = {},
    call?: CallOptions,
  ): Promise<{ keys: Key[]; nextCursor: string | null }> {
    const params = new URLSearchParams();
    if (q.externalId !== undefined) params.set('externalId', q.externalId);
    if (q.limit !== undefined) params.set('limit', String(q.limit));
    if (q.cursor !== undefined) params.set('cursor', q.cursor);
    const qs = params.toString();
    return this.request('GET', `/v1/keys${qs ? `?${qs}` : ''}`, undefined, true, call);
  }

  /** Every key, page by page (`call` applies to each page's request). */
  async *allKeys(pageSize = 500, call?: CallOptions): AsyncGenerator<Key> {
    let cursor: string | undefined;
    do {
      const page = await this.listKeys({ limit: pageSize, ...(cursor ? { cursor } : {}) }, call);
      yield* page.keys;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }

  /** Signs (retried like a read: a repeat signs the same bytes). `bigint`s anywhere in `request` go as decimal strings. */
  sign(keyId: string, request: WithBigint<SignRequestInput>, call?: CallOptions): Promise<SignResult> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/sign`, request, true, call);
  }

  /**
   * Signs up to 100 requests of one key in one call (`POST /v1/keys/{keyId}/sign-batch`): one answer per request,
   * in order, `{result}` or `{error}` (a `KeystoreApiError` with the code the single route would answer). A batch
   * the server refuses as a whole (a bad request: 400 naming its path; the key; the token) throws: nothing was
   * signed. Requests whose error is retryable (TIMEOUT, UNAVAILABLE, KMS_THROTTLED...) are sent again, only they,
   * in a smaller batch, with the client's retries and backoff (and a rate limit's `Retry-After`, as a single call
   * waits it) and within `deadlineMs`; their answers take their places. A retry round that fails as a whole (429
   * with a `Retry-After` longer than a backoff, 409 KEY_DISABLED if the key was disabled meanwhile, a network
   * failure, the deadline, an abort, an answer of the wrong length) does not throw: the signatures already
   * received are kept (they were made, counted against policy limits and audited; sending them again would sign
   * and count them twice), and each request still pending gets that round's error (its code, message,
   * `retryable`, `details`, `retryAfterS` and HTTP status, with `batchIndex` its place).
   */
  async signBatch(
    keyId: string,
    requests: ReadonlyArray<WithBigint<SignRequestInput>>,
    call: CallOptions = {},
  ): Promise<SignBatchOutcome[]> {
    checkCallOptions(call);
    if (!Array.isArray(requests) || requests.length < 1 || requests.length > SIGN_BATCH_MAX_REQUESTS)
      throw new TypeError(`a batch has 1 to ${SIGN_BATCH_MAX_REQUESTS} requests`);
    const path = `/v1/keys/${encodeURIComponent(keyId)}/sign-batch`;
    const outcomes: SignBatchOutcome[] = new Array<SignBatchOutcome>(requests.length);
    const ends = call.deadlineMs !== undefined ? Date.now() + call.deadlineMs : undefined;
    let pending = requests.map((_, i) => i);
    const attempts = (this.options.retries ?? 2) + 1;
    for (let attempt = 1; ; attempt++) {
      let results: SignBatchItem[];
      try {
        results = await this.signRound(path, pending, requests, call, ends);
      } catch (err) {
        // The first round refused: nothing was signed. A later one: keep what earlier rounds answered.
        if (attempt === 1 || !(err instanceof KeystoreApiError)) throw err;
        for (const i of pending) outcomes[i] = { error: slotError(err, i) };
        return outcomes;
      }
      const again: number[] = [];
      results.forEach((item, j) => {
        const i = pending[j] as number;
        if (item && 'result' in item) outcomes[i] = { result: item.result };
        else {
          const e = (item as { error?: { code?: string; message?: string; details?: unknown } } | null)?.error;
          const error = new KeystoreApiError(200, e?.code ?? 'BAD_RESPONSE', e?.message ?? 'no result and no error', call.requestId, {
            details: detailsOf(e?.details),
          });
          error.batchIndex = i;
          outcomes[i] = { error };
          if (error.retryable) again.push(i);
        }
      });
      if (again.length === 0 || attempt >= attempts || (ends !== undefined && Date.now() >= ends) || call.signal?.aborted) return outcomes;
      // The wait a single call would make after the longest-waiting of these errors; none if one asks too long.
      let delay = 0;
      for (const i of again) {
        const d = retryDelay(outcomes[i]!.error!, attempt);
        if (d === undefined) return outcomes;
        delay = Math.max(delay, d);
      }
      const stops = [call.signal, ends === undefined ? undefined : AbortSignal.timeout(Math.max(1, ends - Date.now()))].filter(
        (x): x is AbortSignal => x !== undefined,
      );
      try {
        await sleep(delay, undefined, stops.length ? { signal: AbortSignal.any(stops) } : {});
      } catch {
        return outcomes;
      }
      pending = again;
    }
  }

  /** One round of `signBatch`: the `pending` requests in one batch (retried as a whole by `send`), one answer each. */
  private async signRound(
    path: string,
    pending: readonly number[],
    requests: ReadonlyArray<WithBigint<SignRequestInput>>,
    call: CallOptions,
    ends: number | undefined,
  ): Promise<SignBatchItem[]> {
    const left = ends === undefined ? undefined : Math.max(1, ends - Date.now());
    const round = { ...call, ...(left === undefined ? {} : { deadlineMs: left }) };
    const { body } = await this.send<{ results: SignBatchItem[] }>(
      'POST',
      path,
      { requests: pending.map((i) => requests[i]) },
      true,
      round,
    );
    const results = body?.results;
    if (!Array.isArray(results) || results.length !== pending.length)
      throw new KeystoreApiError(
        200,
        'BAD_RESPONSE',
        `the server answered ${String(results?.length)} results for ${pending.length} requests`,
        call.requestId,
      );
    return results;
  }

  signDigest(keyId: string, digest: `0x${string}`, call?: CallOptions): Promise<SignResult> {
    return this.sign(keyId, { type: 'digest', digest }, call);
  }

  signMessage(keyId: string, message: string | { raw: `0x${string}` }, call?: CallOptions): Promise<SignResult> {
    return this.sign(keyId, { type: 'message', message }, call);
  }

  signTypedData(keyId: string, typedData: TypedData, call?: CallOptions): Promise<SignResult> {
    return this.sign(keyId, { type: 'typedData', typedData }, call);
  }

  signTransaction(keyId: string, transaction: Transaction, call?: CallOptions): Promise<SignResult> {
    return this.sign(keyId, { type: 'transaction', transaction }, call);
  }

  /** `allowAllChains` is required for `chainId` 0: such a delegation is valid on every chain. */
  signAuthorization(
    keyId: string,
    authorization: Authorization,
    options: { allowAllChains?: boolean } & CallOptions = {},
  ): Promise<SignResult> {
    const { allowAllChains, ...call } = options;
    return this.sign(keyId, { type: 'authorization', authorization, ...(allowAllChains ? { allowAllChains: true } : {}) }, call);
  }

  signUserOperation(keyId: string, request: Omit<UserOperationRequest, 'type'>, call?: CallOptions): Promise<SignResult> {
    return this.sign(keyId, { type: 'userOperation', ...request }, call);
  }

  disableKey(keyId: string, call?: CallOptions): Promise<Key> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/disable`, undefined, true, call);
  }

  enableKey(keyId: string, call?: CallOptions): Promise<Key> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/enable`, undefined, true, call);
  }

  /**
   * The key lifecycle (docs/LIFECYCLE.md), for a token project's keys. `successor` (keys:create) makes a new
   * key for the same subject, `pending` (it signs) and naming `keyId` as its predecessor; SUCCESSOR_EXISTS while
   * one is pending. `activate` (admin) makes a pending key the subject's active key and retires its predecessor;
   * `cancel` (admin) gives a pending key up. A change from the wrong state is KEY_STATE (`details.state` names
   * the state). None is retried: a repeat after a lost answer would answer KEY_STATE or SUCCESSOR_EXISTS; read
   * `history` instead. A JWT project's keys change only with their user's JWT (the TrueWallet API).
   */
  successor(keyId: string, options: { attest?: boolean } & CallOptions = {}): Promise<Key> {
    const { attest, ...call } = options;
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/successor`, attest !== undefined ? { attest } : {}, false, call);
  }

  activate(keyId: string, call?: CallOptions): Promise<Key> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/activate`, undefined, false, call);
  }

  cancel(keyId: string, call?: CallOptions): Promise<Key> {
    return this.request('POST', `/v1/keys/${encodeURIComponent(keyId)}/cancel`, undefined, false, call);
  }

  /** The key's subject's keys, oldest first, with states and times (a key without subject: itself). */
  async history(keyId: string, call?: CallOptions): Promise<KeyHistoryEntry[]> {
    return (await this.request<{ keys: KeyHistoryEntry[] }>('GET', `/v1/keys/${encodeURIComponent(keyId)}/history`, undefined, true, call))
      .keys;
  }

  /** Creates a project (admin token). Never retried: a repeat would make a second project. */
  createProject(input: ProjectInput, call?: CallOptions): Promise<Project> {
    return this.request('POST', '/v1/projects', input, false, call);
  }

  getProject(projectId: string, call?: CallOptions): Promise<Project> {
    return this.request('GET', `/v1/projects/${encodeURIComponent(projectId)}`, undefined, true, call);
  }

  listProjects(
    q: { limit?: number; cursor?: string } = {},
    call?: CallOptions,
  ): Promise<{ projects: Project[]; nextCursor: string | null }> {
    const params = new URLSearchParams();
    if (q.limit !== undefined) params.set('limit', String(q.limit));
    if (q.cursor !== undefined) params.set('cursor', q.cursor);
    const qs = params.toString();
    return this.request('GET', `/v1/projects${qs ? `?${qs}` : ''}`, undefined, true, call);
  }

  /** Every project, page by page (the `default` project first; `call` applies to each page's request). */
  async *allProjects(pageSize = 500, call?: CallOptions): AsyncGenerator<Project> {
    let cursor: string | undefined;
    do {
      const page = await this.listProjects({ limit: pageSize, ...(cursor ? { cursor } : {}) }, call);
      yield* page.projects;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }

  /** A disabled project's keys sign nothing and its TrueWallet routes answer 401; enabling resumes them. */
  disableProject(projectId: string, call?: CallOptions): Promise<Project> {
    return this.request('POST', `/v1/projects/${encodeURIComponent(projectId)}/disable`, undefined, true, call);
  }

  enableProject(projectId: string, call?: CallOptions): Promise<Project> {
    return this.request('POST', `/v1/projects/${encodeURIComponent(projectId)}/enable`, undefined, true, call);
  }

  /** A project's signing policies (admin token; docs/POLICIES.md), with the signed record that holds them. */
  getPolicies(projectId: string, call?: CallOptions): Promise<PoliciesView> {
    return this.request('GET', `/v1/projects/${encodeURIComponent(projectId)}/policies`, undefined, true, call);
  }

  /**
   * Replaces a project's signing policies as a whole (admin token): the enclave makes the project's next record
   * with them. `{}` removes them. Setting the same policies again changes nothing, so it is retried like a read.
   * When the current policy has approvers, `approvals` carries `threshold` of their signatures over this change
   * (`policyApproval`); without them the enclave refuses it (403 FORBIDDEN).
   */
  setPolicies(
    projectId: string,
    policies: PoliciesInput,
    options: { approvals?: readonly string[] } & CallOptions = {},
  ): Promise<PoliciesView> {
    const { approvals, ...call } = options;
    const body = approvals ? { ...policies, approvals: [...approvals] } : policies;
    return this.request('PUT', `/v1/projects/${encodeURIComponent(projectId)}/policies`, body, true, call);
  }

  /**
   * The typed data an approver signs for changing the project's current policies to `policies` (admin token).
   * The server's answer is the parent's word: its typed data is checked to be exactly the change to `policies`
   * of the project and record it names (computed here), so a parent cannot have a laxer policy approved in a
   * wallet that shows only digests. Check `recordSha256` against a record you verified (`getPolicies` +
   * `verifyPolicies`) to be sure it is the current one.
   */
  async policyApproval(projectId: string, policies: PoliciesInput, call?: CallOptions): Promise<PolicyApprovalView> {
    const view = await this.request<PolicyApprovalView>(
      'POST',
      `/v1/projects/${encodeURIComponent(projectId)}/policies:approval`,
      { policies },
      true,
      call,
    );
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
    input: { request: WithBigint<SignRequestInput>; keyId?: string; policies?: PoliciesInput },
    call?: CallOptions,
  ): Promise<PolicyDecision> {
    return this.request('POST', `/v1/projects/${encodeURIComponent(projectId)}/policies:evaluate`, input, true, call);
  }

  /** An attestation document from the enclave (base64), carrying `nonce` when given (0x hex). */
  attestation(nonce?: `0x${string}`, call?: CallOptions): Promise<{ document: string }> {
    return this.request('GET', `/v1/attestation${nonce ? `?nonce=${nonce}` : ''}`, undefined, true, call);
  }

  /**
   * The keystore identity (no token needed): its public key, the genesis document, and a fresh attestation of
   * the running enclave carrying `nonce` (0x hex, 1-512 bytes). Check it with `verifyIdentity`.
   */
  identity(nonce: `0x${string}`, call?: CallOptions): Promise<IdentityView> {
    return this.request('GET', `/v1/identity?nonce=${nonce}`, undefined, true, call);
  }

  /** Whether the API answers `/readyz` with 200 (false on any failure: this is the one call that never throws). */
  async ready(call: Pick<CallOptions, 'signal'> = {}): Promise<boolean> {
    const stops = [AbortSignal.timeout(this.options.timeoutMs ?? 15_000), ...(call.signal ? [call.signal] : [])];
    const res = await this.doFetch(`${this.base}/readyz`, { signal: AbortSignal.any(stops) }).catch(() => null);
    return res?.status === 200;
  }
}
