/**
 * The vsock Connection (shared/src/transport/vsock.ts) over the real addon, on AF_UNIX socketpairs: the same
 * addon code as AF_VSOCK connections, which cannot be made on this machine. Queued writes with
 * `bufferedBytes`/`flushed`, `pauseReading` stopping the kernel reads, `end`, `destroy`, errors, and the RPC
 * server's backlog rules working over it. Tests wait for events; "nothing happened" is checked over event-loop
 * turns, each of which polls for I/O.
 */
import path from 'node:path';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { buildSync } from 'esbuild';
import { z } from 'zod';
import { encodeFrame, FrameDecoder, MAX_WRITE_CHUNK_BYTES } from '../src/framing';
import { RpcServer, rpcMethod } from '../src/rpc';
import { adoptVsockHandle, type VsockConnection, type VsockHandle } from '../src/transport/vsock';
import type { ConnectionHandlers } from '../src/transport';
import { captureLogger, tempRunDir, waitFor } from './helpers';
import { binding, closeTracked, loopTurns, runNode, track, VSOCK_ADDON_PATH } from './vsock-helpers';

const conns: VsockConnection[] = [];
afterEach(() => {
  for (const c of conns.splice(0)) c.destroy();
  closeTracked();
});

function pair(): [VsockConnection, VsockConnection] {
  const [a, b] = binding.socketpair();
  const ca = adoptVsockHandle(binding, a, 'a');
  const cb = adoptVsockHandle(binding, b, 'b');
  conns.push(ca, cb);
  return [ca, cb];
}

/** Handlers that record what a connection delivers; `until` resolves on a condition checked after each event. */
function recorder() {
  const r = {
    data: [] as Buffer[],
    bytes: 0,
    flushed: [] as number[],
    closes: [] as Array<Error | undefined>,
    waiters: [] as Array<{ cond: () => boolean; resolve: () => void }>,
    until(cond: () => boolean): Promise<void> {
      if (cond()) return Promise.resolve();
      return new Promise((resolve) => r.waiters.push({ cond, resolve }));
    },
    check() {
      r.waiters = r.waiters.filter((w) => (w.cond() ? (w.resolve(), false) : true));
    },
    handlers: {
      data: (chunk: Buffer) => {
        r.data.push(chunk);
        r.bytes += chunk.length;
        r.check();
      },
      close: (err?: Error) => {
        r.closes.push(err);
        r.check();
      },
      flushed: (n: number) => {
        r.flushed.push(n);
        r.check();
      },
    } satisfies ConnectionHandlers,
  };
  return r;
}

