/**
 * A transport Connection (shared/src/transport) as a Node Duplex, so node:tls can run over it: the egress relay's
 * connections (auth/egress.ts, the enclave's TLS client) and the ingress relay's (wallets/listener.ts, its TLS
 * server). Whoever owns the connection's handlers feeds it: `received` for data, `gone` at the close, `flushed`
 * when the transport drains.
 *
 * Backpressure both ways: reading pauses the connection while the Duplex's reader is full, writing waits while
 * the connection holds more than WRITE_HIGH_WATER unsent bytes.
 */
import { Duplex } from 'node:stream';
import type { Connection } from '@nks/shared/transport';

/** Unsent bytes above which a write waits for the connection to drain. */
export const WRITE_HIGH_WATER = 64 * 1024;

export class ConnectionStream extends Duplex {
  private pendingWrite: (() => void) | null = null;

  /** `closedError` is what a write after the close fails with (the owner's words for it). */
  constructor(
    private readonly conn: Connection,
    private readonly closedError: () => Error = () => new Error('the connection is closed'),
  ) {
    super({ allowHalfOpen: false });
  }

  /** The connection's data, as the transport delivers it. */
  received(chunk: Buffer): void {
    if (chunk.length > 0 && !this.push(chunk)) this.conn.pauseReading();
  }

  /** The connection is gone: the end of the readable side, or an error. */
  gone(error?: Error): void {
    this.release();
    if (error) this.destroy(error);
    else this.push(null);
  }

  flushed(buffered: number): void {
    if (buffered <= WRITE_HIGH_WATER) this.release();
  }

  override _read(): void {
    this.conn.resumeReading();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.conn.closed) {
      callback(this.closedError());
      return;
    }
    this.conn.write(chunk);
    if (this.conn.bufferedBytes <= WRITE_HIGH_WATER) callback();
    else this.pendingWrite = () => callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.conn.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.release();
    this.conn.destroy();
    callback(error);
  }

  private release(): void {
    const pending = this.pendingWrite;
    this.pendingWrite = null;
    pending?.();
  }
}
