/**
 * A stand-in for the TLS holder (enclave/src/tls/holder.ts, written in parallel), with its interface, for the
 * wallet tests until it lands: built into a test bundle only (wallets-setup.ts), never into dist/enclave.js. It
 * makes no key: it serves the key and chain of the PEM files named by NKS_TEST_WALLETS_TLS_KEY and
 * NKS_TEST_WALLETS_TLS_CERT when the enclave starts (the test made them, as an operator's `tls.install` would
 * install them), or none.
 */
import fs from 'node:fs';
import { createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { KeystoreError } from '@nks/shared/errors';
import type { TlsCreateResult, TlsStatus } from '@nks/shared/enclave-api';
import type { KeystoreIdentity } from '../src/identity/keystore-identity';
import type { Unsealer } from '../src/kms/unseal';
import type { NsmClient } from '../src/nsm/client';

export interface TlsHolderDeps {
  nsm: NsmClient;
  unsealer: Unsealer;
  identity: () => KeystoreIdentity;
  kmsKeyArn: string;
  kmsPublicKey: KeyObject;
}

export class TlsHolder {
  private readonly credentials: { key: string; cert: string } | null = null;
  private readonly listeners: Array<(c: { key: string; cert: string }) => void> = [];

  constructor(_deps: TlsHolderDeps) {
    const keyFile = process.env.NKS_TEST_WALLETS_TLS_KEY;
    const certFile = process.env.NKS_TEST_WALLETS_TLS_CERT;
    if (keyFile && certFile) this.credentials = { key: fs.readFileSync(keyFile, 'utf8'), cert: fs.readFileSync(certFile, 'utf8') };
  }

  current(): { key: string; cert: string } | null {
    return this.credentials;
  }

  onChange(fn: (c: { key: string; cert: string }) => void): void {
    this.listeners.push(fn);
  }

  publicKeyDer(): Buffer | null {
    if (!this.credentials) return null;
    return createPublicKey(createPrivateKey(this.credentials.key)).export({ format: 'der', type: 'spki' });
  }

  status(): TlsStatus {
    const c = this.credentials;
    if (!c) return { state: 'none', publicKey: null, names: [], notBefore: null, notAfter: null, fingerprint256: null };
    const leaf = new X509Certificate(c.cert);
    return {
      state: 'installed',
      publicKey: (this.publicKeyDer() as Buffer).toString('base64'),
      names: (leaf.subjectAltName ?? '').split(', ').map((n) => n.replace(/^DNS:/, '')),
      notBefore: new Date(leaf.validFrom).toISOString(),
      notAfter: new Date(leaf.validTo).toISOString(),
      fingerprint256: leaf.fingerprint256.replace(/:/g, '').toLowerCase(),
    };
  }

  create(_names: string[]): Promise<TlsCreateResult> {
    return Promise.reject(new KeystoreError('METHOD_NOT_FOUND', 'tls.create is not in the stand-in'));
  }

  install(_p: { blob: string; blobSignature: string; chain: string }): Promise<TlsStatus> {
    return Promise.reject(new KeystoreError('METHOD_NOT_FOUND', 'tls.install is not in the stand-in'));
  }
}
