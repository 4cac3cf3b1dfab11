/**
 * `nks policy` and scripts/approve-image.sh as programs (dist/cli.js: `npm run build`, or
 * `node scripts/build.mjs --only cli`): the role inputs, refusals with exit 2 and a reason, --pin-pcr8 passed
 * through the script, --dry-run, security epochs read back from the installed policy, and what the script hands
 * to `aws kms put-key-policy`. The script runs with only the tools the operations scripts may use on PATH (as
 * test/scripts.ops.ts does), plus a stand-in `aws`.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { linkTools, OPS_SCRIPT_TOOLS } from '../../test/support/tools';

const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
jest.setTimeout(120_000);

const PARENT = 'arn:aws:iam::111122223333:role/nitro-keystore-parent';
const ADMIN = 'arn:aws:iam::111122223333:role/nitro-keystore-admin';
const APPROVER = 'arn:aws:iam::111122223333:role/nitro-keystore-image-approver';
const BREAK_GLASS = 'arn:aws:iam::111122223333:role/nitro-keystore-break-glass';
const KEY = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const ROLES = ['--parent-role-arn', PARENT, '--admin', ADMIN, '--image-approver-role-arn', APPROVER, '--break-glass-role-arn', BREAK_GLASS];

interface Policy {
  Statement: Array<{
    Sid: string;
    Principal: { AWS: string | string[] };
    Action: string | string[];
    Condition?: Record<string, Record<string, string | string[]>>;
  }>;
}
const sid = (p: Policy, name: string) => p.Statement.find((s) => s.Sid === name);

describe('nks policy and approve-image.sh', () => {
  let dir: string;
  let bin: string;
  let signed: string;
  let unsigned: string;
  /** KMS's default key policy: what get-key-policy answers before the first approval. */
  let kmsDefault: string;
  const measurements = (name: string, pcrs: Record<string, string>, extra: object = { SecurityEpoch: 2, EnclaveMode: 'normal' }) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', ...pcrs }, ...extra }));
    return file;
  };

  beforeAll(() => {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" (or node scripts/build.mjs --only cli) first`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-policy-cli-'));
    bin = path.join(dir, 'bin');
    linkTools(bin, OPS_SCRIPT_TOOLS);
    signed = measurements('signed.json', { PCR0: 'ab'.repeat(48), PCR1: 'cd'.repeat(48), PCR2: 'ef'.repeat(48), PCR8: '8a'.repeat(48) });
    unsigned = measurements('unsigned.json', { PCR0: '12'.repeat(48), PCR1: 'cd'.repeat(48), PCR2: 'ef'.repeat(48) });
    kmsDefault = path.join(dir, 'kms-default-policy.json');
    fs.writeFileSync(
      kmsDefault,
      JSON.stringify({
        Version: '2012-10-17',
        Id: 'key-default-1',
        Statement: [
          {
            Sid: 'Enable IAM User Permissions',
            Effect: 'Allow',
            Principal: { AWS: 'arn:aws:iam::111122223333:root' },
            Action: 'kms:*',
            Resource: '*',
          },
        ],
      }),
    );
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const nks = (args: string[]) =>
    spawnSync(process.execPath, [CLI, ...args], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, NKS_URL: '', NKS_TOKEN: '', NKS_DEV_DIR: '/nonexistent' },
    });
  const awsLog = () => path.join(dir, 'aws.log');
  /** A stand-in aws: logs its arguments, answers get-key-policy with `current`, keeps the policy put (the script deletes its file on exit). */
  const standInAws = (current: string) => {
    fs.rmSync(awsLog(), { force: true });
    fs.writeFileSync(
      path.join(bin, 'aws'),
      `#!/bin/bash\necho "$*" >> ${awsLog()}\nif [[ "$1 $2" == "sts get-caller-identity" ]]; then echo ${APPROVER}; fi\nif [[ "$1 $2" == "kms get-key-policy" ]]; then cat ${current}; fi\nfor a in "$@"; do if [[ "$a" == file://* ]]; then cat "\${a#file://}" > ${dir}/installed.json; fi; done\n`,
      { mode: 0o755 },
    );
  };
  const approve = (args: string[]) =>
    spawnSync(path.join(ROOT, 'scripts', 'approve-image.sh'), args, { cwd: ROOT, encoding: 'utf8', timeout: 60_000, env: { PATH: bin } });

  it('nks policy takes the four roles and writes the policy', () => {
    const r = nks(['policy', '--measurements', signed, ...ROLES]);
    expect([r.status, r.stderr]).toEqual([0, '']);
    const p = JSON.parse(r.stdout) as Policy;
    expect(sid(p, 'KeyAdministration')?.Principal.AWS).toBe(ADMIN);
    expect(sid(p, 'ImageApproval')).toMatchObject({ Principal: { AWS: APPROVER }, Action: expect.arrayContaining(['kms:PutKeyPolicy']) });
    expect(sid(p, 'BreakGlass')).toMatchObject({
      Principal: { AWS: BREAK_GLASS },
      Action: expect.arrayContaining(['kms:ScheduleKeyDeletion', 'kms:DisableKey']),
    });
    expect(sid(p, 'DenyReEncrypt')).toMatchObject({ Principal: { AWS: '*' }, Action: 'kms:ReEncrypt*' });
    expect(sid(p, 'DenyCreateGrant')).toMatchObject({ Principal: { AWS: '*' }, Action: 'kms:CreateGrant' });
    expect(sid(p, 'EnclaveDecryptOnlyWhenAttested')?.Condition?.StringEqualsIgnoreCase?.['kms:RecipientAttestation:PCR8']).toBeUndefined();
  });

  it.each<[string, string[], RegExp]>([
    [
      'no image approver',
      ['--parent-role-arn', PARENT, '--admin', ADMIN, '--break-glass-role-arn', BREAK_GLASS],
      /--image-approver-role-arn is required/,
    ],
    [
      'no break-glass role',
      ['--parent-role-arn', PARENT, '--admin', ADMIN, '--image-approver-role-arn', APPROVER],
      /--break-glass-role-arn is required/,
    ],
    [
      'the account root as administrator',
      [...ROLES, '--admin', 'arn:aws:iam::111122223333:root'],
      /key administrator arn:aws:iam::111122223333:root is the account root principal/,
    ],
    [
      'the account root as image approver',
      [...ROLES.slice(0, 4), '--image-approver-role-arn', 'arn:aws:iam::111122223333:root', '--break-glass-role-arn', BREAK_GLASS],
      /image approver role .* is the account root principal/,
    ],
    ['the approver as administrator', [...ROLES, '--admin', APPROVER], /image approver role must not also be a key administrator/],
  ])('nks policy refuses %s (exit 2, with the reason)', (_name, args, message) => {
    const r = nks(['policy', '--measurements', signed, ...args]);
    expect([r.status, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toMatch(/^nks: /);
    expect(r.stderr).toMatch(message);
  });

  it('approve-image.sh --pin-pcr8 --dry-run pins PCR8 and prints the policy and its SHA-256', () => {
    const r = approve(['--key-arn', KEY, ...ROLES, '--measurements', signed, '--pin-pcr8', '--dry-run', '--current-policy', kmsDefault]);
    expect(r.status).toBe(0);
    const p = JSON.parse(r.stdout) as Policy;
    expect(sid(p, 'EnclaveDecryptOnlyWhenAttested')?.Condition?.StringEqualsIgnoreCase).toMatchObject({
      'kms:RecipientAttestation:ImageSha384': 'ab'.repeat(48),
      'kms:RecipientAttestation:PCR8': '8a'.repeat(48),
    });
    const hash = createHash('sha256').update(r.stdout).digest('hex');
    expect(r.stderr).toContain(`policy sha256 ${hash} (not installed: --dry-run)`);
    // The same without --pin-pcr8: no PCR8 condition.
    const plain = approve(['--key-arn', KEY, ...ROLES, '--measurements', signed, '--dry-run', '--current-policy', kmsDefault]);
    expect(plain.status).toBe(0);
    expect(
      sid(JSON.parse(plain.stdout) as Policy, 'EnclaveDecryptOnlyWhenAttested')?.Condition?.StringEqualsIgnoreCase?.[
        'kms:RecipientAttestation:PCR8'
      ],
    ).toBeUndefined();
  });

  it('approve-image.sh --pin-pcr8 refuses an image without PCR8, and refuses incomplete arguments', () => {
    const r = approve([
      '--key-arn',
      KEY,
      ...ROLES,
      '--measurements',
      signed,
      '--measurements',
      unsigned,
      '--pin-pcr8',
      '--dry-run',
      '--current-policy',
      kmsDefault,
    ]);
    expect([r.status, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toMatch(/PCR8 pinning asked for, but an image has no PCR8/);
    const noApprover = approve([
      '--key-arn',
      KEY,
      '--parent-role-arn',
      PARENT,
      '--admin',
      ADMIN,
      '--break-glass-role-arn',
      BREAK_GLASS,
      '--measurements',
      signed,
      '--dry-run',
      '--current-policy',
      kmsDefault,
    ]);
    expect([noApprover.status, noApprover.stderr]).toEqual([2, expect.stringMatching(/--image-approver-role-arn is required/)]);
    const dangling = approve(['--key-arn', KEY, ...ROLES, '--measurements']);
    expect([dangling.status, dangling.stderr]).toEqual([
      2,
      expect.stringMatching(/^usage: approve-image.sh .*--image-approver-role-arn ARN --break-glass-role-arn ARN .*\[--pin-pcr8\]/),
    ]);
    expect(approve(['--key-arn', KEY, ...ROLES, '--measurements', signed, '--bogus']).status).toBe(2);
  });

  it('approve-image.sh installs exactly the reviewed policy with aws kms put-key-policy, and needs the AWS CLI', () => {
    const args = ['--key-arn', KEY, ...ROLES, '--measurements', signed, '--pin-pcr8'];
    fs.rmSync(path.join(bin, 'aws'), { force: true });
    expect(approve(args).stderr).toMatch(/aws is required but not found/);

    standInAws(kmsDefault);
    const r = approve(args);
    expect(r.status).toBe(0);
    const calls = fs.readFileSync(awsLog(), 'utf8').trim().split('\n');
    expect(calls[0]).toBe(`kms get-key-policy --key-id ${KEY} --policy-name default --query Policy --output text`);
    expect(calls[calls.length - 1]).toMatch(new RegExp(`^kms put-key-policy --key-id ${KEY} --policy-name default --policy file://`));
    const dry = approve([...args, '--dry-run', '--current-policy', kmsDefault]);
    expect(fs.readFileSync(path.join(dir, 'installed.json'), 'utf8')).toBe(dry.stdout);
    const hash = createHash('sha256').update(dry.stdout).digest('hex');
    expect(r.stderr).toContain(`installing policy sha256 ${hash} on ${KEY} as ${APPROVER}`);
  });

  it('nks policy needs the epoch of a bare PCR0, and refuses to go below the installed policy’s epoch', () => {
    const bare = nks(['policy', '--pcr0', '12'.repeat(48), ...ROLES]);
    expect([bare.status, bare.stderr]).toEqual([2, expect.stringMatching(/--pcr0 needs --security-epoch N/)]);
    const given = nks(['policy', '--pcr0', '12'.repeat(48), '--security-epoch', '2', ...ROLES]);
    expect([given.status, JSON.parse(given.stdout).Id]).toEqual([0, 'nitro-keystore-key-policy-epoch-2']);

    const installed = path.join(dir, 'installed-epoch-2.json');
    fs.writeFileSync(installed, given.stdout);
    const old = measurements('old.json', { PCR0: '34'.repeat(48) }, {}); // built before epochs: epoch 1
    const down = nks(['policy', '--measurements', old, '--current-policy', installed, ...ROLES]);
    expect([down.status, down.stdout, down.stderr]).toEqual([
      2,
      '',
      expect.stringMatching(/the installed policy approves security epoch 2; an image of epoch 1 cannot be approved/),
    ]);
    const mixed = nks(['policy', '--measurements', old, '--measurements', signed, ...ROLES]);
    expect([mixed.status, mixed.stderr]).toEqual([2, expect.stringMatching(/security epochs 1, 2: .*cutover/)]);
    const first = nks(['policy', '--measurements', signed, '--current-policy', kmsDefault, ...ROLES]);
    expect([first.status, first.stderr]).toEqual([0, expect.stringMatching(/was not made by nks policy: no security epoch to keep/)]);
    expect(nks(['policy', '--measurements', signed, '--current-policy', signed, ...ROLES]).stderr).toMatch(/not a key policy document/);
  });

  it('approve-image.sh reads the installed policy from KMS and installs nothing below its epoch', () => {
    const epoch3 = measurements('epoch-3.json', { PCR0: '56'.repeat(48) }, { SecurityEpoch: 3, EnclaveMode: 'normal' });
    const installedNow = path.join(dir, 'installed-epoch-3.json');
    fs.writeFileSync(installedNow, nks(['policy', '--measurements', epoch3, ...ROLES]).stdout);
    standInAws(installedNow);
    const r = approve(['--key-arn', KEY, ...ROLES, '--measurements', signed]);
    expect([r.status, r.stderr]).toEqual([2, expect.stringMatching(/the installed policy approves security epoch 3; an image of epoch 2/)]);
    const calls = fs.readFileSync(awsLog(), 'utf8').trim().split('\n');
    expect(calls).toEqual([`kms get-key-policy --key-id ${KEY} --policy-name default --query Policy --output text`]); // nothing put
    // The same epoch (a rolling upgrade within epoch 3) is installed, and the script says which epochs.
    const same = approve(['--key-arn', KEY, ...ROLES, '--measurements', epoch3]);
    expect([same.status, same.stderr]).toEqual([
      0,
      expect.stringContaining('installed policy: nitro-keystore-key-policy-epoch-3; new policy: nitro-keystore-key-policy-epoch-3'),
    ]);
    // A file in place of KMS's answer only for a dry run.
    const stale = approve(['--key-arn', KEY, ...ROLES, '--measurements', signed, '--current-policy', kmsDefault]);
    expect([stale.status, stale.stderr]).toEqual([1, expect.stringMatching(/--current-policy is for --dry-run only/)]);
  });

  it('approve-image.sh approves a migration image only with --migration-window, and never a genesis image', () => {
    const migration = measurements('migration.json', { PCR0: '78'.repeat(48) }, { SecurityEpoch: 2, EnclaveMode: 'migration' });
    const genesis = measurements('genesis.json', { PCR0: '9a'.repeat(48) }, { SecurityEpoch: 2, EnclaveMode: 'genesis' });
    const dry = ['--key-arn', KEY, ...ROLES, '--dry-run', '--current-policy', kmsDefault];
    const refused = approve([...dry, '--measurements', migration]);
    expect([refused.status, refused.stderr]).toEqual([
      2,
      expect.stringMatching(/is a migration image: approve it only for the migration window/),
    ]);
    const window = approve([...dry, '--measurements', migration, '--migration-window']);
    expect(window.status).toBe(0);
    const g = approve([...dry, '--measurements', genesis, '--migration-window']);
    expect([g.status, g.stderr]).toEqual([2, expect.stringMatching(/is a genesis image: it has no identity and never needs Decrypt/)]);
  });
});
