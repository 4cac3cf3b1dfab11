/** Why an attestation document was refused: every failure has its own code. */
export type AttestationErrorCode =
  | 'MALFORMED'
  | 'UNSUPPORTED_ALGORITHM'
  | 'BAD_SIGNATURE'
  | 'UNTRUSTED_ROOT'
  | 'CHAIN_BROKEN'
  | 'CERT_EXPIRED'
  | 'CERT_NOT_YET_VALID'
  | 'CERT_CONSTRAINTS'
  | 'UNKNOWN_CRITICAL_EXTENSION'
  | 'DEBUG_MODE'
  | 'STALE'
  | 'FROM_THE_FUTURE'
  | 'NONCE_MISMATCH'
  | 'USER_DATA_MISMATCH'
  | 'LEGACY_BIRTH'
  | 'PCR_REQUIRED'
  | 'PCR_MISMATCH'
  | 'MISSING_PUBLIC_KEY';

export class AttestationError extends Error {
  override readonly name = 'AttestationError';
  constructor(
    readonly code: AttestationErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
