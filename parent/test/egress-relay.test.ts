/**
 * The egress relay (parent/src/egress/relay.ts) over the simulated vsock transport, with a real TCP server on
 * loopback as the remote host. The test stands where the enclave would: a raw socket that sends the request
 * frame (shared/src/egress.ts) and then speaks bytes.
 *
 * DNS: the relay resolves names itself, and what a name resolves to is what decides most refusals. Tests here
 * cannot make a real DNS server answer 169.254.169.254 or a mix of public and private addresses, so most
 * relays get an injected `lookup` (the table DNS below) that stands in for the system resolver; the connect
 * that follows is real. Two tests use the real resolver (`localhost`, and an IP literal).
 *
 * No timed assertions on speed: timeouts are made short only so the tests finish; every wait has a generous limit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import client from 'prom-client';
import { EGRESS_OK, encodeEgressRequest, type EgressRequest } from '@nks/shared/egress';
import { encodeFrame } from '@nks/shared/framing';
import { silentLogger } from '@nks/shared/log';
import { SimulatedVsockTransport, simulatedSocketPath } from '@nks/shared/transport';
import { captureLogger, sleep, tempRunDir, waitFor, type CapturedLogger } from '@nks/shared-test/helpers';
import {
  EgressConfigSchema,
  EGRESS_REFUSAL_REASONS,
  REFUSAL_LINGER_MS,
  startEgressRelay,
  type EgressConfig,
  type EgressLookup,
  type EgressMetrics,
  type EgressRefusalReason,
  type EgressRelay,
} from '../src/egress/relay';

const runDir = tempRunDir('nks-egress-');
const transport = new SimulatedVsockTransport(runDir);
/** Each relay listens on its own vsock port, so one test's socket file never meets the next's. */
let nextVsockPort = 18001;

// ---------------------------------------------------------------------------------------------------------
// What DNS would answer. The relay gets these through `lookup`; see the header comment.
const PUBLIC = '93.184.215.14';
const DNS: Record<string, string[]> = {
  'jwks.test': ['127.0.0.1'],
  'other.test': ['127.0.0.1'],
  'metadata.test': ['169.254.169.254'],
  'ecs-metadata.test': ['169.254.170.2'],
  'metadata6.test': ['fd00:ec2::254'],
  'mapped-metadata.test': ['::ffff:169.254.169.254'],
  'loopback-and-metadata.test': ['127.0.0.1', '169.254.169.254'],
  'private-and-metadata.test': ['10.0.0.1', '::ffff:a9fe:aa02'],
  'private.test': ['10.0.0.1'],
  'public-and-private.test': [PUBLIC, '10.0.0.1'],
  'loopback-and-private.test': ['127.0.0.1', '192.168.1.5'],
  'mapped-loopback.test': ['::ffff:127.0.0.1'],
  'link-local6.test': ['fe80::1'],
  // Global addresses inside the operator's network (a VPC's IPv6 range, an Elastic IP): review 17.
  'vpc6.test': ['2600:1f18:aaaa:bbbb::10'],
  'eip.test': [PUBLIC],
  'empty.test': [],
  // ::1 first, where the test server does not listen: the relay tries the next checked address.
  'dual.test': ['::1', '127.0.0.1'],
};
const NEVER_ANSWERS = 'slow.test';
/** Answers 127.0.0.1 when the test calls `answerDeferred()`. */
const DEFERRED = 'deferred.test';
let answerDeferred: () => void = () => undefined;
/** Every name the relay asked about, in order. */
const lookups: string[] = [];
const fakeDns: EgressLookup = async (host) => {
  lookups.push(host);
  if (host === NEVER_ANSWERS) return new Promise(() => undefined);
  if (host === DEFERRED) return new Promise((resolve) => (answerDeferred = () => resolve([{ address: '127.0.0.1', family: 4 }])));
  const addresses = DNS[host];
  if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return addresses.map((address) => ({ address, family: net.isIP(address) }));
};

// ---------------------------------------------------------------------------------------------------------
// The remote host: a TCP server on loopback that records every connection and what it received.

interface Target {
  port: number;
  sockets: net.Socket[];
  received: Buffer[][];
  close(): Promise<void>;
}
const targets: Target[] = [];

