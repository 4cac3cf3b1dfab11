/**
 * What an HTTP server of this project answers for an error thrown while serving (the parent's API and the
 * enclave's wallet routes): our errors as they are; Fastify's client errors (FST_*, 4xx) by status; anything else
 * INTERNAL, whose text is never passed on.
 */
import { asKeystoreError, KeystoreError } from '../errors';

export function keystoreErrorOf(err: unknown, bodyLimit: number): KeystoreError {
  if (err instanceof KeystoreError) return err;
  const { code, statusCode } = (err ?? {}) as { code?: unknown; statusCode?: unknown };
  if (typeof code === 'string' && code.startsWith('FST_') && typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) {
    if (statusCode === 415) return new KeystoreError('UNSUPPORTED_MEDIA_TYPE', 'request body must be application/json', { cause: err });
    if (statusCode === 413)
      return new KeystoreError('PAYLOAD_TOO_LARGE', `request body exceeds the ${bodyLimit}-byte limit`, { cause: err });
    return new KeystoreError('INVALID_REQUEST', 'the request is malformed', { cause: err });
  }
  return asKeystoreError(err);
}
