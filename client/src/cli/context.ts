/**
 * How the CLI finds the API: `--url`/`--token` flags, then `NKS_URL`/`NKS_TOKEN`, then the local dev stack's
 * state (`<dev-dir>/dev.json` and `<dev-dir>/token`, `--dev-dir` default `.dev`). `--socket PATH`: the API on a
 * Unix socket; `--ca FILE`: the PEM CA of an https API with a private certificate.
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { KeystoreClient } from '../sdk';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The flags of every command that talks to the API. */
export const connectionOptions = {
  url: { type: 'string' },
  token: { type: 'string' },
  'dev-dir': { type: 'string' },
  socket: { type: 'string' },
  ca: { type: 'string' },
  json: { type: 'boolean' },
} as const;

/**
 * Strict flag parsing: unknown flags and a wrong number of arguments are usage errors (exit 2). `positionals`
 * names the arguments the command takes, for the message when one is missing.
 */
export function parse<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O, positionals: readonly string[] = []) {
  let res;
  try {
    res = parseArgs({ args, options, allowPositionals: positionals.length > 0, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message, { cause: err });
  }
  const missing = positionals.slice(res.positionals.length);
  if (missing.length) throw new UsageError(`missing ${missing.map((n) => `<${n}>`).join(' ')}`);
  const extra = res.positionals.slice(positionals.length);
  if (extra.length) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  return res;
}

export interface ApiTarget {
  url: string;
  token: string;
  /**
   * When the URL is the local dev stack's (from dev.json): the PCR0 its key policy approves, the file of the
   * simulated NSM's root certificate and the keystore identity its genesis made, so verification commands can
   * default to them there and only there.
   */
  dev?: { pcr0?: string; rootFile?: string; identity?: string };
}

export function resolveApiTarget(
  flags: { url?: string | undefined; token?: string | undefined; 'dev-dir'?: string | undefined; socket?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
  { tokenOptional = false } = {},
): ApiTarget {
  const devDir = path.resolve(flags['dev-dir'] || env.NKS_DEV_DIR || '.dev');
  const readDev = <T>(file: string, parse: (s: string) => T): T | undefined => {
    try {
      return parse(fs.readFileSync(path.join(devDir, file), 'utf8'));
    } catch {
      return undefined;
    }
  };
  const devState = readDev('dev.json', (s) => JSON.parse(s) as { url?: string; pcr0?: unknown; rootPem?: unknown; identity?: unknown });
  // An empty variable is an unset one.
  // On a Unix socket the URL's host is only the Host header.
  const explicitUrl = flags.url ?? (env.NKS_URL || undefined) ?? (flags.socket !== undefined ? 'http://localhost' : undefined);
  const url = explicitUrl || devState?.url;
  const token = flags.token ?? (env.NKS_TOKEN || undefined) ?? readDev('token', (s) => s.trim());
  if (!url)
    throw new UsageError(
      `no API URL: pass --url, set NKS_URL, or start the local stack (npm run dev) so ${path.join(devDir, 'dev.json')} exists`,
    );
  if (!token && !tokenOptional)
    throw new UsageError(`no token: pass --token, set NKS_TOKEN, or start the local stack so ${path.join(devDir, 'token')} exists`);
  const dev =
    !explicitUrl && devState
      ? {
          ...(typeof devState.pcr0 === 'string' ? { pcr0: devState.pcr0 } : {}),
          ...(typeof devState.rootPem === 'string' ? { rootFile: devState.rootPem } : {}),
          ...(typeof devState.identity === 'string' ? { identity: devState.identity } : {}),
        }
      : undefined;
  return { url, token: token ?? '', ...(dev ? { dev } : {}) };
}

/**
 * The local dev stack's wallet routes (`<dev-dir>/dev.json`, written by `npm run dev`): their https URL, the dev
 * CA that signed their certificate, and the PCR0 and simulated Nitro root to check attestations with. Undefined
 * when there is no running dev stack with wallet routes.
 */
export function devWallets(
  flags: { 'dev-dir'?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
): { url: string; caFile?: string; pcr0?: string; rootFile?: string } | undefined {
  const devDir = path.resolve(flags['dev-dir'] || env.NKS_DEV_DIR || '.dev');
  let dev: { wallets?: { url?: unknown; caPem?: unknown }; pcr0?: unknown; rootPem?: unknown };
  try {
    dev = JSON.parse(fs.readFileSync(path.join(devDir, 'dev.json'), 'utf8')) as typeof dev;
  } catch {
    return undefined;
  }
  if (typeof dev.wallets?.url !== 'string') return undefined;
  return {
    url: dev.wallets.url,
    ...(typeof dev.wallets.caPem === 'string' ? { caFile: dev.wallets.caPem } : {}),
    ...(typeof dev.pcr0 === 'string' ? { pcr0: dev.pcr0 } : {}),
    ...(typeof dev.rootPem === 'string' ? { rootFile: dev.rootPem } : {}),
  };
}

export function clientFor(
  flags: Parameters<typeof resolveApiTarget>[0] & { ca?: string | undefined },
  options?: { tokenOptional?: boolean },
): KeystoreClient {
  const c = resolveApiTarget(flags, process.env, options);
  if (flags.socket !== undefined && !fs.existsSync(flags.socket)) throw new UsageError(`--socket ${flags.socket}: no such socket`);
  try {
    return new KeystoreClient({
      url: c.url,
      token: c.token,
      ...(flags.socket !== undefined ? { socketPath: flags.socket } : {}),
      ...(flags.ca !== undefined ? { ca: readPem(flags.ca, '--ca') } : {}),
    });
  } catch (err) {
    if (err instanceof TypeError) throw new UsageError(`--url: ${err.message}`, { cause: err });
    throw err;
  }
}

/** A file of PEM certificates (`flag` names it in the usage error when it holds none, or one that does not parse). */
export function readPem(file: string, flag: string): string {
  const text = readInput(file).toString('utf8');
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g);
  if (!blocks) throw new UsageError(`${flag} ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  for (const [i, pem] of blocks.entries()) {
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new UsageError(`${flag} ${file}: certificate ${i + 1} is not a valid PEM certificate (${(err as Error).message})`, {
        cause: err,
      });
    }
  }
  return text;
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
