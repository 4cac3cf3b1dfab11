/**
 * The error-code registry shared by enclave, parent and clients (docs/PROTOCOL.md, "Errors").
 *
 * Every failure that crosses a process boundary carries one of these codes. The JSON-RPC number, the HTTP
 * status the parent maps it to and whether a retry can help are properties of the code, so every layer
 * (the SDK included) agrees on them. Messages never contain key material: they are built from fixed text and
 * identifiers only.
 */

export interface ErrorCodeInfo {
  /** JSON-RPC 2.0 error code: the standard ones where they fit, otherwise the -32000..-32099 server range. */
  readonly rpcCode: number;
  /** HTTP status the caller API answers with. */
  readonly httpStatus: number;
  /** Whether the same request may succeed if repeated later. */
  readonly retryable: boolean;
}

export const ERROR_CODES = {
  // JSON-RPC standard errors
  PARSE_ERROR: { rpcCode: -32700, httpStatus: 400, retryable: false },
  INVALID_REQUEST: { rpcCode: -32600, httpStatus: 400, retryable: false },
  METHOD_NOT_FOUND: { rpcCode: -32601, httpStatus: 404, retryable: false },
  INVALID_PARAMS: { rpcCode: -32602, httpStatus: 400, retryable: false },
  INTERNAL: { rpcCode: -32603, httpStatus: 500, retryable: false },
  // Keys and their sealed blobs
  KEY_INTEGRITY: { rpcCode: -32001, httpStatus: 500, retryable: false },
  KEY_NOT_FOUND: { rpcCode: -32002, httpStatus: 404, retryable: false },
  KEY_DISABLED: { rpcCode: -32003, httpStatus: 409, retryable: false },
  UNSUPPORTED_VERSION: { rpcCode: -32004, httpStatus: 500, retryable: false },
  /** A retired or cancelled key (its signed record says so): it never signs again. */
  KEY_RETIRED: { rpcCode: -32005, httpStatus: 409, retryable: false },
  /** A successor of the key's subject is already pending (docs/LIFECYCLE.md): activate or cancel it first. */
  SUCCESSOR_EXISTS: { rpcCode: -32041, httpStatus: 409, retryable: false },
  /** A lifecycle transition from a state that does not allow it: `details.state` names the key's state now. */
  KEY_STATE: { rpcCode: -32042, httpStatus: 409, retryable: false },
  /** The enclave has not (yet) unsealed and checked its keystore identity: it serves nothing but health. */
  IDENTITY_UNAVAILABLE: { rpcCode: -32006, httpStatus: 503, retryable: true },
  // JWT projects (docs/PROJECTS.md)
  /** The user's JWT is missing, malformed, expired, for another issuer or audience, or does not verify. */
  INVALID_JWT: { rpcCode: -32007, httpStatus: 400, retryable: false },
  /** The project's JWKS could not be fetched (or the enclave's clock is not trusted): not an auth failure. */
  JWKS_UNAVAILABLE: { rpcCode: -32008, httpStatus: 503, retryable: true },
  // KMS and attestation
  KMS_ACCESS_DENIED: { rpcCode: -32010, httpStatus: 502, retryable: false },
  KMS_THROTTLED: { rpcCode: -32011, httpStatus: 503, retryable: true },
  KMS_UNAVAILABLE: { rpcCode: -32012, httpStatus: 503, retryable: true },
  KMS_INVALID_CIPHERTEXT: { rpcCode: -32013, httpStatus: 500, retryable: false },
  KMS_KEY_NOT_ALLOWED: { rpcCode: -32014, httpStatus: 502, retryable: false },
  ATTESTATION_FAILED: { rpcCode: -32015, httpStatus: 502, retryable: false },
  /** Any other KMS refusal of the request itself (a 4xx): final, with KMS's own error name and message. */
  KMS_REJECTED: { rpcCode: -32016, httpStatus: 502, retryable: false },
  // Load, time and availability
  OVERLOADED: { rpcCode: -32020, httpStatus: 503, retryable: true },
  TIMEOUT: { rpcCode: -32021, httpStatus: 504, retryable: true },
  UNAVAILABLE: { rpcCode: -32022, httpStatus: 503, retryable: true },
  /** The parent's database did not answer in time, is unreachable or full (docs/STORAGE.md): retry later. */
  STORAGE_UNAVAILABLE: { rpcCode: -32043, httpStatus: 503, retryable: true },
  // Caller API only
  UNAUTHORIZED: { rpcCode: -32030, httpStatus: 401, retryable: false },
  FORBIDDEN: { rpcCode: -32031, httpStatus: 403, retryable: false },
  NOT_FOUND: { rpcCode: -32032, httpStatus: 404, retryable: false },
  METHOD_NOT_ALLOWED: { rpcCode: -32033, httpStatus: 405, retryable: false },
  PAYLOAD_TOO_LARGE: { rpcCode: -32034, httpStatus: 413, retryable: false },
  UNSUPPORTED_MEDIA_TYPE: { rpcCode: -32035, httpStatus: 415, retryable: false },
  CONFLICT: { rpcCode: -32036, httpStatus: 409, retryable: false },
  /** The token's rate limit is reached (caller API, per token): retry after `Retry-After` seconds. */
  RATE_LIMITED: { rpcCode: -32037, httpStatus: 429, retryable: true },
  /**
   * An Idempotency-Key used again, within its 24 hours, with another request body (README.md, "Caller API"): a
   * retry must send the same body; another request needs a new key.
   */
  IDEMPOTENCY_KEY_REUSED: { rpcCode: -32051, httpStatus: 422, retryable: false },
  // Signing policies (docs/POLICIES.md)
  /** The project's policy does not allow this request: `details` names the rule or limit and the reason. */
  POLICY_DENIED: { rpcCode: -32040, httpStatus: 403, retryable: false },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}

