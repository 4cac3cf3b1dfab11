/**
 * docs/SECURITY.md, "Strict decoding of parent-supplied CBOR": CBOR the parent supplies is decoded strictly. One
 * encoding per value: no duplicate keys, no tags, no indefinite lengths, no floats, shortest heads, keys sorted
 * by their encoded bytes, nothing trailing, and the deterministic re-encoding equals the input.
 */
import fc from 'fast-check';
import { blobAad, decodeBlob, encodeBlob, type KeyBlobV1 } from '../src/blob';
import { birthContent } from '../src/attestation/user-data';
import { canonicalCbor, CborStrictError, decodeCanonicalCbor, decodeCbor, encodeCbor } from '../src/cbor';
import { encodeRecord } from '../src/records';
import vector from './fixtures/blob-v1-vector.json';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function blob(createdAt: number): KeyBlobV1 {
  return {
    v: 1,
    alg: 'RSAES_OAEP_SHA_256/A256GCM',
    kmsKeyArn: 'arn:aws:kms:eu-west-1:123456789012:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0',
    keyId: 'k_3xY9',
    address: '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266',
    createdAt,
    wrappedKey: Buffer.alloc(256, 0xab),
    iv: Buffer.alloc(12, 1),
    ciphertext: Buffer.alloc(48, 2),
  };
}

function refusal(bytes: Uint8Array): string {
  try {
    decodeCanonicalCbor(bytes);
  } catch (err) {
    expect(err).toBeInstanceOf(CborStrictError);
    return (err as Error).message;
  }
  throw new Error(`accepted ${Buffer.from(bytes).toString('hex')}`);
}

