/**
 * Frame codec for the parent <-> enclave link (docs/PROTOCOL.md, "Framing"):
 *   u32 BE payload length | u32 BE CRC-32 of the payload | payload (UTF-8 JSON)
 *
 * The decoder is incremental: it accepts the byte stream in chunks of any size, including frames split across
 * chunks and several frames packed into one. It holds at most one frame, of at most the limit.
 */
import { crc32 } from 'node:zlib';

export const FRAME_HEADER_BYTES = 8;
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;
/** Writes on vsock are split into chunks no larger than this (a kernel vsock bug corrupts larger writes). */
export const MAX_WRITE_CHUNK_BYTES = 32 * 1024;

export type FrameErrorCode = 'FRAME_TOO_LARGE' | 'FRAME_BAD_CRC';

/** A stream-level error: the connection it came from can no longer be trusted to be in sync. */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  constructor(
    readonly code: FrameErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export function encodeFrame(payload: Uint8Array, maxPayloadBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  if (payload.length > maxPayloadBytes) {
    throw new FrameError('FRAME_TOO_LARGE', `outgoing frame of ${payload.length} bytes exceeds the ${maxPayloadBytes}-byte limit`);
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.writeUInt32BE(crc32(payload), 4);
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

/** Splits a buffer into views of at most `max` bytes (no copying). */
export function chunksOf(buf: Buffer, max = MAX_WRITE_CHUNK_BYTES): Buffer[] {
  if (buf.length <= max) return [buf];
  const out: Buffer[] = [];
  for (let off = 0; off < buf.length; off += max) out.push(buf.subarray(off, Math.min(off + max, buf.length)));
  return out;
}

/**
 * Incremental decoder. Memory is bounded by the frame limit whatever the chunking: a frame's payload is
 * assembled in one buffer of its announced length, so a peer that sends a large frame one byte at a time
 * costs that frame's bytes, not one held Buffer object (hundreds of bytes each) per byte.
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFilled = 0;
  /** The frame being assembled (its announced length), once its header has been read. */
  private frame: Buffer | null = null;
  private filled = 0;
  private expectedCrc = 0;
  private failed: FrameError | null = null;

  constructor(private readonly maxPayloadBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /** Bytes received and held while waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.headerFilled + this.filled;
  }

  /**
   * Feeds bytes; returns the payloads of every frame they complete. Throws FrameError on an oversized length
   * or a CRC mismatch; after that the decoder refuses further input (the stream is out of sync).
   */
  push(chunk: Buffer): Buffer[] {
    if (this.failed) throw this.failed;
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.frame === null) {
        // A whole header and payload inside this chunk: hand out a view, no copy.
        if (this.headerFilled === 0 && chunk.length - at >= FRAME_HEADER_BYTES) {
          const length = this.checkedLength(chunk.readUInt32BE(at));
          if (chunk.length - at - FRAME_HEADER_BYTES >= length) {
            const payload = chunk.subarray(at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + length);
            this.checkCrc(payload, chunk.readUInt32BE(at + 4));
            out.push(payload);
            at += FRAME_HEADER_BYTES + length;
            continue;
          }
        }
        const n = Math.min(FRAME_HEADER_BYTES - this.headerFilled, chunk.length - at);
        chunk.copy(this.header, this.headerFilled, at, at + n);
        this.headerFilled += n;
        at += n;
        if (this.headerFilled < FRAME_HEADER_BYTES) break;
        const length = this.checkedLength(this.header.readUInt32BE(0));
        this.expectedCrc = this.header.readUInt32BE(4);
        this.headerFilled = 0;
        this.frame = Buffer.allocUnsafe(length);
        this.filled = 0;
      }
      const n = Math.min(this.frame.length - this.filled, chunk.length - at);
      chunk.copy(this.frame, this.filled, at, at + n);
      this.filled += n;
      at += n;
      if (this.filled < this.frame.length) break;
      const payload = this.frame;
      this.frame = null;
      this.filled = 0;
      this.checkCrc(payload, this.expectedCrc);
      out.push(payload);
    }
    return out;
  }

  private checkedLength(length: number): number {
    if (length > this.maxPayloadBytes)
      this.fail('FRAME_TOO_LARGE', `frame length ${length} exceeds the ${this.maxPayloadBytes}-byte limit`);
    return length;
  }

  private checkCrc(payload: Buffer, expected: number): void {
    if (crc32(payload) !== expected) this.fail('FRAME_BAD_CRC', `frame CRC-32 mismatch on a ${payload.length}-byte payload`);
  }

  private fail(code: FrameErrorCode, message: string): never {
    this.failed = new FrameError(code, message);
    this.frame = null;
    this.filled = 0;
    this.headerFilled = 0;
    throw this.failed;
  }
}
