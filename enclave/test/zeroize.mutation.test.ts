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
  const blob = sealSecret(secret, { keyId: 'k1', address, kmsKeyArn: ARN, kmsPublicKey: kms.publicKey });
  const dek = crypto.privateDecrypt(
    { key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
    blob.wrappedKey,
  );

  it('sealSecret wipes the data key it made once it is wrapped', () => {
    const random = jest.spyOn(crypto, 'randomBytes');
    const sealed = sealSecret(secret, { keyId: 'k2', address, kmsKeyArn: ARN, kmsPublicKey: kms.publicKey });
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
});
