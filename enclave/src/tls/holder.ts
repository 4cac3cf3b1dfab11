/**
 * The wallet routes' TLS identity inside the enclave (docs/TLS.md): `tls.create` makes a key, `tls.install`
 * checks a blob, its signature and a chain and then serves with them; the HTTPS server reads `current()` and
 * hears of each install through `onChange`.
 *
 * The enclave serves only with a key it made itself: a tls blob is installed only with the identity's
 * signature over tlsBlobDigest(blob), made at `tls.create`. The KMS public key is public, so the parent could
 * seal a key it knows as a tls blob; without that signature it is refused before any KMS call, with the
 * records' one KEY_INTEGRITY (counted in integrityFailures), as is a blob that is not a tls blob, or altered.
 * The chain is checked next, completely (tls/chain.ts, node:tls included: INVALID_PARAMS naming what is wrong
 * with it), still before any KMS call. The private key then comes from memory when the enclave has it (made
 * by one of the last PENDING_KEYS creates, unsealed by an install that did not finish, or installed now),
 * otherwise from the blob: one attested KMS Decrypt, counted with the identity's (`identityKmsCalls`), and the
 * key is held from then on, so no retry of that blob costs another. A failed open is the unsealer's one refusal.
 *
 * Private material: the scalar is zeroed as soon as OpenSSL holds the KeyObject; a KeyObject dropped (pending
 * evicted, replaced by an install) is freed and cleansed by OpenSSL when collected. `current().key` is a PEM
 * string (what node:tls takes), which JavaScript cannot zero (docs/SECURITY.md, "Zeroing key material, and what
 * JavaScript cannot guarantee").
 */
