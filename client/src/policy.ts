/**
 * The KMS key policy operators install (docs/KEY-POLICY.md): only an attested enclave running an
 * approved image, on an instance with the parent's IAM role, can unwrap a data key. From measurements
 * (nitro-cli's JSON or PCR values) and four kinds of principal:
 *
 * - administrators (`KeyAdministration`) see and tidy the key: describe, read the policy, list and revoke grants,
 *   tags, description, cancel a scheduled deletion. An explicit list, no wildcards: they cannot use the key,
 *   change its policy, create grants, disable it or schedule its deletion;
 * - the image approver (`ImageApproval`) is the only principal that may `PutKeyPolicy`: approving an image is a
 *   policy change, routine (every upgrade), so it has its own role whose every use is logged and alarmed;
 * - the break-glass role (`BreakGlass`) may disable, re-enable, schedule and cancel the deletion of the key;
 * - the parent role may read the key's metadata and public key, and may Decrypt only with
 *   `kms:RecipientAttestation:ImageSha384` (PCR0) among the approved images and `kms:RecipientAttestation:PCR3`
 *   equal to its role's measurement (and PCR8 when pinned);
 * - explicit Deny statements for every AWS principal, which no Allow, IAM policy or grant can override:
 *   Decrypt without an approved PCR0, or from an instance whose role is not the parent role (PCR3), so that
 *   not even a grant could let another role's instance running an approved image unwrap; `kms:ReEncrypt*` (ReEncrypt decrypts ciphertext made with the public key
 *   and re-encrypts it under another key, with no Recipient and so no attestation); `kms:CreateGrant` (a grant
 *   could allow ReEncryptFrom or Decrypt); and PutKeyPolicy with `BypassPolicyLockoutSafetyCheck`, so a policy
 *   change can never lock the approver out.
 *
 * Several images may be approved at once (rolling upgrades). Debug-mode images (all-zero PCR0) are refused:
 * every debug enclave reports zeros, so approving them would approve any debug enclave. The account root
 * principal is refused: in a key policy it delegates to every IAM policy in the account.
 *
 * Security epochs (docs/OPERATIONS.md, "Security epochs"): every image has the epoch of its enclave configuration
 * (scripts/build-eif.sh writes it into the measurements as `SecurityEpoch`). The policy approves images of one
 * epoch only and records it in its `Id` (`nitro-keystore-key-policy-epoch-N`), so the next approval can read the
 * highest epoch approved so far back from the installed policy and refuse to go below it: a release that raises
 * the epoch is a cutover, never a roll beside older images. A genesis image (no identity) never needs Decrypt and
 * is refused; a migration image only with `allowMigrationImage` (the migration window, docs/OPERATIONS.md,
 * "Migration").
 */
import { PCR_HEX_RE, pcr3ForRole } from '@nks/shared/pcr';
import { SECURITY_EPOCH } from '@nks/shared/release';

export { pcr3ForRole };

/** What an image's enclave configuration makes it: no identity (genesis), `mode` normal or migration. */
export const ENCLAVE_IMAGE_MODES = ['genesis', 'normal', 'migration'] as const;
export type EnclaveImageMode = (typeof ENCLAVE_IMAGE_MODES)[number];

/** The epoch of images built before epochs were recorded (releases up to 0.3). */
export const PRE_EPOCH_SECURITY_EPOCH = 1;

export interface ImageMeasurements {
  PCR0: string;
  PCR1?: string | undefined;
  PCR2?: string | undefined;
  PCR8?: string | undefined;
  /** The enclave configuration's securityEpoch; default this release's SECURITY_EPOCH. */
  securityEpoch?: number | undefined;
  /** Default normal. */
  mode?: EnclaveImageMode | undefined;
}

export interface PolicyInput {
  images: ImageMeasurements[];
  parentRoleArn: string;
  /** IAM roles or users that administer (but cannot use, re-policy, disable or delete) the key. */
  keyAdministrators: string[];
  /** The IAM role that installs key policies (approves images): the only principal allowed PutKeyPolicy. */
  imageApproverRoleArn: string;
  /** The IAM role allowed to disable the key and schedule its deletion. */
  breakGlassRoleArn: string;
  /** Also pin PCR8 (signed EIFs) when the measurements carry it. */
  pinSigningCertificate?: boolean;
  /**
   * The highest security epoch the installed policy approves (`securityEpochOfPolicy`): no image below it is
   * approved. Undefined when no policy of ours is installed yet.
   */
  currentSecurityEpoch?: number | undefined;
  /** Approve a migration image (`mode: "migration"`): only for the migration window. */
  allowMigrationImage?: boolean;
}

