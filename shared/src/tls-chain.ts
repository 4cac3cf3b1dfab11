/**
 * Checking the certificate chain the operator installs for the wallet routes (docs/TLS.md): by the enclave
 * before it serves with it, and by the parent first, with the same rules, to answer the operator a 400. The chain is the operator's (from a public CA or their own) and not secret, so a
 * refusal says plainly what is wrong with it: INVALID_PARAMS, naming the certificate and the rule. The checks
 * are those that make the chain usable for this key, not a path validation: clients validate the path to
 * their own roots.
 *
 * - PEM: only CERTIFICATE blocks (and whitespace between them), 1 to TLS_CHAIN_MAX_CERTS of them, at most
 *   TLS_CHAIN_MAX_BYTES; each an X.509 certificate. What is served is those certificates re-encoded, so
 *   nothing else of the text reaches a client.
 * - The leaf (first): an EC P-256 key, exactly the TLS key's (its SubjectPublicKeyInfo), valid now, and at
 *   least one DNS name in its subjectAltName (the names are reported, not compared: the operator chose them).
 *   Its validity is OpenSSL's reading (what clients check), parsed strictly: a time OpenSSL cannot read is
 *   refused, never replaced by a lenient parser's guess.
 * - Each certificate issued by the next: names match (OpenSSL's check_issued, with key identifiers and key
 *   usage), signature verifies with the next one's key, and the next one is a CA. Only the leaf's validity is
 *   checked: public CAs have long served expired cross-signs at the end of their chains for old clients.
 * - node:tls takes the chain as the HTTPS server will (its security level: no SHA-1 signature, no small CA
 *   key). That is everything that can refuse the chain, so it all runs before the key is unsealed: a chain
 *   the enclave will not serve never costs a KMS Decrypt.
 * - Anything else that fails to parse (a broken extension, a key on an unknown curve) is "not well formed".
 */
import { createHash, X509Certificate } from 'node:crypto';
import nodeTls from 'node:tls';
import { KeystoreError } from './errors';
import { TLS_CHAIN_MAX_BYTES, TLS_CHAIN_MAX_CERTS } from './tls-identity';
import { x509 } from './x509';

export interface CheckedChain {
  /** The certificates, PEM, leaf first, as re-encoded from their DER. */
  pem: string;
  /** The leaf's DNS names (subjectAltName), in its order. */
  names: string[];
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 of the leaf's DER, lower-case hex. */
  fingerprint256: string;
}

const invalid = (why: string, cause?: unknown) => new KeystoreError('INVALID_PARAMS', `the certificate chain ${why}`, { cause });

/** A PEM certificate block: its base64 body in lines. */
const BLOCK = /-----BEGIN CERTIFICATE-----\r?\n((?:[A-Za-z0-9+/=]+\r?\n)+)-----END CERTIFICATE-----/g;

/** The chain's certificates, in order, or INVALID_PARAMS. */
function parsePem(pem: string): X509Certificate[] {
  const bytes = Buffer.byteLength(pem);
  if (bytes > TLS_CHAIN_MAX_BYTES) throw invalid(`is ${bytes} bytes, over the ${TLS_CHAIN_MAX_BYTES} allowed`);
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem))
    throw invalid('holds a private key: send only the certificates (the enclave made the key, which never leaves it)');
  const blocks = [...pem.matchAll(BLOCK)];
  if (pem.replace(BLOCK, '').trim() !== '') throw invalid('holds text that is not a PEM CERTIFICATE block');
  if (blocks.length === 0) throw invalid('holds no certificate (expected PEM, leaf first)');
  if (blocks.length > TLS_CHAIN_MAX_CERTS) throw invalid(`has ${blocks.length} certificates, more than the ${TLS_CHAIN_MAX_CERTS} allowed`);
  return blocks.map((block, i) => {
    const der = Buffer.from((block[1] as string).replace(/\r?\n/g, ''), 'base64');
    try {
      return new X509Certificate(der);
    } catch (err) {
      throw new KeystoreError('INVALID_PARAMS', `the certificate chain: certificate ${i + 1} is not an X.509 certificate`, { cause: err });
    }
  });
}

/** The DNS names of a certificate's subjectAltName (none if it has no such extension). */
function dnsNames(cert: X509Certificate): string[] {
  const san = new x509.X509Certificate(cert.raw).getExtension(x509.SubjectAlternativeNameExtension);
  return (san?.names.items ?? []).filter((n) => n.type === 'dns').map((n) => n.value);
}

