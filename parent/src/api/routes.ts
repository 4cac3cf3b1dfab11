/**
 * The caller API routes (the table in README.md, "Caller API"): each one's path, scope, zod schemas and
 * handler. The schemas are the routes' only validation, their TypeScript types (fastify-type-provider-zod)
 * and what an OpenAPI document will be generated from. Objects are strict: unknown fields are refused.
 * The server (server.ts) adds to every route its token check, deadline and request bookkeeping.
 */
import type {
  FastifyBaseLogger,
  FastifyInstance,
  FastifyRequest,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { getAddress } from 'viem';
import { z } from 'zod';
import { PoliciesSchema, POLICY_MAX_APPROVERS } from '@nks/shared/policy/schema';
import { APPROVAL_SIGNATURE_EXPECTED, APPROVAL_SIGNATURE_RE } from '@nks/shared/policy/approval';
import { ProjectSettingsSchema } from '@nks/shared/projects-schema';
import { keyId } from '@nks/shared/schema';
import { SIGN_BATCH_MAX_BYTES, SignBatchRequestsSchema, SignRequestSchema } from '@nks/shared/signing/schema';
import { KeystoreError } from '@nks/shared/errors';
import { DEFAULT_PROJECT_ID } from '@nks/shared/records';
import type { Scope } from '../config';
import { historyEntryOf, viewOf, type KeyRegistry } from '../key-registry';
import type { StoredKey } from '../store/types';
import { TokenAuth, type Principal } from './auth';
import { KeyParams, projectId, ProjectParams, requestBody, routeUrl, stringMap } from '@nks/shared/http/validation';
import type { Logger } from '@nks/shared/log';
import { auditedSign, auditedSignBatch } from './audit';
import * as R from './responses';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The documented path (`/v1/keys/{keyId}`): the metrics label and the name in 405 answers. */
    name?: string;
    /** The token scope the route needs; none for health, readiness, metrics and the identity. */
    scope?: Scope;
    /** Health, readiness and metrics: served while draining or overloaded, with no token and no deadline. */
    operational?: boolean;
    /** The route's own body limit, instead of `api.maxBodyBytes` (shared/src/http/body.ts). */
    bodyLimit?: number;
    /** How many requests of the token's rate limit a valid body counts for (token-limits.ts); 1 when not given. */
    rateCost?: (body: unknown) => number;
  }
}

export type ApiInstance = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  ZodTypeProvider
>;

const externalId = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21-\x7e]+$/, 'expected printable ASCII without spaces');
/** Labels: a map without prototype; `__proto__`, `constructor` and `prototype` are refused as names (stringMap). */
const labels = stringMap(
  z.string().regex(/^[A-Za-z0-9_.:/-]{1,64}$/, 'label names are 1-64 characters of [A-Za-z0-9_.:/-]'),
  z.string().max(256),
).refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');

const CreateBody = z
  .strictObject({
    externalId: externalId.optional(),
    labels: labels.optional(),
    attest: z.boolean().optional(),
    /** A token project (`default` when absent). */
    projectId: projectId.optional(),
  })
  .optional();
/** A project's name is the parent's label: printable (no control or format characters), 1-128 characters. */
const projectName = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[^\p{C}]+$/u, 'expected 1-128 printable characters');
const ProjectCreateBody = requestBody(ProjectSettingsSchema.extend({ name: projectName }), { whenMissing: 'a project is required' });
const ProjectListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().max(128).optional(),
});
const EmptyBody = z.strictObject({}).optional();
/** A successor (docs/LIFECYCLE.md): it takes its predecessor's external id and labels; `attest` as at creation. */
const SuccessorBody = z.strictObject({ attest: z.boolean().optional() }).optional();
/** An approver's EIP-712 signature of a policy change (docs/POLICIES.md, "Approvers"): 65 bytes, 0x hex. */
const approval = z.string().regex(APPROVAL_SIGNATURE_RE, APPROVAL_SIGNATURE_EXPECTED);
/**
 * A project's whole policy (docs/POLICIES.md): it replaces the one the project has; `{}` removes it. When the
 * current policy has approvers, `approvals` (beside the policy's fields, not part of it) carries their signatures.
 */
