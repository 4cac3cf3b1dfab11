/**
 * The vsock addon itself (enclave/native/vsock.c), driven over AF_UNIX socketpairs and an AF_UNIX listener:
 * the read/write/poll/accept code is the same for every socket family, and vsock connections cannot be made on
 * this machine. No sleeps: tests wait for the addon's events, and "nothing happened" is checked over a number
 * of event-loop turns (each of which polls for I/O).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { types } from 'node:util';
import type { VsockHandle } from '../src/transport/vsock';
import { tempRunDir } from './helpers';
import { binding, closeTracked, Events, gc, loopTurns, runNode, thrown, track, VSOCK_ADDON_PATH } from './vsock-helpers';

afterEach(closeTracked);

/** A connected pair, both attached; neither reads until readStart. */
function pair(onA?: (event: string) => void, onB?: (event: string) => void) {
  const [a, b] = track(binding.socketpair());
  const ea = new Events(onA);
  const eb = new Events(onB);
  binding.attach(a, ea.cb);
  binding.attach(b, eb.cb);
  return { a, b, ea, eb };
}

/** Writes 32 KiB pieces until the kernel takes no more; returns the bytes it took. */
function fill(h: VsockHandle): number {
  const piece = Buffer.alloc(32 * 1024, 0x5a);
  let total = 0;
  for (let i = 0; i < 100_000; i++) {
    const n = binding.write(h, piece);
    total += n;
    if (n === 0) return total;
  }
  throw new Error('the socket never filled up');
}

