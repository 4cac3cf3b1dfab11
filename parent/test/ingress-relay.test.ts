/**
 * The wallet routes' ingress relay (parent/src/ingress/relay.ts): real TCP clients on loopback, the enclave's
 * wallet listener stood in for by a listener on the simulated vsock transport. What the enclave side receives
 * first is the preamble frame (shared/src/ingress.ts), then the client's bytes unchanged; every limit closes
 * both sides; and with TLS from a real client to a real HTTPS server behind the relay, the relay handles only
 * ciphertext: a marker JWT in the request body is in no relayed chunk, log line or metric.
 *
 * No timed assertions: timeouts are made short only so the tests finish; every wait has a generous limit.
 */
import { createHash, randomBytes } from 'node:crypto';
import https from 'node:https';
import net from 'node:net';
import client from 'prom-client';
import { FrameDecoder } from '@nks/shared/framing';
import { INGRESS_PREAMBLE_MAX_BYTES, parseIngressPreamble } from '@nks/shared/ingress';
import { SimulatedVsockTransport, type Connection, type Listener, type Transport } from '@nks/shared/transport';
import { captureLogger, tempRunDir, waitFor, type CapturedLogger } from '@nks/shared-test/helpers';
import { makeTestCa } from '../../sim/src/idp/tls';
import { addressKey, clientAddressOf, IngressRelay, type IngressConfig } from '../src/ingress/relay';

const runDir = tempRunDir('nks-ingress-');
const transport = new SimulatedVsockTransport(runDir);
/** Each test's enclave side listens on its own vsock port. */
let nextPort = 18443;

const closers: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

// ---------------------------------------------------------------------------------------------------------
// The enclave's side: a listener on the simulated vsock that records what each connection receives.

interface EnclaveConn {
  conn: Connection;
  chunks: Buffer[];
  closed: boolean;
  bytes(): Buffer;
}

interface EnclaveSide {
  address: string;
  conns: EnclaveConn[];
}

interface EnclaveBehaviour {
  /** On each connection, before any byte. */
  onConnection?: (c: EnclaveConn) => void;
  /** The bytes after the preamble, as they arrive. */
  onPayload?: (c: EnclaveConn, chunk: Buffer) => void;
}

/** A listener that records what each connection receives (and does what `behaviour` says). */
async function enclaveSide(behaviour: EnclaveBehaviour = {}, t: Transport = transport): Promise<EnclaveSide> {
  const address = `vsock://16:${nextPort++}`;
  const conns: EnclaveConn[] = [];
  const listener: Listener = await t.listen(address, (conn) => {
    const c: EnclaveConn = { conn, chunks: [], closed: false, bytes: () => Buffer.concat(c.chunks) };
    conns.push(c);
    let preamble: number | null = null;
    conn.start({
      data: (chunk) => {
        c.chunks.push(Buffer.from(chunk));
        if (preamble !== null) return behaviour.onPayload?.(c, chunk);
        const all = c.bytes();
        if (all.length < 8 || all.length < 8 + all.readUInt32BE(0)) return;
        preamble = 8 + all.readUInt32BE(0);
        if (all.length > preamble) behaviour.onPayload?.(c, all.subarray(preamble));
      },
      close: () => {
        c.closed = true;
      },
    });
    behaviour.onConnection?.(c);
  });
  closers.push(async () => {
    await listener.close();
    for (const c of conns) c.conn.destroy();
  });
  return { address, conns };
}

/** The preamble frame and what follows it, from the bytes an enclave connection received. */
function splitPreamble(bytes: Buffer): { client: string | undefined; rest: Buffer } {
  const length = bytes.readUInt32BE(0);
  const [payload] = new FrameDecoder(INGRESS_PREAMBLE_MAX_BYTES).push(bytes.subarray(0, 8 + length));
  return { client: parseIngressPreamble(payload as Buffer)?.client, rest: bytes.subarray(8 + length) };
}

/** What followed the preamble so far (nothing while it is incomplete). */
function payloadOf(c: EnclaveConn | undefined): Buffer {
  const all = c?.bytes() ?? Buffer.alloc(0);
  return all.length >= 8 && all.length >= 8 + all.readUInt32BE(0) ? splitPreamble(all).rest : Buffer.alloc(0);
}

