/**
 * The transport interface: a byte-stream connection and a listener, addressed as `vsock://CID:PORT`.
 * The real AF_VSOCK implementation and the simulated one (Unix sockets) both satisfy it, so framing and RPC
 * code is the same over both.
 */

export interface ConnectionHandlers {
  data(chunk: Buffer): void;
  /** Called once, when the connection is gone (peer closed, error, or local close). */
  close(error?: Error): void;
  /**
   * Optional. Called after bytes passed to `write()` have left this process (handed to the operating system),
   * with the number of bytes still unsent (`bufferedBytes`). Only a transport whose `writeMode` is `'queued'`
   * calls it; use it to resume reading once a backlog has drained.
   */
  flushed?(bufferedBytes: number): void;
}

/**
 * How writes behave when the peer does not read:
 * - `'queued'`: `write()` never blocks; unsent bytes wait in this process and `bufferedBytes` counts them
 *   (`flushed` reports progress). A peer that stops reading grows `bufferedBytes`; the owner must bound it.
 * - `'blocking'`: `write()` hands the bytes to the kernel synchronously and blocks the calling thread while the
 *   kernel's send buffer is full, so nothing waits in this process: `bufferedBytes` is always 0 and `flushed`
 *   is never called. A peer that stops reading stalls the writer instead of growing its memory.
 */
export type WriteMode = 'queued' | 'blocking';

/**
 * Flow control, the same on every transport:
 * - write side: `bufferedBytes` is what a peer that does not read makes this process hold; an owner that
 *   serves untrusted peers caps it (stops producing, e.g. stops reading requests, above a high-water mark).
 * - read side: `pauseReading()` stops delivering `data` until `resumeReading()`; the transport stops reading
 *   from the operating system, so at most a bounded amount (about one socket read buffer) is held meanwhile.
 */
export interface Connection {
  /** Human-readable peer description for logs (never contains payload). */
  readonly description: string;
  readonly closed: boolean;
  /** See `WriteMode`. */
  readonly writeMode: WriteMode;
  /** Bytes accepted by `write()` and not yet handed to the operating system (always 0 for `'blocking'`). */
  readonly bufferedBytes: number;
  /** Whether `pauseReading()` is in effect. */
  readonly readingPaused: boolean;
  /** Attaches the handlers and starts delivering data. Call exactly once. */
  start(handlers: ConnectionHandlers): void;
  /** Writes the bytes in order (the vsock implementation also keeps each write within 32 KiB). */
  write(chunk: Buffer): void;
  /** Stops delivering data (and reading it from the OS, as far as the transport can) until `resumeReading()`. */
  pauseReading(): void;
  /** Delivers held data, then resumes reading. */
  resumeReading(): void;
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

/**
 * Where the enclave serves RPC (CID 16, as deploy/enclave-run.env.example pins it) and where the parent's KMS
 * proxy listens (CID 3, the parent's): both programs' configurations default to these, so defaults meet.
 */
export const DEFAULT_ENCLAVE_ADDRESS = 'vsock://16:5000';
export const DEFAULT_KMS_PROXY_ADDRESS = 'vsock://3:8000';
