/**
 * CBOR through cbor-x, configured once: maps decode to `Map` (attestation documents and NSM messages have
 * integer keys), no record extension, and map headers sized to their entry count so encodings are the
 * standard, shortest ones. `canonicalCbor` adds the deterministic key order of RFC 8949 §4.2.1.
 *
 * `decodeCbor` is lenient (NSM answers, AWS attestation documents). CBOR the parent supplies (blobs, records)
 * goes through `decodeCanonicalCbor`, which accepts only the one deterministic encoding of a value.
 */
import { Decoder, Encoder } from 'cbor-x';

const decoder = new Decoder({ mapsAsObjects: false, useRecords: false });
const encoder = new Encoder({ useRecords: false, variableMapSize: true, mapsAsObjects: false, tagUint8Array: false });

export function decodeCbor(data: Uint8Array): unknown {
  return decoder.decode(data);
}

export function encodeCbor(value: unknown): Buffer {
  return encoder.encode(value);
}

/**
 * The project's one deterministic CBOR encoder (RFC 8949 §4.2.1): map keys sorted by their encoded bytes (for
 * text keys: shorter first, then bytewise), every integer and length in its shortest form, nested objects and
 * Maps alike. Two parties that build the same value get the same bytes, and `decodeCanonicalCbor` accepts
 * exactly these bytes back. Plain objects are maps with text keys; values are integers (number or bigint),
 * strings, byte strings, booleans, null, arrays and maps. Anything else (a float, undefined) is refused, and
 * so is a string that is not well-formed Unicode (a lone surrogate): UTF-8 cannot carry it, Node would write
 * U+FFFD instead, and the bytes would then say something else than the value the caller holds (and signs).
 */
export function canonicalCbor(value: Record<string, unknown>): Buffer {
  return encodeDeterministic(value);
}

/**
 * Strict decoding for CBOR that the untrusted side supplies (sealed-key blobs, records): one encoding per
 * value, so the bytes a party checks are the only bytes that mean that value.
 *
 * The input must be a single data item in the deterministic encoding of RFC 8949 §4.2.1, restricted to what
 * records use: unsigned and negative integers, byte and text strings (valid UTF-8), arrays, maps whose keys are
 * integers or text strings, and the simple values false, true and null. Refused: tags (of any number),
 * indefinite lengths, floating-point numbers, other simple values (undefined included), any argument or length
 * not in its shortest form, duplicate map keys, map keys not sorted by their encoded bytes, trailing bytes,
 * nesting deeper than `maxDepth`.
 *
 * How: a structural pre-scan of the bytes checks all of that (cbor-x cannot be told to: it keeps the last of
 * duplicate keys, decodes tags, accepts indefinite lengths and non-shortest heads, and replaces invalid UTF-8);
 * cbor-x then decodes with the same configuration as `decodeCbor`; finally the decoded value is re-encoded
 * deterministically and must equal the input byte for byte. The re-encoding uses the encoder below rather than
 * cbor-x, whose encoder writes every bigint in 8 bytes and integers above 2^32 - 1 as floats, so it could not
 * tell a shortest uint64 from a padded one.
 *
 * The value is what `decodeCbor` would return: maps as `Map`, byte strings as `Buffer`, integers as `number`
 * except those encoded in 8 bytes (2^32 and above, or below -2^32), which come back as `bigint`.
 */
export function decodeCanonicalCbor(data: Uint8Array, options: { maxDepth?: number } = {}): unknown {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const end = scanItem(bytes, 0, 0, options.maxDepth ?? DEFAULT_MAX_DEPTH);
  if (end !== bytes.length) throw new CborStrictError(end, `${bytes.length - end} trailing bytes after the data item`);
  let value: unknown;
  try {
    value = decoder.decode(data); // as decodeCbor does, so byte strings come back as the input's type
  } catch (err) {
    throw new CborStrictError(0, `not decodable: ${(err as Error).message}`, { cause: err });
  }
  let again: Buffer;
  try {
    again = encodeDeterministic(value);
  } catch (err) {
    throw new CborStrictError(0, `decoded value cannot be re-encoded: ${(err as Error).message}`, { cause: err });
  }
  if (!again.equals(bytes)) throw new CborStrictError(0, 'the deterministic re-encoding differs from the input');
  return value;
}

