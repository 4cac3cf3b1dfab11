/**
 * The keystore identity at start (docs/RECORDS.md): the enclave listens at once, then unseals the identity
 * blob of its configuration through the ordinary attested Decrypt (kms/unseal.ts: the same one-answer rules
 * as any key), checks the seed's Ed25519 public key is the configured one, and only then serves anything but
 * hello and health. A failed attempt (the KMS proxy absent, KMS refusing this image, an answer that does not
 * open) is retried with back-off; after `maxAttempts` the start has failed, and the program exits.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelay } from '@nks/shared/backoff';
import { decodeBlobBase64, type IdentityBlob } from '@nks/shared/blob';
import { asKeystoreError, KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import type { Unsealer } from '../kms/unseal';
import { KeystoreIdentity } from './keystore-identity';

export type IdentityStatus = 'genesis' | 'unsealing' | 'ready';

/** The one answer of every method but hello and health until the identity is ready (or in a genesis image). */
export const identityUnavailable = (): KeystoreError => new KeystoreError('IDENTITY_UNAVAILABLE', 'the keystore identity is not available');

/** Where the enclave's identity stands, and the identity once unsealed. */
export class IdentityHolder {
  private identity: KeystoreIdentity | null = null;

  constructor(private state: IdentityStatus) {}

  get status(): IdentityStatus {
    return this.state;
  }

  /** The unsealed identity, or IDENTITY_UNAVAILABLE. */
  get(): KeystoreIdentity {
    if (!this.identity) throw identityUnavailable();
    return this.identity;
  }

  /** Genesis images never get one. */
  set(identity: KeystoreIdentity): void {
    if (this.state === 'genesis') throw new Error('a genesis image has no identity');
    this.identity = identity;
    this.state = 'ready';
  }
}

export class IdentityBootError extends Error {
  override readonly name = 'IdentityBootError';
}

export interface IdentityBootOptions {
  /** The configured identity: its public key and sealed seed (base64). */
  publicKey: string;
  blob: string;
  maxAttempts: number;
  retryMs: number;
  unsealer: Unsealer;
  logger: Logger;
  /** For tests: how to wait between attempts. */
  wait?: (ms: number) => Promise<unknown>;
}

/** Unseals the identity, retrying; throws IdentityBootError after `maxAttempts` failed attempts. */
export async function unsealIdentity(o: IdentityBootOptions): Promise<KeystoreIdentity> {
  const blob = decodeBlobBase64(o.blob);
  // The configuration was checked at load; this is the same check where it is relied on.
  if (blob.v !== 2 || blob.kind !== 'identity' || blob.publicKey !== o.publicKey) {
    throw new IdentityBootError('the configured identity blob is not the identity blob of the configured public key');
  }
  const wait = o.wait ?? ((ms: number) => sleep(ms));
  for (let attempt = 1; ; attempt++) {
    try {
      return await openIdentity(o.unsealer, blob, o.publicKey);
    } catch (err) {
      const e = asKeystoreError(err);
      const last = attempt >= o.maxAttempts;
      o.logger.warn(
        { attempt, maxAttempts: o.maxAttempts, code: e.code, reason: e.message },
        last ? 'could not unseal the keystore identity; giving up' : 'could not unseal the keystore identity; retrying',
      );
      if (last) throw new IdentityBootError(`the keystore identity could not be unsealed in ${o.maxAttempts} attempts (last: ${e.code})`);
      await wait(backoffDelay(attempt - 1, { initialMs: o.retryMs, maxMs: o.retryMs * 16 }));
    }
  }
}

/**
 * The unseal canary's probe (identity/canary.ts): the identity blob unsealed once more through the ordinary
 * attested Decrypt (counted as an identity Decrypt), its seed checked and zeroed.
 */
export function identityCanaryProbe(unsealer: Unsealer, blobBase64: string, publicKey: string): () => Promise<void> {
  const blob = decodeBlobBase64(blobBase64);
  if (blob.v !== 2 || blob.kind !== 'identity') throw new IdentityBootError('the configured identity blob is not an identity blob');
  return async () => {
    await openIdentity(unsealer, blob, publicKey);
  };
}

async function openIdentity(unsealer: Unsealer, blob: IdentityBlob, publicKey: string): Promise<KeystoreIdentity> {
  const opened = await unsealer.unseal(blob);
  try {
    const identity = KeystoreIdentity.fromSeed(opened.secret);
    // openKmsAnswer already checked the seed's public key is the blob's, and the blob's is the configured one.
    if (identity.publicKey !== publicKey) throw new KeystoreError('KEY_INTEGRITY', 'the unsealed identity is not the configured one');
    return identity;
  } finally {
    opened.secret.fill(0);
  }
}
