/**
 * Every structural check of the CMS parser (cms.ts), one variant of KMS's CiphertextForRecipient per check,
 * built with asn1js like the KMS emulator's writer (sim/src/kms/cms-writer.ts) but with each field adjustable.
 * Written for mutation testing (npm run test:mutation): cms.test.ts checks real KMS vectors and a few broken
 * inputs; here each refusal is pinned by its code and message, and each accepted variant (primitive or chunked
 * content, an explicit empty OAEP label) by what it yields.
 */
import crypto, { constants, createCipheriv, createHash, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import * as asn1js from 'asn1js';
import { CmsError, openEnvelopedData, parseEnvelopedData } from '../src/cms';

const OID = {
  envelopedData: '1.2.840.113549.1.7.3',
  data: '1.2.840.113549.1.7.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  rsaesOaep: '1.2.840.113549.1.1.7',
  mgf1: '1.2.840.113549.1.1.8',
  pSpecified: '1.2.840.113549.1.1.9',
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  aes128cbc: '2.16.840.1.101.3.4.1.2',
  aes256cbc: '2.16.840.1.101.3.4.1.42',
  aes256wrap: '2.16.840.1.101.3.4.1.45',
};

const recipient = generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = generateKeyPairSync('rsa', { modulusLength: 2048 });

type Node = asn1js.AsnType;
const indefinite = { isIndefiniteForm: true };
const ctx = (tagNumber: number) => ({ tagClass: 3, tagNumber });
const oid = (value: string) => new asn1js.ObjectIdentifier({ value });
const seq = (...value: Node[]) => new asn1js.Sequence({ value });
const octets = (b: Uint8Array) => new asn1js.OctetString({ valueHex: b });
const explicit = (n: number, inner: Node) => new asn1js.Constructed({ idBlock: ctx(n), value: [inner] });
const algId = (o: string, params?: Node) => (params ? seq(oid(o), params) : seq(oid(o)));

interface Variant {
  contentType?: string;
  version?: number;
  /** The RecipientInfos, by default one KeyTransRecipientInfo. */
  recipients?: (ktri: Node) => Node[];
  ktriVersion?: number;
  /** Identify the recipient by issuer and serial number instead of subjectKeyIdentifier. */
  issuerAndSerial?: boolean;
  keyEncryption?: string;
  /** RSAES-OAEP parameters: the default is KMS's; null leaves them out. */
  oaepParams?: Node | null;
  encryptedContentType?: string;
  contentAlgorithm?: string;
  /** The IV parameter node: by default an OCTET STRING of `iv`; null leaves it out. */
  ivParam?: Node | null;
  /** The [0] encryptedContent: 'chunked' (KMS's form, here in two chunks), 'primitive', or absent. */
  content?: 'constructed' | 'chunked' | 'primitive' | 'absent';
  /** Replaces the AES-CBC ciphertext. */
  ciphertext?: Buffer;
  /** Content key length (32 for AES-256). */
  cekBytes?: number;
  /** AES-CBC with PKCS#7 padding (default) or none (the plaintext is then whole blocks). */
  pad?: boolean;
}

const sha256Id = () => algId(OID.sha256, new asn1js.Null());
const kmsOaepParams = () => seq(explicit(0, sha256Id()), explicit(1, algId(OID.mgf1, sha256Id())));

/** Builds CMS EnvelopedData for `plaintext` to the recipient key, as KMS does unless `v` says otherwise. */
function build(plaintext: Uint8Array, v: Variant = {}): Buffer {
  const spki = recipient.publicKey.export({ type: 'spki', format: 'der' });
  const cek = randomBytes(v.cekBytes ?? 32);
  const iv = randomBytes(16);
  const cipher = cek.length === 32 ? createCipheriv('aes-256-cbc', cek, iv).setAutoPadding(v.pad ?? true) : null;
  const ciphertext = v.ciphertext ?? (cipher ? Buffer.concat([cipher.update(plaintext), cipher.final()]) : randomBytes(48));
  const encryptedKey = publicEncrypt({ key: recipient.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cek);

  const rid = v.issuerAndSerial
    ? seq(seq(), new asn1js.Integer({ value: 1 }))
    : new asn1js.Primitive({ idBlock: ctx(0), valueHex: createHash('sha256').update(spki).digest() });
  const oaepParams = v.oaepParams === undefined ? kmsOaepParams() : v.oaepParams;
  const ktri = seq(
    new asn1js.Integer({ value: v.ktriVersion ?? 2 }),
    rid,
    oaepParams ? algId(v.keyEncryption ?? OID.rsaesOaep, oaepParams) : algId(v.keyEncryption ?? OID.rsaesOaep),
    octets(encryptedKey),
  );
  const ivParam = v.ivParam === undefined ? octets(iv) : v.ivParam;
  const half = Math.floor(ciphertext.length / 32) * 16;
  const content = {
    constructed: () => [new asn1js.Constructed({ idBlock: ctx(0), lenBlock: indefinite, value: [octets(ciphertext)] })],
    chunked: () => [
      new asn1js.Constructed({
        idBlock: ctx(0),
        lenBlock: indefinite,
        value: [octets(ciphertext.subarray(0, half)), octets(ciphertext.subarray(half))],
      }),
    ],
    primitive: () => [new asn1js.Primitive({ idBlock: ctx(0), valueHex: ciphertext })],
    absent: () => [],
  }[v.content ?? 'constructed']();
  const eci = new asn1js.Sequence({
    lenBlock: indefinite,
    value: [
      oid(v.encryptedContentType ?? OID.data),
      ivParam ? algId(v.contentAlgorithm ?? OID.aes256cbc, ivParam) : algId(v.contentAlgorithm ?? OID.aes256cbc),
      ...content,
    ],
  });
  const recipients = v.recipients ? v.recipients(ktri) : [ktri];
  const ed = new asn1js.Sequence({
    lenBlock: indefinite,
    value: [new asn1js.Integer({ value: v.version ?? 2 }), new asn1js.Set({ value: recipients }), eci],
  });
  const ci = new asn1js.Sequence({
    lenBlock: indefinite,
    value: [oid(v.contentType ?? OID.envelopedData), new asn1js.Constructed({ idBlock: ctx(0), lenBlock: indefinite, value: [ed] })],
  });
  return Buffer.from(ci.toBER(false));
}

function refusal(ber: Uint8Array): { code: string; message: string } | 'accepted' {
  try {
    parseEnvelopedData(ber);
    return 'accepted';
  } catch (err) {
    expect(err).toBeInstanceOf(CmsError);
    expect((err as CmsError).name).toBe('CmsError');
    return { code: (err as CmsError).code, message: (err as CmsError).message };
  }
}

const dek = randomBytes(32);
const kek = () =>
  new asn1js.Constructed({
    idBlock: ctx(2),
    value: [new asn1js.Integer({ value: 4 }), seq(octets(Buffer.from('kek-1'))), algId(OID.aes256wrap), octets(randomBytes(40))],
  });
const pSource = (o: string, value: Node) => explicit(2, seq(oid(o), value));

describe('CMS parser: accepted forms', () => {
  it.each<[string, Variant]>([
    ['KMS form (one chunk)', {}],
    ['content in two chunks', { content: 'chunked' }],
    ['primitive content', { content: 'primitive' }],
    [
      'an explicit empty OAEP label',
      {
        oaepParams: seq(
          explicit(0, sha256Id()),
          explicit(1, algId(OID.mgf1, sha256Id())),
          pSource(OID.pSpecified, octets(new Uint8Array(0))),
        ),
      },
    ],
  ])('%s opens to the plaintext', (_what, v) => {
    const ber = build(dek, v);
    const parts = parseEnvelopedData(ber);
    expect([parts.iv.length, parts.ciphertext.length, parts.encryptedKey.length, parts.recipientKeyId.length]).toEqual([16, 48, 256, 32]);
    expect(openEnvelopedData(ber, recipient.privateKey)).toEqual(dek);
  });
});

describe('CMS parser: each refusal, with its code and message', () => {
  const unsupported = (message: string) => ({ code: 'CMS_UNSUPPORTED', message: `CMS: ${message}` });
  const malformed = (message: string) => ({ code: 'CMS_MALFORMED', message: `CMS: ${message}` });

  it.each<[string, () => Uint8Array, { code: string; message: string }]>([
    ['empty input', () => new Uint8Array(0), malformed('empty input')],
    ['bytes that are not BER', () => Buffer.from('not asn.1 at all'), malformed('ContentInfo is not valid BER')],
    ['another content type', () => build(dek, { contentType: OID.data }), unsupported(`content type ${OID.data} is not envelopedData`)],
    ['EnvelopedData version 0', () => build(dek, { version: 0 }), unsupported('EnvelopedData version 0 is not 2')],
    ['no recipient', () => build(dek, { recipients: () => [] }), unsupported('expected exactly one recipient, found 0')],
    ['two recipients', () => build(dek, { recipients: (k) => [k, k] }), unsupported('expected exactly one recipient, found 2')],
    ['a KEK recipient', () => build(dek, { recipients: () => [kek()] }), unsupported('the recipient is not a KeyTransRecipientInfo')],
    ['KeyTransRecipientInfo version 0', () => build(dek, { ktriVersion: 0 }), unsupported('KeyTransRecipientInfo version 0 is not 2')],
    [
      'a recipient named by issuer and serial',
      () => build(dek, { issuerAndSerial: true }),
      unsupported('the recipient is not identified by subjectKeyIdentifier'),
    ],
    [
      'RSA PKCS#1 v1.5 key transport',
      () => build(dek, { keyEncryption: OID.rsaEncryption }),
      unsupported(`key encryption ${OID.rsaEncryption} is not RSAES-OAEP`),
    ],
    [
      'OAEP without parameters (SHA-1)',
      () => build(dek, { oaepParams: null }),
      unsupported('RSAES-OAEP without parameters means SHA-1; only SHA-256 is accepted'),
    ],
    [
      'OAEP parameters that are not a SEQUENCE',
      () => build(dek, { oaepParams: new asn1js.Integer({ value: 7 }) }),
      malformed('RSAES-OAEP parameters is not valid BER'),
    ],
    [
      'OAEP with the default hash (SHA-1)',
      () => build(dek, { oaepParams: seq(explicit(1, algId(OID.mgf1, sha256Id()))) }),
      unsupported(`OAEP hash ${OID.sha1} is not SHA-256`),
    ],
    [
      'OAEP with SHA-384',
      () => build(dek, { oaepParams: seq(explicit(0, algId(OID.sha384)), explicit(1, algId(OID.mgf1, sha256Id()))) }),
      unsupported(`OAEP hash ${OID.sha384} is not SHA-256`),
    ],
    [
      'a mask generation other than MGF1',
      () => build(dek, { oaepParams: seq(explicit(0, sha256Id()), explicit(1, algId(OID.sha256, sha256Id()))) }),
      unsupported(`OAEP mask generation ${OID.sha256} is not MGF1`),
    ],
    [
      'MGF1 without its hash',
      () => build(dek, { oaepParams: seq(explicit(0, sha256Id()), explicit(1, algId(OID.mgf1))) }),
      unsupported('MGF1 without a hash'),
    ],
    [
      'MGF1 with a hash that is not an AlgorithmIdentifier',
      () => build(dek, { oaepParams: seq(explicit(0, sha256Id()), explicit(1, algId(OID.mgf1, new asn1js.Integer({ value: 1 })))) }),
      malformed('MGF1 hash is not valid BER'),
    ],
    [
      'MGF1 with SHA-1',
      () => build(dek, { oaepParams: seq(explicit(0, sha256Id()), explicit(1, algId(OID.mgf1, algId(OID.sha1)))) }),
      unsupported('MGF1 hash is not SHA-256'),
    ],
    [
      'an OAEP label source other than pSpecified',
      () =>
        build(dek, {
          oaepParams: seq(
            explicit(0, sha256Id()),
            explicit(1, algId(OID.mgf1, sha256Id())),
            pSource(OID.sha256, octets(new Uint8Array(0))),
          ),
        }),
      unsupported('OAEP label source is not pSpecified'),
    ],
    [
      'a non-empty OAEP label',
      () =>
        build(dek, {
          oaepParams: seq(
            explicit(0, sha256Id()),
            explicit(1, algId(OID.mgf1, sha256Id())),
            pSource(OID.pSpecified, octets(Buffer.from('label'))),
          ),
        }),
      unsupported('OAEP label is not empty'),
    ],
    [
      'an OAEP label that is not an OCTET STRING',
      () =>
        build(dek, {
          oaepParams: seq(
            explicit(0, sha256Id()),
            explicit(1, algId(OID.mgf1, sha256Id())),
            pSource(OID.pSpecified, new asn1js.Integer({ value: 5 })),
          ),
        }),
      malformed('OAEP label is not valid BER'),
    ],
    [
      'encrypted content that is not id-data',
      () => build(dek, { encryptedContentType: OID.envelopedData }),
      unsupported(`encrypted content type ${OID.envelopedData} is not id-data`),
    ],
    [
      'AES-128-CBC content',
      () => build(dek, { contentAlgorithm: OID.aes128cbc }),
      unsupported(`content encryption ${OID.aes128cbc} is not AES-256-CBC`),
    ],
    ['AES-256-CBC without an IV', () => build(dek, { ivParam: null }), malformed('AES-256-CBC without an IV')],
    [
      'an IV that is not an OCTET STRING',
      () => build(dek, { ivParam: new asn1js.Integer({ value: 16 }) }),
      malformed('AES-CBC IV is not valid BER'),
    ],
    ['a 12-byte IV', () => build(dek, { ivParam: octets(randomBytes(12)) }), malformed('AES-CBC IV is 12 bytes, expected 16')],
    ['a 17-byte IV', () => build(dek, { ivParam: octets(randomBytes(17)) }), malformed('AES-CBC IV is 17 bytes, expected 16')],
    ['no encrypted content', () => build(dek, { content: 'absent' }), malformed('no encrypted content')],
    [
      'empty encrypted content',
      () => build(dek, { ciphertext: Buffer.alloc(0), content: 'primitive' }),
      malformed('encrypted content is 0 bytes, not a positive multiple of the AES block'),
    ],
    [
      'content of 47 bytes',
      () => build(dek, { ciphertext: randomBytes(47) }),
      malformed('encrypted content is 47 bytes, not a positive multiple of the AES block'),
    ],
    [
      'content of 8 bytes',
      () => build(dek, { ciphertext: randomBytes(8), content: 'primitive' }),
      malformed('encrypted content is 8 bytes, not a positive multiple of the AES block'),
    ],
  ])('%s', (_what, input, expected) => {
    expect(refusal(input())).toEqual(expected);
  });
});

describe('CMS opening', () => {
  it('says which step failed: the content key, or the content', () => {
    const genuine = build(dek);
    expect(() => openEnvelopedData(genuine, other.privateKey)).toThrow(
      expect.objectContaining({ code: 'CMS_DECRYPT_FAILED', message: 'CMS: the content key does not unwrap with this recipient key' }),
    );
    // Compared by code and message: the error keeps what failed underneath as its cause.
    const contentFailure = expect.objectContaining({
      code: 'CMS_DECRYPT_FAILED',
      message: 'CMS: the content does not decrypt (wrong key or bad padding)',
    });
    // A whole block of plaintext without padding: the last byte (0) is not valid PKCS#7.
    expect(() => openEnvelopedData(build(Buffer.alloc(48), { pad: false }), recipient.privateKey)).toThrow(contentFailure);
    // A 16-byte content key is no AES-256 key.
    expect(() => openEnvelopedData(build(dek, { cekBytes: 16 }), recipient.privateKey)).toThrow(contentFailure);
    expect(() => openEnvelopedData(build(dek, { cekBytes: 16 }), recipient.privateKey)).toThrow(
      expect.objectContaining({ cause: expect.objectContaining({ message: 'bad key length' }) }),
    );
    for (const ber of [build(Buffer.alloc(48), { pad: false }), build(dek, { cekBytes: 16 })]) {
      expect(() => openEnvelopedData(ber, recipient.privateKey)).toThrow(expect.objectContaining({ code: 'CMS_DECRYPT_FAILED' }));
    }
  });

  it('keeps what failed underneath (the BER parser, OpenSSL) as the cause, out of the message', () => {
    const causeOf = (fn: () => unknown): unknown => {
      try {
        fn();
      } catch (err) {
        expect(err).toBeInstanceOf(CmsError);
        return (err as CmsError).cause;
      }
      throw new Error('did not throw');
    };
    const message = (cause: unknown) =>
      typeof cause === 'object' && cause !== null ? (cause as { message?: unknown }).message : undefined;
    for (const [what, fn] of [
      ['not BER', () => parseEnvelopedData(Buffer.from('not asn.1 at all'))],
      ['another recipient key', () => openEnvelopedData(build(dek), other.privateKey)],
      ['bad padding', () => openEnvelopedData(build(Buffer.alloc(48), { pad: false }), recipient.privateKey)],
    ] as const) {
      const cause = causeOf(fn);
      expect([what, typeof message(cause), message(cause)]).toEqual([what, 'string', expect.not.stringMatching(/^CMS: /)]);
    }
    expect(causeOf(() => parseEnvelopedData(new Uint8Array(0)))).toBeUndefined(); // nothing underneath
  });

  it('wipes the content key after use, whether or not the content decrypts', () => {
    const privateDecrypt = crypto.privateDecrypt;
    const keys: Buffer[] = [];
    const spy = jest.spyOn(crypto, 'privateDecrypt').mockImplementation((...args: Parameters<typeof privateDecrypt>) => {
      const out = privateDecrypt(...args);
      keys.push(out);
      return out;
    });
    try {
      expect(openEnvelopedData(build(dek), recipient.privateKey)).toEqual(dek);
      expect(() => openEnvelopedData(build(Buffer.alloc(48), { pad: false }), recipient.privateKey)).toThrow(CmsError);
      expect(keys.map((k) => k.length)).toEqual([32, 32]);
      for (const k of keys) expect(k.every((b) => b === 0)).toBe(true);
    } finally {
      spy.mockRestore();
    }
  });
});
