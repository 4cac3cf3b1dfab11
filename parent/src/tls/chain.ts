/**
 * The certificate chain an operator installs for the wallet routes (docs/TLS.md), read and checked by the parent
 * before it asks the enclave: PEM certificates only, leaf first, each issued by the next, the leaf valid now.
 * The enclave checks all of it again (and that the leaf names its key); here a bad chain gets a 400 that says
 * what is wrong, and nothing that is not a certificate (a private key pasted by mistake) is passed on or stored.
 */
import { X509Certificate } from 'node:crypto';
import { KeystoreError } from '@nks/shared/errors';
import { TLS_CHAIN_MAX_CERTS } from '@nks/shared/tls-identity';

export interface CheckedChain {
  /** The certificates as PEM, leaf first, re-encoded (nothing but the certificates). */
  pem: string;
  leaf: X509Certificate;
  /** The leaf's DER SubjectPublicKeyInfo, base64: how a stored TLS key is found. */
  leafPublicKey: string;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]{1,64})-----([\s\S]*?)-----END \1-----/g;

const refuse = (why: string) => new KeystoreError('INVALID_PARAMS', `body.chain: ${why}`);

/** The DER SubjectPublicKeyInfo of a certificate's key, base64. */
export function spkiOf(cert: X509Certificate): string {
  return cert.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
}

/** SHA-256 of a certificate's DER as lower-case hex: `TlsStatus.fingerprint256`. */
export function fingerprintOf(cert: X509Certificate): string {
  return cert.fingerprint256.replace(/:/g, '').toLowerCase();
}

/** The first certificate of a stored chain (checked when it was installed). */
export function leafOf(pem: string): X509Certificate {
  const first = new RegExp(PEM_BLOCK.source).exec(pem);
  if (!first) throw new KeystoreError('KEY_INTEGRITY', 'the stored TLS chain holds no certificate');
  return new X509Certificate(first[0]);
}

/** Reads `text` as a PEM chain and checks it; INVALID_PARAMS naming the problem otherwise. */
export function checkChain(text: string, now: number = Date.now()): CheckedChain {
  const certs: X509Certificate[] = [];
  for (const [block, label] of text.matchAll(PEM_BLOCK)) {
    if (label !== 'CERTIFICATE')
      throw refuse(`holds a PEM block "${label}"; expected only CERTIFICATE blocks (never a private key: the enclave made the key)`);
    if (certs.length === TLS_CHAIN_MAX_CERTS) throw refuse(`expected at most ${TLS_CHAIN_MAX_CERTS} certificates`);
    try {
      certs.push(new X509Certificate(block));
    } catch {
      throw refuse(`certificate ${certs.length + 1} is not a valid X.509 certificate`);
    }
  }
  const leaf = certs[0];
  if (!leaf) throw refuse('holds no PEM certificate (-----BEGIN CERTIFICATE-----)');
  const from = Date.parse(leaf.validFrom);
  const to = Date.parse(leaf.validTo);
  if (!(from <= now && now <= to))
    throw refuse(`the leaf certificate is not valid now: valid from ${new Date(from).toISOString()} to ${new Date(to).toISOString()}`);
  for (let i = 0; i + 1 < certs.length; i++) {
    const [cert, issuer] = [certs[i] as X509Certificate, certs[i + 1] as X509Certificate];
    if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey))
      throw refuse(`certificate ${i + 1} is not issued by certificate ${i + 2} (expected the leaf first, then each issuer in turn)`);
  }
  return { pem: certs.map((c) => c.toString()).join(''), leaf, leafPublicKey: spkiOf(leaf) };
}
