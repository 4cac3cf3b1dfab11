/**
 * What a caller asks for when it creates a project (`POST /v1/projects`, and the enclave's `projects.create`,
 * which re-validates it): one schema, with the defaults filled in, so the caller API's validation, its
 * OpenAPI document and the enclave's check are the same rules (project-auth.ts holds the plain values).
 */
import { z } from 'zod';
import { canonicalCbor } from './cbor';
import {
  DEFAULT_ALLOWED_REQUEST_TYPES,
  DEFAULT_JWT_ALGORITHMS,
  DEFAULT_MAX_TOKEN_LIFETIME_S,
  DEFAULT_USER_CLAIM,
  isJwksUri,
  isUserClaim,
  isWellFormedText,
  JWT_ALGORITHMS,
  JWT_AUDIENCE_MAX,
  JWT_ISSUER_MAX,
  MAX_ORIGINS,
  MAX_TOKEN_LIFETIME_S,
  ORIGIN_RE,
  RESERVED_USER_CLAIMS,
  USER_CLAIM_RE,
} from './project-auth';
import { SIGN_REQUEST_TYPES } from './signing/request-types';
import { isEmptyPolicy, PoliciesSchema, type Policies } from './policy/schema';

const distinct = <T>(list: readonly T[]) => new Set(list).size === list.length;

const WELL_FORMED_MESSAGE = 'expected well-formed Unicode text (a lone surrogate cannot be encoded)';
/** Text a record carries as it is: a lone surrogate would be written as U+FFFD (see cbor.ts). */
export const wellFormedText = (max: number) => z.string().min(1).max(max).refine(isWellFormedText, WELL_FORMED_MESSAGE);

export const JwtAuthSchema = z.strictObject({
  type: z.literal('jwt'),
  issuer: wellFormedText(JWT_ISSUER_MAX),
  audience: wellFormedText(JWT_AUDIENCE_MAX),
  userClaim: z
    .string()
    .regex(USER_CLAIM_RE, 'expected 1-64 characters of [A-Za-z0-9_.:-]')
    .refine(isUserClaim, `expected a claim that names the user, not one of ${RESERVED_USER_CLAIMS.join(', ')}`)
    .default(DEFAULT_USER_CLAIM),
  jwksUri: z.string().refine(isJwksUri, 'expected an absolute https URL without credentials or fragment'),
  algorithms: z
    .array(z.enum(JWT_ALGORITHMS, { message: `expected asymmetric algorithms (${JWT_ALGORITHMS.join(', ')}); none and HS* are refused` }))
    .min(1)
    .refine(distinct, 'expected distinct algorithms')
    .default([...DEFAULT_JWT_ALGORITHMS]),
  maxTokenLifetime: z.number().int().min(1).max(MAX_TOKEN_LIFETIME_S).default(DEFAULT_MAX_TOKEN_LIFETIME_S),
});

export const ProjectAuthSchema = z.discriminatedUnion('type', [z.strictObject({ type: z.literal('token') }), JwtAuthSchema]);

/** What a browser sends in `Origin`: lower-case host, no default port; anything else would never match. */
const isCanonicalOrigin = (o: string): boolean => {
  try {
    return new URL(o).origin === o;
  } catch {
    return false;
  }
};
export const OriginSchema = z
  .string()
  .regex(ORIGIN_RE, 'expected an origin (scheme://host[:port]); * and null are refused')
  .refine(isCanonicalOrigin, 'expected the origin as a browser sends it: lower-case host, no default port (:443 for https, :80 for http)');

/**
 * A project record's size limit (records.ts, MAX_RECORD_BYTES: a larger record is refused by everyone who
 * verifies it, the enclave after a restart included). Here so this module needs nothing of records.ts, which
 * imports node:crypto; records.test.ts checks the two agree.
 */
export const PROJECT_RECORD_MAX_BYTES = 32_768;

/**
 * The size of the largest record these settings can ever be in: the project's ids at their longest, state
 * `disabled`, a `prev` digest, and `seq` and `createdAt` at their largest encodings (every later record of the
 * project, made by projects.setState, is at most this).
 */
export function largestProjectRecordBytes(
  settings: Pick<ProjectSettings, 'auth' | 'allowedOrigins' | 'allowedRequestTypes'> & { policies?: Policies | undefined },
): number {
  return canonicalCbor({
    ...(isEmptyPolicy(settings.policies) ? {} : { policies: settings.policies }),
    v: 1,
    kind: 'project',
    projectId: `p_${'A'.repeat(22)}`,
    projectKey: `pk_${'A'.repeat(22)}`,
    auth: { ...settings.auth },
    allowedRequestTypes: [...settings.allowedRequestTypes],
    allowedOrigins: [...settings.allowedOrigins],
    state: 'disabled',
    seq: Number.MAX_SAFE_INTEGER,
    prev: `0x${'0'.repeat(64)}`,
    createdAt: Number.MAX_SAFE_INTEGER,
  }).length;
}

/**
 * A project's settings: its auth (immutable), the browser origins it allows, the request types it signs and
 * its signing policies (docs/POLICIES.md; changed later with `PUT /v1/projects/{id}/policies`).
 */
export const ProjectSettingsSchema = z
  .strictObject({
    auth: ProjectAuthSchema,
    allowedOrigins: z.array(OriginSchema).max(MAX_ORIGINS).refine(distinct, 'expected distinct origins').default([]),
    allowedRequestTypes: z
      .array(z.enum(SIGN_REQUEST_TYPES))
      .min(1)
      .refine(distinct, 'expected distinct request types')
      .default([...DEFAULT_ALLOWED_REQUEST_TYPES]),
    policies: PoliciesSchema.optional(),
  })
  .superRefine(
    (settings, ctx) => {
      const size = largestProjectRecordBytes(settings);
      if (size > PROJECT_RECORD_MAX_BYTES) {
        const policies = !isEmptyPolicy(settings.policies);
        ctx.addIssue({
          code: 'custom',
          path: [policies ? 'policies' : 'allowedOrigins'],
          message: `the project's record would be ${size} bytes, over the ${PROJECT_RECORD_MAX_BYTES} a record may have: ${policies ? 'write fewer or shorter rules, limits or lists' : 'list fewer or shorter origins'}`,
        });
      }
    },
    // Measured once every field is valid (a lone surrogate, say, has no encoding to measure).
    { when: (payload) => payload.issues.length === 0 },
  );
export type ProjectSettings = z.output<typeof ProjectSettingsSchema>;