/** `onConnection` decides what the server does; the default echoes. */
async function startTarget(onConnection: (s: net.Socket, index: number) => void = (s) => s.pipe(s)): Promise<Target> {
  const sockets: net.Socket[] = [];
  const received: Buffer[][] = [];
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    const chunks: Buffer[] = [];
    received.push(chunks);
    sockets.push(s);
    s.on('data', (d: Buffer) => chunks.push(d));
    onConnection(s, sockets.length - 1);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const target: Target = {
    port: (server.address() as net.AddressInfo).port,
    sockets,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  targets.push(target);
  return target;
}

/** A loopback port where nothing listens (connect refused). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A blackhole on loopback: a server in another process that stops accepting (its event loop blocked) with a
 * backlog of one. Once its accept queue is full, the kernel drops further SYNs, so a connect neither succeeds
 * nor fails: it hangs until the relay's connect timeout. Made on first use, killed after the file.
 */
let blackholeChild: ChildProcess | undefined;
const blackholeFillers: net.Socket[] = [];
let blackholePort: Promise<number> | undefined;
function blackhole(): Promise<number> {
  blackholePort ??= (async () => {
    const code = `const s = require('net').createServer();
s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
  process.stdout.write(s.address().port + '\\n', () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0));
});`;
    const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    blackholeChild = child;
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      child.once('exit', (c) => reject(new Error(`the blackhole server exited with ${c}`)));
    });
    await sleep(100); // the child blocks right after writing its port
    for (let i = 0; i < 16; i++) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      blackholeFillers.push(s);
      const connected = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 1000);
        s.once('connect', () => {
          clearTimeout(t);
          resolve(true);
        });
      });
      if (!connected) return port; // the queue is full: connects to it now hang
    }
    throw new Error('could not fill the blackhole server’s accept queue');
  })();
  return blackholePort;
}

// ---------------------------------------------------------------------------------------------------------
// The relay under test.

interface Started {
  relay: EgressRelay;
  config: EgressConfig;
  logs: CapturedLogger;
  registry: client.Registry;
  hosts: Set<string>;
}
const relays: EgressRelay[] = [];

async function startRelay(
  overrides: Record<string, unknown> = {},
  options: { lookup?: EgressLookup | null; hosts?: Iterable<string>; allowedHosts?: () => Iterable<string>; metrics?: EgressMetrics } = {},
): Promise<Started> {
  const config = EgressConfigSchema.parse({
    listen: `vsock://3:${nextVsockPort++}`,
    allowLoopback: true,
    allowedPorts: [443],
    connectTimeoutMs: 2000,
    ...overrides,
  });
  const logs = captureLogger('debug');
  const registry = new client.Registry();
  const hosts = new Set(options.hosts ?? ['jwks.test']);
  const relay = await startEgressRelay({
    config,
    transport,
    allowedHosts: options.allowedHosts ?? (() => hosts),
    log: logs.logger,
    metrics: options.metrics ?? registry,
    ...(options.lookup === null ? {} : { lookup: options.lookup ?? fakeDns }),
  });
  relays.push(relay);
  return { relay, config, logs, registry, hosts };
}

// ---------------------------------------------------------------------------------------------------------
// The enclave's side: a raw socket to the relay's simulated vsock address.

interface Outcome {
  /** Bytes the relay wrote. */
  bytes: number;
  /** Whether the socket saw a clean end of stream. */
  ended: boolean;
  /** The socket error, if it closed with one. */
  error: string | null;
}
/** What every refusal looks like to the enclave: nothing written, a clean end. */
const REFUSED: Outcome = { bytes: 0, ended: true, error: null };

class Enclave {
  readonly sock: net.Socket;
  readonly chunks: Buffer[] = [];
  ended = false;
  error: string | null = null;
  closedNow = false;
  readonly closed: Promise<Outcome>;
  readonly connected: Promise<void>;

  constructor(relay: EgressRelay, options: { reading?: boolean; allowHalfOpen?: boolean } = {}) {
    this.sock = net.connect({ path: simulatedSocketPath(runDir, relay.address), allowHalfOpen: options.allowHalfOpen ?? false });
    enclaves.push(this);
    this.connected = new Promise((resolve) => this.sock.once('connect', () => resolve()));
    this.sock.on('data', (d: Buffer) => this.chunks.push(d));
    if (options.reading === false) this.sock.pause();
    this.sock.on('end', () => (this.ended = true));
    this.sock.on('error', (err: NodeJS.ErrnoException) => (this.error = err.code ?? err.message));
    this.closed = new Promise((resolve) =>
      this.sock.once('close', () => {
        this.closedNow = true;
        resolve({ bytes: this.received().length, ended: this.ended, error: this.error });
      }),
    );
  }

  static async request(relay: EgressRelay, req: EgressRequest, options: { reading?: boolean } = {}): Promise<Enclave> {
    const e = new Enclave(relay, options);
    e.sock.write(encodeFrame(encodeEgressRequest(req)));
    return e;
  }

  received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** Waits for the relay's EGRESS_OK (fails if it closes instead). */
  async opened(): Promise<void> {
    await waitFor(() => this.chunks.length > 0 || this.closedNow, 10_000, 'the relay to answer');
    expect(this.received()[0]).toBe(EGRESS_OK);
  }

  /** Bytes after EGRESS_OK. */
  payload(): Buffer {
    return this.received().subarray(1);
  }
}
const enclaves: Enclave[] = [];

