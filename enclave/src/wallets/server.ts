/**
 * The enclave's HTTPS server for the wallet routes (docs/TLS.md): TLS ends here, with the key the TLS holder
 * made in the enclave, so the parent relays only ciphertext. It never listens on a port: connections come only
 * from the ingress listener (listener.ts), each past its preamble with the client address the relay reported.
 *
 * TLS: each connection gets a `tls.TLSSocket` in server mode with the holder's current credentials (none until
 * `tls.install`: every handshake then fails), TLS 1.2 at least, within `handshakeTimeoutMs`. The server makes
 * the socket itself, rather than an `https.Server` doing it, so it knows which connection, hence which client
 * address, each request came on: a TLSSocket over a stream that is not a TCP socket has no remote address.
 * Handshakes that fail, time out or are given up are counted. Renegotiation is refused (OpenSSL's
 * SSL_OP_NO_RENEGOTIATION): Node limits it only on the sockets a `tls.Server` makes, and each costs a handshake.
 *
 * HTTP: Fastify on a `node:http` server that is handed the TLS sockets, with the limits of `wallets`
 * (headers and request timeouts, keep-alive, requests per connection, header and body sizes), request ids
 * (`x-request-id`), one JSON body parser and the field validation of shared/src/http, and every answer in the
 * TrueWallet SDK's `{detail}` shape (answers.ts), 404 and 405 (with Allow) included. Routes: the wallet routes (routes.ts), `GET /v1/health`
 * (`{status, tls}`, nothing internal) and `GET /v1/tls/attestation?nonce=` (an attestation document binding the
 * serving key: user_data = tlsUserData(SPKI), attestation/user-data.ts). Every request of these routes, and of
 * the wallet routes with their CORS preflights, counts against one limit per client address (`perAddress`).
 *
 * It also tells the listener which connection has been idle the longest (`takeIdlest`): one past its handshake,
 * with a request answered and none in flight, in the order they became so.
 */
import http from 'node:http';
import { constants } from 'node:crypto';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import rateLimit, { normalizeIP, type CreateRateLimitOptions } from '@fastify/rate-limit';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { keystoreErrorOf } from '@nks/shared/http/errors';
import { KeystoreError } from '@nks/shared/errors';
import { bodyParser } from '@nks/shared/http/body';
import { documentedPath, fieldValidatorCompiler, parseQuery, pathMatcher } from '@nks/shared/http/validation';
import type { Logger } from '@nks/shared/log';
import { TLS_ATTESTATION_PATH, TLS_NONCE_RE, WALLETS_HEALTH_PATH } from '@nks/shared/tls-identity';
import type { EnclaveConfig } from '../config';
import type { NsmClient } from '../nsm/client';
import { answerOf, RateLimited } from './answers';
import type { WalletKeys } from './keys';
import { WALLET_ROUTES, walletRoutes, walletRoutesPrefix } from './routes';
import { requestIdOf } from '@nks/shared/http/request-id';

export type WalletsApp = FastifyInstance<http.Server, http.IncomingMessage, http.ServerResponse, FastifyBaseLogger, ZodTypeProvider>;

/** What the TLS holder (tls/holder.ts) serves with: a private key and its certificate chain, PEM. */
export interface TlsCredentials {
  key: string | Buffer;
  cert: string | Buffer;
}

/** The part of the TLS holder the server uses. */
export interface TlsSource {
  /** The installed credentials, or null before the first `tls.install`. */
  current(): TlsCredentials | null;
  /** Called with the new credentials on every install. */
  onChange(fn: (credentials: TlsCredentials | null) => void): void;
  /** The installed key's DER SubjectPublicKeyInfo, or null. */
  publicKeyDer(): Buffer | null;
}

/** The key a per-address limit counts: the preamble's client address, IPv6 by /64 (as @fastify/rate-limit does). */
export function addressKey(client: string): string {
  return client === 'unknown' ? client : normalizeIP(client);
}

/** A connection past its handshake, for choosing the one idle the longest. */
interface ConnectionState {
  /** What the listener handed over (its connection's stream). */
  stream: Duplex;
  /** Requests received and not yet answered (pipelined ones included). */
  inflight: number;
  /** Requests received. */
  requests: number;
}

/** The HTTPS server's counters (health: `wallets`). */
export interface WalletsStats {
  connections: number;
  connectionsRefused: number;
  connectionsEvicted: number;
  handshakeFailures: number;
  requests: Record<string, number>;
}