describe('vsock addon', () => {
  it('exposes its functions; handles are opaque and only its own are accepted', () => {
    expect(Object.keys(binding).sort()).toEqual(
      ['attach', 'close', 'connect', 'listen', 'listenUnix', 'readStart', 'readStop', 'shutdown', 'socketpair', 'write'].sort(),
    );
    const [a] = track(binding.socketpair());
    expect(Object.keys(a)).toEqual([]);
    expect(thrown(() => binding.write({} as VsockHandle, Buffer.from('x')))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(thrown(() => binding.readStart(a))).toMatchObject({ code: 'ERR_NOT_ATTACHED' });
    binding.attach(a, () => undefined);
    expect(thrown(() => binding.attach(a, () => undefined))).toMatchObject({ code: 'ERR_ALREADY_ATTACHED' });
    expect(thrown(() => binding.write(a, 'x' as never))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(thrown(() => binding.listen(0xffffffff, 8, () => undefined))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });

  it('delivers the bytes written on one end to the other, in order, in reads of at most 64 KiB', async () => {
    const payload = randomBytes(3 * 1024 * 1024);
    let offset = 0;
    const pump = () => {
      while (offset < payload.length) {
        const piece = payload.subarray(offset, offset + 32 * 1024);
        const n = binding.write(a, piece);
        offset += n;
        if (n < piece.length) return; // a 'writable' event follows
      }
    };
    const { a, b, eb } = pair((event) => event === 'writable' && pump());
    binding.readStart(b);
    pump();
    await eb.until(() => eb.bytes() === payload.length);
    expect(Buffer.concat(eb.data).equals(payload)).toBe(true);
    expect(Math.max(...eb.data.map((d) => d.length))).toBeLessThanOrEqual(64 * 1024);
  });

  it('write returns 0 when the kernel would block (never blocks), then one writable event once the peer reads', async () => {
    const { a, b, ea, eb } = pair();
    const taken = fill(a); // ends with a write that returned 0
    expect(taken).toBeGreaterThan(0);
    await loopTurns(10);
    expect(ea.count('writable')).toBe(0); // the peer does not read: still full
    expect(binding.write(a, Buffer.from('x'))).toBe(0);
    binding.readStart(b);
    await ea.until(() => ea.count('writable') === 1);
    await eb.until(() => eb.bytes() === taken);
    await loopTurns(10);
    expect(ea.count('writable')).toBe(1); // one notification per short write, not one per loop turn
  });

  it('readStop stops reading from the kernel, so the writer is pushed back; readStart resumes', async () => {
    const { a, b, eb } = pair();
    binding.readStart(b);
    binding.write(a, Buffer.from('hello'));
    await eb.until(() => eb.bytes() === 5);
    binding.readStop(b);
    const taken = fill(a);
    await loopTurns(20);
    expect(eb.bytes()).toBe(5); // nothing read while stopped...
    expect(binding.write(a, Buffer.alloc(1024))).toBe(0); // ...so nothing was drained from the kernel
    binding.readStart(b);
    await eb.until(() => eb.bytes() === 5 + taken);
  });

  it("reads the peer's shutdown as one 'end'; the other direction stays open", async () => {
    const { a, b, ea, eb } = pair();
    binding.readStart(a);
    binding.readStart(b);
    binding.write(a, Buffer.from('bye'));
    binding.shutdown(a);
    await eb.until(() => eb.count('end') === 1);
    expect(eb.text()).toBe('bye');
    binding.write(b, Buffer.from('still open'));
    await ea.until(() => ea.text() === 'still open');
    binding.close(b);
    await ea.until(() => ea.count('end') === 1);
    await loopTurns(5);
    expect(eb.count('end')).toBe(1);
  });

  it('errors carry the errno name and the syscall; a closed handle is EBADF; close is idempotent', () => {
    const { a, b } = pair();
    binding.close(b);
    binding.close(b);
    const epipe = thrown(() => binding.write(a, Buffer.from('x')));
    expect(types.isNativeError(epipe)).toBe(true);
    expect(epipe).toMatchObject({ code: 'EPIPE', syscall: 'write' });
    expect(epipe.message).toMatch(/^write EPIPE: /);
    for (const op of [() => binding.write(b, Buffer.from('x')), () => binding.readStart(b), () => binding.shutdown(b)]) {
      expect(thrown(op)).toMatchObject({ code: 'EBADF' });
    }
  });

  it('reports a connection reset by its real code (the socket error), not as a failed poll with EBADF', async () => {
    const [x, y] = track(binding.socketpair());
    const error = new Promise<{ code?: string; syscall?: string }>((resolve) => {
      binding.attach(y, (event: string, arg: unknown) => {
        if (event === 'error') resolve(arg as { code?: string; syscall?: string });
      });
    });
    binding.attach(x, () => {});
    binding.readStart(y);
    binding.write(y, Buffer.from('never read by x')); // sits in x's receive queue
    await new Promise((r) => setImmediate(r));
    binding.close(x); // closing with unread data resets the connection: y gets POLLERR
    expect(await error).toMatchObject({ code: 'ECONNRESET', syscall: 'poll' });
  });

  it('delivers nothing after close, even when the callback closes its own handle', async () => {
    const { a, b, eb } = pair(undefined, (event) => event === 'data' && binding.close(b));
    binding.readStart(b);
    binding.write(a, Buffer.from('one'));
    await eb.until(() => eb.log.length === 1);
    try {
      binding.write(a, Buffer.from('two'));
    } catch {
      /* EPIPE: b is closed */
    }
    binding.shutdown(a);
    await loopTurns(10);
    expect(eb.log.map((e) => e.event)).toEqual(['data']);
  });

  it('accepts on a listener (unattached handles, attached by the caller); close stops accepting at once', async () => {
    const dir = tempRunDir();
    const file = path.join(dir, 'l.sock');
    let client: net.Socket | undefined;
    try {
      const el = new Events();
      const listener = track(binding.listenUnix(file, 8, el.cb));
      client = net.connect(file);
      client.write('hi');
      await el.until(() => el.count('connection') === 1);
      const conn = track(el.log[0]!.arg as VsockHandle);
      const ec = new Events();
      binding.attach(conn, ec.cb);
      binding.readStart(conn);
      await ec.until(() => ec.text() === 'hi');

      binding.close(listener);
      const refused = await new Promise<Error | null>((resolve) => {
        const probe = net.connect(file);
        probe.once('error', resolve);
        probe.once('connect', () => {
          probe.destroy();
          resolve(null);
        });
      });
      expect(refused).toMatchObject({ code: 'ECONNREFUSED' });
      // The connection accepted before is not affected.
      const reply = new Promise<string>((resolve) => client!.once('data', (d) => resolve(d.toString())));
      binding.write(conn, Buffer.from('still here'));
      await expect(reply).resolves.toBe('still here');
    } finally {
      client?.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('closes a handle that JavaScript drops without closing it (attached or not): its fd is not leaked', async () => {
    /** One end of a pair whose other end is unreachable once this returns. */
    const lonely = (attachOther: boolean) => {
      const [mine, other] = binding.socketpair();
      if (attachOther) {
        binding.attach(other, () => undefined); // the callback does not refer to the handle
        binding.readStart(other);
      }
      const ev = new Events();
      binding.attach(mine, ev.cb);
      binding.readStart(mine);
      return { mine: track(mine), ev };
    };
    for (const attachOther of [false, true]) {
      const { ev } = lonely(attachOther);
      // The finalizer closes the other end; this end then reads end-of-stream.
      for (let i = 0; i < 200 && ev.count('end') === 0; i++) {
        gc();
        await loopTurns(1);
      }
      expect({ attachOther, ends: ev.count('end') }).toEqual({ attachOther, ends: 1 });
    }
  });

  it('never blocks the event loop on a full socket (a fresh process; a blocking write would hang it)', () => {
    const res = runNode(`
      const b = require(${JSON.stringify(VSOCK_ADDON_PATH)});
      const [x, y] = b.socketpair();
      b.attach(x, () => {});
      b.attach(y, () => {});
      const piece = Buffer.alloc(65536);
      let total = 0, last = -1;
      for (let i = 0; i < 100000 && last !== 0; i++) { last = b.write(x, piece); total += last; }
      setImmediate(() => { console.log(JSON.stringify({ last, total })); b.close(x); b.close(y); });
    `);
    expect({ status: res.status, signal: res.signal, stderr: res.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(res.out).toEqual({ last: 0, total: expect.any(Number) });
  });

  it('closes what a worker thread left open when the thread ends (its loop closes cleanly)', () => {
    const res = runNode(`
      const { Worker } = require('node:worker_threads');
      const w = new Worker(\`
        const b = require(${JSON.stringify(VSOCK_ADDON_PATH)});
        const [x, y] = b.socketpair();
        b.attach(x, () => {}); b.attach(y, () => {});
        b.readStart(x); b.readStart(y);
        b.write(x, Buffer.from('unread'));
        require('node:worker_threads').parentPort.postMessage('open');
      \`, { eval: true });
      w.once('message', () => w.terminate());
      w.once('exit', (code) => console.log(JSON.stringify({ workerExit: code })));
    `);
    // Without the addon's cleanup hook, Node aborts when it closes the worker's loop with a handle in it.
    expect({ status: res.status, signal: res.signal, out: res.out }).toEqual({ status: 0, signal: null, out: { workerExit: 1 } });
  });

  it('an exception thrown by an event callback is an uncaught exception, as for any Node I/O callback', () => {
    const res = runNode(`
      const b = require(${JSON.stringify(VSOCK_ADDON_PATH)});
      const [x, y] = b.socketpair();
      b.attach(x, () => {});
      b.attach(y, (event) => { throw new Error('thrown on ' + event); });
      b.readStart(y);
      b.write(x, Buffer.from('x'));
      process.once('uncaughtException', (e) => { console.log(JSON.stringify({ caught: e.message })); b.close(x); b.close(y); });
    `);
    expect({ status: res.status, out: res.out }).toEqual({ status: 0, out: { caught: 'thrown on data' } });
  });
});
