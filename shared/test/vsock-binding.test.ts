/**
 * The real AF_VSOCK side of the transport: the addon loads, a listener is created and bound (and closing it
 * releases the port and lets the process exit by itself), and dialling CIDs 0, 1 and 2 is refused before any
 * syscall. Never connected here: on development machines CID 2 is this machine's own host. The transport's
 * connect and listen logic is also exercised over AF_UNIX through the same addon (vsock-connection.test.ts
 * covers the connections themselves).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { loadVsockBinding, RealVsockTransport, type Connection } from '../src/transport';
import { adoptVsockHandle, VsockListener, type VsockBinding, type VsockEventCallback, type VsockHandle } from '../src/transport/vsock';
import { tempRunDir } from './helpers';
import { binding, closeTracked, runNode, thrown, track, VSOCK_ADDON_PATH } from './vsock-helpers';

afterEach(closeTracked);

/** A port for this test process, away from the ones the services use. */
const PORT = 40000 + (process.pid % 20000);

/** Why real AF_VSOCK sockets cannot be made here, or null when they can (creating and binding is harmless). */
function vsockUnsupported(): string | null {
  try {
    binding.close(binding.listen(PORT, 1, () => undefined));
    return null;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    if (['EAFNOSUPPORT', 'ENODEV', 'ESOCKTNOSUPPORT', 'EPROTONOSUPPORT'].includes(code))
      return `this kernel has no AF_VSOCK support (${code})`;
    return null; // anything else (a port in use, ...) is for the tests to report
  }
}
const unsupported = vsockUnsupported();
if (unsupported) console.warn(`real AF_VSOCK tests skipped: ${unsupported}`);
const vsockIt = unsupported ? it.skip : it;

describe(`real AF_VSOCK${unsupported ? ` (skipped: ${unsupported})` : ''}`, () => {
  vsockIt('creates and binds a listener; a second bind of the port fails with EADDRINUSE; close releases the port', async () => {
    const transport = new RealVsockTransport();
    expect(transport.kind).toBe('vsock');
    const listener = await transport.listen(`vsock://16:${PORT}`, () => undefined);
    try {
      expect(listener.address).toBe(`vsock://16:${PORT}`);
      const second = await transport.listen(`vsock://16:${PORT}`, () => undefined).catch((e: NodeJS.ErrnoException) => e);
      expect(second).toMatchObject({
        code: 'EADDRINUSE',
        message: expect.stringMatching(/^cannot listen on vsock:\/\/16:\d+: bind EADDRINUSE/),
      });
    } finally {
      await listener.close();
      await listener.close(); // idempotent
    }
    // Closed means the socket is gone, so nothing can be accepted on it: the port can be bound again.
    const again = await transport.listen(`vsock://16:${PORT}`, () => undefined);
    await again.close();
  });

  vsockIt('a process that closed its listener exits by itself (nothing keeps accepting in the background)', () => {
    const res = runNode(`
      const b = require(${JSON.stringify(VSOCK_ADDON_PATH)});
      const h = b.listen(${PORT + 1}, 8, () => {});
      setImmediate(() => { b.close(h); console.log(JSON.stringify({ closed: true })); });
    `);
    // The old binding's accept thread kept such a process alive (it had to call process.exit).
    expect({ status: res.status, signal: res.signal, out: res.out }).toEqual({ status: 0, signal: null, out: { closed: true } });
  });
});

