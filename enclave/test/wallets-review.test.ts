/**
 * The wallet routes' HTTPS server against the public's cheap attacks (docs/TLS.md), each fixed and kept here:
 * - every request counts against its address's limit before the project is looked up, CORS preflights and
 *   `GET /v1/health` included, and project lookups are cached briefly, so requests over the limit cost no store
 *   call and repeated ones few;
 * - connections: at most `maxConnectionsPerAddress` per client address (IPv6 by /64), at most
 *   `maxRequestsPerConnection` requests on one, and at `maxConnections` the connection idle the longest makes room;
 * - TLS renegotiation is refused;
 * - a body field named like an Object.prototype member is a 400, not a 500;
 * - the configuration refuses connections whose requests could hold more than 512 MiB;
 * - malformed HTTP, connections reset at every stage and requests abandoned mid-body leave the enclave serving.
 * The real enclave bundle behind the test's ingress relay (wallets-setup.ts). Outcomes are asserted, never timings.
 */
import net from 'node:net';
import tls from 'node:tls';
import { z } from 'zod';
import { fieldsOf } from '@nks/shared/http/validation';
import { EnclaveConfigSchema, ENCLAVE_CONFIG_DEFAULTS } from '../src/config';
import { NEVER } from './wallet-store';
import { NAME, ORIGIN, preambleFor, startWalletsRig, type WalletsRig } from './wallets-setup';

/** Every byte a socket receives until it closes. */
function untilClosed(socket: net.Socket): Promise<Buffer> {
  const got: Buffer[] = [];
  socket.on('data', (d: Buffer) => got.push(d));
  socket.on('error', () => undefined);
  return new Promise((resolve) => socket.once('close', () => resolve(Buffer.concat(got))));
}

/** A TLS connection through the relay, from a loopback address of the test's choosing. */
async function tlsOpen(w: WalletsRig, from: string, options: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
  // (node:tls passes localAddress on to node:net; its types leave it out.)
  const socket = tls.connect({
    host: '127.0.0.1',
    port: w.ingress.port,
    servername: NAME,
    ca: w.ca.caPem,
    localAddress: from,
    ...options,
  } as tls.ConnectionOptions);
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  socket.on('error', () => undefined);
  return socket;
}

/** The status line and headers of every answer in a byte stream (pipelined answers included). */
function answersIn(bytes: Buffer): Array<{ status: number; head: string }> {
  return [...bytes.toString('latin1').matchAll(/HTTP\/1\.1 (\d{3}) [^\r\n]*\r\n([\s\S]*?)\r\n\r\n/g)].map((m) => ({
    status: Number(m[1]),
    head: (m[2] as string).toLowerCase(),
  }));
}

/** Sends one request on a kept connection and reads its whole answer (by its content-length). */
function exchange(socket: tls.TLSSocket, request: string): Promise<{ status: number; head: string }> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const text = got.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end === -1) return;
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
      if (got.length < end + 4 + length) return;
      done();
      resolve(answersIn(got)[0] as { status: number; head: string });
    };
    const onClose = () => {
      done();
      reject(new Error('the connection closed before the answer'));
    };
    const done = () => {
      socket.off('data', onData);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(request);
  });
}

const HEALTH = `GET /v1/health HTTP/1.1\r\nHost: ${NAME}\r\n\r\n`;
const signBody = (jwt: string, message = 'hello') => ({ message, jwt_token: jwt, message_type: 'message', wallet_type: 'evm' });

/** Polls until the enclave's wallet connections are down to `n` (a test's connections closed on both ends). */
async function connectionsDownTo(w: WalletsRig, n: number): Promise<void> {
  for (let i = 0; i < 200 && (await w.health()).wallets.connections > n; i++) await new Promise((r) => setTimeout(r, 20));
  expect((await w.health()).wallets.connections).toBeLessThanOrEqual(n);
}

