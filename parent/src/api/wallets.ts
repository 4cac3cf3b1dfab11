/**
 * The TrueWallet API (docs/PROJECTS.md, "The TrueWallet API"): what the TrueWallet SDK's JWT signer calls,
 * `POST /v1/{projectKey}/wallets/get-address | sign | sign-request`, for JWT projects only. No bearer token:
 * the user's JWT in the body is the authorization, and the enclave verifies it on every call.
 *
 * In its own Fastify scope, so that only these routes get:
 * - the SDK's error format: 400 `{detail: {field: [reason]}}`; 401, 403, 409, 503 `{detail}` (403 and 503
 *   with Retry-After); 500 `{detail}` without internals (`answerError`);
 * - CORS (@fastify/cors): exactly the project's `allowedOrigins`, methods POST, header content-type, no
 *   credentials; a preflight from any other origin is not answered (404), and other origins get no
 *   Access-Control-Allow-Origin;
 * - rate limits (@fastify/rate-limit's limiters, in fixed windows, least recently used keys out): requests per
 *   client address; failures (401, and 400 for the JWT) per client address, so invalid tokens lock out their
 *   sender and not the user they name; and per project and per user, counting only requests the enclave
 *   served, so nobody spends a user's or a project's quota without that user's valid JWT. 403 + Retry-After.
 */
import cors, { type FastifyCorsOptions } from '@fastify/cors';
import rateLimit, { normalizeIP, type CreateRateLimitOptions } from '@fastify/rate-limit';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import { JWT_MAX_BYTES } from '@nks/shared/project-auth';
import { SignRequestSchema } from '@nks/shared/signing/schema';
import type { ParentConfig } from '../config';
import type { Metrics } from '../metrics';
import type { JwtProject, WalletKeys } from '../wallet-keys';
import type { ApiInstance } from './routes';
import type { RequestState } from './server';
import { fieldValidatorCompiler, FieldErrors, ProjectKeyParams, requestBody, routeUrl } from './validation';

export interface WalletRoutesOptions {
  wallets: WalletKeys;
  config: ParentConfig['wallets'];
  metrics: Metrics;
  logger: Logger;
}

/** The documented prefix of the routes. */
export const WALLETS_PREFIX = '/v1/{projectKey}/wallets';

type LimitName = 'address' | 'failures' | 'project' | 'user';

const LIMIT_MESSAGES: Record<LimitName, string> = {
  address: 'too many requests from this address; retry later',
  failures: 'too many failed requests from this address; retry later',
  project: "this project's request quota is used up for now; retry later",
  user: 'too many requests for this user; retry later',
};

/** A rate limit was hit: 403 with Retry-After (the SDK's limit error). */
export class RateLimited extends KeystoreError {
  constructor(
    readonly limit: LimitName,
    readonly retryAfterS: number,
  ) {
    super('FORBIDDEN', LIMIT_MESSAGES[limit]);
  }
}

interface WalletRequest {
  project: JwtProject;
  subject?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The TrueWallet routes: the request's project (once its key is known) and user (once the JWT is read). */
    wallet: WalletRequest | null;
    /** The TrueWallet routes: the outcome label of the answer's metric, when it is an error. */
    walletOutcome: string | null;
  }
}

const jwtToken = z.string().min(1, 'expected a JWT').max(JWT_MAX_BYTES, `expected a JWT of at most ${JWT_MAX_BYTES} bytes`);
const GetAddressBody = z.strictObject({ jwt_token: jwtToken });
const HASH_RE = /^0x[0-9a-fA-F]{64}$/;
const SignBody = z
  .strictObject({
    message: z.string().max(128 * 1024, 'expected at most 128 KiB'),
    jwt_token: jwtToken,
    message_type: z.enum(['hash', 'message']),
    wallet_type: z.literal('evm'),
  })
  .superRefine((b, ctx) => {
    if (b.message_type === 'hash' && !HASH_RE.test(b.message))
      ctx.addIssue({ code: 'custom', path: ['message'], message: 'expected 32 bytes as 0x-prefixed hex when message_type is "hash"' });
  });
// The request is forwarded to the enclave as the caller sent it (the enclave validates and hashes it again).
const SignRequestBody = requestBody(z.strictObject({ jwt_token: jwtToken, request: SignRequestSchema }), { asSent: true });
const NoQuery = z.strictObject({});

/** The field a refusal of the enclave's about the request itself (INVALID_PARAMS) is reported under, by route. */
const REQUEST_FIELD: Record<string, string> = {
  [`${WALLETS_PREFIX}/sign`]: 'message',
  [`${WALLETS_PREFIX}/sign-request`]: 'request',
};

/** The client address a limit counts by (IPv6 by /64, as the plugin does); a Unix socket's callers are one. */
const clientKey = (req: FastifyRequest): string => (req.ip ? normalizeIP(req.ip) : 'local');

