/**
 * Unsealing a blob: ask the parent's KMS proxy for an attested Decrypt of the wrapped data key, then open the
 * answer (open-answer.ts). The parent relays the answer and may forge it, so every failure once an answer has
 * arrived gets one answer (`unsealRefused`), retires the recipient key it was made for, and is counted and
 * rate-limited (failed-opens.ts). See docs/SECURITY.md, "The KMS answer is not authenticated".
 *
 * The keystore identity's seed is unsealed the same way, once at start, and the wallet routes' TLS key at
 * `tls.install` when the enclave no longer holds it (docs/TLS.md); the enclave's own keys' Decrypts are counted
 * apart (`identityKmsCalls`) so that `kmsCalls` stays exactly one per cold user key.
 *
 * One unseal has `deadlineMs` in all (the attestation document, every KMS request of it and a second ask after
 * a retired recipient key), and each `kms.decrypt` tells the proxy the time left, so the proxy gives up, with
 * the fault it met, before this does (shared/src/deadlines.ts). Every outcome goes to `observer` (the unseal
 * canary, identity/canary.ts).
 */
import type { IdentityBlob, KeyBlob, KeyBlobV1, SealedBlob, TlsBlob } from '@nks/shared/blob';
import { KeystoreError } from '@nks/shared/errors';
import type { KmsProxyApi } from '@nks/shared/enclave-api';
import type { RpcClient } from '@nks/shared/rpc';
import { FailedOpens } from './failed-opens';
import { openKmsAnswer, type OpenedIdentity, type OpenedKey, type OpenedTls } from './open-answer';
import type { RecipientKeys } from './recipient';

/** The only thing a parent learns from any failed open, whichever step failed: byte-identical every time. */
export const UNSEAL_REFUSED_MESSAGE = 'the key could not be unsealed';
export const unsealRefused = (): KeystoreError => new KeystoreError('KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE);

/** Told of every unseal's outcome (the unseal canary). */
export interface UnsealObserver {
  succeeded(): void;
  failed(err: unknown): void;
}

export class Unsealer {
  /** Decrypts for user keys (version 2, and version 1 in the migration image). */
  kmsCalls = 0;
  /** Decrypts for the enclave's own keys: the keystore identity's seed, the wallet routes' TLS key. */
  identityKmsCalls = 0;
  /** KMS proxy errors, for either. */
  kmsErrors = 0;

  constructor(
    private readonly kmsProxy: RpcClient<KmsProxyApi>,
    private readonly recipient: RecipientKeys,
    private readonly failedOpens: FailedOpens,
    private readonly options: { kmsKeyArn: string; deadlineMs: number },
    private readonly observer?: UnsealObserver,
  ) {}

  unseal(blob: KeyBlob | KeyBlobV1): Promise<OpenedKey>;
  unseal(blob: IdentityBlob): Promise<OpenedIdentity>;
  unseal(blob: TlsBlob): Promise<OpenedTls>;
  async unseal(blob: SealedBlob): Promise<OpenedKey | OpenedIdentity | OpenedTls> {
    try {
      const opened = await this.unsealOnce(blob, Date.now() + this.options.deadlineMs);
      this.observer?.succeeded();
      return opened;
    } catch (err) {
      this.observer?.failed(err);
      throw err;
    }
  }

  private async unsealOnce(blob: SealedBlob, deadline: number): Promise<OpenedKey | OpenedIdentity | OpenedTls> {
    if (blob.kmsKeyArn !== this.options.kmsKeyArn) {
      const what = blob.v === 1 || blob.kind === 'key' ? `key ${blob.keyId}` : blob.kind === 'identity' ? 'the identity' : 'the TLS key';
      throw new KeystoreError('KEY_INTEGRITY', `${what} is sealed under ${blob.kmsKeyArn}, not this enclave's KMS key`);
    }
    // A call whose recipient key was retired by another call's failure while it waited for KMS asks once more
    // with the new key; its own answer is never opened with a retired key.
    for (let attempt = 1; ; attempt++) {
      if (this.failedOpens.refusing()) throw unsealRefused();
      const lease = await this.recipient.current();
      const raw = await this.decrypt(blob, lease.document, deadline);
      const privateKey = lease.privateKey;
      if (!privateKey) {
        if (attempt < 2) continue;
        throw unsealRefused();
      }
      const opened = openKmsAnswer(raw, privateKey, blob);
      if (opened) return opened;
      this.recipient.retire(lease);
      this.failedOpens.record();
      throw unsealRefused();
    }
  }

  /** `unknown`, not the table's result type: the answer comes from the parent and is checked by openKmsAnswer. */
  private async decrypt(blob: SealedBlob, document: Buffer, deadline: number): Promise<unknown> {
    const leftMs = deadline - Date.now();
    if (leftMs <= 0) {
      this.kmsErrors += 1;
      throw new KeystoreError('TIMEOUT', `the unseal did not finish within ${this.options.deadlineMs} ms`);
    }
    if (blob.v === 1 || blob.kind === 'key') this.kmsCalls += 1;
    else this.identityKmsCalls += 1;
    try {
      return await this.kmsProxy.call(
        'kms.decrypt',
        {
          kmsKeyArn: blob.kmsKeyArn,
          ciphertextBlob: blob.wrappedKey.toString('base64'),
          attestationDocument: document.toString('base64'),
          deadlineMs: leftMs,
        },
        { deadlineMs: leftMs },
      );
    } catch (err) {
      // The proxy's own errors (KMS refused, throttled, unreachable) carry nothing the parent does not know.
      this.kmsErrors += 1;
      throw err;
    }
  }
}