describe('the per-address limit counts before any store call, and project lookups are cached', () => {
  let w: WalletsRig;
  const projectLookups = () => w.store.calls.filter((c) => c.method === 'store.project').length;
  const preflight = (projectKey: string, from: string, origin = ORIGIN) =>
    w.call(`/v1/${projectKey}/wallets/sign`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      from,
    });
  const unknownKey = (i: number) => `pk_${Buffer.from(`unknown-${i}`.padStart(16, '0')).toString('base64url')}`;

  beforeAll(async () => {
    w = await startWalletsRig({
      wallets: { projectCacheMs: 60_000, rateLimits: { perAddress: 5, failuresPerAddress: 3, perProject: 1000, perUser: 1000 } },
    });
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });
  afterEach(() => {
    w.store.lie = {};
  });

  it('counts CORS preflights against the address; over the limit, preflights and requests are refused without a store call', async () => {
    const project = await w.newProject();
    const from = '127.0.50.1';
    for (let i = 0; i < 5; i++) expect((await preflight(project.projectKey, from)).status).toBe(204);
    const before = projectLookups();
    const refused = [
      await preflight(project.projectKey, from),
      ...(await Promise.all(Array.from({ length: 10 }, (_, i) => preflight(unknownKey(i), from)))),
      ...(await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          w.wallet(unknownKey(100 + i), 'get-address', { jwt_token: 'x' }, { headers: { origin: 'https://evil.example' }, from }),
        ),
      )),
    ];
    for (const res of refused) {
      expect([res.status, res.body]).toEqual([403, { detail: 'too many requests from this address; retry later' }]);
      expect(res.headers['access-control-allow-origin']).toBeUndefined();
    }
    expect(projectLookups()).toBe(before);
  });

  it('asks the store once for a project or an unknown key within projectCacheMs', async () => {
    const project = await w.newProject();
    const before = projectLookups();
    const jwt = await w.mint('cached-user');
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.51.1' })).status).toBe(200);
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.51.2' })).status).toBe(200);
    expect((await preflight(project.projectKey, '127.0.51.3')).status).toBe(204);
    expect(projectLookups()).toBe(before + 1);
    // "No such project" is kept too; concurrent lookups of one key share one call.
    const unknown = await Promise.all([1, 2, 3].map((i) => preflight(unknownKey(500), `127.0.51.${10 + i}`)));
    expect(unknown.map((r) => r.status)).toEqual([404, 404, 404]);
    expect(projectLookups()).toBe(before + 2);
  });

  it('does not answer from the cache a project the enclave has changed since, nor keep a failed lookup', async () => {
    const project = await w.newProject();
    const jwt = await w.mint('changed-user');
    expect((await w.wallet(project.projectKey, 'sign', signBody(jwt), { from: '127.0.52.1' })).status).toBe(200);
    // Disabled through the enclave (it signs the newer record): the cached active record is not used.
    w.store.putProject(await w.h.client.call('projects.setState', { project: project.record, state: 'disabled' }));
    const disabled = await w.wallet(project.projectKey, 'sign', signBody(jwt), { from: '127.0.52.2' });
    expect([disabled.status, disabled.body]).toEqual([401, { detail: 'this project is disabled' }]);

    const other = await w.newProject();
    w.store.lie['store.project'] = () => NEVER;
    expect((await w.wallet(other.projectKey, 'sign', signBody(jwt), { from: '127.0.52.3' })).status).toBe(503);
    w.store.lie = {};
    expect((await w.wallet(other.projectKey, 'sign', signBody(jwt), { from: '127.0.52.4' })).status).toBe(200);
  });

  it('counts GET /v1/health against the address', async () => {
    for (let i = 0; i < 5; i++) expect((await w.call('/v1/health', { from: '127.0.53.1' })).status).toBe(200);
    const refused = await w.call('/v1/health', { from: '127.0.53.1' });
    expect([refused.status, refused.body]).toEqual([403, { detail: 'too many requests from this address; retry later' }]);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect((await w.call('/v1/health', { from: '127.0.53.2' })).status).toBe(200);
  });
});

