import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import {
  createTransport,
  parseVsockAddress,
  SimulatedVsockTransport,
  simulatedSocketPath,
  TransportConfigSchema,
  type Connection,
} from '../src/transport';
import { sleep, tempRunDir, waitFor } from './helpers';

describe('vsock addresses', () => {
  it('parses vsock://CID:PORT', () => {
    expect(parseVsockAddress('vsock://16:5000')).toEqual({ cid: 16, port: 5000 });
    expect(parseVsockAddress('vsock://3:8000')).toEqual({ cid: 3, port: 8000 });
  });

  it.each(['vsock://16', 'tcp://1:2', 'vsock://-1:5', 'vsock://16:5000/x', 'vsock://4294967295:1', 'vsock://1:4294967295', ''])(
    'rejects %p with a clear error',
    (bad) => {
      expect(() => parseVsockAddress(bad)).toThrow(/invalid vsock address/);
    },
  );

  it('maps simulated addresses to <runDir>/vsock/<cid>.<port>.sock and refuses over-long paths', () => {
    expect(simulatedSocketPath('/run/x', 'vsock://16:5000')).toBe('/run/x/vsock/16.5000.sock');
    expect(() => simulatedSocketPath('/' + 'a'.repeat(120), 'vsock://16:5000')).toThrow(/longer than 107 bytes/);
  });

  it('selects the transport from configuration and rejects unknown kinds and fields', () => {
    expect(createTransport({ kind: 'simulated', runDir: '/tmp' }).kind).toBe('simulated');
    expect(TransportConfigSchema.safeParse({ kind: 'tcp' }).success).toBe(false);
    expect(TransportConfigSchema.safeParse({ kind: 'simulated', runDir: '/x', extra: 1 }).success).toBe(false);
  });
});

describe('simulated transport', () => {
  // Everything a test opens is closed after it, whether it passed or not.
  let dir: string;
  const cleanup: Array<() => unknown> = [];
  beforeEach(() => {
    dir = tempRunDir();
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('connects, exchanges bytes both ways and reports close', async () => {
    const t = new SimulatedVsockTransport(dir);
    const got: Buffer[] = [];
    const listener = await t.listen('vsock://16:5000', (conn) => {
      conn.start({ data: (d) => conn.write(Buffer.concat([Buffer.from('echo:'), d])), close: () => undefined });
    });
    cleanup.push(() => listener.close());
    const conn = await t.connect('vsock://16:5000');
    cleanup.push(() => conn.destroy());
    const closed = new Promise<void>((resolve) => conn.start({ data: (d) => got.push(d), close: () => resolve() }));
    conn.write(Buffer.from('hi'));
    await waitFor(() => Buffer.concat(got).toString() === 'echo:hi', 10_000, 'the echo');
    conn.end();
    await closed;
    expect(conn.closed).toBe(true);
  });

  it('replaces a stale socket file but refuses an address another process serves', async () => {
    const t = new SimulatedVsockTransport(dir);
    const first = await t.listen('vsock://16:5001', () => undefined);
    cleanup.push(() => first.close());
    await expect(t.listen('vsock://16:5001', () => undefined)).rejects.toThrow(/another process is listening/);
    await first.close();
    // A process killed while listening leaves its socket file behind.
    const file = simulatedSocketPath(dir, 'vsock://16:5001');
    const crashed = spawnSync(
      process.execPath,
      ['-e', `require('net').createServer().listen(${JSON.stringify(file)}, () => process.kill(process.pid, 'SIGKILL'))`],
      { timeout: 30_000 },
    );
    expect(crashed.signal).toBe('SIGKILL');
    expect(fs.lstatSync(file).isSocket()).toBe(true);
    const again = await t.listen('vsock://16:5001', () => undefined);
    cleanup.push(() => again.close());
  });

  it('reports unsent bytes and their draining (writeMode queued), and pausing stops delivery until resumed', async () => {
    const t = new SimulatedVsockTransport(dir);
    let serverSide: Connection | undefined;
    const serverGot: Buffer[] = [];
    const flushed: number[] = [];
    const listener = await t.listen('vsock://16:5002', (conn) => {
      serverSide = conn;
      conn.start({ data: (d) => serverGot.push(d), close: () => undefined, flushed: (n) => flushed.push(n) });
    });
    cleanup.push(() => listener.close());
    const client = await t.connect('vsock://16:5002');
    cleanup.push(() => client.destroy());
    const clientGot: Buffer[] = [];
    client.start({ data: (d) => clientGot.push(d), close: () => undefined });
    client.pauseReading(); // the client does not read
    await waitFor(() => serverSide !== undefined, 10_000, 'accept');
    const conn = serverSide as Connection;
    cleanup.push(() => conn.destroy());
    expect(conn.writeMode).toBe('queued');
    expect(conn.bufferedBytes).toBe(0);

    const big = Buffer.alloc(4 * 1024 * 1024, 7);
    conn.write(big);
    // The kernel takes a few hundred KB at most; the rest waits in this process and is counted.
    await waitFor(() => flushed.length > 0 || conn.bufferedBytes > 0, 10_000, 'the write to start');
    expect(conn.bufferedBytes).toBeGreaterThan(1024 * 1024);
    expect(client.readingPaused).toBe(true);
    expect(Buffer.concat(clientGot).length).toBe(0);
    client.resumeReading();
    await waitFor(() => Buffer.concat(clientGot).length === big.length, 20_000, 'all bytes');
    await waitFor(() => flushed.includes(0), 10_000, 'flushed(0)');
    expect(conn.bufferedBytes).toBe(0);
    expect(Buffer.concat(clientGot).equals(big)).toBe(true);

    // Read side: while paused nothing is delivered and the writer feels backpressure; resuming delivers it all in order.
    conn.pauseReading();
    const payload = Buffer.from(Array.from({ length: 2 * 1024 * 1024 }, (_, i) => i % 251));
    client.write(payload);
    // Backpressure means the kernel buffers between the two are full: bytes the server side could read.
    await waitFor(() => client.bufferedBytes > 0, 10_000, 'the client to feel backpressure');
    // An observation window, not synchronisation: with reading paused nothing may arrive during it. It cannot
    // fail a correct transport, whatever the machine's speed.
    await sleep(50);
    expect(serverGot.length).toBe(0);
    expect(client.bufferedBytes).toBeGreaterThan(0);
    conn.resumeReading();
    await waitFor(() => Buffer.concat(serverGot).length === payload.length, 20_000, 'all bytes after resume');
    expect(Buffer.concat(serverGot).equals(payload)).toBe(true);
  });

  it('fails to connect with a clear error when nothing listens', async () => {
    await expect(new SimulatedVsockTransport(dir).connect('vsock://16:5999')).rejects.toThrow(
      /connect to vsock:\/\/16:5999 failed: ENOENT/,
    );
  });
});
