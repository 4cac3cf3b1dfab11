/**
 * Frame codec for the parent <-> enclave link (DESIGN §4):
 *   u32 BE payload length | u32 BE CRC-32 of the payload | payload (UTF-8 JSON)
 *
 * The decoder is incremental: it accepts the byte stream in chunks of any size, including frames split across
 * chunks and several frames packed into one. It never buffers more than one frame beyond the limit check.
 */
import { crc32 } from 'node:zlib';

export const FRAME_HEADER_BYTES = 8;
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;
/** Writes on vsock are split into chunks no larger than this (a kernel vsock bug corrupts larger writes). */
export const MAX_WRITE_CHUNK_BYTES = 32 * 1024;

export type FrameErrorKind = 'FRAME_TOO_LARGE' | 'FRAME_BAD_CRC';

/** A stream-level error: the connection it came from can no longer be trusted to be in sync. */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  constructor(
    readonly kind: FrameErrorKind,
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

export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Payload length of the frame being assembled, once its header has been read. */
  private expected = -1;
  private expectedCrc = 0;
  private failed: FrameError | null = null;

  constructor(private readonly maxPayloadBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /** Bytes held while waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * Feeds bytes; returns the payloads of every frame they complete. Throws FrameError on an oversized length
   * or a CRC mismatch; after that the decoder refuses further input (the stream is out of sync).
   */
  push(chunk: Buffer): Buffer[] {
    if (this.failed) throw this.failed;
    if (chunk.length === 0) return [];
    this.chunks.push(chunk);
    this.buffered += chunk.length;

    const out: Buffer[] = [];
    for (;;) {
      if (this.expected < 0) {
        if (this.buffered < FRAME_HEADER_BYTES) break;
        const header = this.take(FRAME_HEADER_BYTES);
        const length = header.readUInt32BE(0);
        if (length > this.maxPayloadBytes) {
          return this.fail('FRAME_TOO_LARGE', `frame length ${length} exceeds the ${this.maxPayloadBytes}-byte limit`);
        }
        this.expected = length;
        this.expectedCrc = header.readUInt32BE(4);
      }
      if (this.buffered < this.expected) break;
      const payload = this.take(this.expected);
      if (crc32(payload) !== this.expectedCrc) {
        return this.fail('FRAME_BAD_CRC', `frame CRC-32 mismatch on a ${payload.length}-byte payload`);
      }
      this.expected = -1;
      out.push(payload);
    }
    return out;
  }

  private fail(kind: FrameErrorKind, message: string): never {
    this.failed = new FrameError(kind, message);
    this.chunks = [];
    this.buffered = 0;
    throw this.failed;
  }

  /** Removes exactly n buffered bytes (n <= buffered), copying only when they span chunks. */
  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first === undefined) return Buffer.alloc(0);
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.chunks[0] as Buffer;
      const want = n - filled;
      if (head.length <= want) {
        head.copy(out, filled);
        filled += head.length;
        this.chunks.shift();
      } else {
        head.copy(out, filled, 0, want);
        this.chunks[0] = head.subarray(want);
        filled += want;
      }
    }
    return out;
  }
}
