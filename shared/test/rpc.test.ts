import fs from 'node:fs';
import net from 'node:net';
import { z } from 'zod';
import fc from 'fast-check';
import { KeystoreError } from '../src/errors';
import { encodeFrame } from '../src/framing';
import { FramedConnection, RpcClient, RpcServer, backoffDelay, defineMethod, serveApi } from '../src/rpc';
import { SimulatedVsockTransport, simulatedSocketPath, type Connection, type ConnectionHandlers } from '../src/transport';
import { captureLogger, tempRunDir, waitFor } from './helpers';

const ADDRESS = 'vsock://16:5000';

/** Requests to 'gated' wait until the test calls the gate for their value. */
const gates = new Map<number, () => void>();

const Value = z.strictObject({ value: z.number() });
const TestApi = {
  gated: defineMethod<{ value: number }>()(Value),
  echo: defineMethod<{ value: number }>()(Value),
  fail: defineMethod<never>()(z.strictObject({})),
  crash: defineMethod<never>()(z.strictObject({})),
};
type TestApi = typeof TestApi;

function methods() {
  return serveApi(TestApi, {
    gated: (p) => new Promise((resolve) => gates.set(p.value, () => resolve({ value: p.value }))),
    echo: (p) => ({ value: p.value }),
    fail: () => {
      throw new KeystoreError('KEY_INTEGRITY', 'blob does not open');
    },
    crash: () => {
      throw new Error('secret-looking library text that must not reach the peer');
    },
  });
}