export class PolicyInputError extends Error {
  override readonly name = 'PolicyInputError';
}

/** What each principal may do: explicit lists, no wildcards (a wildcard would also grant future operations). */
export const ADMINISTRATOR_ACTIONS = [
  'kms:DescribeKey',
  'kms:GetKeyPolicy',
  'kms:GetPublicKey',
  'kms:ListGrants',
  'kms:ListKeyPolicies',
  'kms:ListResourceTags',
  'kms:RevokeGrant',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:UpdateKeyDescription',
  'kms:CancelKeyDeletion',
] as const;
export const IMAGE_APPROVER_ACTIONS = ['kms:PutKeyPolicy', 'kms:GetKeyPolicy', 'kms:DescribeKey'] as const;
export const BREAK_GLASS_ACTIONS = [
  'kms:DisableKey',
  'kms:EnableKey',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
  'kms:DescribeKey',
  'kms:GetKeyPolicy',
] as const;
export const PARENT_METADATA_ACTIONS = ['kms:DescribeKey', 'kms:GetPublicKey'] as const;

const ROLE_RE = /^arn:aws[a-z-]*:iam::\d{12}:role\/[A-Za-z0-9+=,.@_/-]{1,512}$/;
const USER_OR_ROLE_RE = /^arn:aws[a-z-]*:iam::\d{12}:(role|user)\/[A-Za-z0-9+=,.@_/-]{1,512}$/;
const ROOT_RE = /^(\*|\d{12}|arn:aws[a-z-]*:iam::\d{12}:root)$/;

export function normalizePcr(value: string, name: string): string {
  const v = value.trim().toLowerCase().replace(/^0x/, '');
  if (!PCR_HEX_RE.test(v)) throw new PolicyInputError(`${name} must be 48 bytes of hex (96 characters), got ${value.length} characters`);
  return v;
}

/**
 * Reads `nitro-cli build-enclave` / `describe-eif` output (or just its `Measurements` object), with what
 * scripts/build-eif.sh adds beside it: `SecurityEpoch` and `EnclaveMode`. A file without `SecurityEpoch` was made
 * before epochs were recorded, so its image is of epoch 1.
 */
export function measurementsFromNitroCliJson(json: unknown, source = 'measurements'): ImageMeasurements {
  const obj = json as { Measurements?: Record<string, unknown> } & Record<string, unknown>;
  const m = obj && typeof obj === 'object' && obj.Measurements && typeof obj.Measurements === 'object' ? obj.Measurements : obj;
  if (typeof m?.PCR0 !== 'string') throw new PolicyInputError(`${source}: no Measurements.PCR0`);
  const opt = (k: string) => (typeof m[k] === 'string' ? normalizePcr(m[k], `${source} ${k}`) : undefined);
  const epoch = obj.SecurityEpoch;
  if (epoch !== undefined && !isEpoch(epoch)) throw new PolicyInputError(`${source}: SecurityEpoch is not a positive integer`);
  const mode = obj.EnclaveMode;
  if (mode !== undefined && !(ENCLAVE_IMAGE_MODES as readonly unknown[]).includes(mode))
    throw new PolicyInputError(`${source}: EnclaveMode is not one of ${ENCLAVE_IMAGE_MODES.join(', ')}`);
  return {
    PCR0: normalizePcr(m.PCR0, `${source} PCR0`),
    PCR1: opt('PCR1'),
    PCR2: opt('PCR2'),
    PCR8: opt('PCR8'),
    securityEpoch: epoch ?? PRE_EPOCH_SECURITY_EPOCH,
    mode: (mode as EnclaveImageMode | undefined) ?? 'normal',
  };
}

const isEpoch = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;

/** The policy `Id` that records the security epoch its images are of. */
export const POLICY_ID_PREFIX = 'nitro-keystore-key-policy';
export const policyIdFor = (epoch: number): string => `${POLICY_ID_PREFIX}-epoch-${epoch}`;
const POLICY_ID_RE = new RegExp(`^${POLICY_ID_PREFIX}-epoch-([1-9][0-9]{0,8})$`);

/**
 * The security epoch an installed key policy approves, from its `Id`: N for a policy this generator made
 * (`…-epoch-N`), 1 for one made before epochs (`nitro-keystore-key-policy`), undefined for any other policy (KMS's
 * default one before the first approval). Accepts the policy document, its JSON text, or `aws kms get-key-policy`
 * output (`{"Policy": "<json>"}`).
 */
