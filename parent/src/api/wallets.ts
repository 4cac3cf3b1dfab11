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
 *   client address (`request.ip`: client-address.ts); failures (401, and 400 for the JWT) per client address, so
 *   invalid tokens lock out their sender and not the user they name, with each request in flight holding one unit
 *   of its address's failure budget until its outcome is known (a concurrent burst cannot get past the budget);
 *   and per project and per user, counted once the enclave has answered (a verified JWT), so nobody spends a
 *   user's or a project's quota, or learns whether a user is busy, without that user's valid JWT.
 *   403 + Retry-After.
 * - fixed texts for 503 and 500 (the detail is logged with the request id): the callers are the public.
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
import { fieldValidatorCompiler, FieldErrors, ProjectKeyParams, requestBody, routeUrl } from '@nks/shared/http/validation';

export interface WalletRoutesOptions {
  wallets: WalletKeys;
  config: ParentConfig['wallets'];
  metrics: Metrics;
  logger: Logger;
}

/** The documented prefix of the routes. */
export const WALLETS_PREFIX = '/v1/{projectKey}/wallets';

type LimitName = 'address' | 'failures' | 'concurrent' | 'project' | 'user';

const LIMIT_MESSAGES: Record<LimitName, string> = {
  address: 'too many requests from this address; retry later',
  failures: 'too many failed requests from this address; retry later',
  concurrent: 'too many requests in progress from this address; retry shortly',
  project: "this project's request quota is used up for now; retry later",
  user: 'too many requests for this user; retry later',
};

/** The 503 answers of these routes: fixed texts, as the callers are the public (the detail goes to the log). */
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

interface WalletRequest {
  project: JwtProject;
  subject?: string;
}

