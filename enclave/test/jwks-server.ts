/**
 * An HTTPS server on loopback for JWKS tests: each path answers what the test sets (a body, a status, a
 * Cache-Control, a redirect, a delay, a body sent in chunks without a length), so each case has a URI of its own
 * (the enclave caches per exact URI). Its certificate names `names`, issued by a test CA the test chooses
 * (sim/src/idp/tls.ts), so one CA can serve a trusted server for localhost and one for another name.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TestCa } from '../../sim/src/idp/tls';

export interface JwksRoute {
  body?: unknown;
  status?: number;
  cacheControl?: string;
  redirectTo?: string;
  delayMs?: number;
  /** Sends the body in chunks of this size, without a Content-Length (chunked encoding). */
  chunked?: number;
}

export interface JwksServer {
  port: number;
  /** `https://localhost:<port><path>` (or another host name that resolves to loopback). */
  url(path: string, host?: string): string;
  /** Sets what `path` answers. */
  serve(path: string, route: JwksRoute): void;
  /** GET requests `path` has answered. */
  fetches(path: string): number;
  close(): Promise<void>;
}

export async function startJwksServer(ca: TestCa, names: string[] = ['localhost', '127.0.0.1']): Promise<JwksServer> {
  const { certPem, keyPem } = await ca.issueServer(names);
  const routes = new Map<string, JwksRoute>();
  const counts = new Map<string, number>();
  const timers = new Set<NodeJS.Timeout>();
  const server = https.createServer({ cert: certPem, key: keyPem }, (req, res) => {
    const path = req.url ?? '';
    const route = routes.get(path);
    counts.set(path, (counts.get(path) ?? 0) + 1);
    if (!route) {
      res.writeHead(404).end();
      return;
    }
    const answer = () => {
      if (route.redirectTo) {
        res.writeHead(302, { location: route.redirectTo }).end();
        return;
      }
      const body = typeof route.body === 'string' ? route.body : JSON.stringify(route.body ?? { keys: [] });
      const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': route.cacheControl ?? 'max-age=300' };
      if (!route.chunked) {
        res.writeHead(route.status ?? 200, headers).end(body);
        return;
      }
      res.writeHead(route.status ?? 200, headers);
      const bytes = Buffer.from(body);
      for (let at = 0; at < bytes.length; at += route.chunked) res.write(bytes.subarray(at, at + route.chunked));
      res.end();
    };
    if (!route.delayMs) return answer();
    const timer = setTimeout(() => {
      timers.delete(timer);
      answer();
    }, route.delayMs);
    timers.add(timer);
  });
  server.keepAliveTimeout = 1_000;
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
  return {
    port,
    url: (path, host = 'localhost') => `https://${host}:${port}${path}`,
    serve: (path, route) => void routes.set(path, route),
    fetches: (path) => counts.get(path) ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
