/**
 * Real AF_VSOCK transport through the published node-vsock binding (`node-vsock-linux-x64-gnu`, x86_64 only).
 *
 * What the binding is like (see DESIGN §12): an emitter callback `(err, event, ...args)`; synchronous, blocking
 * writes; one receive thread per connection; `listen()` binds VMADDR_CID_ANY; its accept thread keeps running
 * after close, so a process that closed a real vsock listener must exit explicitly once it has drained.
 * It is loaded lazily, so a machine without it can still use the simulated transport.
 *
 * Flow control (see `Connection` in ./types) and what this binding can and cannot report:
 * - Writes: `writeBuffer` is synchronous and blocking, so `writeMode` is `'blocking'`: nothing waits in this
 *   process, `bufferedBytes` is always 0 and `flushed` is never called. A peer that stops reading does not grow
 *   memory here, but once the kernel's send buffer is full `writeBuffer` blocks the event loop until the peer
 *   reads or the connection fails — a stall of the whole process, which this binding offers no way to avoid
 *   (no non-blocking write, no send timeout, no writable signal). The binding that replaces it on real Nitro
 *   must offer non-blocking writes with a queued-bytes count and a writable event, i.e. `writeMode: 'queued'`.
 * - Reads: the binding has no way to stop its receive thread. `pauseReading()` therefore holds arriving chunks
 *   in memory, at most `VSOCK_MAX_HELD_BYTES`; a peer that sends more while paused is disconnected.
 */
import { chunksOf } from '../framing';
import { loadAddon, nativeDirCandidates } from '../native';
import { formatVsockAddress, parseVsockAddress, type Connection, type ConnectionHandlers, type Listener, type Transport } from './types';

type EmitFn = (err: Error | null, event: string, ...args: unknown[]) => void;

export interface VsockSocketAddon {
  listen(port: number): void;
  connect(cid: number, port: number): void;
  shutdown(): void;
  close(): void;
  startRecv(): void;
  writeBuffer(data: Buffer): void;
  setMaxConnectionAttempts(n: number): void;
}

export interface VsockBinding {
  VsockSocket: new (emit: EmitFn, fd?: number) => VsockSocketAddon;
}

export const VSOCK_ADDON_PACKAGE = 'node-vsock-linux-x64-gnu';
export const VSOCK_ADDON_FILE = 'node-vsock.linux-x64-gnu.node';

/** What a paused vsock connection holds at most before it disconnects a peer that keeps sending. */
export const VSOCK_MAX_HELD_BYTES = 2 * 1024 * 1024;

/** CIDs a Nitro parent or enclave never dials: 0 hypervisor, 1 local, 2 the host of this machine. */
const FORBIDDEN_CONNECT_CIDS = new Set([0, 1, 2]);

let cached: VsockBinding | null = null;