export function walletRoutes(options: WalletRoutesOptions): (app: ApiInstance) => void {
  const { wallets, config, metrics, logger } = options;
  const limits = config.rateLimits;

  /** The SDK's format for every error of these routes (the server calls it with the error as a KeystoreError). */
  const answerError = (ke: KeystoreError, request: FastifyRequest, reply: FastifyReply): void => {
    const route = request.routeOptions.config?.name ?? '';
    let status: number;
    let detail: unknown;
    let outcome: string;
    let failure = false;
    if (ke instanceof RateLimited) {
      metrics.walletRateLimited.inc({ limit: ke.limit });
      reply.header('retry-after', String(Math.max(1, ke.retryAfterS)));
      [status, detail, outcome] = [403, ke.message, 'rate_limited'];
    } else if (ke instanceof FieldErrors) {
      // The parent's own refusal of the JWT (not a JWT, no user claim) is a failure like the enclave's.
      const jwt = ke.code === 'INVALID_JWT';
      [status, detail, outcome, failure] = [400, ke.fields, jwt ? 'invalid_jwt' : 'bad_request', jwt];
    } else if (ke.code === 'INVALID_JWT') {
      metrics.walletJwtRefusals.inc({ stage: 'enclave' });
      [status, detail, outcome, failure] = [400, { jwt_token: [ke.message] }, 'invalid_jwt', true];
    } else if (ke.code === 'FORBIDDEN') {
      // From the enclave: a JWT that verified but is not of this key's user or project.
      metrics.walletJwtRefusals.inc({ stage: 'enclave' });
      [status, detail, outcome, failure] = [400, { jwt_token: [ke.message] }, 'invalid_jwt', true];
    } else if (ke.code === 'INVALID_PARAMS') {
      [status, detail, outcome] = [400, { [REQUEST_FIELD[route] ?? 'body']: [ke.message] }, 'bad_request'];
    } else if (['INVALID_REQUEST', 'PARSE_ERROR', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE'].includes(ke.code)) {
      [status, detail, outcome] = [400, { body: [ke.message] }, 'bad_request'];
    } else if (ke.code === 'UNAUTHORIZED') {
      [status, detail, outcome, failure] = [401, ke.message, 'unauthorized', true];
    } else if (ke.code === 'KEY_DISABLED' || ke.code === 'KEY_RETIRED') {
      [status, detail, outcome] = [409, ke.message, 'conflict'];
    } else if (ke.retryable) {
      reply.header('retry-after', '1');
      [status, detail, outcome] = [503, ke.message, 'unavailable'];
    } else {
      if (ke.code !== 'INTERNAL') logger.error({ requestId: request.id, code: ke.code, err: ke }, 'TrueWallet request failed');
      [status, detail, outcome] = [500, `the keystore could not answer this request (request id ${request.id})`, 'error'];
    }
    request.walletOutcome = outcome;
    // Counted as the answer is sent, so the sender's next request sees it.
    if (failure) void countFailure?.(request).catch(() => undefined);
    reply.code(status).send({ detail });
  };
  let countFailure: ((req: FastifyRequest) => Promise<unknown>) | undefined;

  return (app) => {
    void app.register(
      async (plugin) => {
        const scope = plugin.withTypeProvider<ZodTypeProvider>();
        // Validation failures name their fields (the SDK's 400).
        scope.setValidatorCompiler(fieldValidatorCompiler);
        scope.decorateRequest('wallet', null);
        scope.decorateRequest('walletOutcome', null);
        await scope.register(rateLimit, { global: false });
        // The browser origins of the project the path names (its record's allowedOrigins); none for an unknown key.
        const corsFor = (req: FastifyRequest): FastifyCorsOptions => {
          const origin = req.headers.origin;
          let allowed = false;
          if (typeof origin === 'string') {
            try {
              const project = wallets.projectForCors((req.params as { projectKey?: string }).projectKey ?? '');
              allowed = project !== undefined && project.record.allowedOrigins.includes(origin);
            } catch {
              allowed = false;
            }
          }
          if (!allowed) return { origin: false };
          return {
            origin,
            methods: ['POST'],
            allowedHeaders: ['content-type'],
            exposedHeaders: ['retry-after', 'x-request-id'],
            credentials: false,
            maxAge: 600,
            strictPreflight: true,
          };
        };
        await scope.register(cors, { hook: 'onRequest', delegator: (req, cb) => cb(null, corsFor(req)) });

        // `cache` (the LRU size of a limiter's keys) is passed on to the store, though the plugin's types leave it out.
        const limiter = (max: number, keyGenerator: (req: FastifyRequest) => string) =>
          scope.createRateLimit({ max, timeWindow: limits.windowMs, keyGenerator, cache: limits.maxTracked } as CreateRateLimitOptions);
        const byAddress = limiter(limits.perAddress, clientKey);
        const failures = limiter(limits.failuresPerAddress, clientKey);
        const byProject = limiter(limits.perProject, (req) => (req.wallet as WalletRequest).project.record.projectId);
        const byUser = limiter(limits.perUser, (req) => {
          const w = req.wallet as WalletRequest;
          return `${w.project.record.projectId}\n${w.subject ?? ''}`;
        });
        countFailure = (req) => failures(req);
        type Limiter = typeof byAddress;
        /** Counts this request, and refuses it beyond the limit. */
        const take = async (check: Limiter, req: FastifyRequest, limit: LimitName) => {
          const r = await check(req);
          if (!r.isAllowed && r.isExceeded) throw new RateLimited(limit, r.ttlInSeconds);
        };
        /** Refuses once the limit's count is reached, counting nothing (what is counted is counted later). */
        const peek = async (check: Limiter, req: FastifyRequest, limit: LimitName) => {
          const r = await check(req, { increment: false });
          if (!r.isAllowed && r.remaining === 0) throw new RateLimited(limit, r.ttlInSeconds);
        };
        /** A request the enclave served: it counts for its project and user. */
        const served = async (req: FastifyRequest) => {
          await byProject(req);
          await byUser(req);
        };

        /** Before the body is read: the address's limits, then the project (401 unless an active JWT project). */
        const gate = async (request: FastifyRequest) => {
          await take(byAddress, request, 'address');
          await peek(failures, request, 'failures');
          const project = wallets.project((request.params as { projectKey: string }).projectKey);
          request.wallet = { project };
          (request.apiState as RequestState).principal = `project:${project.record.projectId}`;
          await peek(byProject, request, 'project');
        };

        /** The user the JWT names (read, not verified: the enclave verifies), within the user's limit. */
        const userOf = async (request: FastifyRequest, jwt: string): Promise<{ project: JwtProject; subject: string }> => {
          const w = request.wallet as WalletRequest;
          let subject: string;
          try {
            subject = wallets.subjectOf(w.project, jwt);
          } catch (err) {
            metrics.walletJwtRefusals.inc({ stage: 'parent' });
            if (err instanceof KeystoreError && err.code === 'INVALID_JWT')
              throw new FieldErrors({ jwt_token: [err.message] }, 'INVALID_JWT');
            throw err;
          }
          w.subject = subject;
          await peek(byUser, request, 'user');
          return { project: w.project, subject };
        };

        const route = (path: string) => ({
          url: path.slice(WALLETS_PREFIX.length),
          config: { name: path, answerError },
          onRequest: gate,
        });

        scope.route({
          method: 'POST',
          ...route(`${WALLETS_PREFIX}/get-address`),
          schema: { params: ProjectKeyParams, querystring: NoQuery, body: GetAddressBody },
          async handler(request) {
            const { project, subject } = await userOf(request, request.body.jwt_token);
            const { address } = await wallets.address(project, request.body.jwt_token, subject);
            await served(request);
            return { address };
          },
        });
        scope.route({
          method: 'POST',
          ...route(`${WALLETS_PREFIX}/sign`),
          schema: { params: ProjectKeyParams, querystring: NoQuery, body: SignBody },
          async handler(request) {
            const body = request.body;
            const { project, subject } = await userOf(request, body.jwt_token);
            if (!project.record.allowedRequestTypes.includes('message'))
              throw new FieldErrors({ message_type: ['message signatures (EIP-191) are not allowed for this project'] });
            // EIP-191 over the 32 raw bytes of a hash (ethers `signMessage(getBytes(hash))`), or over the UTF-8 text.
            const signRequest = {
              type: 'message' as const,
              message: body.message_type === 'hash' ? { raw: body.message as `0x${string}` } : body.message,
            };
            const result = await wallets.sign(project, body.jwt_token, subject, signRequest);
            await served(request);
            return { signature: result.signature };
          },
        });
        scope.route({
          method: 'POST',
          ...route(`${WALLETS_PREFIX}/sign-request`),
          schema: { params: ProjectKeyParams, querystring: NoQuery, body: SignRequestBody },
          async handler(request) {
            const { jwt_token: jwt, request: signRequest } = request.body;
            const { project, subject } = await userOf(request, jwt);
            const type = signRequest.type;
            if (!project.record.allowedRequestTypes.includes(type))
              throw new FieldErrors({ request: [`type ${type} is not allowed for this project`] });
            const result = await wallets.sign(project, jwt, subject, signRequest);
            await served(request);
            return result;
          },
        });

        scope.addHook('onResponse', (request, reply, done) => {
          const { name, answerError: own } = request.routeOptions.config ?? {};
          if (own && name)
            metrics.walletRequests.inc({ route: name, outcome: request.walletOutcome ?? (reply.statusCode < 400 ? 'ok' : 'error') });
          done();
        });
      },
      { prefix: routeUrl(WALLETS_PREFIX) },
    );
  };
}
