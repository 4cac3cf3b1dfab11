/** nks's usage text, the part of it for one command (`--help` after it), and the command line as commands parse it. */
import { UsageError } from './context';

export const HELP = `nks — nitro-keystore command-line client

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
  nks sign-batch <keyId> --file FILE
      up to 100 sign requests (FILE: a JSON array of them, or {"requests": [...]}) in one call: one line per
      request, its signature or its error; exit 1 when any was refused (README.md, "Batch signing")
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

  nks --version

Connection (API commands): --url URL --token TOKEN, or NKS_URL / NKS_TOKEN, or the local dev stack's state
(--dev-dir DIR, default .dev; there --identity, --pcr0 and --root default to the dev stack's); --socket PATH for
an API on a Unix socket, --ca FILE (PEM) for an https API with a private certificate. These and --json may come
anywhere on the line. --json: machine-readable output, and errors as {"error": {"code", "message"}} on stdout.
-q: only the id(s) (of keys, projects), or the signature (sign). FILE may be - for standard input.
--help after any command or subcommand: its usage.
Exit codes: 0 success, 1 failure or invalid document, 2 usage.`;

/** The usage blocks of HELP: a synopsis (`  nks …` and lines indented deeper than 6) and its description. */
export const BLOCKS = HELP.split('\n').reduce<Array<{ words: string[]; synopsis: string[]; text: string[] }>>((blocks, line) => {
  if (line.startsWith('  nks ')) blocks.push({ words: line.trim().split(/\s+/).slice(1), synopsis: [line], text: [line] });
  else if (/^ {3,}\S/.test(line) && blocks.length) {
    const b = blocks[blocks.length - 1] as (typeof blocks)[number];
    if (b.text.length === b.synopsis.length && /^ {7,}\S/.test(line)) b.synopsis.push(line);
    b.text.push(line);
  }
  return blocks;
}, []);

/** The blocks of `nks cmd [sub]`: those of the subcommand when it has its own, else the command's. */
export function blocksOf(cmd: string | undefined, sub: string | undefined) {
  const ofCmd = BLOCKS.filter((b) => b.words[0] === cmd);
  const ofSub = ofCmd.filter((b) => sub !== undefined && (b.words[1] ?? '').split('|').includes(sub));
  return ofSub.length ? ofSub : ofCmd;
}

/** Flags of every API command, accepted anywhere on the line (moved behind the (sub)command for its parser). */
const CONNECTION_VALUE_FLAGS = ['--url', '--token', '--dev-dir', '--socket', '--ca'];
const isConnectionFlag = (a: string) => a === '--json' || CONNECTION_VALUE_FLAGS.some((f) => a === f || a.startsWith(`${f}=`));

export interface Line {
  args: string[];
  json: boolean;
  quiet: boolean;
  help: boolean;
}

/**
 * The command line as the commands parse it: `-q`/`--quiet` and `--help`/`-h` taken out; connection flags given
 * before the command or between it and its subcommand moved to the end.
 */
export function normalizeLine(argv: string[]): Line {
  const quiet = argv.some((a) => a === '-q' || a === '--quiet');
  const help = argv.some((a) => a === '--help' || a === '-h');
  const rest = argv.filter((a) => a !== '-q' && a !== '--quiet' && a !== '--help' && a !== '-h');
  const moved: string[] = [];
  const out: string[] = [];
  // Up to two words (command, subcommand): connection flags around them are moved.
  let words = 0;
  let i = 0;
  while (i < rest.length && words < 2) {
    const a = rest[i] as string;
    if (isConnectionFlag(a)) {
      moved.push(a);
      if (CONNECTION_VALUE_FLAGS.includes(a) && i + 1 < rest.length) moved.push(rest[++i] as string);
    } else if (a.startsWith('-')) break;
    else {
      out.push(a);
      words++;
    }
    i++;
  }
  const args = [...out, ...rest.slice(i), ...moved];
  return { args, json: args.includes('--json'), quiet, help };
}

export function helpFor(words: string[]): string {
  const [cmd, sub] = words;
  if (cmd === undefined || cmd === 'help') return HELP;
  const blocks = blocksOf(cmd, sub);
  if (!blocks.length) throw new UsageError(`unknown command "${cmd}"`);
  return `${blocks.map((b) => b.text.join('\n')).join('\n')}\n\n${HELP.slice(HELP.indexOf('Connection (API commands)'))}`;
}
