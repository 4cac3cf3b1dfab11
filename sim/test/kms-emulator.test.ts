/**
 * The real @aws-sdk/client-kms against the KMS emulator: every operation, the typed errors the SDK raises,
 * attested (Recipient) calls under a key policy that requires attestation, ReEncrypt and grants, fault
 * injection, and restarts. (The key-policy bypasses and the lockout safety check: kms-bypass.test.ts.)
 */
import { constants, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  CreateGrantCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  DisabledException,
  DisableKeyCommand,
  DryRunOperationException,
  EnableKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateRandomCommand,
  GetKeyPolicyCommand,
  GetPublicKeyCommand,
  IncorrectKeyException,
  InvalidCiphertextException,
  InvalidKeyUsageException,
  KMSClient,
  KMSInternalException,
  ListGrantsCommand,
  ListKeysCommand,
  MalformedPolicyDocumentException,
  NotFoundException,
  PutKeyPolicyCommand,
  ReEncryptCommand,
  RevokeGrantCommand,
  UnsupportedOperationException,
} from '@aws-sdk/client-kms';
import { openEnvelopedData } from '@nks/shared/cms';
import { decodeCbor, encodeCbor } from '@nks/shared/cbor';
import { KmsHttpServer } from '../src/kms/server';
import { SimulatedNitroCa } from '../src/nsm/ca';
import { signAttestationDocument } from '../src/nsm/document';
import { pcr3ForRole } from '@nks/shared/pcr';
import { startProgram } from '../../test/support/process';
import { startKmsTestServer } from './kms-server';
import { ACCESS_KEYS, ACCOUNT, accessKeyArgs, PARENT_ROLE, attestedPolicy as sharedAttestedPolicy } from '../../test/support/platform';
import { tempRunDir } from '@nks/shared-test/helpers';

const PCR0 = 'ab'.repeat(48);
const GRANTEE_ROLE = `arn:aws:iam::${ACCOUNT}:role/grantee`;
const PCR3 = pcr3ForRole(PARENT_ROLE);

function client(url: string, accessKeyId = 'AKIDPARENT'): KMSClient {
  return new KMSClient({ endpoint: url, region: 'us-east-1', credentials: { accessKeyId, secretAccessKey: 'secret' }, maxAttempts: 1 });
}

async function caught(p: Promise<unknown>): Promise<Error & { name: string; $fault?: string; $metadata?: { httpStatusCode?: number } }> {
  try {
    await p;
  } catch (e) {
    return e as never;
  }
  throw new Error('expected the call to fail');
}

/** A policy like the one operators install: admins manage, the parent role decrypts only for the attested image. */
const attestedPolicy = (pcr0 = PCR0) => sharedAttestedPolicy(pcr0, PARENT_ROLE);

