/**
 * A test certificate authority for the wallet routes' TLS keys (docs/TLS.md): a root and an intermediate
 * (ECDSA P-256, @peculiar/x509), issuing leaf certificates for a CSR's key as an ACME or internal CA would, and
 * the chain the operator installs (leaf, then intermediate).
 */
import { randomBytes, webcrypto } from 'node:crypto';
import { x509 } from '../../sim/src/nsm/x509';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 24 * 3600_000;

export interface LeafOptions {
  /** The subjectAltName DNS names (default: the CSR's). */
  names?: string[];
  notBefore?: Date;
  notAfter?: Date;
  /** Issued by the root directly instead of the intermediate. */
  byRoot?: boolean;
}

export interface TestTlsCa {
  rootPem: string;
  intermediatePem: string;
  /** A leaf certificate for the CSR's public key (PEM). */
  issue(csrPem: string, options?: LeafOptions): Promise<string>;
  /** The chain to install for a leaf the intermediate issued: leaf, then intermediate. */
  chain(leafPem: string): string;
}

async function caCert(name: string, keys: webcrypto.CryptoKeyPair, issuer?: { cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair }) {
  const now = Date.now();
  const extensions = [
    new x509.BasicConstraintsExtension(true, issuer ? 0 : 1, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (!issuer)
    return x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomBytes(8).toString('hex'),
      name: `CN=${name}`,
      notBefore: new Date(now - DAY),
      notAfter: new Date(now + 365 * DAY),
      keys,
      signingAlgorithm: ALG,
      extensions,
    });
  return x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString('hex'),
    subject: `CN=${name}`,
    issuer: issuer.cert.subject,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 365 * DAY),
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: ALG,
    extensions: [...extensions, await x509.AuthorityKeyIdentifierExtension.create(issuer.cert)],
  });
}

export async function makeTlsCa(): Promise<TestTlsCa> {
  const rootKeys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const root = await caCert('nks test root', rootKeys);
  const intermediateKeys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const intermediate = await caCert('nks test intermediate', intermediateKeys, { cert: root, keys: rootKeys });
  return {
    rootPem: root.toString('pem'),
    intermediatePem: intermediate.toString('pem'),
    async issue(csrPem, options = {}) {
      const csr = new x509.Pkcs10CertificateRequest(csrPem);
      const ext = csr.getExtension('2.5.29.17'); // subjectAltName
      const san = ext ? new x509.SubjectAlternativeNameExtension(ext.rawData) : null;
      const names = options.names ?? san?.names.items.map((n) => n.value) ?? [];
      const [issuer, keys] = options.byRoot ? [root, rootKeys] : [intermediate, intermediateKeys];
      const now = Date.now();
      const leaf = await x509.X509CertificateGenerator.create({
        serialNumber: randomBytes(8).toString('hex'),
        subject: `CN=${names[0]}`,
        issuer: issuer.subject,
        notBefore: options.notBefore ?? new Date(now - 3600_000),
        notAfter: options.notAfter ?? new Date(now + 90 * DAY),
        publicKey: await csr.publicKey.export(ALG, ['verify']),
        signingKey: keys.privateKey,
        signingAlgorithm: ALG,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
          new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value }))),
          await x509.AuthorityKeyIdentifierExtension.create(issuer),
        ],
      });
      return leaf.toString('pem');
    },
    chain: (leafPem) => `${leafPem}\n${intermediate.toString('pem')}\n`,
  };
}
