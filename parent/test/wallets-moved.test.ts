/**
 * The wallet routes are the enclave's (docs/TLS.md): the parent's API answers every request under
 * `/v1/{projectKey}/wallets` 421 with where they are served, whatever the method, from its first hook, so the
 * body (a user's JWT) is never read. Shown from outside: a body that never ends still gets its answer, a body
 * over the size limit gets 421 and not 413, and a marker JWT sent in the body and the headers is in no log line.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { captureLogger, waitFor, type CapturedLogger } from '@nks/shared-test/helpers';
import { hashToken, TokenAuth } from '../src/api/auth';
import { callerRoutes } from '../src/api/routes';
import { ApiServer } from '../src/api/server';
import { parseParentConfig } from '../src/config';
import type { KeyRegistry } from '../src/key-registry';
import { Metrics } from '../src/metrics';
import { call } from './http-client';

const TOKEN = 'nks_test_admin';
const PUBLIC_URL = 'https://wallets.example.com';
const MARKER = `eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.MARKER${randomBytes(12).toString('hex')}`;
const KEY = `pk_${'A'.repeat(22)}`;

describe('the wallet paths on the parent API', () => {
  let server: ApiServer;
  let url: string;
  let log: CapturedLogger;
  let access: CapturedLogger;
  let metrics: Metrics;

  const start = async (publicUrl: string | undefined) => {
    const config = parseParentConfig({
      api: { listen: { host: '127.0.0.1', port: 0 }, maxBodyBytes: 4096 },
      tokens: [{ name: 'admin', sha256: hashToken(TOKEN), scopes: ['admin'] }],
      database: { path: '/nonexistent/keys.db' },
      kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
    });
    log = captureLogger('debug');
    access = captureLogger('debug');
    metrics = new Metrics({
      keyCounts: async () => ({ total: 0, disabled: 0, withoutRecord: 0, pending: 0 }),
      enclaveHealth: async () => null,
    });
    // The caller routes are registered as in the daemon; no request here reaches their registry.
    server = new ApiServer({
      config: config.api,
      routes: callerRoutes({} as KeyRegistry),
      auth: new TokenAuth(config.tokens),
      metrics,
      logger: log.logger,
      accessLog: access.logger,
      readiness: async () => ({ ready: true, checks: {} }),
      walletsPublicUrl: publicUrl,
    });
    url = await server.listen();
  };
  afterEach(async () => {
    await server?.close(100);
  });

  /** Every log line of both loggers, as text. */
  const logged = () => log.text() + access.text();

  it('answers 421 with the public URL on every wallet path and method', async () => {
    await start(PUBLIC_URL);
    const moved = { detail: `the wallet routes are served by the enclave over TLS at ${PUBLIC_URL}`, url: PUBLIC_URL };
    for (const route of ['get-address', 'sign', 'sign-request', 'verify', 'a/b/c', '']) {
      for (const method of ['POST', 'GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
        const res = await call(url, `/v1/${KEY}/wallets/${route}?x=1`, {
          method,
          headers: { origin: 'https://app.example', authorization: `Bearer ${MARKER}` },
          ...(method === 'GET' || method === 'OPTIONS' ? {} : { body: { jwt_token: MARKER } }),
        });
        expect([route, method, res.status, res.body]).toEqual([route, method, 421, moved]);
        expect(res.headers['access-control-allow-origin']).toBeUndefined();
      }
    }
    expect((await call(url, '/v1/default/wallets', { method: 'POST', body: { jwt_token: MARKER } })).status).toBe(421);
    // Not every path that looks alike: other routes are as they were.
    expect((await call(url, `/v1/${KEY}/walletsx/sign`, { method: 'POST', body: {} })).status).toBe(404);
    expect((await call(url, '/v1/keys', { method: 'GET' })).status).toBe(401);
    expect(logged()).not.toContain(MARKER.slice(-24));
    const text = await metrics.render();
    expect(text).toMatch(/^nks_http_requests_total\{route="\/v1\/\{projectKey\}\/wallets\/\*",method="POST",status="421"\} \d+$/m);
    expect(access.lines().find((l) => l.status === 421)).toMatchObject({ route: '/v1/{projectKey}/wallets/*', principal: '-' });
  });

  it('says where when wallets.publicUrl is not set', async () => {
    await start(undefined);
    const res = await call(url, `/v1/${KEY}/wallets/sign`, { body: { jwt_token: MARKER } });
    expect([res.status, res.body]).toEqual([
      421,
      {
        detail: 'the wallet routes are served by the enclave over TLS at the wallets endpoint (config.wallets.publicUrl is not set)',
        url: null,
      },
    ]);
  });

  /** Sends a request's head and the start of its body, never the end: resolves with the answer's head and whether the server closed. */
  const unfinished = (head: string, bodyStart: string) =>
    new Promise<{ head: string; closed: boolean }>((resolve, reject) => {
      const u = new URL(url);
      const socket = net.connect(Number(u.port), u.hostname);
      let text = '';
      socket.on('data', (d: Buffer) => {
        text += d.toString('latin1');
      });
      socket.on('error', reject);
      socket.on('close', () => resolve({ head: text.slice(0, text.indexOf('\r\n\r\n')), closed: true }));
      socket.write(head + bodyStart);
      const timer = setInterval(() => {
        // The answer came while the body is still open: the server did not wait for it.
        if (text.includes('\r\n\r\n') && text.endsWith('}')) {
          clearInterval(timer);
          const closedNow = socket.destroyed;
          socket.destroy();
          resolve({ head: text.slice(0, text.indexOf('\r\n\r\n')), closed: closedNow });
        }
      }, 5);
    });

  it('never reads the body: a body that never ends, or one over the limit, still gets 421, and the connection is closed', async () => {
    await start(PUBLIC_URL);
    const chunk = JSON.stringify({ jwt_token: MARKER }).slice(0, -2);
    const chunked = await unfinished(
      `POST /v1/${KEY}/wallets/sign HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n`,
      `${chunk.length.toString(16)}\r\n${chunk}\r\n`,
    );
    expect(chunked.head).toMatch(/^HTTP\/1\.1 421 /);
    expect(chunked.head).toMatch(/^connection: close$/im);
    // Declared far over api.maxBodyBytes (4 KiB): reading it would be 413.
    const big = await unfinished(
      `POST /v1/${KEY}/wallets/get-address HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n`,
      `{"jwt_token":"${MARKER}`,
    );
    expect(big.head).toMatch(/^HTTP\/1\.1 421 /);
    expect(big.head).toMatch(/^connection: close$/im);
    await waitFor(() => access.lines().filter((l) => l.status === 421).length === 2, 5000, 'both answered');
    expect(logged()).not.toContain(MARKER.slice(-24));
    expect(logged()).not.toContain('jwt_token');
  });
});