describe('KMS emulator with @aws-sdk/client-kms', () => {
  let dir: string;
  let server: KmsHttpServer;
  let kms: KMSClient;
  let url: string;
  let ca: SimulatedNitroCa;
  const enclaveKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = enclaveKey.publicKey.export({ type: 'spki', format: 'der' });

  async function attestation(
    over: { pcr0?: string; timestamp?: number; signer?: Awaited<ReturnType<SimulatedNitroCa['signer']>> } = {},
  ): Promise<Buffer> {
    const pcrs = new Map<number, Buffer>(Array.from({ length: 16 }, (_, i) => [i, Buffer.alloc(48)]));
    pcrs.set(0, Buffer.from(over.pcr0 ?? PCR0, 'hex'));
    pcrs.set(3, Buffer.from(PCR3, 'hex'));
    return signAttestationDocument(
      { moduleId: 'i-0123456789abcdef0-enc0123456789abcdef', timestamp: over.timestamp ?? Date.now(), pcrs, publicKey: spki },
      over.signer ?? (await ca.signer()),
    );
  }
  const recipient = (doc: Buffer) => ({ KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256' as const, AttestationDocument: doc });

  beforeAll(async () => {
    dir = tempRunDir();
    ({ server, url, ca } = await startKmsTestServer(dir, { ...ACCESS_KEYS, AKIDGRANTEE: GRANTEE_ROLE }, PARENT_ROLE));
    kms = client(url);
  });

  afterAll(async () => {
    kms.destroy();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('creates, describes, lists (paged) and reads public keys', async () => {
    const sym = await kms.send(new CreateKeyCommand({ Description: 'sym' }));
    expect(sym.KeyMetadata).toMatchObject({
      KeySpec: 'SYMMETRIC_DEFAULT',
      KeyUsage: 'ENCRYPT_DECRYPT',
      Enabled: true,
      KeyState: 'Enabled',
      AWSAccountId: ACCOUNT,
    });
    expect(sym.KeyMetadata?.CreationDate).toBeInstanceOf(Date);
    const rsaKeys = [];
    for (const KeySpec of ['RSA_2048', 'RSA_3072', 'RSA_4096'] as const) {
      const k = await kms.send(new CreateKeyCommand({ KeySpec, KeyUsage: 'ENCRYPT_DECRYPT' }));
      const pub = await kms.send(new GetPublicKeyCommand({ KeyId: k.KeyMetadata?.Arn }));
      const key = createPublicKey({ key: Buffer.from(pub.PublicKey as Uint8Array), format: 'der', type: 'spki' });
      expect(key.asymmetricKeyDetails?.modulusLength).toBe(Number(KeySpec.slice(4)));
      expect(pub.EncryptionAlgorithms).toContain('RSAES_OAEP_SHA_256');
      rsaKeys.push(k.KeyMetadata?.KeyId);
    }
    const described = await kms.send(new DescribeKeyCommand({ KeyId: sym.KeyMetadata?.KeyId }));
    expect(described.KeyMetadata?.Arn).toBe(sym.KeyMetadata?.Arn);

    const page1 = await kms.send(new ListKeysCommand({ Limit: 2 }));
    expect(page1.Keys).toHaveLength(2);
    expect(page1.Truncated).toBe(true);
    const page2 = await kms.send(new ListKeysCommand({ Limit: 100, Marker: page1.NextMarker }));
    const all = [...(page1.Keys ?? []), ...(page2.Keys ?? [])].map((k) => k.KeyId);
    expect(all).toEqual(expect.arrayContaining([sym.KeyMetadata?.KeyId, ...rsaKeys]));

    expect(await caught(kms.send(new GetPublicKeyCommand({ KeyId: sym.KeyMetadata?.KeyId })))).toBeInstanceOf(
      UnsupportedOperationException,
    );
    expect(await caught(kms.send(new DescribeKeyCommand({ KeyId: '00000000-0000-0000-0000-000000000000' })))).toBeInstanceOf(
      NotFoundException,
    );
    expect(await caught(kms.send(new DescribeKeyCommand({ KeyId: 'alias/nope' })))).toBeInstanceOf(NotFoundException);
  });

  it('encrypts and decrypts with a symmetric key bound to the encryption context', async () => {
    const key = await kms.send(new CreateKeyCommand({}));
    const KeyId = key.KeyMetadata?.Arn;
    const enc = await kms.send(
      new EncryptCommand({ KeyId, Plaintext: Buffer.from('hello'), EncryptionContext: { wallet: 'w1', user: 'u1' } }),
    );
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: { user: 'u1', wallet: 'w1' } }));
    expect(Buffer.from(dec.Plaintext as Uint8Array).toString()).toBe('hello');
    expect(dec.KeyId).toBe(KeyId);

    const mismatch = await caught(
      kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: { wallet: 'w2', user: 'u1' } })),
    );
    expect(mismatch).toBeInstanceOf(InvalidCiphertextException);
    expect(mismatch.$fault).toBe('client');
    expect(mismatch.$metadata?.httpStatusCode).toBe(400);
    expect(await caught(kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob })))).toBeInstanceOf(InvalidCiphertextException);
    const tampered = Buffer.from(enc.CiphertextBlob as Uint8Array);
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1;
    expect(
      await caught(kms.send(new DecryptCommand({ CiphertextBlob: tampered, EncryptionContext: { wallet: 'w1', user: 'u1' } }))),
    ).toBeInstanceOf(InvalidCiphertextException);

    const other = await kms.send(new CreateKeyCommand({}));
    expect(
      await caught(
        kms.send(
          new DecryptCommand({
            KeyId: other.KeyMetadata?.KeyId,
            CiphertextBlob: enc.CiphertextBlob,
            EncryptionContext: { wallet: 'w1', user: 'u1' },
          }),
        ),
      ),
    ).toBeInstanceOf(IncorrectKeyException);
  });

  it('decrypts RSAES-OAEP ciphertext made with the public key, and demands the key id and algorithm', async () => {
    const key = await kms.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' }));
    const pub = await kms.send(new GetPublicKeyCommand({ KeyId: key.KeyMetadata?.KeyId }));
    const dek = randomBytes(32);
    const ct = publicEncrypt(
      {
        key: createPublicKey({ key: Buffer.from(pub.PublicKey as Uint8Array), format: 'der', type: 'spki' }),
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: 'sha256',
      },
      dek,
    );
    const dec = await kms.send(
      new DecryptCommand({ KeyId: key.KeyMetadata?.Arn, CiphertextBlob: ct, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }),
    );
    expect(Buffer.from(dec.Plaintext as Uint8Array)).toEqual(dek);
    expect(dec.EncryptionAlgorithm).toBe('RSAES_OAEP_SHA_256');

    expect(await caught(kms.send(new DecryptCommand({ KeyId: key.KeyMetadata?.Arn, CiphertextBlob: ct })))).toBeInstanceOf(
      InvalidKeyUsageException,
    );
    expect((await caught(kms.send(new DecryptCommand({ CiphertextBlob: ct, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' })))).name).toMatch(
      /InvalidCiphertextException|ValidationException/,
    );
    expect(
      await caught(
        kms.send(new DecryptCommand({ KeyId: key.KeyMetadata?.Arn, CiphertextBlob: ct, EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' })),
      ),
    ).toBeInstanceOf(InvalidCiphertextException);

    const enc = await kms.send(
      new EncryptCommand({ KeyId: key.KeyMetadata?.Arn, Plaintext: dek, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }),
    );
    const back = await kms.send(
      new DecryptCommand({ KeyId: key.KeyMetadata?.Arn, CiphertextBlob: enc.CiphertextBlob, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }),
    );
    expect(Buffer.from(back.Plaintext as Uint8Array)).toEqual(dek);
  });

  it('generates data keys and random bytes', async () => {
    const key = await kms.send(new CreateKeyCommand({}));
    const dk = await kms.send(
      new GenerateDataKeyCommand({ KeyId: key.KeyMetadata?.KeyId, KeySpec: 'AES_256', EncryptionContext: { a: 'b' } }),
    );
    expect(dk.Plaintext).toHaveLength(32);
    const back = await kms.send(new DecryptCommand({ CiphertextBlob: dk.CiphertextBlob, EncryptionContext: { a: 'b' } }));
    expect(Buffer.from(back.Plaintext as Uint8Array)).toEqual(Buffer.from(dk.Plaintext as Uint8Array));
    expect((await kms.send(new GenerateDataKeyCommand({ KeyId: key.KeyMetadata?.KeyId, NumberOfBytes: 64 }))).Plaintext).toHaveLength(64);
    expect((await caught(kms.send(new GenerateDataKeyCommand({ KeyId: key.KeyMetadata?.KeyId })))).name).toBe('ValidationException');
    expect((await kms.send(new GenerateRandomCommand({ NumberOfBytes: 48 }))).Plaintext).toHaveLength(48);
    const rsa = await kms.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' }));
    expect(await caught(kms.send(new GenerateDataKeyCommand({ KeyId: rsa.KeyMetadata?.KeyId, KeySpec: 'AES_256' })))).toBeInstanceOf(
      InvalidKeyUsageException,
    );
  });

  it('stores and validates key policies; disabled keys refuse to work', async () => {
    const key = await kms.send(new CreateKeyCommand({}));
    const KeyId = key.KeyMetadata?.KeyId;
    const initial = await kms.send(new GetKeyPolicyCommand({ KeyId, PolicyName: 'default' }));
    expect(JSON.parse(initial.Policy as string).Statement[0].Principal.AWS).toBe(`arn:aws:iam::${ACCOUNT}:root`);
    expect(await caught(kms.send(new PutKeyPolicyCommand({ KeyId, Policy: '{not json' })))).toBeInstanceOf(
      MalformedPolicyDocumentException,
    );
    expect(
      await caught(
        kms.send(
          new PutKeyPolicyCommand({
            KeyId,
            Policy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Maybe', Principal: '*', Action: 'kms:*' }] }),
          }),
        ),
      ),
    ).toBeInstanceOf(MalformedPolicyDocumentException);
    // Installed by the image approver (the policy lets it update the policy again: lockout safety check).
    const approver = client(url, 'AKIDAPPROVER');
    await approver.send(new PutKeyPolicyCommand({ KeyId, Policy: attestedPolicy() }));
    approver.destroy();
    // The parent role may no longer read the policy; the administrator may.
    expect((await caught(kms.send(new GetKeyPolicyCommand({ KeyId })))).name).toBe('AccessDeniedException');
    const admin = client(url, 'AKIDADMIN');
    expect((await admin.send(new GetKeyPolicyCommand({ KeyId: key.KeyMetadata?.Arn }))).Policy).toBe(attestedPolicy());
    admin.destroy();

    const free = await kms.send(new CreateKeyCommand({}));
    await kms.send(new DisableKeyCommand({ KeyId: free.KeyMetadata?.KeyId }));
    expect(await caught(kms.send(new EncryptCommand({ KeyId: free.KeyMetadata?.KeyId, Plaintext: Buffer.from('x') })))).toBeInstanceOf(
      DisabledException,
    );
    await kms.send(new EnableKeyCommand({ KeyId: free.KeyMetadata?.KeyId }));
    await kms.send(new EncryptCommand({ KeyId: free.KeyMetadata?.KeyId, Plaintext: Buffer.from('x') }));
  });

  it('re-encrypts symmetric ciphertext under another key and context, and RSA public-key ciphertext too', async () => {
    const a = (await kms.send(new CreateKeyCommand({}))).KeyMetadata?.Arn as string;
    const b = (await kms.send(new CreateKeyCommand({}))).KeyMetadata?.Arn as string;
    const enc = await kms.send(new EncryptCommand({ KeyId: a, Plaintext: Buffer.from('moved'), EncryptionContext: { wallet: 'w1' } }));
    const re = await kms.send(
      new ReEncryptCommand({
        CiphertextBlob: enc.CiphertextBlob,
        SourceEncryptionContext: { wallet: 'w1' },
        DestinationKeyId: b,
        DestinationEncryptionContext: { wallet: 'w2' },
      }),
    );
    expect(re).toMatchObject({
      SourceKeyId: a,
      KeyId: b,
      SourceEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      DestinationEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
    });
    expect(
      Buffer.from(
        (await kms.send(new DecryptCommand({ CiphertextBlob: re.CiphertextBlob, EncryptionContext: { wallet: 'w2' } })))
          .Plaintext as Uint8Array,
      ).toString(),
    ).toBe('moved');
    expect(
      await caught(kms.send(new DecryptCommand({ CiphertextBlob: re.CiphertextBlob, EncryptionContext: { wallet: 'w1' } }))),
    ).toBeInstanceOf(InvalidCiphertextException);
    // The wrong source context fails as Decrypt would.
    expect(
      await caught(
        kms.send(
          new ReEncryptCommand({ CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: { wallet: 'w9' }, DestinationKeyId: b }),
        ),
      ),
    ).toBeInstanceOf(InvalidCiphertextException);

    // RSA: whatever anyone sealed with the public key, re-encrypted under a symmetric key (no Recipient exists).
    const rsa = (await kms.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' }))).KeyMetadata?.Arn as string;
    const pub = await kms.send(new GetPublicKeyCommand({ KeyId: rsa }));
    const dek = randomBytes(32);
    const sealed = publicEncrypt(
      {
        key: createPublicKey({ key: Buffer.from(pub.PublicKey as Uint8Array), format: 'der', type: 'spki' }),
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: 'sha256',
      },
      dek,
    );
    const fromRsa = await kms.send(
      new ReEncryptCommand({
        CiphertextBlob: sealed,
        SourceKeyId: rsa,
        SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
        DestinationKeyId: b,
      }),
    );
    expect(fromRsa).toMatchObject({
      SourceKeyId: rsa,
      KeyId: b,
      SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
      DestinationEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
    });
    expect(Buffer.from((await kms.send(new DecryptCommand({ CiphertextBlob: fromRsa.CiphertextBlob }))).Plaintext as Uint8Array)).toEqual(
      dek,
    );
    // ... and to an RSA destination, which needs its algorithm.
    const toRsa = await kms.send(
      new ReEncryptCommand({
        CiphertextBlob: fromRsa.CiphertextBlob,
        DestinationKeyId: rsa,
        DestinationEncryptionAlgorithm: 'RSAES_OAEP_SHA_1',
      }),
    );
    expect(toRsa).toMatchObject({ SourceKeyId: b, KeyId: rsa, DestinationEncryptionAlgorithm: 'RSAES_OAEP_SHA_1' });
    expect(
      Buffer.from(
        (await kms.send(new DecryptCommand({ KeyId: rsa, CiphertextBlob: toRsa.CiphertextBlob, EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' })))
          .Plaintext as Uint8Array,
      ),
    ).toEqual(dek);

    // An RSA source needs SourceKeyId and SourceEncryptionAlgorithm, as in KMS.
    expect(
      (
        await caught(
          kms.send(new ReEncryptCommand({ CiphertextBlob: sealed, SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', DestinationKeyId: b })),
        )
      ).name,
    ).toMatch(/InvalidCiphertextException|NotFoundException|ValidationException/);
    expect(await caught(kms.send(new ReEncryptCommand({ CiphertextBlob: sealed, SourceKeyId: rsa, DestinationKeyId: b })))).toBeInstanceOf(
      InvalidKeyUsageException,
    );
    expect(await caught(kms.send(new ReEncryptCommand({ CiphertextBlob: fromRsa.CiphertextBlob, DestinationKeyId: rsa })))).toBeInstanceOf(
      InvalidKeyUsageException,
    );
    expect(
      await caught(
        kms.send(
          new ReEncryptCommand({
            CiphertextBlob: sealed,
            SourceKeyId: rsa,
            SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
            DestinationKeyId: '00000000-0000-0000-0000-000000000000',
          }),
        ),
      ),
    ).toBeInstanceOf(NotFoundException);
    // DryRun checks authorization only.
    const dry = await caught(
      kms.send(
        new ReEncryptCommand({
          CiphertextBlob: sealed,
          SourceKeyId: rsa,
          SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
          DestinationKeyId: b,
          DryRun: true,
        }),
      ),
    );
    expect(dry).toBeInstanceOf(DryRunOperationException);
    expect(dry.$metadata?.httpStatusCode).toBe(412);
  });

  it('creates, lists and revokes grants; a grant allows its grantee what it lists, and nothing else', async () => {
    const admin = client(url, 'AKIDADMIN');
    const grantee = client(url, 'AKIDGRANTEE');
    try {
      // A key only the administrator may manage (and grant on); nobody may use it through the key policy.
      const policy = JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'Admin',
            Effect: 'Allow',
            Principal: { AWS: ACCESS_KEYS.AKIDADMIN },
            Action: ['kms:PutKeyPolicy', 'kms:CreateGrant', 'kms:ListGrants', 'kms:RevokeGrant', 'kms:DescribeKey'],
            Resource: '*',
          },
        ],
      });
      const KeyId = (await admin.send(new CreateKeyCommand({ Policy: policy }))).KeyMetadata?.Arn as string;
      const encrypt = (c: KMSClient, ctx?: Record<string, string>) =>
        c.send(new EncryptCommand({ KeyId, Plaintext: Buffer.from('x'), ...(ctx ? { EncryptionContext: ctx } : {}) }));
      const before = await caught(encrypt(grantee));
      expect([before.name, before.message]).toEqual([
        'AccessDeniedException',
        expect.stringContaining(`User: ${GRANTEE_ROLE} is not authorized to perform: kms:Encrypt`),
      ]);
      expect(before.message).toMatch(/no statement in the key policy allows it, and no grant allows it/);

      const created = await admin.send(
        new CreateGrantCommand({
          KeyId,
          GranteePrincipal: GRANTEE_ROLE,
          Operations: ['Encrypt', 'Decrypt'],
          Name: 'app',
          Constraints: { EncryptionContextSubset: { app: 'a' } },
        }),
      );
      expect(created.GrantId).toMatch(/^[0-9a-f]{64}$/);
      expect(created.GrantToken?.length).toBeGreaterThan(64);
      const enc = await encrypt(grantee, { app: 'a', extra: 'x' });
      expect(
        Buffer.from(
          (await grantee.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: { app: 'a', extra: 'x' } })))
            .Plaintext as Uint8Array,
        ).toString(),
      ).toBe('x');
      expect((await caught(encrypt(grantee, { app: 'b' }))).name).toBe('AccessDeniedException'); // constraint not met
      expect((await caught(encrypt(kms, { app: 'a' }))).name).toBe('AccessDeniedException'); // not the grantee
      expect((await caught(grantee.send(new DescribeKeyCommand({ KeyId })))).name).toBe('AccessDeniedException'); // not listed

      const listed = await admin.send(new ListGrantsCommand({ KeyId }));
      expect(listed.Grants).toHaveLength(1);
      expect(listed.Grants?.[0]).toMatchObject({
        KeyId,
        GrantId: created.GrantId,
        Name: 'app',
        GranteePrincipal: GRANTEE_ROLE,
        IssuingAccount: `arn:aws:iam::${ACCOUNT}:root`,
        Operations: ['Encrypt', 'Decrypt'],
        Constraints: { EncryptionContextSubset: { app: 'a' } },
      });
      expect(listed.Grants?.[0]?.CreationDate).toBeInstanceOf(Date);

      // Only operations the key supports; only with permission to create grants.
      const rsa = (await admin.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Policy: policy }))).KeyMetadata
        ?.Arn as string;
      const bad = await caught(
        admin.send(new CreateGrantCommand({ KeyId: rsa, GranteePrincipal: GRANTEE_ROLE, Operations: ['GenerateDataKey'] })),
      );
      expect([bad.name, bad.message]).toEqual([
        'ValidationException',
        expect.stringContaining('GenerateDataKey are not valid for RSA_2048'),
      ]);
      expect(
        (await caught(grantee.send(new CreateGrantCommand({ KeyId, GranteePrincipal: GRANTEE_ROLE, Operations: ['Encrypt'] })))).name,
      ).toBe('AccessDeniedException');
      const dry = await caught(
        admin.send(new CreateGrantCommand({ KeyId, GranteePrincipal: GRANTEE_ROLE, Operations: ['Encrypt'], DryRun: true })),
      );
      expect(dry).toBeInstanceOf(DryRunOperationException);
      expect((await admin.send(new ListGrantsCommand({ KeyId }))).Grants).toHaveLength(1); // the dry run created nothing

      await admin.send(new RevokeGrantCommand({ KeyId, GrantId: created.GrantId }));
      expect((await caught(encrypt(grantee, { app: 'a' }))).name).toBe('AccessDeniedException');
      expect((await admin.send(new ListGrantsCommand({ KeyId }))).Grants).toEqual([]);
      expect(await caught(admin.send(new RevokeGrantCommand({ KeyId, GrantId: created.GrantId })))).toBeInstanceOf(NotFoundException);
    } finally {
      admin.destroy();
      grantee.destroy();
    }
  });

  describe('attested calls (Recipient)', () => {
    let keyArn: string;
    let sealed: Buffer;
    const dek = randomBytes(32);

    beforeAll(async () => {
      const approver = client(url, 'AKIDAPPROVER');
      const key = await approver.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Policy: attestedPolicy() }));
      approver.destroy();
      keyArn = key.KeyMetadata?.Arn as string;
      const pub = await kms.send(new GetPublicKeyCommand({ KeyId: keyArn }));
      sealed = publicEncrypt(
        {
          key: createPublicKey({ key: Buffer.from(pub.PublicKey as Uint8Array), format: 'der', type: 'spki' }),
          padding: constants.RSA_PKCS1_OAEP_PADDING,
          oaepHash: 'sha256',
        },
        dek,
      );
    });

    const decrypt = async (doc?: Buffer) =>
      kms.send(
        new DecryptCommand({
          KeyId: keyArn,
          CiphertextBlob: sealed,
          EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
          ...(doc ? { Recipient: recipient(doc) } : {}),
        }),
      );

    it('returns CMS for the attested key and no plaintext', async () => {
      const res = await decrypt(await attestation());
      expect(res.Plaintext).toBeUndefined();
      expect(res.KeyId).toBe(keyArn);
      expect(openEnvelopedData(Buffer.from(res.CiphertextForRecipient as Uint8Array), enclaveKey.privateKey)).toEqual(dek);
      // DryRun: authorized, nothing decrypted.
      const dry = await caught(
        kms.send(
          new DecryptCommand({
            KeyId: keyArn,
            CiphertextBlob: sealed,
            EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
            Recipient: recipient(await attestation()),
            DryRun: true,
          }),
        ),
      );
      expect([dry.name, dry.$metadata?.httpStatusCode]).toEqual(['DryRunOperationException', 412]);
    });

    it('refuses the same call without an attestation document, or with another image', async () => {
      const noDoc = await caught(decrypt());
      expect(noDoc.name).toBe('AccessDeniedException');
      expect(noDoc.message).toMatch(/not authorized to perform: kms:Decrypt/);
      expect((await caught(decrypt(await attestation({ pcr0: 'cd'.repeat(48) })))).name).toBe('AccessDeniedException');
    });

    it('refuses documents that do not verify, each with its reason', async () => {
      const doc = await attestation();
      const [p, u, payload, sig] = decodeCbor(doc) as [Buffer, Map<unknown, unknown>, Buffer, Buffer];
      const badSig = Buffer.from(sig);
      badSig[0] = (badSig[0] as number) ^ 1;
      const m = decodeCbor(payload) as Map<string, unknown>;
      m.set('module_id', 'i-forged');
      const otherCa = await SimulatedNitroCa.open(null);
      const cases: Array<[string, Buffer]> = [
        ['BAD_SIGNATURE', encodeCbor([p, u, payload, badSig])],
        ['BAD_SIGNATURE', encodeCbor([p, u, encodeCbor(m), sig])],
        ['UNTRUSTED_ROOT', await attestation({ signer: await otherCa.signer() })],
        [
          'CERT_EXPIRED',
          await attestation({ signer: await ca.signerWithLeaf(new Date(Date.now() - 5 * 3600_000), new Date(Date.now() - 2 * 3600_000)) }),
        ],
        ['STALE', await attestation({ timestamp: Date.now() - 3600_000 })],
        ['MALFORMED', Buffer.from('not cbor at all')],
      ];
      for (const [reason, bad] of cases) {
        const err = await caught(decrypt(bad));
        expect([err.name, err.message]).toEqual(['ValidationException', expect.stringContaining(reason)]);
      }
      const gdk = await kms.send(new CreateKeyCommand({}));
      expect(
        (
          await caught(
            kms.send(
              new GenerateDataKeyCommand({
                KeyId: gdk.KeyMetadata?.KeyId,
                KeySpec: 'AES_256',
                Recipient: recipient(cases[0]?.[1] as Buffer),
              }),
            ),
          )
        ).name,
      ).toBe('ValidationException');
    });

    it('supports Recipient on GenerateDataKey and GenerateRandom', async () => {
      const key = await kms.send(new CreateKeyCommand({}));
      const doc = await attestation();
      const dk = await kms.send(
        new GenerateDataKeyCommand({ KeyId: key.KeyMetadata?.KeyId, KeySpec: 'AES_256', Recipient: recipient(doc) }),
      );
      expect(dk.Plaintext).toBeUndefined();
      const opened = openEnvelopedData(Buffer.from(dk.CiphertextForRecipient as Uint8Array), enclaveKey.privateKey);
      const viaBlob = await kms.send(new DecryptCommand({ CiphertextBlob: dk.CiphertextBlob }));
      expect(Buffer.from(viaBlob.Plaintext as Uint8Array)).toEqual(opened);
      const rnd = await kms.send(new GenerateRandomCommand({ NumberOfBytes: 24, Recipient: recipient(doc) }));
      expect(rnd.Plaintext).toBeUndefined();
      expect(openEnvelopedData(Buffer.from(rnd.CiphertextForRecipient as Uint8Array), enclaveKey.privateKey)).toHaveLength(24);
    });
  });

  describe('fault injection', () => {
    const setFaults = (body: object) => fetch(`${url}/__emulator/faults`, { method: 'POST', body: JSON.stringify(body) });
    afterEach(async () => {
      await setFaults({ latencyMs: 0, throttleRate: 0, errorRate: 0 });
    });

    it('surfaces throttling and internal errors as KMS does', async () => {
      await setFaults({ throttleRate: 1 });
      const throttled = await caught(kms.send(new GenerateRandomCommand({ NumberOfBytes: 8 })));
      expect(throttled.name).toBe('ThrottlingException');
      expect(throttled.$metadata?.httpStatusCode).toBe(400);
      await setFaults({ throttleRate: 0, errorRate: 1 });
      const internal = await caught(kms.send(new GenerateRandomCommand({ NumberOfBytes: 8 })));
      expect(internal).toBeInstanceOf(KMSInternalException);
      expect(internal.$fault).toBe('server');
      expect(internal.$metadata?.httpStatusCode).toBe(500);
      const stats = (await (await fetch(`${url}/__emulator/stats`)).json()) as Record<string, { errors: Record<string, number> }>;
      expect(stats.GenerateRandom?.errors).toMatchObject({ ThrottlingException: 1, KMSInternalException: 1 });
      expect((await setFaults({ throttleRate: 2 })).status).toBe(400);
    });

    it('adds latency', async () => {
      await setFaults({ latencyMs: 150 });
      const t0 = process.hrtime.bigint();
      await kms.send(new GenerateRandomCommand({ NumberOfBytes: 8 }));
      expect(Number(process.hrtime.bigint() - t0) / 1e6).toBeGreaterThanOrEqual(140);
    });
  });

  it('answers unknown operations and bad bodies with KMS error shapes', async () => {
    const post = (target: string, body: string) =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': target }, body });
    const unknown = await post('TrentService.Frobnicate', '{}');
    expect([unknown.status, ((await unknown.json()) as { __type: string }).__type]).toEqual([400, 'UnknownOperationException']);
    const bad = await post('TrentService.ListKeys', '{nope');
    expect([bad.status, ((await bad.json()) as { __type: string }).__type]).toEqual([400, 'SerializationException']);
    const invalid = await post('TrentService.GenerateRandom', JSON.stringify({ NumberOfBytes: 5000 }));
    expect([invalid.status, ((await invalid.json()) as { __type: string }).__type]).toEqual([400, 'ValidationException']);
  });
});

describe('kms-emulator process', () => {
  it('restarts from its state file with keys, key material, policies and its trust root intact', async () => {
    const dir = tempRunDir();
    const ca = await SimulatedNitroCa.open(path.join(dir, 'ca.json')); // writes dir/root.pem, the root the emulator trusts
    const enclaveKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const document = async (signer: Awaited<ReturnType<SimulatedNitroCa['signer']>>, pcr0 = PCR0) => {
      const pcrs = new Map<number, Buffer>(Array.from({ length: 16 }, (_, i) => [i, Buffer.alloc(48)]));
      pcrs.set(0, Buffer.from(pcr0, 'hex'));
      pcrs.set(3, Buffer.from(PCR3, 'hex'));
      return signAttestationDocument(
        {
          moduleId: 'i-0123456789abcdef0-enc0123456789abcdef',
          timestamp: Date.now(),
          pcrs,
          publicKey: enclaveKey.publicKey.export({ type: 'spki', format: 'der' }),
        },
        signer,
      );
    };
    const args = [
      '--port',
      '0',
      '--state',
      path.join(dir, 'kms-state.json'),
      '--trust-root',
      path.join(dir, 'root.pem'),
      ...accessKeyArgs(),
    ];
    let proc = startProgram('kms-emulator', args);
    let url = String((await proc.waitForLog((e) => e.msg === 'KMS emulator listening')).url);
    let kms = client(url);
    const approverBefore = client(url, 'AKIDAPPROVER');
    const key = await approverBefore.send(
      new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Policy: attestedPolicy() }),
    );
    approverBefore.destroy();
    const keyArn = key.KeyMetadata?.Arn as string;
    const pub = await kms.send(new GetPublicKeyCommand({ KeyId: keyArn }));
    const dek = randomBytes(32);
    const sealed = publicEncrypt(
      {
        key: createPublicKey({ key: Buffer.from(pub.PublicKey as Uint8Array), format: 'der', type: 'spki' }),
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: 'sha256',
      },
      dek,
    );
    const sym = await kms.send(new CreateKeyCommand({}));
    const enc = await kms.send(new EncryptCommand({ KeyId: sym.KeyMetadata?.KeyId, Plaintext: Buffer.from('persisted') }));
    kms.destroy();
    await proc.stop();

    proc = startProgram('kms-emulator', args);
    url = String((await proc.waitForLog((e) => e.msg === 'KMS emulator listening')).url);
    kms = client(url);
    const adminKms = client(url, 'AKIDADMIN');
    try {
      expect((await kms.send(new DescribeKeyCommand({ KeyId: keyArn }))).KeyMetadata?.KeySpec).toBe('RSA_2048');
      expect(Buffer.from((await kms.send(new GetPublicKeyCommand({ KeyId: keyArn }))).PublicKey as Uint8Array)).toEqual(
        Buffer.from(pub.PublicKey as Uint8Array),
      );
      expect(await adminKms.send(new GetKeyPolicyCommand({ KeyId: keyArn }))).toMatchObject({ Policy: attestedPolicy() });
      const dec = await kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob }));
      expect(Buffer.from(dec.Plaintext as Uint8Array).toString()).toBe('persisted');

      // The restarted emulator still trusts the CA root it was given, holds the same RSA private key, and
      // enforces the stored policy: an attested Decrypt of what was sealed before the restart opens to the DEK.
      const decrypt = async (doc: Buffer) =>
        kms.send(
          new DecryptCommand({
            KeyId: keyArn,
            CiphertextBlob: sealed,
            EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
            Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: doc },
          }),
        );
      const attested = await decrypt(await document(await ca.signer()));
      expect(attested.Plaintext).toBeUndefined();
      expect(openEnvelopedData(Buffer.from(attested.CiphertextForRecipient as Uint8Array), enclaveKey.privateKey)).toEqual(dek);
      expect((await caught(decrypt(await document(await ca.signer(), 'cd'.repeat(48))))).name).toBe('AccessDeniedException'); // another image
      const foreign = await caught(decrypt(await document(await (await SimulatedNitroCa.open(null)).signer())));
      expect([foreign.name, foreign.message]).toEqual(['ValidationException', expect.stringContaining('UNTRUSTED_ROOT')]);
      expect(
        (await caught(kms.send(new DecryptCommand({ KeyId: keyArn, CiphertextBlob: sealed, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }))))
          .name,
      ).toBe('AccessDeniedException'); // the parent without a document
    } finally {
      kms.destroy();
      adminKms.destroy();
      await proc.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start without its required arguments', async () => {
    const proc = startProgram('kms-emulator', ['--port', '0']);
    expect(await proc.exited).toBe(2);
    expect(proc.lines.join('\n')).toMatch(/--port, --state and --trust-root are required/);
  });
});
