/**
 * How the CLI finds the API: `--url`/`--token` flags, then `NKS_URL`/`NKS_TOKEN`, then the local dev stack's
 * state (`<dev-dir>/dev.json` and `<dev-dir>/token`, `--dev-dir` default `.dev`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { KeystoreClient } from '../sdk';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface ApiTarget {
  url: string;
  token: string;
}

export function resolveApiTarget(
  flags: { url?: string | undefined; token?: string | undefined; 'dev-dir'?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
): ApiTarget {
  const devDir = path.resolve(flags['dev-dir'] || env.NKS_DEV_DIR || '.dev');
  const readDev = <T>(file: string, parse: (s: string) => T): T | undefined => {
    try {
      return parse(fs.readFileSync(path.join(devDir, file), 'utf8'));
    } catch {
      return undefined;
    }
  };
  const url = flags.url ?? env.NKS_URL ?? readDev('dev.json', (s) => (JSON.parse(s) as { url?: string }).url);
  const token = flags.token ?? env.NKS_TOKEN ?? readDev('token', (s) => s.trim());
  if (!url)
    throw new UsageError(
      `no API URL: pass --url, set NKS_URL, or start the local stack (npm run dev) so ${path.join(devDir, 'dev.json')} exists`,
    );
  if (!token)
    throw new UsageError(`no token: pass --token, set NKS_TOKEN, or start the local stack so ${path.join(devDir, 'token')} exists`);
  return { url, token };
}

export function clientFor(flags: Parameters<typeof resolveApiTarget>[0]): KeystoreClient {
  const c = resolveApiTarget(flags);
  return new KeystoreClient({ url: c.url, token: c.token });
}

/** Reads a file argument; `-` is standard input. */
export function readInput(file: string): Buffer {
  try {
    return fs.readFileSync(file === '-' ? 0 : file);
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

export function readJsonInput(file: string): unknown {
  try {
    return JSON.parse(readInput(file).toString('utf8'));
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${file} is not valid JSON`, { cause: err });
  }
}
