/**
 * A connection that carries JSON messages in frames. Each frame is written as soon as it is sent (in chunks of
 * at most 32 KiB), so answers stream out while the next request is processed; when the socket is busy, the
 * stream layer batches the pending frames into one write. A frame error or a payload that is not JSON closes the
 * connection and reports why; it never throws into the caller.
 *
 * Flow control passes through to the transport (see `Connection`): `bufferedBytes` is what is written and not
 * yet sent, `flushed` reports progress, and `pauseReading()` also stops delivering messages that were already
 * decoded from the last chunk (they are delivered in order on `resumeReading()`).
 */
import { crc32 } from 'node:zlib';
import {
  chunksOf,
  encodeFrame,
  FrameDecoder,
  FrameError,
  DEFAULT_MAX_FRAME_BYTES,
  FRAME_HEADER_BYTES,
  MAX_WRITE_CHUNK_BYTES,
} from '../framing';
import type { Connection } from '../transport/types';

export interface FramedConnectionEvents {
  /** One message; `bytes` is the size of its frame payload. */
  message(msg: unknown, bytes: number): void;
  /** The connection is gone. `protocolError` is set when this side closed it for a framing or JSON error. */
  close(info: { protocolError?: string; error?: Error }): void;
  /** Written bytes left the process; `bufferedBytes` are still unsent (queued transports only). */
  flushed?(bufferedBytes: number): void;
}

/**
 * `msg` as JSON in one frame (the codec of framing.ts, `encodeFrame`), with one allocation: the text is written
 * straight after the header instead of into a buffer of its own that is then copied into the frame. A payload
 * over `maxPayloadBytes` is refused by `encodeFrame`'s own check (FRAME_TOO_LARGE), nothing written.
 */
export function jsonFrame(msg: unknown, maxPayloadBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  const text = JSON.stringify(msg);
  const length = Buffer.byteLength(text, 'utf8');
  if (length > maxPayloadBytes) return encodeFrame(Buffer.from(text, 'utf8'), maxPayloadBytes);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + length);
  frame.writeUInt32BE(length, 0);
  frame.write(text, FRAME_HEADER_BYTES, 'utf8');
  frame.writeUInt32BE(crc32(frame.subarray(FRAME_HEADER_BYTES)), 4);
  return frame;
}

export class FramedConnection {
  private readonly decoder: FrameDecoder;
  private protocolError: string | undefined;
  private isClosed = false;
  /** Payloads decoded but not yet delivered because reading was paused part-way through a chunk. */
  private held: Buffer[] = [];
  private heldIndex = 0;
  private paused = false;

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
        this.held = [];
        this.heldIndex = 0;
        this.events.close({ ...(this.protocolError ? { protocolError: this.protocolError } : {}), ...(error ? { error } : {}) });
      },
      ...(events.flushed ? { flushed: (n: number) => this.events.flushed?.(n) } : {}),
    });
  }

  get closed(): boolean {
    return this.isClosed || this.conn.closed;
  }

  get description(): string {
    return this.conn.description;
  }

  /** Bytes written and not yet handed to the operating system (always 0 on a blocking transport). */
  get bufferedBytes(): number {
    return this.conn.bufferedBytes;
  }

  get readingPaused(): boolean {
    return this.paused;
  }

  /** Serializes and writes one message; returns the bytes written. Throws FrameError if it exceeds the frame limit. */
  send(msg: unknown): number {
    if (this.closed) return 0;
    const frame = jsonFrame(msg, this.maxFrameBytes);
    if (frame.length <= MAX_WRITE_CHUNK_BYTES) this.conn.write(frame);
    else for (const chunk of chunksOf(frame)) this.conn.write(chunk);
    return frame.length;
  }

  /** Stops delivering messages and reading from the transport until `resumeReading()`. */
  pauseReading(): void {
    if (this.paused) return;
    this.paused = true;
    this.conn.pauseReading();
  }

  /** Delivers messages held back by the pause, then resumes reading (unless a message paused again). */
  resumeReading(): void {
    if (!this.paused) return;
    this.paused = false;
    this.deliver();
    if (!this.paused && !this.closed) this.conn.resumeReading();
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
      return this.closeForProtocolError(err instanceof FrameError ? `${err.code}: ${err.message}` : 'frame decoder failed');
    }
    if (payloads.length === 0) return;
    if (this.heldIndex >= this.held.length) {
      this.held = payloads;
      this.heldIndex = 0;
    } else {
      for (const p of payloads) this.held.push(p);
    }
    this.deliver();
  }

  private deliver(): void {
    while (!this.paused && this.heldIndex < this.held.length) {
      if (this.protocolError || this.closed) return;
      const payload = this.held[this.heldIndex] as Buffer;
      this.heldIndex += 1;
      let msg: unknown;
      try {
        msg = JSON.parse(payload.toString('utf8'));
      } catch {
        return this.closeForProtocolError(`BAD_JSON: a ${payload.length}-byte frame payload is not valid JSON`);
      }
      this.events.message(msg, payload.length);
    }
    if (this.heldIndex >= this.held.length && this.held.length > 0) {
      this.held = [];
      this.heldIndex = 0;
    }
  }

  private closeForProtocolError(reason: string): void {
    this.protocolError = reason;
    this.held = [];
    this.heldIndex = 0;
    this.conn.destroy();
  }
}