describe('connections: per address, requests per connection, the longest idle making room, no renegotiation', () => {
  let w: WalletsRig;

  beforeAll(async () => {
    w = await startWalletsRig({
      wallets: {
        maxConnections: 4,
        maxConnectionsPerAddress: 2,
        maxRequestsPerConnection: 3,
        // Idle connections stay until the test closes them.
        keepAliveTimeoutMs: 60_000,
        rateLimits: { perAddress: 1000, failuresPerAddress: 1000 },
      },
    });
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });
  beforeEach(() => connectionsDownTo(w, 0));

  it('closes a connection beyond maxConnectionsPerAddress from one address (IPv6 by /64), not from another', async () => {
    const refusedBefore = (await w.health()).wallets.connectionsRefused;
    const a = [await tlsOpen(w, '127.0.60.1'), await tlsOpen(w, '127.0.60.1')];
    await expect(tlsOpen(w, '127.0.60.1')).rejects.toThrow();
    const b = await tlsOpen(w, '127.0.60.2');
    expect((await exchange(b, HEALTH)).status).toBe(200);
    expect((await w.health()).wallets.connectionsRefused).toBe(refusedBefore + 1);
    for (const s of [...a, b]) s.destroy();
    await connectionsDownTo(w, 0);

    // The preamble's IPv6 addresses: one /64 is one client.
    const viaRelay = async (client: string) => {
      const raw = await w.ingress.raw();
      raw.write(preambleFor(client));
      const socket = tls.connect({ socket: raw, servername: NAME, ca: w.ca.caPem });
      socket.on('error', () => undefined);
      return new Promise<tls.TLSSocket | null>((resolve) => {
        socket.once('secureConnect', () => resolve(socket));
        socket.once('close', () => resolve(null));
      });
    };
    const same = [await viaRelay('2001:db8:5:5::1'), await viaRelay('2001:db8:5:5:abcd::2')];
    expect(same.every((s) => s !== null)).toBe(true);
    expect(await viaRelay('2001:db8:5:5:ffff:ffff:ffff:ffff')).toBeNull();
    const another = await viaRelay('2001:db8:5:6::1');
    expect(another).not.toBeNull();
    for (const s of [...same, another]) s?.destroy();
  });

  it('serves at most maxRequestsPerConnection requests on one connection, the last with Connection: close', async () => {
    const socket = await tlsOpen(w, '127.0.61.1');
    const closed = untilClosed(socket);
    socket.write(HEALTH.repeat(5));
    const answers = answersIn(await closed);
    expect(answers.slice(0, 3).map((a) => a.status)).toEqual([200, 200, 200]);
    expect(answers[2]?.head).toMatch(/^connection: close$/m);
    expect(answers.filter((a) => a.status === 200)).toHaveLength(3);
  });

  it('closes the connection of a request Node answers itself (Expect: 417), and counts it', async () => {
    const before = (await w.health()).wallets.requests.bad_request ?? 0;
    const socket = await tlsOpen(w, '127.0.64.1');
    const closed = untilClosed(socket);
    // Without the close, these would escape the address limit and maxRequestsPerConnection, and hold the slot.
    socket.write(`GET /v1/health HTTP/1.1\r\nHost: ${NAME}\r\nExpect: x\r\n\r\n`.repeat(5));
    const answers = answersIn(await closed);
    expect(answers.map((a) => a.status)).toEqual([417]);
    expect(answers[0]?.head).toMatch(/^connection: close$/m);
    expect((await w.health()).wallets.requests.bad_request).toBeGreaterThan(before);
  });

  it('at maxConnections, closes the keep-alive connection idle the longest to take a new one', async () => {
    const open = async (i: number) => tlsOpen(w, `127.0.62.${i}`);
    const evictedBefore = (await w.health()).wallets.connectionsEvicted;
    const k = [await open(1), await open(2), await open(3), await open(4)] as tls.TLSSocket[];
    for (const s of k) expect((await exchange(s, HEALTH)).status).toBe(200);
    // A fifth: the first to have gone idle is closed for it.
    const firstClosed = untilClosed(k[0] as tls.TLSSocket);
    k.push(await open(5));
    expect((await exchange(k[4] as tls.TLSSocket, HEALTH)).status).toBe(200);
    await firstClosed;
    // Idle the longest now: the fourth (the second and third have answered again since); a sixth closes it.
    for (const s of [k[1], k[2]] as tls.TLSSocket[]) expect((await exchange(s, HEALTH)).status).toBe(200);
    const fourthClosed = untilClosed(k[3] as tls.TLSSocket);
    k.push(await open(6));
    expect((await exchange(k[5] as tls.TLSSocket, HEALTH)).status).toBe(200);
    await fourthClosed;
    // The others were kept, and still serve.
    for (const s of [k[1], k[2], k[4]] as tls.TLSSocket[]) expect((await exchange(s, HEALTH)).status).toBe(200);
    expect((await w.health()).wallets.connectionsEvicted).toBe(evictedBefore + 2);
    for (const s of k) s.destroy();
  });

  it('refuses TLS renegotiation and keeps serving', async () => {
    const socket = await tlsOpen(w, '127.0.63.1', { maxVersion: 'TLSv1.2' });
    expect((await exchange(socket, HEALTH)).status).toBe(200);
    const outcome = await new Promise<string>((resolve) => {
      socket.once('error', (err) => resolve(`refused: ${err.message}`));
      socket.once('close', () => resolve('closed'));
      if (!socket.renegotiate({ rejectUnauthorized: false }, (err) => resolve(err ? `refused: ${err.message}` : 'renegotiated')))
        resolve('not started');
    });
    // The server's no_renegotiation alert, which the client takes as fatal.
    expect(outcome).toMatch(/^refused: .*no renegotiation/);
    socket.destroy();
    expect((await w.call('/v1/health', { from: '127.0.63.2' })).status).toBe(200);
  });
});

