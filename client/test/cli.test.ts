/** The nks CLI as a program: exit codes 0/1/2, document formats, and the policy command. */
import { spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SimulatedNitroCa } from '../../sim/src/nsm/ca';
import { signAttestationDocument } from '../../sim/src/nsm/document';
import { birthUserData } from '@nks/shared/attestation/user-data';
import { canonicalCbor } from '@nks/shared/cbor';
import { tempRunDir } from '@nks/shared-test/helpers';
import realDoc from '@nks/shared-test/fixtures/aws-nitro-attestation-debug.json';

const CLI = path.resolve(__dirname, '../../dist/cli.js');
// Each CLI run is a Node start (about half a second, several on a loaded machine); a test runs up to seven.
// Generous bounds, only in the safe direction: a hung CLI is killed after 30 s and fails its test.
jest.setTimeout(120_000);
const nks = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, NKS_URL: '', NKS_TOKEN: '', NKS_DEV_DIR: '/nonexistent', ...env },
  });

describe('nks attestation verify', () => {
  let dir: string;
  let rootFile: string;
  let docFile: string;
  const pcr0 = 'ab'.repeat(48);

  beforeAll(async () => {
    dir = tempRunDir();
    const ca = await SimulatedNitroCa.open(null);
    rootFile = path.join(dir, 'root.pem');
    fs.writeFileSync(rootFile, ca.rootPem);
    const pcrs = new Map<number, Buffer>(Array.from({ length: 16 }, (_, i) => [i, Buffer.alloc(48, i === 0 ? 0xab : 0)]));
    const doc = signAttestationDocument(
      {
        moduleId: 'i-0123456789abcdef0-enc0000000000000001',
        timestamp: Date.now(),
        pcrs,
        nonce: Buffer.from('0102', 'hex'),
        publicKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' }),
      },
      await ca.signer(),
    );
    docFile = path.join(dir, 'doc.cbor');
    fs.writeFileSync(docFile, doc);
    fs.writeFileSync(path.join(dir, 'doc.hex'), `0x${doc.toString('hex')}\n`);
    fs.writeFileSync(path.join(dir, 'doc.b64'), doc.toString('base64'));
    fs.writeFileSync(path.join(dir, 'doc.json'), JSON.stringify({ document: doc.toString('base64') }));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it.each(['doc.cbor', 'doc.hex', 'doc.b64', 'doc.json'])('accepts %s and exits 0 when valid', (file) => {
    const r = nks([
      'attestation',
      'verify',
      path.join(dir, file),
      '--root',
      rootFile,
      '--pcr',
      `0=${pcr0}`,
      '--nonce',
      '0102',
      '--max-age',
      '3600',
    ]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(r.stdout).toMatch(/^VALID attestation document/);
    expect(r.stdout).toContain(`PCR0         ${pcr0}`);
  });

  it('exits 1 with the reason when the document does not verify', () => {
    const cases: Array<[string[], string]> = [
      [[], 'UNTRUSTED_ROOT'],
      [['--root', rootFile, '--pcr', `0=${'cd'.repeat(48)}`], 'PCR_MISMATCH'],
      [['--root', rootFile, '--nonce', '0103'], 'NONCE_MISMATCH'],
      [['--root', rootFile, '--at', '2020-01-01T00:00:00Z'], 'CERT_NOT_YET_VALID'],
    ];
    for (const [flags, code] of cases) {
      const r = nks(['attestation', 'verify', docFile, ...flags]);
      expect([r.status, r.stdout]).toEqual([1, expect.stringContaining(`INVALID attestation document: ${code}`)]);
    }
    const json = nks(['attestation', 'verify', docFile, '--json']);
    expect(json.status).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ valid: false, code: 'UNTRUSTED_ROOT' });
  });

  it('refuses the real AWS document (debug mode, from 2024) as expired by default; accepts it as evidence only when asked', () => {
    const file = path.join(dir, 'aws.hex');
    fs.writeFileSync(file, realDoc.documentHex);
    const zeros = '00'.repeat(48);
    // Checked now: its certificates expired long ago, and the output says when it was checked and how to ask otherwise.
    const now = nks(['attestation', 'verify', file, '--pcr0', zeros, '--allow-debug']);
    expect([now.status, now.stdout]).toEqual([1, expect.stringMatching(/^INVALID attestation document: CERT_EXPIRED: .* expired at /)]);
    expect(now.stdout).toMatch(/checked at \S+, the current time; .*--at document/);
    // At its own time: debug mode (PCR0 all zeros) is refused unless --allow-debug.
    const debug = nks(['attestation', 'verify', file, '--at', 'document', '--pcr0', zeros]);
    expect([debug.status, debug.stdout]).toEqual([1, expect.stringContaining('INVALID attestation document: DEBUG_MODE: ')]);
    const ok = nks(['attestation', 'verify', file, '--at', 'document', '--allow-debug', '--pcr0', zeros]);
    expect([ok.status, ok.stderr]).toEqual([0, '']);
    expect(ok.stdout).toMatch(/^VALID attestation document\n/);
    expect(ok.stdout).toContain("checked at   2024-11-14T23:46:29.450Z (the document's own time, --at document)");
    expect(ok.stdout).toContain('debug mode   yes (PCR0 all zeros, accepted with --allow-debug)');
    // Unpinned: the verdict says so and fails, unless --allow-unpinned; an explicit time is reported as such.
    const unpinned = nks(['attestation', 'verify', file, '--at', 'document', '--allow-debug']);
    expect([unpinned.status, unpinned.stdout]).toEqual([
      1,
      expect.stringMatching(/^UNPINNED attestation document: genuine, but no PCR0 was pinned/),
    ]);
    const at = new Date(realDoc.verifiedAtMs).toISOString();
    const json = nks(['attestation', 'verify', file, '--at', at, '--allow-debug', '--allow-unpinned', '--json']);
    expect(json.status).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      valid: true,
      verdict: 'VALID (UNPINNED)',
      pinned: false,
      debug: true,
      checkedAt: { time: at, basis: 'explicit' },
    });
  });

  it('says UNPINNED and exits 1 without a PCR0 pin, unless --allow-unpinned', () => {
    const r = nks(['attestation', 'verify', docFile, '--root', rootFile, '--json']);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({
      valid: false,
      verdict: 'UNPINNED',
      pinned: false,
      debug: false,
      checkedAt: { basis: 'now' },
    });
    const allowed = nks(['attestation', 'verify', docFile, '--root', rootFile, '--allow-unpinned']);
    expect([allowed.status, allowed.stdout]).toEqual([
      0,
      expect.stringMatching(/^VALID \(UNPINNED\) attestation document: PCR0 not checked/),
    ]);
    const pinned = nks(['attestation', 'verify', docFile, '--root', rootFile, '--pcr0', `0x${pcr0.toUpperCase()}`, '--json']);
    expect([pinned.status, JSON.parse(pinned.stdout)]).toEqual([0, expect.objectContaining({ verdict: 'VALID', pinned: true })]);
  });

  it('checks a birth attestation with --key-id/--address, and refuses a 0.1-era one with the reason', async () => {
    const ca = await SimulatedNitroCa.open(null);
    const root = path.join(dir, 'birth-root.pem');
    fs.writeFileSync(root, ca.rootPem);
    const address = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
    const pcrs = new Map<number, Buffer>(Array.from({ length: 16 }, (_, i) => [i, Buffer.alloc(48, i === 0 ? 0xab : 0)]));
    const docWith = async (userData: Buffer, name: string) => {
      const file = path.join(dir, name);
      fs.writeFileSync(
        file,
        signAttestationDocument(
          { moduleId: 'i-0123456789abcdef0-enc0000000000000001', timestamp: Date.now(), pcrs, userData },
          await ca.signer(),
        ),
      );
      return file;
    };
    const current = await docWith(birthUserData('key-1', address), 'birth.cbor');
    const legacy = await docWith(
      createHash('sha256')
        .update(canonicalCbor({ keyId: 'key-1', address }))
        .digest(),
      'legacy.cbor',
    );
    const birth = (file: string, keyId = 'key-1', addr = address) =>
      nks(['attestation', 'verify', file, '--root', root, '--pcr', `0=${pcr0}`, '--key-id', keyId, '--address', addr]);

    expect(birth(current).status).toBe(0);
    const other = birth(current, 'key-2');
    expect([other.status, other.stdout]).toEqual([1, expect.stringContaining('USER_DATA_MISMATCH')]);
    const old = birth(legacy);
    expect([old.status, old.stdout]).toEqual([1, expect.stringMatching(/LEGACY_BIRTH: .*not evidence/)]);
    const usage = nks(['attestation', 'verify', current, '--root', root, '--key-id', 'key-1']);
    expect([usage.status, usage.stderr]).toEqual([2, expect.stringMatching(/needs both --key-id ID and --address/)]);
    // Without PCR0 a birth proves nothing (any image can ask for any user_data): refused as a usage error.
    const noPcr = nks(['attestation', 'verify', current, '--root', root, '--key-id', 'key-1', '--address', address]);
    expect([noPcr.status, noPcr.stderr]).toEqual([2, expect.stringMatching(/needs --pcr0 HEX/)]);
  });

  it('exits 2 on usage errors', () => {
    for (const args of [
      ['attestation', 'verify'],
      ['attestation', 'verify', docFile, '--pcr', '99=ab'],
      ['attestation', 'verify', docFile, '--at', 'yesterday'],
      ['attestation', 'verify', docFile, '--at', '1731627989450'],
      ['attestation', 'verify', docFile, '--pcr0', 'zz'],
      ['attestation', 'verify', docFile, '--pcr0', 'ab'.repeat(48), '--pcr', `0=${'cd'.repeat(48)}`],
      ['attestation', 'verify', docFile, '--bogus'],
      ['attestation', 'verify', '/nonexistent'],
      ['frobnicate'],
      ['keys', 'list'],
    ]) {
      const r = nks(args);
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect(r.stderr).toMatch(/^nks: /);
    }
  });
});

