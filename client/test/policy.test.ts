import { decodeAttestationDocument } from '@nks/shared/attestation';
import realDoc from '@nks/shared-test/fixtures/aws-nitro-attestation-debug.json';
import { evaluatePolicy, parsePolicy } from '../../sim/src/kms/policy';
import { SECURITY_EPOCH } from '@nks/shared/release';
import {
  generateKeyPolicy,
  measurementsFromNitroCliJson,
  pcr3ForRole,
  PolicyInputError,
  securityEpochOfPolicy,
  type PolicyInput,
} from '../src/policy';

const ROLE = 'arn:aws:iam::111122223333:role/nitro-keystore-parent';
const ADMIN = 'arn:aws:iam::111122223333:role/keystore-admin';
const ADMIN_USER = 'arn:aws:iam::111122223333:user/alice';
const APPROVER = 'arn:aws:iam::111122223333:role/keystore-image-approver';
const BREAK_GLASS = 'arn:aws:iam::111122223333:role/keystore-break-glass';
const OUTSIDER = 'arn:aws:iam::111122223333:role/someone-else';
const KEY = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const IMAGE_A = 'a1'.repeat(48);
const IMAGE_B = 'b2'.repeat(48);
const roles = { parentRoleArn: ROLE, keyAdministrators: [ADMIN], imageApproverRoleArn: APPROVER, breakGlassRoleArn: BREAK_GLASS };

