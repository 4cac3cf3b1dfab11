/**
 * How an nks runs a command line, shared by the server's nks (main.ts) and the client package's (client-main.ts),
 * which differ only in their commands, their usage text and how they print their version. Exit codes: 0 success,
 * 1 failure (an API error, an invalid attestation document), 2 usage. `--help` anywhere prints the usage of the
 * command it follows; connection flags may come anywhere on the line; with `--json` an error is
 * `{"error": {code, message}}` on stdout.
 */
import { KeystoreApiError } from '../sdk';
import { UsageError } from './context';
import { blocksOf, helpFor, normalizeLine } from './help';
import { setQuiet } from './output';

export type Command = (args: string[]) => number | Promise<number>;

export interface Cli {
  /** The commands by name, each run with the rest of the line. */
  commands: Readonly<Record<string, Command>>;
  /** The usage printed by `nks`, `nks help` and `nks --help`. */
  help: string;
  /** What `nks --version` prints. */
  version: string;
  /** Names that are not commands here but should be refused with this reason rather than as unknown. */
  elsewhere?: Readonly<Record<string, string>>;
}

/** Runs `argv` (without node and the script) and sets process.exitCode. */
export function runCli(argv: string[], cli: Cli): void {
  const line = normalizeLine(argv);
  const words = line.args.slice(0, 2).filter((a) => !a.startsWith('-'));
  setQuiet(line.quiet);

  const commandOf = (cmd: string): Command => {
    if (cli.elsewhere && Object.hasOwn(cli.elsewhere, cmd)) throw new UsageError(cli.elsewhere[cmd]);
    if (!Object.hasOwn(cli.commands, cmd)) throw new UsageError(`unknown command "${cmd}"`);
    return cli.commands[cmd] as Command;
  };

  const run = async (): Promise<number> => {
    const [cmd, ...rest] = line.args;
    if (line.help) {
      if (words[0] !== undefined && words[0] !== 'help') commandOf(words[0]);
      process.stdout.write(`${words[0] === undefined || words[0] === 'help' ? cli.help : helpFor(words)}\n`);
      return 0;
    }
    if (cmd === '--version' || cmd === '-V') {
      process.stdout.write(`${cli.version}\n`);
      return 0;
    }
    if (cmd === undefined || cmd === 'help') {
      process.stdout.write(`${cli.help}\n`);
      return cmd === undefined ? 2 : 0;
    }
    return commandOf(cmd)(rest);
  };

  /** An error: for people on stderr (with the command's usage for a usage error), or `{"error": …}` on stdout with --json. */
  const fail = (err: unknown): number => {
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
        ...(api?.issues ? { details: api.issues } : {}),
      };
      process.stdout.write(`${JSON.stringify({ error }, null, 2)}\n`);
    } else if (err instanceof UsageError) {
      const known = words[0] !== undefined && Object.hasOwn(cli.commands, words[0]);
      const blocks = known ? blocksOf(words[0], words[1]) : [];
      const usage = blocks.length ? `usage:\n${blocks.map((b) => b.synopsis.join('\n')).join('\n')}\n` : '';
      process.stderr.write(`nks: ${err.message}\n${usage}(see nks ${blocks.length ? `${words.join(' ')} ` : ''}--help)\n`);
    } else if (err instanceof KeystoreApiError) {
      const where = err.status ? `HTTP ${err.status}` : 'no answer';
      process.stderr.write(`nks: ${err.code} (${where}): ${err.message}${err.requestId ? ` [request ${err.requestId}]` : ''}\n`);
    } else {
      process.stderr.write(`nks: ${(err as Error).message}\n`);
    }
    return status;
  };

  run().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.exitCode = fail(err);
    },
  );
}