import { verify, type KeyObject } from 'node:crypto';
import nodeTls from 'node:tls';
import { USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { decodeTlsBlob, type TlsBlob } from '@nks/shared/blob';
import { TlsCreateParams, type TlsCreateResult, type TlsStatus } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import { identityPublicKey } from '@nks/shared/records';
import { tlsBlobDigest } from '@nks/shared/tls-identity';
import type { KeystoreIdentity } from '../identity/keystore-identity';
import type { Unsealer } from '../kms/unseal';
import type { NsmClient } from '../nsm/client';
import { checkChain, type CheckedChain } from '@nks/shared/tls-chain';
import { newTlsKey, openTlsKey, tlsBlobSpki, tlsCsr } from './key';

/**
 * How many keys not installed the enclave keeps (made by `tls.create`, or unsealed by an install that then
 * failed), newest first, so installing one needs no KMS call.
 */
export const PENDING_KEYS = 4;

export interface TlsCredentials {
  /** The private key, PKCS#8 PEM. */
  key: string;
  /** The chain, PEM, leaf first. */
  cert: string;
}

export interface TlsHolderDeps {
  nsm: NsmClient;
  unsealer: Unsealer;
  /** The unsealed identity; the methods are served only once it is ready. */
  identity: () => KeystoreIdentity;
  kmsKeyArn: string;
  kmsPublicKey: KeyObject;
  /** Counts an integrity failure and returns the records' one KEY_INTEGRITY (VerifiedRecords.refused). */
  refused: (cause?: unknown) => KeystoreError;
  now?: () => number;
}

interface Installed {
  spki: Buffer;
  privateKey: KeyObject;
  chain: CheckedChain;
  credentials: TlsCredentials;
}

const NONE: TlsStatus = { state: 'none', publicKey: null, names: [], notBefore: null, notAfter: null, fingerprint256: null };

export class TlsHolder {
  /** Keys held but not installed (PENDING_KEYS at most) by base64 SPKI, oldest first. */
  private readonly pending = new Map<string, KeyObject>();
  private installed: Installed | null = null;
  private readonly listeners: Array<(c: TlsCredentials) => void> = [];
  /** Installs run one at a time, in the order asked: the last asked is what stays installed. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: TlsHolderDeps) {}

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** `tls.create`: a new key for `names`, sealed and signed, its CSR and an attestation of it. No KMS call. */
  async create(names: string[]): Promise<TlsCreateResult> {
    const parsed = TlsCreateParams.safeParse({ names });
    if (!parsed.success) throw new KeystoreError('INVALID_PARAMS', `names: ${parsed.error.issues[0]?.message ?? 'not valid'}`);
    const identity = this.deps.identity();
    const key = newTlsKey({ kmsKeyArn: this.deps.kmsKeyArn, kmsPublicKey: this.deps.kmsPublicKey, createdAt: this.now() });
    const blobSignature = identity.signTlsBlob(key.blob);
    const csr = await tlsCsr(names, key.privateKey, key.spki);
    const document = await this.deps.nsm.attest({ tag: USER_DATA_TAGS.tls, content: key.spki });
    const id = key.spki.toString('base64');
    this.hold(id, key.privateKey);
    return { publicKey: id, blob: key.blob.toString('base64'), blobSignature, csr, attestation: document.toString('base64') };
  }

  /** `tls.install`: serve with this key and chain, once both are checked; replaces what was installed. */
  install(p: { blob: string; blobSignature: string; chain: string }): Promise<TlsStatus> {
    const run = this.queue.then(() => this.installNow(p));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async installNow(p: { blob: string; blobSignature: string; chain: string }): Promise<TlsStatus> {
    const blob = this.ownBlob(p.blob, p.blobSignature);
    const spki = tlsBlobSpki(blob);
    // Everything that can refuse the chain, before any KMS call.
    const chain = checkChain(p.chain, spki, this.now());
    const id = spki.toString('base64');
    const held = this.pending.get(id) ?? (this.installed?.spki.equals(spki) ? this.installed.privateKey : undefined);
    const key = held ?? (await openTlsKey(this.deps.unsealer, blob));
    let credentials: TlsCredentials;
    try {
      credentials = { key: key.export({ type: 'pkcs8', format: 'pem' }) as string, cert: chain.pem };
      // What the HTTPS server will do with them: checkChain took the chain alone; with the key OpenSSL also
      // checks it is the leaf's (checkChain compared them, so this is not expected to fail).
      nodeTls.createSecureContext(credentials);
    } catch (err) {
      // Keep what was unsealed: a retry of this blob needs no second Decrypt.
      if (!held) this.hold(id, key);
      throw new KeystoreError('INVALID_PARAMS', 'the certificate chain is not usable for TLS with this key', { cause: err });
    }
    this.pending.delete(id);
    this.installed = { spki, privateKey: key, chain, credentials };
    for (const listener of this.listeners) listener(credentials);
    return this.status();
  }

  /** Holds a key not installed (the newest), dropping the oldest past PENDING_KEYS. */
  private hold(id: string, key: KeyObject): void {
    this.pending.delete(id);
    this.pending.set(id, key);
    for (const oldest of this.pending.keys()) {
      if (this.pending.size <= PENDING_KEYS) break;
      this.pending.delete(oldest);
    }
  }

  /** A tls blob this enclave's identity signed, or the one KEY_INTEGRITY. */
  private ownBlob(b64: string, signatureB64: string): TlsBlob {
    let blob: TlsBlob;
    try {
      blob = decodeTlsBlob(b64);
    } catch (err) {
      throw this.deps.refused(err);
    }
    const signature = Buffer.from(signatureB64, 'base64');
    const digest = tlsBlobDigest(Buffer.from(b64, 'base64'));
    let genuine: boolean;
    try {
      genuine = signature.length === 64 && verify(null, digest, identityPublicKey(this.deps.identity().publicKey), signature);
    } catch {
      genuine = false;
    }
    if (!genuine) throw this.deps.refused();
    return blob;
  }

  /** What the HTTPS server serves with, or null before the first install. */
  current(): TlsCredentials | null {
    return this.installed?.credentials ?? null;
  }

  /** Called with the new credentials after each successful install (it must not throw). */
  onChange(listener: (c: TlsCredentials) => void): void {
    this.listeners.push(listener);
  }

  status(): TlsStatus {
    const i = this.installed;
    if (!i) return { ...NONE, names: [] };
    return {
      state: 'installed',
      publicKey: i.spki.toString('base64'),
      names: [...i.chain.names],
      notBefore: i.chain.notBefore.toISOString(),
      notAfter: i.chain.notAfter.toISOString(),
      fingerprint256: i.chain.fingerprint256,
    };
  }

  /** DER SPKI of the installed key, for GET /v1/tls/attestation. */
  publicKeyDer(): Buffer | null {
    return this.installed ? Buffer.from(this.installed.spki) : null;
  }
}