describe('key policy generator', () => {
  const text = generateKeyPolicy({
    images: [{ PCR0: IMAGE_A }, { PCR0: IMAGE_B.toUpperCase() }],
    ...roles,
    keyAdministrators: [ADMIN, ADMIN_USER],
  });
  const policy = parsePolicy(text);
  const evaluate = (principalArn: string, action: string, values: Record<string, string> = {}) =>
    evaluatePolicy(policy, { action, principalArn, account: '111122223333', keyArn: KEY, values });
  const decide = (principalArn: string, action: string, values: Record<string, string> = {}) =>
    evaluate(principalArn, action, values).allowed;
  const attested = (pcr0: string, role = ROLE) => ({
    'kms:RecipientAttestation:ImageSha384': pcr0,
    'kms:RecipientAttestation:PCR3': pcr3ForRole(role),
  });
  const EVERYONE = [ROLE, ADMIN, ADMIN_USER, APPROVER, BREAK_GLASS, OUTSIDER, 'arn:aws:iam::999999999999:role/other-account'];

  it('lets the parent role decrypt only for an approved image on its own role', () => {
    expect(decide(ROLE, 'kms:Decrypt', attested(IMAGE_A))).toBe(true);
    expect(decide(ROLE, 'kms:Decrypt', attested(IMAGE_B))).toBe(true); // rolling upgrade: both approved
    expect(decide(ROLE, 'kms:Decrypt', attested('c3'.repeat(48)))).toBe(false);
    expect(decide(ROLE, 'kms:Decrypt', attested(IMAGE_A, 'arn:aws:iam::111122223333:role/other'))).toBe(false);
    expect(decide(ROLE, 'kms:Decrypt')).toBe(false); // no attestation document
    expect(decide(ROLE, 'kms:DescribeKey')).toBe(true);
    expect(decide(ROLE, 'kms:GetPublicKey')).toBe(true);
    expect(decide(ROLE, 'kms:PutKeyPolicy')).toBe(false);
  });

  it('lets administrators see and tidy the key, but not use it, re-policy it, grant, disable or delete it', () => {
    for (const admin of [ADMIN, ADMIN_USER]) {
      for (const action of [
        'kms:DescribeKey',
        'kms:GetKeyPolicy',
        'kms:ListGrants',
        'kms:RevokeGrant',
        'kms:TagResource',
        'kms:CancelKeyDeletion',
      ])
        expect({ admin, action, ok: decide(admin, action) }).toEqual({ admin, action, ok: true });
      for (const action of [
        'kms:PutKeyPolicy',
        'kms:CreateGrant',
        'kms:ScheduleKeyDeletion',
        'kms:DisableKey',
        'kms:EnableKey',
        'kms:Decrypt',
        'kms:Encrypt',
        'kms:GenerateDataKey',
        'kms:ReEncryptFrom',
      ]) {
        expect({ admin, action, ok: decide(admin, action) }).toEqual({ admin, action, ok: false });
      }
      expect(decide(admin, 'kms:Decrypt', attested(IMAGE_A))).toBe(false);
    }
  });

  it('names every action explicitly: no wildcard Allow, no account root principal', () => {
    const doc = JSON.parse(text) as {
      Statement: Array<{ Sid: string; Effect: string; Principal: { AWS: string | string[] }; Action: string | string[] }>;
    };
    for (const st of doc.Statement.filter((x) => x.Effect === 'Allow')) {
      expect({ sid: st.Sid, wildcards: [st.Action].flat().filter((a) => a.includes('*')) }).toEqual({ sid: st.Sid, wildcards: [] });
      expect({ sid: st.Sid, principals: [st.Principal.AWS].flat().filter((p) => p === '*' || p.endsWith(':root')) }).toEqual({
        sid: st.Sid,
        principals: [],
      });
    }
    expect(doc.Statement.map((x) => x.Sid)).toEqual([
      'KeyAdministration',
      'ImageApproval',
      'BreakGlass',
      'ParentReadsKeyMetadata',
      'EnclaveDecryptOnlyWhenAttested',
      'DenyDecryptOutsideApprovedEnclaves',
      'DenyDecryptOutsideParentRole',
      'DenyReEncrypt',
      'DenyCreateGrant',
      'DenyPolicyLockoutBypass',
    ]);
  });

  it('gives PutKeyPolicy to the image approver only, and lets it update the policy again (lockout safety)', () => {
    expect(evaluate(APPROVER, 'kms:PutKeyPolicy')).toEqual({
      allowed: true,
      effect: 'Allow',
      reason: 'allowed by statement ImageApproval',
    });
    expect(decide(APPROVER, 'kms:GetKeyPolicy')).toBe(true);
    for (const who of EVERYONE.filter((p) => p !== APPROVER))
      expect({ who, put: decide(who, 'kms:PutKeyPolicy') }).toEqual({ who, put: false });
    // Not even the approver may bypass the lockout safety check (the next policy could lock everyone out).
    expect(evaluate(APPROVER, 'kms:PutKeyPolicy', { 'kms:BypassPolicyLockoutSafetyCheck': 'true' })).toMatchObject({
      effect: 'ExplicitDeny',
      reason: 'explicitly denied by statement DenyPolicyLockoutBypass',
    });
    for (const action of ['kms:CreateGrant', 'kms:ScheduleKeyDeletion', 'kms:DisableKey', 'kms:Decrypt', 'kms:ReEncryptFrom'])
      expect({ action, ok: decide(APPROVER, action) }).toEqual({ action, ok: false });
  });

  it('gives disabling and deletion to the break-glass role only', () => {
    for (const action of ['kms:DisableKey', 'kms:EnableKey', 'kms:ScheduleKeyDeletion', 'kms:CancelKeyDeletion'])
      expect({ action, ok: decide(BREAK_GLASS, action) }).toEqual({ action, ok: true });
    for (const who of [ROLE, ADMIN, ADMIN_USER, APPROVER, OUTSIDER]) {
      expect({ who, ok: decide(who, 'kms:ScheduleKeyDeletion') || decide(who, 'kms:DisableKey') }).toEqual({ who, ok: false });
    }
    for (const action of ['kms:PutKeyPolicy', 'kms:CreateGrant', 'kms:Decrypt', 'kms:ReEncryptFrom'])
      expect({ action, ok: decide(BREAK_GLASS, action) }).toEqual({ action, ok: false });
  });

  it('denies ReEncrypt and CreateGrant to every principal explicitly, so no grant or IAM policy can allow them', () => {
    for (const who of EVERYONE) {
      expect(evaluate(who, 'kms:ReEncryptFrom')).toMatchObject({
        effect: 'ExplicitDeny',
        reason: 'explicitly denied by statement DenyReEncrypt',
      });
      expect(evaluate(who, 'kms:ReEncryptTo')).toMatchObject({
        effect: 'ExplicitDeny',
        reason: 'explicitly denied by statement DenyReEncrypt',
      });
      expect(evaluate(who, 'kms:CreateGrant')).toMatchObject({
        effect: 'ExplicitDeny',
        reason: 'explicitly denied by statement DenyCreateGrant',
      });
      // Unattested Decrypt: explicit too (an implicit deny could be overridden by a grant).
      expect(evaluate(who, 'kms:Decrypt')).toMatchObject({
        effect: 'ExplicitDeny',
        reason: 'explicitly denied by statement DenyDecryptOutsideApprovedEnclaves',
      });
    }
    // An approved image on an instance of another role: denied explicitly too (a Decrypt grant cannot help).
    for (const who of EVERYONE) {
      expect(evaluate(who, 'kms:Decrypt', attested(IMAGE_A, OUTSIDER))).toMatchObject({
        effect: 'ExplicitDeny',
        reason: 'explicitly denied by statement DenyDecryptOutsideParentRole',
      });
    }
    // Even an attested enclave cannot ReEncrypt: ReEncrypt has no Recipient, so no attestation reaches KMS.
    expect(evaluate(ROLE, 'kms:ReEncryptFrom', attested(IMAGE_A)).effect).toBe('ExplicitDeny');
  });

  it('pins PCR8 when asked, for every approved image', () => {
    const signed = { PCR0: IMAGE_A, PCR8: 'c8'.repeat(48) };
    const pinned = parsePolicy(generateKeyPolicy({ images: [signed], ...roles, pinSigningCertificate: true }));
    const d = (values: Record<string, string>) =>
      evaluatePolicy(pinned, { action: 'kms:Decrypt', principalArn: ROLE, account: '111122223333', keyArn: KEY, values }).allowed;
    expect(d({ ...attested(IMAGE_A), 'kms:RecipientAttestation:PCR8': 'c8'.repeat(48) })).toBe(true);
    expect(d({ ...attested(IMAGE_A), 'kms:RecipientAttestation:PCR8': 'c9'.repeat(48) })).toBe(false);
    expect(d(attested(IMAGE_A))).toBe(false); // unsigned image: no PCR8 in the document
    // Without --pin-pcr8 the same measurements do not pin it.
    const unpinned = parsePolicy(generateKeyPolicy({ images: [signed], ...roles }));
    expect(
      evaluatePolicy(unpinned, {
        action: 'kms:Decrypt',
        principalArn: ROLE,
        account: '111122223333',
        keyArn: KEY,
        values: attested(IMAGE_A),
      }).allowed,
    ).toBe(true);
  });

  it('computes PCR3 the way Nitro does: SHA-384 of 48 zero bytes followed by the role ARN', () => {
    // Computed independently, with Python's hashlib, as the AWS Nitro Enclaves User Guide shows for PCR3:
    //   python3 -c "import hashlib; h = hashlib.sha384(); h.update(b'\0' * 48); \
    //     h.update('arn:aws:iam::111122223333:role/nitro-keystore-parent'.encode('utf-8')); print(h.hexdigest())"
    expect(pcr3ForRole(ROLE)).toBe('563ed9c0d1bc50326c5a9a342078f781c01dbec918cdeafef93de6ebb783e077c62a348ab781aed250d02ce34cd25598');
    expect(pcr3ForRole(ADMIN)).toBe('d014d3fb36fd398b0c0b1a86dc0ca40ba52276d0545ab243f65a93a8abe48d8cf655f86e24f57220ffca3983e3a6f6ae');
    // The same construction measures the instance id into PCR4: applied to the instance id of a real AWS
    // attestation document, it gives that document's PCR4, as the Nitro hypervisor computed it.
    const real = decodeAttestationDocument(Buffer.from(realDoc.documentHex, 'hex')).document;
    const instanceId = real.moduleId.split('-enc')[0] as string;
    expect(instanceId).toBe('i-0f73a4b4cb74cc9f2');
    expect(pcr3ForRole(instanceId)).toBe(real.pcrs.get(4)?.toString('hex'));
  });

  it('reads nitro-cli measurements', () => {
    const m = measurementsFromNitroCliJson({
      Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: IMAGE_A.toUpperCase(), PCR1: 'c'.repeat(96), PCR2: 'd'.repeat(96) },
    });
    // No SecurityEpoch: made before build-eif.sh recorded epochs, so an image of epoch 1.
    expect(m).toEqual({ PCR0: IMAGE_A, PCR1: 'c'.repeat(96), PCR2: 'd'.repeat(96), PCR8: undefined, securityEpoch: 1, mode: 'normal' });
    expect(() => measurementsFromNitroCliJson({ Measurements: {} })).toThrow(/no Measurements.PCR0/);
  });

  it("reads the image's security epoch and mode that build-eif.sh writes beside nitro-cli's measurements", () => {
    const m = measurementsFromNitroCliJson({ Measurements: { PCR0: IMAGE_A }, SecurityEpoch: 3, EnclaveMode: 'migration' });
    expect(m).toMatchObject({ PCR0: IMAGE_A, securityEpoch: 3, mode: 'migration' });
    expect(() => measurementsFromNitroCliJson({ Measurements: { PCR0: IMAGE_A }, SecurityEpoch: '2' }, 'm.json')).toThrow(
      /m.json: SecurityEpoch is not a positive integer/,
    );
    expect(() => measurementsFromNitroCliJson({ Measurements: { PCR0: IMAGE_A }, SecurityEpoch: 0 })).toThrow(/SecurityEpoch/);
    expect(() => measurementsFromNitroCliJson({ Measurements: { PCR0: IMAGE_A }, EnclaveMode: 'debug' })).toThrow(
      /EnclaveMode is not one of genesis, normal, migration/,
    );
  });

  const base: PolicyInput = { images: [{ PCR0: IMAGE_A }], ...roles };
  const ROOT = 'arn:aws:iam::111122223333:root';
  it.each<[string, Partial<PolicyInput>, RegExp]>([
    ['no image', { images: [] }, /at least one image/],
    ['a debug image (zero PCR0)', { images: [{ PCR0: '0'.repeat(96) }] }, /debug/],
    ['a short PCR0', { images: [{ PCR0: 'abcd' }] }, /48 bytes of hex/],
    ['a user as parent role', { parentRoleArn: 'arn:aws:iam::111122223333:user/bob' }, /parent role .* is not an IAM role ARN/],
    ['no administrator', { keyAdministrators: [] }, /at least one key administrator/],
    [
      'the account root as administrator',
      { keyAdministrators: [ADMIN, ROOT] },
      /key administrator arn:aws:iam::111122223333:root is the account root principal/,
    ],
    ['a bare account id as administrator', { keyAdministrators: ['111122223333'] }, /is the account root principal/],
    ['"*" as administrator', { keyAdministrators: ['*'] }, /is the account root principal \(or every principal\)/],
    [
      'the account root as image approver',
      { imageApproverRoleArn: ROOT },
      /image approver role arn:aws:iam::111122223333:root is the account root principal/,
    ],
    [
      'the account root as break-glass role',
      { breakGlassRoleArn: 'arn:aws-us-gov:iam::111122223333:root' },
      /break-glass role .* is the account root principal/,
    ],
    ['the account root as parent role', { parentRoleArn: ROOT }, /parent role .* is the account root principal/],
    [
      'a role session as administrator',
      { keyAdministrators: ['arn:aws:sts::111122223333:assumed-role/keystore-admin/bob'] },
      /not an IAM role or user ARN/,
    ],
    ['no image approver', { imageApproverRoleArn: '' }, /image approver role is required \(--image-approver-role-arn\)/],
    ['no break-glass role', { breakGlassRoleArn: '' }, /break-glass role is required \(--break-glass-role-arn\)/],
    ['a user as image approver', { imageApproverRoleArn: ADMIN_USER }, /image approver role .* is not an IAM role ARN/],
    ['the parent role as administrator', { keyAdministrators: [ROLE] }, /must not also administer/],
    [
      'the image approver as administrator',
      { keyAdministrators: [ADMIN, APPROVER] },
      /image approver role must not also be a key administrator/,
    ],
    [
      'the break-glass role as administrator',
      { keyAdministrators: [BREAK_GLASS] },
      /break-glass role must not also be a key administrator/,
    ],
    ['the parent role as image approver', { imageApproverRoleArn: ROLE }, /parent role must not also be the image approver/],
    ['one role as image approver and break-glass', { breakGlassRoleArn: APPROVER }, /must be different roles/],
    ['PCR8 pinning without PCR8', { pinSigningCertificate: true }, /PCR8 pinning asked for, but an image has no PCR8/],
  ])('refuses %s, saying why', (_name, over, message) => {
    const input = { ...base, ...over };
    expect(() => generateKeyPolicy(input)).toThrow(PolicyInputError);
    expect(() => generateKeyPolicy(input)).toThrow(message);
    // The base input, without that one change, is accepted: the change is what was refused.
    expect(() => generateKeyPolicy(base)).not.toThrow();
  });
});

