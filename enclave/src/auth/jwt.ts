/**
 * A JWT project's user, proven by their JWT (docs/PROTOCOL.md, `jwt`): `subjectOf` verifies the compact JWT
 * with jose against the project's JWKS (jwks.ts) and answers the key subject it proves, `jwtSubject(iss, claim)`.
 *
 * The rules, all from the project's signed record and the enclave's own clock:
 * - at most JWT_MAX_BYTES; the algorithm in the project's list (asymmetric only, so never `none` or HS*);
 * - the key from the project's JWKS only: jose's key resolver over the cached set, so `jku`, `jwk`, `x5u` and
 *   `x5c` headers are never used to find a key; `kid` is required when several keys of the set could match;
 * - `iss` and `aud` the project's, `exp` and `iat` present, `exp`, `nbf` and `iat` within JWT_CLOCK_SKEW_S of
 *   the enclave's clock, and `exp − iat` at most the project's maxTokenLifetime;
 * - the user claim a non-empty string.
 *
 * Every refusal is INVALID_JWT with a short message naming the problem (it goes to the wallet user; the
 * parent sees the JWT anyway until TLS moves into the enclave). A JWKS that cannot be fetched, or a clock the
 * enclave does not trust, is JWKS_UNAVAILABLE (retryable): never an authentication failure.
 */
import { errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { KeystoreError } from '@nks/shared/errors';
import { JWT_CLOCK_SKEW_S, JWT_MAX_BYTES, jwtSubject, type JwtProjectAuth } from '@nks/shared/project-auth';
import type { ClockCheck } from './clock';
import type { JwksCache } from './jwks';

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
  if (err instanceof errors.JWKSMultipleMatchingKeys) return invalid('the JWT names no key (kid) and several keys of the JWKS match');
  if (err instanceof errors.JOSEAlgNotAllowed) return invalid("the JWT's algorithm is not allowed by the project");
  if (err instanceof errors.JOSENotSupported) return invalid('the JWT uses an algorithm or header that is not supported');
  if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid) return invalid('the JWT is malformed');
  return invalid('the JWT does not verify');
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

  /** The subject `token` proves in a project with `auth`, or INVALID_JWT / JWKS_UNAVAILABLE. */
  async subjectOf(token: string, auth: JwtProjectAuth): Promise<string> {
    try {
      const subject = await this.verify(token, auth);
      this.verifications += 1;
      return subject;
    } catch (err) {
      const refusal = err instanceof KeystoreError ? err : jwtRefusal(err);
      if (refusal.code === 'INVALID_JWT') this.refusals += 1;
      throw refusal;
    }
  }

  private async verify(token: string, auth: JwtProjectAuth): Promise<string> {
    if (Buffer.byteLength(token) > JWT_MAX_BYTES) throw invalid(`the JWT is longer than ${JWT_MAX_BYTES} bytes`);
    await this.deps.clock.assertTrusted();
    const { jwks } = this.deps;
    const getKey: JWTVerifyGetKey = async (header, jws) => {
      const entry = await jwks.get(auth.jwksUri);
      try {
        return await entry.resolve(header, jws);
      } catch (err) {
        // Only a key the set does not hold may mean the issuer rotated: refetch (rate-limited) and look again.
        if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
        const fresh = await jwks.refetchForUnknownKid(auth.jwksUri);
        if (!fresh) throw err;
        return fresh.resolve(header, jws);
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
      currentDate: new Date(this.deps.now?.() ?? Date.now()),
    });
    if (lifetime(payload) > auth.maxTokenLifetime) throw invalid('the JWT lives longer than the project allows');
    const subject = jwtSubject(auth.issuer, payload[auth.userClaim]);
    if (subject === null) throw invalid(`the JWT has no "${auth.userClaim}" claim as a string (of at most 1 KiB with the issuer)`);
    return subject;
  }
}

/** exp − iat (both checked present and numeric by jose). */
const lifetime = (p: JWTPayload): number => (p.exp as number) - (p.iat as number);