describe('malformed input is never a 5xx, and the enclave keeps serving', () => {
  let w: WalletsRig;
  let n = 0;
  const from = () => `127.2.${Math.floor(++n / 250)}.${(n % 250) + 1}`;

  beforeAll(async () => {
    // A failure budget of 3; each test's requests from addresses of their own.
    w = await startWalletsRig({ wallets: { rateLimits: { perAddress: 1000, failuresPerAddress: 3 } } });
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  async function stillServes(): Promise<void> {
    expect(w.h.enclave.child.exitCode).toBeNull();
    const project = await w.newProject();
    expect((await w.wallet(project.projectKey, 'sign', signBody(await w.mint(`u${++n}`)), { from: from() })).status).toBe(200);
    expect(w.h.enclave.lines.filter((l) => /uncaught|unhandled/i.test(l))).toEqual([]);
  }

  it('answers a body field named like an Object.prototype member 400, naming it', async () => {
    const project = await w.newProject();
    const jwt = await w.mint('proto-user');
    for (const field of ['constructor', 'toString', 'hasOwnProperty', 'valueOf']) {
      const res = await w.call(`/v1/${project.projectKey}/wallets/get-address`, {
        body: `{"${field}":"x","jwt_token":${JSON.stringify(jwt)}}`,
        headers: { 'content-type': 'application/json' },
        from: from(),
      });
      expect([res.status, res.body]).toEqual([400, { detail: { [field]: ['unknown field'] } }]);
    }
    // The parent's API reads the same reasons (shared/src/http/validation.ts).
    const body = z.strictObject({ jwt_token: z.string() });
    const res = body.safeParse({ constructor: 1, toString: 2, jwt_token: 3 });
    expect(res.success).toBe(false);
    expect({ ...fieldsOf((res as { error: z.ZodError }).error) }).toEqual({
      jwt_token: [expect.any(String)],
      constructor: ['unknown field'],
      toString: ['unknown field'],
    });
  });

  it('answers malformed HTTP with a refusal or a close, never a 5xx', async () => {
    const project = await w.newProject();
    const path = `/v1/${project.projectKey}/wallets/sign`;
    const post = (body: string, target = path) =>
      `POST ${target} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
    const cases: Array<string | Buffer> = [
      `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd`,
      `POST ${path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`,
      `POST ${path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n`,
      `GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A: ${'a'.repeat(70_000)}\r\n\r\n`,
      `GET /v1/health HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 200 }, (_, i) => `X-${i}: a\r\n`).join('')}\r\n`,
      `POST /v1/%ZZ/wallets/sign HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      `POST /v1/${'a'.repeat(12_000)}/wallets/sign HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
      `GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\n\r\n`,
      `CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n`,
      post(
        '{"__proto__":{"x":1},"constructor":{"prototype":{"y":1}},"jwt_token":"a","message":"m","message_type":"message","wallet_type":"evm"}',
      ),
      post(
        `{"jwt_token":"a","request":{"type":"typedData","typedData":{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}}}`,
        path + '-request',
      ),
      Buffer.concat([
        Buffer.from(`POST ${path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 4\r\nConnection: close\r\n\r\n`),
        Buffer.from([0xff, 0xfe, 0xfd, 0xfc]),
      ]),
    ];
    for (const bytes of cases) {
      const socket = await tlsOpen(w, from());
      const closed = untilClosed(socket);
      socket.write(bytes);
      const statuses = answersIn(await closed).map((a) => a.status);
      expect({ request: bytes.toString('latin1').slice(0, 60), statuses }).toEqual({
        request: expect.any(String),
        statuses: statuses.filter((s) => s < 500),
      });
    }
    await stillServes();
  }, 60_000);

  it('keeps serving when connections are reset in the preamble, the handshake or a request', async () => {
    const project = await w.newProject();
    for (let i = 0; i < 12; i++) {
      const raw = await w.ingress.raw();
      const closed = untilClosed(raw);
      const preamble = preambleFor('203.0.113.5');
      if (i % 3 === 0) raw.write(preamble.subarray(0, 3));
      else if (i % 3 === 1) raw.write(Buffer.concat([preamble, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x01])]));
      else {
        raw.write(preamble);
        const socket = tls.connect({ socket: raw, servername: NAME, ca: w.ca.caPem });
        socket.on('error', () => undefined);
        await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
        // Half a request, then a request's worth of its headers and body answered: written, then gone.
        await new Promise<void>((resolve) =>
          socket.write(
            `POST /v1/${project.projectKey}/wallets/sign HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"a":`,
            () => resolve(),
          ),
        );
      }
      raw.destroy();
      await closed;
    }
    await stillServes();
  });

  it("gives back the failure budget's hold of requests abandoned mid-body", async () => {
    const project = await w.newProject();
    const address = from();
    // More abandoned requests than the budget (3): holds not given back would refuse the next request for good.
    for (let i = 0; i < 4; i++) {
      const lookups = w.store.calls.length;
      const socket = await tlsOpen(w, address);
      const closed = untilClosed(socket);
      socket.write(
        `POST /v1/${project.projectKey}/wallets/get-address HTTP/1.1\r\nHost: ${NAME}\r\ncontent-type: application/json\r\n` +
          `content-length: 1000\r\n\r\n{"jwt_token":`,
      );
      // Admitted (its hold taken, then its project asked for), then abandoned.
      for (let j = 0; j < 200 && w.store.calls.length === lookups; j++) await new Promise((r) => setTimeout(r, 10));
      expect(w.store.calls.length).toBe(lookups + 1);
      socket.destroy();
      await closed;
    }
    const jwt = await w.mint(`u${++n}`);
    let res = await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: address });
    // (Until the enclave has seen the last of them go: "in progress".)
    for (let i = 0; i < 100 && res.status === 403; i++) {
      expect(res.body).toEqual({ detail: 'too many requests in progress from this address; retry shortly' });
      await new Promise((r) => setTimeout(r, 20));
      res = await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: address });
    }
    expect(res.status).toBe(200);
  });
});

describe('the wallets configuration', () => {
  const wallets = EnclaveConfigSchema.shape.wallets;

  it('has defaults within the memory bound, and refuses connections whose requests could hold more than 512 MiB', () => {
    const d = ENCLAVE_CONFIG_DEFAULTS.wallets;
    expect(wallets.parse({})).toMatchObject({ maxConnectionsPerAddress: 32, maxRequestsPerConnection: 1000, projectCacheMs: 2000 });
    expect(d.maxConnections * (d.bodyLimit + d.maxHeaderBytes)).toBeLessThanOrEqual(512 * 1024 * 1024);
    // 2,048 × (256 KiB + 16 KiB) = 544 MiB.
    const res = wallets.safeParse({ maxConnections: 2048 });
    expect(res.success).toBe(false);
    expect(res.error?.issues).toEqual([
      expect.objectContaining({
        path: ['maxConnections'],
        message:
          'maxConnections × (bodyLimit + maxHeaderBytes) must not exceed 512 MiB (the requests all connections may hold in memory at once)',
      }),
    ]);
    expect(wallets.safeParse({ maxConnections: 2048, bodyLimit: 128 * 1024 }).success).toBe(true);
  });
});