describe('security epochs in the key policy', () => {
  const epochOf = (text: string) => securityEpochOfPolicy(JSON.parse(text));
  const policy = (images: PolicyInput['images'], over: Partial<PolicyInput> = {}) => generateKeyPolicy({ images, ...roles, ...over });

  it("records the images' epoch in the policy Id, where the next approval reads it back", () => {
    const text = policy([
      { PCR0: IMAGE_A, securityEpoch: 2 },
      { PCR0: IMAGE_B, securityEpoch: 2 },
    ]);
    expect(JSON.parse(text).Id).toBe('nitro-keystore-key-policy-epoch-2');
    expect(epochOf(text)).toBe(2);
    expect(epochOf(policy([{ PCR0: IMAGE_A, securityEpoch: 7 }]))).toBe(7);
    // Images given without an epoch (the dev stack, the test platform) are of this release's.
    expect(epochOf(policy([{ PCR0: IMAGE_A }]))).toBe(SECURITY_EPOCH);
    // As aws kms get-key-policy prints it (--output json), as its --query Policy text, or parsed.
    expect(securityEpochOfPolicy({ Policy: text, PolicyName: 'default' })).toBe(2);
    expect(securityEpochOfPolicy(text)).toBe(2);
  });

  it('reads a policy made before epochs as epoch 1, and any other policy as none', () => {
    const old = { ...JSON.parse(policy([{ PCR0: IMAGE_A }])), Id: 'nitro-keystore-key-policy' };
    expect(securityEpochOfPolicy(old)).toBe(1);
    const kmsDefault = { Version: '2012-10-17', Id: 'key-default-1', Statement: [{ Sid: 'Enable IAM User Permissions' }] };
    expect(securityEpochOfPolicy(kmsDefault)).toBeUndefined();
    expect(securityEpochOfPolicy({ ...kmsDefault, Id: 'nitro-keystore-key-policy-epoch-02' })).toBeUndefined();
    expect(() => securityEpochOfPolicy({ Id: 'nitro-keystore-key-policy-epoch-2' })).toThrow(/not a key policy document/);
  });

  it('refuses images of different epochs: raising the epoch is a cutover, the older images go', () => {
    expect(() =>
      policy([
        { PCR0: IMAGE_A, securityEpoch: 1 },
        { PCR0: IMAGE_B, securityEpoch: 2 },
      ]),
    ).toThrow(
      /security epochs 1, 2: a release that raises the epoch is a cutover, so older images are not kept beside it; approve only the epoch-2 images/,
    );
    expect(epochOf(policy([{ PCR0: IMAGE_B, securityEpoch: 2 }], { currentSecurityEpoch: 1 }))).toBe(2);
  });

  it('refuses an image below the epoch the installed policy approves, and accepts the same or a higher one', () => {
    expect(() => policy([{ PCR0: IMAGE_A, securityEpoch: 1 }], { currentSecurityEpoch: 2 })).toThrow(
      /the installed policy approves security epoch 2; an image of epoch 1 cannot be approved/,
    );
    expect(() => policy([{ PCR0: IMAGE_A, securityEpoch: 2 }], { currentSecurityEpoch: 2 })).not.toThrow();
    expect(() => policy([{ PCR0: IMAGE_A, securityEpoch: 3 }], { currentSecurityEpoch: 2 })).not.toThrow();
    expect(() => policy([{ PCR0: IMAGE_A, securityEpoch: 0 }])).toThrow(/security epoch 0 is not a positive integer/);
  });

  it('never approves a genesis image, and a migration image only for the migration window', () => {
    expect(() => policy([{ PCR0: IMAGE_A, mode: 'genesis' }])).toThrow(/is a genesis image: it has no identity and never needs Decrypt/);
    expect(() => policy([{ PCR0: IMAGE_A, mode: 'migration' }])).toThrow(/is a migration image: approve it only for the migration window/);
    const window = JSON.parse(policy([{ PCR0: IMAGE_A, mode: 'migration' }], { allowMigrationImage: true })) as {
      Statement: Array<{ Sid: string; Condition?: Record<string, Record<string, unknown>> }>;
    };
    const allow = window.Statement.find((st) => st.Sid === 'EnclaveDecryptOnlyWhenAttested');
    expect(allow?.Condition?.StringEqualsIgnoreCase?.['kms:RecipientAttestation:ImageSha384']).toBe(IMAGE_A);
    expect(() => policy([{ PCR0: IMAGE_A, mode: 'normal' }])).not.toThrow();
  });
});