export class WalletCounters {
  connections = 0;
  connectionsRefused = 0;
  connectionsEvicted = 0;
  handshakeFailures = 0;
  readonly requests: Record<string, number> = {};

  snapshot(): WalletsStats {
    const { connections, connectionsRefused, connectionsEvicted, handshakeFailures } = this;
    return { connections, connectionsRefused, connectionsEvicted, handshakeFailures, requests: { ...this.requests } };
  }
}

export interface WalletsServerOptions {
  config: EnclaveConfig['wallets'];
  tls: TlsSource;
  nsm: Pick<NsmClient, 'attest'>;
  keys: WalletKeys;
  /** Whether the routes can be served now (health): the identity is unsealed and the store reachable. */
  ready: () => boolean;
  counters: WalletCounters;
  logger: Logger;
}

/** The path of a request target, without query or fragment. */
function pathOf(url: string): string {
  const end = url.search(/[?#]/);
  return end === -1 ? url : url.slice(0, end);
}

const AttestationQuery = z.strictObject({ nonce: z.string().regex(TLS_NONCE_RE, 'expected 8-64 bytes as hex (no 0x)') });

export class WalletsServer {
  private readonly http: http.Server;
  private readonly app: WalletsApp;
  private context: tls.SecureContext;
  /** The client address of each TLS socket (the preamble's), for the limits. */
  private readonly clients = new WeakMap<object, string>();
  private readonly sockets = new Set<tls.TLSSocket>();
  private readonly states = new WeakMap<object, ConnectionState>();
  /** The connections with no request in flight and one answered, the longest idle first (Map order). */
  private readonly idle = new Map<tls.TLSSocket, ConnectionState>();
  private readonly outcomes = new WeakMap<FastifyRequest, string>();
  /** Every route's method and documented path, for telling 405 (the path exists) from 404. */
  private readonly known: Array<{ method: string; matches: RegExp }> = [];

  constructor(private readonly options: WalletsServerOptions) {
    const { config } = options;
    this.context = this.secureContext(options.tls.current());
    options.tls.onChange((c) => {
      try {
        this.context = this.secureContext(c);
      } catch (err) {
        options.logger.error({ err }, 'the installed TLS credentials cannot be served; the previous ones stay');
      }
    });

    const server = http.createServer({
      maxHeaderSize: config.maxHeaderBytes,
      headersTimeout: config.headersTimeoutMs,
      requestTimeout: config.requestTimeoutMs,
      // How often the two timeouts above are checked: often enough that they hold to within a quarter.
      connectionsCheckingInterval: Math.min(1000, Math.max(25, Math.floor(config.headersTimeoutMs / 4))),
    });
    server.keepAliveTimeout = config.keepAliveTimeoutMs;
    // Node answers requests pipelined beyond it 503 (and says `max=` in Keep-Alive); busy() closes the connection.
    server.maxRequestsPerSocket = config.maxRequestsPerConnection;
    server.maxHeadersCount = 64;
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.busy(req, res));
    // A request Node would answer itself, without a 'request' event (so without the address limit or busy()):
    // an `Expect` other than 100-continue. Answered 417 and the connection closed, so no request escapes the
    // limits while its connection holds a slot. (Those past maxRequestsPerSocket follow one busy() closes on.)
    server.on('checkExpectation', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      const requests = options.counters.requests;
      requests.bad_request = (requests.bad_request ?? 0) + 1;
      res.writeHead(417, { connection: 'close', 'content-type': 'application/json' });
      res.end(JSON.stringify({ detail: 'the Expect header is not supported' }), () => res.socket?.destroy());
    });
    this.http = server;

    this.app = Fastify({
      serverFactory: (handler) => server.on('request', handler),
      genReqId: requestIdOf,
      requestIdHeader: false,
      bodyLimit: config.bodyLimit,
      // HEAD is 405 like any other method a path does not serve.
      exposeHeadRoutes: false,
      return503OnClosing: false,
      routerOptions: { querystringParser: parseQuery },
      // A path Fastify cannot route at all (a malformed escape, an over-long segment) is no route: 404.
      frameworkErrors: (_err, request, reply) => {
        this.begin(reply);
        this.answer(new KeystoreError('NOT_FOUND', `no route for ${pathOf(request.url).slice(0, 200)}`), request, reply);
      },
    }).withTypeProvider<ZodTypeProvider>();
    // Node's own answer to bytes that are not HTTP (a bare 400 and close), not Fastify's.
    server.removeAllListeners('clientError');
  }

  /** Registers the routes; the server then takes connections (`accept`). */
  async start(): Promise<void> {
    const { app, options } = this;
    const limits = options.config.rateLimits;
    app.setValidatorCompiler(fieldValidatorCompiler);
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', bodyParser(options.config.bodyLimit));
    app.setErrorHandler((err, request, reply) => this.answer(keystoreErrorOf(err, this.options.config.bodyLimit), request, reply));
    app.addHook('onRequest', (request, reply, done) => {
      this.begin(reply);
      if (!request.is404) return done();
      try {
        this.unmatched(request, reply);
      } catch (err) {
        done(err as Error);
      }
    });
    app.setNotFoundHandler((request) => {
      throw new KeystoreError('NOT_FOUND', `no route for ${pathOf(request.url).slice(0, 200)}`);
    });
    app.addHook('onResponse', (request, reply, done) => {
      const outcome = this.outcomes.get(request) ?? (reply.statusCode < 400 ? 'ok' : 'error');
      const requests = options.counters.requests;
      requests[outcome] = (requests[outcome] ?? 0) + 1;
      done();
    });

    await app.register(rateLimit, { global: false });
    const clientKey = (req: FastifyRequest) => this.clientKey(req);
    // One count per address for every request of every route (`cache`, the LRU size of its keys, is passed on to
    // the store, though the plugin's types leave it out).
    const byAddress = app.createRateLimit({
      max: limits.perAddress,
      timeWindow: limits.windowMs,
      keyGenerator: clientKey,
      cache: limits.maxTracked,
    } as CreateRateLimitOptions);
    const countAddress = async (request: FastifyRequest) => {
      const r = await byAddress(request);
      if (!r.isAllowed && r.isExceeded) throw new RateLimited('address', r.ttlInSeconds);
    };
    await app.register(walletRoutes({ keys: options.keys, limits, clientKey, countAddress }), { prefix: walletRoutesPrefix() });
    for (const path of WALLET_ROUTES) this.known.push({ method: 'POST', matches: pathMatcher(path) });

    app.get(WALLETS_HEALTH_PATH, { onRequest: countAddress }, async (_request, reply) => {
      // Whether the routes can answer, and nothing else: the operator's health is the parent's enclave.health.
      const ok = options.ready();
      reply.code(ok ? 200 : 503);
      return { status: ok ? 'ok' : 'unavailable', tls: 'installed' };
    });
    app.get(
      TLS_ATTESTATION_PATH,
      {
        schema: { querystring: AttestationQuery },
        onRequest: countAddress,
      },
      async (request) => {
        const spki = options.tls.publicKeyDer();
        if (!spki) throw new KeystoreError('UNAVAILABLE', 'no TLS key is installed');
        // The tag is this path's own; the caller's nonce goes in the `nonce` field, so the document is fresh.
        const document = await options.nsm.attest({
          tag: USER_DATA_TAGS.tls,
          content: spki,
          nonce: Buffer.from(request.query.nonce, 'hex'),
        });
        return { document: document.toString('base64'), publicKey: spki.toString('base64') };
      },
    );
    for (const path of [WALLETS_HEALTH_PATH, TLS_ATTESTATION_PATH]) this.known.push({ method: 'GET', matches: pathMatcher(path) });

    await app.ready();
    // Node checks headersTimeout and requestTimeout only on a server that has emitted 'listening' (it starts the
    // check then). This one never listens, its connections come from accept(): start the check all the same.
    this.http.emit('listening');
  }

  /**
   * A connection past its preamble (listener.ts): TLS within handshakeTimeoutMs, then HTTP. `client` is the
   * address the relay reported, what the per-address limits count.
   */
  accept(stream: Duplex, client: string): void {
    const socket = new tls.TLSSocket(stream, {
      isServer: true,
      secureContext: this.context,
      requestCert: false,
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    // Renegotiation is refused by the context (SSL_OP_NO_RENEGOTIATION). On a socket no tls.Server made, Node
    // applies neither its own limit nor this one (their errors go to a tls.Server only): a second line, should it.
    socket.disableRenegotiation();
    this.clients.set(socket, client);
    this.sockets.add(socket);
    let settled = false;
    const failed = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.options.counters.handshakeFailures += 1;
      socket.destroy();
    };
    const timer = setTimeout(failed, this.options.config.handshakeTimeoutMs);
    // Before the handshake, any error is its failure; after it, the HTTP server handles the socket's errors.
    socket.on('error', failed);
    socket.once('secure', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.states.set(socket, { stream, inflight: 0, requests: 0 });
      this.http.emit('connection', socket);
    });
    socket.once('close', () => {
      failed();
      this.sockets.delete(socket);
      this.idle.delete(socket);
    });
  }

  /**
   * Closes the connection idle the longest (a request answered, none in flight) and answers its stream, for the
   * listener to make room at `maxConnections`; null when no connection is idle. A connection whose next request
   * has begun to arrive but is not whole counts as idle (Node says which only to closeIdleConnections, for all).
   */
  takeIdlest(): Duplex | null {
    for (const [socket, state] of this.idle) {
      this.idle.delete(socket);
      if (socket.destroyed) continue;
      socket.destroy();
      return state.stream;
    }
    return null;
  }

  /** Closes every connection and the server. */
  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.http.closeAllConnections();
    // Not listening: close() only stops the timeout checks (and answers that it was not running).
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
    await this.app.close();
  }

  private secureContext(c: TlsCredentials | null): tls.SecureContext {
    return tls.createSecureContext({
      minVersion: 'TLSv1.2',
      // No renegotiation (TLS 1.2; 1.3 has none): OpenSSL answers a request with a no_renegotiation alert.
      secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
      ...(c ? { key: c.key, cert: c.cert } : {}),
    });
  }

  /** The key a per-address limit counts: the preamble's address (`addressKey`). */
  private clientKey(req: FastifyRequest): string {
    return addressKey(this.clients.get(req.raw.socket) ?? 'unknown');
  }

  /** A request arrived: its connection is busy until every request on it is answered (or it closes). */
  private busy(req: http.IncomingMessage, res: http.ServerResponse): void {
    const socket = req.socket as tls.TLSSocket;
    const state = this.states.get(socket);
    if (!state) return;
    state.inflight += 1;
    state.requests += 1;
    // The last one: answered with `Connection: close`, then the connection closed. (Node's maxRequestsPerSocket
    // says `Connection: close` but keeps the connection open.)
    if (state.requests >= this.options.config.maxRequestsPerConnection) res.shouldKeepAlive = false;
    this.idle.delete(socket);
    res.once('close', () => {
      state.inflight -= 1;
      if (state.inflight > 0 || socket.destroyed) return;
      this.idle.delete(socket);
      this.idle.set(socket, state);
    });
  }

  private begin(reply: FastifyReply): void {
    reply.header('x-request-id', reply.request.id);
    reply.header('cache-control', 'no-store');
  }

  /** No route for this method and path: 405 with Allow when the path has routes, else 404. */
  private unmatched(request: FastifyRequest, reply: FastifyReply): never {
    const path = pathOf(request.url);
    const methods = this.known.filter((r) => r.matches.test(path)).map((r) => r.method);
    if (methods.length === 0) throw new KeystoreError('NOT_FOUND', `no route for ${path.slice(0, 200)}`);
    reply.header('allow', [...new Set(methods)].join(', '));
    throw new KeystoreError('METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${path.slice(0, 200)}`);
  }

  /** Every error, in the SDK's format; a 503's or 500's reason goes to the log with the request id only. */
  private answer(ke: KeystoreError, request: FastifyRequest, reply: FastifyReply): void {
    // A body not read, or not all of it: close after answering rather than read the rest.
    if (ke.code === 'PAYLOAD_TOO_LARGE') {
      reply.header('connection', 'close');
      reply.raw.once('finish', () => request.raw.destroy());
    }
    const a = answerOf(ke, documentedPath(request.routeOptions.url ?? ''), request.id);
    const { logger } = this.options;
    if (a.log === 'warn') logger.warn({ requestId: request.id, code: ke.code, detail: ke.message }, 'wallet request unavailable');
    if (a.log === 'error')
      logger.error({ requestId: request.id, code: ke.code, err: ke.code === 'INTERNAL' ? (ke.cause ?? ke) : ke }, 'wallet request failed');
    if (a.retryAfterS !== undefined) reply.header('retry-after', String(a.retryAfterS));
    this.outcomes.set(request, a.outcome);
    reply.code(a.status).send({ detail: a.detail });
  }
}
