/**
 * The KMS attestation proxy, serving `kms.decrypt` (docs/PROTOCOL.md, "Methods"; docs/SEALING.md, "Unsealing"):
 * the enclave has no network, so the parent calls AWS KMS for it with the enclave's attestation document as
 * `Recipient`. KMS then answers with CMS that only the attested enclave can open; the parent never holds
 * plaintext.
 *
 * Rules: only configured key ARNs; never a request without an attestation document; throttling and 5xx
 * retried with jittered backoff inside the request deadline; KMS errors mapped to the shared error codes; a
 * response that carries plaintext (impossible with Recipient, but checked) is refused.
 *
 * Time (shared/src/deadlines.ts): one decrypt has `kmsBudgetMs` in all (its own deadline, never more than the
 * enclave's time left less a margin), each KMS request at most `attemptMs` of it; the fault met last is what the
 * enclave is told. Outages are counted: `consecutiveFailures` decrypts in a row that KMS did not answer
 * (unreachable, 5xx, throttled, silent), reset by any answer; the parent's /readyz reports `kms: false` from
 * `KMS_UNREADY_AFTER` on (docs/OPERATIONS.md, "Readiness").
 */
import { DecryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { backoffDelay, type BackoffOptions } from '@nks/shared/backoff';
import { DEADLINES, innerDeadlineMs } from '@nks/shared/deadlines';
import { KeystoreError, type ErrorCode } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import { KmsProxyApi, type KmsDecryptResult } from '@nks/shared/enclave-api';
import { RpcServer, serveApi, type ValidParamsOf } from '@nks/shared/rpc';
import type { Listener, Transport } from '@nks/shared/transport';

export interface KmsProxyOptions {
  client: KMSClient;
  allowedKeyArns: string[];
  deadlineMs: number;
  maxConcurrent: number;
  logger: Logger;
  /** One KMS request's time (default DEADLINES.kmsAttemptMs): a KMS that says nothing is asked again. */
  attemptMs?: number;
  onCall?: (outcome: string, seconds: number) => void;
  /** Each change of `consecutiveFailures`. */
  onFailureStreak?: (consecutiveFailures: number) => void;
}

interface AwsError {
  name?: string;
  message?: string;
  code?: string;
  $fault?: 'client' | 'server';
  $metadata?: { httpStatusCode?: number; requestId?: string; extendedRequestId?: string };
  cause?: unknown;
}

/** Consecutive decrypts KMS did not answer from which the parent's `kms` readiness check fails. */
export const KMS_UNREADY_AFTER = 3;

/** Outcomes that mean KMS did not answer (an outage), as opposed to an answer (even a refusal). */
const OUTAGE = new Set(['KMS_UNAVAILABLE', 'KMS_THROTTLED', 'TIMEOUT', 'no_recipient_ciphertext']);

const NETWORK_CODE = /^E[A-Z_]{2,}$/;
const NETWORK_CODE_IN_TEXT = /\b(E(?:CONN[A-Z]+|TIMEDOUT|NOTFOUND|AI_AGAIN|HOSTUNREACH|NETUNREACH|PIPE))\b/;

/**
 * What the log needs to tell a KMS fault from another (the SDK's error is otherwise logged as "Error"): its
 * name, HTTP status, AWS request id and the network error's code (ECONNREFUSED, ECONNRESET, ...). Only the
 * parent's log gets this; the enclave gets the code and message.
 */
export function kmsErrorDetail(err: unknown): { name: string; httpStatus?: number; requestId?: string; networkCode?: string } {
  const e = (err ?? {}) as AwsError;
  // The SDK may wrap the socket's error ("AWS SDK error wrapper for Error: connect ECONNREFUSED ..."): the code
  // is on it, on an error under it, or only in its message.
  let networkCode: string | undefined;
  let at: AwsError | undefined = e;
  for (let depth = 0; at && depth < 4 && !networkCode; depth++, at = at.cause as AwsError | undefined) {
    if (typeof at.code === 'string' && NETWORK_CODE.test(at.code)) networkCode = at.code;
  }
  networkCode ??= NETWORK_CODE_IN_TEXT.exec(typeof e.message === 'string' ? e.message : '')?.[1];
  return {
    name: e.name ?? 'Error',
    ...(e.$metadata?.httpStatusCode !== undefined ? { httpStatus: e.$metadata.httpStatusCode } : {}),
    ...(e.$metadata?.requestId ? { requestId: e.$metadata.requestId } : {}),
    ...(networkCode ? { networkCode } : {}),
  };
}

/** The least time a KMS attempt is given: a retry that would have less left is not started. */
export const KMS_MIN_ATTEMPT_MS = 100;

/** Retries of a failed KMS call wait 25-50 ms, then 50-100 ms, …, at most 1 s (all within the deadline). */
export const KMS_RETRY_BACKOFF: Readonly<BackoffOptions> = { initialMs: 50, maxMs: 1000 };

/**
 * The proxy's time for one decrypt: its own deadline, and never more than the enclave waits (its `deadlineMs`)
 * less a margin for the answer's trip back (a fifth of it, at most 500 ms).
 */
export function kmsBudgetMs(ownMs: number, enclaveMs: number | undefined): number {
  return innerDeadlineMs(ownMs, enclaveMs);
}

/** KMS errors that are worth another attempt even without a 5xx status (KMS lists them as transient). */
const TRANSIENT = new Set([
  'KMSInternalException',
  'DependencyTimeoutException',
  'KeyUnavailableException',
  'ServiceUnavailableException',
  'RequestTimeout',
  'TimeoutError',
]);

/**
 * KMS (or transport) error -> the shared error code the enclave and callers understand. Only throttling, 5xx and
 * transport failures are retryable; every other refusal is final and keeps KMS's error name and message
 * (an unknown 4xx is `KMS_REJECTED`, not a retried "unavailable"). The SDK's error stays as `cause` for the
 * log (its request id, HTTP status, the network error under it); only code and message reach the enclave.
 */
export function mapKmsError(err: unknown): KeystoreError {
  const e = err as AwsError;
  const name = e?.name ?? 'Error';
  const text = (e?.message ?? '').split('\n')[0]?.slice(0, 300) ?? '';
  const status = e?.$metadata?.httpStatusCode ?? 0;
  const of = (code: ErrorCode, what: string) => new KeystoreError(code, `KMS ${name}: ${what}`, { cause: err });
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
      return /attestation/i.test(text) ? of('ATTESTATION_FAILED', text) : of('KMS_REJECTED', text || 'the request is not valid');
    default:
      if (e?.$fault === 'server' || status >= 500 || TRANSIENT.has(name)) return of('KMS_UNAVAILABLE', text || 'service error');
      if (e?.$fault === 'client' || (status >= 400 && status < 500))
        return of('KMS_REJECTED', text || `refused the request (HTTP ${status || '4xx'})`);
      // No answer from KMS at all (connection refused or reset, DNS, TLS): the transport, retried.
      return new KeystoreError('KMS_UNAVAILABLE', `KMS could not be reached: ${name}${text ? `: ${text}` : ''}`, { cause: err });
  }
}