export function securityEpochOfPolicy(policy: unknown): number | undefined {
  let doc = policy;
  if (typeof doc === 'string') doc = JSON.parse(doc) as unknown;
  if (doc && typeof doc === 'object' && typeof (doc as { Policy?: unknown }).Policy === 'string') {
    doc = JSON.parse((doc as { Policy: string }).Policy) as unknown;
  }
  if (!doc || typeof doc !== 'object' || !Array.isArray((doc as { Statement?: unknown }).Statement))
    throw new PolicyInputError('the current policy is not a key policy document (no Statement list)');
  const id = (doc as { Id?: unknown }).Id;
  if (id === POLICY_ID_PREFIX) return PRE_EPOCH_SECURITY_EPOCH;
  const m = typeof id === 'string' ? POLICY_ID_RE.exec(id) : null;
  return m ? Number(m[1]) : undefined;
}

/**
 * The one security epoch of the images to approve. Refuses mixed epochs (a raised epoch is a cutover: the older
 * images go), an epoch below the installed policy's, a genesis image, and a migration image unless allowed.
 */
export function approvedSecurityEpoch(input: Pick<PolicyInput, 'images' | 'currentSecurityEpoch' | 'allowMigrationImage'>): number {
  const epochs = input.images.map((i, n) => {
    const e = i.securityEpoch ?? SECURITY_EPOCH;
    if (!isEpoch(e)) throw new PolicyInputError(`image ${n + 1}: security epoch ${String(e)} is not a positive integer`);
    return e;
  });
  for (const [n, i] of input.images.entries()) {
    if (i.mode === 'genesis')
      throw new PolicyInputError(
        `image ${n + 1} (PCR0 ${i.PCR0.slice(0, 16)}…) is a genesis image: it has no identity and never needs Decrypt; do not approve it`,
      );
    if (i.mode === 'migration' && !input.allowMigrationImage)
      throw new PolicyInputError(
        `image ${n + 1} (PCR0 ${i.PCR0.slice(0, 16)}…) is a migration image: approve it only for the migration window (--migration-window), then approve the normal image alone`,
      );
  }
  const highest = Math.max(...epochs);
  const distinct = [...new Set(epochs)].sort((a, b) => a - b);
  if (distinct.length > 1)
    throw new PolicyInputError(
      `the images are of security epochs ${distinct.join(', ')}: a release that raises the epoch is a cutover, so older images are not kept beside it; approve only the epoch-${highest} images`,
    );
  if (input.currentSecurityEpoch !== undefined && highest < input.currentSecurityEpoch)
    throw new PolicyInputError(
      `the installed policy approves security epoch ${input.currentSecurityEpoch}; an image of epoch ${highest} cannot be approved (it would reopen what epoch ${input.currentSecurityEpoch} closed)`,
    );
  return highest;
}

/** Refuses the account root (or `*`) as a principal: it would hand the permission to the account's IAM policies. */
function refuseRoot(arn: string, what: string): void {
  if (ROOT_RE.test(arn.trim())) {
    throw new PolicyInputError(
      `${what} ${arn} is the account root principal (or every principal): in a key policy it lets every IAM policy of the account grant that access; name the IAM role (or user) instead`,
    );
  }
}

function checkRole(arn: string | undefined, what: string, flag: string): string {
  if (!arn) throw new PolicyInputError(`the ${what} is required (${flag})`);
  refuseRoot(arn, what);
  if (!ROLE_RE.test(arn)) throw new PolicyInputError(`${what} ${arn} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)`);
  return arn;
}

const one = (values: readonly string[]): string | string[] => (values.length === 1 ? (values[0] as string) : [...values]);

