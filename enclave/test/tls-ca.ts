/**
 * Certificate authorities for the TLS tests, standing where the operator's CA would: a root, intermediates
 * under it, and leaves issued for a CSR (as a CA does after checking it) or for any public key (what a parent
 * that knows a key of its own could get). ECDSA P-256 through @peculiar/x509, made fresh each time.
 */
import { createPublicKey, randomBytes, webcrypto, type KeyObject } from 'node:crypto';
import { x509 } from '../../sim/src/nsm/x509';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 24 * 3600_000;

export interface TestAuthority {
  cert: x509.X509Certificate;
  keys: webcrypto.CryptoKeyPair;
  pem: string;
}

export interface Validity {
  notBefore?: Date;
  notAfter?: Date;
}

/** The OID of subjectAltName (a CSR's extensions are looked up by OID). */
export const SUBJECT_ALT_NAME = '2.5.29.17';

/** A root CA (self-signed), or an intermediate when `issuer` is given. */
export async function makeAuthority(name: string, issuer?: TestAuthority, v: Validity = {}): Promise<TestAuthority> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const now = Date.now();
  const common = {
    serialNumber: randomBytes(8).toString('hex'),
    notBefore: v.notBefore ?? new Date(now - DAY),
    notAfter: v.notAfter ?? new Date(now + 365 * DAY),
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, issuer ? 0 : 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ...(issuer ? [await x509.AuthorityKeyIdentifierExtension.create(issuer.cert)] : []),
    ],
  };
  const cert = issuer
    ? await x509.X509CertificateGenerator.create({
        ...common,
        subject: `CN=${name}`,
        issuer: issuer.cert.subject,
        publicKey: keys.publicKey,
        signingKey: issuer.keys.privateKey,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({ ...common, name: `CN=${name}`, keys });
  return { cert, keys, pem: `${cert.toString('pem')}\n` };
}

/** A server certificate (PEM, newline-terminated as in a file) for `publicKey` (CryptoKey, KeyObject or DER SPKI) and DNS `names`, PEM. */
export async function issueLeaf(
  ca: TestAuthority,
  publicKey: webcrypto.CryptoKey | KeyObject | Uint8Array,
  names: string[],
  v: Validity = {},
): Promise<string> {
  const key =
    publicKey instanceof Uint8Array || !('algorithm' in publicKey)
      ? await webcrypto.subtle.importKey(
          'spki',
          publicKey instanceof Uint8Array ? publicKey : publicKey.export({ type: 'spki', format: 'der' }),
          { name: 'ECDSA', namedCurve: 'P-256' },
          true,
          ['verify'],
        )
      : publicKey;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString('hex'),
    subject: `CN=${names[0] ?? 'no-name'}`,
    issuer: ca.cert.subject,
    notBefore: v.notBefore ?? new Date(now - DAY),
    notAfter: v.notAfter ?? new Date(now + 90 * DAY),
    publicKey: key,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value })))] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return `${cert.toString('pem')}\n`;
}

/** What a CA does with a CSR: checks its signature, then certifies its key for the names it asks for. */
export async function issueForCsr(ca: TestAuthority, csrPem: string, v: Validity = {}): Promise<string> {
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  if (!(await csr.verify())) throw new Error('the CSR is not signed by its key');
  const san = csr.getExtension(SUBJECT_ALT_NAME) as x509.SubjectAlternativeNameExtension | null;
  const names = (san?.names.items ?? []).filter((n) => n.type === 'dns').map((n) => n.value);
  return issueLeaf(ca, new Uint8Array(csr.publicKey.rawData), names, v);
}

/** A key pair of the parent's own (it knows the private key). */
export async function ownKeyPair(): Promise<{ keys: webcrypto.CryptoKeyPair; spki: Buffer; publicKey: KeyObject }> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey));
  return { keys, spki, publicKey: createPublicKey({ key: spki, format: 'der', type: 'spki' }) };
}
