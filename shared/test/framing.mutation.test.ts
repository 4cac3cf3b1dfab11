/**
 * What the frame codec says when it refuses a frame (framing.ts): the error's class name and kind, and a
 * message with the sizes involved, on both the writing and the reading side. framing.test.ts checks the kinds;
 * these pin the rest for mutation testing (npm run test:mutation), since the messages are what the logs show
 * when a connection is closed for a bad frame.
 */
import { encodeFrame, FrameDecoder, FrameError } from '../src/framing';

function errorOf(fn: () => unknown): FrameError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(FrameError);
    return e as FrameError;
  }
  throw new Error('expected a FrameError');
}

describe('frame codec refusals', () => {
  it('refuses to write a frame above the limit, saying by how much', () => {
    const e = errorOf(() => encodeFrame(Buffer.alloc(1025), 1024));
    expect([e.name, e.code, e.message]).toEqual([
      'FrameError',
      'FRAME_TOO_LARGE',
      'outgoing frame of 1025 bytes exceeds the 1024-byte limit',
    ]);
  });

  it('refuses to read a frame above the limit, from its header alone', () => {
    const header = Buffer.alloc(8);
    header.writeUInt32BE(5000, 0);
    const e = errorOf(() => new FrameDecoder(4096).push(header));
    expect([e.name, e.code, e.message]).toEqual(['FrameError', 'FRAME_TOO_LARGE', 'frame length 5000 exceeds the 4096-byte limit']);
  });

  it('names the size of a payload whose CRC does not match, and stays failed', () => {
    const frame = encodeFrame(Buffer.from('{"hello":"world"}'));
    frame[frame.length - 1] = (frame[frame.length - 1] as number) ^ 0xff;
    const decoder = new FrameDecoder();
    const e = errorOf(() => decoder.push(frame));
    expect([e.name, e.code, e.message]).toEqual(['FrameError', 'FRAME_BAD_CRC', 'frame CRC-32 mismatch on a 17-byte payload']);
    expect(decoder.bufferedBytes).toBe(0);
    expect(errorOf(() => decoder.push(encodeFrame(Buffer.from('{}'))))).toBe(e);
    expect(errorOf(() => decoder.push(Buffer.alloc(0)))).toBe(e);
  });
});
