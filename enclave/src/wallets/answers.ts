/**
 * How the enclave's HTTPS server answers errors (docs/PROJECTS.md, "Errors"): every route in the TrueWallet
 * SDK's format, 400 `{detail: {field: [reason]}}`, every other status `{detail}` (403 and 503 with Retry-After; a
 * request the project's signing policy refuses, 403 without).
 * The callers are the public, so 503 and 500 answer fixed texts; what went wrong is logged with the request id.
 */
import { KeystoreError } from '@nks/shared/errors';
import { FieldErrors } from '@nks/shared/http/validation';
import { WALLETS_PREFIX } from '@nks/shared/tls-identity';

export type LimitName = 'address' | 'failures' | 'concurrent' | 'project' | 'user';

const LIMIT_MESSAGES: Record<LimitName, string> = {
  address: 'too many requests from this address; retry later',
  failures: 'too many failed requests from this address; retry later',
  concurrent: 'too many requests in progress from this address; retry shortly',
  project: "this project's request quota is used up for now; retry later",
  user: 'too many requests for this user; retry later',
};

/** The 503 answers: fixed texts (the detail goes to the log). */
export const UNAVAILABLE_DETAILS = {
  jwks: 'the JWKS could not be fetched, or the keystore clock is not trusted; retry',
  other: 'the keystore is temporarily unavailable; retry',
} as const;

/** A rate limit was hit: 403 with Retry-After (the SDK's limit error). */
export class RateLimited extends KeystoreError {
  constructor(
    readonly limit: LimitName,
    readonly retryAfterS: number,
  ) {
    super('FORBIDDEN', LIMIT_MESSAGES[limit]);
  }
}

/** The field a refusal of the request itself (INVALID_PARAMS from the vault) is reported under, by route. */
const REQUEST_FIELD: Record<string, string> = {
  [`${WALLETS_PREFIX}/sign`]: 'message',
  [`${WALLETS_PREFIX}/sign-request`]: 'request',
};

const BODY_CODES: ReadonlySet<string> = new Set(['INVALID_REQUEST', 'PARSE_ERROR', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE']);

export interface Answer {
  status: number;
  detail: unknown;
  /** The outcome counted in health (`wallets.requests`). */
  outcome: string;
  retryAfterS?: number;
  /** What the operator's log gets: a 503's reason (warn), a 500's (error); nothing for the rest. */
  log?: 'warn' | 'error';
}

/** The answer to `ke` on the route with documented path `route` (undefined: no route). */
export function answerOf(ke: KeystoreError, route: string | undefined, requestId: string): Answer {
  if (ke instanceof RateLimited)
    return { status: 403, detail: ke.message, outcome: 'rate_limited', retryAfterS: Math.max(1, ke.retryAfterS) };
  // A JWT that does not verify is one of the request's fields like any other.
  if (ke instanceof FieldErrors)
    return { status: 400, detail: ke.fields, outcome: ke.code === 'INVALID_JWT' ? 'invalid_jwt' : 'bad_request' };
  switch (ke.code) {
    case 'INVALID_JWT':
    case 'FORBIDDEN':
      // The JWT refused, or one that verified but is not of this key's user or project.
      return { status: 400, detail: { jwt_token: [ke.message] }, outcome: 'invalid_jwt' };
    case 'INVALID_PARAMS':
      return { status: 400, detail: { [REQUEST_FIELD[route ?? ''] ?? 'body']: [ke.message] }, outcome: 'bad_request' };
    case 'UNAUTHORIZED':
      return { status: 401, detail: ke.message, outcome: 'unauthorized' };
    case 'POLICY_DENIED':
      // The project's signing policy refused the request: its message names the rule or limit and why.
      return { status: 403, detail: ke.message, outcome: 'policy_denied' };
    case 'KEY_DISABLED':
    case 'KEY_RETIRED':
    case 'KEY_STATE':
    case 'SUCCESSOR_EXISTS':
      // The key's state (KEY_STATE names it) or a pending successor already made: the request does not fit now.
      return { status: 409, detail: ke.message, outcome: 'conflict' };
    case 'NOT_FOUND':
    case 'KEY_NOT_FOUND':
      return { status: 404, detail: ke.message, outcome: 'not_found' };
    case 'METHOD_NOT_ALLOWED':
      return { status: 405, detail: ke.message, outcome: 'not_found' };
  }
  if (BODY_CODES.has(ke.code)) return { status: 400, detail: { body: [ke.message] }, outcome: 'bad_request' };
  if (ke.retryable) {
    const detail = ke.code === 'JWKS_UNAVAILABLE' ? UNAVAILABLE_DETAILS.jwks : UNAVAILABLE_DETAILS.other;
    return { status: 503, detail, outcome: 'unavailable', retryAfterS: 1, log: 'warn' };
  }
  return { status: 500, detail: `the keystore could not answer this request (request id ${requestId})`, outcome: 'error', log: 'error' };
}
