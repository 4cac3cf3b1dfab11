/** Test helpers for shared/ unit tests: short temporary run directories and captured logs. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger, type Logger } from '../src/log';

/** Unix socket paths are limited to 107 bytes, so run directories live directly under the OS temp dir. */
export function tempRunDir(prefix = 'nks-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface CapturedLogger {
  logger: Logger;
  lines: () => Array<Record<string, unknown>>;
  text: () => string;
}

export function captureLogger(level = 'debug'): CapturedLogger {
  const raw: string[] = [];
  // The programs' own logger (redaction, error serializer), writing to memory.
  const logger = createLogger({ name: 'test', level, destination: { write: (s: string) => void raw.push(s) } });
  return {
    logger,
    lines: () => raw.map((l) => JSON.parse(l) as Record<string, unknown>),
    text: () => raw.join(''),
  };
}

export async function waitFor(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The error a promise rejects with; fails the test if it resolves. */
export async function rejection<E = import('../src/errors').KeystoreError>(p: Promise<unknown>): Promise<E> {
  try {
    await p;
  } catch (e) {
    return e as E;
  }
  throw new Error('expected a failure');
}
