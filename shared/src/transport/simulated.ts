/**
 * Simulated vsock: `vsock://CID:PORT` maps to the Unix socket `<runDir>/vsock/<cid>.<port>.sock`.
 * Used in development and in every test; the framing and RPC layers cannot tell the difference.
 */
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { parseVsockAddress, type Connection, type ConnectionHandlers, type Listener, type Transport } from './types';

/** sun_path is 108 bytes on Linux including the terminating NUL. */
const MAX_UNIX_PATH_BYTES = 107;

export function simulatedSocketPath(runDir: string, address: string): string {
  const { cid, port } = parseVsockAddress(address);
  const p = path.join(path.resolve(runDir), 'vsock', `${cid}.${port}.sock`);
  if (Buffer.byteLength(p) > MAX_UNIX_PATH_BYTES) {
    throw new Error(`simulated vsock path "${p}" is longer than ${MAX_UNIX_PATH_BYTES} bytes; use a shorter run directory`);
  }
  return p;
}

/**
 * A Unix socket as a Connection. Writes are queued by Node's stream (`writeMode: 'queued'`): `bufferedBytes` is
 * the socket's `writableLength` (bytes not yet accepted by the kernel) and every completed write reports the
 * remainder through `flushed`. `pauseReading()` pauses the stream; Node then stops reading from the socket once
 * its readable buffer (one high-water mark, 16 KiB by default) is full, so the kernel pushes back on the peer.
 */
class SocketConnection implements Connection {
  readonly writeMode = 'queued' as const;
  private handlers: ConnectionHandlers | null = null;
  private done = false;
  private paused = false;
  private lastError: Error | undefined;
  /** One function for every write (no allocation per write): reports how much is still unsent. */
  private readonly afterWrite = (err?: Error | null): void => {
    if (err || this.done) return;
    this.handlers?.flushed?.(this.socket.writableLength);
  };

  constructor(
    private readonly socket: net.Socket,
    readonly description: string,
  ) {
    // Attached at once so an error before start() cannot become an unhandled 'error' event.
    socket.on('error', (err) => {
      this.lastError = err;
    });
    socket.once('close', () => {
      this.done = true;
      this.handlers?.close(this.lastError);
    });
  }

  get closed(): boolean {
    return this.done;
  }

  get bufferedBytes(): number {
    return this.done ? 0 : this.socket.writableLength;
  }

  get readingPaused(): boolean {
    return this.paused;
  }

  start(handlers: ConnectionHandlers): void {
    if (this.handlers) throw new Error('connection already started');
    this.handlers = handlers;
    if (this.done) queueMicrotask(() => handlers.close(this.lastError));
    // After an explicit pause(), adding a 'data' listener does not resume the stream.
    else this.socket.on('data', (chunk: Buffer) => handlers.data(chunk));
  }

  write(chunk: Buffer): void {
    if (!this.done && !this.socket.destroyed) this.socket.write(chunk, this.afterWrite);
  }

  pauseReading(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause();
  }

  resumeReading(): void {
    if (!this.paused) return;
    this.paused = false;
    if (!this.done) this.socket.resume();
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export class SimulatedVsockTransport implements Transport {
  readonly kind = 'simulated' as const;

  constructor(readonly runDir: string) {}

  connect(address: string, options: { timeoutMs?: number } = {}): Promise<Connection> {
    const file = simulatedSocketPath(this.runDir, address);
    const timeoutMs = options.timeoutMs ?? 2000;
    return new Promise((resolve, reject) => {
      const socket = net.connect(file);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${address} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new SocketConnection(socket, address));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new Error(`connect to ${address} failed: ${err.code ?? err.message}`, { cause: err }));
      });
    });
  }

  async listen(address: string, onConnection: (conn: Connection) => void): Promise<Listener> {
    const file = simulatedSocketPath(this.runDir, address);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    await removeStaleSocket(file, address);
    let counter = 0;
    const server = net.createServer((socket) => {
      counter += 1;
      onConnection(new SocketConnection(socket, `${address}#${counter}`));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return {
      address,
      // net.Server's close callback waits for every connection to end; the contract here is only to stop
      // accepting (the listening handle closes at once), so do not wait for it.
      close: async () => {
        server.close();
      },
    };
  }
}

/** A socket file left by a crashed process is removed; one that still answers means the address is in use. */
async function removeStaleSocket(file: string, address: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`cannot listen on ${address}: ${file} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(file);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`cannot listen on ${address}: another process is listening on ${file}`);
  fs.unlinkSync(file);
}
