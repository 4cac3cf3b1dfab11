/**
 * Verification of a Nitro attestation document (docs/NITRO-KMS.md, "Attestation documents", which follows
 * aws-nitro-enclaves-nsm-api docs/attestation_process.md §3):
 *
 * 1. decode the COSE_Sign1 and the payload (document.ts);
 * 2. the chain [cabundle[0] .. cabundle[N-1], certificate] starts at a pinned root (byte-equal DER);
 * 3. each certificate is issued and signed by the one before it, is valid at the check time, marks no extension
 *    critical beyond basicConstraints and keyUsage (an unknown critical extension is refused, RFC 5280 4.2);
 *    CAs carry a critical basicConstraints with cA, a pathLen that admits the CAs below
 *    them and keyUsage keyCertSign; the leaf is not a CA, has digitalSignature and a P-384 key;
 * 4. the ES384 signature over Sig_structure verifies with the leaf key;
 * 5. PCR0 must be pinned (`expectedPcrs[0]`) unless the caller says `allowUnpinned`, and an all-zero PCR0 (an
 *    enclave in debug mode, whose memory the host can read) is refused unless the caller says `allowDebug`;
 * 6. optional checks: freshness (max age), nonce, user data, other PCR values.
 *
 * The check time (docs/SECURITY.md, "Verifying attestation documents") is the current time unless the caller asks
 * for the document's own time (`at: 'document'`, for evidence kept from the past: a birth or genesis document,
 * whose leaf certificate lives about 3 hours) or an explicit Date; the result says which (`checkedAt`).
 *
 * X.509 parsing uses @peculiar/asn1-x509; signatures use node:crypto.
 */
