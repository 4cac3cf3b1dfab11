/**
 * KMS operations: CreateKey, DescribeKey, ListKeys, GetPublicKey, Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
 * GenerateRandom, PutKeyPolicy, GetKeyPolicy, EnableKey, DisableKey, CreateGrant, ListGrants, RevokeGrant.
 * Shapes and errors follow the KMS API reference; `Recipient` answers carry CMS EnvelopedData for the attested
 * enclave key instead of plaintext.
 *
 * Authorization follows AWS: an explicit Deny in the key policy wins over everything (grants included); then an
 * Allow in the key policy or in a grant for the caller. ReEncrypt is authorized twice, as `kms:ReEncryptFrom` on
 * the source key and `kms:ReEncryptTo` on the destination key, and has no Recipient (no attestation).
 * CreateKey (with a Policy) and PutKeyPolicy run KMS's policy lockout safety check: the new policy must let the
 * caller make a later PutKeyPolicy, unless BypassPolicyLockoutSafetyCheck is true. DryRun is honoured by Decrypt,
 * ReEncrypt, CreateGrant and RevokeGrant (authorization only, then DryRunOperationException).
 *
 * Symmetric ciphertext is this emulator's own format (AES-256-GCM, encryption context bound as AAD, key id
 * inside); RSA ciphertext is plain RSAES-OAEP, as real KMS accepts from anyone holding the public key.
 */
import {
  constants,
  createCipheriv,
  createHash,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  randomUUID,
  type KeyObject,
} from 'node:crypto';
import { z } from 'zod';
import { AttestationError, verifyAttestation } from '@nks/shared/attestation';
import { buildEnvelopedData } from './cms-writer';
import { KmsError } from './errors';
import { defaultKeyPolicy, evaluatePolicy, parsePolicy, principalEntryMatches } from './policy';
import type { GrantRecord, KmsKeyRecord, KeySpec, KmsState } from './state';

export interface EmulatorConfig {
  region: string;
  account: string;
  /** Trust anchors for Recipient attestation documents (PEM). */
  trustRoots: string[];
  maxDocAgeMs: number;
}

export interface Caller {
  principalArn: string;
  account: string;
}

interface AuthorizeOptions {
  allowDisabled?: boolean;
  /** The request's encryption context, for grant constraints. */
  encryptionContext?: Record<string, string> | undefined;
}

const b64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');
const context = z.record(z.string(), z.string()).optional();
const RecipientSchema = z.object({ KeyEncryptionAlgorithm: z.literal('RSAES_OAEP_SHA_256').optional(), AttestationDocument: b64 });
const rsaAlgorithms = ['RSAES_OAEP_SHA_256', 'RSAES_OAEP_SHA_1'] as const;
const algorithm = z.enum(['SYMMETRIC_DEFAULT', ...rsaAlgorithms]).optional();
const grantTokens = z.array(z.string().min(1).max(8192)).max(10).optional();
const principalArn = z.string().min(1).max(256);

/** Every grant operation KMS knows; which of them a key accepts depends on its type (`grantOperationsFor`). */
export const GRANT_OPERATIONS = [
  'CreateGrant',
  'Decapsulate',
  'Decrypt',
  'DeriveSharedSecret',
  'DescribeKey',
  'Encapsulate',
  'Encrypt',
  'GenerateDataKey',
  'GenerateDataKeyPair',
  'GenerateDataKeyPairWithoutPlaintext',
  'GenerateDataKeyWithoutPlaintext',
  'GenerateMac',
  'GetPublicKey',
  'ReEncryptFrom',
  'ReEncryptTo',
  'RetireGrant',
  'Sign',
  'Verify',
  'VerifyMac',
] as const;
const SYMMETRIC_GRANT_OPERATIONS = new Set([
  'CreateGrant',
  'Decrypt',
  'DescribeKey',
  'Encrypt',
  'GenerateDataKey',
  'GenerateDataKeyPair',
  'GenerateDataKeyPairWithoutPlaintext',
  'GenerateDataKeyWithoutPlaintext',
  'ReEncryptFrom',
  'ReEncryptTo',
  'RetireGrant',
]);
const RSA_ENCRYPT_GRANT_OPERATIONS = new Set([
  'CreateGrant',
  'Decrypt',
  'DescribeKey',
  'Encrypt',
  'GetPublicKey',
  'ReEncryptFrom',
  'ReEncryptTo',
  'RetireGrant',
]);
const grantOperationsFor = (spec: KeySpec) => (spec === 'SYMMETRIC_DEFAULT' ? SYMMETRIC_GRANT_OPERATIONS : RSA_ENCRYPT_GRANT_OPERATIONS);

/** KMS's answer to a policy that fails the lockout safety check (CreateKey and PutKeyPolicy). */
export const LOCKOUT_MESSAGE = 'The new key policy will not allow you to update the key policy in the future.';
const MAX_POLICY_BYTES = 32768;