const PoliciesBody = requestBody(
  PoliciesSchema.safeExtend({
    approvals: z
      .array(approval)
      .max(POLICY_MAX_APPROVERS, `expected at most ${POLICY_MAX_APPROVERS} approvals`)
      .refine((l) => new Set(l.map((a) => a.toLowerCase())).size === l.length, 'expected distinct approvals')
      .optional(),
  }),
  { whenMissing: 'a policy is required ({"rules": [...], "limits": [...], "approvers"?, "approvals"?}; {} removes it)' },
);
/** The policy an approver is asked to approve (its typed data names the project's current record). */
const ApprovalBody = requestBody(z.strictObject({ policies: PoliciesSchema }), {
  whenMissing: 'a body {"policies": {...}} is required',
});
/**
 * A dry run: the request (as sent: the enclave validates it again, as when signing), the key whose limit
 * counters to show, and a policy to try instead of the project's.
 */
const EvaluateBody = requestBody(
  z.strictObject({ request: SignRequestSchema, keyId: keyId.optional(), policies: PoliciesSchema.optional() }),
  { whenMissing: 'a body {"request": {...}, "keyId"?, "policies"?} is required', asSent: true },
);
const SignBody = requestBody(SignRequestSchema, { whenMissing: 'a sign request is required', asSent: true });
/**
 * A batch (README.md, "Batch signing"): 1-100 requests of the single route's schema, in a body of at most 1 MiB
 * (the route's own limit). One invalid request makes the whole batch 400, its path named
 * (`body.requests[3].message`): a malformed request is the caller's bug. Refusals of the enclave's (policy, the
 * project's request types, what hashing finds invalid) answer that request alone.
 */
const SignBatchBody = requestBody(z.strictObject({ requests: SignBatchRequestsSchema }), {
  whenMissing: 'a body {"requests": [...]} is required',
  asSent: true,
});
/** An address to find keys by: 20 bytes of 0x hex in any case (checksummed or not), as stored (EIP-55). */
const addressQuery = z
  .string()
  .regex(/^0x[0-9a-fA-F]{40}$/, 'expected an address: 0x and 40 hex digits, in any case')
  .transform((a) => getAddress(a.toLowerCase()));
/** `name:value` (split at the first colon: a label name with a colon cannot be filtered by). */
const labelQuery = z
  .string()
  .regex(/^[A-Za-z0-9_./-]{1,64}:/, 'expected name:value, the name 1-64 characters of [A-Za-z0-9_./-]')
  .max(64 + 1 + 256)
  .transform((l): [string, string] => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]);
const ListQuery = z.strictObject({
  externalId: externalId.optional(),
  address: addressQuery.optional(),
  label: labelQuery.optional(),
  disabled: z
    .enum(['true', 'false'], 'expected true or false')
    .transform((d) => d === 'true')
    .optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().max(64).optional(),
});
/**
 * An Idempotency-Key (POST /v1/keys): a token of printable ASCII without spaces, 1-255 characters (a UUID, as the
 * SDK sends). The other headers pass as they are.
 */
const CreateHeaders = z.looseObject({
  'idempotency-key': z
    .string()
    .regex(/^[\x21-\x7e]{1,255}$/, 'expected 1-255 printable ASCII characters without spaces (a UUID, say)')
    .optional(),
});
/** PATCH /v1/keys/{keyId}: the key's whole label map, replacing the one it has. */
const LabelsBody = requestBody(z.strictObject({ labels }), { whenMissing: 'a body {"labels": {...}} is required' });
export const NoQuery = z.strictObject({});
const nonce = z
  .string()
  .regex(/^0x(?:[0-9a-fA-F]{2}){1,512}$/, 'expected 1-512 bytes of 0x-prefixed hex')
  .optional();
const AttestationQuery = z.strictObject({ nonce });
const IdentityQuery = z.strictObject({ nonce });

/**
 * A route's URL and identity, from its documented path; no scope: served without a token. A literal colon
 * (`…/policies:evaluate`) is `::` to Fastify, whose `:` starts a parameter; the documented path keeps one.
 */
export const at = (path: string, scope?: Scope) => ({
  url: routeUrl(path.replace(/:/g, '::')),
  config: { name: path, ...(scope ? { scope } : {}) },
});

/**
 * Whether the request's token sees the keys of JWT projects: admin only. Their subjects name the users (issuer
 * and user claim) and their addresses are the users' wallets; no token below admin may act on them anyway.
 */
const seesJwtKeys = (request: FastifyRequest): boolean => request.apiState?.scopes?.has('admin') ?? false;

/** The request's token (every route with a scope has one once past its token check). */
const tokenOf = (request: FastifyRequest): Principal => request.apiState?.token as Principal;

/** The answer for a key the token does not reach: exactly a missing key's (key-registry.ts), so nothing tells them apart. */
const noSuchKey = (keyId: string) => new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);

