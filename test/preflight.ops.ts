/**
 * scripts/preflight.sh against stand-in tools (no Nitro, AWS or Docker here): each check turns PASS or FAIL
 * on the answers it gets, the checklist lists every line, and the exit status is 1 when any line failed.
 * Needs shellcheck-free tools only: bash, jq and openssl (Debian base), plus node.
 */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { linkTools } from './support/tools';

const ROOT = path.resolve(__dirname, '..');
const SCRIPT = path.join(ROOT, 'scripts', 'preflight.sh');
const PCR0 = 'ab'.repeat(48);

interface Stand {
  nodeVersion?: string;
  buildx?: string;
  console?: string;
  /** What `aws kms re-encrypt --dry-run` answers: denied, or "would succeed" (a policy without the Deny). */
  reEncrypt?: 'denied' | 'allowed';
  grants?: number;
  readyz?: boolean;
  memoryMib?: number;
  eifMib?: number;
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-preflight-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function run(stand: Stand = {}) {
  const bin = fs.mkdtempSync(path.join(dir, 'bin-'));
  linkTools(
    bin,
    [
      'bash',
      'env',
      'dirname',
      'cat',
      'grep',
      'mktemp',
      'rm',
      'head',
      'tail',
      'tr',
      'sort',
      'stat',
      'base64',
      'openssl',
      'jq',
      'hostname',
      'date',
      'sleep',
      'timeout',
    ],
    { required: true },
  );
  const script = (name: string, body: string) => fs.writeFileSync(path.join(bin, name), `#!/bin/bash\n${body}\n`, { mode: 0o755 });
  script('node', `if [[ "$1" == --version ]]; then echo ${stand.nodeVersion ?? 'v22.11.0'}; else exec ${process.execPath} "$@"; fi`);
  script('docker', `echo "github.com/docker/buildx ${stand.buildx ?? 'v0.17.1'} abc"`);
  script(
    'nitro-cli',
    `case "$1" in --version) echo "Nitro CLI 1.4.2";; console) printf '%s\\n' '${stand.console ?? '{"level":30,"msg":"enclave ready"}'}';; esac`,
  );
  script('systemctl', 'exit 0');
  script('curl', stand.readyz === false ? 'exit 22' : 'exit 0');
  const pub = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  const denied = 'echo "An error occurred (AccessDeniedException) when calling the $2 operation: not authorized" >&2; exit 254';
  script(
    'aws',
    `[[ "$1" == --profile ]] && shift 2
case "$1 $2" in
  "--version ") echo "aws-cli/2.17.0 Python/3.11";;
  "kms get-public-key") echo "${pub}";;
  "kms re-encrypt") ${stand.reEncrypt === 'allowed' ? 'echo "An error occurred (DryRunOperationException) when calling the ReEncrypt operation: The request would have succeeded." >&2; exit 254' : denied};;
  "kms list-grants") echo '{"Grants": [${Array.from({ length: stand.grants ?? 0 }, () => '{"GrantId": "g"}').join(',')}]}';;
  "sts get-caller-identity") echo "arn:aws:iam::111122223333:role/admin";;
  *) ${denied};;
esac`,
  );
  const eif = path.join(dir, 'test.eif');
  fs.writeFileSync(eif, '');
  fs.truncateSync(eif, (stand.eifMib ?? 3) * 1024 * 1024);
  const measurements = path.join(dir, 'measurements.json');
  fs.writeFileSync(measurements, JSON.stringify({ Measurements: { PCR0, PCR1: PCR0, PCR2: PCR0 } }));
  const env = path.join(dir, 'enclave-run.env');
  fs.writeFileSync(env, `NKS_ENCLAVE_MEMORY_MIB=${stand.memoryMib ?? 1024}\nNKS_ENCLAVE_CPUS=2\n`);
  const args = [
    '--eif',
    eif,
    '--measurements',
    measurements,
    '--key-arn',
    'arn:aws:kms:us-east-1:111122223333:key/k',
    '--api-url',
    'http://127.0.0.1:1',
    '--token-file',
    path.join(dir, 'missing-token'),
    '--env',
    env,
    '--admin-profile',
    'admin',
  ];
  const res = spawnSync(SCRIPT, args, { encoding: 'utf8', env: { PATH: bin, NKS_PREFLIGHT_READY_SECONDS: '0' } });
  const checklist = res.stdout.split('\n').filter((l) => /^(PASS|FAIL|SKIP) {2}/.test(l));
  return { status: res.status, checklist, line: (re: RegExp) => checklist.find((l) => re.test(l)) ?? 'no such line' };
}

describe('scripts/preflight.sh', () => {
  it('passes the checks whose stand-ins answer well, denies checked as denials, and fails the run on the canary it could not do', () => {
    const r = run();
    expect(r.line(/docker buildx/)).toBe('PASS  docker buildx 0.17.1 (>= 0.13)');
    expect(r.line(/nitro-cli/)).toBe('PASS  nitro-cli 1.4.2 (>= 1.2)');
    expect(r.line(/^.{6}node/)).toBe('PASS  node 22.11.0 (>= 22.0)');
    expect(r.line(/enclave memory/)).toBe('PASS  enclave memory 1024 MiB >= 4 x EIF (3 MiB)');
    expect(r.line(/debug-mode start/)).toBe('PASS  debug-mode start: the enclave program started (nitro-cli console)');
    expect(r.line(/readyz/)).toBe('PASS  http://127.0.0.1:1/readyz answers 200');
    expect(r.checklist.filter((l) => /without attestation|create-grant/.test(l))).toEqual([
      'PASS  kms decrypt without attestation as instance-role: denied',
      'PASS  kms re-encrypt without attestation as instance-role: denied',
      'PASS  kms decrypt without attestation as admin: denied',
      'PASS  kms re-encrypt without attestation as admin: denied',
      'PASS  kms create-grant as admin: denied',
    ]);
    expect(r.line(/grants on the key/)).toBe('PASS  no grants on the key (aws kms list-grants)');
    expect(r.line(/canary/)).toMatch(/^FAIL {2}canary: token file .* is not readable/);
    expect(r.status).toBe(1);
  });

  it('fails a ReEncrypt that KMS allows: the bypass the key policy must close', () => {
    const r = run({ reEncrypt: 'allowed' });
    expect(r.line(/re-encrypt without attestation as instance-role/)).toBe(
      'FAIL  kms re-encrypt without attestation as instance-role: KMS would allow it (the key policy must deny it; docs/KEY-POLICY.md)',
    );
    expect(r.line(/decrypt without attestation as instance-role/)).toBe('PASS  kms decrypt without attestation as instance-role: denied');
  });

  it('fails a key that still has grants', () => {
    expect(run({ grants: 2 }).line(/grants on the key/)).toMatch(/^FAIL {2}grants on the key, or list-grants failed: .*revoke-grant/);
  });

  it('fails old tools, too little enclave memory for the EIF, a console without the ready line and an API that is not ready', () => {
    const r = run({
      buildx: 'v0.12.0',
      nodeVersion: 'v20.19.0',
      memoryMib: 100,
      eifMib: 30,
      console: 'Kernel panic - not syncing',
      readyz: false,
    });
    expect(r.line(/docker buildx/)).toBe('FAIL  docker buildx >= 0.13: found 0.12.0 (docker buildx version)');
    expect(r.line(/^.{6}node/)).toBe('FAIL  node >= 22.0: found 20.19.0 (node --version)');
    expect(r.line(/enclave memory/)).toMatch(/^FAIL {2}enclave memory 100 MiB < 4 x EIF \(30 MiB\): raise NKS_ENCLAVE_MEMORY_MIB/);
    expect(run({ memoryMib: 8 }).line(/enclave memory/)).toBe(
      'FAIL  enclave memory: NKS_ENCLAVE_MEMORY_MIB in ' +
        path.join(dir, 'enclave-run.env') +
        " must be a number of MiB, at least 64 (got '8')",
    );
    expect(r.line(/debug-mode start/)).toMatch(
      /^FAIL {2}debug-mode start: no 'enclave ready' line on the console; its last lines: Kernel panic/,
    );
    expect(r.line(/readyz/)).toBe('FAIL  http://127.0.0.1:1/readyz did not answer 200 within 0 s');
    expect(r.line(/canary/)).toMatch(/^FAIL {2}canary: token file/);
    expect(r.status).toBe(1);
  });

  it('refuses to run without its required arguments', () => {
    const res = spawnSync(SCRIPT, ['--eif', 'x'], { encoding: 'utf8' });
    expect([res.status, res.stderr]).toEqual([2, expect.stringMatching(/^usage: preflight.sh --eif FILE/)]);
  });
});