describe('vsock transport', () => {
  it('loads the addon built from enclave/native', () => {
    expect(loadVsockBinding([VSOCK_ADDON_PATH]).socketpair).toBe(binding.socketpair);
  });

  it('says clearly why it cannot load, and what to use instead', () => {
    expect(() => loadVsockBinding(['/nonexistent/vsock.node'])).toThrow(
      /AF_VSOCK addon .* could not be loaded[\s\S]*nonexistent[\s\S]*use the simulated transport/,
    );
  });

  it('refuses to dial CIDs that are never a Nitro peer (0, 1, 2) before calling the addon', async () => {
    const calls: string[] = [];
    const fake = new Proxy({} as VsockBinding, {
      get: (_t, name) => () => {
        calls.push(String(name));
        throw new Error('the addon must not be called');
      },
    });
    const transport = new RealVsockTransport(fake);
    for (const cid of [0, 1, 2]) {
      await expect(transport.connect(`vsock://${cid}:5000`)).rejects.toThrow(`CID ${cid} is never a Nitro parent or enclave`);
    }
    expect(calls).toEqual([]);
  });

  it('the addon refuses CIDs 0, 1 and 2 itself, before creating a socket (checked with no descriptor left to create one)', () => {
    const res = runNode(
      `
      const fs = require('node:fs');
      const b = require(${JSON.stringify(VSOCK_ADDON_PATH)});
      const held = [];
      try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; }
      // Proof that socket() cannot succeed now, so even without the guard nothing could be dialled.
      let control;
      try { b.close(b.listen(${PORT + 2}, 1, () => {})); control = 'socket created'; } catch (e) { control = e.code; }
      if (control !== 'EMFILE') { console.log(JSON.stringify({ control })); process.exit(1); }
      const out = { control };
      for (const cid of [0, 1, 2]) {
        try { b.connect(cid, 5000, () => {}); out[cid] = 'connect was attempted'; } catch (e) { out[cid] = e.code + ': ' + e.message; }
      }
      console.log(JSON.stringify(out));
      `,
      { ulimitFiles: 64 },
    );
    const refused = 'ERR_FORBIDDEN_CID: connect: CIDs 0, 1 and 2 are never a Nitro parent or enclave';
    expect({ status: res.status, out: res.out }).toEqual({ status: 0, out: { control: 'EMFILE', 0: refused, 1: refused, 2: refused } });
  });

  /** The addon with `connect` replaced: it hands out one end of a socketpair and lets the test decide the outcome. */
  function dialler() {
    const made: Array<{ handle: VsockHandle; onEvent: VsockEventCallback; peer: VsockHandle }> = [];
    const fake: VsockBinding = {
      ...binding,
      connect: (_cid, _port, onEvent) => {
        const [handle, peer] = track(binding.socketpair());
        binding.attach(handle, onEvent);
        binding.attach(peer, () => undefined);
        made.push({ handle, onEvent, peer });
        return handle;
      },
    };
    return { fake, made };
  }

  it("connect resolves on the addon's connect event with a working connection", async () => {
    const { fake, made } = dialler();
    const pending = new RealVsockTransport(fake).connect('vsock://16:5000');
    made[0]!.onEvent('connect');
    const conn = await pending;
    try {
      expect(conn.description).toBe('vsock://16:5000');
      const got = new Promise<string>((resolve) => conn.start({ data: (d) => resolve(d.toString()), close: () => undefined }));
      binding.write(made[0]!.peer, Buffer.from('hello'));
      await expect(got).resolves.toBe('hello');
    } finally {
      conn.destroy();
    }
  });

  it('connect rejects with the error code when the connection fails, and on timeout, closing the socket', async () => {
    const { fake, made } = dialler();
    const transport = new RealVsockTransport(fake);
    const failing = transport.connect('vsock://16:5000');
    made[0]!.onEvent('error', Object.assign(new Error('connect ECONNRESET: connection reset by peer'), { code: 'ECONNRESET' }));
    await expect(failing).rejects.toThrow('connect to vsock://16:5000 failed: ECONNRESET');
    expect(thrown(() => binding.readStart(made[0]!.handle))).toMatchObject({ code: 'EBADF' }); // closed

    await expect(transport.connect('vsock://16:5001', { timeoutMs: 20 })).rejects.toThrow('timed out after 20 ms');
    expect(thrown(() => binding.readStart(made[1]!.handle))).toMatchObject({ code: 'EBADF' });

    const syncFail = new RealVsockTransport({
      ...binding,
      connect: () => {
        throw Object.assign(new Error('socket EAFNOSUPPORT'), { code: 'EAFNOSUPPORT' });
      },
    });
    await expect(syncFail.connect('vsock://16:5000')).rejects.toThrow('connect to vsock://16:5000 failed: EAFNOSUPPORT');
  });

  it('a listener hands each accepted connection over, numbered; close stops accepting and leaves them open', async () => {
    const dir = tempRunDir();
    const file = path.join(dir, 'l.sock');
    const accepted: Connection[] = [];
    let onAccept: (c: Connection) => void = () => undefined;
    const first = new Promise<Connection>((resolve) => (onAccept = resolve));
    const listener = new VsockListener(
      binding,
      'vsock://16:5000',
      (c) => {
        accepted.push(c);
        onAccept(c);
      },
      (onEvent) => binding.listenUnix(file, 8, onEvent),
    );
    const client = net.connect(file);
    try {
      expect((await first).description).toBe('vsock://16:5000#1');
      await listener.close();
      const refused = await new Promise<Error | null>((resolve) => {
        const probe = net.connect(file);
        probe.once('error', resolve);
        probe.once('connect', () => (probe.destroy(), resolve(null)));
      });
      expect(refused).toMatchObject({ code: 'ECONNREFUSED' });
      const echoed = new Promise<string>((resolve) => client.once('data', (d) => resolve(d.toString())));
      accepted[0]!.start({ data: () => undefined, close: () => undefined });
      accepted[0]!.write(Buffer.from('still open'));
      await expect(echoed).resolves.toBe('still open');
    } finally {
      client.destroy();
      for (const c of accepted) c.destroy();
      await listener.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('adoptVsockHandle gives a handle made elsewhere its callback (once)', () => {
    const [h] = track(binding.socketpair());
    const conn = adoptVsockHandle(binding, h, 'adopted');
    expect(thrown(() => adoptVsockHandle(binding, h, 'again'))).toMatchObject({ code: 'ERR_ALREADY_ATTACHED' });
    conn.destroy();
  });
});
