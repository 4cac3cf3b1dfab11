import { generateKeyPairSync } from 'node:crypto';
import { CmsError, openEnvelopedData, parseEnvelopedData } from '../src/cms';
import vectors from './fixtures/kms-cms-vectors.json';

describe('CMS EnvelopedData from real KMS', () => {
  it.each(vectors.vectors.map((v) => [v.name, v] as const))('extracts exactly the expected fields from %s', (_name, v) => {
    const parts = parseEnvelopedData(Buffer.from(v.cms_ber_hex, 'hex'));
    expect(parts.encryptedKey.toString('hex')).toBe(v.expect.encrypted_key_hex);
    expect(parts.iv.toString('hex')).toBe(v.expect.iv_hex);
    expect(parts.ciphertext.toString('hex')).toBe(v.expect.ciphertext_hex);
    expect(parts.recipientKeyId).toHaveLength(32);
  });

  it('reports that a vector does not open with a key that is not its recipient', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ber = Buffer.from((vectors.vectors[0] as { cms_ber_hex: string }).cms_ber_hex, 'hex');
    expect(() => openEnvelopedData(ber, privateKey)).toThrow(expect.objectContaining({ code: 'CMS_DECRYPT_FAILED' }));
  });
});

describe('CMS malformed input', () => {
  const good = Buffer.from((vectors.vectors[0] as { cms_ber_hex: string }).cms_ber_hex, 'hex');

  const cases: Array<[string, Buffer, string]> = [
    ['empty input', Buffer.alloc(0), 'CMS_MALFORMED'],
    ['garbage', Buffer.from('not asn.1 at all'), 'CMS_MALFORMED'],
    ['truncated BER', good.subarray(0, good.length - 40), 'CMS_MALFORMED'],
    // contentType 1.2.840.113549.1.7.1 (data) instead of envelopedData: last OID byte 03 -> 01
    ['wrong content type', Buffer.concat([good.subarray(0, 12), Buffer.from([0x01]), good.subarray(13)]), 'CMS_UNSUPPORTED'],
    // EnvelopedData version 2 -> 3
    ['wrong EnvelopedData version', Buffer.concat([good.subarray(0, 19), Buffer.from([0x03]), good.subarray(20)]), 'CMS_UNSUPPORTED'],
  ];

  it.each(cases)('%s gives a clear error', (_name, input, code) => {
    let err: unknown;
    try {
      parseEnvelopedData(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CmsError);
    expect((err as CmsError).code).toBe(code);
    expect((err as CmsError).message).toMatch(/^CMS: /);
  });

  it('refuses a non-AES-256-CBC content algorithm', () => {
    const hex = good.toString('hex').replace('060960864801650304012a', '0609608648016503040102'); // aes128-CBC
    expect(() => parseEnvelopedData(Buffer.from(hex, 'hex'))).toThrow(/is not AES-256-CBC/);
  });

  it('refuses OAEP with a hash other than SHA-256', () => {
    // The first sha256 OID (the OAEP hash) becomes sha384.
    const hex = good.toString('hex').replace('a00f300d06096086480165030402010500', 'a00f300d06096086480165030402020500');
    expect(() => parseEnvelopedData(Buffer.from(hex, 'hex'))).toThrow(/OAEP hash .* is not SHA-256/);
  });
});
