/**
 * decodeCanonicalCbor's structural limits, each at its boundary and with the reason it gives: nesting depth
 * (arrays and maps), lengths that exceed the input, and a map that ends early. Written for the mutants that
 * survived the first mutation run (docs/MUTATION.md): these checks had no test that reached them.
 */
import { CborStrictError, decodeCanonicalCbor } from '../src/cbor';

/** `depth` arrays, each holding the next, around an integer: [[[0]]] is depth 3. */
const nestedArrays = (depth: number) => Buffer.from([...Array(depth).fill(0x81), 0x00]);
/** `depth` maps {0: {0: ... 0}}. */
const nestedMaps = (depth: number) => Buffer.from([...Array.from({ length: depth }, () => [0xa1, 0x00]).flat(), 0x00]);

function refusal(bytes: Buffer, maxDepth?: number): { offset: number; message: string } {
  try {
    decodeCanonicalCbor(bytes, maxDepth === undefined ? {} : { maxDepth });
  } catch (err) {
    expect(err).toBeInstanceOf(CborStrictError);
    return { offset: (err as CborStrictError).offset, message: (err as Error).message };
  }
  throw new Error('accepted');
}

describe('decodeCanonicalCbor limits', () => {
  it.each([
    ['arrays', nestedArrays],
    ['maps', nestedMaps],
  ])('accepts %s nested exactly maxDepth deep and refuses one level more, where it starts', (_kind, nested) => {
    expect(() => decodeCanonicalCbor(nested(3), { maxDepth: 3 })).not.toThrow();
    const deeper = refusal(nested(4), 3);
    expect(deeper.message).toMatch(/nesting deeper than 3/);
    expect(deeper.offset).toBe(nested === nestedArrays ? 3 : 6);
  });

  it('refuses an array whose length exceeds the bytes left, before reading its items', () => {
    expect(refusal(Buffer.from([0x84, 0x01]))).toEqual({ offset: 0, message: expect.stringMatching(/array length exceeds the input/) });
  });

  it('refuses a map that ends before its last key, at that key', () => {
    // {0: "ab", <missing>}: two entries announced, four bytes left, the first entry takes all four.
    expect(refusal(Buffer.from([0xa2, 0x00, 0x62, 0x61, 0x62]))).toEqual({
      offset: 5,
      message: expect.stringMatching(/input ends inside a map/),
    });
  });

  it('refuses a map whose size exceeds half the bytes left', () => {
    expect(refusal(Buffer.from([0xa2, 0x00, 0x00]))).toEqual({ offset: 0, message: expect.stringMatching(/map size exceeds the input/) });
  });
});
