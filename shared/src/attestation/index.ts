export { verifyAttestation, type CheckTime, type CheckedAt, type VerifyOptions, type VerifiedAttestation } from './verify';
export {
  decodeAttestationDocument,
  decodeCoseSign1,
  decodeAttestationPayload,
  sigStructure,
  COSE_ALG_ES384,
  type AttestationDocument,
  type CoseSign1,
} from './document';
export { AttestationError, type AttestationErrorCode } from './errors';
export { AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256 } from './aws-root';
export { USER_DATA_TAGS, taggedUserData, birthContent, birthUserData, checkBirthUserData, type UserDataTag } from './user-data';
export { verifyBirthAttestation, type BirthVerifyOptions } from './birth';
