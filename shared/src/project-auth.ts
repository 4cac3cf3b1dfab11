/**
 * How a project's callers are authorized (docs/PROJECTS.md), the rules written once: the project record decoder
 * (records.ts), the caller API's project schema (projects-schema.ts), the enclave's JWT check and the parent's
 * TrueWallet routes use these. Plain values and no zod, so the CLI and SDK can use them as they are.
 *
 * - `token`: server callers authorized by the parent's bearer tokens. Records are still signed, so a parent
 *   cannot move a key, but the parent decides who may sign: it is trusted for this.
 * - `jwt`: every create, sign and lifecycle change of a key carries the user's JWT, verified inside the
 *   enclave against the project's JWKS; the key's subject is the pair (issuer, user claim).
 */

import { SUBJECT_MAX_BYTES } from './identifiers';
import type { SignRequestType } from './signing/request-types';

/** Asymmetric JWS algorithms a JWT project may allow: never `none`, HS* or anything symmetric. */
export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];
export const DEFAULT_JWT_ALGORITHMS: readonly JwtAlgorithm[] = ['RS256', 'ES256'];

/** `exp − iat` of an accepted JWT, in seconds: the project's cap defaults to 600 and is at most 3600. */
export const DEFAULT_MAX_TOKEN_LIFETIME_S = 600;
export const MAX_TOKEN_LIFETIME_S = 3600;
/** A lifecycle change (rotate, retire) also needs the claim `nks_action` and a lifetime of at most this. */
export const LIFECYCLE_MAX_TOKEN_LIFETIME_S = 120;
/** The claim that names the one lifecycle change a JWT authorizes, and its values (docs/LIFECYCLE.md). */
export const LIFECYCLE_ACTION_CLAIM = 'nks_action';
export const LIFECYCLE_ACTIONS = ['rotate', 'activate', 'cancel'] as const;
export type LifecycleAction = (typeof LIFECYCLE_ACTIONS)[number];
/** Allowed difference between the token's times and the enclave's clock, in seconds. */
export const JWT_CLOCK_SKEW_S = 60;
/** A compact JWT longer than this is refused before it is parsed. */
export const JWT_MAX_BYTES = 8192;
export const DEFAULT_USER_CLAIM = 'sub';

/** A JWT project's authorization, as its record holds it (immutable: another auth is another project). */
export interface JwtProjectAuth {
  type: 'jwt';
  issuer: string;
  audience: string;
  userClaim: string;
  /** https only. */
  jwksUri: string;
  algorithms: JwtAlgorithm[];
  maxTokenLifetime: number;
}
export type ProjectAuth = { type: 'token' } | JwtProjectAuth;

/** Field formats of a JWT auth (checked by the record decoder and the caller API's schema alike). */
export const JWT_ISSUER_MAX = 512;
export const JWT_AUDIENCE_MAX = 512;
export const USER_CLAIM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
export const JWKS_URI_MAX = 2048;

/**
 * Claims that name no user, so `userClaim` may not be one of them: RFC 7519's registered claims other than
 * `sub`, and the OpenID Connect and OAuth claims about the client, the session or the login. Each is either the
 * same for many users (iss, aud, azp, client_id, scope, acr, amr: all of them would share one key) or new at
 * every login (jti, iat, nonce, sid...: a new key each time).
 */
export const RESERVED_USER_CLAIMS: readonly string[] = [
  'iss',
  'aud',
  'exp',
  'nbf',
  'iat',
  'jti',
  'azp',
  'client_id',
  'scope',
  'nonce',
  'auth_time',
  'acr',
  'amr',
  'sid',
  'at_hash',
  'c_hash',
  'cnf',
];

/** A claim name a JWT project may take its users from: USER_CLAIM_RE, and not a reserved claim. */
export function isUserClaim(claim: string): boolean {
  return USER_CLAIM_RE.test(claim) && !RESERVED_USER_CLAIMS.includes(claim);
}

/**
 * Whether a string is well-formed Unicode (no lone surrogate), so UTF-8, hence a record's CBOR, carries it as
 * it is (String.prototype.isWellFormed, ES2024; the TypeScript lib here is ES2022).
 */
export function isWellFormedText(s: string): boolean {
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed();
}

/** Whether `uri` is an absolute https URL with a host, no credentials and no fragment. */
export function isJwksUri(uri: string): boolean {
  if (uri.length > JWKS_URI_MAX) return false;
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return false;
  }
  return u.protocol === 'https:' && u.hostname !== '' && u.username === '' && u.password === '' && u.hash === '' && u.href === uri;
}

/**
 * Browser origins a project allows (CORS): scheme, host and optional port, nothing else; never `*` or
 * `null`. At most MAX_ORIGINS.
 */
export const ORIGIN_RE = /^https?:\/\/[A-Za-z0-9.-]{1,253}(?::\d{1,5})?$/;
export const MAX_ORIGINS = 64;

/**
 * A JWT key's subject: the pair (issuer, user claim) as the JSON text of a two-element array, so no choice of
 * either string can make another pair's text. Null when the claim is not a string or the text is too long.
 */
export function jwtSubject(issuer: string, claim: unknown): string | null {
  if (typeof claim !== 'string' || claim.length === 0) return null;
  const s = JSON.stringify([issuer, claim]);
  return Buffer.byteLength(s) <= SUBJECT_MAX_BYTES ? s : null;
}

/**
 * Request types a new project allows unless it lists its own: EIP-191 messages (the TrueWallet `sign` route's
 * hash and text), user operations and typed data. Raw digests, transactions and EIP-7702 authorizations can
 * move funds without a wallet contract in between, so a project opts in to them.
 */
export const DEFAULT_ALLOWED_REQUEST_TYPES: readonly SignRequestType[] = ['message', 'userOperation', 'typedData'];
