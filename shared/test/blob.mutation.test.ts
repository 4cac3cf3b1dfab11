/**
 * The sealed-blob decoder (blob.ts) refuses every malformed field by name, at each limit's exact edge, for
 * every kind: version 2 key blobs, version 2 identity and tls blobs, and version 1 key blobs (only with
 * `acceptV1`, the migration image's option). Sizes, version and kind, field names, createdAt, the wrapped
 * key's length, and the ARN, key id, address, project id, subject and public key formats (anchored at both
 * ends). And the AAD: each kind binds its own fields, so a blob re-homed to another project, subject or key
 * id, or read as another kind, does not authenticate. The parent supplies these bytes, so each check is a
 * boundary the enclave relies on. Written for mutation testing (npm run test:mutation).
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import {
  BLOB_ALG,
  BLOB_VERSION,
  BLOB_VERSION_V1,
  blobAad,
  blobBinding,
  decodeBlob,
  decodeBlobBase64,
  decodeKeyBlob,
  decodeTlsBlob,
  encodeBlob,
  MAX_BLOB_BYTES,
  TLS_PUBLIC_KEY_RE,
  type IdentityBlob,
  type KeyBlob,
  type KeyBlobV1,
  type SealedBlob,
  type TlsBlob,
} from '../src/blob';
import { canonicalCbor, CborStrictError } from '../src/cbor';
import { KeystoreError } from '../src/errors';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const sealed = {
  alg: 'RSAES_OAEP_SHA_256/A256GCM',
  kmsKeyArn: ARN,
  createdAt: 1_795_000_000_000,
  wrappedKey: Buffer.alloc(256, 1),
  iv: Buffer.alloc(12, 2),
  ciphertext: Buffer.alloc(48, 3),
} as const;
const keyBlob: KeyBlob = {
  v: 2,
  kind: 'key',
  ...sealed,
  keyId: 'k_1-A',
  address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
  projectId: 'default',
  subject: 'user@example.com',
};
const identityBlob: IdentityBlob = { v: 2, kind: 'identity', ...sealed, publicKey: `0x${'5a'.repeat(32)}` };
/** A P-256 point as a tls blob names it: 0x04 ‖ x ‖ y, lower-case hex. */
const TLS_POINT = `0x04${'6b'.repeat(32)}${'4f'.repeat(32)}`;
const tlsBlob: TlsBlob = { v: 2, kind: 'tls', ...sealed, publicKey: TLS_POINT };
const v1Blob: KeyBlobV1 = { v: 1, ...sealed, keyId: 'k_1-A', address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8' };

/** The canonical encoding of a blob's fields with some replaced (undefined removes a field). */
function fieldsWith(base: SealedBlob, over: Record<string, unknown>): Buffer {
  const fields: Record<string, unknown> = { ...base, ...over };
  return canonicalCbor(Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)));
}
const keyWith = (over: Record<string, unknown>) => fieldsWith(keyBlob, over);

function refusal(bytes: Uint8Array, acceptV1 = false): [string, string] | 'accepted' {
  try {
    decodeBlob(bytes, { acceptV1 });
    return 'accepted';
  } catch (err) {
    expect(err).toBeInstanceOf(KeystoreError);
    return [(err as KeystoreError).code, (err as KeystoreError).message];
  }
}
const malformed = (what: string): [string, string] => ['KEY_INTEGRITY', `key blob is malformed: ${what}`];
const unsupported = (v: string): [string, string] => [
  'UNSUPPORTED_VERSION',
  `key blob version ${v} is not supported (this build reads version 2)`,
];
const V1_REFUSED: [string, string] = [
  'UNSUPPORTED_VERSION',
  'key blob version 1 is not accepted: it binds no project or subject; keys made before 0.4 move to version 2 through the migration image',
];

