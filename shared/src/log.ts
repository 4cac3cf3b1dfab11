/**
 * pino loggers for every program. Paths that could hold credentials or sealed material are redacted at the
 * logger, so a careless `log.info({params})` cannot leak them; code must still never log key material.
 *
 * Errors go under `err` (`log.warn({err}, '…')`), so the logged error keeps its whole `cause` chain.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import pino from 'pino';
import { REQUEST_ID_RE } from './identifiers';

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

export { REQUEST_ID_RE };

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

type StdoutDestination = ReturnType<typeof pino.destination>;

/** The stdout destinations `createLogger` made: what `drainLogs` waits for. */
const stdoutDestinations = new Set<StdoutDestination>();

/** Whether a destination still holds bytes or has a write in flight (sonic-boom has no public accessor for it). */
function pending(dest: StdoutDestination): boolean {
  const d = dest as unknown as { _len?: number; _writing?: boolean };
  return (d._len ?? 0) > 0 || d._writing === true;
}

/**
 * Before an orderly exit: waits until every stdout logger `createLogger` made has written what it holds, for at
 * most `maxMs`. A reader slower than the writes (a full pipe: sonic-boom retries every 100 ms) leaves a backlog,
 * and the synchronous flush at exit skips the chunk whose write is in flight: without this wait an exit could
 * lose up to 16 KiB of lines from inside the stream, audit lines included.
 */
export async function drainLogs(maxMs = 2_000): Promise<void> {
  const until = Date.now() + maxMs;
  for (const dest of stdoutDestinations) {
    try {
      dest.flush();
    } catch {
      // not ready yet, or stdout closed: nothing more can be written
    }
  }
  while ([...stdoutDestinations].some(pending) && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
}

export function createLogger({ name, level, destination, redact = true, bufferBytes = 0 }: LoggerOptions): Logger {
  let dest: pino.DestinationStream;
  if (destination) dest = destination;
  else {
    const out = pino.destination({ fd: 1, sync: false, minLength: bufferBytes });
    stdoutDestinations.add(out);
    if (bufferBytes > 0) {
      const timer = setInterval(() => out.flush(), 1000);
      timer.unref();
      // A crash that exits: best effort (drainLogs is for an orderly exit).
      process.once('exit', () => out.flushSync());
    }
    dest = out;
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
