/**
 * What a caller asks for when it creates a project (`POST /v1/projects`, and the enclave's `projects.create`,
 * which re-validates it): one schema, with the defaults filled in, so the caller API's validation, its
 * OpenAPI document and the enclave's check are the same rules (project-auth.ts holds the plain values).
 */
import { z } from 'zod';
import {
  DEFAULT_ALLOWED_REQUEST_TYPES,
  DEFAULT_JWT_ALGORITHMS,
  DEFAULT_MAX_TOKEN_LIFETIME_S,
  DEFAULT_USER_CLAIM,
  isJwksUri,
  JWT_ALGORITHMS,
  JWT_AUDIENCE_MAX,
  JWT_ISSUER_MAX,
  MAX_ORIGINS,
  MAX_TOKEN_LIFETIME_S,
  ORIGIN_RE,
  USER_CLAIM_RE,
} from './project-auth';
import { SIGN_REQUEST_TYPES } from './signing/request-types';

const distinct = <T>(list: readonly T[]) => new Set(list).size === list.length;

export const JwtAuthSchema = z.strictObject({
  type: z.literal('jwt'),
  issuer: z.string().min(1).max(JWT_ISSUER_MAX),
  audience: z.string().min(1).max(JWT_AUDIENCE_MAX),
  userClaim: z.string().regex(USER_CLAIM_RE, 'expected 1-64 characters of [A-Za-z0-9_.:-]').default(DEFAULT_USER_CLAIM),
  jwksUri: z.string().refine(isJwksUri, 'expected an absolute https URL without credentials or fragment'),
  algorithms: z
    .array(z.enum(JWT_ALGORITHMS, { message: `expected asymmetric algorithms (${JWT_ALGORITHMS.join(', ')}); none and HS* are refused` }))
    .min(1)
    .refine(distinct, 'expected distinct algorithms')
    .default([...DEFAULT_JWT_ALGORITHMS]),
  maxTokenLifetime: z.number().int().min(1).max(MAX_TOKEN_LIFETIME_S).default(DEFAULT_MAX_TOKEN_LIFETIME_S),
});

export const ProjectAuthSchema = z.discriminatedUnion('type', [z.strictObject({ type: z.literal('token') }), JwtAuthSchema]);

export const OriginSchema = z.string().regex(ORIGIN_RE, 'expected an origin (scheme://host[:port]); * and null are refused');

/** A project's settings: its auth (immutable), the browser origins it allows and the request types it signs. */
export const ProjectSettingsSchema = z.strictObject({
  auth: ProjectAuthSchema,
  allowedOrigins: z.array(OriginSchema).max(MAX_ORIGINS).refine(distinct, 'expected distinct origins').default([]),
  allowedRequestTypes: z
    .array(z.enum(SIGN_REQUEST_TYPES))
    .min(1)
    .refine(distinct, 'expected distinct request types')
    .default([...DEFAULT_ALLOWED_REQUEST_TYPES]),
});
export type ProjectSettings = z.output<typeof ProjectSettingsSchema>;