import { createHash, verify as cryptoVerify, X509Certificate, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { BasicConstraints, Certificate, id_ce_basicConstraints, id_ce_keyUsage, KeyUsage, KeyUsageFlags } from '@peculiar/asn1-x509';
import { AWS_NITRO_ROOT_G1_PEM } from './aws-root';
import { decodeCoseSign1, decodeAttestationPayload, sigStructure, type AttestationDocument } from './document';
import { AttestationError } from './errors';

/** When the certificates must be valid: the current time, the document's own timestamp, or an explicit time. */
export type CheckTime = 'now' | 'document' | Date;

/** The time the chain was checked at, and why that time: `explicit` is a Date the caller passed. */
export interface CheckedAt {
  time: Date;
  basis: 'now' | 'document' | 'explicit';
}

export interface VerifyOptions {
  /** Trust anchors as PEM or DER; default: the AWS Nitro root G1. */
  trustedRoots?: Array<string | Uint8Array>;
  /**
   * Time at which every certificate must be valid; default 'now'. 'document' (the document's own timestamp) is
   * for evidence kept from the past (birth and genesis documents), never for a document that should be fresh.
   */
  at?: CheckTime;
  /** The current time, for `at: 'now'` and freshness checks; default: the clock. */
  now?: Date;
  /**
   * Accept a document without checking PCR0 (`expectedPcrs[0]` absent). Without a pinned PCR0 a document proves
   * nothing about the code: the Nitro hypervisor signs documents for any image. For callers that check the PCRs
   * elsewhere (KMS key policies) or only need the nonce and user data of a document they just asked for.
   */
  allowUnpinned?: boolean;
  /** Accept an all-zero PCR0: an enclave in debug mode, whose memory and console the host can read. */
  allowDebug?: boolean;
  /** Refuse documents older than this (relative to `now`). */
  maxAgeMs?: number;
  /** Allowed clock skew for documents dated in the future (with maxAgeMs); default 60 s. */
  maxFutureSkewMs?: number;
  expectedNonce?: Uint8Array;
  expectedUserData?: Uint8Array;
  /** PCR index -> expected value (hex, case-insensitive, or bytes). */
  expectedPcrs?: Record<number, string | Uint8Array>;
  requirePublicKey?: boolean;
}

export interface VerifiedAttestation {
  document: AttestationDocument;
  /** Subjects from the root to the leaf. */
  chainSubjects: string[];
  /** SHA-256 of the root certificate DER (hex). */
  rootFingerprint: string;
  /** The time the certificates were checked at, and its basis. */
  checkedAt: CheckedAt;
  /** Whether PCR0 was checked against an expected value (false only with `allowUnpinned`). */
  pinned: boolean;
  /** Whether PCR0 is all zeros (debug mode; only with `allowDebug`). */
  debug: boolean;
}

interface ParsedCert {
  x509: X509Certificate;
  asn: Certificate;
  notBefore: Date;
  notAfter: Date;
}

function toDer(cert: string | Uint8Array): Buffer {
  return new X509Certificate(typeof cert === 'string' ? cert : Buffer.from(cert)).raw;
}

function parseCert(der: Buffer, what: string): ParsedCert {
  try {
    const asn = AsnConvert.parse(der, Certificate);
    const validity = asn.tbsCertificate.validity;
    return { x509: new X509Certificate(der), asn, notBefore: validity.notBefore.getTime(), notAfter: validity.notAfter.getTime() };
  } catch (err) {
    throw new AttestationError('MALFORMED', `attestation document: ${what} is not a valid X.509 certificate`, { cause: err });
  }
}

/** The extensions this verifier understands and enforces, the only ones a certificate may mark critical. */
const KNOWN_CRITICAL_EXTENSIONS: ReadonlyMap<string, string> = new Map([
  [id_ce_basicConstraints, 'basicConstraints'],
  [id_ce_keyUsage, 'keyUsage'],
]);

/**
 * RFC 5280 4.2: a critical extension the verifier does not process must be refused. (An extension that appears
 * twice is refused earlier: OpenSSL does not accept such a certificate as issued by anything, CHAIN_BROKEN.)
 */
function checkExtensions(cert: ParsedCert, name: string): void {
  for (const ext of cert.asn.tbsCertificate.extensions ?? []) {
    if (ext.critical && !KNOWN_CRITICAL_EXTENSIONS.has(ext.extnID)) {
      throw new AttestationError(
        'UNKNOWN_CRITICAL_EXTENSION',
        `${name} has an unknown critical extension ${ext.extnID} (only ${[...KNOWN_CRITICAL_EXTENSIONS.values()].join(' and ')} may be critical)`,
      );
    }
  }
}

function extension<T>(cert: ParsedCert, oid: string, type: new () => T): { value: T; critical: boolean } | undefined {
  const ext = cert.asn.tbsCertificate.extensions?.find((e) => e.extnID === oid);
  if (!ext) return undefined;
  return { value: AsnConvert.parse(ext.extnValue, type), critical: ext.critical };
}

function keyUsageFlags(cert: ParsedCert): number | undefined {
  const ku = extension(cert, id_ce_keyUsage, KeyUsage);
  return ku ? ku.value.toNumber() : undefined;
}

const fmt = (d: Date) => d.toISOString();

const BASIS_TEXT: Record<CheckedAt['basis'], string> = {
  now: 'the current time',
  document: "the document's own time",
  explicit: 'the time asked for',
};

function checkValidity(cert: ParsedCert, at: CheckedAt, name: string): void {
  const when = `checked at ${fmt(at.time)}, ${BASIS_TEXT[at.basis]}`;
  if (at.time < cert.notBefore) {
    throw new AttestationError('CERT_NOT_YET_VALID', `${name} is not valid before ${fmt(cert.notBefore)} (${when})`);
  }
  if (at.time > cert.notAfter) {
    const hint = at.basis === 'now' ? "; a document kept as evidence can be checked at its own time (at: 'document', --at document)" : '';
    throw new AttestationError('CERT_EXPIRED', `${name} expired at ${fmt(cert.notAfter)} (${when}${hint})`);
  }
}

/** The time to check the certificates at: options.at, 'now' by default. */
function checkTime(at: unknown, now: Date | undefined): (timestamp: number) => CheckedAt {
  if (at === undefined || at === 'now') {
    const time = now ?? new Date();
    return () => ({ time, basis: 'now' });
  }
  if (at === 'document') return (timestamp) => ({ time: new Date(timestamp), basis: 'document' });
  if (at instanceof Date && !Number.isNaN(at.getTime())) return () => ({ time: at, basis: 'explicit' });
  throw new TypeError(`verifyAttestation: options.at must be 'now', 'document' or a valid Date, not ${String(at)}`);
}

/** CA rules: basicConstraints cA, marked critical (RFC 5280 4.2.1.9), pathLen admitting the CAs below, keyUsage keyCertSign. */
function checkCa(cert: ParsedCert, casBelow: number, name: string): void {
  const bc = extension(cert, id_ce_basicConstraints, BasicConstraints);
  if (!bc || !bc.value.cA) throw new AttestationError('CERT_CONSTRAINTS', `${name} is not marked as a CA (basicConstraints)`);
  if (!bc.critical) throw new AttestationError('CERT_CONSTRAINTS', `${name} is a CA whose basicConstraints is not marked critical`);
  const pathLen = bc.value.pathLenConstraint;
  if (pathLen !== undefined && casBelow > pathLen) {
    throw new AttestationError('CERT_CONSTRAINTS', `${name} has pathLen ${pathLen} but ${casBelow} CA certificate(s) below it`);
  }
  const ku = keyUsageFlags(cert);
  if (ku === undefined || (ku & KeyUsageFlags.keyCertSign) === 0) {
    throw new AttestationError('CERT_CONSTRAINTS', `${name} lacks keyUsage keyCertSign`);
  }
}

function checkLeaf(cert: ParsedCert): KeyObject {
  const bc = extension(cert, id_ce_basicConstraints, BasicConstraints);
  if (bc?.value.cA) throw new AttestationError('CERT_CONSTRAINTS', 'the signing certificate is a CA certificate');
  const ku = keyUsageFlags(cert);
  if (ku === undefined || (ku & KeyUsageFlags.digitalSignature) === 0) {
    throw new AttestationError('CERT_CONSTRAINTS', 'the signing certificate lacks keyUsage digitalSignature');
  }
  const key = cert.x509.publicKey;
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'secp384r1') {
    throw new AttestationError('CERT_CONSTRAINTS', 'the signing certificate key is not ECDSA P-384');
  }
  return key;
}

