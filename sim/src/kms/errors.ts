/** KMS errors in AWS JSON 1.1 shape: `{"__type": Name, "message": ...}` with the status KMS uses. */
export type KmsErrorCode =
  | 'AccessDeniedException'
  | 'DisabledException'
  | 'DryRunOperationException'
  | 'IncorrectKeyException'
  | 'InvalidCiphertextException'
  | 'InvalidKeyUsageException'
  | 'KMSInvalidStateException'
  | 'LimitExceededException'
  | 'MalformedPolicyDocumentException'
  | 'NotFoundException'
  | 'ThrottlingException'
  | 'ValidationException'
  | 'SerializationException'
  | 'UnknownOperationException'
  | 'UnsupportedOperationException'
  | 'KMSInternalException'
  | 'DependencyTimeoutException';

const SERVER_SIDE = new Set<KmsErrorCode>(['KMSInternalException', 'DependencyTimeoutException']);

export class KmsError extends Error {
  readonly status: number;
  constructor(
    readonly code: KmsErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    // KMS answers a DryRun that would have succeeded with HTTP 412 (DryRunOperationException).
    this.status = SERVER_SIDE.has(code) ? 500 : code === 'DryRunOperationException' ? 412 : 400;
  }
}