/**
 * Whether a failure with this code may succeed if repeated, by the table above: the servers and the SDK decide
 * retries by this one answer. A code this build does not know (a newer server's, or none) is not retried.
 */
export function isRetryableCode(code: unknown): boolean {
  return isErrorCode(code) && ERROR_CODES[code].retryable;
}

/**
 * Machine-readable facts about a failure, beside its message (POLICY_DENIED: the rule or limit and the reason):
 * short strings or null, never key material. Bounded when received from a peer (`detailsOf`).
 */
export type ErrorDetails = Readonly<Record<string, string | null>>;
const MAX_DETAILS = 8;
const MAX_DETAIL_CHARS = 1024;

/** `value` as ErrorDetails if it is a small map of short strings or nulls, else undefined (a peer's word). */
export function detailsOf(value: unknown): ErrorDetails | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const entries = Object.entries(value);
  if (entries.length === 0 || entries.length > MAX_DETAILS) return undefined;
  for (const [k, v] of entries) {
    if (k.length > 64 || (v !== null && (typeof v !== 'string' || v.length > MAX_DETAIL_CHARS))) return undefined;
  }
  return Object.fromEntries(entries);
}

/**
 * One problem with a request's input (a validation failure's `details` on the caller API): where (`body.transaction.gas`),
 * what was expected, and what was there — a type name and size (`string (5 characters)`, `missing`), never the
 * value itself. Built by `issuesOf` (shared/src/schema.ts), bounded in number and length.
 */
export interface ValidationIssue {
  readonly path: string;
  readonly expected: string;
  readonly received: string;
}

/** An error with a registered code. `retryable` defaults to the code's own; `cause` keeps what it wraps. */
export class KeystoreError extends Error {
  override readonly name = 'KeystoreError';
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: ErrorDetails | undefined;
  /** A validation failure's problems, first the one the message names (the caller API answers them as `details`). */
  readonly issues: readonly ValidationIssue[] | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { retryable?: boolean; cause?: unknown; details?: ErrorDetails; issues?: readonly ValidationIssue[] },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options?.retryable ?? ERROR_CODES[code].retryable;
    this.details = options?.details;
    this.issues = options?.issues;
  }

  get rpcCode(): number {
    return ERROR_CODES[this.code].rpcCode;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].httpStatus;
  }
}

/**
 * The JSON-RPC error object: `{code, message, data:{code, retryable, reason}}`. The numeric `code` is
 * JSON-RPC's; `data.code` is ours. `data.reason` repeats it for peers of protocol version 1, which read only
 * that field (docs/PROTOCOL.md, "Versions"); it goes when version 1 is no longer accepted.
 */
export interface RpcErrorObject {
  code: number;
  message: string;
  data: { code: ErrorCode; retryable: boolean; reason: ErrorCode; details?: ErrorDetails };
}

export function toRpcError(err: unknown): RpcErrorObject {
  const ke = asKeystoreError(err);
  const data: RpcErrorObject['data'] = { code: ke.code, retryable: ke.retryable, reason: ke.code };
  if (ke.details) data.details = ke.details;
  return { code: ke.rpcCode, message: ke.message, data };
}

/** `data.code` (protocol 2), else `data.reason` (protocol 1). */
function wireCode(data: { code?: unknown; reason?: unknown }): ErrorCode | undefined {
  if (isErrorCode(data.code)) return data.code;
  return isErrorCode(data.reason) ? data.reason : undefined;
}

/** Rebuilds a KeystoreError from a JSON-RPC error object received from the peer. */
export function fromRpcError(obj: unknown): KeystoreError {
  if (typeof obj === 'object' && obj !== null) {
    const { message, data } = obj as {
      message?: unknown;
      data?: { code?: unknown; reason?: unknown; retryable?: unknown; details?: unknown };
    };
    const text = typeof message === 'string' ? message : 'peer returned an error without a message';
    const code = data ? wireCode(data) : undefined;
    if (data && code) {
      const details = detailsOf(data.details);
      return new KeystoreError(code, text, {
        ...(typeof data.retryable === 'boolean' ? { retryable: data.retryable } : {}),
        ...(details ? { details } : {}),
      });
    }
    return new KeystoreError('INTERNAL', text);
  }
  return new KeystoreError('INTERNAL', 'peer returned a malformed error object');
}

/**
 * Any thrown value as a KeystoreError. Unknown errors become INTERNAL with a fixed message: their text may
 * come from a library and is not vetted to be free of secrets, so it is not passed on.
 */
export function asKeystoreError(err: unknown): KeystoreError {
  if (err instanceof KeystoreError) return err;
  return new KeystoreError('INTERNAL', 'internal error', { cause: err });
}