/**
 * A key as the read routes see it, for this request's token: a JWT project's only for admin (`view`), another
 * project's than those a bound token reaches as if it did not exist (docs/SECURITY.md, "The reach of each token").
 */
async function reachableView(keys: KeyRegistry, request: FastifyRequest, keyId: string): Promise<StoredKey> {
  const k = await keys.view(keyId, { withJwtKeys: seesJwtKeys(request) });
  if (!TokenAuth.reaches(tokenOf(request), k.projectId)) throw noSuchKey(keyId);
  return k;
}

/** Whether a token may read keys (`keys:read`, or `admin`, which includes it). */
const canRead = (token: Principal): boolean => token.scopes.has('keys:read') || token.scopes.has('admin');

/**
 * Registration order is the order of methods in a 405's Allow header (`POST, GET` on /v1/keys). `audit`: the
 * logger of the signatures' audit lines (audit.ts).
 */
export function callerRoutes(keys: KeyRegistry, audit?: Logger): (app: ApiInstance) => void {
  return (app) => {
    app.route({
      method: 'POST',
      ...at('/v1/keys', 'keys:create'),
      schema: {
        querystring: NoQuery,
        body: CreateBody,
        headers: CreateHeaders,
        response: { 200: R.CreatedKeyView.or(R.KeyCreatedRef), 201: R.KeyView.or(R.SuccessorOwnView) },
      },
      async handler(request, reply) {
        const token = tokenOf(request);
        const projectId = request.body?.projectId ?? DEFAULT_PROJECT_ID;
        // Whether the project exists or not, the same answer: a bound token learns nothing of other projects.
        if (!TokenAuth.reaches(token, projectId))
          throw new KeystoreError('FORBIDDEN', `token "${token.name}" is not bound to project ${projectId}`);
        // An Idempotency-Key is the token's own namespace: no other token can replay (or probe) its creates.
        const idem = request.headers['idempotency-key'];
        const out = await keys.create(request.body ?? {}, idem === undefined ? undefined : { scope: `token:${token.name}`, key: idem });
        const { record, created } = out;
        // A replay answers as the create did (201, the new key), marked by Idempotent-Replayed; a token that may not
        // read keys gets the key as its create answered it (enabled and active: a create's key is, checkNewKey), not
        // what may have changed since (labels, disabled, state) nor its record. The registry checked the key is of
        // this request's project and subject; its reach is checked again here, as on every route that answers a key.
        if (out.replayed) {
          // (A JWT project's key is also refused by the registry: a create never makes one.)
          if (!TokenAuth.reaches(token, record.projectId)) throw noSuchKey(record.keyId);
          await keys.view(record.keyId, { withJwtKeys: seesJwtKeys(request) });
          reply.code(201).header('idempotent-replayed', 'true');
          if (canRead(token)) return viewOf(record);
          const { labels: _labels, externalId: _externalId, record: _record, ...own } = viewOf(record);
          return { ...own, disabled: false, state: 'active' as const };
        }
        reply.code(created ? 201 : 200);
        // Only to a token that may read keys (field names): to another, it would confirm guesses of labels it may not read.
        const mismatch = canRead(token) && out.mismatch?.length ? { mismatch: out.mismatch } : {};
        // An existing key is shown only to a token that may read keys: creating is not a way to read one.
        if (!created && !canRead(token)) return { keyId: record.keyId, created: false as const };
        return created ? viewOf(record) : { ...viewOf(record), created: false as const, ...mismatch };
      },
    });
    app.route({
      method: 'GET',
      ...at('/v1/keys', 'keys:read'),
      schema: { querystring: ListQuery, response: { 200: R.KeyList } },
      async handler(request) {
        // A bound token's pages leave out the keys of other projects, in the query (a filter after it would leave
        // pages short, and their cursors would count the keys left out); by external id, here.
        const token = tokenOf(request);
        const projects = token.projects ? [...token.projects] : undefined;
        const { limit, cursor, externalId, address, label, disabled } = request.query;
        const filter = { externalId, address, labels: label ? [label] : undefined, disabled };
        const page = await keys.list({ limit, cursor, filter }, { withJwtKeys: seesJwtKeys(request), projects });
        const shown = page.keys.filter((k) => TokenAuth.reaches(token, k.projectId));
        return { keys: shown.map((r) => viewOf(r)), nextCursor: page.nextCursor };
      },
    });
    app.route({
      method: 'GET',
      ...at('/v1/keys/{keyId}', 'keys:read'),
      schema: { params: KeyParams, querystring: NoQuery, response: { 200: R.KeyView } },
      async handler(request) {
        return viewOf(await reachableView(keys, request, request.params.keyId));
      },
    });
    // Labels (the caller's names for a key, in no record and read by no policy) are set by whoever may create
    // keys: `keys:create` already chooses them at creation and manages its projects' keys (docs/SECURITY.md). A key
    // the token does not reach is 404, as on the read routes.
    app.route({
      method: 'PATCH',
      ...at('/v1/keys/{keyId}', 'keys:create'),
      schema: { params: KeyParams, querystring: NoQuery, body: LabelsBody, response: { 200: R.KeyView.or(R.KeyLabelsRef) } },
      async handler(request) {
        await reachableView(keys, request, request.params.keyId);
        const record = await keys.setLabels(request.params.keyId, request.body.labels);
        // Setting labels is not a way to read a key: a token that may not read keys gets what it set.
        return canRead(tokenOf(request)) ? viewOf(record) : { keyId: record.keyId, labels: record.labels };
      },
    });
    app.route({
      method: 'POST',
      ...at('/v1/keys/{keyId}/sign', 'keys:sign'),
      schema: { params: KeyParams, querystring: NoQuery, body: SignBody, response: { 200: R.SignResultView } },
      handler(request) {
        const { keyId } = request.params;
        const who = { requestId: request.id, token: request.apiState?.principal ?? '-' };
        return auditedSign(audit, who, keyId, request.body, async () => {
          // A bound token: the key's project first (unbound tokens, the common case, skip this read).
          if (tokenOf(request).projects !== null && !TokenAuth.reaches(tokenOf(request), (await keys.get(keyId)).projectId))
            throw noSuchKey(keyId);
          // The request id travels to the enclave and its KMS call, for their log lines: passed, not an async
          // context (an AsyncLocalStorage costs every promise on Node 20, measured in docs/OPERATIONS.md).
          return keys.sign(keyId, request.body, request.id);
        });
      },
    });
    app.route({
      method: 'POST',
      url: at('/v1/keys/{keyId}/sign-batch', 'keys:sign').url,
      config: {
        ...at('/v1/keys/{keyId}/sign-batch', 'keys:sign').config,
        bodyLimit: SIGN_BATCH_MAX_BYTES,
        // Each request counts against the token's rate limit, as a single sign does.
        rateCost: (body) => (body as { requests: unknown[] }).requests.length,
      },
      schema: { params: KeyParams, querystring: NoQuery, body: SignBatchBody, response: { 200: R.SignBatchAnswer } },
      async handler(request) {
        const { keyId } = request.params;
        const who = { requestId: request.id, token: request.apiState?.principal ?? '-' };
        const { requests } = request.body;
        const results = await auditedSignBatch(audit, who, keyId, requests, async () => {
          // The reach rules of the single route: a key out of a bound token's reach is a missing one.
          if (tokenOf(request).projects !== null && !TokenAuth.reaches(tokenOf(request), (await keys.get(keyId)).projectId))
            throw noSuchKey(keyId);
          return keys.signBatch(keyId, requests, request.id);
        });
        return { results };
      },
    });
    for (const action of ['disable', 'enable'] as const) {
      app.route({
        method: 'POST',
        ...at(`/v1/keys/{keyId}/${action}`, 'admin'),
        schema: { params: KeyParams, querystring: NoQuery, body: EmptyBody, response: { 200: R.KeyView } },
        async handler(request) {
          return viewOf(await keys.setDisabled(request.params.keyId, action === 'disable'));
        },
      });
    }
    // The key lifecycle (docs/LIFECYCLE.md): a successor is a new key (keys:create); activating one retires its
    // predecessor and cancelling one ends it, which are the admin's, like disable.
    app.route({
      method: 'POST',
      ...at('/v1/keys/{keyId}/successor', 'keys:create'),
      schema: { params: KeyParams, querystring: NoQuery, body: SuccessorBody, response: { 201: R.KeyView.or(R.SuccessorOwnView) } },
      async handler(request, reply) {
        // A JWT project's key does not exist for a caller below admin, as on the read routes, nor another
        // project's for a bound token.
        await reachableView(keys, request, request.params.keyId);
        const record = await keys.successor(request.params.keyId, request.body ?? {});
        reply.code(201);
        // The new key, but not what it takes from its predecessor (labels, external id, and the record that names
        // the subject) for a token that may not read keys: a successor is not a way to read one.
        if (canRead(tokenOf(request))) return viewOf(record);
        const { labels: _labels, externalId: _externalId, record: _record, ...own } = viewOf(record);
        return own;
      },
    });
    for (const action of ['activate', 'cancel'] as const) {
      app.route({
        method: 'POST',
        ...at(`/v1/keys/{keyId}/${action}`, 'admin'),
        schema: { params: KeyParams, querystring: NoQuery, body: EmptyBody, response: { 200: R.KeyView } },
        async handler(request) {
          return viewOf(await keys[action](request.params.keyId));
        },
      });
    }
    app.route({
      method: 'GET',
      ...at('/v1/keys/{keyId}/history', 'keys:read'),
      schema: { params: KeyParams, querystring: NoQuery, response: { 200: R.KeyHistory } },
      async handler(request) {
        await reachableView(keys, request, request.params.keyId);
        return { keys: (await keys.history(request.params.keyId, { withJwtKeys: seesJwtKeys(request) })).map(historyEntryOf) };
      },
    });
    app.route({
      method: 'POST',
      ...at('/v1/projects', 'admin'),
      schema: { querystring: NoQuery, body: ProjectCreateBody, response: { 201: R.ProjectView } },
      async handler(request, reply) {
        const { name, ...settings } = request.body;
        const view = await keys.projects.create(name, settings);
        reply.code(201);
        return view;
      },
    });
    app.route({
      method: 'GET',
      ...at('/v1/projects', 'admin'),
      schema: { querystring: ProjectListQuery, response: { 200: R.ProjectList } },
      handler(request) {
        return keys.projects.list(request.query);
      },
    });
    app.route({
      method: 'GET',
      ...at('/v1/projects/{projectId}', 'admin'),
      schema: { params: ProjectParams, querystring: NoQuery, response: { 200: R.ProjectView } },
      handler(request) {
        return keys.projects.get(request.params.projectId);
      },
    });
    for (const action of ['disable', 'enable'] as const) {
      app.route({
        method: 'POST',
        ...at(`/v1/projects/{projectId}/${action}`, 'admin'),
        schema: { params: ProjectParams, querystring: NoQuery, body: EmptyBody, response: { 200: R.ProjectView } },
        async handler(request) {
          return keys.projects.setState(request.params.projectId, action === 'disable' ? 'disabled' : 'active');
        },
      });
    }
    // Signing policies (docs/POLICIES.md): read and replaced as a whole; a dry run on any request.
    app.route({
      method: 'GET',
      ...at('/v1/projects/{projectId}/policies', 'admin'),
      schema: { params: ProjectParams, querystring: NoQuery, response: { 200: R.PoliciesAnswer } },
      handler(request) {
        return keys.projects.policies(request.params.projectId);
      },
    });
    app.route({
      method: 'PUT',
      ...at('/v1/projects/{projectId}/policies', 'admin'),
      schema: { params: ProjectParams, querystring: NoQuery, body: PoliciesBody, response: { 200: R.PoliciesAnswer } },
      handler(request) {
        const { approvals, ...policies } = request.body;
        return keys.projects.setPolicies(request.params.projectId, policies, approvals);
      },
    });
    app.route({
      method: 'POST',
      ...at('/v1/projects/{projectId}/policies:approval', 'admin'),
      schema: { params: ProjectParams, querystring: NoQuery, body: ApprovalBody, response: { 200: R.PolicyApprovalAnswer } },
      handler(request) {
        return keys.projects.approval(request.params.projectId, request.body.policies);
      },
    });
    app.route({
      method: 'POST',
      ...at('/v1/projects/{projectId}/policies:evaluate', 'admin'),
      schema: { params: ProjectParams, querystring: NoQuery, body: EvaluateBody, response: { 200: R.PolicyDecisionView } },
      handler(request) {
        return keys.evaluatePolicy(request.params.projectId, request.body);
      },
    });
    app.route({
      method: 'GET',
      ...at('/v1/attestation', 'keys:read'),
      schema: { querystring: AttestationQuery, response: { 200: R.AttestationAnswer } },
      handler(request) {
        return keys.attestation(request.query.nonce);
      },
    });
    // The keystore identity, for anyone (like /healthz): clients pin its public key from the genesis document
    // and check with the fresh document that this enclave holds it.
    app.route({
      method: 'GET',
      ...at('/v1/identity'),
      schema: { querystring: IdentityQuery, response: { 200: R.IdentityAnswer } },
      handler(request) {
        return keys.identity(request.query.nonce);
      },
    });
  };
}