/** Waits until `value()` has not changed for a while: the flow has stopped where backpressure holds it. */
async function settled(value: () => number): Promise<number> {
  let last = value();
  let since = Date.now();
  const until = Date.now() + 20_000;
  while (Date.now() - since < 500) {
    if (Date.now() > until) throw new Error('the relay kept moving bytes: no backpressure');
    await sleep(50);
    const v = value();
    if (v !== last) {
      last = v;
      since = Date.now();
    }
  }
  return last;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Every net.connect is recorded (tcpConnects: the relay's TCP connects; test clients dial Unix paths). A TCP
 * connect to anything but loopback is not made: the tests stay on loopback even when the relay under test is
 * wrong (it then fails with ETESTGUARD, and the test sees the attempt in tcpConnects).
 */
const realConnect = net.connect;
const connectSpy = jest.spyOn(net, 'connect').mockImplementation((...args: unknown[]) => {
  const a = args[0];
  const host = typeof a === 'object' && a !== null && 'host' in a ? String(a.host) : null;
  if (host !== null && !/^127\./.test(host) && host !== '::1') {
    const socket = new net.Socket();
    process.nextTick(() => socket.destroy(Object.assign(new Error(`test guard: no connect to ${host}`), { code: 'ETESTGUARD' })));
    return socket;
  }
  return (realConnect as (...a: unknown[]) => net.Socket)(...args);
});
const tcpConnects = (): string[] =>
  connectSpy.mock.calls.flatMap((args) => {
    const a = args[0] as unknown;
    return typeof a === 'object' && a !== null && 'host' in a ? [String(a.host)] : [];
  });

beforeEach(() => {
  connectSpy.mockClear();
  lookups.length = 0;
});

afterEach(async () => {
  for (const e of enclaves.splice(0)) e.sock.destroy();
  await Promise.all(relays.splice(0).map((r) => r.close()));
  await Promise.all(targets.splice(0).map((t) => t.close()));
});

afterAll(() => {
  connectSpy.mockRestore();
  for (const s of blackholeFillers) s.destroy();
  blackholeChild?.kill('SIGKILL');
});

// ---------------------------------------------------------------------------------------------------------

describe('egress relay: relaying', () => {
  it('answers EGRESS_OK and pipes bytes both ways to the checked address, then closes both sides', async () => {
    const target = await startTarget();
    const { relay, logs, registry } = await startRelay({ allowedPorts: [target.port] });
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await e.opened();
    e.sock.write('GET /jwks HTTP/1.1\r\n\r\n');
    await waitFor(() => e.payload().length >= 22, 10_000, 'the echo');
    expect(e.payload().toString()).toBe('GET /jwks HTTP/1.1\r\n\r\n');
    expect(Buffer.concat(target.received[0] ?? []).toString()).toBe('GET /jwks HTTP/1.1\r\n\r\n');
    expect(lookups).toEqual(['jwks.test']);
    expect(tcpConnects()).toEqual(['127.0.0.1']);
    expect(relay.stats()).toMatchObject({ open: 1, relaying: 1, accepted: 1, relayed: 1, bytes: { outbound: 22, inbound: 22 } });

    // The enclave closes: the relay ends the remote side, and the session is gone.
    e.sock.end();
    await e.closed;
    await waitFor(() => target.sockets[0]?.closed === true, 10_000, 'the remote side to close');
    await waitFor(() => relay.stats().open === 0, 10_000, 'the session to end');
    expect(relay.stats().closes.closed).toBe(1);

    const text = await registry.metrics();
    expect(text).toContain('nks_egress_bytes_total{direction="outbound"} 22');
    expect(text).toContain('nks_egress_bytes_total{direction="inbound"} 22');
    expect(text).toContain('nks_egress_connections 0');
    expect(text).toContain('nks_egress_closes_total{reason="closed"} 1');
    const opened = logs.lines().find((l) => l.msg === 'egress connection opened');
    expect(opened).toMatchObject({ host: 'jwks.test', port: target.port, address: '127.0.0.1' });
    expect(logs.text()).not.toContain('GET /jwks');
  });

  it('delivers what the remote host sent before it closed, then closes towards the enclave', async () => {
    const target = await startTarget((s) => s.end('{"keys":[]}'));
    const { relay } = await startRelay({ allowedPorts: [target.port] });
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    const outcome = await e.closed;
    expect(outcome).toEqual({ bytes: 1 + 11, ended: true, error: null });
    expect(e.payload().toString()).toBe('{"keys":[]}');
    await waitFor(() => relay.stats().open === 0, 10_000, 'the session to end');
    expect(relay.stats().closes.closed).toBe(1);
  });

  it('moves 16 MiB from the remote host to an enclave that reads late, without holding it (backpressure)', async () => {
    const total = 16 * 1024 * 1024;
    const data = randomBytes(total);
    const target = await startTarget((s) => s.end(data));
    const { relay } = await startRelay({ allowedPorts: [target.port], maxBytesPerConnection: 32 * 1024 * 1024 });
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port }, { reading: false });
    // The enclave does not read: the relay must stop reading from the remote host well before the end.
    const held = await settled(() => relay.stats().bytes.inbound);
    expect(held).toBeLessThan(total / 2);
    expect(e.closedNow).toBe(false);
    e.sock.resume();
    await e.closed;
    expect(e.received()[0]).toBe(EGRESS_OK);
    expect(e.payload().length).toBe(total);
    expect(sha256(e.payload())).toBe(sha256(data));
  });

  it('moves 16 MiB from the enclave to a remote host that reads late, without holding it (backpressure)', async () => {
    const total = 16 * 1024 * 1024;
    const data = randomBytes(total);
    let remote: net.Socket | undefined;
    const target = await startTarget((s) => {
      remote = s;
      s.pause();
    });
    const { relay } = await startRelay({ allowedPorts: [target.port], maxBytesPerConnection: 32 * 1024 * 1024 });
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await e.opened();
    e.sock.end(data);
    const held = await settled(() => relay.stats().bytes.outbound);
    expect(held).toBeLessThan(total / 2);
    remote?.resume();
    await waitFor(() => (target.received[0] ?? []).reduce((n, c) => n + c.length, 0) === total, 20_000, 'every byte');
    expect(sha256(Buffer.concat(target.received[0] ?? []))).toBe(sha256(data));
    await waitFor(() => relay.stats().open === 0, 10_000, 'the session to end');
  });

  it('tries the next checked address when one refuses the connection', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port] }, { hosts: ['dual.test'] });
    const e = await Enclave.request(relay, { host: 'dual.test', port: target.port });
    await e.opened();
    expect(tcpConnects()).toEqual(['::1', '127.0.0.1']);
    expect(target.sockets).toHaveLength(1);
  });

  it('uses the system resolver by default (localhost, a name the test machine resolves without DNS)', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port] }, { lookup: null, hosts: ['localhost'] });
    const e = await Enclave.request(relay, { host: 'localhost', port: target.port });
    await e.opened();
    e.sock.write('ping');
    await waitFor(() => e.payload().toString() === 'ping', 10_000, 'the echo');
    expect(tcpConnects().every((a) => a === '127.0.0.1' || a === '::1')).toBe(true);
  });

  it('connects to a listed IPv4 literal (the system resolver returns it as is)', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port] }, { lookup: null, hosts: ['127.0.0.1'] });
    const e = await Enclave.request(relay, { host: '127.0.0.1', port: target.port });
    await e.opened();
    expect(tcpConnects()).toEqual(['127.0.0.1']);
  });
});

