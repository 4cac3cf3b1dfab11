/**
 * docs/SECURITY.md, "Costly requests and a parent that never reads": a parent that sends requests and never reads
 * the answers must not grow the server's memory without bound. These tests stand where a malicious parent would:
 * raw sockets to a real RpcServer over the simulated transport, pipelining requests and never reading. No timed
 * assertions on speed; every loop is bounded and every wait has a generous limit.
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { z } from 'zod';
import { encodeFrame, FrameDecoder } from '../src/framing';
import { RpcClient, RpcServer, rpcMethod, RPC_SERVER_LIMIT_DEFAULTS, type RpcServerOptions } from '../src/rpc';
import { SimulatedVsockTransport, simulatedSocketPath } from '../src/transport';
import { captureLogger, sleep, tempRunDir, waitFor } from './helpers';

const ADDRESS = 'vsock://16:5000';
const ANSWER_FILLER = 'x'.repeat(2000);

function request(id: number, method: string, params: object): Buffer {
  return encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id, method, params })));
}

/** Every raw peer a test opened: destroyed after each test, whether it passed or not. */
const openPeers = new Set<net.Socket>();
afterEach(() => {
  for (const sock of openPeers) sock.destroy();
  openPeers.clear();
});

/** A raw connection that writes whatever it is given and reads nothing until `startReading()`. */
class RawPeer {
  readonly sock: net.Socket;
  private readonly decoder = new FrameDecoder();
  readonly answers = new Map<number, { result?: unknown; error?: { message: string; data?: { code?: string } } }>();
  closedByServer = false;

  constructor(file: string) {
    this.sock = net.connect(file);
    openPeers.add(this.sock);
    this.sock.on('error', () => undefined);
    this.sock.on('close', () => {
      this.closedByServer = true;
    });
    // No 'data' listener: the socket stays paused, Node stops reading once its 16 KiB buffer is full.
  }

  connected(): Promise<void> {
    return new Promise((resolve) => this.sock.once('connect', () => resolve()));
  }

  startReading(): void {
    this.sock.on('data', (chunk: Buffer) => {
      for (const payload of this.decoder.push(chunk)) {
        const msg = JSON.parse(payload.toString('utf8')) as { id: number; result?: unknown; error?: { message: string } };
        if (this.answers.has(msg.id)) throw new Error(`answer ${msg.id} arrived twice`);
        this.answers.set(msg.id, msg);
      }
    });
  }
}