export class KmsProxy {
  readonly server: RpcServer;
  private readonly allowed: Set<string>;
  private streak = 0;

  constructor(private readonly options: KmsProxyOptions) {
    this.allowed = new Set(options.allowedKeyArns);
    this.server = new RpcServer({
      name: 'kms-proxy',
      logger: options.logger,
      maxConcurrent: options.maxConcurrent,
      methods: serveApi(KmsProxyApi, { 'kms.decrypt': (p, ctx) => this.decrypt(p, ctx.requestId) }),
    });
  }

  /** Decrypts in a row that KMS did not answer (0 after any answer). */
  get consecutiveFailures(): number {
    return this.streak;
  }

  /** The `kms` readiness check: fewer than KMS_UNREADY_AFTER decrypts in a row without an answer from KMS. */
  get kmsReady(): boolean {
    return this.streak < KMS_UNREADY_AFTER;
  }

  listen(transport: Transport, address: string): Promise<Listener> {
    return this.server.listen(transport, address);
  }

  /** `requestId` (the caller's, off the envelope) is on every log line of this Decrypt, tying it to the API request. */
  async decrypt(p: ValidParamsOf<KmsProxyApi, 'kms.decrypt'>, requestId?: string): Promise<KmsDecryptResult> {
    const log = this.options.logger.child({ requestId }); // pino leaves out a binding that is undefined
    if (!this.allowed.has(p.kmsKeyArn)) {
      throw new KeystoreError('KMS_KEY_NOT_ALLOWED', `KMS key ${p.kmsKeyArn} is not in this parent's allowedKeyArns`);
    }
    const document = Buffer.from(p.attestationDocument, 'base64');
    if (document.length === 0)
      throw new KeystoreError('INVALID_PARAMS', 'kms.decrypt needs an attestation document; the proxy never asks KMS for plaintext');

    const started = Date.now();
    const budgetMs = kmsBudgetMs(this.options.deadlineMs, p.deadlineMs);
    const deadline = started + budgetMs;
    const attemptMs = this.options.attemptMs ?? DEADLINES.kmsAttemptMs;
    const timeout = (cause?: unknown) => new KeystoreError('TIMEOUT', `KMS did not answer within ${budgetMs} ms`, { cause });
    // The failure being retried: if the deadline ends a retry, that failure (say KMS_THROTTLED) is the reason
    // the caller gets, not TIMEOUT (the retry was cut short; KMS did not go silent).
    let retrying: KeystoreError | undefined;
    for (let attempt = 0; ; attempt++) {
      const attemptStarted = Date.now();
      const remaining = deadline - attemptStarted;
      if (remaining <= 0) throw this.finish(retrying ?? timeout(), started, log);
      // The last attempt that fits gets all the time left; an earlier one at most attemptMs.
      const attemptTimeout = Math.min(remaining, attemptMs);
      const signal = AbortSignal.timeout(attemptTimeout);
      try {
        const res = await this.options.client.send(
          new DecryptCommand({
            KeyId: p.kmsKeyArn,
            CiphertextBlob: Buffer.from(p.ciphertextBlob, 'base64'),
            EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
            Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: document },
          }),
          { abortSignal: signal },
        );
        if (res.Plaintext && res.Plaintext.length > 0) {
          res.Plaintext.fill(0);
          throw this.finish(
            new KeystoreError('INTERNAL', 'KMS returned plaintext to an attested request; refusing to relay it'),
            started,
            log,
            'plaintext',
          );
        }
        if (!res.CiphertextForRecipient?.length)
          throw this.finish(
            new KeystoreError('KMS_UNAVAILABLE', 'KMS returned no CiphertextForRecipient'),
            started,
            log,
            'no_recipient_ciphertext',
          );
        this.options.onCall?.('ok', (Date.now() - started) / 1000);
        this.setStreak(0);
        // One line per Decrypt.
        log.info({ outcome: 'ok', attempts: attempt + 1, ms: Date.now() - started }, 'KMS decrypt');
        return { ciphertextForRecipient: Buffer.from(res.CiphertextForRecipient).toString('base64'), keyId: res.KeyId ?? p.kmsKeyArn };
      } catch (err) {
        if (err instanceof KeystoreError) throw err;
        const delay = backoffDelay(attempt, KMS_RETRY_BACKOFF);
        // A retry starts only if it can finish: the backoff plus as long as this attempt took (at least
        // KMS_MIN_ATTEMPT_MS) must fit before the deadline. Otherwise this failure is the answer.
        const fits = Date.now() + delay + Math.max(KMS_MIN_ATTEMPT_MS, Date.now() - attemptStarted) <= deadline;
        if ((err as Error)?.name === 'AbortError') {
          // KMS said nothing within attemptMs and time is left: asked again. Otherwise (the whole budget gone, or
          // an abort that was not this attempt's timeout) the answer is the failure being retried, or TIMEOUT.
          if (!(signal.aborted && attemptTimeout < remaining && fits)) throw this.finish(retrying ?? timeout(err), started, log);
          log.warn({ attempt: attempt + 1, code: 'TIMEOUT', attemptMs: attemptTimeout, delayMs: delay }, 'KMS call failed; retrying');
          await new Promise((r) => setTimeout(r, delay));
          continue;
        }
        const mapped = mapKmsError(err);
        if (!mapped.retryable || !fits) throw this.finish(mapped, started, log);
        retrying = mapped;
        log.warn(
          { err: mapped, kms: kmsErrorDetail(err), attempt: attempt + 1, code: mapped.code, delayMs: delay },
          'KMS call failed; retrying',
        );
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Counts and logs the failure the enclave gets; the log line's `err` carries the KMS SDK error as its cause. */
  private finish(err: KeystoreError, started: number, log: Logger, outcome: string = err.code): KeystoreError {
    this.options.onCall?.(outcome, (Date.now() - started) / 1000);
    this.setStreak(OUTAGE.has(outcome) ? this.streak + 1 : 0);
    const ms = Date.now() - started;
    log.warn(
      { err, code: err.code, outcome, ms, consecutiveFailures: this.streak, ...(err.cause ? { kms: kmsErrorDetail(err.cause) } : {}) },
      `KMS decrypt refused: ${err.message}`,
    );
    return err;
  }

  private setStreak(n: number): void {
    if (n === this.streak) return;
    this.streak = n;
    this.options.onFailureStreak?.(n);
  }

  close(drainMs: number): Promise<void> {
    return this.server.close(drainMs);
  }
}
