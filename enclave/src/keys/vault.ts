/**
 * The enclave's key operations: create (no KMS call), sign (cache, or exactly one attested KMS Decrypt per
 * cold key, shared by concurrent requests), forget.
 */
import type { KeyObject } from 'node:crypto';
import { birthContent, USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { decodeBlobBase64, encodeBlob } from '@nks/shared/blob';
import { KeystoreError } from '@nks/shared/errors';
import type { CreateResult } from '@nks/shared/enclave-api';
import type { SignRequest, SignResult } from '@nks/shared/signing/schema';
import { addressOf, generateSecret, publicKeyOf } from '../crypto/secp256k1';
import type { Unsealer } from '../kms/unseal';
import type { NsmClient } from '../nsm/client';
import type { SignerPool } from '../signing/pool';
import type { KeyCache, CachedKey } from './cache';
import { sealSecret } from './seal';

export class KeyVault {
  creates = 0;
  signs = 0;
  private readonly inflight = new Map<string, Promise<CachedKey>>();

  constructor(
    private readonly deps: {
      cache: KeyCache;
      unsealer: Unsealer;
      nsm: NsmClient;
      kmsKeyArn: string;
      kmsPublicKey: KeyObject;
      /** Where requests are hashed and signed (signer threads; see SignerPool). */
      signers: SignerPool;
    },
  ) {}

  async create(keyId: string, attest: boolean): Promise<CreateResult> {
    const secret = generateSecret();
    let result: CreateResult;
    try {
      const pub = publicKeyOf(secret);
      const address = addressOf(pub);
      const blob = sealSecret(secret, { keyId, address, kmsKeyArn: this.deps.kmsKeyArn, kmsPublicKey: this.deps.kmsPublicKey });
      result = { keyId, address, publicKey: `0x${Buffer.from(pub).toString('hex')}`, blob: encodeBlob(blob).toString('base64') };
    } finally {
      secret.fill(0);
    }
    if (attest) {
      const doc = await this.deps.nsm.attest({ tag: USER_DATA_TAGS.birth, content: birthContent(keyId, result.address) });
      result.attestation = doc.toString('base64');
    }
    this.creates += 1;
    return result;
  }

  async sign(keyId: string, blob: string, request: SignRequest): Promise<SignResult> {
    const key = this.deps.cache.get(keyId, blob) ?? (await this.unsealShared(keyId, blob));
    const result = await this.deps.signers.sign(request, key.secret, key.address);
    this.signs += 1;
    return result;
  }

  forget(keyId: string): boolean {
    return this.deps.cache.forget(keyId);
  }

  /** Concurrent cold signs of the same blob share one unseal (one KMS Decrypt). */
  private unsealShared(keyId: string, blob: string): Promise<CachedKey> {
    const flightKey = `${keyId}\u0000${blob}`;
    let p = this.inflight.get(flightKey);
    if (!p) {
      p = this.unseal(keyId, blob).finally(() => this.inflight.delete(flightKey));
      this.inflight.set(flightKey, p);
    }
    return p;
  }

  private async unseal(keyId: string, blobB64: string): Promise<CachedKey> {
    const blob = decodeBlobBase64(blobB64);
    if (blob.keyId !== keyId) {
      throw new KeystoreError('KEY_INTEGRITY', `the blob belongs to key ${blob.keyId}, not ${keyId}`);
    }
    const { secret, address } = await this.deps.unsealer.unseal(blob);
    return this.deps.cache.set(keyId, { secret, address, blob: blobB64 });
  }
}