describe('a peer that never reads its answers (in-process server, small limits)', () => {
  let runDir: string;
  let server: RpcServer;
  let good: RpcClient;
  let log: ReturnType<typeof captureLogger>;
  let executed: number;
  let maxInFlightSeen: number;
  /** `big` answers only once this many of its requests have started (set by the test that uses it). */
  let bigBurst: number;
  let bigStarted: number;
  let releaseBig: () => void;
  let bigGate: Promise<void>;
  const limits = {
    maxInFlightPerConnection: 32,
    unsentHighWaterBytes: 64 * 1024,
    unsentLowWaterBytes: 16 * 1024,
    maxUnsentBytesPerConnection: 1024 * 1024,
    unsentDrainTimeoutMs: 60_000,
  } satisfies Partial<RpcServerOptions>;

  async function start(extra: Partial<RpcServerOptions> = {}): Promise<void> {
    runDir = tempRunDir();
    log = captureLogger();
    executed = 0;
    maxInFlightSeen = 0;
    bigBurst = 1;
    bigStarted = 0;
    bigGate = new Promise((r) => (releaseBig = r));
    server = new RpcServer({
      name: 'bp',
      logger: log.logger,
      ...limits,
      ...extra,
      methods: {
        blob: rpcMethod(z.strictObject({ value: z.number() }), async (p, ctx) => {
          executed += 1;
          const mine = server.connectionStats().find((c) => c.connection === ctx.connection);
          maxInFlightSeen = Math.max(maxInFlightSeen, mine?.inFlight ?? 0);
          await Promise.resolve();
          return { value: p.value, data: ANSWER_FILLER };
        }),
        big: rpcMethod(z.strictObject({ value: z.number() }), async (p) => {
          // Every request of the burst starts before any answers: a gate opened by the last to start.
          bigStarted += 1;
          if (bigStarted >= bigBurst) releaseBig();
          await bigGate;
          return { value: p.value, data: 'y'.repeat(64 * 1024) };
        }),
        echo: rpcMethod(z.strictObject({ value: z.number() }), (p) => ({ value: p.value })),
      },
    });
    const transport = new SimulatedVsockTransport(runDir);
    await server.listen(transport, ADDRESS);
    good = new RpcClient({ name: 'good', transport, address: ADDRESS, logger: log.logger });
    await good.waitConnected(10_000);
  }

  afterEach(async () => {
    releaseBig?.();
    await good?.close();
    await server?.close(100);
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  it('stops reading the connection, keeps its backlog and in-flight count bounded, serves others, and answers everything once read', async () => {
    await start();
    const peer = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    await peer.connected();
    const total = 3000; // about 280 KB of requests; answers would be about 6 MB
    for (let i = 0; i < total; i++) peer.sock.write(request(i, 'blob', { value: i }));

    await waitFor(() => server.stats.pausedConnections === 1, 10_000, 'the server to stop reading the connection');
    expect(log.text()).toContain('stopped reading a connection whose peer does not read its answers');

    // While paused the server reads nothing more from it: the count of requests it took stays put.
    const answerFrame = Buffer.byteLength(JSON.stringify({ jsonrpc: '2.0', id: total, result: { value: total, data: ANSWER_FILLER } })) + 8;
    const requestsAtPause = server.stats.requests;
    for (let i = 0; i < 20; i++) {
      await sleep(10);
      const [stats] = server.connectionStats().filter((c) => c.readingPaused);
      expect(stats).toBeDefined();
      expect(stats!.unsentBytes).toBeLessThanOrEqual(limits.unsentHighWaterBytes + limits.maxInFlightPerConnection * answerFrame);
      expect(server.stats.unsentBytes).toBeLessThanOrEqual(limits.maxUnsentBytesPerConnection);
      // The good client's request goes through while the bad connection is paused.
      await expect(good.call('echo', { value: i })).resolves.toEqual({ value: i });
    }
    expect(server.stats.requests).toBe(requestsAtPause + 20); // only the good client's echoes
    expect(executed).toBeLessThan(total);
    expect(maxInFlightSeen).toBeLessThanOrEqual(limits.maxInFlightPerConnection);
    expect(peer.closedByServer).toBe(false);

    // Once the peer reads again, it gets an answer for every request it sent (a result, or OVERLOADED for
    // what was beyond the per-connection cap), and the connection is read again.
    peer.startReading();
    await waitFor(() => peer.answers.size === total, 20_000, 'every answer');
    const overloaded = [...peer.answers.values()].filter((a) => a.error);
    for (const a of overloaded) expect(a.error!.message).toMatch(/requests in flight on this connection/);
    expect(executed + overloaded.length).toBe(total);
    expect(maxInFlightSeen).toBeLessThanOrEqual(limits.maxInFlightPerConnection);
    await waitFor(() => server.stats.pausedConnections === 0, 5000, 'resume');
    expect(log.text()).toContain('resumed reading a connection whose backlog drained');
    peer.sock.destroy();
  });

  it('pauses a connection below its own high-water mark when all connections together hold more than maxUnsentBytes', async () => {
    await start({ unsentHighWaterBytes: 1024 * 1024, maxUnsentBytes: 96 * 1024 });
    const peer = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    await peer.connected();
    for (let i = 0; i < 3000; i++) peer.sock.write(request(i, 'blob', { value: i }));
    await waitFor(() => server.stats.pausedConnections === 1, 10_000, 'the server to stop reading the connection');
    const [paused] = server.connectionStats().filter((c) => c.readingPaused);
    expect(paused!.unsentBytes).toBeLessThan(1024 * 1024);
    expect(server.stats.unsentBytes).toBeLessThanOrEqual(96 * 1024 + limits.maxInFlightPerConnection * 2100);
    await expect(good.call('echo', { value: 3 })).resolves.toEqual({ value: 3 });
    peer.startReading();
    await waitFor(() => peer.answers.size === 3000, 20_000, 'every answer');
    peer.sock.destroy();
  });

  it('closes a connection whose backlog does not drain within the timeout, and logs it', async () => {
    await start({ unsentDrainTimeoutMs: 200 });
    const peer = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    await peer.connected();
    for (let i = 0; i < 3000; i++) peer.sock.write(request(i, 'blob', { value: i }));
    await waitFor(() => server.stats.backlogClosed === 1, 10_000, 'the server to close the stalled connection');
    expect(server.stats.connections).toBe(1); // the good client's
    expect(server.stats.unsentBytes).toBe(0);
    expect(server.stats.pausedConnections).toBe(0);
    expect(log.text()).toMatch(/closed a connection: its unsent answers did not drain within 200 ms/);
    await expect(good.call('echo', { value: 1 })).resolves.toEqual({ value: 1 });
    // The peer, once it looks, finds the connection closed.
    peer.startReading();
    await waitFor(() => peer.closedByServer, 5000, 'the peer to see the close');
  });

  it('closes a connection whose unsent answers pass the hard cap (answers of requests already running)', async () => {
    // 32 requests in flight at once with 64 KiB answers: 2 MiB of answers against a 256 KiB hard cap.
    await start({ maxUnsentBytesPerConnection: 256 * 1024, maxInFlightPerConnection: 32 });
    bigBurst = 32;
    const peer = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    await peer.connected();
    peer.sock.write(Buffer.concat(Array.from({ length: 32 }, (_, i) => request(i, 'big', { value: i }))));
    await waitFor(() => server.stats.backlogClosed === 1, 10_000, 'the server to close the connection');
    expect(server.stats).toMatchObject({ connections: 1, unsentBytes: 0, pausedConnections: 0 });
    expect(log.text()).toMatch(/closed a connection: its unsent answers passed 262144 bytes/);
    await expect(good.call('echo', { value: 2 })).resolves.toEqual({ value: 2 });
    peer.startReading();
    await waitFor(() => peer.closedByServer, 5000, 'the peer to see the close');
  });
});

describe('per-connection and global caps on requests in flight', () => {
  let runDir: string;
  let transport: SimulatedVsockTransport;
  let log: ReturnType<typeof captureLogger>;
  const gates: Array<() => void> = [];
  let started = 0;
  const servers: RpcServer[] = [];
  /** A server closed after the test whatever its outcome. */
  const serve = async (opts: Omit<RpcServerOptions, 'logger' | 'methods'>) => {
    const server = new RpcServer({ logger: log.logger, methods: methods(), ...opts });
    servers.push(server);
    await server.listen(transport, ADDRESS);
    return server;
  };

  const methods = () => ({
    gated: rpcMethod(z.strictObject({ value: z.number(), pad: z.string().optional() }), (p) => {
      started += 1;
      return new Promise((resolve) => gates.push(() => resolve({ value: p.value })));
    }),
  });

  beforeEach(() => {
    runDir = tempRunDir();
    transport = new SimulatedVsockTransport(runDir);
    log = captureLogger();
    started = 0;
  });

  afterEach(async () => {
    for (const g of gates.splice(0)) g();
    for (const server of servers.splice(0)) await server.close(100);
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  async function readAnswers(peer: RawPeer, n: number): Promise<Array<{ id: number; code?: string; message?: string }>> {
    await waitFor(() => peer.answers.size >= n, 5000, `${n} answers`);
    return [...peer.answers.entries()].map(([id, a]) => ({
      id,
      ...(a.error ? { code: a.error.data?.code, message: a.error.message } : {}),
    }));
  }

  it('answers OVERLOADED beyond the per-connection request cap without executing, and leaves other connections their own share', async () => {
    const server = await serve({ name: 'caps', maxConcurrent: 1000, maxInFlightPerConnection: 4 });
    const a = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    const b = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    await Promise.all([a.connected(), b.connected()]);
    a.startReading();
    b.startReading();
    a.sock.write(Buffer.concat(Array.from({ length: 10 }, (_, i) => request(i, 'gated', { value: i }))));
    const answers = await readAnswers(a, 6);
    expect(answers).toHaveLength(6);
    for (const ans of answers)
      expect(ans).toMatchObject({ code: 'OVERLOADED', message: 'more than 4 requests in flight on this connection' });
    expect(started).toBe(4);
    expect(
      server
        .connectionStats()
        .map((c) => c.inFlight)
        .sort(),
    ).toEqual([0, 4]);
    // Another connection still gets its own 4.
    b.sock.write(Buffer.concat(Array.from({ length: 4 }, (_, i) => request(100 + i, 'gated', { value: i }))));
    await waitFor(() => started === 8, 5000, 'the other connection to run its requests');
    expect(b.answers.size).toBe(0);
    expect(server.stats.overloaded).toBe(6);
    for (const g of gates.splice(0)) g();
    await readAnswers(b, 4);
    a.sock.destroy();
    b.sock.destroy();
    await server.close(100);
  });

  it('answers OVERLOADED beyond the per-connection and global request-byte caps', async () => {
    const server = await serve({ name: 'bytes', maxFrameBytes: 4096, maxInFlightBytesPerConnection: 4096, maxInFlightBytes: 6000 });
    const pad = 'p'.repeat(1800); // about 1.9 KB per request: two fit in 4096 bytes, a third does not
    const a = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    await a.connected();
    a.startReading();
    a.sock.write(Buffer.concat([0, 1, 2].map((i) => request(i, 'gated', { value: i, pad }))));
    const [third] = await readAnswers(a, 1);
    expect(third).toMatchObject({ id: 2, message: 'more than 4096 bytes of requests in flight on this connection' });
    expect(started).toBe(2);
    expect(server.stats.inFlightBytes).toBeGreaterThan(3600);
    // A second connection may run one more (the global 6000 bytes), not two.
    const b = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    await b.connected();
    b.startReading();
    b.sock.write(Buffer.concat([10, 11].map((i) => request(i, 'gated', { value: i, pad }))));
    const [bAnswer] = await readAnswers(b, 1);
    expect(bAnswer).toMatchObject({ id: 11, message: 'more than 6000 bytes of requests in flight' });
    expect(started).toBe(3);
    for (const g of gates.splice(0)) g();
    await waitFor(() => server.stats.inFlightBytes === 0 && server.stats.inFlight === 0, 5000, 'all to finish');
    a.sock.destroy();
    b.sock.destroy();
    await server.close(100);
  });

  it('closes connections beyond maxConnections on arrival', async () => {
    const server = await serve({ name: 'conns', maxConnections: 2 });
    const peers = [0, 1, 2].map(() => new RawPeer(simulatedSocketPath(runDir, ADDRESS)));
    await Promise.all(peers.map((p) => p.connected()));
    await waitFor(() => peers.filter((p) => p.closedByServer).length === 1, 5000, 'one refused');
    expect(server.stats).toMatchObject({ connections: 2, refusedConnections: 1 });
    expect(log.text()).toContain('refused a connection: too many open');
    for (const p of peers) p.sock.destroy();
    await server.close(100);
  });

  it('refuses limits that contradict each other or would refuse every maximum-size request', () => {
    const base = { name: 'x', logger: log.logger, methods: {} };
    expect(() => new RpcServer({ ...base, unsentLowWaterBytes: 10, unsentHighWaterBytes: 10 })).toThrow(
      /unsentLowWaterBytes < unsentHighWaterBytes/,
    );
    expect(() => new RpcServer({ ...base, maxUnsentBytesPerConnection: 1024 })).toThrow(/<= maxUnsentBytesPerConnection/);
    expect(() => new RpcServer({ ...base, maxFrameBytes: 65536, maxInFlightBytesPerConnection: 65535 })).toThrow(/at least maxFrameBytes/);
    expect(() => new RpcServer({ ...base, maxConnections: 0 })).toThrow(/positive integer/);
    // Defaults grow with the frame limit rather than refusing the biggest frame.
    const big = new RpcServer({ ...base, maxFrameBytes: 32 * 1024 * 1024 });
    expect(big.effectiveLimits.maxInFlightBytesPerConnection).toBe(32 * 1024 * 1024);
    expect(new RpcServer(base).effectiveLimits).toEqual(RPC_SERVER_LIMIT_DEFAULTS);
  });
});

/**
 * The memory bound, measured: the server runs in its own process with the default limits, a peer pipelines
 * 60,000 requests with 1 KiB answers (60 MiB of answers) and never reads. Before the fix the server read them
 * all and held every answer (measured: RSS 55 -> 337 MiB for 100,000 such requests).
 */
const SERVER_SCRIPT = `
import { z } from 'zod';
import pino from 'pino';
import { RpcServer, rpcMethod } from ${JSON.stringify(path.resolve(__dirname, '../src/rpc'))};
import { SimulatedVsockTransport } from ${JSON.stringify(path.resolve(__dirname, '../src/transport'))};
const filler = 'x'.repeat(1024);
let executed = 0;
const server = new RpcServer({
  name: 'memory',
  logger: pino({ level: 'silent' }),
  methods: {
    ping: rpcMethod(z.strictObject({ n: z.number() }), (p) => { executed += 1; return { n: p.n, filler }; }),
    echo: rpcMethod(z.strictObject({ value: z.number() }), (p) => ({ value: p.value })),
  },
});
function memory() {
  for (let i = 0; i < 3; i++) (globalThis as any).gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers };
}
process.on('message', (msg: string) => {
  if (msg === 'report') process.send!({ memory: memory(), executed, stats: server.stats, connections: (server as any).connectionStats?.() ?? [], limits: (server as any).effectiveLimits ?? null });
  if (msg === 'exit') process.exit(0);
});
server.listen(new SimulatedVsockTransport(process.argv[2] as string), ${JSON.stringify(ADDRESS)}).then(() => process.send!({ ready: true }));
`;

interface Report {
  memory: { rss: number; heapUsed: number; arrayBuffers: number };
  executed: number;
  stats: RpcServer['stats'];
  connections: ReturnType<RpcServer['connectionStats']>;
  limits: typeof RPC_SERVER_LIMIT_DEFAULTS | null;
}

describe('server memory with a never-reading peer (separate process, default limits)', () => {
  let runDir: string;
  let child: ChildProcess;

  beforeAll(async () => {
    runDir = tempRunDir();
    const entry = path.join(runDir, 'server.ts');
    fs.writeFileSync(entry, SERVER_SCRIPT);
    const outfile = path.join(runDir, 'server.js');
    const nodeModules = path.resolve(__dirname, '../../node_modules');
    buildSync({
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      nodePaths: [nodeModules],
      logLevel: 'silent',
    });
    child = fork(outfile, [runDir], { execArgv: ['--expose-gc'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    });
  }, 60_000);

  afterAll(async () => {
    // The server process never outlives the suite: asked to exit, killed if it does not.
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      if (child.connected) child.send('exit');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const report = (): Promise<Report> =>
    new Promise((resolve) => {
      child.once('message', (m) => resolve(m as Report));
      child.send('report');
    });

  it('stays within its limits, keeps serving other connections, and answers everything once the peer reads', async () => {
    const MiB = 1024 * 1024;
    const before = await report();
    const peer = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    await peer.connected();
    const total = 60_000;
    // Written regardless of backpressure: what the server does not read waits in this process (about 4 MB).
    for (let i = 0; i < total; i++) peer.sock.write(request(i, 'ping', { n: i }));

    // Until the server stops reading it (or, without the fix, has taken every request).
    let r = await report();
    const until = Date.now() + 60_000; // generous: only a server that never pauses (nor takes everything) ends here
    while (r.stats.pausedConnections !== 1 && r.stats.requests < total && Date.now() < until) {
      await sleep(20);
      r = await report();
    }
    // A few more looks while the peer still does not read: nothing more is taken from it. (Observation
    // windows, not synchronisation: they cannot fail a server that keeps its limits.)
    for (let i = 0; i < 5; i++) {
      await sleep(50);
      const again = await report();
      expect(again.stats.requests).toBe(r.stats.requests);
      r = again;
    }
    const growth = {
      rssMiB: (r.memory.rss - before.memory.rss) / MiB,
      heapMiB: (r.memory.heapUsed - before.memory.heapUsed) / MiB,
      arrayBuffersMiB: (r.memory.arrayBuffers - before.memory.arrayBuffers) / MiB,
    };
    // The figures, for the record (RSS 55 -> 337 MiB before the fix with 100,000 requests).
    console.log(JSON.stringify({ sent: total, taken: r.stats.requests, executed: r.executed, unsentBytes: r.stats.unsentBytes, growth }));
    // The default limits (checked against RPC_SERVER_LIMIT_DEFAULTS below).
    const maxUnsentBytesPerConnection = 16 * MiB;
    const maxInFlightPerConnection = 2048;
    expect(growth.arrayBuffersMiB).toBeLessThan(maxUnsentBytesPerConnection / MiB + 2);
    expect(growth.rssMiB).toBeLessThan(48);
    expect(r.stats.requests).toBeLessThan(total);
    expect(r.stats.pausedConnections).toBe(1);
    expect(r.limits).toEqual(RPC_SERVER_LIMIT_DEFAULTS);
    expect(RPC_SERVER_LIMIT_DEFAULTS).toMatchObject({ maxUnsentBytesPerConnection, maxInFlightPerConnection });
    expect(r.stats.unsentBytes).toBeLessThanOrEqual(maxUnsentBytesPerConnection);
    expect(r.connections.find((c) => c.readingPaused)!.inFlight).toBeLessThanOrEqual(maxInFlightPerConnection);

    // Another connection is served meanwhile.
    const other = new RawPeer(simulatedSocketPath(runDir, ADDRESS));
    await other.connected();
    other.startReading();
    other.sock.write(request(1, 'echo', { value: 7 }));
    await waitFor(() => other.answers.size === 1, 5000, 'the other connection to be answered');
    expect(other.answers.get(1)).toMatchObject({ result: { value: 7 } });
    other.sock.destroy();

    // The peer reads: every request is answered (none refused at default limits), and the backlog is gone.
    peer.startReading();
    await waitFor(() => peer.answers.size === total, 60_000, 'every answer');
    expect([...peer.answers.values()].filter((a) => a.error)).toEqual([]);
    const after = await report();
    expect(after.executed).toBe(total);
    expect(after.stats).toMatchObject({ pausedConnections: 0, unsentBytes: 0, backlogClosed: 0 });
    peer.sock.destroy();
  }, 120_000);
});
