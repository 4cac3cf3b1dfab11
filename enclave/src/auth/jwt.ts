/**
 * A JWT project's user, proven by their JWT (docs/PROTOCOL.md, `jwt`): `subjectOf` verifies the compact JWT
 * with jose against the project's JWKS (jwks.ts) and answers the key subject it proves, `jwtSubject(iss, claim)`.
 *
 * The rules, all from the project's signed record and the enclave's own clock:
 * - at most JWT_MAX_BYTES; the algorithm in the project's list (asymmetric only, so never `none` or HS*);
 * - the key from the project's JWKS only: jose's key resolver over the cached set, so `jku`, `jwk`, `x5u` and
 *   `x5c` headers are never used to find a key; `kid` is required when the set has more than one key (jose
 *   itself would ask for it only when several keys match the JWT's algorithm);
 * - `iss` and `aud` the project's, `exp` and `iat` present, `exp`, `nbf` and `iat` within JWT_CLOCK_SKEW_S of
 *   the enclave's clock, and `exp − iat` at most the project's maxTokenLifetime. The times are judged again by
 *   the clock once the JWKS is resolved (a fetch the parent delays must not stretch a token's life), and the
 *   caller judges them once more (`JwtUser.stillValid`) right before it acts, after any wait of its own;
 * - the user claim a non-empty string;
 * - for a lifecycle change (`action`, docs/PROTOCOL.md, "Key lifecycle"): the claim LIFECYCLE_ACTION_CLAIM equal to
 *   the action and `exp − iat` at most LIFECYCLE_MAX_TOKEN_LIFETIME_S, so an ordinary login token, wherever it was
 *   seen, can change no key's state, and a token for one change cannot make another.
 *
 * Every refusal is INVALID_JWT with a short message naming the problem (it goes to the wallet user; the
 * parent sees the JWT anyway until TLS moves into the enclave). A JWKS that cannot be fetched, or a clock the
 * enclave does not trust, is JWKS_UNAVAILABLE (retryable): never an authentication failure.
 */
import { errors, jwtVerify, type FlattenedJWSInput, type JWTHeaderParameters, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { KeystoreError } from '@nks/shared/errors';
import {
  JWT_CLOCK_SKEW_S,
  JWT_MAX_BYTES,
  jwtSubject,
  LIFECYCLE_ACTION_CLAIM,
  LIFECYCLE_MAX_TOKEN_LIFETIME_S,
  type JwtProjectAuth,
  type LifecycleAction,
} from '@nks/shared/project-auth';
import { CLOCK_NOT_TRUSTED_MESSAGE, type ClockCheck } from './clock';
import type { JwksCache, JwksEntry } from './jwks';

const invalid = (message: string) => new KeystoreError('INVALID_JWT', message);

/** Claims whose absence jose names, in the words the caller sees. */
const CLAIM_WORDS: Record<string, string> = { iss: 'issuer', aud: 'audience', exp: 'expiry', iat: 'issue time' };

/** jose's error, as the one short message the caller gets. */
export function jwtRefusal(err: unknown): KeystoreError {
  if (err instanceof errors.JWTExpired) {
    return invalid(err.claim === 'iat' ? 'the JWT lives longer than the project allows' : 'the JWT has expired');
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.reason === 'missing') return invalid(`the JWT has no "${err.claim}" (${CLAIM_WORDS[err.claim] ?? 'required'}) claim`);
    switch (err.claim) {
      case 'iss':
        return invalid('the JWT is for another issuer');
      case 'aud':
        return invalid('the JWT is for another audience');
      case 'nbf':
        return invalid('the JWT is not yet valid');
      case 'iat':
        return invalid('the JWT is not yet valid (issued in the future)');
      default:
        return invalid('the JWT claims are not valid');
    }
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return invalid('the JWT signature does not verify');
  if (err instanceof errors.JWKSNoMatchingKey) return invalid("the JWT's key is unknown: no key of the project's JWKS matches it");
  // With the kid rule below, only keys that share the JWT's kid can match several at once.
  if (err instanceof errors.JWKSMultipleMatchingKeys) return invalid("several keys of the project's JWKS match the JWT's key id (kid)");
  if (err instanceof errors.JOSEAlgNotAllowed) return invalid("the JWT's algorithm is not allowed by the project");
  if (err instanceof errors.JOSENotSupported) return invalid('the JWT uses an algorithm or header that is not supported');
  if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid) return invalid('the JWT is malformed');
  return invalid('the JWT does not verify');
}

export const KID_REQUIRED_MESSAGE = "the JWT names no key (kid) and the project's JWKS has several keys";

/** A verified JWT's user: the key subject it proves, and its times judged again by the clock now. */
export interface JwtUser {
  subject: string;
  /**
   * INVALID_JWT if the JWT is no longer valid by the enclave's clock now (expired since it was verified), or
   * JWKS_UNAVAILABLE if the clock is no longer trusted. Call it after any wait, right before acting on the JWT.
   */
  stillValid(): void;
}

export class JwtVerifier {
  /** JWTs that verified, and JWTs refused (INVALID_JWT): totals for health. */
  verifications = 0;
  refusals = 0;

  constructor(
    private readonly deps: {
      jwks: JwksCache;
      clock: ClockCheck;
      /** The enclave's clock (ms); the same one ClockCheck checks. */
      now?: () => number;
    },
  ) {}

  /** The subject `token` proves in a project with `auth` (for `action`, see `user`), or INVALID_JWT / JWKS_UNAVAILABLE. */
  async subjectOf(token: string, auth: JwtProjectAuth, action?: LifecycleAction): Promise<string> {
    return (await this.user(token, auth, action)).subject;
  }

