/**
 * The operational listener (config `metrics`): `GET /metrics` (Prometheus text), `/healthz` and `/readyz`, with
 * no token, on loopback TCP (127.0.0.1:9464 by default) or a Unix socket. The caller API does not serve
 * `/metrics`: what needs no token is reachable only where the operator puts this listener (docs/OPERATIONS.md,
 * "Metrics"). `/healthz` and `/readyz` answer as on the caller API (load balancers poll those there).
 * Anything else: 404; another method: 405 with Allow. Nothing here reads a request body.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { MetricsConfig } from './config';
import type { Metrics } from './metrics';
import type { Readiness } from './api/server';

export interface MetricsServerOptions {
  config: MetricsConfig;
  metrics: Metrics;
  readiness: () => Promise<Readiness>;
}

const PATHS = new Set(['/metrics', '/healthz', '/readyz']);

export class MetricsServer {
  readonly server: http.Server;

  constructor(private readonly options: MetricsServerOptions) {
    this.server = http.createServer((req, res) => void this.answer(req, res));
    this.server.headersTimeout = 5_000;
    this.server.requestTimeout = 10_000;
    this.server.keepAliveTimeout = 5_000;
    this.server.maxHeadersCount = 32;
    // A scraper or two, not the public: a small bound on connections.
    this.server.maxConnections = 64;
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
    const { port } = this.server.address() as { port: number };
    return `http://${l.host.includes(':') ? `[${l.host}]` : l.host}:${port}`;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...extra });
      res.end(body);
    };
    const json = (status: number, body: unknown, extra?: Record<string, string>) =>
      send(status, 'application/json; charset=utf-8', JSON.stringify(body), extra);
    const path = (req.url ?? '/').split(/[?#]/)[0] ?? '/';
    try {
      if (!PATHS.has(path)) return json(404, { error: { code: 'NOT_FOUND', message: 'no such path on the metrics listener' } });
      if (req.method !== 'GET')
        return json(405, { error: { code: 'METHOD_NOT_ALLOWED', message: `${req.method} is not allowed on ${path}` } }, { allow: 'GET' });
      if (path === '/healthz') return json(200, { status: 'ok' });
      if (path === '/readyz') {
        const r = await this.options.readiness();
        return json(r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not ready', checks: r.checks });
      }
      const m = this.options.metrics;
      send(200, m.registry.contentType, await m.render());
    } catch {
      if (!res.headersSent) json(500, { error: { code: 'INTERNAL', message: 'the metrics could not be rendered' } });
      else res.destroy();
    }
  }
}
