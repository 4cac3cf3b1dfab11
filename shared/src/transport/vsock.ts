/**
 * Real AF_VSOCK transport through our own N-API addon, `enclave/native/vsock.c` (C, built from source with
 * node-gyp by scripts/build.mjs; see its header for the API and the ownership rules). It is loaded lazily, so a
 * machine without it can still use the simulated transport: `native/vsock.node` beside the program (the enclave
 * image), else `enclave/native/build/Release/vsock.node` (development, and the parent run from `dist/`).
 *
 * The addon has no threads and never blocks: each socket is non-blocking and watched by a libuv poll handle on
 * Node's own event loop, and events ('data', 'writable', 'end', ...) are delivered on that loop.
 *
 * Flow control (see `Connection` in ./types):
 * - Writes: `writeMode` is `'queued'`. `write()` hands the kernel what it takes at once and queues the rest
 *   here (`bufferedBytes`); when the kernel can take more, the addon says so and the queue drains, and each
 *   drain reports the remainder through `flushed`. A peer that stops reading grows `bufferedBytes` and never
 *   stalls the event loop; the owner bounds it (RpcServer does). No single write to the kernel exceeds
 *   `MAX_WRITE_CHUNK_BYTES` (32 KiB, a kernel vsock bug).
 * - Reads: `pauseReading()` stops reading from the kernel (the socket is no longer polled for reads), so its
 *   receive buffer fills and the peer's writes stop being taken: backpressure reaches the peer, and nothing is
 *   held here meanwhile. Reading starts only at `start()`.
 * - `end()` sends the queued bytes, then shuts down writing; the connection closes once the peer has ended its
 *   side too. A peer that ends its side is answered the same way (its pending answers are still sent).
 * Closing a listener stops accepting at once (its socket is closed), and nothing keeps the process alive after
 * every listener and connection is closed.
 */
import path from 'node:path';
import { chunksOf } from '../framing';
import { loadAddon, nativeDirCandidates } from '../native';
import { formatVsockAddress, parseVsockAddress, type Connection, type ConnectionHandlers, type Listener, type Transport } from './types';

/** An opaque socket handle made by the addon. */
export type VsockHandle = { readonly __brand: 'VsockHandle' };
export type VsockEvent = 'connection' | 'connect' | 'data' | 'end' | 'writable' | 'error';
export type VsockEventCallback = (event: VsockEvent, arg?: unknown) => void;

/** The addon's functions (enclave/native/vsock.c). */
export interface VsockBinding {
  /** AF_VSOCK socket bound to VMADDR_CID_ANY:port, accepting at once: 'connection' (an unattached handle). */
  listen(port: number, backlog: number, onEvent: VsockEventCallback): VsockHandle;
  /** Non-blocking connect; then 'connect' or 'error'. Refuses CIDs 0, 1 and 2 itself too. */
  connect(cid: number, port: number, onEvent: VsockEventCallback): VsockHandle;
  /** A connected AF_UNIX pair, unattached: the same I/O code without vsock (tests). */
  socketpair(): [VsockHandle, VsockHandle];
  /** An AF_UNIX listener: the same accept code without vsock (tests). */
  listenUnix(path: string, backlog: number, onEvent: VsockEventCallback): VsockHandle;
  attach(handle: VsockHandle, onEvent: VsockEventCallback): void;
  readStart(handle: VsockHandle): void;
  readStop(handle: VsockHandle): void;
  /** Bytes the kernel took (0: it would block). When fewer than `data.length`, one 'writable' follows. */
  write(handle: VsockHandle, data: Buffer): number;
  shutdown(handle: VsockHandle): void;
  /** Idempotent. */
  close(handle: VsockHandle): void;
}

export const VSOCK_ADDON_FILE = 'vsock.node';
const LISTEN_BACKLOG = 128;
/** After an accept error (EMFILE, ...), accepting pauses this long instead of spinning on the ready socket. */
const ACCEPT_RETRY_MS = 250;

/** CIDs a Nitro parent or enclave never dials: 0 hypervisor, 1 local, 2 the host of this machine. */
const FORBIDDEN_CONNECT_CIDS = new Set([0, 1, 2]);

let cached: VsockBinding | null = null;

/** Where the addon is looked for, in order. */
export function vsockAddonCandidates(): string[] {
  return [
    ...(process.env.NKS_VSOCK_ADDON ? [process.env.NKS_VSOCK_ADDON] : []),
    ...nativeDirCandidates(VSOCK_ADDON_FILE),
    path.resolve(__dirname, '../enclave/native/build/Release', VSOCK_ADDON_FILE), // from dist/
    path.resolve(__dirname, '../../../enclave/native/build/Release', VSOCK_ADDON_FILE), // from shared/src/transport (tests)
  ];
}

