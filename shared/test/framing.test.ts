import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { chunksOf, encodeFrame, FrameDecoder, FrameError, FRAME_HEADER_BYTES, MAX_WRITE_CHUNK_BYTES } from '../src/framing';

/** Splits `buf` at the given cut points (any positions, duplicates and out-of-range ones folded). */
function rechunk(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, buf.length]) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  return out;
}

const payloadArb = fc.oneof(
  fc.json().map((j) => Buffer.from(j, 'utf8')),
  fc.uint8Array({ minLength: 0, maxLength: 3000 }).map((u) => Buffer.from(u)),
);

describe('frame codec', () => {
  it('any sequence of frames survives arbitrary re-chunking', () => {
    fc.assert(
      fc.property(fc.array(payloadArb, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 60 }), (payloads, cuts) => {
        const stream = Buffer.concat(payloads.map((p) => encodeFrame(p)));
        const decoder = new FrameDecoder();
        const got: Buffer[] = [];
        for (const chunk of rechunk(stream, cuts)) got.push(...decoder.push(chunk));
        expect(got.map((b) => b.toString('hex'))).toEqual(payloads.map((b) => b.toString('hex')));
        expect(decoder.bufferedBytes).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('copes with one byte at a time and with many frames packed in one chunk', () => {
    const payloads = Array.from({ length: 50 }, (_, i) => Buffer.from(JSON.stringify({ i, pad: 'x'.repeat(i * 7) })));
    const stream = Buffer.concat(payloads.map((p) => encodeFrame(p)));
    const bytewise = new FrameDecoder();
    const got: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) got.push(...bytewise.push(stream.subarray(i, i + 1)));
    expect(got).toEqual(payloads);
    expect(new FrameDecoder().push(stream)).toEqual(payloads);
  });

  it('writes the header as u32 BE length and u32 BE CRC-32 of the payload', () => {
    const payload = Buffer.from('{"a":1}');
    const frame = encodeFrame(payload);
    expect(frame.readUInt32BE(0)).toBe(payload.length);
    expect(frame.readUInt32BE(4)).toBe(crc32(payload));
    expect(frame.subarray(FRAME_HEADER_BYTES)).toEqual(payload);
  });

  it('rejects an oversized length before buffering the payload', () => {
    const decoder = new FrameDecoder(1024);
    const header = Buffer.alloc(8);
    header.writeUInt32BE(1025, 0);
    expect(() => decoder.push(header)).toThrow(expect.objectContaining({ code: 'FRAME_TOO_LARGE' }));
    expect(decoder.bufferedBytes).toBe(0);
    // A failed decoder stays failed: the stream is out of sync.
    expect(() => decoder.push(encodeFrame(Buffer.from('{}')))).toThrow(FrameError);
  });

  it('accepts a frame of exactly the limit', () => {
    const payload = Buffer.alloc(1024, 0x61);
    expect(new FrameDecoder(1024).push(encodeFrame(payload, 1024))).toEqual([payload]);
    expect(() => encodeFrame(Buffer.alloc(1025), 1024)).toThrow(expect.objectContaining({ code: 'FRAME_TOO_LARGE' }));
  });

  it('detects any corruption of payload or CRC as a bad CRC', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 500 }), fc.nat(), fc.integer({ min: 1, max: 255 }), (bytes, pos, flip) => {
        const frame = encodeFrame(Buffer.from(bytes));
        const at = 4 + (pos % (frame.length - 4)); // anywhere in CRC or payload
        frame[at] = (frame[at] as number) ^ flip;
        expect(() => new FrameDecoder().push(frame)).toThrow(expect.objectContaining({ code: 'FRAME_BAD_CRC' }));
      }),
      { numRuns: 200 },
    );
  });

  it('splits writes into as few chunks of at most 32 KiB as possible, in order, without losing or changing a byte', () => {
    const max = MAX_WRITE_CHUNK_BYTES;
    expect(max).toBe(32 * 1024);
    // Random content (reproducible from fast-check's seed), so a chunk moved, repeated or misaligned shows.
    const bytesOf = (n: number, seed: number) => createHash('shake256', { outputLength: n }).update(String(seed)).digest();
    const check = (buf: Buffer, limit?: number) => {
      const m = limit ?? max;
      const chunks = limit === undefined ? chunksOf(buf) : chunksOf(buf, limit);
      // As few writes as the limit allows, none empty (an empty buffer is one empty write), none above the limit.
      expect(chunks).toHaveLength(Math.max(1, Math.ceil(buf.length / m)));
      expect(chunks.filter((c) => c.length > m || (c.length === 0 && buf.length > 0))).toEqual([]);
      // Each chunk is exactly the next bytes of the buffer, compared byte for byte, not by length.
      let offset = 0;
      for (const c of chunks) {
        expect([offset, c.equals(buf.subarray(offset, offset + c.length))]).toEqual([offset, true]);
        offset += c.length;
      }
      expect(offset).toBe(buf.length);
      // Views into the caller's buffer, not copies.
      for (const c of chunks) expect([c.buffer, c.byteOffset >= buf.byteOffset]).toEqual([buf.buffer, true]);
    };
    for (const n of [0, 1, max - 1, max, max + 1, 2 * max, 2 * max + 1, 200_000]) check(bytesOf(n, n));
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 200_000 }), fc.integer(), (n, seed) => check(bytesOf(n, seed))),
      { numRuns: 30 },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 1, max: 300 }), fc.integer(), (n, limit, seed) =>
        check(bytesOf(n, seed), limit),
      ),
      { numRuns: 100 },
    );
  });
});
