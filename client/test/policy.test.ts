import { decodeAttestationDocument } from '../../shared/src/attestation';
import realDoc from '../../shared/test/fixtures/aws-nitro-attestation-debug.json';
import { evaluatePolicy, parsePolicy } from '../../sim/src/kms/policy';
import { measureString } from '../../sim/src/measure';
import { generateKeyPolicy, measurementsFromNitroCliJson, pcr3ForRole, PolicyInputError } from '../src/policy';

const ROLE = 'arn:aws:iam::111122223333:role/nitro-keystore-parent';
const ADMIN = 'arn:aws:iam::111122223333:role/keystore-admin';
const KEY = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const IMAGE_A = 'a1'.repeat(48);
const IMAGE_B = 'b2'.repeat(48);

describe('key policy generator', () => {
  const policy = parsePolicy(generateKeyPolicy({ images: [{ PCR0: IMAGE_A }, { PCR0: IMAGE_B.toUpperCase() }], parentRoleArn: ROLE, keyAdministrators: [ADMIN] }));
  const decide = (principalArn: string, action: string, values: Record<string, string> = {}) =>
    evaluatePolicy(policy, { action, principalArn, account: '111122223333', keyArn: KEY, values }).allowed;
  const attested = (pcr0: string, role = ROLE) => ({ 'kms:RecipientAttestation:ImageSha384': pcr0, 'kms:RecipientAttestation:PCR3': pcr3ForRole(role) });

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

  it('lets administrators manage the key but never use it', () => {
    expect(decide(ADMIN, 'kms:PutKeyPolicy')).toBe(true);
    expect(decide(ADMIN, 'kms:GetKeyPolicy')).toBe(true);
    expect(decide(ADMIN, 'kms:Decrypt')).toBe(false);
    expect(decide(ADMIN, 'kms:Decrypt', attested(IMAGE_A))).toBe(false);
    expect(decide(ADMIN, 'kms:Encrypt')).toBe(false);
    expect(decide(ADMIN, 'kms:GenerateDataKey')).toBe(false);
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
    // And the simulated NSM measures the parent role the same way, so the dev stack's documents match the policy.
    expect(measureString(ROLE)).toBe(pcr3ForRole(ROLE));
  });

  it('reads nitro-cli measurements', () => {
    const m = measurementsFromNitroCliJson({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: IMAGE_A.toUpperCase(), PCR1: 'c'.repeat(96), PCR2: 'd'.repeat(96) } });
    expect(m).toEqual({ PCR0: IMAGE_A, PCR1: 'c'.repeat(96), PCR2: 'd'.repeat(96), PCR8: undefined });
    expect(() => measurementsFromNitroCliJson({ Measurements: {} })).toThrow(/no Measurements.PCR0/);
  });

  it.each<[string, Parameters<typeof generateKeyPolicy>[0], RegExp]>([
    ['no image', { images: [], parentRoleArn: ROLE, keyAdministrators: [ADMIN] }, /at least one image/],
    ['a debug image (zero PCR0)', { images: [{ PCR0: '0'.repeat(96) }], parentRoleArn: ROLE, keyAdministrators: [ADMIN] }, /debug/],
    ['a short PCR0', { images: [{ PCR0: 'abcd' }], parentRoleArn: ROLE, keyAdministrators: [ADMIN] }, /48 bytes of hex/],
    ['a user as parent role', { images: [{ PCR0: IMAGE_A }], parentRoleArn: 'arn:aws:iam::111122223333:user/bob', keyAdministrators: [ADMIN] }, /not an IAM role ARN/],
    ['no administrator', { images: [{ PCR0: IMAGE_A }], parentRoleArn: ROLE, keyAdministrators: [] }, /key administrator/],
    ['the parent role as administrator', { images: [{ PCR0: IMAGE_A }], parentRoleArn: ROLE, keyAdministrators: [ROLE] }, /must not also administer/],
    ['PCR8 pinning without PCR8', { images: [{ PCR0: IMAGE_A }], parentRoleArn: ROLE, keyAdministrators: [ADMIN], pinSigningCertificate: true }, /PCR8/],
  ])('refuses %s', (_name, input, message) => {
    expect(() => generateKeyPolicy(input)).toThrow(PolicyInputError);
    expect(() => generateKeyPolicy(input)).toThrow(message);
  });
});