/** Loads the binding once; `candidates` overrides the search (tests use it to show the error). */
export function loadVsockBinding(candidates?: readonly string[]): VsockBinding {
  if (cached && !candidates) return cached;
  const list = candidates ?? [
    ...(process.env.NKS_VSOCK_ADDON ? [process.env.NKS_VSOCK_ADDON] : []),
    ...nativeDirCandidates(VSOCK_ADDON_FILE),
    VSOCK_ADDON_PACKAGE,
  ];
  let binding: VsockBinding;
  try {
    binding = loadAddon<VsockBinding>('the AF_VSOCK binding (node-vsock-linux-x64-gnu, Linux x86_64 only)', list);
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\nThe real vsock transport needs it; on a development machine use the simulated transport instead.`,
    );
  }
  if (typeof binding?.VsockSocket !== 'function') throw new Error('the AF_VSOCK binding loaded but has no VsockSocket class');
  if (!candidates) cached = binding;
  return binding;
}

class VsockConnection implements Connection {
  readonly writeMode = 'blocking' as const;
  private handlers: ConnectionHandlers | null = null;
  private done = false;
  /** Chunks that arrived before start() or while reading is paused. */
  private early: Buffer[] = [];
  private heldBytes = 0;
  private paused = false;
  private lastError: Error | undefined;
  readonly socket: VsockSocketAddon;

  constructor(
    binding: VsockBinding,
    readonly description: string,
    fd?: number,
    private readonly onConnectEvent?: (err?: Error) => void,
  ) {
    this.socket = new binding.VsockSocket((err, event, ...args) => this.onEvent(err, event, args), fd);
  }

  private onEvent(err: Error | null, event: string, args: unknown[]): void {
    if (err) return this.finish(err);
    switch (event) {
      case '_connect':
        this.onConnectEvent?.();
        return;
      case '_data': {
        if (this.done) return;
        const chunk = args[0] as Buffer;
        if (this.handlers && !this.paused && this.early.length === 0) return this.handlers.data(chunk);
        this.early.push(chunk);
        this.heldBytes += chunk.length;
        if (this.heldBytes > VSOCK_MAX_HELD_BYTES) {
          this.early = [];
          this.heldBytes = 0;
          return this.finish(new Error(`peer sent more than ${VSOCK_MAX_HELD_BYTES} bytes while reading was paused`));
        }
        return;
      }
      case '_error': {
        const e = args[0] instanceof Error ? args[0] : new Error(String(args[0]));
        if (this.onConnectEvent && !this.handlers) this.onConnectEvent(e);
        return this.finish(e);
      }
      case 'end':
        return this.finish();
      default:
        return; // '_shutdown', 'close': bookkeeping of the binding
    }
  }

  get closed(): boolean {
    return this.done;
  }

  /** Always 0: writes are synchronous (see the module comment). */
  get bufferedBytes(): number {
    return 0;
  }

  get readingPaused(): boolean {
    return this.paused;
  }

  start(handlers: ConnectionHandlers): void {
    if (this.handlers) throw new Error('connection already started');
    this.handlers = handlers;
    this.deliverHeld();
    if (this.done) queueMicrotask(() => handlers.close(this.lastError));
  }

  pauseReading(): void {
    this.paused = true;
  }

  resumeReading(): void {
    if (!this.paused) return;
    this.paused = false;
    this.deliverHeld();
  }

  /** Delivers held chunks in order (also after the peer closed) until they run out or reading is paused again. */
  private deliverHeld(): void {
    const handlers = this.handlers;
    if (!handlers) return;
    while (!this.paused && this.early.length > 0) {
      const chunk = this.early.shift() as Buffer;
      this.heldBytes -= chunk.length;
      handlers.data(chunk);
    }
  }

  beginReceiving(): void {
    this.socket.startRecv();
  }

  write(chunk: Buffer): void {
    if (this.done) return;
    try {
      for (const part of chunksOf(chunk)) this.socket.writeBuffer(part);
    } catch (err) {
      this.finish(err as Error);
    }
  }

  end(): void {
    this.destroy();
  }

  destroy(): void {
    this.finish();
  }

  private finish(error?: Error): void {
    if (this.done) return;
    this.done = true;
    this.lastError = error;
    if (this.handlers) {
      // Started: data still held because reading is paused will never be delivered. (Before start(), chunks
      // that arrived ahead of the close are still delivered by start().)
      this.early = [];
      this.heldBytes = 0;
    }
    try {
      this.socket.shutdown();
    } catch {
      /* already shut down */
    }
    try {
      this.socket.close();
    } catch {
      /* already closed */
    }
    this.handlers?.close(error);
  }
}

export class RealVsockTransport implements Transport {
  readonly kind = 'vsock' as const;
  private readonly binding: VsockBinding;

  constructor(binding?: VsockBinding) {
    this.binding = binding ?? loadVsockBinding();
  }

  connect(address: string, options: { timeoutMs?: number } = {}): Promise<Connection> {
    const { cid, port } = parseVsockAddress(address);
    if (FORBIDDEN_CONNECT_CIDS.has(cid)) {
      return Promise.reject(new Error(`refusing to connect to ${address}: CID ${cid} is never a Nitro parent or enclave`));
    }
    const timeoutMs = options.timeoutMs ?? 2000;
    return new Promise((resolve, reject) => {
      let settled = false;
      const conn: VsockConnection = new VsockConnection(this.binding, address, undefined, (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) return reject(new Error(`connect to ${address} failed: ${err.message}`));
        conn.beginReceiving();
        resolve(conn);
      });
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        conn.destroy();
        reject(new Error(`connect to ${address} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      conn.socket.setMaxConnectionAttempts(1);
      conn.socket.connect(cid, port);
    });
  }

  async listen(address: string, onConnection: (conn: Connection) => void): Promise<Listener> {
    const { port } = parseVsockAddress(address);
    const binding = this.binding;
    let counter = 0;
    let closed = false;
    const server = new binding.VsockSocket((err, event, ...args) => {
      if (closed || err || event !== '_connection') return;
      counter += 1;
      const conn = new VsockConnection(binding, `${address}#${counter}`, args[0] as number);
      conn.beginReceiving();
      onConnection(conn);
    });
    server.listen(port); // binds VMADDR_CID_ANY:port; throws with the errno text on failure
    return {
      address: formatVsockAddress({ cid: parseVsockAddress(address).cid, port }),
      close: async () => {
        if (closed) return;
        closed = true;
        server.close();
      },
    };
  }
}
