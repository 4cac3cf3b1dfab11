/**
 * nks — the command-line client for nitro-keystore (dist/cli.js). Exit codes: 0 success, 1 failure (an API
 * error, an invalid attestation document), 2 usage.
 */
import { KeystoreApiError } from '../sdk';
import { attestationCommand, devCommand, keysCommand, policyCommand, signCommand, storeCommand } from './commands';
import { UsageError } from './context';
import { policiesCommand } from './policies-commands';
import { projectsCommand } from './project-commands';
import { tlsCommand } from './tls-commands';
import { genesisCommand, identityCommand } from './verify-commands';

const HELP = `nks — nitro-keystore command-line client

  nks keys create [--external-id ID] [--label NAME=VALUE]... [--attest] [--project P]
  nks keys get <keyId>
  nks keys list [--external-id ID] [--limit N] [--cursor C] [--all]
  nks keys disable|enable <keyId>
  nks keys successor <keyId> [--attest]
  nks keys activate|cancel <keyId>
  nks keys history <keyId>
      the key lifecycle (docs/LIFECYCLE.md): successor makes a pending key for the same subject (it signs;
      keys:create), activate makes it the subject's key and retires its predecessor, cancel gives it up
      (admin); history lists the subject's keys, oldest first
  nks keys verify <keyId> --identity 0x…|FILE --pcr0 HEX [--pcr0 HEX]... [--root PEM] [--require-birth]
                  [--external-id ID] [--subject S] [--project P] [--view FILE]
      checks the key's record is signed by the keystore identity you pinned, is the record of <keyId> (and of
      the external id, subject and project given), and agrees with all the API shows, and its birth attestation
      (when it has one) with an approved PCR0; --view checks a saved "keys get --json"
  nks projects create --name NAME (--token-auth | --issuer ISS --audience AUD --jwks-uri https://…
                      [--user-claim C] [--algorithm ALG]... [--max-token-lifetime S])
                      [--origin https://…]... [--request-type TYPE]...
  nks projects get <projectId>
  nks projects list [--limit N] [--cursor C] [--all]
  nks projects disable|enable <projectId>
      projects need an admin token; a JWT project's users get keys through the TrueWallet API
      (POST /v1/<projectKey>/wallets/get-address|sign|sign-request) with their own JWTs
  nks policies get --project ID [--identity 0x…|FILE]
  nks policies set --project ID --file policy.json [--approval 0x… ...]
  nks policies approve --project ID --file policy.json (--key-file FILE | --typed-data) [--record 0x…] [--identity …]
  nks policies evaluate --project ID --request request.json [--key KEY] [--file policy.json]
      a project's signing policies (admin token; docs/POLICIES.md): what its keys may sign, enforced in the
      enclave. set replaces the whole policy ({} removes it); evaluate is a dry run that explains the decision
      (exit 0 whether allowed or denied), of the project's policy or of --file's; --identity checks the
      record that holds the policies. A policy with approvers changes only with their --approval signatures:
      an approver runs approve (signs with a local key file, or prints EIP-712 typed data for a wallet)
  nks tls create --name NAME [--name NAME]... [--csr-out FILE] [--pcr0 HEX]... [--root PEM]
      the enclave makes a TLS key for the wallet routes (admin token) and answers its CSR; get a certificate
  nks tls install --chain FILE
      serves the wallet routes with the pending key and this PEM chain (leaf first)
  nks tls status
  nks tls verify --url https://HOST[:PORT] [--ca PEM] --pcr0 HEX [--pcr0 HEX]... [--root PEM] [--max-age S]
      connects with TLS, asks for an attestation with a random nonce, and checks it binds the served key and
      comes from an approved image (no token needed)
  nks identity [--pcr0 HEX]... [--identity 0x…|FILE] [--genesis-pcr0 HEX] [--root PEM] [--max-age S]
      asks the enclave, with a random nonce, to attest that it holds the keystore identity (no token needed)
  nks genesis verify <genesis.json> --pcr0 HEX --nonce HEX [--root PEM] [--out identity.json]
      checks a genesis output off-host (the genesis image's PCR0, your nonce) and writes the identity section
      of the enclave configuration
  nks sign <keyId> --digest 0x… | --message TEXT | --message-hex 0x… | --typed-data FILE
                   | --transaction FILE | --authorization FILE [--allow-all-chains] | --request FILE
                   | --user-operation FILE --entry-point 0x… --chain-id N --ep-version 0.6|0.7|0.8
  nks attestation get [--nonce 0x…] [--out FILE]
  nks attestation verify <file> --pcr0 HEX | --allow-unpinned [--allow-debug] [--at now|document|ISO-TIME]
                         [--root PEM] [--max-age S] [--pcr N=HEX]... [--nonce HEX]
                         [--user-data HEX | --key-id ID --address 0x…] [--json]
      the chain is checked now unless --at says otherwise (--at document: a document kept as evidence, at
      its own time); without --pcr0 the verdict is UNPINNED (exit 1) unless --allow-unpinned; an all-zero
      PCR0 (debug mode) is refused unless --allow-debug; --key-id/--address check a key's birth attestation
  nks policy --parent-role-arn ARN --admin ARN... --image-approver-role-arn ARN --break-glass-role-arn ARN
              (--measurements FILE | --pcr0 HEX --security-epoch N)... [--current-policy FILE]
              [--migration-window] [--pin-pcr8] [--out FILE]
      writes the KMS key policy (docs/KEY-POLICY.md: which images may unseal keys; not signing policies,
      see nks policies); refuses an image of a lower security epoch than the current policy's, and mixed epochs
  nks dev [--dir DIR] [--api-port PORT] [--wallets-port PORT] [--update-policy]
          [--instances N --database postgres [--database-url URL]]
      runs the local stack; Ctrl-C, or SIGTERM to its pid in <dir>/dev.pid, stops every process of it
  nks dev token create --scopes SCOPE[,SCOPE]... [--name NAME] [--projects ID[,ID]...]
                       [--expires ISO-TIME|DURATION] [--dev-dir DIR] [--json]
      adds a caller token (scopes keys:create, keys:sign, keys:read, admin) to the running local stack's
      parent configuration and has the parent reload its tokens (SIGHUP); prints the token once
  nks store status|migrate --config parent.json
      the parent's database on this host (docs/STORAGE.md, "Migrations"): its schema version, or the pending
      migrations applied (as the owner: its URL in NKS_DATABASE_URL); exit 1 from status if behind

Connection (API commands): --url URL --token TOKEN, or NKS_URL / NKS_TOKEN, or the local dev stack's state
(--dev-dir DIR, default .dev; there --identity, --pcr0 and --root default to the dev stack's). Add --json for
machine-readable output. FILE may be - for standard input.
Exit codes: 0 success, 1 failure or invalid document, 2 usage.`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
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

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`nks: ${err.message}\n(see nks --help)\n`);
      process.exitCode = 2;
    } else if (err instanceof KeystoreApiError) {
      process.stderr.write(`nks: ${err.code} (HTTP ${err.status}): ${err.message}${err.requestId ? ` [request ${err.requestId}]` : ''}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`nks: ${(err as Error).message}\n`);
      process.exitCode = 1;
    }
  },
);
