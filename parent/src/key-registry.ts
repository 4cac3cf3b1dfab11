/**
 * What the caller API does with keys, independent of HTTP: create (idempotent by external id), read, list,
 * sign through the enclave, disable and enable, and fetch attestation documents.
 */
import { randomBytes } from 'node:crypto';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import type { SignRequestInput, SignResult } from '@nks/shared/signing/schema';
import type { EnclavePool } from './enclave/pool';
import type { KeyRecord, KeyStore, Page } from './store/key-store';

export interface KeyView {
  keyId: string;
  address: string;
  publicKey: string;
  externalId: string | null;
  labels: Record<string, string>;
  createdAt: string;
  disabled: boolean;
  attestation?: string;
}

export function viewOf(r: KeyRecord, withAttestation = false): KeyView {
  return {
    keyId: r.keyId,
    address: r.address,
    publicKey: r.publicKey,
    externalId: r.externalId,
    labels: r.labels,
    createdAt: new Date(r.createdAt).toISOString(),
    disabled: r.disabled,
    ...(withAttestation && r.attestation ? { attestation: r.attestation } : {}),
  };
}

/** Key ids are chosen here: 128 random bits, URL-safe. */
export function newKeyId(): string {
  return `k_${randomBytes(16).toString('base64url')}`;
}

export class KeyRegistry {
  /** One creation per external id at a time: concurrent requests for it share the first one's result. */
  private readonly creating = new Map<string, Promise<{ record: KeyRecord; created: boolean }>>();

  constructor(
    private readonly store: KeyStore,
    private readonly enclave: EnclavePool,
    private readonly logger: Logger,
  ) {}

  async create(input: {
    externalId?: string | undefined;
    labels?: Record<string, string> | undefined;
    attest?: boolean | undefined;
  }): Promise<{ record: KeyRecord; created: boolean }> {
    const { externalId } = input;
    if (externalId === undefined) return this.createNew(input);
    const existing = this.store.getByExternalId(externalId);
    if (existing) return { record: existing, created: false };
    let p = this.creating.get(externalId);
    if (!p) {
      p = this.createNew(input).finally(() => this.creating.delete(externalId));
      this.creating.set(externalId, p);
      return p;
    }
    const shared = await p;
    return { record: shared.record, created: false };
  }

  private async createNew(input: {
    externalId?: string | undefined;
    labels?: Record<string, string> | undefined;
    attest?: boolean | undefined;
  }): Promise<{ record: KeyRecord; created: boolean }> {
    const keyId = newKeyId();
    const made = await this.enclave.call('keys.create', { keyId, attest: input.attest ?? false });
    if (made.keyId !== keyId) throw new KeystoreError('KEY_INTEGRITY', 'the enclave answered for another key id');
    const result = this.store.insert({
      keyId,
      externalId: input.externalId ?? null,
      address: made.address,
      publicKey: made.publicKey,
      blob: made.blob,
      labels: input.labels ?? {},
      attestation: made.attestation ?? null,
      createdAt: Date.now(),
    });
    if (!result.created) {
      // Another writer stored this external id first; the key made here was never returned and is dropped.
      this.logger.info({ externalId: input.externalId }, 'discarded a duplicate key for an existing external id');
    }
    return result;
  }

  get(keyId: string): KeyRecord {
    const r = this.store.get(keyId);
    if (!r) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
    return r;
  }

  list(q: { externalId?: string | undefined; limit: number; cursor?: string | undefined }): Page {
    if (q.externalId !== undefined) {
      const r = this.store.getByExternalId(q.externalId);
      return { keys: r ? [r] : [], nextCursor: null };
    }
    return this.store.list(q.limit, q.cursor);
  }

  /** `request` is passed to the enclave as the caller sent it; the enclave validates and hashes it again. */
  async sign(keyId: string, request: SignRequestInput): Promise<SignResult> {
    const r = this.get(keyId);
    if (r.disabled) throw new KeystoreError('KEY_DISABLED', `key ${keyId} is disabled`);
    const result = await this.enclave.call('keys.sign', { keyId, blob: r.blob, request }).catch((err: unknown) => {
      // The enclave says only "no" when an unseal fails (forged KMS answer or altered blob); its health total
      // failedOpens (metric nks_enclave_counter{counter="failedOpens"}) is what operators alert on.
      if (err instanceof KeystoreError && err.code === 'KEY_INTEGRITY')
        this.logger.warn({ keyId }, 'the enclave refused to unseal a key: its blob was altered or a KMS answer was not genuine');
      throw err;
    });
    if (result.address !== r.address) {
      throw new KeystoreError('KEY_INTEGRITY', `the enclave signed with ${result.address}, but key ${keyId} is ${r.address}`);
    }
    return result;
  }

  setDisabled(keyId: string, disabled: boolean): KeyRecord {
    const r = this.store.setDisabled(keyId, disabled);
    if (!r) throw new KeystoreError('KEY_NOT_FOUND', `key ${keyId} does not exist`);
    if (disabled) void this.enclave.call('keys.forget', { keyId }).catch(() => undefined); // best effort: drop it from the cache
    return r;
  }

  async attestation(nonce?: string): Promise<{ document: string }> {
    return this.enclave.call('attestation.get', nonce ? { nonce } : {});
  }
}