describe('egress relay: hosts and ports', () => {
  it('refuses a host that is not allowed, without resolving it or connecting', async () => {
    const target = await startTarget();
    const { relay, logs, registry } = await startRelay({ allowedPorts: [target.port] });
    const e = await Enclave.request(relay, { host: 'other.test', port: target.port });
    expect(await e.closed).toEqual(REFUSED);
    expect(lookups).toEqual([]);
    expect(tcpConnects()).toEqual([]);
    expect(target.sockets).toHaveLength(0);
    expect(relay.stats().refusals.host_not_allowed).toBe(1);
    expect(await registry.metrics()).toContain('nks_egress_refusals_total{reason="host_not_allowed"} 1');
    expect(logs.lines().find((l) => l.reason === 'host_not_allowed')).toMatchObject({
      level: 40,
      host: 'other.test',
      port: target.port,
      reason: 'host_not_allowed',
    });
  });

  it('matches hosts exactly and case-insensitively: no subdomain, no suffix, no prefix', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port] }, { hosts: ['JWKS.test'] });
    for (const host of ['sub.jwks.test', 'jwks.test.evil', 'xjwks.test', 'jwks.tes']) {
      const e = await Enclave.request(relay, { host, port: target.port });
      expect(await e.closed).toEqual(REFUSED);
    }
    expect(relay.stats().refusals.host_not_allowed).toBe(4);
    const ok = await Enclave.request(relay, { host: 'Jwks.TEST', port: target.port });
    await ok.opened();
    expect(target.sockets).toHaveLength(1);
  });

  it('allows the configured hosts besides the projects’ ones', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port], allowedHosts: ['Other.Test'] }, { hosts: [] });
    const e = await Enclave.request(relay, { host: 'other.test', port: target.port });
    await e.opened();
    const refused = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    expect(await refused.closed).toEqual(REFUSED);
  });

  it('reads the allowed hosts for every connection: a project disabled since is refused', async () => {
    const target = await startTarget();
    let reads = 0;
    const hosts = new Set(['jwks.test']);
    const { relay } = await startRelay(
      { allowedPorts: [target.port] },
      {
        allowedHosts: () => {
          reads += 1;
          return hosts;
        },
      },
    );
    const first = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await first.opened();
    hosts.delete('jwks.test');
    const second = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    expect(await second.closed).toEqual(REFUSED);
    expect(reads).toBe(2);
    expect(relay.stats().refusals.host_not_allowed).toBe(1);
    expect(target.sockets).toHaveLength(1);
    hosts.add('jwks.test');
    const third = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await third.opened();
  });

  it('refuses when the allowed hosts cannot be read (internal_error), logging the error', async () => {
    const target = await startTarget();
    const { relay, logs } = await startRelay(
      { allowedPorts: [target.port] },
      {
        allowedHosts: () => {
          throw new Error('database is locked');
        },
      },
    );
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.internal_error).toBe(1);
    expect(logs.text()).toContain('database is locked');
    expect(tcpConnects()).toEqual([]);
  });

  it('refuses a port that is not allowed (443 only by default), without resolving the name', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: undefined });
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.port_not_allowed).toBe(1);
    expect(lookups).toEqual([]);
    expect(target.sockets).toHaveLength(0);
  });

  it('refuses an IP literal that is not listed, even one the name of an allowed host resolves to', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port] });
    const e = await Enclave.request(relay, { host: '127.0.0.1', port: target.port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.host_not_allowed).toBe(1);
    expect(target.sockets).toHaveLength(0);
  });
});