describe('blob decoding, each kind', () => {
  it('round-trips each kind, with the algorithm named exactly, also from base64', () => {
    expect([BLOB_ALG, BLOB_VERSION, BLOB_VERSION_V1]).toEqual(['RSAES_OAEP_SHA_256/A256GCM', 2, 1]);
    expect(decodeBlob(keyWith({}))).toEqual(keyBlob);
    expect(decodeBlob(encodeBlob(identityBlob))).toEqual(identityBlob);
    expect(decodeBlob(encodeBlob(tlsBlob))).toEqual(tlsBlob);
    expect(decodeBlobBase64(encodeBlob(tlsBlob).toString('base64'))).toEqual(tlsBlob);
    expect(decodeBlob(encodeBlob(v1Blob), { acceptV1: true })).toEqual(v1Blob);
    expect(decodeBlobBase64(encodeBlob(keyBlob).toString('base64'))).toEqual(keyBlob);
    expect(decodeBlobBase64(encodeBlob(v1Blob).toString('base64'), { acceptV1: true })).toEqual(v1Blob);
    expect(decodeBlob(encodeBlob({ ...keyBlob, subject: null }))).toEqual({ ...keyBlob, subject: null });
    expect(refusal(Buffer.from(encodeBlob(keyBlob).toString('base64'), 'utf8'))).toEqual(malformed('not canonical CBOR'));
    // The strict decoder's reason stays as the cause (for the log), not in the message.
    expect(() => decodeBlob(Buffer.from(encodeBlob(keyBlob).toString('base64'), 'utf8'))).toThrow(
      expect.objectContaining({ cause: expect.any(CborStrictError) }),
    );
  });

  it('reads version 1 only when asked to (the migration image), and never as version 2', () => {
    expect(refusal(encodeBlob(v1Blob))).toEqual(V1_REFUSED);
    expect(refusal(encodeBlob(v1Blob), true)).toBe('accepted');
    // A version 1 blob with version 2 fields, or a version 2 blob without its kind, is neither.
    expect(refusal(fieldsWith(v1Blob, { kind: 'key' }), true)).toEqual(malformed('unknown field kind'));
    expect(refusal(fieldsWith(v1Blob, { projectId: 'default', subject: null }), true)).toEqual(malformed('unknown field subject'));
    expect(refusal(keyWith({ kind: undefined }))).toEqual(malformed('kind is not key, identity or tls'));
    expect(refusal(keyWith({ v: 1 }), true)).toEqual(malformed('unknown field kind'));
    expect(refusal(fieldsWith(v1Blob, { v: 2 }))).toEqual(malformed('kind is not key, identity or tls'));
  });

  it('decodeKeyBlob takes only version 2 key blobs (what every signing path accepts)', () => {
    expect(decodeKeyBlob(encodeBlob(keyBlob).toString('base64'))).toEqual(keyBlob);
    expect(() => decodeKeyBlob(encodeBlob(identityBlob).toString('base64'))).toThrow(
      expect.objectContaining({ code: 'KEY_INTEGRITY', message: 'key blob is malformed: not a key blob' }),
    );
    expect(() => decodeKeyBlob(encodeBlob(v1Blob).toString('base64'))).toThrow(expect.objectContaining({ code: 'UNSUPPORTED_VERSION' }));
    expect(() => decodeKeyBlob(encodeBlob(tlsBlob).toString('base64'))).toThrow(
      expect.objectContaining({ code: 'KEY_INTEGRITY', message: 'key blob is malformed: not a key blob' }),
    );
  });

  it('decodeTlsBlob takes only tls blobs (what tls.install accepts): never a key, identity or version 1 blob', () => {
    expect(decodeTlsBlob(encodeBlob(tlsBlob).toString('base64'))).toEqual(tlsBlob);
    for (const other of [keyBlob, identityBlob]) {
      expect(() => decodeTlsBlob(encodeBlob(other).toString('base64'))).toThrow(
        expect.objectContaining({ code: 'KEY_INTEGRITY', message: 'key blob is malformed: not a TLS blob' }),
      );
    }
    expect(() => decodeTlsBlob(encodeBlob(v1Blob).toString('base64'))).toThrow(expect.objectContaining({ code: 'UNSUPPORTED_VERSION' }));
    expect(() => decodeTlsBlob('')).toThrow(expect.objectContaining({ code: 'KEY_INTEGRITY' }));
  });

  it('accepts sizes up to exactly MAX_BLOB_BYTES, and refuses empty or larger input', () => {
    expect(MAX_BLOB_BYTES).toBe(4096);
    const base = keyWith({}).length;
    // Lengthen the key id part of the ARN until the blob is exactly 4096 bytes (its length header grows on the way).
    let arn = ARN;
    for (let pad = MAX_BLOB_BYTES - base - 8; keyWith({ kmsKeyArn: arn }).length !== MAX_BLOB_BYTES; pad++)
      arn = `${ARN}${'a'.repeat(pad)}`;
    expect(decodeBlob(keyWith({ kmsKeyArn: arn })).kmsKeyArn).toBe(arn);
    const over = keyWith({ kmsKeyArn: `${arn}a` });
    expect(over.length).toBe(MAX_BLOB_BYTES + 1);
    expect(refusal(over)).toEqual(malformed('4097 bytes is not a plausible blob size'));
    expect(refusal(new Uint8Array(0))).toEqual(malformed('0 bytes is not a plausible blob size'));
  });

  it('refuses what is not a map, and versions and kinds it does not read', () => {
    expect(refusal(Buffer.from([0x83, 0x01, 0x02, 0x03]))).toEqual(malformed('not a CBOR map'));
    expect(refusal(Buffer.from([0x01]))).toEqual(malformed('not a CBOR map'));
    expect(refusal(keyWith({ v: 3 }))).toEqual(unsupported('3'));
    expect(refusal(keyWith({ v: 'two' }))).toEqual(unsupported('two'));
    expect(refusal(keyWith({ v: undefined }))).toEqual(unsupported('undefined'));
    expect(refusal(keyWith({ v: 3 }), true)).toEqual(unsupported('3'));
    for (const kind of ['Key', 'identity ', 'v1', 'project', 'TLS', 'tls ', 7, null]) {
      expect([kind, refusal(keyWith({ kind }))]).toEqual([kind, malformed('kind is not key, identity or tls')]);
    }
  });

  it("refuses each kind with another kind's fields, unknown fields (naming at most 32 characters), or one missing", () => {
    expect(refusal(keyWith({ publicKey: identityBlob.publicKey }))).toEqual(malformed('unknown field publicKey'));
    expect(refusal(fieldsWith(identityBlob, { keyId: 'k1' }))).toEqual(malformed('unknown field keyId'));
    expect(refusal(fieldsWith(identityBlob, { projectId: 'default' }))).toEqual(malformed('unknown field projectId'));
    expect(refusal(keyWith({ extra: 1 }))).toEqual(malformed('unknown field extra'));
    const long = `x${'y'.repeat(40)}`;
    expect(refusal(keyWith({ [long]: 1 }))).toEqual(malformed(`unknown field ${long.slice(0, 32)}`));
    expect(refusal(keyWith({ projectId: undefined }))).toEqual(malformed('projectId is missing or not well formed'));
    expect(refusal(keyWith({ subject: undefined }))).toEqual(malformed('subject is not null or a string'));
    expect(refusal(fieldsWith(identityBlob, { publicKey: undefined }))).toEqual(malformed('publicKey is missing or not well formed'));
    expect(refusal(fieldsWith(tlsBlob, { keyId: 'k1' }))).toEqual(malformed('unknown field keyId'));
    expect(refusal(fieldsWith(tlsBlob, { address: keyBlob.address }))).toEqual(malformed('unknown field address'));
    expect(refusal(fieldsWith(tlsBlob, { subject: null }))).toEqual(malformed('unknown field subject'));
    expect(refusal(fieldsWith(tlsBlob, { publicKey: undefined }))).toEqual(malformed('publicKey is missing or not well formed'));
    // A tls blob holds exactly the identity kind's fields, but its public key is a P-256 point: neither passes as the other.
    expect(refusal(fieldsWith(tlsBlob, { kind: 'identity' }))).toEqual(malformed('publicKey is missing or not well formed'));
    expect(refusal(fieldsWith(identityBlob, { kind: 'tls' }))).toEqual(malformed('publicKey is missing or not well formed'));
  });

  it('refuses a createdAt that is not a positive safe integer, and accepts 1 and 2^53-1', () => {
    expect(decodeBlob(keyWith({ createdAt: 1 })).createdAt).toBe(1);
    expect(decodeBlob(keyWith({ createdAt: Number.MAX_SAFE_INTEGER })).createdAt).toBe(Number.MAX_SAFE_INTEGER);
    for (const createdAt of [0, -5, '1795000000000', 2n ** 60n, null, undefined]) {
      expect([createdAt, refusal(keyWith({ createdAt }))]).toEqual([createdAt, malformed('createdAt is not a positive integer')]);
    }
  });

  it('accepts only RSA-2048, 3072 and 4096 ciphertexts as the wrapped key', () => {
    for (const n of [256, 384, 512]) expect(decodeBlob(keyWith({ wrappedKey: Buffer.alloc(n) })).wrappedKey).toHaveLength(n);
    for (const n of [255, 257, 128, 0])
      expect(refusal(keyWith({ wrappedKey: Buffer.alloc(n) }))).toEqual(
        malformed(`wrappedKey is ${n} bytes, not an RSA-2048/3072/4096 ciphertext`),
      );
    expect(refusal(keyWith({ wrappedKey: 'AAAA' }))).toEqual(malformed('wrappedKey is not a byte string'));
  });

  it('refuses another algorithm, for every kind', () => {
    for (const b of [keyBlob, identityBlob, tlsBlob, v1Blob])
      expect(refusal(fieldsWith(b, { alg: 'RSAES_OAEP_SHA_1/A256GCM' }), true)).toEqual(malformed(`alg is not ${BLOB_ALG}`));
  });

  it.each<[string, SealedBlob, string[], unknown[]]>([
    [
      'kmsKeyArn',
      keyBlob,
      ['arn:aws-cn:kms:cn-north-1:111122223333:key/abc', 'arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/a-b'],
      [`x${ARN}`, `${ARN}/x`, `${ARN}!`, 'arn:aws:kms:us-east-1:11112222333:key/abc', 'arn:aws:s3:us-east-1:111122223333:key/abc', 17],
    ],
    ['keyId', keyBlob, ['a', 'A-z_0', 'k'.repeat(64)], ['', 'k'.repeat(65), '!k1', 'k1!', 'k 1', 123]],
    ['keyId', v1Blob, ['a', 'k'.repeat(64)], ['', 'k'.repeat(65), 'k 1']],
    [
      'address',
      keyBlob,
      ['0x70997970c51812dc3a010c7d01b50e0d17dc79c8'],
      [
        '70997970C51812dc3A010C7d01b50e0d17dc79C8',
        `x${keyBlob.address}`,
        `${keyBlob.address}0`,
        `${keyBlob.address}\n`,
        '0x70997970C51812dc3A010C7d01b50e0d17dc79C',
        42,
      ],
    ],
    ['address', v1Blob, ['0x70997970c51812dc3a010c7d01b50e0d17dc79c8'], ['0x1234', 42]],
    [
      'projectId',
      keyBlob,
      ['default', `p_${'a'.repeat(16)}`, `p_${'b'.repeat(43)}`],
      ['', 'Default', `p_${'a'.repeat(15)}`, `p_${'a'.repeat(44)}`, 'x_default', 3],
    ],
    [
      'publicKey',
      identityBlob,
      [`0x${'00'.repeat(32)}`, `0x${'f'.repeat(64)}`],
      [`0x${'AB'.repeat(32)}`, `0x${'ab'.repeat(31)}`, `0x${'ab'.repeat(33)}`, 'ab'.repeat(32), Buffer.alloc(32), 5],
    ],
    [
      'publicKey',
      tlsBlob,
      [`0x04${'00'.repeat(64)}`, `0x04${'f'.repeat(128)}`],
      [
        `0x04${'AB'.repeat(64)}`,
        `0x02${'ab'.repeat(64)}`,
        `0x03${'ab'.repeat(32)}`,
        `0x04${'ab'.repeat(63)}`,
        `0x04${'ab'.repeat(65)}`,
        `04${'ab'.repeat(64)}`,
        `x${TLS_POINT}`,
        `${TLS_POINT}0`,
        `${TLS_POINT}\n`,
        identityBlob.publicKey,
        Buffer.alloc(65, 4),
        5,
      ],
    ],
  ])('%s: accepts the well-formed and refuses the rest, anchored at both ends', (field, base, good, bad) => {
    for (const value of good)
      expect((decodeBlob(fieldsWith(base, { [field]: value }), { acceptV1: true }) as unknown as Record<string, unknown>)[field]).toBe(
        value,
      );
    for (const value of bad)
      expect([value, refusal(fieldsWith(base, { [field]: value }), true)]).toEqual([
        value,
        malformed(`${field} is missing or not well formed`),
      ]);
    expect(refusal(fieldsWith(base, { [field]: undefined }), true)).toEqual(malformed(`${field} is missing or not well formed`));
  });

  it('subject: null or 1-1024 bytes of text', () => {
    for (const subject of [null, 'a', 'é'.repeat(512), 'x'.repeat(1024), 'iss|sub'])
      expect((decodeBlob(keyWith({ subject })) as KeyBlob).subject).toBe(subject);
    for (const subject of ['', 'x'.repeat(1025), 'é'.repeat(513), 7, Buffer.from('a'), false]) {
      expect([subject, refusal(keyWith({ subject }))]).toEqual([subject, malformed('subject is not null or a string')]);
    }
  });

  it('refuses an iv or ciphertext of another length, or that is not bytes', () => {
    expect(refusal(keyWith({ iv: Buffer.alloc(16) }))).toEqual(malformed('iv is 16 bytes, expected 12'));
    expect(refusal(keyWith({ ciphertext: Buffer.alloc(32) }))).toEqual(malformed('ciphertext is 32 bytes, expected 48'));
    expect(refusal(keyWith({ ciphertext: 'x'.repeat(48) }))).toEqual(malformed('ciphertext is not a byte string'));
  });
});

