import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createTransport, parseVsockAddress, SimulatedVsockTransport, simulatedSocketPath, TransportConfigSchema, type Connection } from '../src/transport';
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
  it('connects, exchanges bytes both ways and reports close', async () => {
    const dir = tempRunDir();
    const t = new SimulatedVsockTransport(dir);
    const got: Buffer[] = [];
    const listener = await t.listen('vsock://16:5000', (conn) => {
      conn.start({ data: (d) => conn.write(Buffer.concat([Buffer.from('echo:'), d])), close: () => undefined });
    });
    const conn = await t.connect('vsock://16:5000');
    const closed = new Promise<void>((resolve) => conn.start({ data: (d) => got.push(d), close: () => resolve() }));
    conn.write(Buffer.from('hi'));
    while (Buffer.concat(got).toString() !== 'echo:hi') await new Promise((r) => setTimeout(r, 5));
    conn.end();
    await closed;
    expect(conn.closed).toBe(true);
    await listener.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('replaces a stale socket file but refuses an address another process serves', async () => {
    const dir = tempRunDir();
    const t = new SimulatedVsockTransport(dir);
    const first = await t.listen('vsock://16:5001', () => undefined);
    await expect(t.listen('vsock://16:5001', () => undefined)).rejects.toThrow(/another process is listening/);
    await first.close();
    // A process killed while listening leaves its socket file behind.
    const file = simulatedSocketPath(dir, 'vsock://16:5001');
    const crashed = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(file)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(crashed.signal).toBe('SIGKILL');
    expect(fs.lstatSync(file).isSocket()).toBe(true);
    const again = await t.listen('vsock://16:5001', () => undefined);
    await again.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reports unsent bytes and their draining (writeMode queued), and pausing stops delivery until resumed', async () => {
    const dir = tempRunDir();
    const t = new SimulatedVsockTransport(dir);
    let serverSide: Connection | undefined;
    const serverGot: Buffer[] = [];
    const flushed: number[] = [];
    const listener = await t.listen('vsock://16:5002', (conn) => {
      serverSide = conn;
      conn.start({ data: (d) => serverGot.push(d), close: () => undefined, flushed: (n) => flushed.push(n) });
    });
    const client = await t.connect('vsock://16:5002');
    const clientGot: Buffer[] = [];
    client.start({ data: (d) => clientGot.push(d), close: () => undefined });
    client.pauseReading(); // the client does not read
    await waitFor(() => serverSide !== undefined, 2000, 'accept');
    const conn = serverSide as Connection;
    expect(conn.writeMode).toBe('queued');
    expect(conn.bufferedBytes).toBe(0);

    const big = Buffer.alloc(4 * 1024 * 1024, 7);
    conn.write(big);
    // The kernel takes a few hundred KB at most; the rest waits in this process and is counted.
    await waitFor(() => flushed.length > 0 || conn.bufferedBytes > 0, 2000, 'the write to start');
    expect(conn.bufferedBytes).toBeGreaterThan(1024 * 1024);
    expect(client.readingPaused).toBe(true);
    expect(Buffer.concat(clientGot).length).toBe(0);
    client.resumeReading();
    await waitFor(() => Buffer.concat(clientGot).length === big.length, 10_000, 'all bytes');
    await waitFor(() => flushed.includes(0), 2000, 'flushed(0)');
    expect(conn.bufferedBytes).toBe(0);
    expect(Buffer.concat(clientGot).equals(big)).toBe(true);

    // Read side: while paused nothing is delivered and the writer feels backpressure; resuming delivers it all in order.
    conn.pauseReading();
    const payload = Buffer.from(Array.from({ length: 2 * 1024 * 1024 }, (_, i) => i % 251));
    client.write(payload);
    await waitFor(() => client.bufferedBytes > 0, 2000, 'the client to feel backpressure');
    await sleep(50);
    expect(serverGot.length).toBe(0);
    expect(client.bufferedBytes).toBeGreaterThan(0);
    conn.resumeReading();
    await waitFor(() => Buffer.concat(serverGot).length === payload.length, 10_000, 'all bytes after resume');
    expect(Buffer.concat(serverGot).equals(payload)).toBe(true);

    client.destroy();
    await listener.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('fails to connect with a clear error when nothing listens', async () => {
    const dir = tempRunDir();
    await expect(new SimulatedVsockTransport(dir).connect('vsock://16:5999')).rejects.toThrow(/connect to vsock:\/\/16:5999 failed: ENOENT/);
    fs.rmSync(path.join(dir), { recursive: true, force: true });
  });
});