describe('egress relay: addresses', () => {
  it.each([
    'metadata.test',
    'ecs-metadata.test',
    'metadata6.test',
    'mapped-metadata.test',
    'loopback-and-metadata.test',
    'private-and-metadata.test',
  ])('refuses %s (an instance metadata address), even with loopback allowed, and connects nowhere', async (host) => {
    const target = await startTarget();
    const { relay, logs } = await startRelay({ allowedPorts: [target.port], allowLoopback: true }, { hosts: [host] });
    const e = await Enclave.request(relay, { host, port: target.port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.metadata_address).toBe(1);
    expect(lookups).toEqual([host]);
    expect(tcpConnects()).toEqual([]);
    expect(target.sockets).toHaveLength(0);
    const line = logs.lines().find((l) => l.reason === 'metadata_address');
    expect(line).toMatchObject({ level: 40, host, port: target.port, range: 'metadata' });
    expect(DNS[host]).toContain(line?.address);
  });

  it.each([
    ['private.test', true, 'private'],
    ['public-and-private.test', true, 'private'],
    ['loopback-and-private.test', true, 'private'],
    ['link-local6.test', true, 'link_local'],
    ['mapped-loopback.test', false, 'loopback'],
    ['jwks.test', false, 'loopback'],
  ] as const)('refuses %s (allowLoopback %s): one %s address is enough, and connects nowhere', async (host, allowLoopback, range) => {
    const target = await startTarget();
    const { relay, logs } = await startRelay({ allowedPorts: [target.port], allowLoopback }, { hosts: [host] });
    const e = await Enclave.request(relay, { host, port: target.port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.address_not_allowed).toBe(1);
    expect(tcpConnects()).toEqual([]);
    expect(target.sockets).toHaveLength(0);
    expect(logs.lines().find((l) => l.reason === 'address_not_allowed')).toMatchObject({ host, range });
  });

  it.each([
    ['vpc6.test', '2600:1f18:aaaa:bbbb::10'],
    ['eip.test', PUBLIC],
    ['jwks.test', '127.0.0.1'], // allowLoopback is true: the denied list wins
  ])("refuses %s (%s, in egress.deniedCidrs), and connects nowhere: the operator's own ranges", async (host, address) => {
    const target = await startTarget();
    const { relay, logs } = await startRelay(
      { allowedPorts: [target.port], allowLoopback: true, deniedCidrs: ['2600:1f18:aaaa::/48', `${PUBLIC}/32`, '127.0.0.0/8'] },
      { hosts: [host] },
    );
    const e = await Enclave.request(relay, { host, port: target.port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.address_not_allowed).toBe(1);
    expect(tcpConnects()).toEqual([]);
    expect(target.sockets).toHaveLength(0);
    expect(logs.lines().find((l) => l.reason === 'address_not_allowed')).toMatchObject({ level: 40, host, address, range: 'denied' });
  });

  it('refuses localhost from the system resolver when loopback is not allowed', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port], allowLoopback: false }, { lookup: null, hosts: ['localhost'] });
    const e = await Enclave.request(relay, { host: 'localhost', port: target.port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.address_not_allowed).toBe(1);
    expect(target.sockets).toHaveLength(0);
  });
});