/** Loads the addon once; `candidates` overrides the search (tests use it to show the error). */
export function loadVsockBinding(candidates?: readonly string[]): VsockBinding {
  if (cached && !candidates) return cached;
  let binding: VsockBinding;
  try {
    binding = loadAddon<VsockBinding>(
      'the AF_VSOCK addon (enclave/native/vsock.c, built by `npm run build`)',
      candidates ?? vsockAddonCandidates(),
    );
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\nThe real vsock transport needs it; on a development machine use the simulated transport instead.`,
      { cause: err },
    );
  }
  if (typeof binding?.connect !== 'function' || typeof binding.write !== 'function')
    throw new Error('the AF_VSOCK addon loaded but is not the expected one');
  if (!candidates) cached = binding;
  return binding;
}

function errorCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ?? e?.message ?? String(err);
}

const EMPTY = Buffer.alloc(0);

export class VsockConnection implements Connection {
  readonly writeMode = 'queued' as const;
  private readonly handle: VsockHandle;
  private handlers: ConnectionHandlers | null = null;
  private done = false;
  private paused = false;
  private lastError: Error | undefined;
  /** Chunks not yet taken by the kernel: queue[head] onwards, the first `headOffset` bytes of queue[head] sent. */
  private queue: Buffer[] = [];
  private head = 0;
  private headOffset = 0;
  private queued = 0;
  /** A write came up short; the addon reports 'writable' once the socket can take more. */
  private waitingWritable = false;
  private flushReportQueued = false;
  /** end() was called (or the peer ended): shut down writing once the queue is empty. */
  private ending = false;
  private writeShut = false;
  private peerEnded = false;
  /** For a dialled connection: called once when the connect completes or fails. */
  onConnect: ((err?: Error) => void) | null = null;

  /** `open` makes (or attaches) the addon handle with the callback it is given. */
  constructor(
    private readonly binding: VsockBinding,
    readonly description: string,
    open: (onEvent: VsockEventCallback) => VsockHandle,
  ) {
    this.handle = open((event, arg) => this.onEvent(event, arg));
  }

  get closed(): boolean {
    return this.done;
  }

  get bufferedBytes(): number {
    return this.done ? 0 : this.queued;
  }

  get readingPaused(): boolean {
    return this.paused;
  }

  start(handlers: ConnectionHandlers): void {
    if (this.handlers) throw new Error('connection already started');
    this.handlers = handlers;
    if (this.done) queueMicrotask(() => handlers.close(this.lastError));
    else if (!this.paused) this.binding.readStart(this.handle);
  }

  pauseReading(): void {
    if (this.paused) return;
    this.paused = true;
    if (this.handlers && !this.done) this.binding.readStop(this.handle);
  }

  resumeReading(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.handlers && !this.done && !this.peerEnded) this.binding.readStart(this.handle);
  }

  write(chunk: Buffer): void {
    if (this.done || this.ending || chunk.length === 0) return;
    for (const part of chunksOf(chunk)) this.queue.push(part);
    this.queued += chunk.length;
    if (this.waitingWritable) return; // the 'writable' event drains the queue, in order
    if (this.flush() > 0) this.reportFlushedSoon();
  }

  end(): void {
    if (this.done) return;
    this.ending = true;
    if (this.queued === 0) this.shutdownWrites();
  }

  destroy(): void {
    this.finish();
  }

  private onEvent(event: VsockEvent, arg: unknown): void {
    if (this.done) return;
    switch (event) {
      case 'data':
        this.handlers?.data(arg as Buffer);
        return;
      case 'writable': {
        this.waitingWritable = false;
        const sent = this.flush();
        if (sent > 0 && !this.done) this.handlers?.flushed?.(this.queued);
        return;
      }
      case 'end':
        // The addon has stopped reading. Send what is queued, then close (as a Node socket without allowHalfOpen).
        this.peerEnded = true;
        this.end();
        return;
      case 'connect': {
        const done = this.onConnect;
        this.onConnect = null;
        done?.();
        return;
      }
      case 'error': {
        const err = arg instanceof Error ? arg : new Error(String(arg));
        const failed = this.onConnect;
        this.onConnect = null;
        failed?.(err);
        this.finish(err);
        return;
      }
      default:
        return;
    }
  }

  /** Writes queued chunks until the kernel takes no more; returns the bytes it took. */
  private flush(): number {
    let sent = 0;
    while (this.head < this.queue.length && !this.done) {
      const chunk = this.queue[this.head] as Buffer;
      const rest = this.headOffset === 0 ? chunk : chunk.subarray(this.headOffset);
      let n: number;
      try {
        n = this.binding.write(this.handle, rest);
      } catch (err) {
        this.finish(err as Error); // EPIPE, ECONNRESET, ...
        return sent;
      }
      sent += n;
      this.queued -= n;
      if (n < rest.length) {
        this.headOffset += n;
        this.waitingWritable = true;
        break;
      }
      this.queue[this.head] = EMPTY; // sent: let it be collected
      this.head += 1;
      this.headOffset = 0;
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (this.queued === 0 && this.ending && !this.done) this.shutdownWrites();
    return sent;
  }

  /** After write(): reports progress once the caller's code has run, not from inside its write() call. */
  private reportFlushedSoon(): void {
    if (this.flushReportQueued) return;
    this.flushReportQueued = true;
    queueMicrotask(() => {
      this.flushReportQueued = false;
      if (!this.done) this.handlers?.flushed?.(this.queued);
    });
  }

  private shutdownWrites(): void {
    if (!this.writeShut) {
      this.writeShut = true;
      try {
        this.binding.shutdown(this.handle);
      } catch (err) {
        return this.finish(err as Error);
      }
    }
    if (this.peerEnded) this.finish();
  }

  private finish(error?: Error): void {
    if (this.done) return;
    this.done = true;
    this.lastError = error;
    this.queue = [];
    this.head = 0;
    this.queued = 0;
    this.binding.close(this.handle);
    this.handlers?.close(error);
  }
}

/** A Connection over a handle the addon accepted or made with socketpair() (it attaches the handle). */
export function adoptVsockHandle(binding: VsockBinding, handle: VsockHandle, description: string): VsockConnection {
  return new VsockConnection(binding, description, (onEvent) => {
    binding.attach(handle, onEvent);
    return handle;
  });
}

/** Accepts on a listening handle; every connection goes to `onConnection`. */
export class VsockListener implements Listener {
  private readonly handle: VsockHandle;
  private closed = false;
  private counter = 0;
  private retry: NodeJS.Timeout | null = null;

  constructor(
    private readonly binding: VsockBinding,
    readonly address: string,
    private readonly onConnection: (conn: Connection) => void,
    open: (onEvent: VsockEventCallback) => VsockHandle,
  ) {
    this.handle = open((event, arg) => this.onEvent(event, arg));
  }

  private onEvent(event: VsockEvent, arg: unknown): void {
    if (this.closed) return;
    if (event === 'connection') {
      this.counter += 1;
      let conn: VsockConnection;
      try {
        conn = adoptVsockHandle(this.binding, arg as VsockHandle, `${this.address}#${this.counter}`);
      } catch {
        this.binding.close(arg as VsockHandle);
        return;
      }
      this.onConnection(conn);
    } else if (event === 'error' && !this.retry) {
      // accept failed (out of file descriptors, ...): the connection waits in the kernel's backlog; try again
      // later rather than spin on a socket that stays readable.
      this.binding.readStop(this.handle);
      this.retry = setTimeout(() => {
        this.retry = null;
        if (!this.closed) this.binding.readStart(this.handle);
      }, ACCEPT_RETRY_MS);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    this.binding.close(this.handle);
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
    const binding = this.binding;
    return new Promise((resolve, reject) => {
      let conn: VsockConnection;
      try {
        conn = new VsockConnection(binding, address, (onEvent) => binding.connect(cid, port, onEvent));
      } catch (err) {
        reject(new Error(`connect to ${address} failed: ${errorCode(err)}`, { cause: err }));
        return;
      }
      const timer = setTimeout(() => {
        conn.onConnect = null;
        conn.destroy();
        reject(new Error(`connect to ${address} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      conn.onConnect = (err) => {
        clearTimeout(timer);
        if (err) reject(new Error(`connect to ${address} failed: ${errorCode(err)}`, { cause: err }));
        else resolve(conn);
      };
    });
  }

  async listen(address: string, onConnection: (conn: Connection) => void): Promise<Listener> {
    const { cid, port } = parseVsockAddress(address);
    const binding = this.binding;
    try {
      // Binds VMADDR_CID_ANY:port (the CID of the address is this machine's own).
      return new VsockListener(binding, formatVsockAddress({ cid, port }), onConnection, (onEvent) =>
        binding.listen(port, LISTEN_BACKLOG, onEvent),
      );
    } catch (err) {
      throw Object.assign(new Error(`cannot listen on ${address}: ${(err as Error).message}`, { cause: err }), {
        code: (err as NodeJS.ErrnoException).code,
      });
    }
  }
}
