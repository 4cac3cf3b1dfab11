/**
 * nks — the command-line client for nitro-keystore (dist/cli.js), with the host commands (dev, genesis, store)
 * beside the API's. How a line is run (help, --version, --json errors, exit codes): run.ts.
 */
import { RELEASE_VERSION as version } from '@nks/shared/release';
import { attestationCommand, devCommand, keysCommand, policyCommand, signBatchCommand, signCommand, storeCommand } from './commands';
import { HELP } from './help';
import { policiesCommand } from './policies-commands';
import { projectsCommand } from './project-commands';
import { runCli } from './run';
import { tlsCommand } from './tls-commands';
import { genesisCommand, identityCommand } from './verify-commands';

runCli(process.argv.slice(2), {
  commands: {
    keys: keysCommand,
    sign: signCommand,
    'sign-batch': signBatchCommand,
    projects: projectsCommand,
    attestation: attestationCommand,
    identity: identityCommand,
    genesis: genesisCommand,
    tls: tlsCommand,
    policies: policiesCommand,
    policy: policyCommand,
    dev: devCommand,
    store: storeCommand,
  },
  help: HELP,
  version: `nks ${version}`,
});