describe('egress relay: the request frame', () => {
  const frameOf = (json: unknown) => encodeFrame(Buffer.from(JSON.stringify(json)));
  const good = () => encodeFrame(encodeEgressRequest({ host: 'jwks.test', port: 443 }));
  const badCrc = () => {
    const f = good();
    f.writeUInt32BE((f.readUInt32BE(4) ^ 1) >>> 0, 4);
    return f;
  };

  it.each([
    ['not JSON', () => encodeFrame(Buffer.from('jwks.test:443'))],
    ['a JSON array', () => frameOf(['jwks.test', 443])],
    ['an extra field', () => frameOf({ host: 'jwks.test', port: 443, path: '/' })],
    ['a port out of range', () => frameOf({ host: 'jwks.test', port: 0 })],
    ['a port as text', () => frameOf({ host: 'jwks.test', port: '443' })],
    ['a host with a path', () => frameOf({ host: 'jwks.test/x', port: 443 })],
    ['an IPv6 literal', () => frameOf({ host: '::1', port: 443 })],
    ['a bad CRC', badCrc],
    ['two frames', () => Buffer.concat([good(), good()])],
    ['bytes after the frame', () => Buffer.concat([good(), Buffer.from([0x16, 0x03, 0x01])])],
    ['an empty frame', () => encodeFrame(Buffer.alloc(0))],
  ])('refuses %s (bad_request)', async (_what, bytes) => {
    const { relay } = await startRelay();
    const e = new Enclave(relay);
    e.sock.write(bytes());
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.bad_request).toBe(1);
    expect(lookups).toEqual([]);
  });

  it('refuses a frame that announces more than 1024 bytes as soon as its header arrives (request_too_large)', async () => {
    const { relay } = await startRelay();
    const e = new Enclave(relay);
    const header = Buffer.alloc(8);
    header.writeUInt32BE(1025, 0);
    e.sock.write(header);
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.request_too_large).toBe(1);
  });

  it('refuses an oversize frame whose payload is sent too, still with a clean close', async () => {
    const { relay } = await startRelay();
    const e = new Enclave(relay);
    e.sock.write(encodeFrame(Buffer.alloc(64 * 1024, 0x20)));
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.request_too_large).toBe(1);
  });

  it('refuses a connection that sends no frame, or half of one, within the handshake timeout', async () => {
    const { relay } = await startRelay({ handshakeTimeoutMs: 200 });
    const silent = new Enclave(relay);
    const half = new Enclave(relay);
    half.sock.write(good().subarray(0, 10));
    expect(await silent.closed).toEqual(REFUSED);
    expect(await half.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.handshake_timeout).toBe(2);
  });

  it('refuses bytes the enclave sends before EGRESS_OK (it must wait for the answer), and connects nowhere', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port] }, { hosts: [DEFERRED] });
    const e = await Enclave.request(relay, { host: DEFERRED, port: target.port });
    await waitFor(() => lookups.length === 1, 10_000, 'the lookup');
    e.sock.write(Buffer.from([0x16, 0x03, 0x01])); // a TLS ClientHello, too early
    await waitFor(() => relay.stats().refusals.bad_request === 1, 10_000, 'the refusal');
    answerDeferred();
    expect(await e.closed).toEqual(REFUSED);
    await sleep(100);
    expect(tcpConnects()).toEqual([]);
    expect(target.sockets).toHaveLength(0);
  });
});

