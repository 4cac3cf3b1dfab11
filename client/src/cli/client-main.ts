/**
 * nks as the `nitro-keystore-client` package installs it: only the commands a client runs against a keystore's
 * API or its evidence (keys, sign, attestation, identity, policy, policies, projects, tls). The host commands
 * (dev, genesis, store) run the server's own programs and come with the server's nks (client/src/cli/main.ts).
 * How a line is run (help, --version, --json errors, exit codes) is shared with it: run.ts.
 */
import { attestationCommand, keysCommand, policyCommand, signBatchCommand, signCommand } from './commands';
import { policiesCommand } from './policies-commands';
import { projectsCommand } from './project-commands';
import { runCli, type Command } from './run';
import { tlsCommand } from './tls-commands';
import { identityCommand } from './verify-commands';

/** The package's version, set by the build (scripts/build.mjs) from package.json. */
declare const NKS_CLIENT_VERSION: string;

/** The commands of this nks, each run with the rest of the command line. */
export const CLIENT_COMMANDS: Record<string, Command> = {
  keys: keysCommand,
  sign: signCommand,
  'sign-batch': signBatchCommand,
  attestation: attestationCommand,
  identity: identityCommand,
  policy: policyCommand,
  policies: policiesCommand,
  projects: projectsCommand,
  tls: tlsCommand,
};

/** The server's commands: named in a clear usage error here rather than "unknown command". */
export const HOST_COMMANDS = ['dev', 'genesis', 'store'] as const;

const HELP = `nks — nitro-keystore command-line client (package nitro-keystore-client)

  nks keys create|get|list|disable|enable|successor|activate|cancel|history|verify …
  nks sign <keyId> --digest 0x… | --message TEXT | --message-hex 0x… | --typed-data FILE | --transaction FILE
                   | --authorization FILE | --request FILE | --user-operation FILE …
  nks sign-batch <keyId> --file FILE   up to 100 sign requests (a JSON array) in one call
  nks attestation get|verify …
  nks identity [--pcr0 HEX]... [--identity 0x…|FILE] [--root PEM] [--max-age S]
  nks policies get|set|approve|evaluate --project ID …
  nks policy …            writes the KMS key policy (docs/KEY-POLICY.md)
  nks projects create|get|list|disable|enable …
  nks tls create|install|status|verify …
  nks --version

The host commands (dev, genesis, store) come with the nitro-keystore server, not with this package.
Options of every command: the keystore's README.md and client/README.md.

Connection: --url URL --token TOKEN, or NKS_URL / NKS_TOKEN. Add --json for machine-readable output. FILE may be
- for standard input.
Exit codes: 0 success, 1 failure or invalid document, 2 usage.`;

runCli(process.argv.slice(2), {
  commands: CLIENT_COMMANDS,
  help: HELP,
  version: NKS_CLIENT_VERSION,
  elsewhere: Object.fromEntries(
    HOST_COMMANDS.map((c) => [c, `"nks ${c}" is a host command: it comes with the nitro-keystore server, not with nitro-keystore-client`]),
  ),
});
