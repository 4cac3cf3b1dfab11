/**
 * The caller API server: Fastify on HTTP/1.1 over loopback TCP or a Unix socket, optionally TLS. Per request:
 * a request id (echoed in `x-request-id`), an in-flight cap (503 OVERLOADED with Retry-After beyond it),
 * routing (404/405), bearer-token auth (401/403), a bounded JSON body (413/415/400), validation against the
 * route's schemas (400), a deadline (504), metrics and one access-log line without bodies or credentials.
 * `/healthz` and `/readyz` need no token (`/metrics` is on the operational listener: metrics-server.ts). Every error is `{"error": {"code", "message",
 * "retryable", "requestId", "details"?}}` with the status of its code (shared/src/errors.ts); Fastify's own errors are
 * mapped into it.
 *
 * The order of the checks is the documented one (parent/README.md): admission (the in-flight cap), then the
 * route (404/405), the token, the body, the schemas, and the handler under its deadline. A request refused for
 * overload is answered from the first hook, before its body is read or parsed (a long one is not read at all).
 *
 * Stopping (parent/README.md, "Stopping"): `shutdown()` turns `/readyz` 503 (`shuttingDown`) while every request
 * is still served, and answers then carry `connection: close`; `close()` stops accepting and answers every
 * request already received, on every connection still open, within `drainMs`.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import Fastify, {
  type FastifyReply,
  type FastifyRequest,
  type onRequestHookHandler,
  type preValidationHookHandler,
  type RouteOptions,
} from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { keystoreErrorOf } from '@nks/shared/http/errors';
import { KeystoreError, type ErrorCode } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import type { ParentConfig, Scope } from '../config';
import type { Metrics } from '../metrics';
import { TokenAuth, type Principal } from './auth';
import { bodyParser, hasBody, readJsonBody } from '@nks/shared/http/body';
import { trustedProxies } from './client-address';
import { NoQuery, type ApiInstance } from './routes';
import { openApi } from './openapi';
import { HealthAnswer, NotReadyAnswer, ReadinessAnswer, serializerCompiler } from './responses';
import type { Socket } from 'node:net';
import { documentedPath, parseQuery, pathMatcher, validatorCompiler } from '@nks/shared/http/validation';
import { walletsMoved, WALLETS_MOVED_LABEL, WALLETS_PATH_RE } from './wallets-moved';
import { requestIdOf } from '@nks/shared/http/request-id';

export interface ApiServerOptions {
  config: ParentConfig['api'];
  /** Registers the caller routes (routes.ts). */
  routes: (app: ApiInstance) => void;
  auth: TokenAuth;
  metrics: Metrics;
  logger: Logger;
  /** One line per request with fixed, safe fields only (request id, route, status, latency, token name). */
  accessLog: Logger;
  readiness: () => Promise<Readiness>;
  /** Where the wallet routes are served (`wallets.publicUrl`): named in the 421 of their paths here. */
  walletsPublicUrl?: string | undefined;
}

export interface Readiness {
  ready: boolean;
  checks: Record<string, boolean | string>;
}

/** What the server records about a request between its first hook and its answer. */
export interface RequestState {
  started: bigint;
  /** The metrics label: the route's documented path, or `unmatched` (not routed, or refused before routing). */
  route: string;
  /** The token's name once authenticated. */
  principal: string;
  /** The token's scopes once authenticated. */
  scopes?: ReadonlySet<Scope>;
  /** The token once authenticated: its projects and rate limit (routes.ts, token-limits.ts). */
  token?: Principal;
  /** The error code answered, if any. */
  code?: ErrorCode;
  finished: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    apiState: RequestState | null;
  }
}

interface KnownRoute {
  method: string;
  name: string;
  operational: boolean;
  matches: RegExp;
}

/**
 * How often Node checks open connections against the headers and request timeouts: every second, not its
 * default 30 s, so that a client trickling its headers (slowloris) is closed within about headersTimeoutMs.
 */
const CONNECTION_CHECKS = { connectionsCheckingInterval: 1000 };

