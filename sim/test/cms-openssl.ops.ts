/**
 * The KMS emulator's Recipient answers against an independent CMS implementation: `openssl cms -decrypt` opens
 * them, and their ASN.1 tree has the shape of a real KMS answer (tags, depths, definite and indefinite lengths).
 * Needs the openssl binary, so it runs in `npm run check:ops`, not in `npm test`.
 */
import { execFileSync } from 'node:child_process';
import { constants, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, DecryptCommand, GetPublicKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { pcr3ForRole } from '@nks/shared/pcr';
import { tempRunDir } from '@nks/shared-test/helpers';
import vectors from '@nks/shared-test/fixtures/kms-cms-vectors.json';
import { KmsHttpServer } from '../src/kms/server';
import { SimulatedNitroCa } from '../src/nsm/ca';
import { signAttestationDocument } from '../src/nsm/document';
import { ACCESS_KEYS, PARENT_ROLE, attestedPolicy } from '../../test/support/platform';
import { startKmsTestServer } from './kms-server';

const PCR0 = 'ab'.repeat(48);

const client = (url: string, accessKeyId: string) =>
  new KMSClient({ endpoint: url, region: 'us-east-1', credentials: { accessKeyId, secretAccessKey: 'secret' }, maxAttempts: 1 });

/** openssl asn1parse's tree without offsets, lengths and values: what two encodings of one structure share. */
const shape = (file: string) =>
  execFileSync('openssl', ['asn1parse', '-inform', 'DER', '-in', file])
    .toString()
    .split('\n')
    .filter(Boolean)
    .map((l) =>
      l
        .replace(/^\s*\d+:/, '')
        .replace(/hl=\d+ l=\s*\d+/, 'l=def')
        .replace(/:[0-9A-F]{16,}$/, '')
        .replace(/\s+/g, ' ')
        .trim(),
    );

describe('KMS emulator CMS against openssl', () => {
  let dir: string;
  let server: KmsHttpServer;
  let ca: SimulatedNitroCa;
  let url: string;

  beforeAll(async () => {
    dir = tempRunDir();
    ({ server, url, ca } = await startKmsTestServer(dir, ACCESS_KEYS, PARENT_ROLE));
  });

  afterAll(async () => {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes CMS that openssl cms -decrypt opens, with the node layout of real KMS output', async () => {
    const approver = client(url, 'AKIDAPPROVER');
    const kms = client(url, 'AKIDPARENT');
    try {
      const key = await approver.send(
        new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Policy: attestedPolicy(PCR0, PARENT_ROLE) }),
      );
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
      const enclaveKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const pcrs = new Map<number, Buffer>(Array.from({ length: 16 }, (_, i) => [i, Buffer.alloc(48)]));
      pcrs.set(0, Buffer.from(PCR0, 'hex'));
      pcrs.set(3, Buffer.from(pcr3ForRole(PARENT_ROLE), 'hex'));
      const doc = signAttestationDocument(
        {
          moduleId: 'i-0123456789abcdef0-enc0123456789abcdef',
          timestamp: Date.now(),
          pcrs,
          publicKey: enclaveKey.publicKey.export({ type: 'spki', format: 'der' }),
        },
        await ca.signer(),
      );
      const res = await kms.send(
        new DecryptCommand({
          KeyId: keyArn,
          CiphertextBlob: sealed,
          EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
          Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: doc },
        }),
      );
      const files = { cms: path.join(dir, 'r.cms'), key: path.join(dir, 'r.pem'), real: path.join(dir, 'real.cms') };
      fs.writeFileSync(files.cms, Buffer.from(res.CiphertextForRecipient as Uint8Array));
      fs.writeFileSync(files.key, enclaveKey.privateKey.export({ type: 'pkcs8', format: 'pem' }));
      expect(execFileSync('openssl', ['cms', '-decrypt', '-inform', 'DER', '-in', files.cms, '-inkey', files.key])).toEqual(dek);

      fs.writeFileSync(files.real, Buffer.from((vectors.vectors[0] as { cms_ber_hex: string }).cms_ber_hex, 'hex'));
      expect(shape(files.cms)).toEqual(shape(files.real));
    } finally {
      approver.destroy();
      kms.destroy();
    }
  });
});