/** Why `decodeCanonicalCbor` refused its input; `offset` is where in the input (0 for whole-input checks). */
export class CborStrictError extends Error {
  override readonly name = 'CborStrictError';
  constructor(
    readonly offset: number,
    reason: string,
    options?: ErrorOptions,
  ) {
    super(`non-canonical CBOR at byte ${offset}: ${reason}`, options);
  }
}

const DEFAULT_MAX_DEPTH = 16;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const MAJOR_NAMES = ['unsigned integer', 'negative integer', 'byte string', 'text string', 'array', 'map', 'tag', 'simple/float'];

/** Checks one data item starting at `pos`; returns the offset just past it. */
function scanItem(b: Buffer, pos: number, depth: number, maxDepth: number): number {
  if (pos >= b.length) throw new CborStrictError(pos, 'input ends inside a data item');
  const initial = b[pos] as number;
  const major = initial >> 5;
  const info = initial & 0x1f;
  if (major === 6) throw new CborStrictError(pos, 'tags are not allowed');
  if (major === 7) {
    if (info === 20 || info === 21 || info === 22) return pos + 1; // false, true, null
    if (info >= 25 && info <= 27) throw new CborStrictError(pos, 'floating-point numbers are not allowed');
    if (info === 31) throw new CborStrictError(pos, 'a "break" outside an indefinite-length item');
    throw new CborStrictError(pos, `simple value ${info === 24 ? (b[pos + 1] ?? '?') : info} is not allowed`);
  }
  if (info === 31) throw new CborStrictError(pos, `indefinite-length ${MAJOR_NAMES[major]} is not allowed`);
  if (info >= 28) throw new CborStrictError(pos, `reserved additional information ${info}`);

  // The argument, which must be in its shortest form.
  let arg: number;
  let next: number;
  if (info < 24) {
    arg = info;
    next = pos + 1;
  } else {
    const size = 1 << (info - 24); // 1, 2, 4 or 8 bytes
    if (pos + 1 + size > b.length) throw new CborStrictError(pos, 'input ends inside a head');
    if (size === 8) {
      const high = b.readUInt32BE(pos + 1);
      if (high === 0) throw new CborStrictError(pos, `${MAJOR_NAMES[major]} argument not in its shortest form`);
      // Only integers may need 8 bytes here: no string, array or map can be that long within the input.
      if (major > 1) throw new CborStrictError(pos, `${MAJOR_NAMES[major]} length exceeds the input`);
      arg = Number.MAX_SAFE_INTEGER; // the value itself is not needed for integers
    } else {
      arg = size === 1 ? (b[pos + 1] as number) : size === 2 ? b.readUInt16BE(pos + 1) : b.readUInt32BE(pos + 1);
      const min = size === 1 ? 24 : size === 2 ? 0x100 : 0x10000;
      if (arg < min) throw new CborStrictError(pos, `${MAJOR_NAMES[major]} argument not in its shortest form`);
    }
    next = pos + 1 + size;
  }

  switch (major) {
    case 0:
    case 1:
      return next;
    case 2:
    case 3: {
      if (arg > b.length - next) throw new CborStrictError(pos, `${MAJOR_NAMES[major]} length exceeds the input`);
      const end = next + arg;
      if (major === 3) {
        try {
          utf8.decode(b.subarray(next, end));
        } catch (err) {
          throw new CborStrictError(pos, 'text string is not valid UTF-8', { cause: err });
        }
      }
      return end;
    }
    case 4: {
      if (depth + 1 > maxDepth) throw new CborStrictError(pos, `nesting deeper than ${maxDepth}`);
      if (arg > b.length - next) throw new CborStrictError(pos, 'array length exceeds the input');
      let p = next;
      for (let i = 0; i < arg; i++) p = scanItem(b, p, depth + 1, maxDepth);
      return p;
    }
    default: {
      // major 5, map
      if (depth + 1 > maxDepth) throw new CborStrictError(pos, `nesting deeper than ${maxDepth}`);
      if (arg > (b.length - next) / 2) throw new CborStrictError(pos, 'map size exceeds the input');
      let p = next;
      let previousKey: Buffer | null = null;
      for (let i = 0; i < arg; i++) {
        const keyStart = p;
        if (keyStart >= b.length) throw new CborStrictError(keyStart, 'input ends inside a map');
        const keyMajor = (b[keyStart] as number) >> 5;
        if (keyMajor !== 0 && keyMajor !== 1 && keyMajor !== 3) {
          throw new CborStrictError(keyStart, `map keys must be integers or text strings, not a ${MAJOR_NAMES[keyMajor]}`);
        }
        p = scanItem(b, p, depth + 1, maxDepth);
        const key = b.subarray(keyStart, p);
        if (previousKey) {
          const order = Buffer.compare(previousKey, key);
          if (order === 0) throw new CborStrictError(keyStart, 'duplicate map key');
          if (order > 0) throw new CborStrictError(keyStart, 'map keys are not sorted by their encoded bytes');
        }
        previousKey = key;
        p = scanItem(b, p, depth + 1, maxDepth);
      }
      return p;
    }
  }
}

