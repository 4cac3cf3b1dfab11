/**
 * A key's birth attestation: the document `keys.create {attest: true}` returns, whose `user_data` binds the
 * key id and address under the `nks-birth-v1` tag. Valid only if the document itself verifies (chain, PCRs,
 * …) and the binding is the current, domain-tagged one; 0.1-era documents are refused as LEGACY_BIRTH.
 */
import { checkBirthUserData } from './user-data';
import { verifyAttestation, type VerifiedAttestation, type VerifyOptions } from './verify';

export function verifyBirthAttestation(
  document: Uint8Array,
  key: { keyId: string; address: string },
  options: Omit<VerifyOptions, 'expectedUserData'> = {},
): VerifiedAttestation {
  const verified = verifyAttestation(document, options);
  checkBirthUserData(verified.document.userData, key.keyId, key.address);
  return verified;
}
