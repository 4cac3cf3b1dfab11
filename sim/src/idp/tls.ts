/**
 * A throwaway certificate authority and a server certificate under it, for HTTPS on loopback in development
 * and tests (the simulated identity provider's JWKS; docs/PROJECTS.md). ECDSA P-256, made fresh each time.
 */
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { x509 } from '../nsm/x509';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface TestCa {
  /** The CA certificate, PEM: what the enclave is told to trust (`--trust-ca`). */
  caPem: string;
  /** A server certificate for `names` (DNS names and IP addresses) signed by the CA, and its key, PEM. */
  issueServer(names: string[]): Promise<{ certPem: string; keyPem: string }>;
}

const pkcs8Pem = async (key: webcrypto.CryptoKey) =>
  createPrivateKey({ key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key)), format: 'der', type: 'pkcs8' })
    .export({ format: 'pem', type: 'pkcs8' })
    .toString();

export async function makeTestCa(commonName = 'nitro-keystore test CA'): Promise<TestCa> {
  const now = Date.now();
  const caKeys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(8).toString('hex'),
    name: `CN=${commonName}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 30 * 24 * 3600_000),
    keys: caKeys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  return {
    caPem: ca.toString('pem'),
    async issueServer(names) {
      const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
      const isIp = (n: string) => /^[0-9.]+$/.test(n) || n.includes(':');
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomBytes(8).toString('hex'),
        subject: `CN=${names[0] ?? 'localhost'}`,
        issuer: ca.subject,
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 7 * 24 * 3600_000),
        publicKey: keys.publicKey,
        signingKey: caKeys.privateKey,
        signingAlgorithm: ALG,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
          new x509.SubjectAlternativeNameExtension(names.map((n) => ({ type: isIp(n) ? 'ip' : 'dns', value: n }))),
          await x509.AuthorityKeyIdentifierExtension.create(ca),
        ],
      });
      return { certPem: cert.toString('pem'), keyPem: await pkcs8Pem(keys.privateKey) };
    },
  };
}
