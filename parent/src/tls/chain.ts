/**
 * The stored chain of the current TLS key (checked with shared/src/tls-chain.ts when it was installed): its
 * leaf, for the status answer and to tell whether the enclave serves it.
 */
import { X509Certificate } from 'node:crypto';
import { KeystoreError } from '@nks/shared/errors';

const FIRST_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/;

/** SHA-256 of a certificate's DER as lower-case hex: `TlsStatus.fingerprint256`. */
export function fingerprintOf(cert: X509Certificate): string {
  return cert.fingerprint256.replace(/:/g, '').toLowerCase();
}

/** The first certificate of a stored chain. */
export function leafOf(pem: string): X509Certificate {
  const first = FIRST_CERTIFICATE.exec(pem);
  if (!first) throw new KeystoreError('KEY_INTEGRITY', 'the stored TLS chain holds no certificate');
  return new X509Certificate(first[0]);
}