const TWO_64 = 1n << 64n;

/** The head of a data item in its shortest form. */
function head(major: number, arg: number | bigint): Buffer {
  const m = major << 5;
  const n = BigInt(arg);
  if (n < 0n || n >= TWO_64) throw new RangeError('integer out of the CBOR range');
  if (n < 24n) return Buffer.from([m | Number(n)]);
  if (n < 0x100n) return Buffer.from([m | 24, Number(n)]);
  if (n < 0x10000n) {
    const h = Buffer.alloc(3);
    h[0] = m | 25;
    h.writeUInt16BE(Number(n), 1);
    return h;
  }
  if (n < 0x100000000n) {
    const h = Buffer.alloc(5);
    h[0] = m | 26;
    h.writeUInt32BE(Number(n), 1);
    return h;
  }
  const h = Buffer.alloc(9);
  h[0] = m | 27;
  h.writeBigUInt64BE(n, 1);
  return h;
}

/** String.prototype.isWellFormed (ES2024, in Node since 20; the TypeScript lib here is ES2022). */
const wellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** RFC 8949 §4.2.1 deterministic encoding of the values `decodeCanonicalCbor` accepts (and nothing else). */
function encodeDeterministic(value: unknown): Buffer {
  const parts: Buffer[] = [];
  const put = (v: unknown): void => {
    if (v === null) parts.push(Buffer.from([0xf6]));
    else if (v === false) parts.push(Buffer.from([0xf4]));
    else if (v === true) parts.push(Buffer.from([0xf5]));
    else if (typeof v === 'number') {
      if (!Number.isSafeInteger(v)) throw new TypeError('not an integer');
      parts.push(v >= 0 ? head(0, v) : head(1, -1 - v));
    } else if (typeof v === 'bigint') parts.push(v >= 0n ? head(0, v) : head(1, -1n - v));
    else if (typeof v === 'string') {
      if (!wellFormed(v)) throw new TypeError('a string that is not well-formed Unicode (a lone surrogate) has no UTF-8 encoding');
      const s = Buffer.from(v, 'utf8');
      parts.push(head(3, s.length), s);
    } else if (v instanceof Uint8Array) parts.push(head(2, v.length), Buffer.from(v.buffer, v.byteOffset, v.byteLength));
    else if (Array.isArray(v)) {
      parts.push(head(4, v.length));
      for (const item of v) put(item);
    } else if (v instanceof Map || isPlainObject(v)) {
      const pairs: Array<[unknown, unknown]> = v instanceof Map ? [...v.entries()] : Object.entries(v);
      const entries = pairs.map(([k, val]) => [encodeDeterministic(k), encodeDeterministic(val)] as const);
      entries.sort((a, b) => Buffer.compare(a[0], b[0]));
      parts.push(head(5, entries.length));
      for (const [k, val] of entries) parts.push(k, val);
    } else
      throw new TypeError(`a ${typeof v === 'object' ? (v.constructor?.name ?? 'object') : typeof v} has no deterministic encoding here`);
  };
  put(value);
  return Buffer.concat(parts);
}
