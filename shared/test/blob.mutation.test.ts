/**
 * The sealed-key blob decoder (blob.ts) refuses every malformed field by name, at each limit's exact edge:
 * sizes, version, field names, createdAt, the wrapped key's length, and the ARN, key id and address patterns
 * (anchored at both ends). The parent supplies these bytes, so each check is a boundary the enclave relies on.
 * Written for mutation testing (npm run test:mutation); units.test.ts covers the round trip and a few refusals.
 */
import { BLOB_ALG, decodeBlob, decodeBlobBase64, encodeBlob, MAX_BLOB_BYTES, type KeyBlob } from '../src/blob';
import { canonicalCbor, CborStrictError } from '../src/cbor';
import { KeystoreError } from '../src/errors';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const blob: KeyBlob = {
  v: 1,
  alg: 'RSAES_OAEP_SHA_256/A256GCM',
  kmsKeyArn: ARN,
  keyId: 'k_1-A',
  address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
  createdAt: 1_795_000_000_000,
  wrappedKey: Buffer.alloc(256, 1),
  iv: Buffer.alloc(12, 2),
  ciphertext: Buffer.alloc(48, 3),
};

/** The canonical encoding of the blob's fields with some replaced (undefined removes a field). */
function fieldsWith(over: Record<string, unknown>): Buffer {
  const fields: Record<string, unknown> = { ...blob, createdAt: BigInt(blob.createdAt), ...over };
  return canonicalCbor(Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)));
}

function refusal(bytes: Uint8Array): [string, string] | 'accepted' {
  try {
    decodeBlob(bytes);
    return 'accepted';
  } catch (err) {
    expect(err).toBeInstanceOf(KeystoreError);
    return [(err as KeystoreError).code, (err as KeystoreError).message];
  }
}
const malformed = (what: string): [string, string] => ['KEY_INTEGRITY', `key blob is malformed: ${what}`];