describe('egress relay: DNS and connect failures', () => {
  it.each(['nxdomain.test', 'empty.test'])('refuses %s, a name that does not resolve (dns_failed)', async (host) => {
    const target = await startTarget();
    const { relay, logs } = await startRelay({ allowedPorts: [target.port] }, { hosts: [host] });
    const e = await Enclave.request(relay, { host, port: target.port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.dns_failed).toBe(1);
    expect(logs.lines().find((l) => l.reason === 'dns_failed')).toMatchObject({
      host,
      code: host === 'empty.test' ? 'NODATA' : 'ENOTFOUND',
    });
    expect(tcpConnects()).toEqual([]);
  });

  it('refuses a name whose lookup does not answer within the connect timeout (dns_failed)', async () => {
    const { relay, logs } = await startRelay({ connectTimeoutMs: 200 }, { hosts: [NEVER_ANSWERS] });
    const e = await Enclave.request(relay, { host: NEVER_ANSWERS, port: 443 });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.dns_failed).toBe(1);
    expect(logs.lines().find((l) => l.reason === 'dns_failed')).toMatchObject({ code: 'ETIMEOUT' });
  });

  it('refuses when the connection is refused (connect_failed)', async () => {
    const port = await closedPort();
    const { relay, logs } = await startRelay({ allowedPorts: [port] });
    const e = await Enclave.request(relay, { host: 'jwks.test', port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.connect_failed).toBe(1);
    expect(logs.lines().find((l) => l.reason === 'connect_failed')).toMatchObject({ address: '127.0.0.1', code: 'ECONNREFUSED' });
  });

  it('refuses when no address accepts within connectTimeoutMs (connect_timeout)', async () => {
    const port = await blackhole();
    const { relay, logs } = await startRelay({ allowedPorts: [port], connectTimeoutMs: 300 });
    const e = await Enclave.request(relay, { host: 'jwks.test', port });
    expect(await e.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.connect_timeout).toBe(1);
    expect(logs.lines().find((l) => l.reason === 'connect_timeout')).toMatchObject({ address: '127.0.0.1', code: 'ETIMEDOUT' });
    expect(relay.stats().open).toBe(0);
  }, 30_000);

  it('does not count an enclave that leaves while the name resolves, and connects nowhere', async () => {
    const { relay } = await startRelay({ connectTimeoutMs: 300 }, { hosts: [NEVER_ANSWERS] });
    const e = await Enclave.request(relay, { host: NEVER_ANSWERS, port: 443 });
    await waitFor(() => lookups.length === 1, 10_000, 'the lookup');
    e.sock.destroy();
    await waitFor(() => relay.stats().open === 0, 10_000, 'the session to end');
    await sleep(400); // past the lookup's timeout: nothing is refused or connected afterwards
    expect(Object.values(relay.stats().refusals).reduce((a, b) => a + b, 0)).toBe(0);
    expect(tcpConnects()).toEqual([]);
  });
});

describe('egress relay: limits', () => {
  it('closes a relayed connection that stays idle', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port], idleTimeoutMs: 300 });
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await e.opened();
    e.sock.write('x');
    await waitFor(() => e.payload().toString() === 'x', 10_000, 'the echo');
    await e.closed;
    await waitFor(() => target.sockets[0]?.closed === true, 10_000, 'the remote side to close');
    expect(relay.stats().closes.idle_timeout).toBe(1);
    expect(relay.stats().open).toBe(0);
  });

  it('closes a connection that sends more than maxBytesPerConnection, without passing the excess', async () => {
    const target = await startTarget((s) => s.resume());
    const { relay } = await startRelay({ allowedPorts: [target.port], maxBytesPerConnection: 4096 });
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await e.opened();
    e.sock.write(Buffer.alloc(4000, 1));
    await waitFor(() => relay.stats().bytes.outbound === 4000, 10_000, 'the first bytes');
    e.sock.write(Buffer.alloc(200, 2));
    await e.closed;
    await waitFor(() => target.sockets[0]?.closed === true, 10_000, 'the remote side to close');
    expect(Buffer.concat(target.received[0] ?? []).length).toBeLessThanOrEqual(4096);
    expect(relay.stats().closes.byte_cap).toBe(1);
  });

  it('closes a connection whose remote host sends more than maxBytesPerConnection', async () => {
    const target = await startTarget((s) => s.write(Buffer.alloc(10_000, 3)));
    const { relay } = await startRelay({ allowedPorts: [target.port], maxBytesPerConnection: 4096 });
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    const outcome = await e.closed;
    expect(outcome.bytes).toBeLessThanOrEqual(1 + 4096);
    expect(e.received()[0]).toBe(EGRESS_OK);
    expect(relay.stats().closes.byte_cap).toBe(1);
  });

  it('refuses connections beyond maxConnections, and accepts again once one closes', async () => {
    const target = await startTarget();
    const { relay, registry } = await startRelay({ allowedPorts: [target.port], maxConnections: 2 });
    const a = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    const b = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await a.opened();
    await b.opened();
    expect(await registry.metrics()).toContain('nks_egress_connections 2');
    const c = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    expect(await c.closed).toEqual(REFUSED);
    expect(relay.stats().refusals.too_many_connections).toBe(1);
    expect(target.sockets).toHaveLength(2);
    // A connection still in its handshake counts too.
    a.sock.destroy();
    await waitFor(() => relay.stats().open === 1, 10_000, 'a slot');
    const waiting = new Enclave(relay);
    await waiting.connected;
    await waitFor(() => relay.stats().open === 2, 10_000, 'the handshake to take the slot');
    const d = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    expect(await d.closed).toEqual(REFUSED);
    waiting.sock.destroy();
    await waitFor(() => relay.stats().open === 1, 10_000, 'a slot');
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await e.opened();
  });

  it('destroys a refused connection whose enclave never closes its side', async () => {
    const { relay } = await startRelay();
    const e = new Enclave(relay, { allowHalfOpen: true });
    e.sock.write(encodeFrame(Buffer.from('nonsense')));
    await waitFor(() => e.ended, 10_000, 'the end of stream');
    expect(relay.stats().refusals.bad_request).toBe(1);
    // The enclave keeps its side open: the relay waits, then destroys the connection.
    expect(relay.stats().closing).toBe(1);
    await waitFor(() => relay.stats().closing === 0, 10_000 + REFUSAL_LINGER_MS, 'the linger to end');
    expect(e.received().length).toBe(0);
  });
});

describe('egress relay: every refusal is the same', () => {
  it('writes no byte and ends the connection the same way, whatever the reason', async () => {
    const target = await startTarget();
    const port = await closedPort();
    const hole = await blackhole();
    const hosts = new Set(['jwks.test', 'metadata.test', 'private.test', 'nxdomain.test']);
    let storeFails = false;
    const { relay } = await startRelay(
      { allowedPorts: [target.port, port, hole], maxConnections: 3, handshakeTimeoutMs: 300, connectTimeoutMs: 300 },
      {
        allowedHosts: () => {
          if (storeFails) throw new Error('store unavailable');
          return hosts;
        },
      },
    );
    const attempts: Array<[EgressRefusalReason, () => Promise<Enclave>]> = [
      ['host_not_allowed', () => Enclave.request(relay, { host: 'other.test', port: target.port })],
      ['port_not_allowed', () => Enclave.request(relay, { host: 'jwks.test', port: 443 })],
      ['metadata_address', () => Enclave.request(relay, { host: 'metadata.test', port: target.port })],
      ['address_not_allowed', () => Enclave.request(relay, { host: 'private.test', port: target.port })],
      ['dns_failed', () => Enclave.request(relay, { host: 'nxdomain.test', port: target.port })],
      ['connect_failed', () => Enclave.request(relay, { host: 'jwks.test', port })],
      ['connect_timeout', () => Enclave.request(relay, { host: 'jwks.test', port: hole })],
      [
        'internal_error',
        async () => {
          storeFails = true;
          const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
          await e.closed;
          storeFails = false;
          return e;
        },
      ],
      [
        'bad_request',
        async () => {
          const e = new Enclave(relay);
          e.sock.write(encodeFrame(Buffer.from('{}')));
          return e;
        },
      ],
      [
        'request_too_large',
        async () => {
          const e = new Enclave(relay);
          e.sock.write(encodeFrame(Buffer.alloc(4096, 0x41)));
          return e;
        },
      ],
      ['handshake_timeout', async () => new Enclave(relay)],
    ];
    const outcomes: Record<string, Outcome> = {};
    for (const [reason, attempt] of attempts) {
      const e = await attempt();
      outcomes[reason] = await e.closed;
      expect(relay.stats().refusals[reason]).toBe(1);
    }
    // And one beyond the connection cap.
    const held = await Promise.all([0, 1, 2].map(() => Enclave.request(relay, { host: 'jwks.test', port: target.port })));
    for (const h of held) await h.opened();
    outcomes.too_many_connections = await (await Enclave.request(relay, { host: 'jwks.test', port: target.port })).closed;

    for (const [reason, outcome] of Object.entries(outcomes)) expect({ reason, ...outcome }).toEqual({ reason, ...REFUSED });
    expect(Object.keys(outcomes).sort()).toEqual([...EGRESS_REFUSAL_REASONS].sort());
    // Nothing was connected for any refusal: the three held connections are the only ones the server saw.
    expect(target.sockets).toHaveLength(3);
  });
});

