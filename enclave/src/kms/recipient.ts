/**
 * The enclave's ephemeral RSA-2048 key for KMS `Recipient`, and the attestation document that carries its
 * public half. KMS encrypts its answer to this key, so only this enclave can read it.
 *
 * A key pair is used until one of two things happens (docs/SECURITY.md, "The KMS answer is not
 * authenticated"):
 * - its scheduled rotation: a fresh key is made for new calls, and calls already holding the old one may
 *   still open their answers with it (nothing is wrong with it);
 * - any failed open of an answer made for it: the key is **retired**. Its private half is dropped at once, its
 *   document with it, and no call can open anything with it afterwards (`RecipientLease.privateKey` is then
 *   null). A captured content key is therefore good for one query at most: a padding oracle needs thousands.
 *
 * A document is reused only within a short bounded age, then a fresh one is requested from the NSM. After a
 * retirement the next key is prepared in the background, so a legitimate cold sign rarely waits for RSA key
 * generation (about 180 ms).
 */
import { generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { KeystoreError } from '@nks/shared/errors';
import type { NsmClient } from '../nsm/client';

const generate = promisify(generateKeyPair);

interface KeyState {
  /** Null once retired: nothing may open an answer with this key any more. */
  privateKey: KeyObject | null;
  spki: Buffer;
  createdAt: number;
}

/** A key pair and a document for it, as handed to one call. */
export class RecipientLease {
  constructor(
    private readonly key: KeyState,
    /** COSE_Sign1 attestation document whose `public_key` is this key (DER SPKI). */
    readonly document: Buffer,
  ) {}

  /** The private key, or null once the key was retired (by a failed open, in this call or another). */
  get privateKey(): KeyObject | null {
    return this.key.privateKey;
  }

  /** Whether two leases are of the same key pair. */
  sameKey(other: RecipientLease): boolean {
    return this.key === other.key;
  }

  /** @internal for RecipientKeys */
  get state(): KeyState {
    return this.key;
  }
}

export class RecipientKeys {
  private key: KeyState | null = null;
  private doc: { document: Buffer; at: number; key: KeyState } | null = null;
  private pending: Promise<RecipientLease> | null = null;
  rotations = 0;
  retirements = 0;
  documents = 0;

  constructor(
    private readonly nsm: NsmClient,
    private readonly options: { rotateMs: number; documentMaxAgeMs: number; now?: () => number },
  ) {}

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /** Current key and a fresh-enough document for it; concurrent callers share one refresh. */
  current(): Promise<RecipientLease> {
    const now = this.now();
    const { key, doc } = this;
    if (
      key?.privateKey &&
      doc &&
      doc.key === key &&
      now - key.createdAt < this.options.rotateMs &&
      now - doc.at < this.options.documentMaxAgeMs
    ) {
      return Promise.resolve(new RecipientLease(key, doc.document));
    }
    this.pending ??= this.refresh().finally(() => {
      this.pending = null;
    });
    return this.pending;
  }

  /**
   * Retires the lease's key after a failed open: drops the private key and its document so nothing opens an
   * answer with it again, and prepares the next key in the background. Returns false if it was already retired.
   */
  retire(lease: RecipientLease): boolean {
    const key = lease.state;
    if (!key.privateKey) return false;
    key.privateKey = null;
    if (this.key === key) this.key = null;
    if (this.doc?.key === key) this.doc = null;
    this.retirements += 1;
    void this.current().catch(() => undefined); // a failure here is reported by the next call's own refresh
    return true;
  }

  private async refresh(): Promise<RecipientLease> {
    // A key retired while its document was being made is replaced; a retirement per round needs a failed open
    // per round, which the failed-open limit stops, so a few rounds suffice.
    for (let round = 0; round < 3; round++) {
      if (!this.key?.privateKey || this.now() - this.key.createdAt >= this.options.rotateMs) {
        const { privateKey, publicKey } = await generate('rsa', { modulusLength: 2048, publicExponent: 65537 });
        this.key = { privateKey, spki: publicKey.export({ type: 'spki', format: 'der' }), createdAt: this.now() };
        this.rotations += 1;
      }
      const key = this.key;
      const document = await this.nsm.attest({ tag: USER_DATA_TAGS.kmsRecipient, content: key.spki, publicKey: key.spki });
      if (!key.privateKey) continue;
      this.doc = { document, at: this.now(), key };
      this.documents += 1;
      return new RecipientLease(key, document);
    }
    throw new KeystoreError('UNAVAILABLE', 'the KMS recipient key keeps being retired; try again later');
  }
}