describe('JSON-RPC over simulated vsock', () => {
  let runDir: string;
  let transport: SimulatedVsockTransport;
  let server: RpcServer;
  let client: RpcClient<TestApi>;
  const log = captureLogger();

  beforeEach(async () => {
    runDir = tempRunDir();
    transport = new SimulatedVsockTransport(runDir);
    server = new RpcServer({
      name: 'test-server',
      methods: methods(),
      logger: log.logger,
      maxConcurrent: 20_000,
      maxInFlightPerConnection: 20_000,
    });
    await server.listen(transport, ADDRESS);
    client = new RpcClient<TestApi>({ name: 'test-client', transport, address: ADDRESS, logger: log.logger, maxInFlight: 20_000 });
    await client.waitConnected(10_000);
  });

  afterEach(async () => {
    for (const open of gates.values()) open();
    gates.clear();
    await client?.close();
    await server?.close(100);
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  it('matches out-of-order responses to their requests', async () => {
    // Each request waits on a gate the test opens, in an order unlike the send order.
    const releaseOrder = [5, 2, 7, 0, 3, 6, 1, 4];
    const completed: number[] = [];
    const calls = releaseOrder.map((_, i) =>
      client.call('gated', { value: i }).then((r) => {
        completed.push(r.value);
        return r.value;
      }),
    );
    await waitFor(() => gates.size === releaseOrder.length, 5000, 'all requests to arrive');
    for (const v of releaseOrder) {
      gates.get(v)?.();
      await waitFor(() => completed.includes(v), 5000, `answer ${v}`);
    }
    expect(await Promise.all(calls)).toEqual(releaseOrder.map((_, i) => i));
    expect(completed).toEqual(releaseOrder);
  });

  it('carries 10,000 concurrent requests on one connection', async () => {
    const n = 10_000;
    const results = await Promise.all(Array.from({ length: n }, (_, i) => client.call('echo', { value: i }, { deadlineMs: 20_000 })));
    expect(results.map((r) => r.value)).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(server.stats.connections).toBe(1);
    expect(client.pendingCount).toBe(0);
  });

  it('fails a call whose deadline passes with TIMEOUT and drops its handler', async () => {
    // The handler waits on a gate the test opens only after the deadline has passed.
    const err = await client.call('gated', { value: 1 }, { deadlineMs: 30 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeystoreError);
    expect((err as KeystoreError).code).toBe('TIMEOUT');
    expect((err as KeystoreError).retryable).toBe(true);
    expect(client.pendingCount).toBe(0);
    // The late answer arrives and is ignored; the connection stays usable.
    await waitFor(() => gates.has(1), 5000, 'the request to reach the handler');
    gates.get(1)?.();
    await waitFor(() => server.stats.inFlight === 0, 5000, 'the late answer to be sent');
    // Answers on one connection arrive in the order they were sent: this one comes after the late one.
    await expect(client.call('echo', { value: 2 })).resolves.toEqual({ value: 2 });
    expect(client.pendingCount).toBe(0);
    expect(server.stats.connections).toBe(1);
  });

  it('passes handler errors through with their reason, and hides unexpected ones', async () => {
    const e1 = (await client.call('fail', {}).catch((e: unknown) => e)) as KeystoreError;
    expect(e1.code).toBe('KEY_INTEGRITY');
    expect(e1.message).toBe('blob does not open');
    const e2 = (await client.call('crash', {}).catch((e: unknown) => e)) as KeystoreError;
    expect(e2.code).toBe('INTERNAL');
    expect(e2.message).not.toContain('secret-looking');
  });

  it('rejects unknown fields, wrong types, unknown methods', async () => {
    // The table makes each of these a compile error; the server refuses them from a peer that sends them anyway.
    // @ts-expect-error an unknown field
    const unknownField = (await client.call('echo', { value: 1, extra: true }).catch((e: unknown) => e)) as KeystoreError;
    expect(unknownField.code).toBe('INVALID_PARAMS');
    expect(unknownField.message).toContain('"extra"');
    // @ts-expect-error a field of the wrong type
    const wrongType = (await client.call('echo', { value: 'one' }).catch((e: unknown) => e)) as KeystoreError;
    expect(wrongType.code).toBe('INVALID_PARAMS');
    expect(wrongType.message).toContain('params.value');
    // @ts-expect-error a method not in the table
    const noMethod = (await client.call('nope', {}).catch((e: unknown) => e)) as KeystoreError;
    expect(noMethod.code).toBe('METHOD_NOT_FOUND');
  });

  it('answers OVERLOADED beyond the server concurrency cap and keeps serving', async () => {
    const capped = new RpcServer({ name: 'capped', methods: methods(), logger: log.logger, maxConcurrent: 4 });
    const c = new RpcClient<TestApi>({ name: 'to-capped', transport, address: 'vsock://16:5002', logger: log.logger });
    try {
      await capped.listen(transport, 'vsock://16:5002');
      await c.waitConnected(5000);
      // Ten requests whose handlers wait on gates: the first four to arrive hold the four slots until the
      // test opens them, so exactly six are refused, whatever the timing.
      const settled = Promise.allSettled(Array.from({ length: 10 }, (_, i) => c.call('gated', { value: 100 + i })));
      await waitFor(() => capped.stats.overloaded === 6 && capped.stats.inFlight === 4, 5000, 'four running and six refused');
      expect(gates.size).toBe(4);
      for (const open of gates.values()) open();
      const results = await settled;
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(4);
      expect(rejected.map((r) => (r.reason as KeystoreError).code)).toEqual(Array(6).fill('OVERLOADED'));
      expect(rejected.every((r) => (r.reason as KeystoreError).retryable)).toBe(true);
      expect(capped.stats.overloaded).toBe(6);
      await expect(c.call('echo', { value: 99 })).resolves.toEqual({ value: 99 });
    } finally {
      await c.close();
      await capped.close(100);
    }
  });

  it('answers OVERLOADED beyond the client in-flight cap without sending', async () => {
    const small = new RpcClient<TestApi>({ name: 'small', transport, address: ADDRESS, logger: log.logger, maxInFlight: 2 });
    try {
      await small.waitConnected(5000);
      const requestsBefore = server.stats.requests;
      // The first two wait on gates, so they are still in flight when the third is made.
      const calls = [0, 1, 2].map((i) => small.call('gated', { value: 200 + i }).catch((e: unknown) => e));
      expect((await calls[2]) as KeystoreError).toMatchObject({ code: 'OVERLOADED' });
      await waitFor(() => gates.size === 2, 5000, 'the two requests to arrive');
      for (const open of gates.values()) open();
      expect(await Promise.all(calls.slice(0, 2))).toEqual([{ value: 200 }, { value: 201 }]);
      expect(server.stats.requests - requestsBefore).toBe(2); // the third was never sent
    } finally {
      await small.close();
    }
  });

  it('reconnects after the server restarts mid-stream; in-flight calls fail retryably', async () => {
    const inflight = client.call('gated', { value: 1 }).catch((e: unknown) => e);
    await waitFor(() => server.stats.inFlight === 1, 5000, 'request to reach the server');
    await server.close(0); // stops without waiting for the slow handler
    const err = (await inflight) as KeystoreError;
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.retryable).toBe(true);
    expect(client.pendingCount).toBe(0);

    // While nothing listens, calls fail fast with UNAVAILABLE rather than waiting for their deadline.
    await waitFor(() => !client.connected, 5000, 'disconnect');
    const down = (await client.call('echo', { value: 2 }, { deadlineMs: 60_000 }).catch((e: unknown) => e)) as KeystoreError;
    expect(down.code).toBe('UNAVAILABLE');

    server = new RpcServer({ name: 'test-server-2', methods: methods(), logger: log.logger });
    await server.listen(transport, ADDRESS);
    await waitFor(() => client.connected, 10_000, 'reconnect');
    await expect(client.call('echo', { value: 3 })).resolves.toEqual({ value: 3 });
  });
});

describe('RPC client waiting for its connection', () => {
  it('with waitForConnectionMs, a call while down reconnects at once and waits instead of failing', async () => {
    const runDir = tempRunDir();
    const transport = new SimulatedVsockTransport(runDir);
    const log = captureLogger();
    const c = new RpcClient<TestApi>({
      name: 'patient',
      transport,
      address: 'vsock://3:8000',
      logger: log.logger,
      waitForConnectionMs: 3000,
      backoff: { initialMs: 5000, maxMs: 5000 },
    });
    const server = new RpcServer({ name: 'late', methods: methods(), logger: log.logger });
    try {
      c.start();
      // The first attempt fails (nothing listens); the client logs it, then waits in a long backoff.
      await waitFor(() => log.text().includes('patient connect failed'), 5000, 'the first failed attempt');
      expect(c.connected).toBe(false);
      await server.listen(transport, 'vsock://3:8000');
      await expect(c.call('echo', { value: 1 })).resolves.toEqual({ value: 1 });
      await server.close(0);
      await waitFor(() => !c.connected, 5000, 'disconnect');
      const err = (await c.call('echo', { value: 2 }).catch((e: unknown) => e)) as KeystoreError;
      expect(err.code).toBe('UNAVAILABLE');
    } finally {
      // Always: a client left open keeps reconnecting, a server left open keeps Jest from exiting.
      await c.close();
      await server.close(0);
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  });
});

describe('RPC server isolation', () => {
  let runDir: string;
  let transport: SimulatedVsockTransport;
  let server: RpcServer;
  let client: RpcClient<TestApi>;
  let log: ReturnType<typeof captureLogger>;

  beforeEach(async () => {
    runDir = tempRunDir();
    log = captureLogger();
    transport = new SimulatedVsockTransport(runDir);
    server = new RpcServer({ name: 'iso', methods: methods(), logger: log.logger, maxFrameBytes: 64 * 1024 });
    await server.listen(transport, ADDRESS);
    client = new RpcClient<TestApi>({ name: 'good', transport, address: ADDRESS, logger: log.logger });
    await client.waitConnected(10_000);
  });

  afterEach(async () => {
    await client?.close();
    await server?.close(100);
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  /** Opens a raw connection, writes `bytes`, and resolves when the server closes it. */
  function sendRaw(bytes: Buffer): Promise<{ closedByServer: boolean; received: Buffer }> {
    return new Promise((resolve) => {
      const sock = net.connect(simulatedSocketPath(runDir, ADDRESS));
      const received: Buffer[] = [];
      // Generous: only a server that never closes the connection ends here (and fails the test).
      const timer = setTimeout(() => {
        sock.destroy();
        resolve({ closedByServer: false, received: Buffer.concat(received) });
      }, 15_000);
      sock.on('data', (d) => received.push(d));
      sock.on('error', () => undefined);
      sock.on('close', () => {
        clearTimeout(timer);
        resolve({ closedByServer: true, received: Buffer.concat(received) });
      });
      sock.write(bytes);
    });
  }

  async function expectGoodClientServed(): Promise<void> {
    await expect(client.call('echo', { value: 42 })).resolves.toEqual({ value: 42 });
  }

  it('closes only the connection that sent an oversized length, with a logged reason', async () => {
    const header = Buffer.alloc(8);
    header.writeUInt32BE(64 * 1024 + 1, 0);
    const res = await sendRaw(header);
    expect(res.closedByServer).toBe(true);
    await waitFor(() => log.text().includes('FRAME_TOO_LARGE'), 5000, 'log line');
    await expectGoodClientServed();
  });

  it('closes only the connection with a bad CRC, with a logged reason', async () => {
    const frame = encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'echo', params: { value: 1 } })));
    frame.writeUInt32BE((frame.readUInt32BE(4) ^ 1) >>> 0, 4);
    const res = await sendRaw(frame);
    expect(res.closedByServer).toBe(true);
    expect(res.received.length).toBe(0); // nothing was executed or answered
    await waitFor(() => log.text().includes('FRAME_BAD_CRC'), 5000, 'log line');
    await expectGoodClientServed();
  });

  it('closes only the connection that sent a frame that is not JSON', async () => {
    const res = await sendRaw(encodeFrame(Buffer.from('{not json')));
    expect(res.closedByServer).toBe(true);
    await waitFor(() => log.text().includes('BAD_JSON'), 5000, 'log line');
    await expectGoodClientServed();
  });

  it('survives arbitrary garbage on many connections', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 9, maxLength: 2048 }), async (bytes) => {
        // A garbage header whose length is within the limit waits for more bytes; end the stream so the
        // server must decide. Either way the server must not crash and must keep serving the good client.
        const sock = net.connect(simulatedSocketPath(runDir, ADDRESS));
        try {
          sock.on('error', () => undefined);
          await new Promise<void>((r) => sock.once('connect', () => r()));
          const closed = new Promise<void>((r) => sock.once('close', () => r()));
          sock.end(Buffer.from(bytes));
          await closed;
        } finally {
          sock.destroy();
        }
        await expectGoodClientServed();
      }),
      { numRuns: 40 },
    );
    expect(server.stats.protocolErrors).toBeGreaterThan(0);
  });

  it('answers a valid frame with a bad envelope with INVALID_REQUEST and keeps the connection', async () => {
    const sock = net.connect(simulatedSocketPath(runDir, ADDRESS));
    try {
      const received: Buffer[] = [];
      sock.on('data', (d) => received.push(d));
      await new Promise<void>((r) => sock.once('connect', () => r()));
      sock.write(encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '1.0', id: 7, method: 'echo' }))));
      sock.write(encodeFrame(Buffer.from(JSON.stringify([{ jsonrpc: '2.0', id: 8, method: 'echo' }]))));
      sock.write(encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'echo', params: { value: 5 } }))));
      await waitFor(() => Buffer.concat(received).toString().includes('"id":9'), 10_000, 'answers');
      const text = Buffer.concat(received).toString();
      expect(text).toContain('"id":7');
      expect(text).toContain('INVALID_REQUEST');
      expect(text).toContain('batch requests are not supported');
      expect(text).toContain('"result":{"value":5}');
    } finally {
      sock.destroy();
    }
  });
});

