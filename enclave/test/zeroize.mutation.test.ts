/**
 * Key material the enclave handles on the way to a private key is zeroed once used: the data key made for
 * sealing, the content key and CBC output of a KMS answer, the GCM output of a sealed box. node:crypto is
 * observed (not replaced) to catch every buffer it hands out, and each must be all zeros afterwards. Written for
 * mutation testing (npm run test:mutation): no other test can see whether these buffers are wiped.
 */
import crypto, { constants, generateKeyPairSync } from 'node:crypto';
import { buildEnvelopedData } from '../../sim/src/kms/cms-writer';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import { openSealed, sealSecret } from '../src/keys/seal';
import { openKmsAnswer } from '../src/kms/open-answer';
import { ed25519PrivateKey, ed25519PublicKeyHexOfSeed } from '../src/crypto/ed25519';
import { genesis } from '../src/identity/genesis';
import { decodeBlobBase64, type IdentityBlob } from '@nks/shared/blob';
import { fakeNsm } from './fake-nsm';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const kms = generateKeyPairSync('rsa', { modulusLength: 2048 });
const recipient = generateKeyPairSync('rsa', { modulusLength: 2048 });
const secret = new Uint8Array(32).fill(3);
const address = addressOf(publicKeyOf(secret));

const zero = (b: Uint8Array) => b.every((x) => x === 0);

/** Every buffer a decipher made by createDecipheriv returns from update() and final(). */
function watchDeciphers(): Buffer[] {
  const outputs: Buffer[] = [];
  const original = crypto.createDecipheriv;
  jest.spyOn(crypto, 'createDecipheriv').mockImplementation((...args: Parameters<typeof original>) => {
    const d = original(...args);
    const update = d.update.bind(d) as (data: NodeJS.ArrayBufferView) => Buffer;
    const final = d.final.bind(d) as () => Buffer;
    Object.assign(d, {
      update: (data: NodeJS.ArrayBufferView) => {
        const out = update(data);
        outputs.push(out);
        return out;
      },
      final: () => {
        const out = final();
        outputs.push(out);
        return out;
      },
    });
    return d;
  });
  return outputs;
}

afterEach(() => jest.restoreAllMocks());

describe('zeroizing key material', () => {
  const key = { address, projectId: 'default', subject: null, kmsKeyArn: ARN, kmsPublicKey: kms.publicKey };
  const blob = sealSecret(secret, { ...key, keyId: 'k1' });
  const dek = crypto.privateDecrypt(
    { key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
    blob.wrappedKey,
  );

  it('sealSecret wipes the data key it made once it is wrapped', () => {
    const random = jest.spyOn(crypto, 'randomBytes');
    const sealed = sealSecret(secret, { ...key, keyId: 'k2' });
    const made = random.mock.results.map((r) => r.value as Buffer);
    const dataKey = made.find((b) => b.length === 32);
    expect(dataKey).toBeDefined();
    expect(zero(dataKey as Buffer)).toBe(true);
    // The wipe came after use: the blob still opens with the key KMS recovers.
    const recovered = crypto.privateDecrypt(
      { key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      sealed.wrappedKey,
    );
    expect(Buffer.from(openSealed(sealed, recovered) ?? [])).toEqual(Buffer.from(secret));
  });

  it('openSealed wipes the decipher output and returns its own copy', () => {
    const outputs = watchDeciphers();
    const opened = openSealed(blob, dek);
    expect(Buffer.from(opened ?? [])).toEqual(Buffer.from(secret));
    expect(outputs.length).toBeGreaterThan(0);
    for (const out of outputs) expect(zero(out)).toBe(true);
  });

  it('openKmsAnswer wipes the content key and every decrypted block, on success and on failure', () => {
    for (const plaintext of [dek, crypto.randomBytes(32)]) {
      const unwrapped: Buffer[] = [];
      const privateDecrypt = crypto.privateDecrypt;
      jest.spyOn(crypto, 'privateDecrypt').mockImplementation((...args: Parameters<typeof privateDecrypt>) => {
        const out = privateDecrypt(...args);
        unwrapped.push(out);
        return out;
      });
      const outputs = watchDeciphers();
      const raw = { ciphertextForRecipient: buildEnvelopedData(plaintext, recipient.publicKey).toString('base64'), keyId: ARN };
      const opened = openKmsAnswer(raw, recipient.privateKey, blob);
      expect(opened === null).toBe(plaintext !== dek);
      expect(unwrapped.map((b) => b.length)).toEqual([32]);
      expect(outputs.length).toBeGreaterThanOrEqual(3); // CBC update and final, GCM update
      for (const b of [...unwrapped, ...outputs]) expect(zero(b)).toBe(true);
      jest.restoreAllMocks();
    }
  });

  it('ed25519PrivateKey wipes the PKCS#8 buffer that carried the seed to OpenSSL', () => {
    const seen: Buffer[] = [];
    const original = crypto.createPrivateKey;
    jest.spyOn(crypto, 'createPrivateKey').mockImplementation((key: Parameters<typeof original>[0]) => {
      seen.push((key as { key: Buffer }).key);
      return original(key);
    });
    const seed = new Uint8Array(32).fill(7);
    const pk = ed25519PrivateKey(seed);
    expect(seen).toHaveLength(1);
    expect(zero(seen[0] as Buffer)).toBe(true);
    // Wiped after use: the key is the seed's (RFC 8032 test vectors are covered in identity.test.ts).
    expect(pk.asymmetricKeyType).toBe('ed25519');
    expect(Buffer.from(seed).equals(Buffer.alloc(32, 7))).toBe(true); // the caller's seed is the caller's to wipe
  });

  it('genesis wipes the seed, the random bytes it came from and the data key', async () => {
    const random = jest.spyOn(crypto, 'randomBytes');
    const seeds: Uint8Array[] = [];
    const original = crypto.createPrivateKey;
    jest.spyOn(crypto, 'createPrivateKey').mockImplementation((key: Parameters<typeof original>[0]) => {
      seeds.push((key as { key: Buffer }).key);
      return original(key);
    });
    const out = await genesis({ nsm: fakeNsm().client, kmsKeyArn: ARN, kmsPublicKey: kms.publicKey }, Buffer.from('n'));
    const made = random.mock.results.map((r) => r.value as Buffer).filter((b) => b.length === 32);
    expect(made.length).toBeGreaterThanOrEqual(2); // the seed's random bytes and the data key
    for (const b of [...made, ...seeds]) expect(zero(b)).toBe(true);
    // And the blob still holds the seed of the public key it names.
    const blob = decodeBlobBase64(out.blob) as IdentityBlob;
    const dek = crypto.privateDecrypt(
      { key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      blob.wrappedKey,
    );
    expect(ed25519PublicKeyHexOfSeed(openSealed(blob, dek) as Uint8Array)).toBe(out.publicKey);
  });
});
