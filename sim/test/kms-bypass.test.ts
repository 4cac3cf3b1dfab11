/**
 * The key-policy bypass an audit found, played against the KMS emulator with the real @aws-sdk/client-kms:
 * ReEncrypt unwraps what was sealed to the RSA key's public half with no Recipient (no attestation), and an
 * administrator holding CreateGrant (`kms:Create*`) can grant ReEncryptFrom. The generated policy's explicit
 * Deny statements stop it; the same attack succeeds without them (so the Deny is what stops it). Also KMS's
 * policy lockout safety check on PutKeyPolicy/CreateKey, and the dev stack's provisioning passing it.
 */
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  CreateGrantCommand,
  CreateKeyCommand,
  DecryptCommand,
  GetKeyPolicyCommand,
  GetPublicKeyCommand,
  KMSClient,
  ListGrantsCommand,
  PutKeyPolicyCommand,
  ReEncryptCommand,
} from '@aws-sdk/client-kms';
import { generateKeyPolicy } from '../../client/src/policy';
import { tempRunDir } from '@nks/shared-test/helpers';
import { LOCKOUT_MESSAGE } from '../src/kms/emulator';
import type { KmsHttpServer } from '../src/kms/server';
import { startKmsTestServer } from './kms-server';
import {
  approvedByPolicy,
  DEV_ADMIN_ACCESS_KEY,
  DEV_ADMIN_ROLE,
  DEV_PARENT_ROLE,
  devPaths,
  provision,
  updatePolicy,
} from '../src/dev/provision';

const ACCOUNT = '111122223333';
const PARENT = `arn:aws:iam::${ACCOUNT}:role/nitro-keystore-parent`;
const ADMIN = `arn:aws:iam::${ACCOUNT}:role/keystore-admin`;
const APPROVER = `arn:aws:iam::${ACCOUNT}:role/keystore-image-approver`;
const BREAK_GLASS = `arn:aws:iam::${ACCOUNT}:role/keystore-break-glass`;
const ATTACKER = `arn:aws:iam::${ACCOUNT}:role/attacker`;
const PCR0 = 'ab'.repeat(48);
const roles = { parentRoleArn: PARENT, keyAdministrators: [ADMIN], imageApproverRoleArn: APPROVER, breakGlassRoleArn: BREAK_GLASS };
const generated = (pcr0s = [PCR0], over: Partial<typeof roles> = {}) =>
  generateKeyPolicy({ images: pcr0s.map((PCR0) => ({ PCR0 })), ...roles, ...over });

interface Statement {
  Sid: string;
  Effect: string;
  [k: string]: unknown;
}
const statements = (policy: string) => (JSON.parse(policy) as { Statement: Statement[] }).Statement;
const withStatements = (s: Statement[]) => JSON.stringify({ Version: '2012-10-17', Id: 'test', Statement: s }, null, 2);
const THE_DENIES = ['DenyReEncrypt', 'DenyCreateGrant'];

/**
 * The policy the generator made before this fix: administrators with the default key policy's wildcards
 * (`kms:Create*` is CreateGrant, `kms:Put*` is PutKeyPolicy), the attested Decrypt rules, no ReEncrypt or
 * CreateGrant Deny.
 */