const Schemas = {
  CreateKey: z.object({
    KeySpec: z.enum(['SYMMETRIC_DEFAULT', 'RSA_2048', 'RSA_3072', 'RSA_4096']).optional(),
    CustomerMasterKeySpec: z.string().optional(),
    KeyUsage: z.literal('ENCRYPT_DECRYPT').optional(),
    Description: z.string().max(8192).optional(),
    Policy: z.string().optional(),
    BypassPolicyLockoutSafetyCheck: z.boolean().optional(),
    Tags: z.array(z.object({ TagKey: z.string(), TagValue: z.string() })).optional(),
  }),
  DescribeKey: z.object({ KeyId: z.string().min(1) }),
  ListKeys: z.object({ Limit: z.number().int().min(1).max(1000).optional(), Marker: z.string().optional() }),
  GetPublicKey: z.object({ KeyId: z.string().min(1) }),
  Encrypt: z.object({ KeyId: z.string().min(1), Plaintext: b64, EncryptionContext: context, EncryptionAlgorithm: algorithm }),
  Decrypt: z.object({
    KeyId: z.string().min(1).optional(),
    CiphertextBlob: b64,
    EncryptionContext: context,
    EncryptionAlgorithm: algorithm,
    Recipient: RecipientSchema.optional(),
    GrantTokens: grantTokens,
    DryRun: z.boolean().optional(),
  }),
  ReEncrypt: z.object({
    CiphertextBlob: b64,
    SourceEncryptionContext: context,
    SourceKeyId: z.string().min(1).optional(),
    DestinationKeyId: z.string().min(1),
    DestinationEncryptionContext: context,
    SourceEncryptionAlgorithm: algorithm,
    DestinationEncryptionAlgorithm: algorithm,
    GrantTokens: grantTokens,
    DryRun: z.boolean().optional(),
  }),
  GenerateDataKey: z.object({
    KeyId: z.string().min(1),
    KeySpec: z.enum(['AES_256', 'AES_128']).optional(),
    NumberOfBytes: z.number().int().min(1).max(1024).optional(),
    EncryptionContext: context,
    Recipient: RecipientSchema.optional(),
    GrantTokens: z.array(z.string()).optional(),
  }),
  GenerateRandom: z.object({ NumberOfBytes: z.number().int().min(1).max(1024).optional(), Recipient: RecipientSchema.optional() }),
  PutKeyPolicy: z.object({
    KeyId: z.string().min(1),
    Policy: z.string().min(1),
    PolicyName: z.string().optional(),
    BypassPolicyLockoutSafetyCheck: z.boolean().optional(),
  }),
  GetKeyPolicy: z.object({ KeyId: z.string().min(1), PolicyName: z.string().optional() }),
  EnableKey: z.object({ KeyId: z.string().min(1) }),
  DisableKey: z.object({ KeyId: z.string().min(1) }),
  CreateGrant: z.object({
    KeyId: z.string().min(1),
    GranteePrincipal: principalArn.optional(),
    GranteeServicePrincipal: z.string().optional(),
    RetiringPrincipal: principalArn.optional(),
    RetiringServicePrincipal: z.string().optional(),
    Operations: z.array(z.enum(GRANT_OPERATIONS)).min(1),
    Constraints: z
      .object({
        EncryptionContextSubset: z.record(z.string(), z.string()).optional(),
        EncryptionContextEquals: z.record(z.string(), z.string()).optional(),
        SourceArn: z.string().optional(),
      })
      .optional(),
    GrantTokens: grantTokens,
    Name: z.string().min(1).max(256).optional(),
    DryRun: z.boolean().optional(),
  }),
  ListGrants: z.object({
    KeyId: z.string().min(1),
    Limit: z.number().int().min(1).max(100).optional(),
    Marker: z.string().optional(),
    GrantId: z.string().min(1).max(128).optional(),
    GranteePrincipal: principalArn.optional(),
  }),
  RevokeGrant: z.object({ KeyId: z.string().min(1), GrantId: z.string().min(1).max(128), DryRun: z.boolean().optional() }),
};

export type Operation = keyof typeof Schemas;
export const OPERATIONS = Object.keys(Schemas) as Operation[];

const SYMMETRIC_BLOB_VERSION = 1;
const INVALID_CIPHERTEXT = 'The ciphertext is invalid, or does not match the key, algorithm or encryption context.';
const dryRun = () => new KmsError('DryRunOperationException', 'The request would have succeeded, but the DryRun option is set.');

function parse<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const res = schema.safeParse(body);
  if (!res.success) {
    const issue = res.error.issues[0];
    throw new KmsError(
      'ValidationException',
      `1 validation error detected: Value at '${issue?.path.join('.') ?? ''}' failed to satisfy constraint: ${issue?.message ?? 'invalid'}`,
    );
  }
  return res.data;
}

