/**
 * Unsealing a blob (DESIGN §3 "Use"): ask the parent's KMS proxy for an attested Decrypt of the wrapped data
 * key, open KMS's CMS answer with the enclave's recipient key, open the GCM box, and check the secret really
 * belongs to the blob's address. The parent relays the answer and could forge it; a forged data key fails GCM
 * authentication, so nothing unauthenticated is ever used.
 */
import { z } from 'zod';
import { openEnvelopedData, CmsError } from '../../../shared/src/cms';
import type { KeyBlob } from '../../../shared/src/blob';
import { KeystoreError } from '../../../shared/src/errors';
import type { RpcClient } from '../../../shared/src/rpc';
import { base64, parseOrThrow } from '../../../shared/src/schema';
import { addressOf, isValidSecret, publicKeyOf } from '../crypto/secp256k1';
import { openSealed } from '../keys/seal';
import type { RecipientKeys } from './recipient';

const DecryptAnswer = z.strictObject({ ciphertextForRecipient: base64, keyId: z.string() });

export interface UnsealResult {
  secret: Uint8Array;
  address: `0x${string}`;
}

export class Unsealer {
  kmsCalls = 0;
  kmsErrors = 0;

  constructor(
    private readonly kmsProxy: RpcClient,
    private readonly recipient: RecipientKeys,
    private readonly options: { kmsKeyArn: string; deadlineMs: number },
  ) {}

  async unseal(blob: KeyBlob): Promise<UnsealResult> {
    if (blob.kmsKeyArn !== this.options.kmsKeyArn) {
      throw new KeystoreError('KEY_INTEGRITY', `key ${blob.keyId} is sealed under ${blob.kmsKeyArn}, not this enclave's KMS key`);
    }
    const { privateKey, document } = await this.recipient.current();
    this.kmsCalls += 1;
    let raw: unknown;
    try {
      raw = await this.kmsProxy.call(
        'kms.decrypt',
        { kmsKeyArn: blob.kmsKeyArn, ciphertextBlob: blob.wrappedKey.toString('base64'), attestationDocument: document.toString('base64') },
        { deadlineMs: this.options.deadlineMs },
      );
    } catch (err) {
      this.kmsErrors += 1;
      throw err;
    }
    const answer = parseOrThrow(DecryptAnswer, raw, 'kms.decrypt result', 'KEY_INTEGRITY');
    if (answer.keyId !== blob.kmsKeyArn) {
      throw new KeystoreError('KEY_INTEGRITY', `KMS answered for key ${answer.keyId.slice(0, 128)}, not ${blob.kmsKeyArn}`);
    }
    let dek: Buffer;
    try {
      dek = openEnvelopedData(Buffer.from(answer.ciphertextForRecipient, 'base64'), privateKey);
    } catch (err) {
      const why = err instanceof CmsError ? err.message : 'unreadable';
      throw new KeystoreError('KEY_INTEGRITY', `key ${blob.keyId}: the KMS answer does not open with this enclave's recipient key (${why})`);
    }
    let secret: Uint8Array;
    try {
      secret = openSealed(blob, dek);
    } finally {
      dek.fill(0);
    }
    if (!isValidSecret(secret)) {
      secret.fill(0);
      throw new KeystoreError('KEY_INTEGRITY', `key ${blob.keyId}: the unsealed secret is not a valid secp256k1 key`);
    }
    const address = addressOf(publicKeyOf(secret));
    if (address !== blob.address) {
      secret.fill(0);
      throw new KeystoreError('KEY_INTEGRITY', `key ${blob.keyId}: the unsealed key does not belong to address ${blob.address}`);
    }
    return { secret, address };
  }
}
