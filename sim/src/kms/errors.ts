/** KMS errors in AWS JSON 1.1 shape: `{"__type": Name, "message": ...}` with the status KMS uses. */
export type KmsErrorType =
  | 'AccessDeniedException'
  | 'DisabledException'
  | 'IncorrectKeyException'
  | 'InvalidCiphertextException'
  | 'InvalidKeyUsageException'
  | 'KMSInvalidStateException'
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
    this.status = SERVER_SIDE.has(type) ? 500 : 400;
  }
}