/** Canonical bytes of an encryption context: entries sorted by key, so only the order may differ. */
function contextAad(ctx: Record<string, string> | undefined): Buffer {
  const entries = Object.entries(ctx ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Buffer.from(JSON.stringify(entries), 'utf8');
}

export class KmsEmulator {
  constructor(
    private readonly state: KmsState,
    private readonly config: EmulatorConfig,
  ) {
    for (const root of config.trustRoots) createPublicKey(root); // fail at start on a bad trust root
  }

  async handle(op: string, body: unknown, caller: Caller): Promise<object> {
    switch (op as Operation) {
      case 'CreateKey':
        return this.createKey(parse(Schemas.CreateKey, body), caller);
      case 'DescribeKey': {
        const key = this.authorize(parse(Schemas.DescribeKey, body).KeyId, 'kms:DescribeKey', caller, {}, { allowDisabled: true });
        return { KeyMetadata: this.metadata(key) };
      }
      case 'ListKeys':
        return this.listKeys(parse(Schemas.ListKeys, body));
      case 'GetPublicKey':
        return this.getPublicKey(parse(Schemas.GetPublicKey, body), caller);
      case 'Encrypt':
        return this.encrypt(parse(Schemas.Encrypt, body), caller);
      case 'Decrypt':
        return this.decrypt(parse(Schemas.Decrypt, body), caller);
      case 'ReEncrypt':
        return this.reEncrypt(parse(Schemas.ReEncrypt, body), caller);
      case 'GenerateDataKey':
        return this.generateDataKey(parse(Schemas.GenerateDataKey, body), caller);
      case 'GenerateRandom':
        return this.generateRandom(parse(Schemas.GenerateRandom, body));
      case 'PutKeyPolicy': {
        const req = parse(Schemas.PutKeyPolicy, body);
        this.checkPolicyName(req.PolicyName);
        const bypass = req.BypassPolicyLockoutSafetyCheck;
        const key = this.authorize(
          req.KeyId,
          'kms:PutKeyPolicy',
          caller,
          bypass === undefined ? {} : { 'kms:BypassPolicyLockoutSafetyCheck': String(bypass) },
          { allowDisabled: true },
        );
        this.checkNewPolicy(req.Policy, caller, key.arn, bypass ?? false);
        key.policy = req.Policy;
        this.state.save();
        return {};
      }
      case 'GetKeyPolicy': {
        const req = parse(Schemas.GetKeyPolicy, body);
        this.checkPolicyName(req.PolicyName);
        const key = this.authorize(req.KeyId, 'kms:GetKeyPolicy', caller, {}, { allowDisabled: true });
        return { Policy: key.policy, PolicyName: 'default' };
      }
      case 'EnableKey':
      case 'DisableKey': {
        const key = this.authorize(parse(Schemas.EnableKey, body).KeyId, `kms:${op}`, caller, {}, { allowDisabled: true });
        key.keyState = op === 'EnableKey' ? 'Enabled' : 'Disabled';
        this.state.save();
        return {};
      }
      case 'CreateGrant':
        return this.createGrant(parse(Schemas.CreateGrant, body), caller);
      case 'ListGrants':
        return this.listGrants(parse(Schemas.ListGrants, body), caller);
      case 'RevokeGrant': {
        const req = parse(Schemas.RevokeGrant, body);
        const key = this.authorize(req.KeyId, 'kms:RevokeGrant', caller, {}, { allowDisabled: true });
        const i = (key.grants ?? []).findIndex((g) => g.grantId === req.GrantId);
        if (i < 0) throw new KmsError('NotFoundException', `Grant ${req.GrantId} does not exist on ${key.arn}.`);
        if (req.DryRun) throw dryRun();
        key.grants?.splice(i, 1);
        this.state.save();
        return {};
      }
      default:
        throw new KmsError('UnknownOperationException', `Unknown operation ${op}`);
    }
  }

  private checkPolicyName(name: string | undefined): void {
    if (name !== undefined && name !== 'default') throw new KmsError('NotFoundException', `Policy ${name} does not exist.`);
  }

  /**
   * A new key policy: valid, at most 32 KiB, and (unless the caller bypasses the check) one that lets the caller
   * make a later PutKeyPolicy, as KMS's lockout safety check demands. Grants cannot allow PutKeyPolicy, so the
   * key policy alone decides.
   */
  private checkNewPolicy(text: string, caller: Caller, keyArn: string, bypass: boolean): void {
    const size = Buffer.byteLength(text, 'utf8');
    if (size > MAX_POLICY_BYTES)
      throw new KmsError('LimitExceededException', `The key policy has ${size} bytes; the limit is ${MAX_POLICY_BYTES}.`);
    const doc = parsePolicy(text);
    if (bypass) return;
    const next = evaluatePolicy(doc, {
      action: 'kms:PutKeyPolicy',
      principalArn: caller.principalArn,
      account: caller.account,
      keyArn,
      values: {},
    });
    if (!next.allowed) throw new KmsError('MalformedPolicyDocumentException', LOCKOUT_MESSAGE);
  }

  private createKey(req: z.output<(typeof Schemas)['CreateKey']>, caller: Caller): object {
    const keySpec: KeySpec = req.KeySpec ?? 'SYMMETRIC_DEFAULT';
    const keyId = randomUUID();
    const arn = `arn:aws:kms:${this.config.region}:${caller.account}:key/${keyId}`;
    const policy = req.Policy ?? defaultKeyPolicy(this.config.account);
    if (req.Policy !== undefined) this.checkNewPolicy(policy, caller, arn, req.BypassPolicyLockoutSafetyCheck ?? false);
    else parsePolicy(policy);
    let material: string;
    if (keySpec === 'SYMMETRIC_DEFAULT') {
      material = randomBytes(32).toString('base64');
    } else {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: Number(keySpec.slice(4)), publicExponent: 65537 });
      material = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    }
    const key: KmsKeyRecord = {
      keyId,
      arn,
      keySpec,
      keyUsage: 'ENCRYPT_DECRYPT',
      keyState: 'Enabled',
      description: req.Description ?? '',
      createdAt: Math.floor(Date.now() / 1000),
      material,
      policy,
    };
    this.state.keys.set(keyId, key);
    this.state.save();
    return { KeyMetadata: this.metadata(key) };
  }

  private listKeys(req: z.output<(typeof Schemas)['ListKeys']>): object {
    const all = [...this.state.keys.values()].sort((a, b) => a.createdAt - b.createdAt || a.keyId.localeCompare(b.keyId));
    const start = req.Marker ? Number(Buffer.from(req.Marker, 'base64').toString()) : 0;
    if (!Number.isInteger(start) || start < 0) throw new KmsError('ValidationException', 'Invalid Marker');
    const limit = req.Limit ?? 100;
    const page = all.slice(start, start + limit);
    const truncated = start + limit < all.length;
    return {
      Keys: page.map((k) => ({ KeyId: k.keyId, KeyArn: k.arn })),
      Truncated: truncated,
      ...(truncated ? { NextMarker: Buffer.from(String(start + limit)).toString('base64') } : {}),
    };
  }

  private getPublicKey(req: z.output<(typeof Schemas)['GetPublicKey']>, caller: Caller): object {
    const key = this.authorize(req.KeyId, 'kms:GetPublicKey', caller, {});
    if (key.keySpec === 'SYMMETRIC_DEFAULT')
      throw new KmsError('UnsupportedOperationException', `${key.arn} key usage is not supported for GetPublicKey: it is a symmetric key.`);
    const spki = createPublicKey(createPrivateKey(key.material)).export({ type: 'spki', format: 'der' });
    return {
      KeyId: key.arn,
      PublicKey: spki.toString('base64'),
      KeySpec: key.keySpec,
      CustomerMasterKeySpec: key.keySpec,
      KeyUsage: key.keyUsage,
      EncryptionAlgorithms: [...rsaAlgorithms],
    };
  }

  private encrypt(req: z.output<(typeof Schemas)['Encrypt']>, caller: Caller): object {
    const key = this.authorize(req.KeyId, 'kms:Encrypt', caller, this.contextValues(req.EncryptionContext, req.EncryptionAlgorithm), {
      encryptionContext: req.EncryptionContext,
    });
    const plaintext = Buffer.from(req.Plaintext, 'base64');
    if (plaintext.length < 1 || plaintext.length > 4096) throw new KmsError('ValidationException', 'Plaintext must be 1 to 4096 bytes.');
    const out = this.encryptWith(key, plaintext, req.EncryptionContext, req.EncryptionAlgorithm);
    return { KeyId: key.arn, CiphertextBlob: out.ciphertext.toString('base64'), EncryptionAlgorithm: out.algorithm };
  }

  private encryptWith(
    key: KmsKeyRecord,
    plaintext: Buffer,
    ctx: Record<string, string> | undefined,
    requested: string | undefined,
  ): { ciphertext: Buffer; algorithm: string } {
    if (key.keySpec === 'SYMMETRIC_DEFAULT') {
      if (requested && requested !== 'SYMMETRIC_DEFAULT')
        throw new KmsError('InvalidKeyUsageException', 'The encryption algorithm is not valid for this key.');
      return { ciphertext: this.sealSymmetric(key, plaintext, ctx), algorithm: 'SYMMETRIC_DEFAULT' };
    }
    const alg = this.rsaAlgorithm(requested, ctx);
    const maxPlaintext = Number(key.keySpec.slice(4)) / 8 - 2 * (alg === 'RSAES_OAEP_SHA_256' ? 32 : 20) - 2;
    if (plaintext.length > maxPlaintext) throw new KmsError('ValidationException', `Plaintext is too long for ${key.keySpec} with ${alg}.`);
    const ct = publicEncrypt(
      {
        key: createPublicKey(createPrivateKey(key.material)),
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: alg === 'RSAES_OAEP_SHA_256' ? 'sha256' : 'sha1',
      },
      plaintext,
    );
    return { ciphertext: ct, algorithm: alg };
  }

  private async decrypt(req: z.output<(typeof Schemas)['Decrypt']>, caller: Caller): Promise<object> {
    const blob = Buffer.from(req.CiphertextBlob, 'base64');
    if (blob.length < 1 || blob.length > 6144) throw new KmsError('ValidationException', 'CiphertextBlob must be 1 to 6144 bytes.');
    const keyRef = req.KeyId ?? this.symmetricBlobKeyId(blob);
    const recipient = req.Recipient ? this.verifyRecipient(req.Recipient.AttestationDocument) : undefined;
    const key = this.authorize(
      keyRef,
      'kms:Decrypt',
      caller,
      { ...this.contextValues(req.EncryptionContext, req.EncryptionAlgorithm), ...recipient?.conditionValues },
      { encryptionContext: req.EncryptionContext },
    );
    if (req.DryRun) throw dryRun();
    const { plaintext, algorithm: algorithmUsed } = this.decryptWith(
      key,
      blob,
      req.EncryptionContext,
      req.EncryptionAlgorithm,
      req.KeyId === undefined ? 'KeyId' : undefined,
    );
    if (recipient) {
      const out = {
        KeyId: key.arn,
        EncryptionAlgorithm: algorithmUsed,
        CiphertextForRecipient: buildEnvelopedData(plaintext, recipient.publicKey).toString('base64'),
      };
      plaintext.fill(0);
      return out;
    }
    return { KeyId: key.arn, Plaintext: plaintext.toString('base64'), EncryptionAlgorithm: algorithmUsed, KeyMaterialId: key.keyId };
  }

  /** `missingKeyId` names the request field that is absent (an asymmetric key needs it), or is undefined. */
  private decryptWith(
    key: KmsKeyRecord,
    blob: Buffer,
    ctx: Record<string, string> | undefined,
    requested: string | undefined,
    missingKeyId: string | undefined,
  ): { plaintext: Buffer; algorithm: string } {
    if (key.keySpec === 'SYMMETRIC_DEFAULT') {
      if (requested && requested !== 'SYMMETRIC_DEFAULT')
        throw new KmsError('IncorrectKeyException', 'The key is symmetric but an asymmetric algorithm was given.');
      return { plaintext: this.openSymmetric(key, blob, ctx), algorithm: 'SYMMETRIC_DEFAULT' };
    }
    if (missingKeyId) throw new KmsError('ValidationException', `${missingKeyId} is required to decrypt with an asymmetric key.`);
    const alg = this.rsaAlgorithm(requested, ctx);
    try {
      return {
        plaintext: privateDecrypt(
          {
            key: createPrivateKey(key.material),
            padding: constants.RSA_PKCS1_OAEP_PADDING,
            oaepHash: alg === 'RSAES_OAEP_SHA_256' ? 'sha256' : 'sha1',
          },
          blob,
        ),
        algorithm: alg,
      };
    } catch (err) {
      throw new KmsError('InvalidCiphertextException', INVALID_CIPHERTEXT, { cause: err });
    }
  }

  /**
   * ReEncrypt: decrypts under the source key and encrypts under the destination key, inside KMS. For an RSA
   * source key the ciphertext is what anyone made with its public key, and there is no Recipient: whoever may
   * ReEncryptFrom the sealing key and ReEncryptTo a key of their own gets every data key, without attestation.
   */
  private reEncrypt(req: z.output<(typeof Schemas)['ReEncrypt']>, caller: Caller): object {
    const blob = Buffer.from(req.CiphertextBlob, 'base64');
    if (blob.length < 1 || blob.length > 6144) throw new KmsError('ValidationException', 'CiphertextBlob must be 1 to 6144 bytes.');
    const sourceRef = req.SourceKeyId ?? this.symmetricBlobKeyId(blob);
    const sameKey = this.findKey(sourceRef).keyId === this.findKey(req.DestinationKeyId).keyId ? 'true' : 'false';
    const source = this.authorize(
      sourceRef,
      'kms:ReEncryptFrom',
      caller,
      { ...this.contextValues(req.SourceEncryptionContext, req.SourceEncryptionAlgorithm), 'kms:ReEncryptOnSameKey': sameKey },
      { encryptionContext: req.SourceEncryptionContext },
    );
    const destination = this.authorize(
      req.DestinationKeyId,
      'kms:ReEncryptTo',
      caller,
      { ...this.contextValues(req.DestinationEncryptionContext, req.DestinationEncryptionAlgorithm), 'kms:ReEncryptOnSameKey': sameKey },
      { encryptionContext: req.DestinationEncryptionContext },
    );
    if (req.DryRun) throw dryRun();
    const opened = this.decryptWith(
      source,
      blob,
      req.SourceEncryptionContext,
      req.SourceEncryptionAlgorithm,
      req.SourceKeyId === undefined ? 'SourceKeyId' : undefined,
    );
    try {
      const sealed = this.encryptWith(destination, opened.plaintext, req.DestinationEncryptionContext, req.DestinationEncryptionAlgorithm);
      return {
        CiphertextBlob: sealed.ciphertext.toString('base64'),
        SourceKeyId: source.arn,
        KeyId: destination.arn,
        SourceEncryptionAlgorithm: opened.algorithm,
        DestinationEncryptionAlgorithm: sealed.algorithm,
        ...(source.keySpec === 'SYMMETRIC_DEFAULT' ? { SourceKeyMaterialId: source.keyId } : {}),
        ...(destination.keySpec === 'SYMMETRIC_DEFAULT' ? { DestinationKeyMaterialId: destination.keyId } : {}),
      };
    } finally {
      opened.plaintext.fill(0);
    }
  }

  private createGrant(req: z.output<(typeof Schemas)['CreateGrant']>, caller: Caller): object {
    if (req.GranteeServicePrincipal !== undefined || req.RetiringServicePrincipal !== undefined) {
      throw new KmsError(
        'ValidationException',
        'GranteeServicePrincipal and RetiringServicePrincipal are not modelled by the KMS emulator; use GranteePrincipal.',
      );
    }
    if (!req.GranteePrincipal) throw new KmsError('ValidationException', 'GranteePrincipal is required.');
    const target = this.findKey(req.KeyId);
    const allowed = grantOperationsFor(target.keySpec);
    const invalid = req.Operations.filter((op) => !allowed.has(op));
    if (invalid.length)
      throw new KmsError(
        'ValidationException',
        `Grant operations ${invalid.join(', ')} are not valid for ${target.keySpec} ENCRYPT_DECRYPT key ${target.arn}.`,
      );
    const constraintTypes = Object.keys(req.Constraints ?? {}).filter((k) => k !== 'SourceArn');
    if (req.Constraints?.SourceArn !== undefined)
      throw new KmsError('ValidationException', 'The SourceArn grant constraint is not modelled by the KMS emulator.');
    if (constraintTypes.length && target.keySpec !== 'SYMMETRIC_DEFAULT')
      throw new KmsError('ValidationException', 'Encryption context grant constraints are not valid for asymmetric keys.');
    const values: Record<string, string | string[]> = {
      'kms:GranteePrincipal': req.GranteePrincipal,
      'kms:GrantOperations': [...req.Operations],
      'kms:GrantIsForAWSResource': 'false',
      ...(req.RetiringPrincipal ? { 'kms:RetiringPrincipal': req.RetiringPrincipal } : {}),
      ...(constraintTypes.length ? { 'kms:GrantConstraintType': constraintTypes } : {}),
    };
    const { key, grant: via } = this.authorizeDetailed(req.KeyId, 'kms:CreateGrant', caller, values);
    // CreateGrant allowed by a grant may only pass on that grant's own operations.
    if (via && !req.Operations.every((op) => via.operations.includes(op))) {
      throw new KmsError(
        'AccessDeniedException',
        `User: ${caller.principalArn} is not authorized to perform: kms:CreateGrant on resource: ${key.arn} because grant ${via.grantId} allows passing on only its own operations (${via.operations.join(', ')})`,
      );
    }
    if (req.DryRun) throw dryRun();
    const grant: GrantRecord = {
      grantId: randomBytes(32).toString('hex'),
      grantToken: randomBytes(96).toString('base64url'),
      name: req.Name,
      granteePrincipal: req.GranteePrincipal,
      retiringPrincipal: req.RetiringPrincipal,
      issuingAccount: `arn:aws:iam::${caller.account}:root`,
      operations: [...new Set(req.Operations)],
      constraints: constraintTypes.length
        ? {
            EncryptionContextSubset: req.Constraints?.EncryptionContextSubset,
            EncryptionContextEquals: req.Constraints?.EncryptionContextEquals,
          }
        : undefined,
      createdAt: Math.floor(Date.now() / 1000),
    };
    (key.grants ??= []).push(grant);
    this.state.save();
    return { GrantToken: grant.grantToken, GrantId: grant.grantId };
  }

  private listGrants(req: z.output<(typeof Schemas)['ListGrants']>, caller: Caller): object {
    const key = this.authorize(req.KeyId, 'kms:ListGrants', caller, {}, { allowDisabled: true });
    const all = (key.grants ?? []).filter(
      (g) =>
        (req.GrantId === undefined || g.grantId === req.GrantId) &&
        (req.GranteePrincipal === undefined || g.granteePrincipal === req.GranteePrincipal),
    );
    const start = req.Marker ? Number(Buffer.from(req.Marker, 'base64').toString()) : 0;
    if (!Number.isInteger(start) || start < 0) throw new KmsError('ValidationException', 'Invalid Marker');
    const limit = req.Limit ?? 50;
    const truncated = start + limit < all.length;
    return {
      Grants: all.slice(start, start + limit).map((g) => ({
        KeyId: key.arn,
        GrantId: g.grantId,
        ...(g.name ? { Name: g.name } : {}),
        CreationDate: g.createdAt,
        GranteePrincipal: g.granteePrincipal,
        ...(g.retiringPrincipal ? { RetiringPrincipal: g.retiringPrincipal } : {}),
        IssuingAccount: g.issuingAccount,
        Operations: g.operations,
        ...(g.constraints ? { Constraints: g.constraints } : {}),
      })),
      Truncated: truncated,
      ...(truncated ? { NextMarker: Buffer.from(String(start + limit)).toString('base64') } : {}),
    };
  }

  private async generateDataKey(req: z.output<(typeof Schemas)['GenerateDataKey']>, caller: Caller): Promise<object> {
    if ((req.KeySpec === undefined) === (req.NumberOfBytes === undefined)) {
      throw new KmsError('ValidationException', 'Specify exactly one of KeySpec and NumberOfBytes.');
    }
    const recipient = req.Recipient ? this.verifyRecipient(req.Recipient.AttestationDocument) : undefined;
    const key = this.authorize(
      req.KeyId,
      'kms:GenerateDataKey',
      caller,
      { ...this.contextValues(req.EncryptionContext, undefined), ...recipient?.conditionValues },
      { encryptionContext: req.EncryptionContext },
    );
    if (key.keySpec !== 'SYMMETRIC_DEFAULT')
      throw new KmsError('InvalidKeyUsageException', `${key.arn} key usage is not supported for GenerateDataKey: it is an asymmetric key.`);
    const n = req.NumberOfBytes ?? (req.KeySpec === 'AES_128' ? 16 : 32);
    const dataKey = randomBytes(n);
    const out: Record<string, string> = {
      KeyId: key.arn,
      CiphertextBlob: this.sealSymmetric(key, dataKey, req.EncryptionContext).toString('base64'),
    };
    if (recipient) out.CiphertextForRecipient = buildEnvelopedData(dataKey, recipient.publicKey).toString('base64');
    else out.Plaintext = dataKey.toString('base64');
    dataKey.fill(0);
    return out;
  }

  private generateRandom(req: z.output<(typeof Schemas)['GenerateRandom']>): object {
    const bytes = randomBytes(req.NumberOfBytes ?? 32);
    if (req.Recipient) {
      const recipient = this.verifyRecipient(req.Recipient.AttestationDocument);
      return { CiphertextForRecipient: buildEnvelopedData(bytes, recipient.publicKey).toString('base64') };
    }
    return { Plaintext: bytes.toString('base64') };
  }

  /** Verifies a Recipient attestation document and returns its RSA key and the condition values it provides. */
  /**
   * Enclaves reuse one document for many calls; a document that verified in the last minute is not verified
   * again (its age is still checked on every use). Keeps the emulator's cost per Decrypt close to KMS's.
   */
  private readonly verified = new Map<string, { at: number; result: ReturnType<typeof verifyAttestation> }>();

  private verifyCached(doc: Buffer): ReturnType<typeof verifyAttestation> {
    const key = createHash('sha256').update(doc).digest('base64');
    const now = Date.now();
    const hit = this.verified.get(key);
    if (hit && now - hit.at < 60_000 && now - hit.result.document.timestamp <= this.config.maxDocAgeMs) return hit.result;
    const result = verifyAttestation(doc, {
      trustedRoots: this.config.trustRoots,
      // As KMS: the chain at the current time; the PCRs are the key policy's to check (kms:RecipientAttestation
      // conditions), including a debug enclave's all-zero ones.
      at: 'now',
      now: new Date(now),
      allowUnpinned: true,
      allowDebug: true,
      maxAgeMs: this.config.maxDocAgeMs,
      requirePublicKey: true,
    });
    if (this.verified.size >= 256) this.verified.delete(this.verified.keys().next().value as string);
    this.verified.set(key, { at: now, result });
    return result;
  }

  private verifyRecipient(documentB64: string): { publicKey: KeyObject; conditionValues: Record<string, string> } {
    const doc = Buffer.from(documentB64, 'base64');
    if (doc.length < 1 || doc.length > 262144) throw new KmsError('ValidationException', 'AttestationDocument must be 1 to 262144 bytes.');
    if (this.config.trustRoots.length === 0)
      throw new KmsError('ValidationException', 'The attestation document cannot be verified: the emulator has no trust root.');
    let verified;
    try {
      verified = this.verifyCached(doc);
    } catch (err) {
      const reason = err instanceof AttestationError ? `${err.code}: ${err.message}` : 'unreadable';
      throw new KmsError('ValidationException', `The attestation document is not valid (${reason}).`, { cause: err });
    }
    let publicKey: KeyObject;
    try {
      publicKey = createPublicKey({ key: verified.document.publicKey as Buffer, format: 'der', type: 'spki' });
    } catch (err) {
      throw new KmsError('ValidationException', 'The attestation document public_key is not a DER SubjectPublicKeyInfo.', { cause: err });
    }
    if (publicKey.asymmetricKeyType !== 'rsa')
      throw new KmsError('ValidationException', 'The attestation document public_key is not an RSA key.');
    const conditionValues: Record<string, string> = {};
    for (const [i, v] of verified.document.pcrs) conditionValues[`kms:RecipientAttestation:PCR${i}`] = v.toString('hex');
    const pcr0 = verified.document.pcrs.get(0);
    if (pcr0) conditionValues['kms:RecipientAttestation:ImageSha384'] = pcr0.toString('hex');
    return { publicKey, conditionValues };
  }

  private contextValues(ctx: Record<string, string> | undefined, alg: string | undefined): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {};
    if (ctx) {
      for (const [k, v] of Object.entries(ctx)) out[`kms:EncryptionContext:${k}`] = v;
      out['kms:EncryptionContextKeys'] = Object.keys(ctx);
    }
    if (alg) out['kms:EncryptionAlgorithm'] = alg;
    return out;
  }

  private rsaAlgorithm(alg: string | undefined, ctx: Record<string, string> | undefined): (typeof rsaAlgorithms)[number] {
    if (ctx && Object.keys(ctx).length > 0)
      throw new KmsError('ValidationException', 'EncryptionContext is not supported with asymmetric keys.');
    if (alg !== 'RSAES_OAEP_SHA_256' && alg !== 'RSAES_OAEP_SHA_1') {
      throw new KmsError('InvalidKeyUsageException', 'An asymmetric key needs EncryptionAlgorithm RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1.');
    }
    return alg;
  }

  private findKey(ref: string): KmsKeyRecord {
    if (ref.startsWith('alias/') || ref.includes(':alias/')) throw new KmsError('NotFoundException', `Alias ${ref} is not found.`);
    const id = ref.startsWith('arn:') ? (/:key\/([0-9a-f-]{36})$/.exec(ref)?.[1] ?? '') : ref;
    const key = this.state.keys.get(id);
    if (!key || (ref.startsWith('arn:') && key.arn !== ref)) throw new KmsError('NotFoundException', `Key '${ref}' does not exist`);
    return key;
  }

  private authorize(
    ref: string,
    action: string,
    caller: Caller,
    values: Record<string, string | string[]>,
    opts: AuthorizeOptions = {},
  ): KmsKeyRecord {
    return this.authorizeDetailed(ref, action, caller, values, opts).key;
  }

  /**
   * AWS's order: an explicit Deny in the key policy refuses, whatever any grant allows; then an Allow in the key
   * policy, or a grant to the caller listing the operation (and whose constraints hold), allows; else refused.
   * Returns the grant when it is what allowed the call.
   */
  private authorizeDetailed(
    ref: string,
    action: string,
    caller: Caller,
    values: Record<string, string | string[]>,
    opts: AuthorizeOptions = {},
  ): { key: KmsKeyRecord; grant?: GrantRecord } {
    const key = this.findKey(ref);
    const decision = evaluatePolicy(parsePolicy(key.policy), {
      action,
      principalArn: caller.principalArn,
      account: caller.account,
      keyArn: key.arn,
      values,
    });
    const grant = decision.allowed ? undefined : this.grantFor(key, action, caller, opts.encryptionContext);
    if (!decision.allowed && (decision.effect === 'ExplicitDeny' || !grant)) {
      const because =
        decision.effect === 'ExplicitDeny'
          ? `${decision.reason}${grant ? `, which overrides the allow of grant ${grant.grantId}` : ''} (an explicit deny in a resource-based policy)`
          : `${decision.reason}, and no grant allows it`;
      throw new KmsError(
        'AccessDeniedException',
        `User: ${caller.principalArn} is not authorized to perform: ${action} on resource: ${key.arn} because ${because}`,
      );
    }
    if (!opts.allowDisabled && key.keyState === 'Disabled') throw new KmsError('DisabledException', `${key.arn} is disabled.`);
    return grant ? { key, grant } : { key };
  }

  /** A grant on the key for the caller that lists the operation, and whose encryption context constraint holds. */
  private grantFor(key: KmsKeyRecord, action: string, caller: Caller, ctx: Record<string, string> | undefined): GrantRecord | undefined {
    const op = action.startsWith('kms:') ? action.slice(4) : action;
    return (key.grants ?? []).find((g) => {
      if (!g.operations.includes(op) || !principalEntryMatches(g.granteePrincipal, caller.principalArn, caller.account)) return false;
      const given = ctx ?? {};
      const equals = g.constraints?.EncryptionContextEquals;
      if (equals && (Object.keys(equals).length !== Object.keys(given).length || Object.entries(equals).some(([k, v]) => given[k] !== v)))
        return false;
      const subset = g.constraints?.EncryptionContextSubset;
      return !subset || Object.entries(subset).every(([k, v]) => given[k] === v);
    });
  }

  private sealSymmetric(key: KmsKeyRecord, plaintext: Buffer, ctx: Record<string, string> | undefined): Buffer {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', Buffer.from(key.material, 'base64'), iv);
    cipher.setAAD(contextAad(ctx));
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const id = Buffer.from(key.keyId.replace(/-/g, ''), 'hex');
    return Buffer.concat([Buffer.from([SYMMETRIC_BLOB_VERSION]), id, iv, cipher.getAuthTag(), ct]);
  }

  private symmetricBlobKeyId(blob: Buffer): string {
    if (blob.length < 1 + 16 + 12 + 16 || blob[0] !== SYMMETRIC_BLOB_VERSION)
      throw new KmsError('InvalidCiphertextException', INVALID_CIPHERTEXT);
    const h = blob.subarray(1, 17).toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  private openSymmetric(key: KmsKeyRecord, blob: Buffer, ctx: Record<string, string> | undefined): Buffer {
    if (this.symmetricBlobKeyId(blob) !== key.keyId)
      throw new KmsError('IncorrectKeyException', 'The key ID in the request does not identify a CMK that can perform this operation.');
    try {
      const decipher = createDecipheriv('aes-256-gcm', Buffer.from(key.material, 'base64'), blob.subarray(17, 29));
      decipher.setAAD(contextAad(ctx));
      decipher.setAuthTag(blob.subarray(29, 45));
      return Buffer.concat([decipher.update(blob.subarray(45)), decipher.final()]);
    } catch (err) {
      throw new KmsError('InvalidCiphertextException', INVALID_CIPHERTEXT, { cause: err });
    }
  }

  private metadata(key: KmsKeyRecord): object {
    return {
      AWSAccountId: key.arn.split(':')[4],
      KeyId: key.keyId,
      Arn: key.arn,
      CreationDate: key.createdAt,
      Enabled: key.keyState === 'Enabled',
      Description: key.description,
      KeyUsage: key.keyUsage,
      KeyState: key.keyState,
      Origin: 'AWS_KMS',
      KeyManager: 'CUSTOMER',
      CustomerMasterKeySpec: key.keySpec,
      KeySpec: key.keySpec,
      EncryptionAlgorithms: key.keySpec === 'SYMMETRIC_DEFAULT' ? ['SYMMETRIC_DEFAULT'] : [...rsaAlgorithms],
      MultiRegion: false,
    };
  }
}
