/**
 * The operational listener (config `metrics`; docs/OPERATIONS.md, "Metrics"): `/metrics`, `/healthz` and `/readyz`
 * without a token, on loopback or a Unix socket, apart from the caller API, which no longer serves `/metrics`.
 * Its configuration refuses a non-loopback host (no token guards it), and its `/readyz` is the API's, shutting
 * down included. In process, over a real socket.
 */
import path from 'node:path';
import fs from 'node:fs';
import http from 'node:http';
import { captureLogger, tempRunDir } from '@nks/shared-test/helpers';
import { hashToken, TokenAuth } from '../src/api/auth';
import { ApiServer } from '../src/api/server';
import { PARENT_CONFIG_DEFAULTS, parseParentConfig } from '../src/config';
import { Metrics } from '../src/metrics';
import { MetricsServer } from '../src/metrics-server';
import { call } from './http-client';

const base = {
  api: { listen: { host: '127.0.0.1', port: 0 } },
  tokens: [{ name: 'admin', sha256: hashToken('nks_test_admin'), scopes: ['admin'] }],
  database: { path: '/nonexistent/keys.db' },
  kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
};

describe('metrics listener configuration', () => {
  it('listens on 127.0.0.1:9464 by default, on a Unix socket or nowhere when told', () => {
    expect(parseParentConfig(base).metrics).toEqual({ enabled: true, listen: { host: '127.0.0.1', port: 9464 } });
    expect(PARENT_CONFIG_DEFAULTS.metrics).toMatchObject({ host: '127.0.0.1', port: 9464 });
    expect(parseParentConfig({ ...base, metrics: { listen: { socket: '/run/nks/metrics.sock' } } }).metrics.listen).toEqual({
      socket: '/run/nks/metrics.sock',
      mode: '0660',
    });
    expect(parseParentConfig({ ...base, metrics: { enabled: false } }).metrics.enabled).toBe(false);
    expect(parseParentConfig({ ...base, metrics: { listen: { host: '::1', port: 0 } } }).metrics.listen).toEqual({ host: '::1', port: 0 });
  });

  it('refuses a host beyond loopback, and unknown or malformed fields, naming them', () => {
    expect(() => parseParentConfig({ ...base, metrics: { listen: { host: '0.0.0.0', port: 9464 } } })).toThrow(
      /config\.metrics\.listen\.host 0\.0\.0\.0 is not loopback; the metrics listener has no token/,
    );
    expect(() => parseParentConfig({ ...base, metrics: { listen: { port: 70000 } } })).toThrow(/config\.metrics\.listen/);
    expect(() => parseParentConfig({ ...base, metrics: { token: 'x' } })).toThrow(/config\.metrics/);
    expect(() => parseParentConfig({ ...base, metrics: { listen: { socket: '/x', mode: '777' } } })).toThrow(/config\.metrics\.listen/);
    // Disabled, the host does not matter: nothing listens.
    expect(parseParentConfig({ ...base, metrics: { enabled: false, listen: { host: '0.0.0.0', port: 1 } } }).metrics.enabled).toBe(false);
  });
});

describe('metrics listener', () => {
  let api: ApiServer;
  let server: MetricsServer;
  let apiUrl: string;
  let socket: string;
  let ready = true;
  const metrics = new Metrics({
    keyCounts: async () => ({ total: 3, disabled: 1, withoutRecord: 0, pending: 0 }),
    enclaveHealth: async () => null,
  });
  const get = (p: string, method = 'GET') =>
    new Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
      const req = http.request({ socketPath: socket, path: p, method }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      });
      req.on('error', reject);
      req.end();
    });

  beforeAll(async () => {
    const dir = tempRunDir('nks-metrics-');
    socket = path.join(dir, 'metrics.sock');
    const config = parseParentConfig({ ...base, metrics: { listen: { socket, mode: '0600' } } });
    api = new ApiServer({
      config: config.api,
      routes: () => undefined,
      auth: new TokenAuth(config.tokens),
      metrics,
      logger: captureLogger('debug').logger,
      accessLog: captureLogger('debug').logger,
      readiness: async () => ({ ready, checks: { enclave: ready } }),
    });
    apiUrl = await api.listen();
    server = new MetricsServer({ config: config.metrics, metrics, readiness: () => api.readiness() });
    expect(await server.listen()).toBe(`unix:${socket}`);
    expect(fs.statSync(socket).mode & 0o777).toBe(0o600);
  });
  afterAll(async () => {
    await server?.close();
    await api?.close(100);
  });

  it('serves the Prometheus text, health and readiness without a token; nothing else', async () => {
    const m = await get('/metrics');
    expect([m.status, m.headers['content-type'], m.headers['cache-control']]).toEqual([200, metrics.registry.contentType, 'no-store']);
    expect(m.body).toMatch(/^nks_keys\{state="enabled"\} 2$/m);
    expect(m.body).toMatch(/^nks_http_connections_dropped_total 0$/m);
    expect(await get('/healthz')).toMatchObject({ status: 200, body: '{"status":"ok"}' });
    expect(await get('/readyz?x=1')).toMatchObject({ status: 200, body: '{"status":"ready","checks":{"enclave":true}}' });
    ready = false;
    expect(await get('/readyz')).toMatchObject({ status: 503, body: '{"status":"not ready","checks":{"enclave":false}}' });
    ready = true;
    const other = await get('/v1/keys');
    expect([other.status, JSON.parse(other.body).error.code]).toEqual([404, 'NOT_FOUND']);
    const post = await get('/metrics', 'POST');
    expect([post.status, post.headers.allow, JSON.parse(post.body).error.code]).toEqual([405, 'GET', 'METHOD_NOT_ALLOWED']);
  });

  it('is the only place /metrics is served: the caller API answers 404 there, token or not', async () => {
    expect((await call(apiUrl, '/metrics')).body.error).toMatchObject({ code: 'NOT_FOUND', message: 'no route for /metrics' });
    expect((await call(apiUrl, '/metrics', { token: 'nks_test_admin' })).status).toBe(404);
    expect((await call(apiUrl, '/healthz')).status).toBe(200);
  });

  it('says not ready, shuttingDown, on both listeners once the API is stopping', async () => {
    api.shutdown();
    expect(await get('/readyz')).toMatchObject({
      status: 503,
      body: '{"status":"not ready","checks":{"enclave":true,"shuttingDown":true}}',
    });
    const onApi = await call(apiUrl, '/readyz');
    expect([onApi.status, onApi.body.checks.shuttingDown, onApi.headers.connection]).toEqual([503, true, 'close']);
    expect((await get('/metrics')).status).toBe(200);
  });
});
