/** KMS errors in AWS JSON 1.1 shape: `{"__type": Name, "message": ...}` with the status KMS uses. */
export type KmsErrorType =
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

const SERVER_SIDE = new Set<KmsErrorType>(['KMSInternalException', 'DependencyTimeoutException']);

export class KmsError extends Error {
  readonly status: number;
  constructor(
    readonly type: KmsErrorType,
    message: string,
  ) {
    super(message);
    // KMS answers a DryRun that would have succeeded with HTTP 412 (DryRunOperationException).
    this.status = SERVER_SIDE.has(type) ? 500 : type === 'DryRunOperationException' ? 412 : 400;
  }
}