function bytesOf(v: string | Uint8Array): Buffer {
  return typeof v === 'string' ? Buffer.from(v.replace(/^0x/i, ''), 'hex') : Buffer.from(v);
}

export function verifyAttestation(data: Uint8Array, options: VerifyOptions = {}): VerifiedAttestation {
  const timeFor = checkTime(options.at, options.now);
  const pinned = options.expectedPcrs?.[0] !== undefined;
  if (!pinned && options.allowUnpinned !== true) {
    throw new AttestationError(
      'PCR_REQUIRED',
      'PCR0 is required (expectedPcrs[0]: the PCR0 of an image you approve): the Nitro hypervisor signs documents for any image; pass allowUnpinned to check without it',
    );
  }
  const cose = decodeCoseSign1(data);
  const document = decodeAttestationPayload(cose.payload);

  // Chain: root first, leaf last.
  const chainDer = [...document.cabundle, document.certificate];
  const certs = chainDer.map((der, i) => parseCert(der, i === chainDer.length - 1 ? 'certificate' : `cabundle[${i}]`));
  const names = certs.map((c, i) =>
    i === certs.length - 1
      ? `the signing certificate (${c.x509.subject.replace(/\n/g, ', ')})`
      : `CA certificate ${i} (${c.x509.subject.replace(/\n/g, ', ')})`,
  );

  const roots = (options.trustedRoots ?? [AWS_NITRO_ROOT_G1_PEM]).map(toDer);
  const root = certs[0] as ParsedCert;
  if (!roots.some((r) => r.equals(root.x509.raw))) {
    throw new AttestationError('UNTRUSTED_ROOT', `the chain does not start at a trusted root (its root is ${names[0]})`);
  }

  const at = timeFor(document.timestamp);
  for (let i = 0; i < certs.length; i++) {
    const cert = certs[i] as ParsedCert;
    const name = names[i] as string;
    if (i > 0) {
      const issuer = certs[i - 1] as ParsedCert;
      if (!cert.x509.checkIssued(issuer.x509)) {
        throw new AttestationError('CHAIN_BROKEN', `${name} was not issued by ${names[i - 1]}`);
      }
      if (!cert.x509.verify(issuer.x509.publicKey)) {
        throw new AttestationError('CHAIN_BROKEN', `${name} has a signature that does not verify with its issuer's key`);
      }
    }
    checkValidity(cert, at, name);
    checkExtensions(cert, name);
    if (i < certs.length - 1) checkCa(cert, certs.length - 2 - i, name);
  }
  const leafKey = checkLeaf(certs[certs.length - 1] as ParsedCert);

  if (!cryptoVerify('sha384', sigStructure(cose), { key: leafKey, dsaEncoding: 'ieee-p1363' }, cose.signature)) {
    throw new AttestationError('BAD_SIGNATURE', 'attestation document: the COSE signature does not verify with the signing certificate');
  }

  const pcr0 = document.pcrs.get(0);
  const debug = pcr0 !== undefined && pcr0.every((b) => b === 0);
  if (debug && options.allowDebug !== true) {
    throw new AttestationError(
      'DEBUG_MODE',
      'attestation document: PCR0 is all zeros, an enclave in debug mode (the host can read its memory); pass allowDebug to accept it',
    );
  }
  if (options.maxAgeMs !== undefined) {
    const now = (options.now ?? new Date()).getTime();
    const age = now - document.timestamp;
    if (age > options.maxAgeMs) {
      throw new AttestationError(
        'STALE',
        `attestation document is ${Math.round(age / 1000)} s old; at most ${Math.round(options.maxAgeMs / 1000)} s allowed`,
      );
    }
    if (-age > (options.maxFutureSkewMs ?? 60_000)) {
      throw new AttestationError('FROM_THE_FUTURE', `attestation document is dated ${Math.round(-age / 1000)} s in the future`);
    }
  }
  if (options.expectedNonce && !(document.nonce && document.nonce.equals(Buffer.from(options.expectedNonce)))) {
    throw new AttestationError('NONCE_MISMATCH', 'attestation document: nonce does not match the expected one');
  }
  if (options.expectedUserData && !(document.userData && document.userData.equals(Buffer.from(options.expectedUserData)))) {
    throw new AttestationError('USER_DATA_MISMATCH', 'attestation document: user_data does not match the expected value');
  }
  for (const [index, expected] of Object.entries(options.expectedPcrs ?? {})) {
    const actual = document.pcrs.get(Number(index));
    if (!actual || !actual.equals(bytesOf(expected))) {
      throw new AttestationError(
        'PCR_MISMATCH',
        `attestation document: PCR${index} is ${actual ? actual.toString('hex') : 'absent'}, expected ${bytesOf(expected).toString('hex')}`,
      );
    }
  }
  if (options.requirePublicKey && !document.publicKey) {
    throw new AttestationError('MISSING_PUBLIC_KEY', 'attestation document: public_key is absent');
  }

  return {
    document,
    chainSubjects: certs.map((c) => c.x509.subject.replace(/\n/g, ', ')),
    rootFingerprint: createHash('sha256').update(root.x509.raw).digest('hex'),
    checkedAt: at,
    pinned,
    debug,
  };
}
