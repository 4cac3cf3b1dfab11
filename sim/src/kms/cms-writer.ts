/**
 * Builds `CiphertextForRecipient` exactly as AWS KMS does (docs/NITRO-KMS.md, "CiphertextForRecipient"): a BER
 * ContentInfo with indefinite lengths on the same nodes as real KMS output, one KeyTransRecipientInfo (version 2,
 * 32-byte subjectKeyIdentifier, RSAES-OAEP with SHA-256 and MGF1-SHA-256), AES-256-CBC content carried as a
 * constructed [0] holding one OCTET STRING. asn1js writes the BER; node:crypto does the cryptography.
 */
import { constants, createCipheriv, createHash, publicEncrypt, randomBytes, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';

const OID = {
  envelopedData: '1.2.840.113549.1.7.3',
  data: '1.2.840.113549.1.7.1',
  rsaesOaep: '1.2.840.113549.1.1.7',
  mgf1: '1.2.840.113549.1.1.8',
  sha256: '2.16.840.1.101.3.4.2.1',
  aes256cbc: '2.16.840.1.101.3.4.1.42',
};

const indefinite = { isIndefiniteForm: true };
const ctx = (tagNumber: number) => ({ tagClass: 3, tagNumber });
const sha256AlgId = () => new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: OID.sha256 }), new asn1js.Null()] });

/**
 * Forgeries for tests that stand where a compromised parent would (KMS itself never does these): a content
 * key of another length, a chosen IV, and content encrypted without PKCS#7 padding (the plaintext then
 * carries whatever "padding" the test wants, and must be a whole number of blocks).
 */
export interface ForgeryOptions {
  contentKey?: Uint8Array;
  iv?: Uint8Array;
  pad?: boolean;
}

export function buildEnvelopedData(plaintext: Uint8Array, recipientPublicKey: KeyObject, forgery: ForgeryOptions = {}): Buffer {
  if (recipientPublicKey.asymmetricKeyType !== 'rsa') throw new Error('the recipient key is not an RSA key');
  const spki = recipientPublicKey.export({ type: 'spki', format: 'der' });
  const ski = createHash('sha256').update(spki).digest();

  const cek = Buffer.from(forgery.contentKey ?? randomBytes(32));
  const iv = Buffer.from(forgery.iv ?? randomBytes(16));
  // A content key that is not an AES-256 key, or an IV that is not 16 bytes, can encrypt nothing: the content
  // is then random bytes.
  const cipher = cek.length === 32 && iv.length === 16 ? createCipheriv('aes-256-cbc', cek, iv).setAutoPadding(forgery.pad ?? true) : null;
  const ciphertext = cipher
    ? Buffer.concat([cipher.update(plaintext), cipher.final()])
    : randomBytes(plaintext.length + 16 - (plaintext.length % 16));
  const encryptedKey = publicEncrypt({ key: recipientPublicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cek);
  cek.fill(0);

  const keyTransRecipientInfo = new asn1js.Sequence({
    value: [
      new asn1js.Integer({ value: 2 }),
      new asn1js.Primitive({ idBlock: ctx(0), valueHex: ski }),
      new asn1js.Sequence({
        value: [
          new asn1js.ObjectIdentifier({ value: OID.rsaesOaep }),
          new asn1js.Sequence({
            value: [
              new asn1js.Constructed({ idBlock: ctx(0), value: [sha256AlgId()] }),
              new asn1js.Constructed({
                idBlock: ctx(1),
                value: [new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: OID.mgf1 }), sha256AlgId()] })],
              }),
            ],
          }),
        ],
      }),
      new asn1js.OctetString({ valueHex: encryptedKey }),
    ],
  });

  const encryptedContentInfo = new asn1js.Sequence({
    lenBlock: indefinite,
    value: [
      new asn1js.ObjectIdentifier({ value: OID.data }),
      new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: OID.aes256cbc }), new asn1js.OctetString({ valueHex: iv })] }),
      new asn1js.Constructed({ idBlock: ctx(0), lenBlock: indefinite, value: [new asn1js.OctetString({ valueHex: ciphertext })] }),
    ],
  });

  const contentInfo = new asn1js.Sequence({
    lenBlock: indefinite,
    value: [
      new asn1js.ObjectIdentifier({ value: OID.envelopedData }),
      new asn1js.Constructed({
        idBlock: ctx(0),
        lenBlock: indefinite,
        value: [
          new asn1js.Sequence({
            lenBlock: indefinite,
            value: [new asn1js.Integer({ value: 2 }), new asn1js.Set({ value: [keyTransRecipientInfo] }), encryptedContentInfo],
          }),
        ],
      }),
    ],
  });
  return Buffer.from(contentInfo.toBER(false));
}
