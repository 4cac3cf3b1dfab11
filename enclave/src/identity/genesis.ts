/**
 * Genesis (docs/RECORDS.md): the genesis image makes a keystore identity for the operator, who puts the
 * output into the enclave configuration of the images that use it (measuring its public key into their PCR0).
 *
 * Each call makes a new identity: a fresh Ed25519 seed, sealed as an identity blob exactly as keys are (no
 * KMS call; only an attested enclave can have KMS unwrap it), the `default` project's record signed with it,
 * and an attestation document whose user_data is SHA-256("nks-identity-v1" ‖ raw public key) and whose nonce
 * is the operator's, proving the key was made by this image, now. The identity also signs its own blob
 * (`blobSignature`), so the operator can check off-host that the blob handed over by the host is the one this
 * enclave sealed, not another identity-kind blob for the same public key that would never open. The seed is
 * zeroed before returning.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { BLOB_ALG, BLOB_VERSION, encodeBlob } from '@nks/shared/blob';
import type { GenesisResult } from '@nks/shared/enclave-api';
import { ED25519_SEED_BYTES } from '../crypto/ed25519';
import { sealBlob } from '../keys/seal';
import type { NsmClient } from '../nsm/client';
import { defaultProjectRecord, KeystoreIdentity } from './keystore-identity';

export interface GenesisDeps {
  nsm: NsmClient;
  kmsKeyArn: string;
  kmsPublicKey: KeyObject;
  now?: () => number;
}

export async function genesis(deps: GenesisDeps, nonce: Uint8Array): Promise<GenesisResult> {
  // On its own ArrayBuffer, so zeroing reaches the only copy JavaScript holds (see crypto/secp256k1.ts, signDigest).
  const seed = new Uint8Array(new ArrayBuffer(ED25519_SEED_BYTES));
  const random = randomBytes(ED25519_SEED_BYTES);
  seed.set(random);
  random.fill(0);
  let identity: KeystoreIdentity;
  let blob: Buffer;
  try {
    identity = KeystoreIdentity.fromSeed(seed);
    const sealed = sealBlob(
      seed,
      { v: BLOB_VERSION, kind: 'identity', alg: BLOB_ALG, kmsKeyArn: deps.kmsKeyArn, publicKey: identity.publicKey },
      { kmsPublicKey: deps.kmsPublicKey },
    );
    blob = encodeBlob(sealed);
  } finally {
    seed.fill(0);
  }
  const now = deps.now?.() ?? Date.now();
  const defaultProject = identity.sign(defaultProjectRecord(now)).signed;
  const document = await deps.nsm.attest({ tag: USER_DATA_TAGS.identity, content: identity.rawPublicKey, nonce });
  return {
    publicKey: identity.publicKey,
    blob: blob.toString('base64'),
    blobSignature: identity.signOwnBlob(blob),
    attestation: document.toString('base64'),
    defaultProject,
  };
}