describe('backoff', () => {
  it('grows exponentially, is capped, and is jittered within [ceiling/2, ceiling]', () => {
    const opts = { initialMs: 50, maxMs: 2000 };
    expect(backoffDelay(0, opts, () => 0)).toBe(25);
    expect(backoffDelay(0, opts, () => 1)).toBe(50);
    expect(backoffDelay(3, opts, () => 1)).toBe(400);
    expect(backoffDelay(40, opts, () => 1)).toBe(2000);
    expect(backoffDelay(40, opts, () => 0)).toBe(1000);
  });
});

describe('framed connection flow control', () => {
  /** A connection the test drives by hand. */
  function fakeConnection() {
    const state = { handlers: null as ConnectionHandlers | null, paused: false, pauses: 0, resumes: 0, buffered: 0 };
    const conn: Connection = {
      description: 'fake',
      closed: false,
      writeMode: 'queued',
      get bufferedBytes() {
        return state.buffered;
      },
      get readingPaused() {
        return state.paused;
      },
      start: (h) => {
        state.handlers = h;
      },
      write: (chunk) => {
        state.buffered += chunk.length;
      },
      pauseReading: () => {
        state.paused = true;
        state.pauses += 1;
      },
      resumeReading: () => {
        state.paused = false;
        state.resumes += 1;
      },
      end: () => undefined,
      destroy: () => undefined,
    };
    return { conn, state };
  }

  it('a pause part-way through a chunk holds the rest of its messages until resume, in order', () => {
    const { conn, state } = fakeConnection();
    const got: Array<[unknown, number]> = [];
    const framed: FramedConnection = new FramedConnection(conn, {
      message: (msg, bytes) => {
        got.push([msg, bytes]);
        if ((msg as { n: number }).n === 1) framed.pauseReading();
      },
      close: () => undefined,
    });
    const frames = [0, 1, 2, 3].map((n) => encodeFrame(Buffer.from(JSON.stringify({ n }))));
    state.handlers!.data(Buffer.concat(frames));
    expect(got).toEqual([
      [{ n: 0 }, 7],
      [{ n: 1 }, 7],
    ]);
    expect(state.paused).toBe(true);
    expect(framed.readingPaused).toBe(true);
    framed.resumeReading();
    expect(got.map(([m]) => m)).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }, { n: 3 }]);
    expect(state).toMatchObject({ paused: false, pauses: 1, resumes: 1 });
  });

  it('reports the bytes it wrote and the unsent count of the transport', () => {
    const { conn } = fakeConnection();
    const framed = new FramedConnection(conn, { message: () => undefined, close: () => undefined });
    const n = framed.send({ hello: 'world' });
    expect(n).toBe(8 + Buffer.byteLength(JSON.stringify({ hello: 'world' })));
    expect(framed.bufferedBytes).toBe(n);
  });
});