describe('vsock Connection over the addon', () => {
  it('is a queued writer and carries bytes in order both ways', async () => {
    const [a, b] = pair();
    expect(a.writeMode).toBe('queued');
    const ra = recorder();
    const rb = recorder();
    a.start(ra.handlers);
    b.start(rb.handlers);
    const toB = randomBytes(5 * 1024 * 1024);
    const toA = randomBytes(3 * 1024 * 1024 + 17);
    // Writes of many sizes, both ways at once.
    for (let i = 0, size = 1; i < toB.length; i += size, size = (size * 7 + 13) % (200 * 1024) || 1) a.write(toB.subarray(i, i + size));
    b.write(toA);
    await rb.until(() => rb.bytes === toB.length);
    await ra.until(() => ra.bytes === toA.length);
    expect(Buffer.concat(rb.data).equals(toB)).toBe(true);
    expect(Buffer.concat(ra.data).equals(toA)).toBe(true);
    await ra.until(() => a.bufferedBytes === 0 && ra.flushed.at(-1) === 0);
  });

  it('splits writes into chunks of at most 32 KiB before they reach the kernel', () => {
    const writes: number[] = [];
    const [h] = track(binding.socketpair());
    const spy = { ...binding, write: (handle: VsockHandle, data: Buffer) => (writes.push(data.length), binding.write(handle, data)) };
    const conn = adoptVsockHandle(spy, h, 'spy');
    conns.push(conn);
    conn.write(Buffer.alloc(70 * 1024));
    expect(writes).toEqual([32 * 1024, 32 * 1024, 6 * 1024]);
    expect(MAX_WRITE_CHUNK_BYTES).toBe(32 * 1024);
  });

  it('queues what a peer that does not read cannot take: bufferedBytes grows, the loop runs on, flushed reports the drain', async () => {
    const [a, b] = pair();
    const ra = recorder();
    a.start(ra.handlers);
    const first = randomBytes(8 * 1024 * 1024);
    a.write(first); // returns at once: the kernel takes what fits, the rest waits here
    const queued = a.bufferedBytes;
    expect(queued).toBeGreaterThan(0);
    expect(queued).toBeLessThan(first.length);
    let immediateRan = false;
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        immediateRan = a.bufferedBytes > 0;
        resolve();
      }),
    );
    expect(immediateRan).toBe(true);
    await loopTurns(10);
    expect(a.bufferedBytes).toBe(queued); // the peer still does not read: nothing more left
    const second = randomBytes(1024 * 1024);
    a.write(second);
    expect(a.bufferedBytes).toBe(queued + second.length);

    const rb = recorder();
    b.start(rb.handlers);
    await ra.until(() => ra.flushed.at(-1) === 0);
    expect(a.bufferedBytes).toBe(0);
    expect(ra.flushed.length).toBeGreaterThan(1); // progress was reported as the queue drained
    await rb.until(() => rb.bytes === first.length + second.length);
    expect(Buffer.concat(rb.data).equals(Buffer.concat([first, second]))).toBe(true);
  });

  it('keeps the event loop running while a peer does not read (a fresh process; a blocking write would hang it)', () => {
    const dir = tempRunDir();
    try {
      const entry = path.join(dir, 'probe.ts');
      fs.writeFileSync(
        entry,
        `
        import { adoptVsockHandle, loadVsockBinding } from ${JSON.stringify(path.resolve(__dirname, '../src/transport/vsock'))};
        const binding = loadVsockBinding([${JSON.stringify(VSOCK_ADDON_PATH)}]);
        const [x, y] = binding.socketpair();
        const a = adoptVsockHandle(binding, x, 'a');
        const b = adoptVsockHandle(binding, y, 'b');
        const seen: Record<string, number> = {};
        const total = 16 * 1024 * 1024;
        a.start({ data() {}, close() {}, flushed: (n) => { seen.flushedTo = n; } });
        a.write(Buffer.alloc(total, 1));
        seen.queuedAfterWrite = a.bufferedBytes;
        setTimeout(() => {
          seen.queuedWhenTimerRan = a.bufferedBytes;
          let got = 0;
          b.start({ data: (d) => { got += d.length; seen.received = got; if (got === total) finish(); }, close() {} });
        }, 0);
        function finish() {
          console.log(JSON.stringify(seen));
          a.destroy();
          b.destroy();
        }
        `,
      );
      const outfile = path.join(dir, 'probe.js');
      buildSync({ entryPoints: [entry], outfile, bundle: true, platform: 'node', format: 'cjs', logLevel: 'silent' });
      const res = runNode(`require(${JSON.stringify(outfile)})`);
      expect({ status: res.status, signal: res.signal, stderr: res.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
      const out = res.out as Record<string, number>;
      expect(out.queuedAfterWrite).toBeGreaterThan(0);
      expect(out.queuedWhenTimerRan).toBeGreaterThan(0); // a timer ran while bytes were queued
      expect(out).toMatchObject({ flushedTo: 0, received: 16 * 1024 * 1024 });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('pauseReading stops reading from the kernel: the peer is pushed back (its bufferedBytes grows); resumeReading resumes', async () => {
    const [a, b] = pair();
    const ra = recorder();
    const rb = recorder();
    a.start(ra.handlers);
    b.start(rb.handlers);
    b.write(Buffer.from('before'));
    await ra.until(() => ra.bytes === 6);
    a.pauseReading();
    expect(a.readingPaused).toBe(true);
    const payload = randomBytes(4 * 1024 * 1024);
    b.write(payload);
    const held = b.bufferedBytes;
    expect(held).toBeGreaterThan(0);
    await loopTurns(20);
    expect(ra.bytes).toBe(6); // nothing delivered while paused...
    expect(b.bufferedBytes).toBe(held); // ...and nothing read from the kernel and held here: the peer waits
    a.resumeReading();
    expect(a.readingPaused).toBe(false);
    await ra.until(() => ra.bytes === 6 + payload.length);
    expect(Buffer.concat(ra.data).subarray(6).equals(payload)).toBe(true);
    await rb.until(() => rb.flushed.at(-1) === 0);
  });

  it('a connection paused before start does not read until resumed', async () => {
    const [a, b] = pair();
    const ra = recorder();
    a.pauseReading();
    a.start(ra.handlers);
    b.start(recorder().handlers);
    b.write(Buffer.from('held in the kernel'));
    await loopTurns(10);
    expect(ra.bytes).toBe(0);
    a.resumeReading();
    await ra.until(() => Buffer.concat(ra.data).toString() === 'held in the kernel');
  });

  it('end() sends what is queued, then closes once the peer has ended too; the peer gets every byte', async () => {
    const [a, b] = pair();
    const ra = recorder();
    a.start(ra.handlers);
    const payload = randomBytes(4 * 1024 * 1024);
    a.write(payload);
    expect(a.bufferedBytes).toBeGreaterThan(0);
    a.end();
    a.write(Buffer.from('after end: dropped'));
    expect(a.closed).toBe(false);
    const rb = recorder();
    b.start(rb.handlers);
    await ra.until(() => ra.closes.length === 1);
    await rb.until(() => rb.closes.length === 1);
    expect(Buffer.concat(rb.data).equals(payload)).toBe(true);
    expect([ra.closes, rb.closes]).toEqual([[undefined], [undefined]]);
    expect([a.closed, b.closed, a.bufferedBytes]).toEqual([true, true, 0]);
  });

  it('destroy() is idempotent: close is reported once, later writes are ignored, the peer reads end-of-stream', async () => {
    const [a, b] = pair();
    const ra = recorder();
    const rb = recorder();
    a.start(ra.handlers);
    b.start(rb.handlers);
    a.destroy();
    a.destroy();
    a.end();
    a.write(Buffer.from('ignored'));
    expect([a.closed, a.bufferedBytes, ra.closes]).toEqual([true, 0, [undefined]]);
    await rb.until(() => rb.closes.length === 1);
    expect(rb.closes).toEqual([undefined]);
    expect(rb.bytes).toBe(0);
    // start() on a connection that is already closed reports the close.
    const late = recorder();
    expect(() => a.start(late.handlers)).toThrow('already started');
    const [c] = pair();
    c.destroy();
    c.start(late.handlers);
    await late.until(() => late.closes.length === 1);
  });

  it('reports a write error with its code (EPIPE once the peer is gone) and closes', async () => {
    const [a, b] = pair();
    const ra = recorder();
    a.pauseReading(); // not reading: the close is seen by writing, not as end-of-stream
    a.start(ra.handlers);
    b.destroy();
    a.write(Buffer.from('to nobody'));
    await ra.until(() => ra.closes.length === 1);
    expect(ra.closes[0]).toMatchObject({ code: 'EPIPE', syscall: 'write' });
    expect(a.closed).toBe(true);
  });

  it('lets the RPC server bound what a peer that does not read makes it hold (it stops reading that connection)', async () => {
    const log = captureLogger();
    const server = new RpcServer({
      name: 'vsock-bp',
      logger: log.logger,
      unsentHighWaterBytes: 64 * 1024,
      unsentLowWaterBytes: 16 * 1024,
      maxUnsentBytesPerConnection: 4 * 1024 * 1024,
      methods: { blob: rpcMethod(z.strictObject({ n: z.number() }), (p) => ({ n: p.n, data: 'x'.repeat(2000) })) },
    });
    const [s, peer] = track(binding.socketpair());
    const total = 3000;
    const requests = Buffer.concat(
      Array.from({ length: total }, (_, i) =>
        encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: i, method: 'blob', params: { n: i } }))),
      ),
    );
    let sent = 0;
    /** Writes requests until the kernel takes no more; the next 'writable' continues. */
    const pump = () => {
      while (sent < requests.length) {
        const n = binding.write(peer, requests.subarray(sent, sent + 32 * 1024));
        sent += n;
        if (n === 0) return;
      }
    };
    const answers = new FrameDecoder();
    let answered = 0;
    // A raw peer: writes every request, reads nothing until told.
    binding.attach(peer, (event, arg) => {
      if (event === 'writable') pump();
      if (event === 'data') answered += answers.push(arg as Buffer).length;
    });
    try {
      server.attach(adoptVsockHandle(binding, s, 'server-side'));
      pump();
      await waitFor(() => server.stats.pausedConnections === 1, 10_000, 'the server to stop reading the connection');
      const taken = server.stats.requests;
      expect(taken).toBeLessThan(total);
      expect(server.stats.unsentBytes).toBeGreaterThan(64 * 1024);
      await loopTurns(20);
      expect(server.stats.requests).toBe(taken); // paused: no more requests read from the kernel
      expect(log.text()).toContain('stopped reading a connection whose peer does not read its answers');
      // The peer reads: the backlog drains, the server resumes, and every request is answered.
      binding.readStart(peer);
      await waitFor(() => answered === total, 20_000, 'every answer');
      expect(server.stats).toMatchObject({ pausedConnections: 0, backlogClosed: 0, unsentBytes: 0 });
    } finally {
      await server.close(100);
    }
  });
});
