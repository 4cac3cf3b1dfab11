/**
 * A throwaway certificate authority and server certificates under it, for HTTPS on loopback in development
 * and tests (the simulated identity provider's JWKS, docs/PROJECTS.md; the wallet routes' certificate for the
 * enclave's own key, docs/TLS.md). ECDSA P-256, made fresh each time.
 */
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { x509 } from '../nsm/x509';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface TestCa {
  /** The CA certificate, PEM: what the enclave is told to trust (`--trust-ca`). */
  caPem: string;
  /** A server certificate for `names` (DNS names and IP addresses) signed by the CA, and its key, PEM. */
  issueServer(names: string[]): Promise<{ certPem: string; keyPem: string }>;
  /**
   * A server certificate (PEM) for the key of a PKCS#10 request (its self-signature checked first), for `names`
   * (DNS names and IP addresses): what a CA does with the enclave's CSR (`POST /v1/tls/keys`).
   */
  issueForCsr(csrPem: string, names: string[], opts?: { notBefore?: Date; notAfter?: Date }): Promise<string>;
}

const pkcs8Pem = async (key: webcrypto.CryptoKey) =>
  createPrivateKey({ key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key)), format: 'der', type: 'pkcs8' })
    .export({ format: 'pem', type: 'pkcs8' })
    .toString();

const isIp = (n: string) => /^[0-9.]+$/.test(n) || n.includes(':');

/** A self-signed CA certificate for `keys`, valid from a minute ago for `lifetimeMs`. */
export async function makeCaCertificate(
  keys: webcrypto.CryptoKeyPair,
  commonName: string,
  lifetimeMs: number,
): Promise<x509.X509Certificate> {
  const now = Date.now();
  return x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(8).toString('hex'),
    name: `CN=${commonName}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + lifetimeMs),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
}

/**
 * A TLS server certificate under `ca` for `publicKey`: CN = the first name, subjectAltName = the names (DNS names
 * and IP addresses), serverAuth, not a CA.
 */
export async function issueServerCertificate(opts: {
  ca: x509.X509Certificate;
  caKey: webcrypto.CryptoKey;
  publicKey: x509.PublicKey | webcrypto.CryptoKey;
  names: string[];
  notBefore: Date;
  notAfter: Date;
}): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString('hex'),
    subject: `CN=${opts.names[0] ?? 'localhost'}`,
    issuer: opts.ca.subject,
    notBefore: opts.notBefore,
    notAfter: opts.notAfter,
    publicKey: opts.publicKey,
    signingKey: opts.caKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(opts.names.map((n) => ({ type: isIp(n) ? 'ip' : 'dns', value: n }))),
      await x509.AuthorityKeyIdentifierExtension.create(opts.ca),
    ],
  });
}

/** The public key of a PKCS#10 request, once its self-signature verifies. */
export async function csrPublicKey(csrPem: string): Promise<x509.PublicKey> {
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  if (!(await csr.verify())) throw new Error('the CSR is not signed by its own key');
  return csr.publicKey;
}

export async function makeTestCa(commonName = 'nitro-keystore test CA'): Promise<TestCa> {
  const now = Date.now();
  const caKeys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const ca = await makeCaCertificate(caKeys, commonName, 30 * 24 * 3600_000);
  const leafTimes = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 7 * 24 * 3600_000) };
  return {
    caPem: ca.toString('pem'),
    async issueServer(names) {
      const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
      const cert = await issueServerCertificate({ ca, caKey: caKeys.privateKey, publicKey: keys.publicKey, names, ...leafTimes });
      return { certPem: cert.toString('pem'), keyPem: await pkcs8Pem(keys.privateKey) };
    },
    async issueForCsr(csrPem, names, opts = {}) {
      const cert = await issueServerCertificate({
        ca,
        caKey: caKeys.privateKey,
        publicKey: await csrPublicKey(csrPem),
        names,
        ...leafTimes,
        ...opts,
      });
      return `${cert.toString('pem').trimEnd()}\n`;
    },
  };
}