/** OpenSSL's ASN1_TIME_print form (what X509Certificate.validFrom/validTo are): "Mar  5 09:07:01 2031 GMT". */
const OPENSSL_TIME = /^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([ 1-3]\d) (\d\d):(\d\d):(\d\d) (\d{4}) GMT$/;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * A validity time as OpenSSL printed it, or null: anything else ("Bad time value", fractional seconds, a time
 * not in UTC, a day that does not exist) is not read at all.
 */
function openSslTime(text: string): Date | null {
  const m = OPENSSL_TIME.exec(text);
  if (!m) return null;
  const month = MONTHS.indexOf(m[1] as string);
  const [day, hour, minute, second, year] = m.slice(2).map(Number) as [number, number, number, number, number];
  const date = new Date(0);
  date.setUTCFullYear(year, month, day);
  date.setUTCHours(hour, minute, second, 0);
  const exact =
    Number.isFinite(date.getTime()) &&
    date.getUTCFullYear() === year &&
    date.getUTCMonth() === month &&
    date.getUTCDate() === day &&
    date.getUTCHours() === hour &&
    date.getUTCMinutes() === minute &&
    date.getUTCSeconds() === second;
  return exact ? date : null;
}

/** What OpenSSL says when node:tls refuses the chain (its reason string), if it is one. */
function openSslReason(err: unknown): string {
  const reason = (err as { reason?: unknown } | null)?.reason;
  return typeof reason === 'string' && /^[a-z0-9 ]{1,80}$/i.test(reason) ? ` (OpenSSL: ${reason})` : '';
}

/**
 * The DER SubjectPublicKeyInfo of the chain's first certificate (the leaf), so the parent can tell which of its
 * TLS keys the chain is for; INVALID_PARAMS when the text is not a PEM chain.
 */
export function leafPublicKey(pem: string): Buffer {
  try {
    return (parsePem(pem)[0] as X509Certificate).publicKey.export({ type: 'spki', format: 'der' });
  } catch (err) {
    if (err instanceof KeystoreError) throw err;
    throw invalid('is not well formed', err);
  }
}

/**
 * Checks `pem` is a chain to serve with the key whose DER SubjectPublicKeyInfo is `spki`, at `now` (ms since
 * the epoch). Throws INVALID_PARAMS naming what is wrong.
 */
export function checkChain(pem: string, spki: Uint8Array, now: number): CheckedChain {
  try {
    return check(pem, spki, now);
  } catch (err) {
    if (err instanceof KeystoreError) throw err;
    // A reason about the chain, never about the key: the chain is the parent's to send, the key is not.
    throw invalid('is not well formed', err);
  }
}

function check(pem: string, spki: Uint8Array, now: number): CheckedChain {
  const certs = parsePem(pem);
  const leaf = certs[0] as X509Certificate;
  const key = leaf.publicKey;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
    const type = `${key.asymmetricKeyType ?? 'unknown'}${curve ? ` (${curve})` : ''}`;
    throw invalid(`starts with a certificate for a key of type ${type}: the leaf must be for this TLS key (EC P-256)`);
  }
  if (!key.export({ type: 'spki', format: 'der' }).equals(spki)) {
    throw invalid("starts with a certificate for another key: the leaf's public key is not this TLS key's (is the chain leaf first?)");
  }
  const [notBefore, notAfter] = [openSslTime(leaf.validFrom), openSslTime(leaf.validTo)];
  if (!notBefore) throw invalid('has a leaf whose notBefore cannot be read');
  if (!notAfter) throw invalid('has a leaf whose notAfter cannot be read');
  if (now < notBefore.getTime()) throw invalid(`has a leaf that is not valid before ${notBefore.toISOString()}`);
  if (now > notAfter.getTime()) throw invalid(`has a leaf that expired at ${notAfter.toISOString()}`);
  const names = dnsNames(leaf);
  if (names.length === 0) throw invalid('has a leaf with no DNS name in its subjectAltName');
  for (let i = 0; i + 1 < certs.length; i++) {
    const [cert, issuer] = [certs[i] as X509Certificate, certs[i + 1] as X509Certificate];
    if (!issuer.ca)
      throw invalid(`is out of order or incomplete: certificate ${i + 2} is not a CA, so it cannot issue certificate ${i + 1}`);
    if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) {
      throw invalid(
        `is out of order or incomplete: certificate ${i + 1} is not issued by certificate ${i + 2} (expected leaf first, then each issuer)`,
      );
    }
  }
  const served = certs.map((c) => c.toString()).join('');
  try {
    // The certificates alone, as the HTTPS server will take them (with the key, which is the leaf's).
    nodeTls.createSecureContext({ cert: served });
  } catch (err) {
    throw invalid(`is not usable for TLS${openSslReason(err)}`, err);
  }
  return { pem: served, names, notBefore, notAfter, fingerprint256: createHash('sha256').update(leaf.raw).digest('hex') };
}
