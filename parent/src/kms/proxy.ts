/**
 * The KMS attestation proxy (DESIGN §3, §4): the enclave has no network, so the parent calls AWS KMS for it
 * with the enclave's attestation document as `Recipient`. KMS then answers with CMS that only the attested
 * enclave can open; the parent never holds plaintext.
 *
 * Rules: only configured key ARNs; never a request without an attestation document; throttling and 5xx
 * retried with jittered backoff inside the request deadline; KMS errors mapped to the shared reasons; a
 * response that carries plaintext (impossible with Recipient, but checked) is refused.
 */
import { DecryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { KeystoreError, type ErrorReason } from '../../../shared/src/errors';
import type { Logger } from '../../../shared/src/log';
import { KmsDecryptParams, KmsProxyMethods, type KmsDecryptResult } from '../../../shared/src/protocol';
import { backoffDelay, RpcServer, rpcMethod } from '../../../shared/src/rpc';
import type { Listener, Transport } from '../../../shared/src/transport';

export interface KmsProxyOptions {
  client: KMSClient;
  allowedKeyArns: string[];
  deadlineMs: number;
  maxConcurrent: number;
  logger: Logger;
  onCall?: (outcome: string, seconds: number) => void;
}

interface AwsError {
  name?: string;
  message?: string;
  $fault?: 'client' | 'server';
  $metadata?: { httpStatusCode?: number };
}

const RETRYABLE = new Set(['ThrottlingException', 'KMSInternalException', 'DependencyTimeoutException', 'KeyUnavailableException', 'ServiceUnavailableException', 'RequestTimeout', 'TimeoutError']);

/** KMS (or transport) error -> the shared reason the enclave and callers understand. */
export function mapKmsError(err: unknown): KeystoreError {
  const e = err as AwsError;
  const name = e?.name ?? 'Error';
  const text = (e?.message ?? '').split('\n')[0]?.slice(0, 300) ?? '';
  const of = (reason: ErrorReason, what: string) => new KeystoreError(reason, `KMS ${name}: ${what}`);
  switch (name) {
    case 'AccessDeniedException':
      return of('KMS_ACCESS_DENIED', `${text} (is this enclave image approved in the key policy?)`);
    case 'ThrottlingException':
      return of('KMS_THROTTLED', text || 'rate exceeded');
    case 'InvalidCiphertextException':
    case 'IncorrectKeyException':
      return of('KMS_INVALID_CIPHERTEXT', text || 'the wrapped key does not decrypt under this KMS key');
    case 'NotFoundException':
    case 'DisabledException':
    case 'KMSInvalidStateException':
    case 'InvalidKeyUsageException':
      return of('KMS_ACCESS_DENIED', text || 'the KMS key cannot be used');
    case 'ValidationException':
      return /attestation/i.test(text) ? of('ATTESTATION_FAILED', text) : of('KMS_UNAVAILABLE', text);
    default:
      if (e?.$fault === 'server' || (e?.$metadata?.httpStatusCode ?? 0) >= 500 || RETRYABLE.has(name)) return of('KMS_UNAVAILABLE', text || 'service error');
      return new KeystoreError('KMS_UNAVAILABLE', `KMS call failed: ${name}`);
  }
}

export class KmsProxy {
  readonly server: RpcServer;
  private readonly allowed: Set<string>;

  constructor(private readonly options: KmsProxyOptions) {
    this.allowed = new Set(options.allowedKeyArns);
    this.server = new RpcServer({
      name: 'kms-proxy',
      logger: options.logger,
      maxConcurrent: options.maxConcurrent,
      methods: { [KmsProxyMethods.decrypt]: rpcMethod(KmsDecryptParams, (p) => this.decrypt(p)) },
    });
  }

  listen(transport: Transport, address: string): Promise<Listener> {
    return this.server.listen(transport, address);
  }

  async decrypt(p: { kmsKeyArn: string; ciphertextBlob: string; attestationDocument: string }): Promise<KmsDecryptResult> {
    if (!this.allowed.has(p.kmsKeyArn)) {
      throw new KeystoreError('KMS_KEY_NOT_ALLOWED', `KMS key ${p.kmsKeyArn} is not in this parent's allowedKeyArns`);
    }
    const document = Buffer.from(p.attestationDocument, 'base64');
    if (document.length === 0) throw new KeystoreError('INVALID_PARAMS', 'kms.decrypt needs an attestation document; the proxy never asks KMS for plaintext');

    const started = Date.now();
    const deadline = started + this.options.deadlineMs;
    for (let attempt = 0; ; attempt++) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw this.finish('TIMEOUT', started, new KeystoreError('TIMEOUT', `KMS did not answer within ${this.options.deadlineMs} ms`));
      try {
        const res = await this.options.client.send(
          new DecryptCommand({
            KeyId: p.kmsKeyArn,
            CiphertextBlob: Buffer.from(p.ciphertextBlob, 'base64'),
            EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
            Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: document },
          }),
          { abortSignal: AbortSignal.timeout(remaining) },
        );
        if (res.Plaintext && res.Plaintext.length > 0) {
          res.Plaintext.fill(0);
          throw this.finish('plaintext', started, new KeystoreError('INTERNAL', 'KMS returned plaintext to an attested request; refusing to relay it'));
        }
        if (!res.CiphertextForRecipient?.length) throw this.finish('no_recipient_ciphertext', started, new KeystoreError('KMS_UNAVAILABLE', 'KMS returned no CiphertextForRecipient'));
        this.options.onCall?.('ok', (Date.now() - started) / 1000);
        return { ciphertextForRecipient: Buffer.from(res.CiphertextForRecipient).toString('base64'), keyId: res.KeyId ?? p.kmsKeyArn };
      } catch (err) {
        if (err instanceof KeystoreError) throw err;
        const mapped = (err as Error)?.name === 'AbortError' ? new KeystoreError('TIMEOUT', `KMS did not answer within ${this.options.deadlineMs} ms`) : mapKmsError(err);
        const delay = backoffDelay(attempt, { initialMs: 50, maxMs: 1000 });
        if (!mapped.retryable || mapped.reason === 'TIMEOUT' || Date.now() + delay >= deadline) throw this.finish(mapped.reason, started, mapped);
        this.options.logger.warn({ attempt: attempt + 1, reason: mapped.reason, delayMs: delay }, 'KMS call failed; retrying');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private finish(outcome: string, started: number, err: KeystoreError): KeystoreError {
    this.options.onCall?.(outcome, (Date.now() - started) / 1000);
    this.options.logger.warn({ reason: err.reason, outcome }, `KMS decrypt refused: ${err.message}`);
    return err;
  }

  close(drainMs: number): Promise<void> {
    return this.server.close(drainMs);
  }
}
