/**
 * The error-reason registry shared by enclave, parent and clients (DESIGN §4).
 *
 * Every failure that crosses a process boundary carries one of these reasons. The JSON-RPC code, the HTTP
 * status the parent maps it to and whether a retry can help are properties of the reason, so every layer
 * agrees on them. Messages never contain key material: they are built from fixed text and identifiers only.
 */

export interface ReasonInfo {
  /** JSON-RPC 2.0 error code: the standard ones where they fit, otherwise the -32000..-32099 server range. */
  readonly rpcCode: number;
  /** HTTP status the caller API answers with. */
  readonly httpStatus: number;
  /** Whether the same request may succeed if repeated later. */
  readonly retryable: boolean;
}

export const REASONS = {
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
  // Caller API only
  UNAUTHORIZED: { rpcCode: -32030, httpStatus: 401, retryable: false },
  FORBIDDEN: { rpcCode: -32031, httpStatus: 403, retryable: false },
  NOT_FOUND: { rpcCode: -32032, httpStatus: 404, retryable: false },
  METHOD_NOT_ALLOWED: { rpcCode: -32033, httpStatus: 405, retryable: false },
  PAYLOAD_TOO_LARGE: { rpcCode: -32034, httpStatus: 413, retryable: false },
  UNSUPPORTED_MEDIA_TYPE: { rpcCode: -32035, httpStatus: 415, retryable: false },
  CONFLICT: { rpcCode: -32036, httpStatus: 409, retryable: false },
} as const satisfies Record<string, ReasonInfo>;

export type ErrorReason = keyof typeof REASONS;

export function isErrorReason(value: unknown): value is ErrorReason {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(REASONS, value);
}

/** An error with a registered reason. `retryable` defaults to the reason's own. */
export class KeystoreError extends Error {
  override readonly name = 'KeystoreError';
  readonly reason: ErrorReason;
  readonly retryable: boolean;

  constructor(reason: ErrorReason, message: string, options?: { retryable?: boolean; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.retryable = options?.retryable ?? REASONS[reason].retryable;
  }

  get rpcCode(): number {
    return REASONS[this.reason].rpcCode;
  }

  get httpStatus(): number {
    return REASONS[this.reason].httpStatus;
  }
}

/** The JSON-RPC error object: `{code, message, data:{reason, retryable}}`. */
export interface RpcErrorObject {
  code: number;
  message: string;
  data: { reason: ErrorReason; retryable: boolean };
}

export function toRpcError(err: unknown): RpcErrorObject {
  const ke = asKeystoreError(err);
  return { code: ke.rpcCode, message: ke.message, data: { reason: ke.reason, retryable: ke.retryable } };
}

/** Rebuilds a KeystoreError from a JSON-RPC error object received from the peer. */
export function fromRpcError(obj: unknown): KeystoreError {
  if (typeof obj === 'object' && obj !== null) {
    const { message, data } = obj as { message?: unknown; data?: { reason?: unknown; retryable?: unknown } };
    const text = typeof message === 'string' ? message : 'peer returned an error without a message';
    if (data && isErrorReason(data.reason)) {
      const options = typeof data.retryable === 'boolean' ? { retryable: data.retryable } : undefined;
      return new KeystoreError(data.reason, text, options);
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