describe('nks policy', () => {
  it('prints a policy from nitro-cli measurements, and refuses debug images', () => {
    const dir = tempRunDir();
    try {
      const m = path.join(dir, 'm.json');
      fs.writeFileSync(
        m,
        JSON.stringify({
          Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: 'ab'.repeat(48), PCR1: 'cd'.repeat(48), PCR2: 'ef'.repeat(48) },
          SecurityEpoch: 2,
          EnclaveMode: 'normal',
        }),
      );
      const r = nks([
        'policy',
        '--measurements',
        m,
        '--pcr0',
        '12'.repeat(48),
        '--security-epoch',
        '2',
        '--parent-role-arn',
        'arn:aws:iam::111122223333:role/p',
        '--admin',
        'arn:aws:iam::111122223333:role/a',
        '--image-approver-role-arn',
        'arn:aws:iam::111122223333:role/i',
        '--break-glass-role-arn',
        'arn:aws:iam::111122223333:role/b',
      ]);
      expect(r.status).toBe(0);
      const policy = JSON.parse(r.stdout) as { Statement: Array<{ Sid: string; Condition?: Record<string, Record<string, unknown>> }> };
      const allow = policy.Statement.find((st) => st.Sid === 'EnclaveDecryptOnlyWhenAttested');
      expect(allow?.Condition?.StringEqualsIgnoreCase?.['kms:RecipientAttestation:ImageSha384']).toEqual([
        'ab'.repeat(48),
        '12'.repeat(48),
      ]);
      const debug = nks([
        'policy',
        '--pcr0',
        '0'.repeat(96),
        '--security-epoch',
        '2',
        '--parent-role-arn',
        'arn:aws:iam::111122223333:role/p',
        '--admin',
        'arn:aws:iam::111122223333:role/a',
        '--image-approver-role-arn',
        'arn:aws:iam::111122223333:role/i',
        '--break-glass-role-arn',
        'arn:aws:iam::111122223333:role/b',
      ]);
      expect([debug.status, debug.stderr]).toEqual([2, expect.stringMatching(/debug images cannot be approved/)]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