export function generateKeyPolicy(input: PolicyInput): string {
  if (input.images.length === 0) throw new PolicyInputError('at least one image (PCR0) must be approved');
  const parent = checkRole(input.parentRoleArn, 'parent role', '--parent-role-arn');
  const approver = checkRole(input.imageApproverRoleArn, 'image approver role', '--image-approver-role-arn');
  const breakGlass = checkRole(input.breakGlassRoleArn, 'break-glass role', '--break-glass-role-arn');
  if (input.keyAdministrators.length === 0) throw new PolicyInputError('at least one key administrator is needed (--admin)');
  const admins = [...new Set(input.keyAdministrators)];
  for (const a of admins) {
    refuseRoot(a, 'key administrator');
    if (!USER_OR_ROLE_RE.test(a)) throw new PolicyInputError(`key administrator ${a} is not an IAM role or user ARN`);
    if (a === parent) throw new PolicyInputError('the parent role must not also administer the key (it could then rewrite the policy)');
    if (a === approver)
      throw new PolicyInputError(
        'the image approver role must not also be a key administrator: PutKeyPolicy stays with one dedicated, alarmed role',
      );
    if (a === breakGlass)
      throw new PolicyInputError(
        'the break-glass role must not also be a key administrator: disabling and deleting the key stay with the break-glass role',
      );
  }
  if (approver === parent || breakGlass === parent)
    throw new PolicyInputError('the parent role must not also be the image approver or break-glass role');
  if (approver === breakGlass) throw new PolicyInputError('the image approver and break-glass roles must be different roles');

  const epoch = approvedSecurityEpoch(input);
  const pcr0s = [...new Set(input.images.map((i, n) => normalizePcr(i.PCR0, `image ${n + 1} PCR0`)))];
  if (pcr0s.some((p) => /^0+$/.test(p)))
    throw new PolicyInputError('a PCR0 of all zeros is a debug-mode enclave; debug images cannot be approved');
  const pcr8s = input.pinSigningCertificate
    ? [...new Set(input.images.map((i, n) => (i.PCR8 ? normalizePcr(i.PCR8, `image ${n + 1} PCR8`) : undefined)))]
    : [];
  if (input.pinSigningCertificate && pcr8s.some((p) => p === undefined))
    throw new PolicyInputError('PCR8 pinning asked for, but an image has no PCR8 (is it signed?)');

  const attestation: Record<string, string | string[]> = {
    'kms:RecipientAttestation:ImageSha384': one(pcr0s),
    'kms:RecipientAttestation:PCR3': pcr3ForRole(parent),
  };
  if (pcr8s.length) attestation['kms:RecipientAttestation:PCR8'] = one(pcr8s as string[]);
  const everyone = { AWS: '*' };

  const policy = {
    Version: '2012-10-17',
    Id: policyIdFor(epoch),
    Statement: [
      { Sid: 'KeyAdministration', Effect: 'Allow', Principal: { AWS: one(admins) }, Action: [...ADMINISTRATOR_ACTIONS], Resource: '*' },
      { Sid: 'ImageApproval', Effect: 'Allow', Principal: { AWS: approver }, Action: [...IMAGE_APPROVER_ACTIONS], Resource: '*' },
      { Sid: 'BreakGlass', Effect: 'Allow', Principal: { AWS: breakGlass }, Action: [...BREAK_GLASS_ACTIONS], Resource: '*' },
      { Sid: 'ParentReadsKeyMetadata', Effect: 'Allow', Principal: { AWS: parent }, Action: [...PARENT_METADATA_ACTIONS], Resource: '*' },
      {
        Sid: 'EnclaveDecryptOnlyWhenAttested',
        Effect: 'Allow',
        Principal: { AWS: parent },
        Action: 'kms:Decrypt',
        Resource: '*',
        Condition: { StringEqualsIgnoreCase: attestation },
      },
      {
        Sid: 'DenyDecryptOutsideApprovedEnclaves',
        Effect: 'Deny',
        Principal: everyone,
        Action: 'kms:Decrypt',
        Resource: '*',
        Condition: { StringNotEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': one(pcr0s) } },
      },
      {
        Sid: 'DenyDecryptOutsideParentRole',
        Effect: 'Deny',
        Principal: everyone,
        Action: 'kms:Decrypt',
        Resource: '*',
        Condition: { StringNotEqualsIgnoreCase: { 'kms:RecipientAttestation:PCR3': pcr3ForRole(parent) } },
      },
      { Sid: 'DenyReEncrypt', Effect: 'Deny', Principal: everyone, Action: 'kms:ReEncrypt*', Resource: '*' },
      { Sid: 'DenyCreateGrant', Effect: 'Deny', Principal: everyone, Action: 'kms:CreateGrant', Resource: '*' },
      {
        Sid: 'DenyPolicyLockoutBypass',
        Effect: 'Deny',
        Principal: everyone,
        Action: 'kms:PutKeyPolicy',
        Resource: '*',
        Condition: { Bool: { 'kms:BypassPolicyLockoutSafetyCheck': 'true' } },
      },
    ],
  };
  return JSON.stringify(policy, null, 2);
}
