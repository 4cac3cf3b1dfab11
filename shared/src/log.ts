/**
 * pino loggers for every program. Paths that could hold credentials or sealed material are redacted at the
 * logger, so a careless `log.info({params})` cannot leak them; code must still never log key material.
 */
import pino from 'pino';

export type Logger = pino.Logger;

export const REDACT_PATHS = [
  'token',
  'authorization',
  'blob',
  'document',
  'attestationDocument',
  'ciphertextBlob',
  'ciphertextForRecipient',
  'wrappedKey',
  'ciphertext',
  '*.token',
  '*.authorization',
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

export interface LoggerOptions {
  name: string;
  level?: string;
  /** Defaults to stdout; tests pass a stream to capture lines. */
  destination?: pino.DestinationStream;
}

export function createLogger({ name, level, destination }: LoggerOptions): Logger {
  return pino(
    {
      name,
      level: level ?? process.env.LOG_LEVEL ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/** A logger that drops everything (unit tests that do not inspect logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
