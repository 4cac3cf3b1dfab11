/**
 * A connection that carries JSON messages in frames. Outgoing frames produced in the same event-loop turn are
 * written together (fewer syscalls under load), in chunks of at most 32 KiB. A frame error or a payload that is
 * not JSON closes the connection and reports why; it never throws into the caller.
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
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private flushScheduled = false;
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
        this.queue = [];
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

  /** Serializes and queues one message. Throws FrameError if it is larger than the frame limit. */
  send(msg: unknown): void {
    if (this.closed) return;
    const frame = encodeFrame(Buffer.from(JSON.stringify(msg), 'utf8'), this.maxFrameBytes);
    this.queue.push(frame);
    this.queuedBytes += frame.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Closes the connection after queued frames are written. */
  end(): void {
    this.flush();
    this.conn.end();
  }

  destroy(): void {
    this.queue = [];
    this.conn.destroy();
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.queue.length === 0 || this.closed) return;
    const data = this.queue.length === 1 ? (this.queue[0] as Buffer) : Buffer.concat(this.queue, this.queuedBytes);
    this.queue = [];
    this.queuedBytes = 0;
    for (const chunk of chunksOf(data)) this.conn.write(chunk);
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
