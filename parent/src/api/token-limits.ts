/**
 * Per-token rate limits (README.md, "Caller API"): each token's requests are counted in fixed windows of its
 * `rateLimit` (its own, else `tokenDefaults.rateLimit`; none: not counted), with @fastify/rate-limit's limiters as
 * the TrueWallet routes count theirs (enclave/src/wallets/routes.ts). Counted once the token is known and has the
 * route's scope, before the body is read: beyond `max`, 429 RATE_LIMITED with Retry-After (the seconds left in
 * the window). One token's requests never count against another's. A token keeps its count across a reload
 * (by name) and is counted with its new limit from its next request.
 */
import rateLimit, { type CreateRateLimitOptions } from '@fastify/rate-limit';
import type { FastifyRequest } from 'fastify';
import { KeystoreError } from '@nks/shared/errors';
import type { Principal } from './auth';
import type { ApiInstance } from './routes';

/** Tokens tracked at once (least recently used out): far more than any configuration lists. */
const MAX_TRACKED = 10_000;

/** The limit of the request's token, if it has one (none on the routes that need no token). */
const limitOf = (request: FastifyRequest): Principal['rateLimit'] => request.apiState?.token?.rateLimit ?? null;

export function tokenRateLimits(): (app: ApiInstance) => void {
  return (app) => {
    let limiter: ReturnType<ApiInstance['createRateLimit']> | undefined;
    void app.register(rateLimit, { global: false });
    app.after((err) => {
      if (err) throw err;
      const limit = (request: FastifyRequest) => limitOf(request) as NonNullable<Principal['rateLimit']>;
      // `cache` (the LRU size of the limiter's keys) is passed on to the store, though the plugin's types leave it out.
      limiter = app.createRateLimit({
        keyGenerator: (request) => (request.apiState?.token as Principal).name,
        max: (request) => limit(request).max,
        timeWindow: (request) => limit(request).windowMs,
        cache: MAX_TRACKED,
      } as CreateRateLimitOptions);
    });
    // After the route's own onRequest hooks (the token check) and before the body is read.
    app.addHook('preParsing', async (request, reply) => {
      if (limitOf(request) === null || !limiter) return;
      const r = await limiter(request);
      if (r.isAllowed || !r.isExceeded) return;
      const seconds = Math.max(1, r.ttlInSeconds);
      reply.header('retry-after', String(seconds));
      throw new KeystoreError(
        'RATE_LIMITED',
        `token "${r.key}" used its limit of ${r.max} requests per ${r.timeWindow / 1000} s; retry in ${seconds} s`,
      );
    });
    // A route whose one request stands for several (the batch sign route: `rateCost`, its requests) counts the rest
    // once its body is valid: the token's limit counts signatures, not HTTP requests. Over the limit, the whole
    // request is refused.
    app.addHook('preHandler', async (request, reply) => {
      const cost = request.routeOptions.config.rateCost?.(request.body) ?? 1;
      if (limitOf(request) === null || !limiter || cost <= 1) return;
      for (let i = 1; i < cost; i++) {
        const r = await limiter(request);
        if (r.isAllowed || !r.isExceeded) continue;
        const seconds = Math.max(1, r.ttlInSeconds);
        reply.header('retry-after', String(seconds));
        throw new KeystoreError(
          'RATE_LIMITED',
          `token "${r.key}" used its limit of ${r.max} requests per ${r.timeWindow / 1000} s (a batch counts each of its requests); retry in ${seconds} s`,
        );
      }
    });
  };
}
