/**
 * The caller API server: HTTP/1.1 over loopback TCP or a Unix socket, optionally TLS. Per request: a request
 * id (echoed in `x-request-id`), an in-flight cap (503 OVERLOADED with Retry-After beyond it), routing
 * (404/405), bearer-token auth (401/403), a bounded JSON body (413/415/400), a deadline (504), metrics and one
 * log line without bodies or credentials. `/healthz`, `/readyz` and `/metrics` need no token.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import { KeystoreError } from '../../../shared/src/errors';
import type { Logger } from '../../../shared/src/log';
import type { ParentConfig } from '../config';
import type { Metrics } from '../metrics';
import { TokenAuth } from './auth';
import { readJsonBody, sendError, sendJson } from './http';
import type { Route } from './routes';

export interface ApiServerOptions {
  config: ParentConfig['api'];
  routes: Route[];
  auth: TokenAuth;
  metrics: Metrics;
  logger: Logger;
  /** One line per request with fixed, safe fields only (request id, route, status, latency, token name). */
  accessLog: Logger;
  readiness: () => Promise<{ ready: boolean; checks: Record<string, boolean | string> }>;
}

const REQUEST_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

export class ApiServer {
  readonly server: http.Server;
  private inFlight = 0;
  private draining = false;
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly options: ApiServerOptions) {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void this.handle(req, res);
    const tls = options.config.tls;
    this.server = tls ? https.createServer({ cert: fs.readFileSync(tls.certFile), key: fs.readFileSync(tls.keyFile) }, handler) : http.createServer(handler);
    this.server.requestTimeout = options.config.requestTimeoutMs + 5_000;
    this.server.headersTimeout = 10_000;
    this.server.keepAliveTimeout = 5_000;
    this.server.maxHeadersCount = 64;
  }

  /** Resolves with a printable address once listening. */
  async listen(): Promise<string> {
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

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const incoming = req.headers['x-request-id'];
    const requestId = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.setHeader('x-request-id', requestId);
    const url = new URL(req.url ?? '/', 'http://api');
    const method = req.method ?? 'GET';
    let routeName = 'unmatched';
    let status = 500;
    let principal = '-';
    let reason: string | undefined;
    this.inFlight += 1;
    this.options.metrics.inFlight.inc();
    try {
      if (url.pathname === '/healthz' || url.pathname === '/readyz' || url.pathname === '/metrics') {
        routeName = url.pathname;
        status = await this.serveOperational(url.pathname, method, res);
        return;
      }
      if (this.draining) throw new KeystoreError('UNAVAILABLE', 'the service is shutting down');
      if (this.inFlight > this.options.config.maxInFlight) {
        this.options.metrics.overloaded.inc();
        throw new KeystoreError('OVERLOADED', `more than ${this.options.config.maxInFlight} requests in flight; retry shortly`);
      }
      const candidates = this.options.routes.filter((r) => r.pattern.test(url.pathname));
      if (candidates.length === 0) throw new KeystoreError('NOT_FOUND', `no route for ${url.pathname.slice(0, 200)}`);
      const route = candidates.find((r) => r.method === method);
      if (!route) {
        res.setHeader('allow', [...new Set(candidates.map((r) => r.method))].join(', '));
        throw new KeystoreError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${candidates[0]?.name}`);
      }
      routeName = route.name;
      if (route.scope) {
        const who = this.options.auth.authenticate(req.headers.authorization);
        principal = who.name;
        TokenAuth.authorize(who, route.scope);
      }
      const body = route.body ? await readJsonBody(req, this.options.config.maxBodyBytes) : await this.refuseBody(req);
      const keyId = route.pattern.exec(url.pathname)?.[1];
      const params: Record<string, string> = keyId ? { keyId } : {};
      const result = await this.withDeadline(Promise.resolve(route.handle({ params, query: url.searchParams, body })));
      status = result.status;
      sendJson(res, result.status, result.body);
    } catch (err) {
      const ke = sendError(res, err, requestId);
      status = ke.httpStatus;
      reason = ke.code;
      if (ke.code === 'INTERNAL') this.options.logger.error({ requestId, err: ke.cause ?? ke }, 'request failed unexpectedly');
      if (ke.code === 'PAYLOAD_TOO_LARGE') res.on('finish', () => req.destroy()); // do not read the rest
    } finally {
      this.inFlight -= 1;
      this.options.metrics.inFlight.dec();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const labels = { route: routeName, method, status: String(status) };
      this.options.metrics.httpRequests.inc(labels);
      this.options.metrics.httpDuration.observe(labels, seconds);
      if (routeName !== '/metrics' && routeName !== '/healthz') {
        this.options.accessLog.info({ requestId, method, route: routeName, status, ms: Math.round(seconds * 1e4) / 10, principal, ...(reason ? { reason } : {}) }, 'request');
      }
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** Routes without a body refuse one, so a misdirected payload is not silently ignored. */
  private async refuseBody(req: http.IncomingMessage): Promise<undefined> {
    const body = await readJsonBody(req, this.options.config.maxBodyBytes);
    if (body !== undefined) throw new KeystoreError('INVALID_REQUEST', 'this route takes no request body');
    return undefined;
  }

  private withDeadline<T>(p: Promise<T>): Promise<T> {
    const ms = this.options.config.requestTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new KeystoreError('TIMEOUT', `the request did not complete within ${ms} ms`)), ms);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
  }

  private async serveOperational(path: string, method: string, res: http.ServerResponse): Promise<number> {
    if (method !== 'GET') {
      res.setHeader('allow', 'GET');
      throw new KeystoreError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
    }
    if (path === '/healthz') {
      sendJson(res, 200, { status: 'ok' });
      return 200;
    }
    if (path === '/readyz') {
      const r = await this.options.readiness();
      const status = r.ready && !this.draining ? 200 : 503;
      sendJson(res, status, { status: status === 200 ? 'ready' : 'not ready', checks: { ...r.checks, ...(this.draining ? { shuttingDown: true } : {}) } });
      return status;
    }
    const text = await this.options.metrics.render();
    res.writeHead(200, { 'content-type': this.options.metrics.registry.contentType });
    res.end(text);
    return 200;
  }

  /** Stops accepting, waits up to `drainMs` for in-flight requests, then closes every connection. */
  async close(drainMs: number): Promise<void> {
    this.draining = true;
    this.server.close();
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, drainMs);
        this.idleWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    this.server.closeAllConnections();
  }
}