/** Echoes everything after the preamble. */
const echo: EnclaveBehaviour = { onPayload: (c, chunk) => c.conn.write(chunk) };

// ---------------------------------------------------------------------------------------------------------
// The relay and its clients.

interface Started {
  relay: IngressRelay;
  port: number;
  log: CapturedLogger;
  registry: client.Registry;
}

async function startRelay(enclave: string, over: Partial<IngressConfig> = {}, t: Transport = transport): Promise<Started> {
  const log = captureLogger('debug');
  const registry = new client.Registry();
  const config: IngressConfig = {
    host: '127.0.0.1',
    port: 0,
    enclave,
    maxConnections: 64,
    maxPerAddress: 64,
    connectTimeoutMs: 2000,
    idleTimeoutMs: 30_000,
    maxBytesPerConnection: 64 * 1024 * 1024,
    ...over,
  };
  const relay = new IngressRelay({ config, transport: t, log: log.logger, metrics: registry });
  const port = await relay.listen();
  closers.push(() => relay.close());
  return { relay, port, log, registry };
}

interface Client {
  socket: net.Socket;
  chunks: Buffer[];
  closed: boolean;
  bytes(): Buffer;
}

async function connect(port: number, from = '127.0.0.1'): Promise<Client> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
  const c: Client = { socket, chunks: [], closed: false, bytes: () => Buffer.concat(c.chunks) };
  socket.on('data', (d: Buffer) => c.chunks.push(d));
  socket.on('error', () => undefined);
  socket.on('close', () => {
    c.closed = true;
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  closers.push(() => void socket.destroy());
  return c;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('ingress relay', () => {
  it('pipes bytes both ways, the preamble first, then closes both sides and counts it', async () => {
    const enclave = await enclaveSide(echo);
    const { relay, port, log, registry } = await startRelay(enclave.address);
    expect(relay.port).toBe(port);
    const c = await connect(port);
    c.socket.write('hello enclave');
    await waitFor(() => c.bytes().toString() === 'hello enclave', 5000, 'the echo');
    const e = enclave.conns[0] as EnclaveConn;
    expect(splitPreamble(e.bytes())).toEqual({ client: '127.0.0.1', rest: Buffer.from('hello enclave') });

    // A MiB each way, in order, unchanged.
    const payload = randomBytes(1024 * 1024);
    c.socket.write(payload);
    await waitFor(() => c.bytes().length === 13 + payload.length, 10_000, 'the MiB back');
    expect(sha(c.bytes().subarray(13))).toBe(sha(payload));
    expect(sha(splitPreamble(e.bytes()).rest.subarray(13))).toBe(sha(payload));
    expect(relay.stats()).toMatchObject({
      open: 1,
      relaying: 1,
      accepted: 1,
      bytes: { inbound: 13 + payload.length, outbound: 13 + payload.length },
    });

    c.socket.end();
    await waitFor(() => e.closed && c.closed && relay.stats().open === 0, 5000, 'both sides closed');
    expect(relay.stats().closes).toMatchObject({ closed: 1, idle_timeout: 0, byte_cap: 0 });
    const text = await registry.metrics();
    expect(text).toMatch(/^nks_ingress_connections 0$/m);
    expect(text).toMatch(/^nks_ingress_accepted_total 1$/m);
    expect(text).toMatch(new RegExp(`^nks_ingress_bytes_total\\{direction="inbound"\\} ${13 + payload.length}$`, 'm'));
    expect(text).toMatch(/^nks_ingress_closes_total\{reason="closed"\} 1$/m);
    expect(text).toMatch(/^nks_ingress_refusals_total\{reason="too_many_connections"\} 0$/m);
    expect(log.lines().find((l) => l.msg === 'wallet ingress connection closed')).toMatchObject({
      client: '127.0.0.1',
      reason: 'closed',
      inboundBytes: 13 + payload.length,
    });
  });

  it('passes the enclave closing on to the client, after what it wrote', async () => {
    const enclave = await enclaveSide({
      onConnection: (e) => {
        e.conn.write(Buffer.from('bye'));
        e.conn.end();
      },
    });
    const { relay, port } = await startRelay(enclave.address);
    const c = await connect(port);
    await waitFor(() => c.closed, 5000, 'the client closed');
    expect(c.bytes().toString()).toBe('bye');
    await waitFor(() => relay.stats().open === 0, 5000, 'the session ended');
    expect(relay.stats().closes.closed).toBe(1);
  });

  it('refuses connections beyond maxConnections: destroyed at once, counted and logged', async () => {
    const enclave = await enclaveSide();
    const { relay, port, log, registry } = await startRelay(enclave.address, { maxConnections: 2 });
    const a = await connect(port);
    const b = await connect(port, '127.0.0.2');
    await waitFor(() => relay.stats().relaying === 2, 5000, 'two relaying');
    const refused = await connect(port, '127.0.0.3');
    await waitFor(() => refused.closed, 5000, 'the third closed');
    expect(refused.bytes().length).toBe(0);
    expect(enclave.conns).toHaveLength(2);
    expect(relay.stats()).toMatchObject({ open: 2, refusals: { too_many_connections: 1 } });
    expect(await registry.metrics()).toMatch(/^nks_ingress_refusals_total\{reason="too_many_connections"\} 1$/m);
    expect(log.lines().find((l) => l.msg === 'wallet ingress refused: too_many_connections')).toMatchObject({ client: '127.0.0.3' });
    // A slot freed is a slot for the next.
    a.socket.destroy();
    await waitFor(() => relay.stats().open === 1, 5000, 'one left');
    const next = await connect(port, '127.0.0.3');
    await waitFor(() => relay.stats().relaying === 2, 5000, 'two relaying again');
    expect([b.closed, next.closed]).toEqual([false, false]);
  });

  it('refuses connections beyond maxPerAddress from one client address, not from another', async () => {
    const enclave = await enclaveSide();
    const { relay, port } = await startRelay(enclave.address, { maxPerAddress: 1 });
    const first = await connect(port, '127.0.0.1');
    await waitFor(() => relay.stats().relaying === 1, 5000, 'the first relaying');
    const second = await connect(port, '127.0.0.1');
    await waitFor(() => second.closed, 5000, 'the second from 127.0.0.1 closed');
    const other = await connect(port, '127.0.0.2');
    await waitFor(() => (enclave.conns[1]?.bytes().length ?? 0) > 0, 5000, 'the other relayed');
    expect(splitPreamble((enclave.conns[1] as EnclaveConn).bytes()).client).toBe('127.0.0.2');
    expect(relay.stats()).toMatchObject({ open: 2, refusals: { too_many_from_address: 1, too_many_connections: 0 } });
    first.socket.destroy();
    await waitFor(() => relay.stats().open === 1, 5000, 'the first gone');
    const again = await connect(port, '127.0.0.1');
    await waitFor(() => relay.stats().relaying === 2, 5000, '127.0.0.1 relaying again');
    expect([other.closed, again.closed]).toEqual([false, false]);
  });

  it('closes both sides after idleTimeoutMs without a byte either way', async () => {
    const enclave = await enclaveSide(echo);
    const { relay, port } = await startRelay(enclave.address, { idleTimeoutMs: 300 });
    const c = await connect(port);
    c.socket.write('x');
    await waitFor(() => c.bytes().toString() === 'x', 5000, 'the echo');
    await waitFor(() => c.closed && (enclave.conns[0] as EnclaveConn).closed, 10_000, 'both closed');
    expect(relay.stats()).toMatchObject({ open: 0, closes: { idle_timeout: 1, closed: 0 } });
  });

  it.each(['inbound', 'outbound'] as const)('closes both sides when the %s bytes pass maxBytesPerConnection', async (direction) => {
    const cap = 64 * 1024;
    const enclave = await enclaveSide(direction === 'outbound' ? { onConnection: (e) => e.conn.write(randomBytes(cap)) } : {});
    const { relay, port, log } = await startRelay(enclave.address, { maxBytesPerConnection: cap });
    const c = await connect(port);
    const e = () => enclave.conns[0] as EnclaveConn;
    if (direction === 'inbound') {
      c.socket.write(randomBytes(cap));
      await waitFor(() => payloadOf(enclave.conns[0]).length === cap, 5000, 'the cap delivered');
      c.socket.write(Buffer.from('!'));
    } else {
      await waitFor(() => c.bytes().length === cap, 5000, 'the cap delivered');
      e().conn.write(Buffer.from('!'));
    }
    await waitFor(() => c.closed && e().closed, 5000, 'both closed');
    expect(relay.stats()).toMatchObject({ open: 0, closes: { byte_cap: 1 }, bytes: { [direction]: cap } });
    if (direction === 'inbound') expect(splitPreamble(e().bytes()).rest.length).toBe(cap);
    else expect(c.bytes().length).toBe(cap);
    expect(log.lines().find((l) => l.msg === 'wallet ingress connection closed: byte cap reached')).toMatchObject({ reason: 'byte_cap' });
  });

  it('closes the client when the enclave cannot be reached, and counts why', async () => {
    const { relay, port, log } = await startRelay(`vsock://16:${nextPort++}`); // nothing listens there
    const c = await connect(port);
    await waitFor(() => c.closed, 5000, 'the client closed');
    expect(relay.stats()).toMatchObject({ open: 0, refusals: { connect_failed: 1 } });
    expect(log.lines().find((l) => l.msg === "wallet ingress refused: connect_failed (the enclave's wallet listener)")).toMatchObject({
      level: 40,
      client: '127.0.0.1',
    });

    // A transport whose connect gives up at the timeout: counted as such.
    const slow: Transport = {
      kind: 'simulated',
      listen: (a, on) => transport.listen(a, on),
      connect: (_a, o) => new Promise((_, reject) => setTimeout(() => reject(new Error('timed out')), o?.timeoutMs)),
    };
    const timing = await startRelay('vsock://16:1', { connectTimeoutMs: 100 }, slow);
    const t = await connect(timing.port);
    await waitFor(() => t.closed, 5000, 'the client closed');
    expect(timing.relay.stats().refusals).toMatchObject({ connect_timeout: 1, connect_failed: 0 });
  });

  it('applies backpressure both ways: a side that does not read stops the other being read, and nothing is lost', async () => {
    const enclave = await enclaveSide({ onConnection: (e) => e.conn.pauseReading() });
    const { relay, port } = await startRelay(enclave.address);
    const c = await connect(port);
    const e = () => enclave.conns[0] as EnclaveConn;
    // Client -> enclave while the enclave reads nothing: the relay stops reading the client.
    const up = randomBytes(16 * 1024 * 1024);
    c.socket.write(up);
    await waitFor(() => relay.stats().clientsPaused === 1, 10_000, 'the client paused');
    expect(relay.stats().bytes.inbound).toBeLessThan(up.length);
    e().conn.resumeReading();
    await waitFor(() => payloadOf(enclave.conns[0]).length === up.length, 20_000, 'all delivered');
    expect(sha(splitPreamble(e().bytes()).rest)).toBe(sha(up));
    expect(relay.stats().clientsPaused).toBe(0);

    // Enclave -> client while the client reads nothing: the relay stops reading the enclave.
    c.socket.pause();
    const down = randomBytes(16 * 1024 * 1024);
    e().conn.write(down);
    await waitFor(() => relay.stats().enclavesPaused === 1, 10_000, 'the enclave paused');
    expect(relay.stats().bytes.outbound).toBeLessThan(down.length);
    c.socket.resume();
    await waitFor(() => c.bytes().length === down.length, 20_000, 'all delivered');
    expect(sha(c.bytes())).toBe(sha(down));
    expect(relay.stats().enclavesPaused).toBe(0);
  });

  it('closes every connection when stopped, and accepts no more', async () => {
    const enclave = await enclaveSide();
    const { relay, port } = await startRelay(enclave.address);
    const c = await connect(port);
    await waitFor(() => relay.stats().relaying === 1, 5000, 'relaying');
    await relay.close();
    await waitFor(() => c.closed && (enclave.conns[0] as EnclaveConn).closed, 5000, 'both closed');
    expect(relay.stats()).toMatchObject({ open: 0, closes: { relay_stopped: 1 } });
    await expect(connect(port)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('counts IPv6 clients by their /64 and IPv4-mapped addresses as IPv4', () => {
    expect(addressKey('203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('2001:db8:0:1::5')).toBe('2001:db8:0:1::/64');
    expect(addressKey('2001:db8:0:1:ffff:ffff:ffff:ffff')).toBe('2001:db8:0:1::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('2001:0DB8:0000:0002::1')).toBe('2001:db8:0:2::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('::ffff:1.2.3.4')).toBe('0:0:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey('unknown')).toBe('unknown');
    const socket = (remoteAddress: string | undefined) => ({ remoteAddress }) as net.Socket;
    expect(clientAddressOf(socket('::ffff:198.51.100.4'))).toBe('198.51.100.4');
    expect(clientAddressOf(socket('2001:db8::1'))).toBe('2001:db8::1');
    expect(clientAddressOf(socket(undefined))).toBe('unknown');
  });

  it('relays TLS without ever holding plaintext: a marker JWT is in no relayed chunk, log line or metric', async () => {
    const marker = `eyJhbGciOiJFUzI1NiJ9.${randomBytes(24).toString('base64url')}.MARKER-${randomBytes(8).toString('hex')}`;
    // A real HTTPS server (a test CA's certificate), as the enclave's wallet routes would be.
    const ca = await makeTestCa();
    const { certPem, keyPem } = await ca.issueServer(['wallets.test']);
    const received: string[] = [];
    const server = https.createServer({ cert: certPem, key: keyPem }, (req, res) => {
      const body: Buffer[] = [];
      req.on('data', (d: Buffer) => body.push(d));
      req.on('end', () => {
        received.push(Buffer.concat(body).toString());
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ address: '0x0000000000000000000000000000000000000001' }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const httpsPort = (server.address() as net.AddressInfo).port;
    // The enclave side: drops the preamble and hands the rest to the HTTPS server.
    const upstreams = new Map<EnclaveConn, net.Socket>();
    const enclave = await enclaveSide({
      onConnection: (e) => {
        const upstream = net.connect(httpsPort, '127.0.0.1');
        upstream.on('error', () => undefined);
        upstream.on('data', (d: Buffer) => e.conn.write(d));
        upstream.on('close', () => e.conn.end());
        upstreams.set(e, upstream);
        closers.push(() => void upstream.destroy());
      },
      onPayload: (e, chunk) => upstreams.get(e)?.write(chunk),
    });

    // What the relay handles: every chunk it writes to or reads from the enclave's side.
    const relayed: Buffer[] = [];
    const recording: Transport = {
      kind: transport.kind,
      listen: (a, on) => transport.listen(a, on),
      async connect(address, options) {
        const conn = await transport.connect(address, options);
        return {
          get description() {
            return conn.description;
          },
          get closed() {
            return conn.closed;
          },
          get writeMode() {
            return conn.writeMode;
          },
          get bufferedBytes() {
            return conn.bufferedBytes;
          },
          get readingPaused() {
            return conn.readingPaused;
          },
          start: (h) =>
            conn.start({
              ...h,
              data: (chunk) => {
                relayed.push(Buffer.from(chunk));
                h.data(chunk);
              },
            }),
          write: (chunk) => {
            relayed.push(Buffer.from(chunk));
            conn.write(chunk);
          },
          pauseReading: () => conn.pauseReading(),
          resumeReading: () => conn.resumeReading(),
          end: () => conn.end(),
          destroy: () => conn.destroy(),
        };
      },
    };
    const { relay, port, log, registry } = await startRelay(enclave.address, {}, recording);

    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const body = JSON.stringify({ jwt_token: marker, message: 'hi', message_type: 'message', wallet_type: 'evm' });
      const req = https.request(
        {
          host: '127.0.0.1',
          port,
          servername: 'wallets.test',
          ca: ca.caPem,
          method: 'POST',
          path: '/v1/pk_test/wallets/sign',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${marker}` },
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    expect(answer.status).toBe(200);
    // The marker did travel, in plaintext only at the ends.
    expect(received).toHaveLength(1);
    expect(received[0]).toContain(marker);

    await waitFor(() => relay.stats().open === 0, 5000, 'the connection closed');
    const all = Buffer.concat(relayed);
    expect(all.length).toBeGreaterThan(1000);
    expect(all.includes(Buffer.from([0x16, 0x03]))).toBe(true); // TLS handshake records went through
    for (const text of [marker, marker.slice(-24), 'wallets/sign', 'jwt_token', 'Bearer']) {
      expect(all.includes(Buffer.from(text))).toBe(false);
      for (const chunk of relayed) expect(chunk.includes(Buffer.from(text))).toBe(false);
    }
    expect(log.text()).not.toContain(marker.slice(-24));
    expect(log.text()).not.toContain('jwt_token');
    expect(log.lines().length).toBeGreaterThan(0);
    expect(await registry.metrics()).not.toContain(marker.slice(-24));
  });
});
