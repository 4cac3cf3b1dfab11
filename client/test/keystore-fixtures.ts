/**
 * What a keystore would hand a client, made here the way the enclave makes it: an identity (Ed25519) that signs
 * key and project records over SHA-256("nks-record-v1" ‖ cbor), keys with real secp256k1 addresses, attestation
 * documents from a simulated Nitro CA with tagged user_data, and a genesis output with an identity blob the identity
 * signed over SHA-256("nks-identity-blob-v1" ‖ blob). The
 * tests then change one thing at a time and expect the verifier to say so.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { birthUserData } from '@nks/shared/attestation/user-data';
import { identityUserData } from '@nks/shared/attestation/identity';
import { BLOB_ALG, BLOB_VERSION, encodeBlob } from '@nks/shared/blob';
import {
  DEFAULT_PROJECT_ID,
  encodeRecord,
  identityPublicKeyHex,
  recordDigest,
  type KeyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';
import { SimulatedNitroCa } from '../../sim/src/nsm/ca';
import { signAttestationDocument } from '../../sim/src/nsm/document';

export const PCR0 = 'ab'.repeat(48);
export const OTHER_PCR0 = 'cd'.repeat(48);
export const GENESIS_PCR0 = 'ee'.repeat(48);
export const KMS_KEY_ARN = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

export interface Identity {
  privateKey: KeyObject;
  publicKey: string;
  sign(record: KeyRecord | ProjectRecord): SignedRecord;
}

export function makeIdentity(): Identity {
  const pair = generateKeyPairSync('ed25519');
  return {
    privateKey: pair.privateKey,
    publicKey: identityPublicKeyHex(pair.publicKey),
    sign(record) {
      const cbor = encodeRecord(record);
      return { record: cbor.toString('base64'), signature: sign(null, recordDigest(cbor), pair.privateKey).toString('base64') };
    },
  };
}

export function defaultProjectRecord(over: Partial<ProjectRecord> = {}): ProjectRecord {
  return {
    v: 1,
    kind: 'project',
    projectId: DEFAULT_PROJECT_ID,
    projectKey: DEFAULT_PROJECT_ID,
    auth: { type: 'token' },
    allowedRequestTypes: [...SIGN_REQUEST_TYPES],
    allowedOrigins: [],
    state: 'active',
    seq: 0,
    prev: null,
    createdAt: 1_767_225_600_000,
    ...over,
  };
}

export interface Documents {
  ca: SimulatedNitroCa;
  document(fields: { pcr0?: string; userData?: Buffer; nonce?: Buffer; timestamp?: number }): Promise<Buffer>;
}

export async function makeDocuments(): Promise<Documents> {
  const ca = await SimulatedNitroCa.open(null);
  return {
    ca,
    async document({ pcr0 = PCR0, userData, nonce, timestamp = Date.now() }) {
      const pcrs = new Map<number, Buffer>(
        Array.from({ length: 16 }, (_, i) => [i, i === 0 ? Buffer.from(pcr0, 'hex') : Buffer.alloc(48)]),
      );
      return signAttestationDocument(
        { moduleId: 'i-0123456789abcdef0-enc0000000000000001', timestamp, pcrs, userData, nonce },
        await ca.signer(),
      );
    },
  };
}

/** A key view as `GET /v1/keys/{keyId}` shows it, with its record signed by `identity`. */
export async function makeKeyView(
  identity: Identity,
  docs: Documents,
  {
    keyId = 'key-1',
    externalId = 'alice',
    attest = true,
    record: over = {},
  }: { keyId?: string; externalId?: string | null; attest?: boolean; record?: Partial<KeyRecord> } = {},
) {
  const account = privateKeyToAccount(generatePrivateKey());
  const record: KeyRecord = {
    v: 1,
    kind: 'key',
    keyId,
    address: account.address,
    blobSha256: `0x${randomBytes(32).toString('hex')}`,
    projectId: DEFAULT_PROJECT_ID,
    subject: externalId,
    state: 'active',
    disabled: false,
    seq: 0,
    prev: null,
    origin: 'created',
    createdAt: Date.now(),
    ...over,
  };
  return {
    account,
    record,
    view: {
      keyId,
      address: account.address,
      publicKey: account.publicKey,
      externalId,
      labels: {},
      createdAt: new Date(record.createdAt).toISOString(),
      disabled: record.disabled,
      projectId: record.projectId,
      state: record.state,
      record: identity.sign(record),
      ...(attest ? { attestation: (await docs.document({ userData: birthUserData(keyId, account.address) })).toString('base64') } : {}),
    },
  };
}

/** An identity blob as genesis seals it (the ciphertext is random here: nothing opens it in these tests). */
export function identityBlob(publicKey: string): string {
  return encodeBlob({
    v: BLOB_VERSION,
    kind: 'identity',
    alg: BLOB_ALG,
    kmsKeyArn: KMS_KEY_ARN,
    publicKey,
    createdAt: Date.now(),
    wrappedKey: randomBytes(256),
    iv: randomBytes(12),
    ciphertext: randomBytes(48),
  }).toString('base64');
}

/**
 * The identity's signature over its blob, as genesis makes it: Ed25519 over SHA-256("nks-identity-blob-v1" ‖ blob
 * bytes). Written out here rather than taken from shared/src/records.ts, so that the test states the format.
 */
export function signIdentityBlob(privateKey: KeyObject, blob: string, tag = 'nks-identity-blob-v1'): string {
  const digest = createHash('sha256').update(tag, 'utf8').update(Buffer.from(blob, 'base64')).digest();
  return sign(null, digest, privateKey).toString('base64');
}

/** What `parent genesis --out` writes, for a genesis image of GENESIS_PCR0 and the operator's `nonce`. */
export async function makeGenesisOutput(identity: Identity, docs: Documents, nonce: Buffer, { pcr0 = GENESIS_PCR0 } = {}) {
  const blob = identityBlob(identity.publicKey);
  return {
    publicKey: identity.publicKey,
    blob,
    blobSignature: signIdentityBlob(identity.privateKey, blob),
    attestation: (await docs.document({ pcr0, userData: identityUserData(identity.publicKey), nonce })).toString('base64'),
    defaultProject: identity.sign(defaultProjectRecord()),
    nonce: `0x${nonce.toString('hex')}`,
  };
}