describe('egress relay: resets, stop, metrics', () => {
  it('survives an enclave that resets mid-transfer and a remote host that resets mid-transfer', async () => {
    const target = await startTarget((s, i) => {
      if (i === 0) s.write(Buffer.alloc(256 * 1024, 7));
      else s.on('data', () => s.resetAndDestroy());
    });
    const { relay } = await startRelay({ allowedPorts: [target.port] });
    const a = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await a.opened();
    a.sock.destroy();
    const b = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await b.opened();
    b.sock.write(Buffer.alloc(64 * 1024, 8));
    await b.closed;
    await waitFor(() => relay.stats().open === 0, 10_000, 'both sessions to end');
    expect(relay.stats().closes.closed).toBe(2);
  });

  it('close() stops accepting and closes every connection', async () => {
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port] });
    const relayed = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await relayed.opened();
    const waiting = new Enclave(relay);
    await waiting.connected;
    await waitFor(() => relay.stats().open === 2, 10_000, 'both connections');
    await relay.close();
    await relayed.closed;
    await waiting.closed;
    await waitFor(() => target.sockets[0]?.closed === true, 10_000, 'the remote side to close');
    expect(relay.stats()).toMatchObject({ open: 0, closes: { relay_stopped: 1 } });
    const late = new Enclave(relay);
    const outcome = await late.closed;
    expect(outcome.bytes).toBe(0);
    expect(late.error).toMatch(/ENOENT|ECONNREFUSED/);
  });

  it('updates metrics passed in by the caller', async () => {
    const registry = new client.Registry();
    const metrics: EgressMetrics = {
      refusals: new client.Counter({ name: 'x_refusals', help: 'x', labelNames: ['reason'], registers: [registry] }),
      connections: new client.Gauge({ name: 'x_connections', help: 'x', registers: [registry] }),
      bytes: new client.Counter({ name: 'x_bytes', help: 'x', labelNames: ['direction'], registers: [registry] }),
    };
    const target = await startTarget();
    const { relay } = await startRelay({ allowedPorts: [target.port] }, { metrics });
    const refused = await Enclave.request(relay, { host: 'other.test', port: target.port });
    await refused.closed;
    const e = await Enclave.request(relay, { host: 'jwks.test', port: target.port });
    await e.opened();
    e.sock.write('abc');
    await waitFor(() => e.payload().length === 3, 10_000, 'the echo');
    const text = await registry.metrics();
    expect(text).toContain('x_refusals{reason="host_not_allowed"} 1');
    expect(text).toContain('x_connections 1');
    expect(text).toContain('x_bytes{direction="outbound"} 3');
    expect(text).toContain('x_bytes{direction="inbound"} 3');
  });

  it('registers every refusal reason at 0 on a registry it is given', async () => {
    const { registry } = await startRelay();
    const text = await registry.metrics();
    for (const reason of EGRESS_REFUSAL_REASONS) expect(text).toContain(`nks_egress_refusals_total{reason="${reason}"} 0`);
  });

  it('logs refusals without payload', async () => {
    const { relay, logs } = await startRelay();
    const e = new Enclave(relay);
    e.sock.write(encodeFrame(Buffer.from('{"host":"secret-marker.test","port":443,"x":1}')));
    await e.closed;
    expect(logs.lines().find((l) => l.reason === 'bad_request')).toBeDefined();
    expect(logs.text()).not.toContain('secret-marker');
    // A silent logger is fine too (the parent passes its own).
    const quiet = await startEgressRelay({
      config: EgressConfigSchema.parse({ listen: `vsock://3:${nextVsockPort++}` }),
      transport,
      allowedHosts: () => [],
      log: silentLogger(),
    });
    relays.push(quiet);
    expect(quiet.address).toMatch(/^vsock:\/\/3:\d+$/);
  });
});