/** A request's hold on one unit of its address's failure budget, from admission until its outcome is counted. */
interface Reservation {
  key: string;
  /** While the handler runs (it may outlive the answer, e.g. past the deadline): it releases the hold itself. */
  handling: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The TrueWallet routes: the request's project (once its key is known) and user (once the JWT is read). */
    wallet: WalletRequest | null;
    /** The TrueWallet routes: the outcome label of the answer's metric, when it is an error. */
    walletOutcome: string | null;
    /** The TrueWallet routes: the request's hold on its address's failure budget, until released. */
    walletHold: Reservation | null;
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

/** What spends the sender's failure budget: an unknown or unusable project key (401), a JWT refused (400). */
function isFailure(err: unknown): boolean {
  if (!(err instanceof KeystoreError) || err instanceof RateLimited) return false;
  // FORBIDDEN from the enclave: a JWT that verified but is not of this key's user or project.
  return err.code === 'INVALID_JWT' || err.code === 'FORBIDDEN' || err.code === 'UNAUTHORIZED';
}

export function walletRoutes(options: WalletRoutesOptions): (app: ApiInstance) => void {
  const { wallets, config, metrics, logger } = options;
  const limits = config.rateLimits;

  /** The SDK's format for every error of these routes (the server calls it with the error as a KeystoreError). */
  const answerError = (ke: KeystoreError, request: FastifyRequest, reply: FastifyReply): void => {
    const route = request.routeOptions.config?.name ?? '';
    let status: number;
    let detail: unknown;
    let outcome: string;
    if (ke instanceof RateLimited) {
      metrics.walletRateLimited.inc({ limit: ke.limit });
      reply.header('retry-after', String(Math.max(1, ke.retryAfterS)));
      [status, detail, outcome] = [403, ke.message, 'rate_limited'];
    } else if (ke instanceof FieldErrors) {
      // The parent's own refusal of the JWT (not a JWT, no user claim) is a failure like the enclave's.
      [status, detail, outcome] = [400, ke.fields, ke.code === 'INVALID_JWT' ? 'invalid_jwt' : 'bad_request'];
    } else if (ke.code === 'INVALID_JWT' || ke.code === 'FORBIDDEN') {
      // From the enclave: a JWT refused, or one that verified but is not of this key's user or project.
      metrics.walletJwtRefusals.inc({ stage: 'enclave' });
      [status, detail, outcome] = [400, { jwt_token: [ke.message] }, 'invalid_jwt'];
    } else if (ke.code === 'INVALID_PARAMS') {
      [status, detail, outcome] = [400, { [REQUEST_FIELD[route] ?? 'body']: [ke.message] }, 'bad_request'];
    } else if (['INVALID_REQUEST', 'PARSE_ERROR', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE'].includes(ke.code)) {
      [status, detail, outcome] = [400, { body: [ke.message] }, 'bad_request'];
    } else if (ke.code === 'UNAUTHORIZED') {
      [status, detail, outcome] = [401, ke.message, 'unauthorized'];
    } else if (ke.code === 'KEY_DISABLED' || ke.code === 'KEY_RETIRED') {
      [status, detail, outcome] = [409, ke.message, 'conflict'];
    } else if (ke.retryable) {
      // The enclave's, KMS's or the pool's own words stay in the log: the caller learns only to retry.
      logger.warn({ requestId: request.id, code: ke.code, detail: ke.message }, 'TrueWallet request unavailable');
      reply.header('retry-after', '1');
      [status, detail, outcome] = [
        503,
        ke.code === 'JWKS_UNAVAILABLE' ? UNAVAILABLE_DETAILS.jwks : UNAVAILABLE_DETAILS.other,
        'unavailable',
      ];
    } else {
      if (ke.code !== 'INTERNAL') logger.error({ requestId: request.id, code: ke.code, err: ke }, 'TrueWallet request failed');
      [status, detail, outcome] = [500, `the keystore could not answer this request (request id ${request.id})`, 'error'];
    }
    request.walletOutcome = outcome;
    reply.code(status).send({ detail });
  };

  return (app) => {
    void app.register(
      async (plugin) => {
        const scope = plugin.withTypeProvider<ZodTypeProvider>();
        // Validation failures name their fields (the SDK's 400).
        scope.setValidatorCompiler(fieldValidatorCompiler);
        scope.decorateRequest('wallet', null);
        scope.decorateRequest('walletOutcome', null);
        scope.decorateRequest('walletHold', null);
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

        /**
         * The failure budget at admission: each request in flight holds one unit of its address's budget until
         * its outcome is counted, so the failures counted plus the requests in flight never pass the budget. The
         * hold is taken before the count is read and given back only after a failure is counted, so a request is
         * always seen in one or the other.
         */
        const held = new Map<string, number>();
        const hold = async (req: FastifyRequest) => {
          const key = clientKey(req);
          const n = (held.get(key) ?? 0) + 1;
          held.set(key, n);
          req.walletHold = { key, handling: false };
          const r = await failures(req, { increment: false });
          if (r.isAllowed) return; // (no allow list is configured)
          if (r.remaining === 0) throw new RateLimited('failures', r.ttlInSeconds);
          if (n > r.remaining) throw new RateLimited('concurrent', 1);
        };
        const release = (req: FastifyRequest) => {
          const h = req.walletHold;
          if (!h) return;
          req.walletHold = null;
          const n = (held.get(h.key) ?? 1) - 1;
          if (n > 0) held.set(h.key, n);
          else held.delete(h.key);
        };
        /** Counts a failure against the sender's budget (before the answer, so their next request sees it). */
        const counted = async (req: FastifyRequest, err: unknown) => {
          if (isFailure(err)) await failures(req).catch(() => undefined);
        };
        /** Runs a route's work: its failure is counted, then the hold released, when the work ends (not the answer). */
        const serve = async <T>(req: FastifyRequest, work: () => Promise<T>): Promise<T> => {
          if (req.walletHold) req.walletHold.handling = true;
          try {
            return await work();
          } catch (err) {
            await counted(req, err);
            throw err;
          } finally {
            release(req);
          }
        };

        /** A request the enclave served (so its JWT verified): it counts for its project, then its user's limit. */
        const served = async (req: FastifyRequest) => {
          await byProject(req);
          await take(byUser, req, 'user');
        };

        /** Before the body is read: the address's limits, then the project (401 unless an active JWT project). */
        const gate = async (request: FastifyRequest) => {
          await take(byAddress, request, 'address');
          await hold(request);
          let project: JwtProject;
          try {
            project = wallets.project((request.params as { projectKey: string }).projectKey);
          } catch (err) {
            await counted(request, err);
            throw err;
          }
          request.wallet = { project };
          (request.apiState as RequestState).principal = `project:${project.record.projectId}`;
          await peek(byProject, request, 'project');
        };

        /**
         * The user the JWT names (read, not verified: the enclave verifies). The user's limit is counted only once
         * the enclave has answered (`served`): before, it would tell a caller without the user's JWT that the
         * user is busy.
         */
        const userOf = (request: FastifyRequest, jwt: string): { project: JwtProject; subject: string } => {
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
          handler(request) {
            return serve(request, async () => {
              const { project, subject } = userOf(request, request.body.jwt_token);
              const { address } = await wallets.address(project, request.body.jwt_token, subject);
              await served(request);
              return { address };
            });
          },
        });
        scope.route({
          method: 'POST',
          ...route(`${WALLETS_PREFIX}/sign`),
          schema: { params: ProjectKeyParams, querystring: NoQuery, body: SignBody },
          handler(request) {
            return serve(request, async () => {
              const body = request.body;
              const { project, subject } = userOf(request, body.jwt_token);
              if (!project.record.allowedRequestTypes.includes('message'))
                throw new FieldErrors({ message_type: ['message signatures (EIP-191) are not allowed for this project'] });
              // EIP-191 over the 32 raw bytes of a hash (ethers `signMessage(getBytes(hash))`), or over the UTF-8 text.
              const signRequest = {
                type: 'message' as const,
                message: body.message_type === 'hash' ? { raw: body.message as `0x${string}` } : body.message,
              };
              const result = await wallets.sign(project, body.jwt_token, subject, signRequest);
              // Over the user's limit, the signature made is dropped (never answered).
              await served(request);
              return { signature: result.signature };
            });
          },
        });
        scope.route({
          method: 'POST',
          ...route(`${WALLETS_PREFIX}/sign-request`),
          schema: { params: ProjectKeyParams, querystring: NoQuery, body: SignRequestBody },
          handler(request) {
            return serve(request, async () => {
              const { jwt_token: jwt, request: signRequest } = request.body;
              const { project, subject } = userOf(request, jwt);
              const type = signRequest.type;
              if (!project.record.allowedRequestTypes.includes(type))
                throw new FieldErrors({ request: [`type ${type} is not allowed for this project`] });
              const result = await wallets.sign(project, jwt, subject, signRequest);
              await served(request);
              return result;
            });
          },
        });

        // A request answered without its route's work running (refused at admission, a bad body) gives its hold
        // back with the answer; one whose work runs gives it back when the work ends (serve), even after a timeout.
        scope.addHook('onSend', (request, _reply, payload, done) => {
          if (request.walletHold && !request.walletHold.handling) release(request);
          done(null, payload);
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
