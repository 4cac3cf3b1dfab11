/**
 * The keystore identity's attestations (docs/RECORDS.md, "The keystore identity"): the genesis document that
 * `identity.genesis` returned (nonce = the operator's) and every fresh document of `identity.get` (nonce = the
 * caller's) carry `user_data` = SHA-256("nks-identity-v1" ‖ the raw 32-byte Ed25519 public key). Such a document
 * is evidence that the identity is held by an enclave running the image of its PCR0, so PCR0 is required, as
 * for a birth attestation: the Nitro hypervisor signs documents for any image, and any image can ask for this
 * user_data. For the genesis document, pass the genesis image's PCR0; for a live document, the PCR0 of an image
 * you approve.
 *
 * Used by the SDK and the CLI (`nks identity`, `nks genesis verify`).
 */
import { IDENTITY_PUBLIC_KEY_RE } from '../identifiers';
import { AttestationError } from './errors';
import { taggedUserData, USER_DATA_TAGS } from './user-data';
import { verifyAttestation, type VerifiedAttestation, type VerifyOptions } from './verify';

export type IdentityVerifyOptions = Omit<VerifyOptions, 'expectedUserData'> & { expectedPcrs: NonNullable<VerifyOptions['expectedPcrs']> };

/** `user_data` of an identity document: SHA-256("nks-identity-v1" ‖ raw public key). */
export function identityUserData(publicKeyHex: string): Buffer {
  if (!IDENTITY_PUBLIC_KEY_RE.test(publicKeyHex)) {
    throw new AttestationError('USER_DATA_MISMATCH', 'the identity public key is not 32 bytes of 0x-prefixed lower-case hex');
  }
  return taggedUserData(USER_DATA_TAGS.identity, Buffer.from(publicKeyHex.slice(2), 'hex'));
}

/**
 * Checks `document` is an identity attestation for `publicKeyHex`: the document verifies (chain at `options.at`,
 * the current time by default; signature, the expected PCRs, nonce and freshness when asked) and its user_data binds
 * exactly this public key. Throws AttestationError: PCR_REQUIRED without PCR0, USER_DATA_MISMATCH for another key.
 */
export function verifyIdentityAttestation(document: Uint8Array, publicKeyHex: string, options: IdentityVerifyOptions): VerifiedAttestation {
  if (options.expectedPcrs?.[0] === undefined) {
    throw new AttestationError(
      'PCR_REQUIRED',
      'an identity attestation is evidence only together with the PCR0 of the image it claims: pass the expected PCR0',
    );
  }
  const expectedUserData = identityUserData(publicKeyHex);
  const verified = verifyAttestation(document, options);
  const actual = verified.document.userData;
  if (!actual?.equals(expectedUserData)) {
    throw new AttestationError('USER_DATA_MISMATCH', `attestation document: user_data is not the identity attestation of ${publicKeyHex}`);
  }
  return verified;
}