describe('blob decoding, field by field', () => {
  it('round-trips, with the algorithm named exactly, also from base64', () => {
    expect(BLOB_ALG).toBe('RSAES_OAEP_SHA_256/A256GCM');
    expect(decodeBlob(fieldsWith({}))).toEqual(blob);
    expect(decodeBlobBase64(encodeBlob(blob).toString('base64'))).toEqual(blob);
    expect(refusal(Buffer.from(encodeBlob(blob).toString('base64'), 'utf8'))).toEqual(malformed('not canonical CBOR'));
    // The strict decoder's reason stays as the cause (for the log), not in the message.
    expect(() => decodeBlob(Buffer.from(encodeBlob(blob).toString('base64'), 'utf8'))).toThrow(
      expect.objectContaining({ cause: expect.any(CborStrictError) }),
    );
  });

  it('accepts sizes up to exactly MAX_BLOB_BYTES, and refuses empty or larger input', () => {
    expect(MAX_BLOB_BYTES).toBe(4096);
    const base = fieldsWith({}).length;
    // Lengthen the key id part of the ARN until the blob is exactly 4096 bytes (the ARN's length header grows
    // from one to two bytes on the way, so search for the fit).
    let arn = ARN;
    for (let pad = MAX_BLOB_BYTES - base - 8; fieldsWith({ kmsKeyArn: arn }).length !== MAX_BLOB_BYTES; pad++)
      arn = `${ARN}${'a'.repeat(pad)}`;
    expect(decodeBlob(fieldsWith({ kmsKeyArn: arn })).kmsKeyArn).toBe(arn);
    const over = fieldsWith({ kmsKeyArn: `${arn}a` });
    expect(over.length).toBe(MAX_BLOB_BYTES + 1);
    expect(refusal(over)).toEqual(malformed('4097 bytes is not a plausible blob size'));
    expect(refusal(new Uint8Array(0))).toEqual(malformed('0 bytes is not a plausible blob size'));
  });

  it('refuses what is not a map, and versions it does not read', () => {
    expect(refusal(canonicalCbor({}).subarray(0, 0))).toEqual(malformed('0 bytes is not a plausible blob size'));
    expect(refusal(Buffer.from([0x83, 0x01, 0x02, 0x03]))).toEqual(malformed('not a CBOR map'));
    expect(refusal(Buffer.from([0x01]))).toEqual(malformed('not a CBOR map'));
    expect(refusal(fieldsWith({ v: 2 }))).toEqual([
      'UNSUPPORTED_VERSION',
      'key blob version 2 is not supported (this build reads version 1)',
    ]);
    expect(refusal(fieldsWith({ v: 'one' }))).toEqual([
      'UNSUPPORTED_VERSION',
      'key blob version one is not supported (this build reads version 1)',
    ]);
    expect(refusal(fieldsWith({ v: undefined }))).toEqual([
      'UNSUPPORTED_VERSION',
      'key blob version undefined is not supported (this build reads version 1)',
    ]);
  });

  it('refuses unknown fields, naming at most 32 characters of them', () => {
    expect(refusal(fieldsWith({ extra: 1 }))).toEqual(malformed('unknown field extra'));
    const long = `x${'y'.repeat(40)}`;
    expect(refusal(fieldsWith({ [long]: 1 }))).toEqual(malformed(`unknown field ${long.slice(0, 32)}`));
  });

  it('refuses a createdAt that is not a positive safe integer, and accepts 1', () => {
    expect(decodeBlob(fieldsWith({ createdAt: 1 })).createdAt).toBe(1);
    for (const createdAt of [0, -5, '1795000000000', 2n ** 60n, null, undefined]) {
      expect([createdAt, refusal(fieldsWith({ createdAt }))]).toEqual([createdAt, malformed('createdAt is not a positive integer')]);
    }
  });

  it('accepts only RSA-2048, 3072 and 4096 ciphertexts as the wrapped key', () => {
    for (const n of [256, 384, 512]) expect(decodeBlob(fieldsWith({ wrappedKey: Buffer.alloc(n) })).wrappedKey).toHaveLength(n);
    for (const n of [255, 257, 128, 0])
      expect(refusal(fieldsWith({ wrappedKey: Buffer.alloc(n) }))).toEqual(
        malformed(`wrappedKey is ${n} bytes, not an RSA-2048/3072/4096 ciphertext`),
      );
    expect(refusal(fieldsWith({ wrappedKey: 'AAAA' }))).toEqual(malformed('wrappedKey is not a byte string'));
  });

  it.each<[string, string, string[], unknown[]]>([
    [
      'kmsKeyArn',
      'kmsKeyArn',
      ['arn:aws-cn:kms:cn-north-1:111122223333:key/abc', 'arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/a-b'],
      [
        `x${ARN}`,
        `${ARN}/x`,
        `${ARN}!`,
        'arn:aws:kms:us-east-1:11112222333:key/abc',
        'arn:aws:s3:us-east-1:111122223333:key/abc',
        'arn:aws1:kms:us-east-1:111122223333:key/abc',
        17,
      ],
    ],
    ['keyId', 'keyId', ['a', 'A-z_0', 'k'.repeat(64)], ['', 'k'.repeat(65), '!k1', 'k1!', 'k 1', 123]],
    [
      'address',
      'address',
      ['0x70997970c51812dc3a010c7d01b50e0d17dc79c8'],
      [
        '70997970C51812dc3A010C7d01b50e0d17dc79C8',
        `x${blob.address}`,
        `${blob.address}0`,
        `${blob.address}\n`,
        '0x70997970C51812dc3A010C7d01b50e0d17dc79C',
        42,
      ],
    ],
  ])('%s: accepts the well-formed and refuses the rest, anchored at both ends', (_name, field, good, bad) => {
    for (const value of good) expect(decodeBlob(fieldsWith({ [field]: value }))[field as keyof KeyBlob]).toBe(value);
    for (const value of bad)
      expect([value, refusal(fieldsWith({ [field]: value }))]).toEqual([value, malformed(`${field} is missing or not well formed`)]);
    expect(refusal(fieldsWith({ [field]: undefined }))).toEqual(malformed(`${field} is missing or not well formed`));
  });

  it('refuses an iv or ciphertext of another length, or that is not bytes', () => {
    expect(refusal(fieldsWith({ iv: Buffer.alloc(16) }))).toEqual(malformed('iv is 16 bytes, expected 12'));
    expect(refusal(fieldsWith({ ciphertext: Buffer.alloc(32) }))).toEqual(malformed('ciphertext is 32 bytes, expected 48'));
    expect(refusal(fieldsWith({ ciphertext: 'x'.repeat(48) }))).toEqual(malformed('ciphertext is not a byte string'));
  });
});
