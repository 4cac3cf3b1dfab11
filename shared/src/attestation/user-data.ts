/**
 * What the enclave puts in an attestation document's `user_data` (docs/SECURITY.md, "Attestation user
 * data"). Every value is SHA-256(domain tag ‖ content), with the tag fixed by the enclave's own code path,
 * never by the parent: a document made for one purpose can never pass as evidence for another, and no
 * method lets the parent choose bytes that equal another path's value. The tags are prefix-free (no tag is a
 * prefix of another), so tag ‖ content is unambiguous.
 */
import { createHash } from 'node:crypto';
import { canonicalCbor } from '../cbor';
import { AttestationError } from './errors';

export const USER_DATA_TAGS = {
  /** `keys.create {attest: true}`: content = canonical CBOR of {keyId, address}. */
  birth: 'nks-birth-v1',
  /** The keystore identity made at genesis: content = its public key. */
  identity: 'nks-identity-v1',
  /** `attestation.get`: content = the caller's nonce (also in the document's `nonce` field), or nothing. */
  attestation: 'nks-attestation-v1',
  /** The document sent to KMS as `Recipient`: content = the recipient public key (DER SPKI). */
  kmsRecipient: 'nks-kms-recipient-v1',
  /** The wallet routes' TLS key (`GET /v1/tls/attestation`, `tls.create`): content = its DER SPKI. */
  tls: 'nks-tls-v1',
} as const;

export type UserDataTag = (typeof USER_DATA_TAGS)[keyof typeof USER_DATA_TAGS];

export function taggedUserData(tag: UserDataTag, content: Uint8Array = new Uint8Array(0)): Buffer {
  return createHash('sha256').update(tag).update(content).digest();
}

/** The content a birth attestation binds: canonical CBOR of {keyId, address} (address EIP-55 checksummed). */
export function birthContent(keyId: string, address: string): Buffer {
  return canonicalCbor({ keyId, address });
}

/** `user_data` of a birth attestation: proof that `address` was born in the enclave as key `keyId`. */
export function birthUserData(keyId: string, address: string): Buffer {
  return taggedUserData(USER_DATA_TAGS.birth, birthContent(keyId, address));
}

/**
 * The untagged birth value of version 0.1 (SHA-256 of canonical CBOR {keyId, address}). Those documents are
 * not evidence: `attestation.get` then put any parent-chosen bytes into `user_data`, so a parent could mint
 * one for an address of its own. Kept only to recognise such documents and say so.
 */
function legacyBirthUserData(keyId: string, address: string): Buffer {
  return createHash('sha256').update(birthContent(keyId, address)).digest();
}

/**
 * Checks a verified document's `user_data` is the birth value of {keyId, address}. Throws AttestationError
 * USER_DATA_MISMATCH, or LEGACY_BIRTH for a 0.1-era document, with a message that says why it is refused.
 */
export function checkBirthUserData(userData: Uint8Array | undefined, keyId: string, address: string): void {
  const actual = userData ? Buffer.from(userData) : undefined;
  if (actual?.equals(birthUserData(keyId, address))) return;
  if (actual?.equals(legacyBirthUserData(keyId, address))) {
    throw new AttestationError(
      'LEGACY_BIRTH',
      'birth attestation predates domain-tagged user data (nitro-keystore 0.1): a compromised parent could mint such a document for an address of its own, so it is not evidence. Ask the keystore for a current attestation of the key instead.',
    );
  }
  throw new AttestationError(
    'USER_DATA_MISMATCH',
    `attestation document: user_data is not the birth attestation of key ${keyId} with address ${address}`,
  );
}

/**
 * `user_data` of a TLS attestation: proof that the P-256 key with this DER SubjectPublicKeyInfo, the one the
 * wallet routes' certificate names, was made in and never left the enclave (docs/TLS.md).
 */
export function tlsUserData(spkiDer: Uint8Array): Buffer {
  return taggedUserData(USER_DATA_TAGS.tls, spkiDer);
}
