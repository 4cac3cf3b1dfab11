/**
 * pino loggers for every program. Paths that could hold credentials or sealed material are redacted at the
 * logger, so a careless `log.info({params})` cannot leak them; code must still never log key material.
 *
 * Errors go under `err` (`log.warn({err}, '…')`), so the logged error keeps its whole `cause` chain.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import pino from 'pino';

export type Logger = pino.Logger;

/** The levels a program's `logLevel` setting takes. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const DEFAULT_LOG_LEVEL: LogLevel = 'info';

export const REDACT_PATHS = [
  'token',
  'authorization',
  'jwt',
  'jwt_token',
  'blob',
  'document',
  'attestationDocument',
  'ciphertextBlob',
  'ciphertextForRecipient',
  'wrappedKey',
  'ciphertext',
  '*.token',
  '*.authorization',
  '*.jwt',
  '*.jwt_token',
  '*.blob',
  '*.document',
  '*.attestationDocument',
  '*.ciphertextBlob',
  '*.ciphertextForRecipient',
  '*.wrappedKey',
  '*.ciphertext',
  'req.headers.authorization',
  'headers.authorization',
];

/**
 * The serializer for `err`: pino's standard one, which appends each cause's message to `err.message`
 * ("outer: cause: …") and its stack to `err.stack` ("caused by: …"). It copies the enumerable fields of the
 * outermost error only (a KeystoreError's code and retryable), never a cause's: a wrapped library error's
 * fields (an AWS SDK error's raw HTTP response, a request it kept) stay out of the log. pino's
 * `errWithCause` would copy them all.
 */
export const ERROR_SERIALIZERS = { err: pino.stdSerializers.err };

/**
 * The request id of the call being served (the API's `x-request-id`, carried on the RPC envelope: docs/PROTOCOL.md,
 * "Envelopes"), for log lines only. Every logger made by `createLogger` adds it as `requestId` to the lines
 * written while a call runs, so one call can be followed through the parent, the enclave and the KMS proxy.
 */
const requestContext = new AsyncLocalStorage<{ requestId: string }>();

/**
 * What a request id may be, on the API (`x-request-id`) and on the RPC envelope: 1-128 characters of
 * `[A-Za-z0-9_.:-]`, no control characters, quotes or JSON. The same rule as the API server's.
 */
export const REQUEST_ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;

/** Runs `fn` with `requestId` as the current request id (an id that is not valid is not used). */
export function withRequestId<T>(requestId: string | undefined, fn: () => T): T {
  if (requestId === undefined || !REQUEST_ID_RE.test(requestId)) return fn();
  return requestContext.run({ requestId }, fn);
}

/** Runs `fn` outside any request's context (work of the process's own, started by a request). */
export function outsideRequest<T>(fn: () => T): T {
  return requestContext.exit(fn);
}

/** The request id of the call being served, if any. */
export function currentRequestId(): string | undefined {
  return requestContext.getStore()?.requestId;
}

const requestIdMixin = (): object => {
  const store = requestContext.getStore();
  return store ? { requestId: store.requestId } : {};
};

export interface LoggerOptions {
  name: string;
  level?: string;
  /**
   * Turn the redaction off only for loggers whose every call logs a fixed set of safe fields (the parent's
   * access log, one line per request): redaction is the costliest part of a log call on a hot path.
   */
  redact?: boolean;
  /**
   * Buffer this many bytes before writing (0: write each line as it comes). A busy access log batches its
   * lines into fewer writes; `createLogger` flushes it every second and on exit.
   */
  bufferBytes?: number;
  /** Defaults to stdout; tests pass a stream to capture lines. */
  destination?: pino.DestinationStream;
}

export function createLogger({ name, level, destination, redact = true, bufferBytes = 0 }: LoggerOptions): Logger {
  const dest = destination ?? pino.destination({ fd: 1, sync: false, minLength: bufferBytes });
  if (bufferBytes > 0 && !destination) {
    const timer = setInterval(() => (dest as ReturnType<typeof pino.destination>).flush(), 1000);
    timer.unref();
    process.once('exit', () => (dest as ReturnType<typeof pino.destination>).flushSync());
  }
  return pino(
    {
      name,
      level: level ?? process.env.LOG_LEVEL ?? DEFAULT_LOG_LEVEL,
      ...(redact ? { redact: { paths: REDACT_PATHS, censor: '[redacted]' } } : {}),
      serializers: ERROR_SERIALIZERS,
      base: { pid: process.pid },
      // A line's own `requestId` field wins over the current one.
      mixin: requestIdMixin,
    },
    dest,
  );
}

/** A logger that drops everything (unit tests that do not inspect logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
