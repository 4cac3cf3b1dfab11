/**
 * The wallet routes' TLS key (docs/TLS.md): made in the enclave, sealed as a tls blob to the KMS public key
 * (no KMS call; sealing as for every blob, keys/seal.ts), and its certificate request. Opening a tls blob
 * again is one attested KMS Decrypt (kms/unseal.ts), with the same one-answer rules as any key.
 */
import { webcrypto, type KeyObject } from 'node:crypto';
import { BLOB_ALG, BLOB_VERSION, encodeBlob, type TlsBlob } from '@nks/shared/blob';
import { generateP256Secret, p256PrivateKey, p256PublicKeyOf, p256Spki } from '../crypto/p256';
import { sealBlob } from '../keys/seal';
import type { Unsealer } from '../kms/unseal';
import { x509 } from '@nks/shared/x509';

const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;

export interface NewTlsKey {
  privateKey: KeyObject;
  /** DER SubjectPublicKeyInfo. */
  spki: Buffer;
  /** The tls blob's canonical CBOR. */
  blob: Buffer;
}

export interface TlsSealTo {
  kmsKeyArn: string;
  kmsPublicKey: KeyObject;
  createdAt: number;
}

/** A new P-256 key, sealed. The scalar is zeroed before returning; OpenSSL keeps the KeyObject's copy. */
export function newTlsKey(to: TlsSealTo): NewTlsKey {
  const secret = generateP256Secret();
  try {
    const point = p256PublicKeyOf(secret) as Buffer;
    const sealed: TlsBlob = sealBlob(
      secret,
      { v: BLOB_VERSION, kind: 'tls', alg: BLOB_ALG, kmsKeyArn: to.kmsKeyArn, publicKey: `0x${point.toString('hex')}` },
      { kmsPublicKey: to.kmsPublicKey, createdAt: to.createdAt },
    );
    return { privateKey: p256PrivateKey(secret), spki: p256Spki(point), blob: encodeBlob(sealed) };
  } finally {
    secret.fill(0);
  }
}

/** The DER SubjectPublicKeyInfo a tls blob names. */
export function tlsBlobSpki(blob: TlsBlob): Buffer {
  return p256Spki(Buffer.from(blob.publicKey.slice(2), 'hex'));
}

/** Unseals a tls blob (one KMS Decrypt) to its private key; the scalar is zeroed once OpenSSL has it. */
export async function openTlsKey(unsealer: Unsealer, blob: TlsBlob): Promise<KeyObject> {
  const opened = await unsealer.unseal(blob);
  try {
    return p256PrivateKey(opened.secret);
  } finally {
    opened.secret.fill(0);
  }
}

/** PKCS#10, PEM: subject CN = names[0], subjectAltName = every name (DNS), signed with the key (ECDSA SHA-256). */
export async function tlsCsr(names: string[], privateKey: KeyObject, spki: Buffer): Promise<string> {
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  let signing: webcrypto.CryptoKey;
  try {
    signing = await webcrypto.subtle.importKey('pkcs8', pkcs8, ECDSA_P256, false, ['sign']);
  } finally {
    pkcs8.fill(0);
  }
  const publicKey = await webcrypto.subtle.importKey('spki', spki, ECDSA_P256, true, ['verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    // TLS_NAME_RE allows only letters, digits, hyphens and dots: nothing a distinguished name would escape.
    name: `CN=${names[0] as string}`,
    keys: { privateKey: signing, publicKey },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value })))],
  });
  return csr.toString('pem');
}
