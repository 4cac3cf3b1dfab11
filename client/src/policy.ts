/**
 * The KMS key policy operators install (DESIGN §3): only an attested enclave running an approved image, on an
 * instance with the parent's IAM role, can Decrypt. From measurements (nitro-cli's JSON or PCR values), the
 * parent role ARN and the key administrators:
 *
 * - administrators manage the key but cannot use it (no Decrypt, no Encrypt, no data keys);
 * - the parent role may read the key's metadata and public key;
 * - the parent role may Decrypt only with `kms:RecipientAttestation:ImageSha384` (PCR0) among the approved
 *   images and `kms:RecipientAttestation:PCR3` equal to its role's measurement;
 * - an explicit Deny refuses Decrypt to anyone without an approved PCR0, whatever IAM policies say.
 *
 * Several images may be approved at once (rolling upgrades). Debug-mode images (all-zero PCR0) are refused:
 * every debug enclave reports zeros, so approving them would approve any debug enclave.
 */
import { createHash } from 'node:crypto';

export interface ImageMeasurements {
  PCR0: string;
  PCR1?: string | undefined;
  PCR2?: string | undefined;
  PCR8?: string | undefined;
}

export interface PolicyInput {
  images: ImageMeasurements[];
  parentRoleArn: string;
  keyAdministrators: string[];
  /** Also pin PCR8 (signed EIFs) when the measurements carry it. */
  pinSigningCertificate?: boolean;
}

export class PolicyInputError extends Error {
  override readonly name = 'PolicyInputError';
}

const PCR_RE = /^[0-9a-f]{96}$/;
const ROLE_RE = /^arn:aws[a-z-]*:iam::\d{12}:role\/[A-Za-z0-9+=,.@_/-]{1,512}$/;
const PRINCIPAL_RE = /^arn:aws[a-z-]*:(iam::\d{12}:(role|user|root)(\/[A-Za-z0-9+=,.@_/-]{1,512})?|sts::\d{12}:assumed-role\/.+)$/;

/** PCR3 as Nitro computes it: SHA-384 over 48 zero bytes followed by the role ARN. */
export function pcr3ForRole(roleArn: string): string {
  return createHash('sha384').update(Buffer.alloc(48)).update(roleArn, 'utf8').digest('hex');
}

export function normalizePcr(value: string, name: string): string {
  const v = value.trim().toLowerCase().replace(/^0x/, '');
  if (!PCR_RE.test(v)) throw new PolicyInputError(`${name} must be 48 bytes of hex (96 characters), got ${value.length} characters`);
  return v;
}

/** Reads `nitro-cli build-enclave` / `describe-eif` output (or just its `Measurements` object). */
export function measurementsFromNitroCliJson(json: unknown, source = 'measurements'): ImageMeasurements {
  const obj = json as { Measurements?: Record<string, unknown> } & Record<string, unknown>;
  const m = (obj && typeof obj === 'object' && obj.Measurements && typeof obj.Measurements === 'object' ? obj.Measurements : obj) as Record<string, unknown>;
  if (typeof m?.PCR0 !== 'string') throw new PolicyInputError(`${source}: no Measurements.PCR0`);
  const opt = (k: string) => (typeof m[k] === 'string' ? normalizePcr(m[k] as string, `${source} ${k}`) : undefined);
  return { PCR0: normalizePcr(m.PCR0, `${source} PCR0`), PCR1: opt('PCR1'), PCR2: opt('PCR2'), PCR8: opt('PCR8') };
}

export function generateKeyPolicy(input: PolicyInput): string {
  if (input.images.length === 0) throw new PolicyInputError('at least one image (PCR0) must be approved');
  if (!ROLE_RE.test(input.parentRoleArn)) throw new PolicyInputError(`parent role ${input.parentRoleArn} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)`);
  if (input.keyAdministrators.length === 0) throw new PolicyInputError('at least one key administrator is needed, or nobody could ever change the policy');
  for (const a of input.keyAdministrators) {
    if (!PRINCIPAL_RE.test(a)) throw new PolicyInputError(`key administrator ${a} is not an IAM principal ARN`);
    if (a === input.parentRoleArn) throw new PolicyInputError('the parent role must not also administer the key (it could then rewrite the policy)');
  }
  const pcr0s = [...new Set(input.images.map((i, n) => normalizePcr(i.PCR0, `image ${n + 1} PCR0`)))];
  if (pcr0s.some((p) => /^0+$/.test(p))) throw new PolicyInputError('a PCR0 of all zeros is a debug-mode enclave; debug images cannot be approved');
  const pcr8s = input.pinSigningCertificate ? [...new Set(input.images.map((i, n) => (i.PCR8 ? normalizePcr(i.PCR8, `image ${n + 1} PCR8`) : undefined)))] : [];
  if (input.pinSigningCertificate && pcr8s.some((p) => p === undefined)) throw new PolicyInputError('PCR8 pinning asked for, but an image has no PCR8 (is it signed?)');

  const attestation: Record<string, string | string[]> = {
    'kms:RecipientAttestation:ImageSha384': pcr0s.length === 1 ? (pcr0s[0] as string) : pcr0s,
    'kms:RecipientAttestation:PCR3': pcr3ForRole(input.parentRoleArn),
  };
  if (pcr8s.length) attestation['kms:RecipientAttestation:PCR8'] = pcr8s.length === 1 ? (pcr8s[0] as string) : (pcr8s as string[]);

  const policy = {
    Version: '2012-10-17',
    Id: 'nitro-keystore-key-policy',
    Statement: [
      {
        Sid: 'KeyAdministration',
        Effect: 'Allow',
        Principal: { AWS: input.keyAdministrators.length === 1 ? input.keyAdministrators[0] : input.keyAdministrators },
        Action: [
          'kms:Create*',
          'kms:Describe*',
          'kms:Enable*',
          'kms:List*',
          'kms:Put*',
          'kms:Update*',
          'kms:Revoke*',
          'kms:Disable*',
          'kms:Get*',
          'kms:Delete*',
          'kms:TagResource',
          'kms:UntagResource',
          'kms:ScheduleKeyDeletion',
          'kms:CancelKeyDeletion',
        ],
        Resource: '*',
      },
      { Sid: 'ParentReadsKeyMetadata', Effect: 'Allow', Principal: { AWS: input.parentRoleArn }, Action: ['kms:DescribeKey', 'kms:GetPublicKey'], Resource: '*' },
      { Sid: 'EnclaveDecryptOnlyWhenAttested', Effect: 'Allow', Principal: { AWS: input.parentRoleArn }, Action: 'kms:Decrypt', Resource: '*', Condition: { StringEqualsIgnoreCase: attestation } },
      {
        Sid: 'DenyDecryptOutsideApprovedEnclaves',
        Effect: 'Deny',
        Principal: '*',
        Action: 'kms:Decrypt',
        Resource: '*',
        Condition: { StringNotEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': pcr0s.length === 1 ? pcr0s[0] : pcr0s } },
      },
    ],
  };
  return JSON.stringify(policy, null, 2);
}
