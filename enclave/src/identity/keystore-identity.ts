/**
 * The keystore identity (docs/RECORDS.md): an Ed25519 key made at genesis, whose public key the enclave
 * configuration carries (so PCR0 measures it) and whose seed only an attested enclave can unseal. It signs
 * every key and project record, over SHA-256("nks-record-v1" ‖ canonical CBOR) (`recordDigest`); once at
 * genesis, its own sealed blob, over SHA-256("nks-identity-blob-v1" ‖ blob) (`identityBlobDigest`), so the
 * operator can tell the blob handed over is the one the enclave made; and each TLS blob it makes for the wallet
 * routes, over SHA-256("nks-tls-blob-v1" ‖ blob) (`tlsBlobDigest`), so it serves only keys it made (docs/TLS.md).
 * Nothing else: every signature of this key covers a digest whose preimage starts with one of those three
 * (prefix-free) tags.
 */
import { sign, type KeyObject } from 'node:crypto';
import { KeystoreError } from '@nks/shared/errors';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';
import {
  DEFAULT_PROJECT_ID,
  encodeRecord,
  identityBlobDigest,
  MAX_RECORD_BYTES,
  recordDigest,
  RECORD_VERSION,
  type AnyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { tlsBlobDigest } from '@nks/shared/tls-identity';
import { ed25519PrivateKey, ed25519RawPublicKey } from '../crypto/ed25519';

export class KeystoreIdentity {
  /** The raw 32-byte public key (what the identity attestation's user_data binds). */
  readonly rawPublicKey: Buffer;
  /** 0x-hex of the raw public key. */
  readonly publicKey: string;

  private constructor(private readonly privateKey: KeyObject) {
    this.rawPublicKey = ed25519RawPublicKey(privateKey);
    this.publicKey = `0x${this.rawPublicKey.toString('hex')}`;
  }

  /** The identity of a 32-byte seed. The caller zeroes its seed; OpenSSL keeps its own copy for the KeyObject. */
  static fromSeed(seed: Uint8Array): KeystoreIdentity {
    return new KeystoreIdentity(ed25519PrivateKey(seed));
  }

  /**
   * Signs a record: its canonical CBOR and the Ed25519 signature over its digest (both base64), and the digest.
   * Never a record over MAX_RECORD_BYTES: nobody (the enclave after a restart included) would verify it.
   */
  sign(record: AnyRecord): { signed: SignedRecord; digest: Buffer } {
    const bytes = encodeRecord(record);
    if (bytes.length > MAX_RECORD_BYTES) {
      throw new KeystoreError(
        'INVALID_PARAMS',
        `the record would be ${bytes.length} bytes, over the ${MAX_RECORD_BYTES} a record may have`,
      );
    }
    const digest = recordDigest(bytes);
    const signature = sign(null, digest, this.privateKey);
    return { signed: { record: bytes.toString('base64'), signature: signature.toString('base64') }, digest };
  }

  /** Signs its own sealed blob (genesis only): base64 of the signature over `identityBlobDigest(blob)`. */
  signOwnBlob(blob: Uint8Array): string {
    return sign(null, identityBlobDigest(blob), this.privateKey).toString('base64');
  }

  /** Signs a TLS blob it has just sealed (`tls.create`): base64 of the signature over `tlsBlobDigest(blob)`. */
  signTlsBlob(blob: Uint8Array): string {
    return sign(null, tlsBlobDigest(blob), this.privateKey).toString('base64');
  }
}

/** The project made at genesis: token-authorized, every request type, no browser origins, seq 0. */
export function defaultProjectRecord(createdAt: number): ProjectRecord {
  return {
    v: RECORD_VERSION,
    kind: 'project',
    projectId: DEFAULT_PROJECT_ID,
    projectKey: DEFAULT_PROJECT_ID,
    auth: { type: 'token' },
    allowedRequestTypes: [...SIGN_REQUEST_TYPES],
    allowedOrigins: [],
    state: 'active',
    seq: 0,
    prev: null,
    createdAt,
  };
}
