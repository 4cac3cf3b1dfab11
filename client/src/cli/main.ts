/**
 * nks — the command-line client for nitro-keystore (dist/cli.js). Exit codes: 0 success, 1 failure (an API
 * error, an invalid attestation document), 2 usage. `--help` anywhere prints the usage of the command it follows;
 * connection flags may come anywhere on the line; with `--json` an error is `{"error": {code, message}}` on stdout.
 */
import { RELEASE_VERSION as version } from '@nks/shared/release';
import { KeystoreApiError } from '../sdk';
import { attestationCommand, devCommand, keysCommand, policyCommand, signCommand, storeCommand } from './commands';
import { UsageError } from './context';
import { blocksOf, helpFor, HELP, normalizeLine } from './help';
import { setQuiet } from './output';
import { policiesCommand } from './policies-commands';
import { projectsCommand } from './project-commands';
import { tlsCommand } from './tls-commands';
import { genesisCommand, identityCommand } from './verify-commands';

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === '--version' || cmd === '-V') {
    process.stdout.write(`nks ${version}\n`);
    return 0;
  }
  switch (cmd) {
    case 'keys':
      return keysCommand(rest);
    case 'sign':
      return signCommand(rest);
    case 'projects':
      return projectsCommand(rest);
    case 'attestation':
      return attestationCommand(rest);
    case 'identity':
      return identityCommand(rest);
    case 'genesis':
      return genesisCommand(rest);
    case 'tls':
      return tlsCommand(rest);
    case 'policies':
      return policiesCommand(rest);
    case 'policy':
      // `nks policy get|set|evaluate`: signing policies are `nks policies`.
      if (['get', 'set', 'evaluate'].includes(rest[0] ?? ''))
        throw new UsageError(`nks policy writes the KMS key policy; a project's signing policies are "nks policies ${rest[0]}"`);
      return policyCommand(rest);
    case 'dev':
      return devCommand(rest);
    case 'store':
      return storeCommand(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${HELP}\n`);
      return cmd === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command "${cmd}"`);
  }
}

const line = normalizeLine(process.argv.slice(2));
const words = line.args.slice(0, 2).filter((a) => !a.startsWith('-'));
setQuiet(line.quiet);

/** An error: for people on stderr (with the command's usage for a usage error), or `{"error": …}` on stdout with --json. */
function fail(err: unknown): number {
  const status = err instanceof UsageError ? 2 : 1;
  if (line.json) {
    const e = err as { code?: unknown; message?: unknown };
    const code = err instanceof UsageError ? 'USAGE' : typeof e.code === 'string' ? e.code : 'ERROR';
    const api = err instanceof KeystoreApiError ? err : undefined;
    const error = {
      code,
      message: String(e.message ?? err),
      ...(api ? { status: api.status, retryable: api.retryable } : {}),
      ...(api?.requestId ? { requestId: api.requestId } : {}),
      ...(api?.details ? { details: api.details } : {}),
    };
    process.stdout.write(`${JSON.stringify({ error }, null, 2)}\n`);
  } else if (err instanceof UsageError) {
    const blocks = blocksOf(words[0], words[1]);
    const usage = blocks.length ? `usage:\n${blocks.map((b) => b.synopsis.join('\n')).join('\n')}\n` : '';
    process.stderr.write(`nks: ${err.message}\n${usage}(see nks ${blocks.length ? `${words.join(' ')} ` : ''}--help)\n`);
  } else if (err instanceof KeystoreApiError) {
    const where = err.status ? `HTTP ${err.status}` : 'no answer';
    process.stderr.write(`nks: ${err.code} (${where}): ${err.message}${err.requestId ? ` [request ${err.requestId}]` : ''}\n`);
  } else {
    process.stderr.write(`nks: ${(err as Error).message}\n`);
  }
  return status;
}

(async () => {
  if (line.help) {
    process.stdout.write(`${helpFor(words)}\n`);
    return 0;
  }
  return main(line.args);
})().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = fail(err);
  },
);
