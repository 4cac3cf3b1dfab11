/**
 * The real AF_VSOCK binding: it loads, and a socket can be created and bound. Never connected here: on
 * development machines CID 2 is this machine's own host. The check runs in a child process because the
 * binding's accept thread keeps a process alive after close (DESIGN §12), which would hang a Jest worker.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { loadVsockBinding, RealVsockTransport, type Connection } from '../src/transport';
import { VSOCK_MAX_HELD_BYTES, type VsockBinding } from '../src/transport/vsock';
import { tempRunDir } from './helpers';

const script = `
import { RealVsockTransport } from ${JSON.stringify(path.resolve(__dirname, '../src/transport/vsock'))};
(async () => {
  const transport = new RealVsockTransport();
  const port = 40000 + (process.pid % 20000);
  const out = { kind: transport.kind, port };
  const listener = await transport.listen('vsock://16:' + port, () => {});
  out.bound = listener.address;
  try {
    await transport.listen('vsock://16:' + port, () => {});
    out.second = 'bound twice';
  } catch (e) {
    out.second = String(e.message);
  }
  await listener.close();
  console.log(JSON.stringify(out));
  process.exit(0); // the binding's listener thread would keep the process alive
})().catch((e) => { console.log(JSON.stringify({ error: String(e && e.message) })); process.exit(1); });
`;

describe('real vsock binding', () => {
  it('loads, creates and binds an AF_VSOCK socket (bind is exclusive per port)', () => {
    const dir = tempRunDir();
    try {
      const entry = path.join(dir, 'probe.ts');
      fs.writeFileSync(entry, script);
      const outfile = path.join(dir, 'probe.js');
      buildSync({ entryPoints: [entry], outfile, bundle: true, platform: 'node', format: 'cjs', external: ['node-vsock-linux-x64-gnu'], logLevel: 'silent' });
      const nodeModules = path.resolve(__dirname, '../../node_modules');
      const res = spawnSync(process.execPath, [outfile], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, NODE_PATH: nodeModules } });
      expect({ status: res.status, stderr: res.stderr, stdout: res.stdout }).toEqual({ status: 0, stderr: '', stdout: expect.stringContaining('"bound"') });
      const out = JSON.parse(res.stdout.trim().split('\n').pop() as string);
      expect(out.kind).toBe('vsock');
      expect(out.bound).toBe(`vsock://16:${out.port}`);
      // The second bind of the same port fails: the first socket really was bound.
      expect(out.second).toMatch(/Bind socket address failed.*(EADDRINUSE|AddrInUse)/i);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says clearly why it cannot load, and what to use instead', () => {
    expect(() => loadVsockBinding(['/nonexistent/node-vsock.linux-x64-gnu.node'])).toThrow(
      /AF_VSOCK binding .* could not be loaded[\s\S]*nonexistent[\s\S]*use the simulated transport/,
    );
  });

  it('refuses to dial CIDs that are never a Nitro peer (0, 1, 2), before creating a socket', async () => {
    const fakeBinding = {
      VsockSocket: class {
        constructor() {
          throw new Error('a socket must not be created');
        }
      },
    } as never;
    const transport = new RealVsockTransport(fakeBinding);
    for (const cid of [0, 1, 2]) {
      await expect(transport.connect(`vsock://${cid}:5000`)).rejects.toThrow(`CID ${cid} is never a Nitro parent or enclave`);
    }
  });
});

/** A stand-in for the binding: records what the transport asks of it and lets the test raise its events. */
function fakeBinding() {
  type Emit = (err: Error | null, event: string, ...args: unknown[]) => void;
  const sockets: Array<{ emit: Emit; fd?: number; writes: Buffer[]; calls: string[] }> = [];
  class FakeSocket {
    readonly rec: (typeof sockets)[number];
    constructor(emit: Emit, fd?: number) {
      this.rec = { emit, ...(fd === undefined ? {} : { fd }), writes: [], calls: [] };
      sockets.push(this.rec);
    }
    listen(): void {
      this.rec.calls.push('listen');
    }
    connect(): void {
      throw new Error('the fake binding never connects');
    }
    shutdown(): void {
      this.rec.calls.push('shutdown');
    }
    close(): void {
      this.rec.calls.push('close');
    }
    startRecv(): void {
      this.rec.calls.push('startRecv');
    }
    writeBuffer(data: Buffer): void {
      this.rec.writes.push(Buffer.from(data));
    }
    setMaxConnectionAttempts(): void {}
  }
  return { binding: { VsockSocket: FakeSocket } as unknown as VsockBinding, sockets };
}

describe('vsock connection flow control (fake binding, nothing connected)', () => {
  async function accepted() {
    const { binding, sockets } = fakeBinding();
    const conns: Connection[] = [];
    const listener = await new RealVsockTransport(binding).listen('vsock://16:5000', (c) => conns.push(c));
    sockets[0]!.emit(null, '_connection', 42);
    const sock = sockets[1]!;
    expect(sock.fd).toBe(42);
    expect(sock.calls).toContain('startRecv');
    return { conn: conns[0]!, sock, listener };
  }

  it('is a blocking writer: nothing is queued in the process, each write is at most 32 KiB', async () => {
    const { conn, sock, listener } = await accepted();
    expect(conn.writeMode).toBe('blocking');
    conn.write(Buffer.alloc(70 * 1024, 1));
    expect(sock.writes.map((w) => w.length)).toEqual([32 * 1024, 32 * 1024, 6 * 1024]);
    expect(conn.bufferedBytes).toBe(0);
    await listener.close();
  });

  it('holds data while paused and delivers it in order on resume; data before start is delivered too', async () => {
    const { conn, sock, listener } = await accepted();
    sock.emit(null, '_data', Buffer.from('a'));
    const got: string[] = [];
    conn.start({ data: (d) => got.push(d.toString()), close: () => undefined });
    expect(got).toEqual(['a']);
    sock.emit(null, '_data', Buffer.from('b'));
    conn.pauseReading();
    expect(conn.readingPaused).toBe(true);
    sock.emit(null, '_data', Buffer.from('c'));
    sock.emit(null, '_data', Buffer.from('d'));
    expect(got).toEqual(['a', 'b']);
    conn.resumeReading();
    expect(got).toEqual(['a', 'b', 'c', 'd']);
    sock.emit(null, '_data', Buffer.from('e'));
    expect(got).toEqual(['a', 'b', 'c', 'd', 'e']);
    conn.destroy();
    await listener.close();
  });

  it('disconnects a peer that sends more than VSOCK_MAX_HELD_BYTES while reading is paused', async () => {
    const { conn, sock, listener } = await accepted();
    let closedWith: Error | undefined;
    let delivered = 0;
    conn.start({ data: (d) => (delivered += d.length), close: (e) => (closedWith = e) });
    conn.pauseReading();
    const chunk = Buffer.alloc(64 * 1024);
    for (let i = 0; i <= VSOCK_MAX_HELD_BYTES / chunk.length && !conn.closed; i++) sock.emit(null, '_data', chunk);
    expect(conn.closed).toBe(true);
    expect(closedWith?.message).toMatch(/while reading was paused/);
    expect(sock.calls).toEqual(expect.arrayContaining(['shutdown', 'close']));
    conn.resumeReading();
    expect(delivered).toBe(0);
    await listener.close();
  });
});
