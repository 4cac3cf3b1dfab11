/**
 * A connection that carries JSON messages in frames. Each frame is written as soon as it is sent (in chunks of
 * at most 32 KiB), so answers stream out while the next request is processed; when the socket is busy, the
 * stream layer batches the pending frames into one write. A frame error or a payload that is not JSON closes the
 * connection and reports why; it never throws into the caller.
 */
import { chunksOf, encodeFrame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_BYTES } from '../framing';
import type { Connection } from '../transport/types';

export interface FramedConnectionEvents {
  message(msg: unknown): void;
  /** The connection is gone. `protocolError` is set when this side closed it for a framing or JSON error. */
  close(info: { protocolError?: string; error?: Error }): void;
}

export class FramedConnection {
  private readonly decoder: FrameDecoder;
  private protocolError: string | undefined;
  private isClosed = false;

  constructor(
    readonly conn: Connection,
    private readonly events: FramedConnectionEvents,
    readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
  ) {
    this.decoder = new FrameDecoder(maxFrameBytes);
    conn.start({
      data: (chunk) => this.onData(chunk),
      close: (error) => {
        this.isClosed = true;
        this.events.close({ ...(this.protocolError ? { protocolError: this.protocolError } : {}), ...(error ? { error } : {}) });
      },
    });
  }

  get closed(): boolean {
    return this.isClosed || this.conn.closed;
  }

  get description(): string {
    return this.conn.description;
  }

  /** Serializes and writes one message. Throws FrameError if it is larger than the frame limit. */
  send(msg: unknown): void {
    if (this.closed) return;
    const frame = encodeFrame(Buffer.from(JSON.stringify(msg), 'utf8'), this.maxFrameBytes);
    for (const chunk of chunksOf(frame)) this.conn.write(chunk);
  }

  /** Closes the connection after written frames are flushed. */
  end(): void {
    this.conn.end();
  }

  destroy(): void {
    this.conn.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.protocolError) return;
    let payloads: Buffer[];
    try {
      payloads = this.decoder.push(chunk);
    } catch (err) {
      return this.closeForProtocolError(err instanceof FrameError ? `${err.kind}: ${err.message}` : 'frame decoder failed');
    }
    for (const payload of payloads) {
      let msg: unknown;
      try {
        msg = JSON.parse(payload.toString('utf8'));
      } catch {
        return this.closeForProtocolError(`BAD_JSON: a ${payload.length}-byte frame payload is not valid JSON`);
      }
      this.events.message(msg);
      if (this.protocolError || this.closed) return;
    }
  }

  private closeForProtocolError(reason: string): void {
    this.protocolError = reason;
    this.conn.destroy();
  }
}
