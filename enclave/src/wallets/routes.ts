/**
 * The TrueWallet API (docs/PROJECTS.md, "The TrueWallet API"), served by the enclave over TLS that ends here
 * (docs/TLS.md): what the TrueWallet SDK's JWT signer calls, `POST /v1/{projectKey}/wallets/get-address | sign |
 * sign-request`, for JWT projects only. No bearer token: the user's JWT in the body is the authorization, and the
 * enclave verifies it on every call; the parent relays ciphertext and never sees it. The key lifecycle
 * (docs/PROTOCOL.md, "Key lifecycle"): `POST …/wallets/rotate | activate | cancel {jwt_token}` → `{address}` of
 * the pending successor made, the key now active, the key cancelled. Their JWT must be for exactly that change
 * (claim `nks_action`, a lifetime of at most LIFECYCLE_MAX_TOKEN_LIFETIME_S; auth/jwt.ts), refused as any other
 * JWT (400 `jwt_token`, counted as a failure) otherwise: an ordinary login token changes no key. Activate names
 * the `address` it activates (the one rotate answered, which the user registered on chain) and cancel may: the
 * store (the parent) says which key is pending, and may hold another successor of the user's than that one.
 *
 * Every request, CORS preflights included, is first counted against its client address's request limit (the
 * server's one count for all its routes, server.ts; the address is the one the ingress relay's preamble names:
 * listener.ts), before anything asks the store for the project: over it, 403 without CORS headers.
 *
 * In its own Fastify scope, so that only these routes get:
 * - CORS (@fastify/cors): exactly the project's `allowedOrigins`, methods POST, header content-type, no
 *   credentials; a preflight from any other origin is not answered (404), and other origins get no
 *   Access-Control-Allow-Origin;
 * - rate limits (@fastify/rate-limit's limiters, in fixed windows, least recently used keys out): failures (401,
 *   and 400 for the JWT) per client address, so invalid tokens lock out their sender and not the user they name,
 *   with each request in flight holding one unit of its address's failure budget until its outcome is known (a
 *   concurrent burst cannot get past the budget); and per project and per user, counted once the JWT has
 *   verified and the vault has answered, so nobody spends a user's or a project's quota, or learns whether a user
 *   is busy, without that user's valid JWT. 403 + Retry-After.
 * Their errors are answered by the server in the SDK's format (answers.ts).
 */
import cors, { type FastifyCorsOptions } from '@fastify/cors';
import type { CreateRateLimitOptions } from '@fastify/rate-limit';
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { KeystoreError } from '@nks/shared/errors';
import { FieldErrors, ProjectKeyParams, requestBody, routeUrl } from '@nks/shared/http/validation';
import { JWT_MAX_BYTES, LIFECYCLE_ACTIONS, type LifecycleAction } from '@nks/shared/project-auth';
import { SignRequestSchema } from '@nks/shared/signing/schema';
import { WALLETS_PREFIX } from '@nks/shared/tls-identity';
import type { EnclaveConfig } from '../config';
import { RateLimited, type LimitName } from './answers';
import { jwtProjectOf, type JwtProject, type WalletKeys, type WalletProject } from './keys';
import type { WalletsApp } from './server';

export interface WalletRoutesOptions {
  keys: WalletKeys;
  limits: EnclaveConfig['wallets']['rateLimits'];
  /** The key a client-address limit counts by (the preamble's address, IPv6 by /64). */
  clientKey: (req: FastifyRequest) => string;
  /** Counts a request against its address's limit, and refuses it beyond (RateLimited). */
  countAddress: (req: FastifyRequest) => Promise<void>;
}

/** The documented paths of the routes (the server's 404/405 table). */
export const WALLET_ROUTES: readonly string[] = [
  `${WALLETS_PREFIX}/get-address`,
  `${WALLETS_PREFIX}/sign`,
  `${WALLETS_PREFIX}/sign-request`,
  ...LIFECYCLE_ACTIONS.map((action) => `${WALLETS_PREFIX}/${action}`),
];

/** A request's hold on one unit of its address's failure budget, from admission until its outcome is counted. */
interface Reservation {
  key: string;
  /** While the handler runs (it may outlive the answer, the caller gone): it releases the hold itself. */
  handling: boolean;
}

/** What a request of these routes carries between its hooks: its project (once its key is known) and user. */
interface WalletRequest {
  project?: JwtProject;
  subject?: string;
  hold?: Reservation | null;
}

