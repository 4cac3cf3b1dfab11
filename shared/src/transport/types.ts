/**
 * The transport interface: a byte-stream connection and a listener, addressed as `vsock://CID:PORT`.
 * The real AF_VSOCK implementation and the simulated one (Unix sockets) both satisfy it, so framing and RPC
 * code is the same over both.
 */

export interface ConnectionHandlers {
  data(chunk: Buffer): void;
  /** Called once, when the connection is gone (peer closed, error, or local close). */
  close(error?: Error): void;
}

export interface Connection {
  /** Human-readable peer description for logs (never contains payload). */
  readonly description: string;
  readonly closed: boolean;
  /** Attaches the handlers and starts delivering data. Call exactly once. */
  start(handlers: ConnectionHandlers): void;
  /** Writes the bytes in order (the vsock implementation also keeps each write within 32 KiB). */
  write(chunk: Buffer): void;
  /** Closes after pending writes are flushed. */
  end(): void;
  /** Closes at once. */
  destroy(): void;
}

export interface Listener {
  readonly address: string;
  /** Stops accepting new connections. Existing connections are not touched. */
  close(): Promise<void>;
}

export interface Transport {
  readonly kind: 'vsock' | 'simulated';
  connect(address: string, options?: { timeoutMs?: number }): Promise<Connection>;
  listen(address: string, onConnection: (conn: Connection) => void): Promise<Listener>;
}

export interface VsockAddress {
  cid: number;
  port: number;
}

const VSOCK_RE = /^vsock:\/\/(\d{1,10}):(\d{1,10})$/;
const U32_MAX = 0xffffffff;

/** Parses `vsock://CID:PORT` (decimal, both u32, U32_MAX excluded as it means "any"). */
export function parseVsockAddress(address: string): VsockAddress {
  const m = VSOCK_RE.exec(address);
  if (!m) throw new TypeError(`invalid vsock address "${address}": expected vsock://CID:PORT`);
  const cid = Number(m[1]);
  const port = Number(m[2]);
  if (cid >= U32_MAX) throw new TypeError(`invalid vsock address "${address}": CID out of range`);
  if (port >= U32_MAX) throw new TypeError(`invalid vsock address "${address}": port out of range`);
  return { cid, port };
}

export function formatVsockAddress({ cid, port }: VsockAddress): string {
  return `vsock://${cid}:${port}`;
}