const legacyPolicy = () => {
  const current = statements(generated());
  return withStatements([
    {
      Sid: 'KeyAdministration',
      Effect: 'Allow',
      Principal: { AWS: ADMIN },
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
    ...current.filter((s) =>
      ['ParentReadsKeyMetadata', 'EnclaveDecryptOnlyWhenAttested', 'DenyDecryptOutsideApprovedEnclaves'].includes(s.Sid),
    ),
  ]);
};
const denies = () => statements(generated()).filter((s) => THE_DENIES.includes(s.Sid));

async function caught(p: Promise<unknown>): Promise<Error & { name: string; $metadata?: { httpStatusCode?: number } }> {
  try {
    await p;
  } catch (e) {
    return e as never;
  }
  throw new Error('expected the call to fail');
}

describe('KMS key policy bypasses (ReEncrypt, grants) and the lockout safety check', () => {
  let dir: string;
  let server: KmsHttpServer;
  let url: string;
  const clients: KMSClient[] = [];
  const as = (accessKeyId: string) => {
    const c = new KMSClient({ endpoint: url, region: 'us-east-1', credentials: { accessKeyId, secretAccessKey: 'x' }, maxAttempts: 1 });
    clients.push(c);
    return c;
  };
  let parent: KMSClient;
  let admin: KMSClient;
  let approver: KMSClient;
  let attacker: KMSClient;

  beforeAll(async () => {
    dir = tempRunDir();
    ({ server, url } = await startKmsTestServer(
      dir,
      {
        AKIDADMIN: ADMIN,
        AKIDAPPROVER: APPROVER,
        AKIDBREAKGLASS: BREAK_GLASS,
        AKIDATTACKER: ATTACKER,
        [DEV_ADMIN_ACCESS_KEY]: DEV_ADMIN_ROLE,
      },
      PARENT,
    ));
    parent = as('AKIDPARENT');
    admin = as('AKIDADMIN');
    approver = as('AKIDAPPROVER');
    attacker = as('AKIDATTACKER');
  });

  afterAll(async () => {
    for (const c of clients) c.destroy();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** An RSA sealing key with `policy` (created by `creator`, who must keep PutKeyPolicy), and a DEK sealed to it as the enclave does. */
  async function sealingKey(policy: string, creator: KMSClient) {
    const keyArn = (await creator.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Policy: policy })))
      .KeyMetadata?.Arn as string;
    const pub = await parent.send(new GetPublicKeyCommand({ KeyId: keyArn }));
    const dek = randomBytes(32);
    const sealed = publicEncrypt(
      {
        key: createPublicKey({ key: Buffer.from(pub.PublicKey as Uint8Array), format: 'der', type: 'spki' }),
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: 'sha256',
      },
      dek,
    );
    return { keyArn, dek, sealed };
  }

  /** A key the thief controls (default key policy: the whole account), to re-encrypt to and then decrypt. */
  const thiefKey = async (thief: KMSClient) =>
    (await thief.send(new CreateKeyCommand({ Description: 'thief' }))).KeyMetadata?.Arn as string;

  /** ReEncrypt the sealed DEK to the thief's key, then Decrypt it there: the data key in the clear, or the error. */
  async function unwrapWithoutAttestation(
    thief: KMSClient,
    k: { keyArn: string; sealed: Buffer },
    opts: { dryRun?: boolean } = {},
  ): Promise<Buffer> {
    const destination = await thiefKey(thief);
    const re = await thief.send(
      new ReEncryptCommand({
        CiphertextBlob: k.sealed,
        SourceKeyId: k.keyArn,
        SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
        DestinationKeyId: destination,
        ...(opts.dryRun ? { DryRun: true } : {}),
      }),
    );
    const out = await thief.send(new DecryptCommand({ CiphertextBlob: re.CiphertextBlob }));
    return Buffer.from(out.Plaintext as Uint8Array);
  }

  describe('without the Deny statements (the previous generator policy)', () => {
    it('an administrator grants itself ReEncryptFrom and unwraps a data key without attestation', async () => {
      const k = await sealingKey(legacyPolicy(), admin);
      // Attested Decrypt is the only way the policy names, and the administrator cannot Decrypt...
      expect(
        (
          await caught(
            admin.send(new DecryptCommand({ KeyId: k.keyArn, CiphertextBlob: k.sealed, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' })),
          )
        ).name,
      ).toBe('AccessDeniedException');
      // ...nor ReEncrypt, until it creates a grant (kms:Create* covers CreateGrant).
      expect((await caught(unwrapWithoutAttestation(admin, k))).message).toMatch(
        /kms:ReEncryptFrom .* no statement in the key policy allows it, and no grant allows it/,
      );
      await admin.send(new CreateGrantCommand({ KeyId: k.keyArn, GranteePrincipal: ADMIN, Operations: ['ReEncryptFrom'] }));
      expect(await unwrapWithoutAttestation(admin, k)).toEqual(k.dek);
    });

    it('a grant to anyone else does the same', async () => {
      const k = await sealingKey(legacyPolicy(), admin);
      await admin.send(new CreateGrantCommand({ KeyId: k.keyArn, GranteePrincipal: ATTACKER, Operations: ['ReEncryptFrom'] }));
      expect(await unwrapWithoutAttestation(attacker, k)).toEqual(k.dek);
    });
  });

  describe('with the Deny statements', () => {
    it('the same policy plus DenyReEncrypt and DenyCreateGrant: the grant and the ReEncrypt are refused', async () => {
      const k = await sealingKey(withStatements([...statements(legacyPolicy()), ...denies()]), admin);
      const grant = await caught(
        admin.send(new CreateGrantCommand({ KeyId: k.keyArn, GranteePrincipal: ADMIN, Operations: ['ReEncryptFrom'] })),
      );
      expect([grant.name, grant.message]).toEqual([
        'AccessDeniedException',
        expect.stringMatching(/kms:CreateGrant .* explicitly denied by statement DenyCreateGrant/),
      ]);
      expect((await admin.send(new ListGrantsCommand({ KeyId: k.keyArn }))).Grants).toEqual([]);
      const re = await caught(unwrapWithoutAttestation(admin, k));
      expect([re.name, re.message]).toEqual([
        'AccessDeniedException',
        expect.stringMatching(/kms:ReEncryptFrom .* explicitly denied by statement DenyReEncrypt/),
      ]);
    });

    it('the generated policy: ReEncrypt fails for the parent role and an administrator, even after CreateGrant is tried', async () => {
      const k = await sealingKey(generated(), approver);
      for (const [who, c] of [
        ['parent', parent],
        ['admin', admin],
        ['approver', approver],
        ['attacker', attacker],
      ] as const) {
        const grant = await caught(
          c.send(new CreateGrantCommand({ KeyId: k.keyArn, GranteePrincipal: ATTACKER, Operations: ['ReEncryptFrom', 'Decrypt'] })),
        );
        expect({ who, grant: grant.name, why: grant.message.includes('explicitly denied by statement DenyCreateGrant') }).toEqual({
          who,
          grant: 'AccessDeniedException',
          why: true,
        });
        const re = await caught(unwrapWithoutAttestation(c, k));
        expect({ who, re: re.name, why: re.message.includes('explicitly denied by statement DenyReEncrypt') }).toEqual({
          who,
          re: 'AccessDeniedException',
          why: true,
        });
        // A DryRun (what the preflight uses against real KMS) is refused the same way, not "would have succeeded".
        expect((await caught(unwrapWithoutAttestation(c, k, { dryRun: true }))).name).toBe('AccessDeniedException');
        // And unattested Decrypt is refused explicitly.
        expect(
          (
            await caught(
              c.send(new DecryptCommand({ KeyId: k.keyArn, CiphertextBlob: k.sealed, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' })),
            )
          ).message,
        ).toMatch(/explicitly denied by statement DenyDecryptOutsideApprovedEnclaves/);
      }
      expect((await admin.send(new ListGrantsCommand({ KeyId: k.keyArn }))).Grants).toEqual([]);
    });

    it('a grant made before the Deny was installed still exists, but the Deny overrides its allow', async () => {
      // A key whose policy lacks the two Denies and lets the administrator grant; the grant works...
      const open = withStatements([
        ...statements(generated()).filter((s) => !THE_DENIES.includes(s.Sid)),
        { Sid: 'AdministratorsMayGrant', Effect: 'Allow', Principal: { AWS: ADMIN }, Action: 'kms:CreateGrant', Resource: '*' },
      ]);
      const k = await sealingKey(open, approver);
      const { GrantId } = await admin.send(
        new CreateGrantCommand({ KeyId: k.keyArn, GranteePrincipal: ATTACKER, Operations: ['ReEncryptFrom'] }),
      );
      expect(await unwrapWithoutAttestation(attacker, k)).toEqual(k.dek);
      // ...until the image approver installs the generated policy. The grant is still there, and still lists
      // ReEncryptFrom for the attacker, but an explicit Deny in the key policy wins over any grant.
      await approver.send(new PutKeyPolicyCommand({ KeyId: k.keyArn, Policy: generated() }));
      expect(
        (await admin.send(new ListGrantsCommand({ KeyId: k.keyArn }))).Grants?.map((g) => [g.GrantId, g.GranteePrincipal, g.Operations]),
      ).toEqual([[GrantId, ATTACKER, ['ReEncryptFrom']]]);
      const re = await caught(unwrapWithoutAttestation(attacker, k));
      expect([re.name, re.message]).toEqual([
        'AccessDeniedException',
        expect.stringContaining(`explicitly denied by statement DenyReEncrypt, which overrides the allow of grant ${GrantId}`),
      ]);
    });
  });

  describe('policy lockout safety check', () => {
    it('refuses a policy that would stop the caller from changing it again, as KMS does, and changes nothing', async () => {
      const k = await sealingKey(generated(), approver);
      const otherApprover = generated([PCR0], { imageApproverRoleArn: `arn:aws:iam::${ACCOUNT}:role/someone-else` });
      const refused = await caught(approver.send(new PutKeyPolicyCommand({ KeyId: k.keyArn, Policy: otherApprover })));
      expect([refused.name, refused.message]).toEqual([
        'MalformedPolicyDocumentException',
        'The new key policy will not allow you to update the key policy in the future.',
      ]);
      expect(refused.message).toBe(LOCKOUT_MESSAGE);
      expect((await approver.send(new GetKeyPolicyCommand({ KeyId: k.keyArn }))).Policy).toBe(generated());
      // The generated policy blocks the bypass: not even the image approver may skip the check.
      const bypass = await caught(
        approver.send(new PutKeyPolicyCommand({ KeyId: k.keyArn, Policy: otherApprover, BypassPolicyLockoutSafetyCheck: true })),
      );
      expect([bypass.name, bypass.message]).toEqual([
        'AccessDeniedException',
        expect.stringContaining('explicitly denied by statement DenyPolicyLockoutBypass'),
      ]);
    });

    it('accepts the image approver re-approving images (rolling upgrade), and refuses everyone else', async () => {
      const k = await sealingKey(generated(), approver);
      const both = generated([PCR0, 'cd'.repeat(48)]);
      await approver.send(new PutKeyPolicyCommand({ KeyId: k.keyArn, Policy: both }));
      await approver.send(new PutKeyPolicyCommand({ KeyId: k.keyArn, Policy: generated(['cd'.repeat(48)]) }));
      expect((await approver.send(new GetKeyPolicyCommand({ KeyId: k.keyArn }))).Policy).toBe(generated(['cd'.repeat(48)]));
      for (const c of [admin, parent, as('AKIDBREAKGLASS'), attacker]) {
        const err = await caught(c.send(new PutKeyPolicyCommand({ KeyId: k.keyArn, Policy: both })));
        expect([err.name, err.message]).toEqual([
          'AccessDeniedException',
          expect.stringContaining('not authorized to perform: kms:PutKeyPolicy'),
        ]);
      }
    });

    it('first install on a new key: refused when run as an administrator, accepted as the image approver', async () => {
      // A new key carries the default policy (the account), so anyone in the account may PutKeyPolicy once;
      // installing the generated policy as an administrator would leave the administrator unable to change it.
      const keyArn = (await admin.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' }))).KeyMetadata
        ?.Arn as string;
      expect((await caught(admin.send(new PutKeyPolicyCommand({ KeyId: keyArn, Policy: generated() })))).message).toBe(LOCKOUT_MESSAGE);
      await approver.send(new PutKeyPolicyCommand({ KeyId: keyArn, Policy: generated() }));
      expect((await approver.send(new GetKeyPolicyCommand({ KeyId: keyArn }))).Policy).toBe(generated());
    });

    it('lets a caller bypass the check where the policy allows it, which then locks that caller out', async () => {
      const plain = withStatements([
        { Sid: 'Approver', Effect: 'Allow', Principal: { AWS: APPROVER }, Action: ['kms:PutKeyPolicy', 'kms:GetKeyPolicy'], Resource: '*' },
      ]);
      const keyArn = (await approver.send(new CreateKeyCommand({ Policy: plain }))).KeyMetadata?.Arn as string;
      const lockout = withStatements([
        { Sid: 'ReadOnly', Effect: 'Allow', Principal: { AWS: APPROVER }, Action: 'kms:GetKeyPolicy', Resource: '*' },
      ]);
      expect((await caught(approver.send(new PutKeyPolicyCommand({ KeyId: keyArn, Policy: lockout })))).message).toBe(LOCKOUT_MESSAGE);
      await approver.send(new PutKeyPolicyCommand({ KeyId: keyArn, Policy: lockout, BypassPolicyLockoutSafetyCheck: true }));
      expect((await caught(approver.send(new PutKeyPolicyCommand({ KeyId: keyArn, Policy: plain })))).name).toBe('AccessDeniedException');
    });

    it('applies to CreateKey with a policy, too', async () => {
      const err = await caught(admin.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Policy: generated() })));
      expect([err.name, err.message]).toEqual(['MalformedPolicyDocumentException', LOCKOUT_MESSAGE]);
      const bypassed = await admin.send(
        new CreateKeyCommand({
          KeySpec: 'RSA_2048',
          KeyUsage: 'ENCRYPT_DECRYPT',
          Policy: generated(),
          BypassPolicyLockoutSafetyCheck: true,
        }),
      );
      expect(bypassed.KeyMetadata?.KeyState).toBe('Enabled');
      expect(
        (await approver.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Policy: generated() }))).KeyMetadata
          ?.KeyState,
      ).toBe('Enabled');
    });

    it('refuses a policy over 32 KiB', async () => {
      const k = await sealingKey(generated(), approver);
      const huge = JSON.stringify({ ...JSON.parse(generated()), Id: 'x'.repeat(33_000) });
      expect((await caught(approver.send(new PutKeyPolicyCommand({ KeyId: k.keyArn, Policy: huge })))).name).toBe('LimitExceededException');
    });
  });

  it("the dev stack's provisioning and --update-policy pass the lockout check, as the image approver", async () => {
    const devDir = tempRunDir('nks-devprov-');
    try {
      const p = devPaths(devDir);
      const bundle = path.join(devDir, 'enclave.js');
      fs.writeFileSync(bundle, 'console.log("v1")');
      // Provisioning makes the key and the genesis image's configuration; the image with the identity is approved next.
      const created = await provision(url, p);
      expect(created.approvedPcr0).toEqual([]);
      const prov = await updatePolicy(url, bundle, p, created);
      const installed = JSON.parse(fs.readFileSync(p.policy, 'utf8')) as { Statement: Statement[] };
      expect(installed.Statement.map((s) => s.Sid)).toEqual(expect.arrayContaining(['ImageApproval', 'DenyReEncrypt', 'DenyCreateGrant']));
      expect(await approvedByPolicy(url, prov.keyArn)).toEqual(prov.approvedPcr0);
      fs.writeFileSync(bundle, 'console.log("v2")');
      const next = await updatePolicy(url, bundle, p, prov);
      expect(next.approvedPcr0).not.toEqual(prov.approvedPcr0);
      expect(await approvedByPolicy(url, prov.keyArn)).toEqual(next.approvedPcr0);
      // The dev key denies ReEncrypt to the dev parent role (this server's default principal) too.
      expect(PARENT).toBe(DEV_PARENT_ROLE);
      const re = await caught(
        parent.send(
          new ReEncryptCommand({
            CiphertextBlob: randomBytes(256),
            SourceKeyId: prov.keyArn,
            SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
            DestinationKeyId: await thiefKey(parent),
          }),
        ),
      );
      expect(re.message).toMatch(/explicitly denied by statement DenyReEncrypt/);
    } finally {
      fs.rmSync(devDir, { recursive: true, force: true });
    }
  });
});
