/**
 * What the RpcClient gives a liveness check and a prompt reconnect (issue 22, items 4 and 8): `probe` (any
 * answer in time proves the peer alive, outside the in-flight cap), `failPending` (fail the calls waiting on a
 * peer found dead, keeping the connection), the reconnect schedule (the first attempt after a connection that
 * had stayed up is made at once; one that drops at once keeps backing off) and `retryNow` (bounded, however
 * often it is called). Read from the client's own counters, not timed.
 */
import fs from 'node:fs';
import { KeystoreError } from '../src/errors';
import { RpcClient, RpcServer, rpcMethod, type RpcApi } from '../src/rpc';
import { SimulatedVsockTransport, type Listener } from '../src/transport';
import { z } from 'zod';
import { captureLogger, rejection, tempRunDir, waitFor } from './helpers';

const ADDRESS = 'vsock://16:7100';

let runDir: string;
let transport: SimulatedVsockTransport;
let listener: Listener | undefined;
let server: RpcServer | undefined;
let client: RpcClient<RpcApi> | undefined;
/** Calls the slow method holds until released. */
const held: Array<() => void> = [];

beforeEach(() => {
  runDir = tempRunDir('nks-live-');
  transport = new SimulatedVsockTransport(runDir);
});
afterEach(async () => {
  for (const r of held.splice(0)) r();
  await client?.close();
  await server?.close(100);
  await listener?.close();
  client = server = listener = undefined;
  fs.rmSync(runDir, { recursive: true, force: true });
});

const serve = async () => {
  server = new RpcServer({
    name: 'peer',
    logger: captureLogger('error').logger,
    methods: {
      ping: rpcMethod(z.strictObject({}), () => ({})),
      fail: rpcMethod(z.strictObject({}), () => {
        throw new KeystoreError('TIMEOUT', 'an error answer is still an answer');
      }),
      slow: rpcMethod(z.strictObject({}), () => new Promise((resolve) => held.push(() => resolve({ done: true })))),
    },
  });
  listener = await server.listen(transport, ADDRESS);
};

const makeClient = (extra: Partial<ConstructorParameters<typeof RpcClient>[0]> = {}) =>
  (client = new RpcClient({
    name: 'test',
    transport,
    address: ADDRESS,
    logger: captureLogger('error').logger,
    defaultDeadlineMs: 30_000,
    ...extra,
  }));

const connect = async (extra: Partial<ConstructorParameters<typeof RpcClient>[0]> = {}) => {
  const c = makeClient(extra);
  await c.waitConnected(5000);
  return c;
};

describe('probe and failPending', () => {
  it('a probe is answered by a result or an error alike, and not by a peer that holds it', async () => {
    await serve();
    const c = await connect();
    expect(await c.probe('ping', {}, 5000)).toBe(true);
    expect(await c.probe('fail', {}, 5000)).toBe(true); // the peer answered TIMEOUT: it is alive
    expect(await c.probe('slow', {}, 50)).toBe(false);
    expect(c.pendingCount).toBe(0);
  });

  it('a probe passes the in-flight cap the calls are held to', async () => {
    await serve();
    const c = await connect({ maxInFlight: 2 });
    const slow = [c.call('slow', {}), c.call('slow', {})];
    await waitFor(() => held.length === 2, 5000, 'two slow calls held');
    expect((await rejection(c.call('ping', {}))).code).toBe('OVERLOADED');
    expect(await c.probe('ping', {}, 5000)).toBe(true);
    for (const r of held.splice(0)) r();
    await Promise.all(slow);
  });

  it('failPending fails the waiting calls with UNAVAILABLE now and keeps the connection', async () => {
    await serve();
    const c = await connect();
    const started = Date.now();
    const waiting = [c.call('slow', {}), c.call('slow', {})];
    await waitFor(() => held.length === 2, 5000, 'two slow calls held');
    const probe = c.probe('slow', {}, 10_000); // a probe in flight is not failed with them
    await waitFor(() => held.length === 3, 5000, 'the probe held');
    expect(c.failPending('the peer does not answer')).toBe(2);
    const errors = await Promise.all(waiting.map((p) => rejection(p)));
    expect(errors.map((e) => e.code)).toEqual(['UNAVAILABLE', 'UNAVAILABLE']);
    expect(errors[0]?.message).toContain('the peer does not answer');
    expect(Date.now() - started).toBeLessThan(30_000); // not the 30 s deadline
    expect(c.connected).toBe(true);
    expect(await c.call('ping', {})).toEqual({});
    // The peer's late answers are dropped; the probe's is still taken.
    for (const r of held.splice(0)) r();
    expect(await probe).toBe(true);
    expect(c.pendingCount).toBe(0);
    expect(c.reconnects.attempts).toBe(1);
  });
});

describe('reconnect schedule', () => {
  it('reconnects at once after a connection that had stayed up drops', async () => {
    await serve();
    // A backoff long enough that any reconnect within the test is the immediate one.
    const c = await connect({ backoff: { initialMs: 100, maxMs: 100 } });
    await new Promise((r) => setTimeout(r, 150)); // up longer than backoff.maxMs: a stable connection
    const before = c.reconnects.attempts;
    // The connection drops (as when the peer restarts); the peer still listens.
    (c as unknown as { conn: { destroy(): void } }).conn.destroy();
    await waitFor(() => c.reconnects.attempts > before, 5000, 'a reconnect attempt');
    expect(c.reconnects.lastDelayMs).toBe(0);
    await c.waitConnected(5000);
    expect(await c.call('ping', {})).toEqual({});
  });

  it('keeps backing off from a peer that accepts and closes at once', async () => {
    let accepted = 0;
    listener = await transport.listen(ADDRESS, (conn) => {
      accepted += 1;
      conn.destroy();
    });
    const c = makeClient({ backoff: { initialMs: 20, maxMs: 1000 } });
    c.start();
    await waitFor(() => accepted >= 4, 10_000, 'four connections');
    // Every drop came soon after the connection was made: none is retried at once.
    expect(c.reconnects.lastDelayMs).toBeGreaterThan(0);
  });

  it('retryNow connects during a long backoff, once however often it is called', async () => {
    const c = makeClient({ backoff: { initialMs: 60_000, maxMs: 60_000 } });
    c.start();
    await waitFor(() => c.reconnects.lastDelayMs !== undefined, 5000, 'the first connect to fail'); // nothing listens
    expect(c.reconnects.lastDelayMs).toBeGreaterThanOrEqual(30_000);
    await serve();
    const before = c.reconnects.attempts;
    // A flood of hints (a hostile parent's hellos, each a hint in the enclave): one attempt, made within
    // 50 ms of the last one rather than at the end of the minute's backoff.
    for (let i = 0; i < 1000; i++) c.retryNow();
    await c.waitConnected(5000);
    expect(c.reconnects.attempts).toBe(before + 1);
    expect(c.retryNow()).toBe(false); // connected: nothing to do
  });

  it('retryNow tries at most once per 50 ms while the peer keeps refusing', async () => {
    const c = makeClient({ backoff: { initialMs: 60_000, maxMs: 60_000 } });
    c.start();
    await waitFor(() => c.reconnects.lastDelayMs !== undefined, 5000, 'the first connect to fail');
    const before = c.reconnects.attempts;
    const started = Date.now();
    while (Date.now() - started < 300) {
      c.retryNow();
      await new Promise((r) => setImmediate(r));
    }
    const elapsed = Date.now() - started;
    const made = c.reconnects.attempts - before;
    expect(made).toBeGreaterThanOrEqual(1);
    expect(made).toBeLessThanOrEqual(Math.floor(elapsed / 50) + 1);
  });
});