describe('decodeCanonicalCbor: genuine encodings', () => {
  it.each([
    ['now', Date.now()],
    ['2^32 ms (the smallest uint64 in shortest form)', 2 ** 32],
    ['the largest safe integer', Number.MAX_SAFE_INTEGER],
  ])('round-trips a blob made by encodeBlob byte for byte, createdAt = %s', (_name, createdAt) => {
    const bytes = encodeBlob(blob(createdAt));
    const m = decodeCanonicalCbor(bytes) as Map<string, unknown>;
    expect(m).toBeInstanceOf(Map);
    expect(m.get('createdAt')).toBe(BigInt(createdAt)); // a uint64 comes back as a bigint, as with decodeCbor
    expect(m.get('v')).toBe(1);
    expect(Buffer.from(m.get('wrappedKey') as Uint8Array)).toEqual(Buffer.alloc(256, 0xab));
    expect(m).toEqual(decodeCbor(bytes));
    expect([...m.keys()]).toEqual(['v', 'iv', 'alg', 'keyId', 'address', 'createdAt', 'kmsKeyArn', 'ciphertext', 'wrappedKey']);
  });

  it('round-trips a blob whose createdAt is below 2^32 ms: the encoder writes every integer in its shortest form', () => {
    // Until 0.3 encodeBlob wrote createdAt as a uint64 whatever its size, so such a blob was not canonical.
    const bytes = encodeBlob(blob(1_000));
    expect(bytes.includes(hex('69 63726561746564417419 03e8'))).toBe(true); // "createdAt": 0x19 03e8
    expect((decodeCanonicalCbor(bytes) as Map<string, unknown>).get('createdAt')).toBe(1_000);
    // A uint64 with leading zero bytes (what the old encoder wrote) is refused.
    const padded = Buffer.from(bytes.toString('hex').replace('19' + '03e8', '1b' + '00000000000003e8'), 'hex');
    expect(refusal(padded)).toMatch(/unsigned integer argument not in its shortest form/);
  });

  it('accepts canonicalCbor records and small values, and returns what decodeCbor returns', () => {
    const records = [
      canonicalCbor({ keyId: 'k1', address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8' }),
      canonicalCbor({ a: 1, bb: -1, ccc: null, dddd: true, eeeee: false, f: Buffer.from('xy'), g: [1, 2, [3]], h: 'é✓' }),
      canonicalCbor({}),
      hex('00'),
      hex('17'),
      hex('1818'),
      hex('19 0100'),
      hex('1a 00010000'),
      hex('1b 0000000100000000'),
      hex('20'),
      hex('3b ffffffffffffffff'),
      hex('40'),
      hex('60'),
      hex('80'),
      hex('a0'),
      hex('a2 00 01 20 02'), // integer keys 0 and -1: 0x00 < 0x20
      hex('a2 17 01 6161 02'), // 0x17 < 0x61
    ];
    for (const bytes of records) expect(decodeCanonicalCbor(bytes)).toEqual(decodeCbor(bytes));
  });

  it('sorts map keys by encoded bytes (RFC 8949 §4.2.1), which for text keys is also shortest-first', () => {
    expect(decodeCanonicalCbor(hex('a2 6162 01 626161 02'))).toEqual(
      new Map<string, number>([
        ['b', 1],
        ['aa', 2],
      ]),
    );
    expect(refusal(hex('a2 626161 02 6162 01'))).toMatch(/map keys are not sorted/);
  });
});

describe('decodeCanonicalCbor: refusals', () => {
  it.each([
    // duplicates and order
    ['a duplicate text key', 'a2 6161 01 6161 02', /duplicate map key/],
    ['a duplicate integer key', 'a2 01 01 01 02', /duplicate map key/],
    ['unsorted keys', 'a2 6162 01 6161 02', /not sorted by their encoded bytes/],
    ['a byte-string key', 'a1 4101 01', /map keys must be integers or text strings/],
    ['an array key', 'a1 80 01', /map keys must be integers or text strings/],
    // tags
    ['tag 2 (bignum)', 'c2 4101', /tags are not allowed/],
    ['tag 24 (embedded CBOR)', 'd818 420102', /tags are not allowed/],
    ['tag 55799 (self-describe)', 'd9d9f7 00', /tags are not allowed/],
    ['a tag inside a map', 'a1 6161 c1 1a5f000000', /tags are not allowed/],
    // indefinite lengths
    ['an indefinite map', 'bf 6161 01 ff', /indefinite-length map/],
    ['an indefinite array', '9f 01 02 ff', /indefinite-length array/],
    ['indefinite bytes', '5f 4101 4102 ff', /indefinite-length byte string/],
    ['indefinite text', '7f 6161 6162 ff', /indefinite-length text string/],
    ['a lone break', 'ff', /"break" outside/],
    // non-shortest integers and lengths
    ['uint 5 in one extra byte', '18 05', /not in its shortest form/],
    ['uint 255 in two bytes', '19 00ff', /not in its shortest form/],
    ['uint 65535 in four bytes', '1a 0000ffff', /not in its shortest form/],
    ['uint 2^32-1 in eight bytes', '1b 00000000ffffffff', /not in its shortest form/],
    ['uint 0 in eight bytes', '1b 0000000000000000', /not in its shortest form/],
    ['negative -6 in one extra byte', '38 05', /not in its shortest form/],
    ['a text length in one extra byte', '78 01 61', /text string argument not in its shortest form/],
    ['a byte-string length in two bytes', '59 0001 01', /byte string argument not in its shortest form/],
    ['an array length in one extra byte', '98 01 01', /array argument not in its shortest form/],
    ['a map size in one extra byte', 'b8 01 6161 01', /map argument not in its shortest form/],
    ['a non-shortest value inside a map', 'a1 6161 1801', /not in its shortest form/],
    // floats and simple values
    ['a half float', 'f9 3c00', /floating-point/],
    ['a single float', 'fa 3f800000', /floating-point/],
    ['a double float', 'fb 3ff0000000000000', /floating-point/],
    ['undefined', 'f7', /simple value 23/],
    ['a one-byte simple value', 'f8 20', /simple value 32/],
    ['simple value 0', 'e0', /simple value 0/],
    ['reserved additional information', '1c', /reserved additional information 28/],
    // structure
    ['trailing bytes', '01 00', /1 trailing bytes/],
    ['two items', 'a0 a0', /trailing bytes/],
    ['an empty input', '', /input ends inside a data item/],
    ['a truncated head', '19 01', /input ends inside a head/],
    ['a string longer than the input', '65 616263', /length exceeds the input/],
    ['an array longer than the input', '83 01 02', /array length exceeds the input|ends inside a data item/],
    ['a map bigger than the input', 'a2 6161 01', /map size exceeds the input/],
    ['an eight-byte string length', '5b 0000000100000000', /length exceeds the input/],
    ['invalid UTF-8', '62 c328', /not valid UTF-8/],
    ['a UTF-16 surrogate in UTF-8', '63 eda080', /not valid UTF-8/],
  ])('refuses %s', (_name, bytes, message) => {
    expect(refusal(hex(bytes))).toMatch(message);
  });

  it("keeps the UTF-8 decoder's error as the cause of an invalid text string", () => {
    let err: unknown;
    try {
      decodeCanonicalCbor(hex('62 c328'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CborStrictError);
    expect((err as CborStrictError).cause).toMatchObject({ code: 'ERR_ENCODING_INVALID_ENCODED_DATA' });
  });

  it('refuses nesting deeper than maxDepth (16 by default)', () => {
    const nested = (n: number) => Buffer.concat([Buffer.alloc(n, 0x81), hex('00')]);
    expect(decodeCanonicalCbor(nested(16))).toBeDefined();
    expect(refusal(nested(17))).toMatch(/nesting deeper than 16/);
    expect(() => decodeCanonicalCbor(nested(3), { maxDepth: 2 })).toThrow(/nesting deeper than 2/);
    expect(refusal(Buffer.alloc(100_000, 0x81))).toMatch(/nesting deeper than 16/); // no stack overflow
  });

  it('refuses every strict prefix of a genuine blob, and the blob with anything appended', () => {
    const bytes = encodeBlob(blob(Date.now()));
    for (let n = 0; n < bytes.length; n++) expect(() => decodeCanonicalCbor(bytes.subarray(0, n))).toThrow(CborStrictError);
    expect(refusal(Buffer.concat([bytes, hex('00')]))).toMatch(/trailing/);
  });

  it('refuses a genuine blob re-encoded with a duplicate field, a tag, or an indefinite length', () => {
    const bytes = encodeBlob(blob(Date.now()));
    // The map head a9 (9 entries) becomes a (10 entries) with "v": 1 written again at the end.
    const duplicate = Buffer.concat([hex('aa'), bytes.subarray(1), hex('6176 01')]);
    expect(refusal(duplicate)).toMatch(/not sorted|duplicate/);
    // decodeCbor, the lenient decoder, takes the last "v" silently: the reason for the strict one.
    expect((decodeCbor(Buffer.concat([hex('aa'), bytes.subarray(1), hex('6176 02')])) as Map<string, unknown>).get('v')).toBe(2);
    const indefinite = Buffer.concat([hex('bf'), bytes.subarray(1), hex('ff')]);
    expect(refusal(indefinite)).toMatch(/indefinite-length map/);
    // The "v": 1 value (the byte after the first key) wrapped in tag 0.
    const tagged = Buffer.concat([bytes.subarray(0, 3), hex('c0'), bytes.subarray(3)]);
    expect(refusal(tagged)).toMatch(/tags are not allowed/);
  });
});

describe('decodeCanonicalCbor: properties', () => {
  const scalar = fc.oneof(
    fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
    fc.bigInt({ min: 2n ** 32n, max: 2n ** 64n - 1n }),
    fc.bigInt({ min: -(2n ** 64n) + 1n, max: -(2n ** 32n) - 1n }), // cbor-x writes -2^64 itself as a bignum tag
    fc.string({ unit: 'grapheme', maxLength: 40 }),
    fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)),
    fc.constantFrom(null, true, false),
  );
  const value = fc.letrec((tie) => ({
    item: fc.oneof({ depthSize: 'small' }, scalar, tie('array'), tie('map')),
    array: fc.array(tie('item'), { maxLength: 5 }),
    map: fc.dictionary(fc.string({ maxLength: 12 }), tie('item'), { maxKeys: 6 }).map((o) => new Map(Object.entries(o))),
  })).item;

  it('accepts the deterministic encoding of any value in its domain and returns that value', () => {
    fc.assert(
      fc.property(value, (v) => {
        // canonicalCbor-style encoding: cbor-x with keys sorted by encoded bytes, at every level.
        const sortDeep = (x: unknown): unknown =>
          x instanceof Map
            ? new Map(
                [...x.entries()]
                  .map(([k, val]) => [k, sortDeep(val)] as const)
                  .sort((a, b) => Buffer.compare(encodeCbor(a[0]), encodeCbor(b[0]))),
              )
            : Array.isArray(x)
              ? x.map(sortDeep)
              : x;
        // (The bigints are all beyond 32 bits, where cbor-x's fixed 8-byte form is also the shortest.)
        const bytes = encodeCbor(sortDeep(v));
        expect(decodeCanonicalCbor(bytes)).toEqual(decodeCbor(bytes));
      }),
      { numRuns: 300 },
    );
  });

  it('on arbitrary bytes, either refuses with CborStrictError or returns exactly what decodeCbor returns', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 64 }), (u) => {
        let v: unknown;
        try {
          v = decodeCanonicalCbor(u);
        } catch (err) {
          expect(err).toBeInstanceOf(CborStrictError);
          return;
        }
        expect(v).toEqual(decodeCbor(u));
      }),
      { numRuns: 3000 },
    );
  });

  it('a genuine blob with any single byte changed is refused or decodes to a different value', () => {
    const bytes = encodeBlob(blob(Date.now()));
    const original = decodeCanonicalCbor(bytes);
    fc.assert(
      fc.property(fc.nat(bytes.length - 1), fc.integer({ min: 1, max: 255 }), (at, flip) => {
        const mutated = Buffer.from(bytes);
        mutated[at] = (mutated[at] as number) ^ flip;
        let v: unknown;
        try {
          v = decodeCanonicalCbor(mutated);
        } catch (err) {
          expect(err).toBeInstanceOf(CborStrictError);
          return;
        }
        expect(v).not.toEqual(original);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('canonicalCbor: the one deterministic encoder', () => {
  const fields = vector.fields;
  const v1: KeyBlobV1 = {
    v: 1,
    alg: 'RSAES_OAEP_SHA_256/A256GCM',
    kmsKeyArn: fields.kmsKeyArn,
    keyId: fields.keyId,
    address: fields.address,
    createdAt: fields.createdAt,
    wrappedKey: Buffer.from(fields.wrappedKey, 'hex'),
    iv: Buffer.from(fields.iv, 'hex'),
    ciphertext: Buffer.from(fields.ciphertext, 'hex'),
  };

  it('writes the same bytes as release 0.3.0 for a version 1 blob, its AAD and a birth content (stored vector)', () => {
    expect(encodeBlob(v1).toString('hex')).toBe(vector.blob);
    expect(blobAad(v1).toString('hex')).toBe(vector.aad);
    expect(birthContent(fields.keyId, fields.address).toString('hex')).toBe(vector.birthContent);
    // And reads it back exactly (as the migration image does), refusing it where version 1 is not accepted.
    expect(decodeBlob(Buffer.from(vector.blob, 'hex'), { acceptV1: true })).toEqual(v1);
    expect(() => decodeBlob(Buffer.from(vector.blob, 'hex'))).toThrow(expect.objectContaining({ code: 'UNSUPPORTED_VERSION' }));
  });

  it('encodes nested objects and Maps alike, whatever the insertion order, at every depth', () => {
    const a = canonicalCbor({
      z: 1,
      a: {
        y: [1, { d: null, c: true }],
        b: new Map<unknown, unknown>([
          ['k', 'v'],
          [1, 2],
        ]),
      },
      mm: -1,
    });
    const b = canonicalCbor({
      mm: -1,
      a: {
        b: new Map<unknown, unknown>([
          [1, 2],
          ['k', 'v'],
        ]),
        y: [
          1,
          new Map([
            ['c', true],
            ['d', null],
          ]),
        ],
      },
      z: 1,
    });
    expect(a).toEqual(b);
    expect(decodeCanonicalCbor(a)).toEqual(decodeCbor(a));
    // Keys sort by their encoded bytes at every level: shorter first, then bytewise; integers before text.
    expect(canonicalCbor({ outer: { bb: 1, a: 2, c: 3 } })).toEqual(hex('a1 656f75746572 a3 6161 02 6163 03 626262 01'));
    expect(
      canonicalCbor({
        m: new Map<unknown, unknown>([
          ['a', 1],
          [10, 2],
          [-1, 3],
        ]),
      }),
    ).toEqual(hex('a1 616d a3 0a 02 20 03 6161 01'));
    // Array order is kept (it is content).
    expect(canonicalCbor({ l: [2, 1] })).not.toEqual(canonicalCbor({ l: [1, 2] }));
  });

  it('writes every integer and length in its shortest form, nested too', () => {
    const cases: Array<[unknown, string]> = [
      [23, '17'],
      [24, '1818'],
      [255, '18ff'],
      [256, '190100'],
      [65535, '19ffff'],
      [65536, '1a00010000'],
      [2 ** 32 - 1, '1affffffff'],
      [2 ** 32, '1b0000000100000000'],
      [Number.MAX_SAFE_INTEGER, '1b001fffffffffffff'],
      [2n ** 64n - 1n, '1bffffffffffffffff'],
      [-1, '20'],
      [-25, '3818'],
      [-(2 ** 32) - 1, '3b0000000100000000'],
      ['x'.repeat(24), `7818${'78'.repeat(24)}`],
      [Buffer.alloc(256), `590100${'00'.repeat(256)}`],
    ];
    for (const [value, bytes] of cases)
      expect([value, canonicalCbor({ n: { n: value } }).toString('hex')]).toEqual([value, `a1616ea1616e${bytes}`]);
    expect(canonicalCbor({ l: Array.from({ length: 24 }, () => 0) }).toString('hex')).toBe(`a1616c9818${'00'.repeat(24)}`);
  });

  it('refuses what has no deterministic encoding here', () => {
    for (const bad of [1.5, undefined, Number.NaN, 2 ** 64, new Date(0), Symbol('s'), () => 1, 2n ** 64n, -(2n ** 64n) - 1n]) {
      expect(() => canonicalCbor({ nested: { bad } })).toThrow();
    }
  });

  it('encodes a record with nested fields (auth, lists) byte-for-byte the same whoever builds it', () => {
    const record = {
      v: 1,
      kind: 'project',
      projectId: 'default',
      projectKey: 'default',
      auth: { type: 'token' },
      allowedRequestTypes: ['digest', 'message'],
      allowedOrigins: [],
      state: 'active',
      seq: 0,
      prev: null,
      createdAt: 1_764_633_600_123,
    } as const;
    const shuffled = Object.fromEntries(Object.entries(record).reverse());
    expect(encodeRecord({ ...record, allowedRequestTypes: [...record.allowedRequestTypes], allowedOrigins: [] })).toEqual(
      canonicalCbor(shuffled),
    );
    expect(decodeCanonicalCbor(canonicalCbor(shuffled), { maxDepth: 4 })).toEqual(decodeCbor(canonicalCbor(record)));
  });
});

describe('canonicalCbor: what it refuses to encode, and its integer edges', () => {
  it('refuses values with no deterministic encoding here, naming what they are', () => {
    expect(() => canonicalCbor({ a: 1.5 })).toThrow(new TypeError('not an integer'));
    expect(() => canonicalCbor({ a: undefined })).toThrow(new TypeError('a undefined has no deterministic encoding here'));
    expect(() => canonicalCbor({ a: new Date(0) })).toThrow(new TypeError('a Date has no deterministic encoding here'));
    expect(() => canonicalCbor({ a: Object.create(Object.create(null) as object) as object })).toThrow(
      new TypeError('a object has no deterministic encoding here'),
    );
    expect(() => canonicalCbor({ a: 2n ** 64n })).toThrow(new RangeError('integer out of the CBOR range'));
    expect(() => canonicalCbor({ a: -(2n ** 64n) - 1n })).toThrow(new RangeError('integer out of the CBOR range'));
  });

  it('encodes integers at their edges in the shortest form, bigint and number alike', () => {
    expect(canonicalCbor({ a: 0n })).toEqual(canonicalCbor({ a: 0 }));
    expect(
      canonicalCbor({ a: 2n ** 64n - 1n })
        .subarray(3)
        .toString('hex'),
    ).toBe('1bffffffffffffffff');
    expect(
      canonicalCbor({ a: -(2n ** 64n) })
        .subarray(3)
        .toString('hex'),
    ).toBe('3bffffffffffffffff');
    expect(canonicalCbor({ a: -1n })).toEqual(canonicalCbor({ a: -1 }));
  });

  it('encodes an object without a prototype as the same map as a plain object', () => {
    const bare = Object.assign(Object.create(null) as Record<string, unknown>, { b: 1, a: 'x' });
    expect(canonicalCbor(bare)).toEqual(canonicalCbor({ a: 'x', b: 1 }));
  });

  // Review 17, F3: Node writes U+FFFD for a lone surrogate, so the bytes (what is signed, and what everyone else
  // reads) said another string than the value the encoder was given.
  it('refuses a string that is not well-formed Unicode (a lone surrogate), as a value or a key, at any depth', () => {
    const refusal = new TypeError('a string that is not well-formed Unicode (a lone surrogate) has no UTF-8 encoding');
    for (const bad of ['\ud800', 'issuer\ud800', '\udfff', '\udc00x', 'x\ud83d', '\ude00\ud83d']) {
      expect(() => canonicalCbor({ a: bad })).toThrow(refusal);
      expect(() => canonicalCbor({ [bad]: 1 })).toThrow(refusal);
      expect(() => canonicalCbor({ auth: { issuer: bad } })).toThrow(refusal);
      expect(() => canonicalCbor({ list: ['ok', bad] })).toThrow(refusal);
      expect(() => canonicalCbor({ m: new Map([[bad, 1]]) })).toThrow(refusal);
    }
  });

  it('encodes well-formed text outside the BMP (a surrogate pair) as its four UTF-8 bytes, and decodes it back', () => {
    const bytes = canonicalCbor({ a: '\ud83d\ude00' });
    expect(bytes.toString('hex')).toBe('a1616164f09f9880');
    expect(decodeCanonicalCbor(bytes)).toEqual(new Map([['a', '😀']]));
  });
});