/**
 * A request refused for overload whose declared body is at most this long keeps its connection: Node discards
 * the body unparsed (it came with the headers), which costs less than the client's reconnect — under overload,
 * closing every refused connection makes a reconnect storm that overflows the listen backlog (SYN retries of a
 * second and more). A longer body, or one of unknown length, is not waited for: the connection is closed.
 */
const OVERLOADED_DISCARD_MAX = 16 * 1024;

/** Routes whose requests are not written to the access log (scraped or polled constantly). */
const UNLOGGED = new Set(['/healthz']);

/** Characters of a path parameter (key id, project id) the router takes; a longer segment is no route (404). */
const MAX_PARAM_CHARS = 1024;

/** The path of a request target, without query or fragment. */
function pathOf(url: string): string {
  const end = url.search(/[?#]/);
  return end === -1 ? url : url.slice(0, end);
}

export class ApiServer {
  readonly server: http.Server | https.Server;
  private readonly app: ApiInstance;
  /** Every route in registration order, for telling 405 (the path exists) from 404. */
  private readonly known: KnownRoute[] = [];
  private inFlight = 0;
  /** From shutdown(): `/readyz` 503, and answers close their connection once it has no other request. */
  private shuttingDown = false;
  /** From close(): no new connections; each connection that goes idle is closed. */
  private closing = false;
  /** The last request received on each connection (its answer is the last one written there: pipelining is in order). */
  private readonly latest = new WeakMap<Socket, http.IncomingMessage>();
  private idleWaiters: Array<() => void> = [];
  /** The OpenAPI document's text (openapi.ts). */
  private readonly openApi: { document: () => string };

  constructor(private readonly options: ApiServerOptions) {
    const { config } = options;
    const tls = config.tls;
    const server = tls
      ? https.createServer({ ...CONNECTION_CHECKS, cert: fs.readFileSync(tls.certFile), key: fs.readFileSync(tls.keyFile) })
      : http.createServer(CONNECTION_CHECKS);
    // Receiving a whole request (headers and a body of at most maxBodyBytes) takes no longer than the deadline
    // of serving it; the headers alone, no longer than headersTimeoutMs (a slow client then gets 408 and is closed).
    server.requestTimeout = Math.max(config.requestTimeoutMs, config.headersTimeoutMs);
    server.headersTimeout = config.headersTimeoutMs;
    server.keepAliveTimeout = 5_000;
    server.maxHeadersCount = 64;
    // Beyond it, Node closes a new connection at once (counted: nks_http_connections_dropped_total).
    server.maxConnections = config.maxConnections;
    server.on('drop', () => options.metrics.connectionsDropped.inc());
    this.server = server;

    const trustProxy = trustedProxies(config.trustProxy);
    const app = Fastify({
      // The server above, with its timeouts and limits; listen() and close() manage it.
      serverFactory: (handler) => server.on('request', handler) as http.Server,
      // request.ip: X-Forwarded-For only from the configured proxies (client-address.ts).
      ...(trustProxy ? { trustProxy } : {}),
      genReqId: requestIdOf,
      requestIdHeader: false,
      // HEAD is 405 like any other method a path does not serve; a request received while stopping is served.
      exposeHeadRoutes: false,
      return503OnClosing: false,
      // A key id or project id of up to MAX_PARAM_CHARS characters is routed, so a malformed one is 400 after the
      // token like any other validation (Fastify's default, 100, answered a longer one 404 before the token).
      routerOptions: { querystringParser: parseQuery, maxParamLength: MAX_PARAM_CHARS },
      // A path Fastify cannot route at all (a malformed escape, a segment over MAX_PARAM_CHARS) is no route: 404.
      frameworkErrors: (err, request, reply) => this.unroutable(err, request, reply),
    }).withTypeProvider<ZodTypeProvider>();
    // Node's own answer to bytes that are not HTTP (a bare 400 and close), not Fastify's JSON outside the envelope.
    server.removeAllListeners('clientError');
    this.app = app;

    app.decorateRequest('apiState', null);
    app.setValidatorCompiler(validatorCompiler);
    app.setSerializerCompiler(serializerCompiler);
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', bodyParser(config.maxBodyBytes));
    app.setErrorHandler((err, request, reply) => this.answerError(err, request, reply));
    app.addHook('onRoute', (route) => this.equip(route));
    app.addHook('onRequest', (request, reply, done) => {
      this.begin(request, reply);
      if (WALLETS_PATH_RE.test(pathOf(request.url))) return this.walletsMoved(request, reply);
      if (!request.is404) return done();
      try {
        this.unmatched(request, reply);
      } catch (err) {
        done(err as Error);
      }
    });
    // Every answer passes here once its handler is done, errors and abandoned requests included (a request
    // whose caller hung up still counts until then): the request stops counting as in flight.
    app.addHook('onSend', (request, reply, payload, done) => {
      this.finish(request, reply);
      done(null, payload);
    });
    // Reached only if the onRequest hook did not answer 404/405.
    app.setNotFoundHandler((request) => {
      throw new KeystoreError('NOT_FOUND', `no route for ${pathOf(request.url).slice(0, 200)}`);
    });

    // @fastify/swagger first, loaded before the routes so that it sees them all (openapi.ts).
    this.openApi = openApi(app, NoQuery);
    app.after((err) => {
      if (err) throw err;
      this.operationalRoutes();
      options.routes(app);
    });
  }

  /** The OpenAPI document (`GET /v1/openapi.json`, docs/openapi.json) once every route is registered. */
  async openApiDocument(): Promise<string> {
    await this.app.ready();
    return this.openApi.document();
  }

  /** Resolves with a printable address once listening. */
  async listen(): Promise<string> {
    await this.app.ready();
    const l = this.options.config.listen;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      if ('socket' in l) {
        fs.rmSync(l.socket, { force: true });
        this.server.listen(l.socket, () => resolve());
      } else this.server.listen(l.port, l.host, () => resolve());
    });
    if ('socket' in l) {
      fs.chmodSync(l.socket, parseInt(l.mode, 8));
      return `unix:${l.socket}`;
    }
    const addr = this.server.address() as { port: number };
    return `${this.options.config.tls ? 'https' : 'http'}://${l.host.includes(':') ? `[${l.host}]` : l.host}:${addr.port}`;
  }

  /**
   * The first step of stopping: `/readyz` answers 503 with `shuttingDown` (so a load balancer stops sending),
   * everything else is served as before, and each answer that leaves its connection without a request closes it.
   */
  shutdown(): void {
    this.shuttingDown = true;
  }

  /**
   * Stops accepting connections and answers every request already received: Node closes the idle keep-alive
   * connections, every other one closes after its last answer (`connection: close`, or as soon as it is idle),
   * and requests that arrive on them meanwhile are served too. Once every connection is closed and no handler runs, or after `drainMs`, the
   * connections left are cut.
   */
  async close(drainMs: number): Promise<void> {
    this.shutdown();
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const idle = new Promise<void>((resolve) => (this.inFlight === 0 ? resolve() : this.idleWaiters.push(resolve)));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all([closed, idle]), new Promise((resolve) => (timer = setTimeout(resolve, drainMs)))]);
    clearTimeout(timer);
    this.server.closeAllConnections();
    await this.app.close();
  }

  /** The readiness checks, `shuttingDown` included once stopping: what `/readyz` answers here and on the metrics listener. */
  async readiness(): Promise<Readiness> {
    const r = await this.options.readiness();
    if (!this.shuttingDown) return r;
    return { ready: false, checks: { ...r.checks, shuttingDown: true } };
  }

  /** Health and readiness: no token, no deadline, and served while stopping or overloaded. */
  private operationalRoutes(): void {
    const config = (name: string) => ({ config: { name, operational: true } });
    this.app.get('/healthz', { ...config('/healthz'), schema: { response: { 200: HealthAnswer } } }, () => ({ status: 'ok' as const }));
    const readyz = { ...config('/readyz'), schema: { response: { 200: ReadinessAnswer, 503: NotReadyAnswer } } };
    this.app.get('/readyz', readyz, async (_request, reply) => {
      const r = await this.readiness();
      reply.code(r.ready ? 200 : 503);
      return { status: r.ready ? ('ready' as const) : ('not ready' as const), checks: r.checks };
    });
  }

  /**
   * Gives every route, as it is registered, what the API adds to it: its place in the 404/405 table, its
   * label and token check, and (caller routes) admission, the deadline and, for GET, the refusal of a body.
   */
  private equip(route: RouteOptions): void {
    const { scope, operational = false } = route.config ?? {};
    // @fastify/cors registers its preflight route (`OPTIONS <prefix>*`) itself: it is named by its URL, and
    // answers only preflights, so it is not in the 404/405 table (a POST to an unknown path there is 404).
    const preflight = route.config?.name === undefined && route.method === 'OPTIONS';
    const name = route.config?.name ?? (preflight ? documentedPath(route.url) : undefined);
    if (name === undefined) throw new Error(`route ${String(route.method)} ${route.url} has no config.name`);
    if (!preflight) for (const method of [route.method].flat()) this.known.push({ method, name, operational, matches: pathMatcher(name) });

    const auth = this.options.auth;
    const identify: onRequestHookHandler = (request, _reply, done) => {
      const state = request.apiState as RequestState;
      try {
        // Admission first: a refused request keeps the `unmatched` label, as when it was refused before routing.
        if (!operational) this.admit();
        state.route = name;
        if (scope) {
          const who = auth.authenticate(request.headers.authorization);
          state.principal = who.name;
          state.scopes = who.scopes;
          state.token = who;
          TokenAuth.authorize(who, scope);
        }
      } catch (err) {
        return done(err as Error);
      }
      done();
    };
    // First of the route's own hooks: a route's further checks run once admitted.
    route.onRequest = [identify, ...[route.onRequest ?? []].flat()];
    if (operational) return;

    const handler = route.handler;
    const deadline = this.options.config.requestTimeoutMs;
    route.handler = async function (request, reply) {
      return withDeadline(Promise.resolve(handler.call(this, request, reply)), deadline);
    };
    if (route.method === 'GET') route.preValidation = [...[route.preValidation ?? []].flat(), this.refuseBody];
  }

  /** A route without a body refuses one, so a misdirected payload is not silently ignored. */
  private readonly refuseBody: preValidationHookHandler = async (request) => {
    if (!hasBody(request.raw)) return;
    const body = await readJsonBody(request.raw, request.headers, this.options.config.maxBodyBytes);
    if (body !== undefined) throw new KeystoreError('INVALID_REQUEST', 'this route takes no request body');
  };

  private begin(request: FastifyRequest, reply: FastifyReply): void {
    request.apiState = { started: process.hrtime.bigint(), route: 'unmatched', principal: '-', finished: false };
    reply.header('x-request-id', request.id);
    reply.header('cache-control', 'no-store');
    this.inFlight += 1;
    this.options.metrics.inFlight.inc();
    const socket = request.raw.socket as Socket | null;
    if (socket) this.latest.set(socket, request.raw);
  }

  /** Refuses new work beyond the in-flight cap (the request itself counts). */
  private admit(): void {
    if (this.inFlight > this.options.config.maxInFlight) {
      this.options.metrics.overloaded.inc();
      throw new KeystoreError('OVERLOADED', `more than ${this.options.config.maxInFlight} requests in flight; retry shortly`);
    }
  }

  /** No route for this method and path: 405 with Allow when the path has routes, else 404. */
  private unmatched(request: FastifyRequest, reply: FastifyReply): never {
    const path = pathOf(request.url);
    const candidates = this.known.filter((r) => r.matches.test(path));
    const first = candidates[0];
    if (first?.operational) (request.apiState as RequestState).route = first.name;
    else this.admit();
    if (!first) throw new KeystoreError('NOT_FOUND', `no route for ${path.slice(0, 200)}`);
    reply.header('allow', [...new Set(candidates.map((r) => r.method))].join(', '));
    throw new KeystoreError('METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${first.name}`);
  }

  /**
   * 421 on the wallet routes' paths (wallets-moved.ts), any method, before anything else: the body (a user's
   * JWT) is never parsed. A small one is discarded unread by Node (the connection stays usable); one of unknown
   * length or over the limit is not waited for: the connection is closed after the answer.
   */
  private walletsMoved(request: FastifyRequest, reply: FastifyReply): void {
    (request.apiState as RequestState).route = WALLETS_MOVED_LABEL;
    const length = Number(request.headers['content-length'] ?? NaN);
    if (hasBody(request.raw) && !(length <= this.options.config.maxBodyBytes)) {
      reply.header('connection', 'close');
      reply.raw.once('finish', () => request.raw.destroy());
    }
    reply.code(421).send(walletsMoved(this.options.walletsPublicUrl));
  }

  /** Fastify's answer for paths its router rejects before any hook runs; recorded like any other request. */
  private unroutable(_err: Error, request: FastifyRequest, reply: FastifyReply): void {
    this.begin(request, reply);
    try {
      this.admit();
      throw new KeystoreError('NOT_FOUND', `no route for ${pathOf(request.url).slice(0, 200)}`);
    } catch (err) {
      this.answerError(err, request, reply);
    }
    this.finish(request, reply);
  }

  /**
   * The error envelope, for everything thrown anywhere in a request (Fastify's own errors mapped first).
   */
  private answerError(err: unknown, request: FastifyRequest, reply: FastifyReply): void {
    const ke = keystoreErrorOf(err, this.options.config.maxBodyBytes);
    if (request.apiState) request.apiState.code = ke.code;
    if (ke.code === 'INTERNAL') this.options.logger.error({ requestId: request.id, err: ke.cause ?? ke }, 'request failed unexpectedly');
    // A body not read, or not all of it (over the limit, refused by Fastify for a malformed Content-Type before
    // reading, or a long one refused for overload before anything was read): close after answering rather than
    // read the rest.
    if (
      ke.code === 'PAYLOAD_TOO_LARGE' ||
      (ke.code === 'OVERLOADED' && hasBody(request.raw) && !(Number(request.headers['content-length']) <= OVERLOADED_DISCARD_MAX)) ||
      (err as { code?: unknown } | null)?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
    ) {
      reply.header('connection', 'close');
      reply.raw.once('finish', () => request.raw.destroy());
    }
    if (ke.httpStatus === 503) reply.header('retry-after', '1');
    if (ke.code === 'UNAUTHORIZED') reply.header('www-authenticate', 'Bearer');
    // `details` only when the error has them: a validation failure's problems (`[{path, expected, received}]`),
    // or facts for programs (POLICY_DENIED: the rule or limit and the reason; KEY_STATE: the state).
    const details = ke.issues ? { details: ke.issues } : ke.details ? { details: ke.details } : {};
    reply
      .code(ke.httpStatus)
      .send({ error: { code: ke.code, message: ke.message, retryable: ke.retryable, requestId: request.id, ...details } });
  }

  /** Once per request, when its answer is sent: in-flight count, metrics, the access-log line, drain waiters. */
  private finish(request: FastifyRequest, reply: FastifyReply): void {
    const state = request.apiState;
    if (!state || state.finished) return;
    state.finished = true;
    this.inFlight -= 1;
    this.options.metrics.inFlight.dec();
    // Stopping: the connection closes after the answer to its last request (the answers to the requests pipelined
    // before it are written first, whatever order their handlers finish in).
    const socket = request.raw.socket as Socket | null;
    if (this.shuttingDown && socket && this.latest.get(socket) === request.raw && !reply.raw.headersSent)
      reply.header('connection', 'close');
    // Closing: a connection whose last answer went out before the signal goes idle once this one is written.
    if (this.closing) reply.raw.once('finish', () => setImmediate(() => this.server.closeIdleConnections()));
    const seconds = Number(process.hrtime.bigint() - state.started) / 1e9;
    const status = reply.statusCode;
    const labels = { route: state.route, method: request.method, status: String(status) };
    this.options.metrics.httpRequests.inc(labels);
    this.options.metrics.httpDuration.observe(labels, seconds);
    if (!UNLOGGED.has(state.route)) {
      const { route, principal, code } = state;
      this.options.accessLog.info(
        {
          requestId: request.id,
          method: request.method,
          route,
          status,
          ms: Math.round(seconds * 1e4) / 10,
          principal,
          ...(code ? { code } : {}),
        },
        'request',
      );
    }
    if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
  }
}

function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new KeystoreError('TIMEOUT', `the request did not complete within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