  /**
   * The user `token` proves in a project with `auth` (see JwtUser), or INVALID_JWT / JWKS_UNAVAILABLE. With
   * `action`, the token must also authorize that lifecycle change (see the file comment).
   */
  async user(token: string, auth: JwtProjectAuth, action?: LifecycleAction): Promise<JwtUser> {
    let payload: JWTPayload;
    try {
      payload = await this.verify(token, auth);
      if (action !== undefined) lifecycleAction(payload, action);
    } catch (err) {
      throw this.refusal(err);
    }
    this.verifications += 1;
    return {
      subject: jwtSubject(auth.issuer, payload[auth.userClaim]) as string,
      stillValid: () => {
        try {
          this.times(payload);
        } catch (err) {
          throw this.refusal(err);
        }
      },
    };
  }

  /** The one error a failed check answers (INVALID_JWT counted as a refusal). */
  private refusal(err: unknown): KeystoreError {
    const refusal = err instanceof KeystoreError ? err : jwtRefusal(err);
    if (refusal.code === 'INVALID_JWT') this.refusals += 1;
    return refusal;
  }

  private async verify(token: string, auth: JwtProjectAuth): Promise<JWTPayload> {
    if (Buffer.byteLength(token) > JWT_MAX_BYTES) throw invalid(`the JWT is longer than ${JWT_MAX_BYTES} bytes`);
    await this.deps.clock.assertTrusted();
    const { jwks } = this.deps;
    const resolve = (entry: JwksEntry, header: JWTHeaderParameters, jws: FlattenedJWSInput) => {
      // The rule, stricter than jose's: with several keys in the set a JWT must say which one it is.
      if (entry.keys > 1 && header.kid === undefined) throw invalid(KID_REQUIRED_MESSAGE);
      return entry.resolve(header, jws);
    };
    const getKey: JWTVerifyGetKey = async (header, jws) => {
      const entry = await jwks.get(auth.jwksUri);
      try {
        return await resolve(entry, header, jws);
      } catch (err) {
        // Only a key the set does not hold may mean the issuer rotated: refetch (rate-limited) and look again.
        if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
        const fresh = await jwks.refetchForUnknownKid(auth.jwksUri);
        if (!fresh) throw err;
        return resolve(fresh, header, jws);
      }
    };
    const { payload } = await jwtVerify(token, getKey, {
      algorithms: auth.algorithms,
      issuer: auth.issuer,
      audience: auth.audience,
      requiredClaims: ['exp', 'iat'],
      // With exp − iat ≤ the cap (checked below) and exp not past, iat is at most cap + skew old; jose's
      // maxTokenAge also refuses an iat in the future.
      maxTokenAge: auth.maxTokenLifetime,
      clockTolerance: JWT_CLOCK_SKEW_S,
      currentDate: new Date(this.now()),
    });
    // jose judged the times by the clock when the check began, before the key was resolved (perhaps fetched,
    // as slowly as the parent's relay lets it): judge them again now.
    this.times(payload);
    if (lifetime(payload) > auth.maxTokenLifetime) throw invalid('the JWT lives longer than the project allows');
    if (jwtSubject(auth.issuer, payload[auth.userClaim]) === null) {
      throw invalid(`the JWT has no "${auth.userClaim}" claim as a string (of at most 1 KiB with the issuer)`);
    }
    return payload;
  }

  /**
   * exp, nbf and iat (checked numeric by jose) by the clock now, with jose's rules and tolerance. The age cap
   * needs no second look: it follows from exp not past and exp − iat at most the project's cap.
   */
  private times(p: JWTPayload): void {
    if (this.deps.clock.state !== 'trusted') throw new KeystoreError('JWKS_UNAVAILABLE', CLOCK_NOT_TRUSTED_MESSAGE);
    const now = Math.floor(this.now() / 1000);
    if (p.nbf !== undefined && p.nbf > now + JWT_CLOCK_SKEW_S) {
      throw new errors.JWTClaimValidationFailed('"nbf" claim timestamp check failed', p, 'nbf', 'check_failed');
    }
    if ((p.exp as number) <= now - JWT_CLOCK_SKEW_S)
      throw new errors.JWTExpired('"exp" claim timestamp check failed', p, 'exp', 'check_failed');
    if ((p.iat as number) > now + JWT_CLOCK_SKEW_S) {
      throw new errors.JWTClaimValidationFailed('"iat" claim timestamp check failed (it should be in the past)', p, 'iat', 'check_failed');
    }
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }
}

/** exp − iat (both checked present and numeric by jose). */
const lifetime = (p: JWTPayload): number => (p.exp as number) - (p.iat as number);

export const lifecycleActionMessage = (action: LifecycleAction) =>
  `the JWT does not authorize this change: its "${LIFECYCLE_ACTION_CLAIM}" claim must be "${action}"`;
export const LIFECYCLE_LIFETIME_MESSAGE = `a JWT for a key lifecycle change lives at most ${LIFECYCLE_MAX_TOKEN_LIFETIME_S} s`;

/** A verified token's fitness for one lifecycle change: the action claim, and the short lifetime. */
function lifecycleAction(p: JWTPayload, action: LifecycleAction): void {
  if (p[LIFECYCLE_ACTION_CLAIM] !== action) throw invalid(lifecycleActionMessage(action));
  if (lifetime(p) > LIFECYCLE_MAX_TOKEN_LIFETIME_S) throw invalid(LIFECYCLE_LIFETIME_MESSAGE);
}
