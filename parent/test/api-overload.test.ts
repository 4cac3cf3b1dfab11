/**
 * Overload is refused early and cheaply (parent/README.md, "Overload"): beyond `api.maxInFlight` a request is
 * answered 503 OVERLOADED with Retry-After from the first hook, before its body is read or parsed — a long one
 * or one of unknown length is not read at all: the answer says `connection: close` and the connection is
 * closed; a short one is discarded by Node and the connection kept — and beyond
 * `api.maxConnections` Node closes a new connection at once (counted). In process, with the real ApiServer and
 * a route whose answers the test holds.
 */
import { captureLogger, waitFor } from '@nks/shared-test/helpers';
import { hashToken, TokenAuth } from '../src/api/auth';
import { ApiServer } from '../src/api/server';
import { parseParentConfig } from '../src/config';
import { Metrics } from '../src/metrics';
import { RawConnection } from './raw-http';

const TOKEN = 'nks_test_create';

describe('overload', () => {
  let server: ApiServer;
  let url: string;
  let metrics: Metrics;
  let parsed = 0;
  const held: Array<() => void> = [];

  beforeAll(async () => {
    const config = parseParentConfig({
      api: { listen: { host: '127.0.0.1', port: 0 }, maxInFlight: 2, maxConnections: 5, headersTimeoutMs: 2000 },
      tokens: [{ name: 'create', sha256: hashToken(TOKEN), scopes: ['keys:create'] }],
      database: { path: '/nonexistent/keys.db' },
      kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
    });
    metrics = new Metrics({
      keyCounts: async () => ({ total: 0, disabled: 0, withoutRecord: 0, pending: 0 }),
      enclaveHealth: async () => null,
    });
    server = new ApiServer({
      config: config.api,
      routes: (app) => {
        app.post('/v1/keys', { config: { name: '/v1/keys', scope: 'keys:create' } }, async (request) => {
          parsed += 1;
          await new Promise<void>((resolve) => held.push(resolve));
          return { got: request.body };
        });
      },
      auth: new TokenAuth(config.tokens),
      metrics,
      logger: captureLogger('debug').logger,
      accessLog: captureLogger('debug').logger,
      readiness: async () => ({ ready: true, checks: {} }),
    });
    url = await server.listen();
  });
  afterAll(async () => {
    for (const release of held.splice(0)) release();
    await server?.close(100);
  });

  const count = async (name: string) => (await metrics.registry.getSingleMetric(name)?.get())?.values[0]?.value ?? 0;

  it('answers 503 OVERLOADED with Retry-After beyond the in-flight cap without reading the body, and applies maxConnections', async () => {
    expect([server.server.maxConnections, server.server.headersTimeout]).toEqual([5, 2000]);
    // Two requests in flight: the cap.
    const busy = [await RawConnection.open(url), await RawConnection.open(url)];
    for (const c of busy) c.send('POST', '/v1/keys', { token: TOKEN, body: { externalId: 'x' } });
    await waitFor(() => held.length === 2, 10_000, 'two requests held');

    // Over the cap, a body declared and never sent: answered at once, and closed rather than read.
    const unsent = await RawConnection.open(url);
    unsent.socket.write(
      `POST /v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{"externalId":`,
    );
    const [refused] = await unsent.answered(1);
    expect(refused).toMatchObject({ status: 503, headers: { 'retry-after': '1', connection: 'close' } });
    expect(JSON.parse(refused?.body ?? '{}').error).toMatchObject({ code: 'OVERLOADED', retryable: true });
    expect(await unsent.closed()).toBe('end');
    // A chunked body, the same.
    const chunked = await RawConnection.open(url);
    chunked.socket.write(
      `POST /v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"ext\r\n`,
    );
    expect((await chunked.answered(1))[0]).toMatchObject({ status: 503, headers: { connection: 'close' } });
    expect(await chunked.closed()).toBe('end');
    // Without a body, or a short one that came with the headers (discarded unparsed: cheaper than the client's
    // reconnect), the connection stays usable.
    const plain = await RawConnection.open(url);
    plain.send('GET', '/v1/keys/k_AAAAAAAAAAAAAAAAAAAAAA', { token: TOKEN });
    plain.send('POST', '/v1/keys', { token: TOKEN, body: { externalId: 'y'.repeat(1000) } });
    plain.send('GET', '/v1/keys/k_AAAAAAAAAAAAAAAAAAAAAA', { token: TOKEN });
    const answers = await plain.answered(3);
    for (const r of answers) expect(r).toMatchObject({ status: 503, headers: { connection: 'keep-alive', 'retry-after': '1' } });
    expect(parsed).toBe(2);
    expect(await count('nks_http_overloaded_total')).toBe(5);

    // maxConnections 5: the two busy ones, `plain` and two more are open; a sixth is closed unanswered.
    const more = [await RawConnection.open(url), await RawConnection.open(url)];
    const dropped = await RawConnection.open(url);
    dropped.send('GET', '/healthz');
    expect(await dropped.closed()).not.toBeUndefined();
    expect(dropped.answers).toEqual([]);
    expect(await count('nks_http_connections_dropped_total')).toBe(1);
    more[0]?.send('GET', '/healthz');
    expect((await more[0]!.answered(1))[0]?.status).toBe(200);

    for (const release of held.splice(0)) release();
    for (const c of busy) expect((await c.answered(1))[0]?.status).toBe(200);
    for (const c of [...busy, ...more, plain]) c.destroy();
  });

  it("closes a client that trickles its headers (slowloris) once headersTimeoutMs has passed, not at Node's 30 s check", async () => {
    // The connections of the test before are closed (maxConnections is 5 here), so this one is served.
    const open = () => new Promise<number>((resolve) => server.server.getConnections((_err, n) => resolve(n)));
    for (let i = 0; i < 250 && (await open()) > 0; i++) await new Promise((r) => setTimeout(r, 20));
    const slow = await RawConnection.open(url);
    slow.socket.write('POST /v1/keys HTTP/1.1\r\nHost: x\r\n');
    const trickle = setInterval(() => slow.socket.write(`X-Slow-${Date.now()}: 1\r\n`), 300);
    try {
      // headersTimeoutMs is 2 s here, checked every second (api/server.ts); Node's default check is every 30 s.
      await slow.closed(6000);
    } finally {
      clearInterval(trickle);
      slow.destroy();
    }
    expect(slow.answers.map((a) => a.status)).toEqual([408]);
  });
});