const jwtToken = z.string().min(1, 'expected a JWT').max(JWT_MAX_BYTES, `expected a JWT of at most ${JWT_MAX_BYTES} bytes`);
const GetAddressBody = z.strictObject({ jwt_token: jwtToken });
const addressField = z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'expected an address, 0x and 40 hex digits');
const LifecycleBodies = {
  rotate: GetAddressBody,
  activate: z.strictObject({ jwt_token: jwtToken, address: addressField }),
  cancel: z.strictObject({ jwt_token: jwtToken, address: addressField.optional() }),
} as const;

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
// The request as the caller sent it: parsed (integers as bigints) once the project's rules are checked.
const SignRequestBody = requestBody(z.strictObject({ jwt_token: jwtToken, request: SignRequestSchema }), { asSent: true });
const NoQuery = z.strictObject({});

/** What spends the sender's failure budget: an unknown or unusable project key (401), a JWT refused (400). */
function isFailure(err: unknown): boolean {
  if (!(err instanceof KeystoreError) || err instanceof RateLimited) return false;
  // FORBIDDEN from the vault: a JWT that verified but is not of this key's user or project.
  return err.code === 'INVALID_JWT' || err.code === 'FORBIDDEN' || err.code === 'UNAUTHORIZED';
}

export function walletRoutes(options: WalletRoutesOptions): (app: WalletsApp) => Promise<void> {
  const { keys, limits, clientKey, countAddress } = options;
  const requests = new WeakMap<FastifyRequest, WalletRequest>();
  const stateOf = (req: FastifyRequest): WalletRequest => {
    let s = requests.get(req);
    if (!s) requests.set(req, (s = {}));
    return s;
  };
  /** The path's project, asked of the store once per request (CORS and the gate both need it). */
  const lookups = new WeakMap<FastifyRequest, Promise<WalletProject | null>>();
  const projectOf = (req: FastifyRequest): Promise<WalletProject | null> => {
    let p = lookups.get(req);
    if (!p) lookups.set(req, (p = keys.project((req.params as { projectKey: string }).projectKey)));
    return p;
  };

  return async (scope) => {
    // Registered before CORS, whose delegator asks the store for the project: a request over its address's
    // limit, a preflight included, costs no store call.
    scope.addHook('onRequest', countAddress);

    // The browser origins of the project the path names (its record's allowedOrigins); none for an unknown key.
    const corsFor = async (req: FastifyRequest): Promise<FastifyCorsOptions> => {
      const origin = req.headers.origin;
      let allowed = false;
      if (typeof origin === 'string') {
        try {
          const project = await projectOf(req);
          allowed = project !== null && project.record.allowedOrigins.includes(origin);
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
    await scope.register(cors, { hook: 'onRequest', delegator: corsFor });

    // `cache` (the LRU size of a limiter's keys) is passed on to the store, though the plugin's types leave it out.
    const limiter = (max: number, keyGenerator: (req: FastifyRequest) => string) =>
      scope.createRateLimit({ max, timeWindow: limits.windowMs, keyGenerator, cache: limits.maxTracked } as CreateRateLimitOptions);
    const failures = limiter(limits.failuresPerAddress, clientKey);
    const byProject = limiter(limits.perProject, (req) => (stateOf(req).project as JwtProject).record.projectId);
    const byUser = limiter(limits.perUser, (req) => {
      const w = stateOf(req);
      return `${(w.project as JwtProject).record.projectId}\n${w.subject ?? ''}`;
    });
    type Limiter = typeof failures;
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
     * The failure budget at admission: each request in flight holds one unit of its address's budget until its
     * outcome is counted, so the failures counted plus the requests in flight never pass the budget. The hold is
     * taken before the count is read and given back only after a failure is counted, so a request is always seen
     * in one or the other.
     */
    const held = new Map<string, number>();
    const hold = async (req: FastifyRequest) => {
      const key = clientKey(req);
      const n = (held.get(key) ?? 0) + 1;
      held.set(key, n);
      stateOf(req).hold = { key, handling: false };
      const r = await failures(req, { increment: false });
      if (r.isAllowed) return; // (no allow list is configured)
      if (r.remaining === 0) throw new RateLimited('failures', r.ttlInSeconds);
      if (n > r.remaining) throw new RateLimited('concurrent', 1);
    };
    const release = (req: FastifyRequest) => {
      const w = stateOf(req);
      const h = w.hold;
      if (!h) return;
      w.hold = null;
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
      const h = stateOf(req).hold;
      if (h) h.handling = true;
      try {
        return await work();
      } catch (err) {
        await counted(req, err);
        throw err;
      } finally {
        release(req);
      }
    };

    /** A request the vault served (so its JWT verified): it counts for its project, then its user's limit. */
    const served = async (req: FastifyRequest) => {
      await byProject(req);
      await take(byUser, req, 'user');
    };

    /**
     * Before the body is read (and after the address's request count): the failure budget, then the project
     * (401 unless an active JWT project).
     */
    const gate = async (request: FastifyRequest) => {
      await hold(request);
      let project: JwtProject;
      try {
        project = jwtProjectOf(await projectOf(request));
      } catch (err) {
        await counted(request, err);
        throw err;
      }
      stateOf(request).project = project;
      await peek(byProject, request, 'project');
    };

    /**
     * The user the JWT proves, verified here (auth/jwt.ts) before the store is asked for their key. The user's
     * limit is counted only once the vault has answered (`served`): before, it would tell a caller without the
     * user's JWT that the user is busy.
     */
    const userOf = async (
      request: FastifyRequest,
      jwt: string,
      action?: LifecycleAction,
    ): Promise<{ project: JwtProject; subject: string }> => {
      const w = stateOf(request);
      const project = w.project as JwtProject;
      w.subject = await keys.subjectOf(project, jwt, action);
      return { project, subject: w.subject };
    };

    const route = (path: string) => ({ url: path.slice(WALLETS_PREFIX.length), onRequest: gate });

    scope.route({
      method: 'POST',
      ...route(`${WALLETS_PREFIX}/get-address`),
      schema: { params: ProjectKeyParams, querystring: NoQuery, body: GetAddressBody },
      handler(request) {
        return serve(request, async () => {
          const { project, subject } = await userOf(request, request.body.jwt_token);
          const { address } = await keys.address(project, request.body.jwt_token, subject);
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
          const { project, subject } = await userOf(request, body.jwt_token);
          if (!project.record.allowedRequestTypes.includes('message'))
            throw new FieldErrors({ message_type: ['message signatures (EIP-191) are not allowed for this project'] });
          // EIP-191 over the 32 raw bytes of a hash (ethers `signMessage(getBytes(hash))`), or over the UTF-8 text.
          const signRequest = SignRequestSchema.parse({
            type: 'message',
            message: body.message_type === 'hash' ? { raw: body.message } : body.message,
          });
          const result = await keys.sign(project, body.jwt_token, subject, signRequest);
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
          const { jwt_token: jwt, request: sent } = request.body;
          const { project, subject } = await userOf(request, jwt);
          const type = sent.type;
          if (!project.record.allowedRequestTypes.includes(type))
            throw new FieldErrors({ request: [`type ${type} is not allowed for this project`] });
          const result = await keys.sign(project, jwt, subject, SignRequestSchema.parse(sent));
          await served(request);
          return result;
        });
      },
    });

    // `…/wallets/{action}` for each lifecycle action: WalletKeys' method of that name, with a JWT for it.
    for (const action of LIFECYCLE_ACTIONS) {
      scope.route({
        method: 'POST',
        ...route(`${WALLETS_PREFIX}/${action}`),
        schema: { params: ProjectKeyParams, querystring: NoQuery, body: LifecycleBodies[action] },
        handler(request) {
          return serve(request, async () => {
            const body = request.body as { jwt_token: string; address?: string };
            // The JWT must be for this change before the store is asked anything about the user's keys.
            const { project, subject } = await userOf(request, body.jwt_token, action);
            const { address } = await keys[action](project, body.jwt_token, subject, body.address);
            await served(request);
            return { address };
          });
        },
      });
    }

    // A request answered without its route's work running (refused at admission, a bad body) gives its hold
    // back with the answer; one whose work runs gives it back when the work ends (serve), even after its caller left.
    scope.addHook('onSend', (request, _reply, payload, done) => {
      const h = requests.get(request)?.hold;
      if (h && !h.handling) release(request);
      done(null, payload);
    });
  };
}

/** The Fastify URL prefix the routes are registered under (`/v1/:projectKey(…)/wallets`). */
export const walletRoutesPrefix = (): string => routeUrl(WALLETS_PREFIX);
