/**
 * `nks policy` and scripts/approve-image.sh as programs (dist/cli.js: `npm run build`, or
 * `node scripts/build.mjs --only cli`): the role inputs, refusals with exit 2 and a reason, --pin-pcr8 passed
 * through the script, --dry-run, and what the script hands to `aws kms put-key-policy`. The script runs with
 * only the tools the operations scripts may use on PATH (as test/ops.test.ts does), plus a stand-in `aws`.
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

  beforeAll(() => {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" (or node scripts/build.mjs --only cli) first`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-policy-cli-'));
    bin = path.join(dir, 'bin');
    linkTools(bin, OPS_SCRIPT_TOOLS);
    signed = path.join(dir, 'signed.json');
    fs.writeFileSync(
      signed,
      JSON.stringify({
        Measurements: {
          HashAlgorithm: 'Sha384 { ... }',
          PCR0: 'ab'.repeat(48),
          PCR1: 'cd'.repeat(48),
          PCR2: 'ef'.repeat(48),
          PCR8: '8a'.repeat(48),
        },
      }),
    );
    unsigned = path.join(dir, 'unsigned.json');
    fs.writeFileSync(
      unsigned,
      JSON.stringify({
        Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: '12'.repeat(48), PCR1: 'cd'.repeat(48), PCR2: 'ef'.repeat(48) },
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
    const r = approve(['--key-arn', KEY, ...ROLES, '--measurements', signed, '--pin-pcr8', '--dry-run']);
    expect(r.status).toBe(0);
    const p = JSON.parse(r.stdout) as Policy;
    expect(sid(p, 'EnclaveDecryptOnlyWhenAttested')?.Condition?.StringEqualsIgnoreCase).toMatchObject({
      'kms:RecipientAttestation:ImageSha384': 'ab'.repeat(48),
      'kms:RecipientAttestation:PCR8': '8a'.repeat(48),
    });
    const hash = createHash('sha256').update(r.stdout).digest('hex');
    expect(r.stderr).toContain(`policy sha256 ${hash} (not installed: --dry-run)`);
    // The same without --pin-pcr8: no PCR8 condition.
    const plain = approve(['--key-arn', KEY, ...ROLES, '--measurements', signed, '--dry-run']);
    expect(plain.status).toBe(0);
    expect(
      sid(JSON.parse(plain.stdout) as Policy, 'EnclaveDecryptOnlyWhenAttested')?.Condition?.StringEqualsIgnoreCase?.[
        'kms:RecipientAttestation:PCR8'
      ],
    ).toBeUndefined();
  });

  it('approve-image.sh --pin-pcr8 refuses an image without PCR8, and refuses incomplete arguments', () => {
    const r = approve(['--key-arn', KEY, ...ROLES, '--measurements', signed, '--measurements', unsigned, '--pin-pcr8', '--dry-run']);
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

    const log = path.join(dir, 'aws.log');
    // A stand-in aws: logs its arguments and the policy file it is given (the script deletes the file on exit).
    fs.writeFileSync(
      path.join(bin, 'aws'),
      `#!/bin/bash\necho "$*" >> ${log}\nif [[ "$1 $2" == "sts get-caller-identity" ]]; then echo ${APPROVER}; fi\nfor a in "$@"; do if [[ "$a" == file://* ]]; then cat "\${a#file://}" > ${dir}/installed.json; fi; done\n`,
      { mode: 0o755 },
    );
    const r = approve(args);
    expect(r.status).toBe(0);
    const calls = fs.readFileSync(log, 'utf8').trim().split('\n');
    expect(calls[calls.length - 1]).toMatch(new RegExp(`^kms put-key-policy --key-id ${KEY} --policy-name default --policy file://`));
    const dry = approve([...args, '--dry-run']);
    expect(fs.readFileSync(path.join(dir, 'installed.json'), 'utf8')).toBe(dry.stdout);
    const hash = createHash('sha256').update(dry.stdout).digest('hex');
    expect(r.stderr).toContain(`installing policy sha256 ${hash} on ${KEY} as ${APPROVER}`);
  });
});
