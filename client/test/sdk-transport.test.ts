/**
 * The SDK's transport promises, against tiny local servers that misbehave on purpose (the real stack never
 * hangs up or stalls on its own): a closed port and a server that hangs up are NETWORK, a server that never
 * answers is CLIENT_TIMEOUT, both retried only where the call may be repeated; a programming error is thrown as
 * it is and never retried; `requestId`, `signal` and `deadlineMs`; bigints as decimal strings; the API on a Unix
 * socket and behind a private CA, from the SDK and from `nks` (dist/cli.js: `npm run build`).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import path from 'node:path';
import { tempRunDir } from '@nks/shared-test/helpers';
import { makeTestCa } from '../../sim/src/idp/tls';
import { KeystoreApiError, KeystoreClient } from '../src/sdk';

const CLI = path.resolve(__dirname, '../../dist/cli.js');
jest.setTimeout(60_000);

interface Seen {
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A server that does `behave` with each request after reading it, and records what it got. */
async function server(
  behave: 'hang-up' | 'never' | 'key',
  listen: { port: 0 } | { path: string } = { port: 0 },
  tls?: { cert: string; key: string },
): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const sockets = new Set<net.Socket>();
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      seen.push({ url: req.url ?? '', headers: req.headers, body });
      if (behave === 'hang-up') req.socket.destroy();
      else if (behave === 'key') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ keyId: 'k1', address: `0x${'11'.repeat(20)}`, auth: req.headers.authorization ?? null }));
      }
      // 'never': no answer at all
    });
  };
  const srv = tls ? https.createServer(tls, handler) : http.createServer(handler);
  srv.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  srv.on('secureConnection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => srv.listen(listen, resolve));
  const addr = srv.address();
  const url = typeof addr === 'object' && addr ? `${tls ? 'https' : 'http'}://localhost:${addr.port}` : 'http://localhost';
  return {
    url,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

const caught = async (p: Promise<unknown>) => (await p.catch((e: unknown) => e)) as KeystoreApiError;

describe('SDK transport', () => {
  it('a closed port is NETWORK, retryable; a server that hangs up is NETWORK, retried on a repeatable call only', async () => {
    const closed = await server('never');
    const url = closed.url;
    await closed.close();
    const err = await caught(new KeystoreClient({ url, token: 't', retries: 0 }).getKey('k1'));
    expect(err).toBeInstanceOf(KeystoreApiError);
    expect([err.status, err.code, err.retryable]).toEqual([0, 'NETWORK', true]);
    expect(err.message).toMatch(/cannot reach the keystore API at http:\/\/localhost:\d+: ECONNREFUSED/);

    const s = await server('hang-up');
    try {
      const c = new KeystoreClient({ url: s.url, token: 't' });
      const read = await caught(c.getKey('k1', { requestId: 'req-hangup.1' }));
      expect([read.code, read.retryable, read.requestId]).toEqual(['NETWORK', true, 'req-hangup.1']);
      // Three attempts (retries: 2), each with the caller's request id.
      expect(s.seen.map((r) => [r.url, r.headers['x-request-id']])).toEqual(Array(3).fill(['/v1/keys/k1', 'req-hangup.1']));
      s.seen.length = 0;
      // A create without externalId is repeated with one Idempotency-Key, the same on every attempt.
      const create = await caught(c.createKey({ labels: { a: 'b' } }));
      expect([create.code, create.retryable, s.seen.length]).toEqual(['NETWORK', true, 3]);
      const keys = s.seen.map((r) => r.headers['idempotency-key']);
      expect(keys[0]).toMatch(/^[0-9a-f-]{36}$/);
      expect(new Set(keys).size).toBe(1);
      s.seen.length = 0;
      // The next create is another logical create: another Idempotency-Key.
      await caught(c.createKey());
      expect(s.seen[0]?.headers['idempotency-key']).not.toBe(keys[0]);
      s.seen.length = 0;
      const again = await caught(c.createKey({ externalId: 'e-1' }));
      expect([again.code, again.retryable, s.seen.length]).toEqual(['NETWORK', true, 3]);
    } finally {
      await s.close();
    }
  });

  it('a server that never answers is CLIENT_TIMEOUT per attempt (retried), or of the whole call with deadlineMs', async () => {
    const s = await server('never');
    try {
      const perAttempt = await caught(new KeystoreClient({ url: s.url, token: 't', timeoutMs: 200, retries: 1 }).signMessage('k1', 'm'));
      expect([perAttempt.status, perAttempt.code, perAttempt.retryable]).toEqual([0, 'CLIENT_TIMEOUT', true]);
      expect(perAttempt.message).toMatch(/no answer within 200 ms \(timeoutMs\)/);
      expect(s.seen).toHaveLength(2);
      s.seen.length = 0;
      // The deadline bounds the call, retries included: one attempt that never ends, stopped at the deadline.
      const started = Date.now();
      const whole = await caught(new KeystoreClient({ url: s.url, token: 't', timeoutMs: 60_000 }).getKey('k1', { deadlineMs: 300 }));
      expect([whole.code, whole.retryable]).toEqual(['CLIENT_TIMEOUT', true]);
      expect(whole.message).toMatch(/deadline \(deadlineMs 300\)/);
      expect(Date.now() - started).toBeLessThan(30_000); // not the 60 s attempt timeout (generous: a loaded machine)
      expect(s.seen).toHaveLength(1);
      // A TLS key's creation that timed out: not retryable (each call is a new key).
      const create = await caught(new KeystoreClient({ url: s.url, token: 't', timeoutMs: 200 }).tls.createKey(['a.example']));
      expect([create.code, create.retryable]).toEqual(['CLIENT_TIMEOUT', false]);
    } finally {
      await s.close();
    }
  });

  it('the caller aborts with signal: ABORTED, not retried', async () => {
    const s = await server('never');
    try {
      const ac = new AbortController();
      const p = caught(new KeystoreClient({ url: s.url, token: 't' }).getKey('k1', { signal: ac.signal }));
      while (s.seen.length === 0) await new Promise((r) => setTimeout(r, 20));
      ac.abort(new Error('user went away'));
      const err = await p;
      expect([err.code, err.retryable, (err.cause as Error).message]).toEqual(['ABORTED', false, 'user went away']);
      expect(s.seen).toHaveLength(1);
      const before = await caught(new KeystoreClient({ url: s.url, token: 't' }).getKey('k1', { signal: AbortSignal.abort() }));
      expect([before.code, s.seen.length]).toEqual(['ABORTED', 1]);
    } finally {
      await s.close();
    }
  });

  it('a programming error is thrown as it is, at once: never retried, never a KeystoreApiError', async () => {
    const s = await server('hang-up');
    try {
      const c = new KeystoreClient({ url: s.url, token: 't' });
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const cycle = await caught(c.signTypedData('k1', { domain: {}, types: { M: [] }, primaryType: 'M', message: cyclic }));
      expect(cycle).toBeInstanceOf(TypeError);
      expect(await caught(c.getKey('k1', { requestId: 'has space' }))).toBeInstanceOf(TypeError);
      expect(await caught(c.getKey('k1', { deadlineMs: -1 }))).toBeInstanceOf(RangeError);
      expect(s.seen).toHaveLength(0);
      // A TypeError from inside the transport (here a fetch of the caller's with a bug): once, as it is.
      let calls = 0;
      const bug = new TypeError('undefined is not a function');
      const buggy = new KeystoreClient({
        url: s.url,
        token: 't',
        fetch: () => {
          calls++;
          throw bug;
        },
      });
      expect(await caught(buggy.getKey('k1'))).toBe(bug);
      expect(calls).toBe(1);
      expect(() => new KeystoreClient({ url: 'localhost:7070', token: 't' })).toThrow(TypeError);
    } finally {
      await s.close();
    }
  });

  it('sends bigints (viem objects, nested) as decimal strings', async () => {
    const s = await server('key');
    try {
      const c = new KeystoreClient({ url: s.url, token: 't' });
      await c.signTransaction('k1', {
        type: 'eip1559',
        chainId: 1,
        nonce: 0,
        to: `0x${'22'.repeat(20)}`,
        value: 10n ** 18n,
        gas: 21_000n,
        maxFeePerGas: 2n ** 70n,
        maxPriorityFeePerGas: 1n,
      });
      await c.signTypedData('k1', {
        domain: { name: 'n', chainId: 1n },
        types: { M: [{ name: 'amounts', type: 'uint256[]' }] },
        primaryType: 'M',
        message: { amounts: [1n, 2n ** 200n] },
      });
      const [tx, td] = s.seen.map((r) => JSON.parse(r.body) as Record<string, Record<string, unknown>>);
      expect(tx?.transaction).toMatchObject({ value: '1000000000000000000', gas: '21000', maxFeePerGas: String(2n ** 70n) });
      expect(td?.typedData).toMatchObject({ domain: { chainId: '1' }, message: { amounts: ['1', String(2n ** 200n)] } });
    } finally {
      await s.close();
    }
  });
});

describe('the API on a Unix socket and behind a private CA (SDK and nks)', () => {
  let dir: string;
  let sock: Awaited<ReturnType<typeof server>>;
  let tls: Awaited<ReturnType<typeof server>>;
  let caFile: string;
  const nks = (args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], {
        env: { ...process.env, NKS_URL: '', NKS_TOKEN: '', NKS_DEV_DIR: '/nonexistent' },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });

  beforeAll(async () => {
    dir = tempRunDir('nks-transport-');
    sock = await server('key', { path: path.join(dir, 'api.sock') });
    const ca = await makeTestCa();
    const leaf = await ca.issueServer(['localhost']);
    tls = await server('key', { port: 0 }, { cert: leaf.certPem, key: leaf.keyPem });
    caFile = path.join(dir, 'ca.pem');
    fs.writeFileSync(caFile, ca.caPem);
  });
  afterAll(async () => {
    await sock?.close();
    await tls?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('SDK: socketPath and ca', async () => {
    const viaSocket = new KeystoreClient({ url: 'http://localhost', token: 't', socketPath: path.join(dir, 'api.sock') });
    expect(await viaSocket.getKey('k1')).toMatchObject({ keyId: 'k1', auth: 'Bearer t' });
    expect(await new KeystoreClient({ url: tls.url, token: 't', ca: fs.readFileSync(caFile, 'utf8') }).getKey('k1')).toMatchObject({
      keyId: 'k1',
    });
    // Without the CA the certificate is not trusted: the connection fails.
    const untrusted = await caught(new KeystoreClient({ url: tls.url, token: 't', retries: 0 }).getKey('k1'));
    expect(untrusted.code).toBe('NETWORK');
  });

  it('nks --socket PATH and --ca FILE, flags anywhere on the line; a bad PEM file is a usage error naming it', async () => {
    const a = await nks(['--socket', path.join(dir, 'api.sock'), '--token', 't', 'keys', 'get', 'k1', '-q']);
    expect([a.status, a.stdout, a.stderr]).toEqual([0, 'k1\n', '']);
    const b = await nks(['keys', '--json', 'get', 'k1', '--url', tls.url, '--ca', caFile, '--token', 't']);
    expect([b.status, JSON.parse(b.stdout)]).toEqual([0, expect.objectContaining({ keyId: 'k1' })]);
    fs.writeFileSync(path.join(dir, 'bad.pem'), 'not a certificate\n');
    const bad = await nks(['keys', 'get', 'k1', '--url', tls.url, '--ca', path.join(dir, 'bad.pem'), '--token', 't']);
    expect([bad.status, bad.stderr]).toEqual([2, expect.stringMatching(/^nks: --ca .*bad\.pem holds no PEM certificate/)]);
  });
});
