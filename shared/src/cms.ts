/**
 * CMS EnvelopedData as AWS KMS returns it in `CiphertextForRecipient` (docs/NITRO-KMS.md,
 * "CiphertextForRecipient"): a BER ContentInfo (indefinite lengths) holding one KeyTransRecipientInfo
 * (RSAES-OAEP, SHA-256, MGF1-SHA-256, empty label) and AES-256-CBC content whose ciphertext is either primitive
 * or chunked.
 *
 * Parsing uses @peculiar/asn1-cms; decryption uses node:crypto. Every malformed or unexpected input throws a
 * CmsError naming what was wrong; nothing here ever reports plaintext.
 */
import { createDecipheriv, privateDecrypt, constants, type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { ContentInfo, EnvelopedData, id_envelopedData, id_data } from '@peculiar/asn1-cms';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import { RsaEsOaepParams, id_RSAES_OAEP, id_mgf1, id_sha256, id_pSpecified } from '@peculiar/asn1-rsa';

export const OID_AES256_CBC = '2.16.840.1.101.3.4.1.42';

export type CmsErrorCode = 'CMS_MALFORMED' | 'CMS_UNSUPPORTED' | 'CMS_DECRYPT_FAILED';

export class CmsError extends Error {
  override readonly name = 'CmsError';
  constructor(
    readonly code: CmsErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface EnvelopedParts {
  /** The recipient's subjectKeyIdentifier (KMS sends 32 bytes; decryptors ignore it). */
  recipientKeyId: Buffer;
  /** RSA-OAEP-encrypted content-encryption key. */
  encryptedKey: Buffer;
  iv: Buffer;
  /** AES-256-CBC ciphertext with the chunks of a constructed encoding joined. */
  ciphertext: Buffer;
}

const DEFAULT_P_SOURCE_PARAMS = Buffer.from(new RsaEsOaepParams().pSourceAlgorithm.parameters ?? new ArrayBuffer(0));

const malformed = (what: string, cause?: unknown) => new CmsError('CMS_MALFORMED', `CMS: ${what}`, { cause });
const unsupported = (what: string) => new CmsError('CMS_UNSUPPORTED', `CMS: ${what}`);

function parseAs<T>(data: ArrayBuffer | ArrayBufferView, type: new () => T, what: string): T {
  try {
    return AsnConvert.parse(data, type);
  } catch (err) {
    throw malformed(`${what} is not valid BER`, err);
  }
}

/** Checks the OAEP parameters are SHA-256 / MGF1-SHA-256 / empty label, the only ones KMS uses. */
function checkOaepParams(parameters: ArrayBuffer | null | undefined): void {
  if (!parameters) throw unsupported('RSAES-OAEP without parameters means SHA-1; only SHA-256 is accepted');
  const p = parseAs(parameters, RsaEsOaepParams, 'RSAES-OAEP parameters');
  if (p.hashAlgorithm.algorithm !== id_sha256) throw unsupported(`OAEP hash ${p.hashAlgorithm.algorithm} is not SHA-256`);
  if (p.maskGenAlgorithm.algorithm !== id_mgf1) throw unsupported(`OAEP mask generation ${p.maskGenAlgorithm.algorithm} is not MGF1`);
  const mgfParams = p.maskGenAlgorithm.parameters;
  if (!mgfParams) throw unsupported('MGF1 without a hash');
  if (parseAs(mgfParams, AlgorithmIdentifier, 'MGF1 hash').algorithm !== id_sha256) throw unsupported('MGF1 hash is not SHA-256');
  const label = p.pSourceAlgorithm;
  if (label.algorithm !== id_pSpecified) throw unsupported('OAEP label source is not pSpecified');
  // An absent pSourceAlgorithm (KMS leaves it out) decodes to the library's default object, whose parameters
  // are not an empty string; that default means the empty label.
  if (label.parameters && !Buffer.from(label.parameters).equals(DEFAULT_P_SOURCE_PARAMS)) {
    const l = parseAs(label.parameters, OctetString, 'OAEP label');
    if (l.byteLength !== 0) throw unsupported('OAEP label is not empty');
  }
}

export function parseEnvelopedData(ber: Uint8Array): EnvelopedParts {
  if (ber.length === 0) throw malformed('empty input');
  const ci = parseAs(ber, ContentInfo, 'ContentInfo');
  if (ci.contentType !== id_envelopedData) throw unsupported(`content type ${ci.contentType} is not envelopedData`);
  const ed = parseAs(ci.content, EnvelopedData, 'EnvelopedData');
  if (ed.version !== 2) throw unsupported(`EnvelopedData version ${ed.version} is not 2`);
  if (ed.recipientInfos.length !== 1) throw unsupported(`expected exactly one recipient, found ${ed.recipientInfos.length}`);
  const ktri = ed.recipientInfos[0]?.ktri;
  if (!ktri) throw unsupported('the recipient is not a KeyTransRecipientInfo');
  if (ktri.version !== 2) throw unsupported(`KeyTransRecipientInfo version ${ktri.version} is not 2`);
  const ski = ktri.rid.subjectKeyIdentifier;
  if (!ski) throw unsupported('the recipient is not identified by subjectKeyIdentifier');
  if (ktri.keyEncryptionAlgorithm.algorithm !== id_RSAES_OAEP) {
    throw unsupported(`key encryption ${ktri.keyEncryptionAlgorithm.algorithm} is not RSAES-OAEP`);
  }
  checkOaepParams(ktri.keyEncryptionAlgorithm.parameters);

  const eci = ed.encryptedContentInfo;
  if (eci.contentType !== id_data) throw unsupported(`encrypted content type ${eci.contentType} is not id-data`);
  const alg = eci.contentEncryptionAlgorithm;
  if (alg.algorithm !== OID_AES256_CBC) throw unsupported(`content encryption ${alg.algorithm} is not AES-256-CBC`);
  if (!alg.parameters) throw malformed('AES-256-CBC without an IV');
  const iv = Buffer.from(parseAs(alg.parameters, OctetString, 'AES-CBC IV').buffer);
  if (iv.length !== 16) throw malformed(`AES-CBC IV is ${iv.length} bytes, expected 16`);

  const content = eci.encryptedContent;
  if (!content) throw malformed('no encrypted content');
  const parts = content.value ? [content.value] : (content.constructedValue ?? []);
  const ciphertext = Buffer.concat(parts.map((p) => Buffer.from(p.buffer)));
  if (ciphertext.length === 0 || ciphertext.length % 16 !== 0) {
    throw malformed(`encrypted content is ${ciphertext.length} bytes, not a positive multiple of the AES block`);
  }
  return { recipientKeyId: Buffer.from(ski.buffer), encryptedKey: Buffer.from(ktri.encryptedKey.buffer), iv, ciphertext };
}

/** Opens KMS's CiphertextForRecipient with the recipient's RSA private key. */
export function openEnvelopedData(ber: Uint8Array, privateKey: KeyObject): Buffer {
  const parts = parseEnvelopedData(ber);
  let cek: Buffer;
  try {
    cek = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, parts.encryptedKey);
  } catch (err) {
    throw new CmsError('CMS_DECRYPT_FAILED', 'CMS: the content key does not unwrap with this recipient key', { cause: err });
  }
  try {
    if (cek.length !== 32) throw new Error('bad key length');
    const decipher = createDecipheriv('aes-256-cbc', cek, parts.iv);
    return Buffer.concat([decipher.update(parts.ciphertext), decipher.final()]);
  } catch (err) {
    throw new CmsError('CMS_DECRYPT_FAILED', 'CMS: the content does not decrypt (wrong key or bad padding)', { cause: err });
  } finally {
    cek.fill(0);
  }
}
