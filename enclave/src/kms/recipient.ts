/**
 * The enclave's ephemeral RSA-2048 key for KMS `Recipient`, and the attestation document that carries its
 * public half. KMS encrypts its answer to this key, so only this enclave can read it. The key is replaced on a
 * schedule; a document is reused only within a short bounded age, then a fresh one is requested from the NSM.
 * A call keeps the key pair it was given, so rotation never breaks a request in flight.
 */
import { generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { NsmClient } from '../nsm/client';

const generate = promisify(generateKeyPair);

export interface RecipientCredentials {
  privateKey: KeyObject;
  /** COSE_Sign1 attestation document whose `public_key` is this key (DER SPKI). */
  document: Buffer;
}

interface KeyState {
  privateKey: KeyObject;
  spki: Buffer;
  createdAt: number;
}

export class RecipientKeys {
  private key: KeyState | null = null;
  private doc: { document: Buffer; at: number; key: KeyState } | null = null;
  private pending: Promise<RecipientCredentials> | null = null;
  rotations = 0;
  documents = 0;

  constructor(
    private readonly nsm: NsmClient,
    private readonly options: { rotateMs: number; documentMaxAgeMs: number; now?: () => number },
  ) {}

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /** Current key and a fresh-enough document for it; concurrent callers share one refresh. */
  current(): Promise<RecipientCredentials> {
    const now = this.now();
    if (this.key && this.doc && this.doc.key === this.key && now - this.key.createdAt < this.options.rotateMs && now - this.doc.at < this.options.documentMaxAgeMs) {
      return Promise.resolve({ privateKey: this.key.privateKey, document: this.doc.document });
    }
    this.pending ??= this.refresh().finally(() => {
      this.pending = null;
    });
    return this.pending;
  }

  private async refresh(): Promise<RecipientCredentials> {
    if (!this.key || this.now() - this.key.createdAt >= this.options.rotateMs) {
      const { privateKey, publicKey } = await generate('rsa', { modulusLength: 2048, publicExponent: 65537 });
      this.key = { privateKey, spki: publicKey.export({ type: 'spki', format: 'der' }), createdAt: this.now() };
      this.rotations += 1;
    }
    const key = this.key;
    const document = await this.nsm.attest({ publicKey: key.spki });
    this.doc = { document, at: this.now(), key };
    this.documents += 1;
    return { privateKey: key.privateKey, document };
  }
}