describe('blob AAD: each kind binds its own fields', () => {
  const dek = Buffer.alloc(32, 9);
  /** Seals like the enclave (AES-256-GCM under blobAad) and opens with another header: true if it authenticates. */
  function opensAs(sealedAs: SealedBlob, openedAs: SealedBlob): boolean {
    const iv = Buffer.alloc(12, 4);
    const c = createCipheriv('aes-256-gcm', dek, iv).setAAD(blobAad(sealedAs));
    const ct = Buffer.concat([c.update(Buffer.alloc(32, 7)), c.final(), c.getAuthTag()]);
    const d = createDecipheriv('aes-256-gcm', dek, iv).setAAD(blobAad(openedAs));
    d.setAuthTag(ct.subarray(32));
    d.update(ct.subarray(0, 32));
    try {
      d.final();
      return true;
    } catch {
      return false;
    }
  }

  it('is the canonical CBOR of everything but createdAt and the sealed bytes', () => {
    expect(blobBinding(keyBlob)).toEqual({
      v: 2,
      kind: 'key',
      alg: BLOB_ALG,
      kmsKeyArn: ARN,
      keyId: 'k_1-A',
      address: keyBlob.address,
      projectId: 'default',
      subject: 'user@example.com',
    });
    expect(blobBinding(identityBlob)).toEqual({ v: 2, kind: 'identity', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey: identityBlob.publicKey });
    expect(blobBinding(tlsBlob)).toEqual({ v: 2, kind: 'tls', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey: TLS_POINT });
    expect(blobAad(tlsBlob)).toEqual(canonicalCbor({ v: 2, kind: 'tls', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey: TLS_POINT }));
    expect(encodeBlob(tlsBlob)).toEqual(canonicalCbor({ ...blobBinding(tlsBlob), ...sealed }));
    expect(blobBinding(v1Blob)).toEqual({ v: 1, alg: BLOB_ALG, kmsKeyArn: ARN, keyId: 'k_1-A', address: v1Blob.address });
    expect(blobAad(keyBlob)).toEqual(canonicalCbor(blobBinding(keyBlob)));
    // createdAt and the sealed bytes are not bound (they are what is sealed, or when).
    expect(
      blobAad({ ...keyBlob, createdAt: 1, iv: Buffer.alloc(12), wrappedKey: Buffer.alloc(256), ciphertext: Buffer.alloc(48) }),
    ).toEqual(blobAad(keyBlob));
  });

  it.each<[string, SealedBlob]>([
    ['another project', { ...keyBlob, projectId: 'p_0123456789abcdef' }],
    ['another subject', { ...keyBlob, subject: 'mallory' }],
    ['no subject', { ...keyBlob, subject: null }],
    ['another key id', { ...keyBlob, keyId: 'k2' }],
    ['another address', { ...keyBlob, address: '0x000000000000000000000000000000000000dEaD' }],
    ['another KMS key', { ...keyBlob, kmsKeyArn: ARN.replace('1111', '9999') }],
    ['the identity kind', { ...identityBlob }],
    ['the tls kind', { ...tlsBlob }],
    ['version 1', { ...v1Blob }],
  ])('a key blob re-homed to %s does not authenticate', (_what, moved) => {
    expect(opensAs(keyBlob, keyBlob)).toBe(true);
    expect(opensAs(keyBlob, moved)).toBe(false);
  });

  it('an identity blob opens only for its public key and kind; a version 1 blob only as version 1', () => {
    expect(opensAs(identityBlob, identityBlob)).toBe(true);
    expect(opensAs(identityBlob, { ...identityBlob, publicKey: `0x${'5b'.repeat(32)}` })).toBe(false);
    expect(opensAs(identityBlob, keyBlob)).toBe(false);
    expect(opensAs(identityBlob, { ...tlsBlob, publicKey: identityBlob.publicKey })).toBe(false);
    expect(opensAs(v1Blob, v1Blob)).toBe(true);
    expect(opensAs(v1Blob, { ...keyBlob, keyId: v1Blob.keyId, address: v1Blob.address })).toBe(false);
  });

  it('a tls blob opens only for its public key and kind: never as an identity or key blob', () => {
    expect(opensAs(tlsBlob, tlsBlob)).toBe(true);
    expect(opensAs(tlsBlob, { ...tlsBlob, publicKey: `0x04${'6b'.repeat(32)}${'4e'.repeat(32)}` })).toBe(false);
    expect(opensAs(tlsBlob, { ...tlsBlob, kmsKeyArn: ARN.replace('1111', '9999') })).toBe(false);
    expect(opensAs(tlsBlob, { ...identityBlob, publicKey: TLS_POINT })).toBe(false);
    expect(opensAs(tlsBlob, keyBlob)).toBe(false);
    expect(TLS_PUBLIC_KEY_RE.test(TLS_POINT)).toBe(true);
  });
});
