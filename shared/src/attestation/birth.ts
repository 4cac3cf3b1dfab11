/**
 * A key's birth attestation: the document `keys.create {attest: true}` returns, whose `user_data` binds the
 * key id and address under the `nks-birth-v1` tag. Valid only if the document itself verifies (chain, PCRs,
 * …) and the binding is the current, domain-tagged one; 0.1-era documents are refused as LEGACY_BIRTH.
 *
 * PCR0 is required: the Nitro hypervisor signs documents for any image, so without it a parent could run an
 * image of its own that asks for exactly this user_data. Pass only the PCR0s of images you approve today
 * (never 0.1's: its attestation.get let the parent choose user_data).
 */
import { AttestationError } from './errors';
import { checkBirthUserData } from './user-data';
import { verifyAttestation, type VerifiedAttestation, type VerifyOptions } from './verify';

export type BirthVerifyOptions = Omit<VerifyOptions, 'expectedUserData'> & { expectedPcrs: NonNullable<VerifyOptions['expectedPcrs']> };

export function verifyBirthAttestation(
  document: Uint8Array,
  key: { keyId: string; address: string },
  options: BirthVerifyOptions,
): VerifiedAttestation {
  if (options.expectedPcrs?.[0] === undefined) {
    throw new AttestationError(
      'PCR_REQUIRED',
      'a birth attestation is evidence only together with the PCR0 of an image you approve: pass the expected PCR0',
    );
  }
  const verified = verifyAttestation(document, options);
  checkBirthUserData(verified.document.userData, key.keyId, key.address);
  return verified;
}
