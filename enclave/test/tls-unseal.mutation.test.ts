/**
 * Unsealing a tls blob in-process (open-answer.ts, unseal.ts, seal.ts, crypto/p256.ts): the KMS answer opens
 * to the P-256 scalar only when the scalar is valid and its point is the blob's; a box sealed as another kind
 * does not open as tls, nor a tls box as another kind; the Decrypt is counted with the enclave's own keys'
 * (identityKmsCalls), a user key's (version 2 or 1) with kmsCalls. Written for mutation testing
 * (npm run test:mutation), beside unseal.mutation.test.ts.
 */
import { constants, createPublicKey, generateKeyPairSync, privateDecrypt, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { BLOB_ALG, decodeBlob, type IdentityBlob, type KeyBlob, type SealedBlob, type TlsBlob } from '@nks/shared/blob';
import type { RpcClient } from '@nks/shared/rpc';
import { rejection } from '@nks/shared-test/helpers';
import { buildEnvelopedData } from '../../sim/src/kms/cms-writer';
import { ed25519PublicKeyHexOfSeed } from '../src/crypto/ed25519';
import { generateP256Secret, P256_POINT_BYTES, p256PrivateKey, p256PublicKeyOf, p256Spki } from '../src/crypto/p256';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import { sealBlob, sealSecret } from '../src/keys/seal';
import { FailedOpens } from '../src/kms/failed-opens';
import { DUMMY_SECRET, openKmsAnswer } from '../src/kms/open-answer';
import { RecipientKeys } from '../src/kms/recipient';
import { UNSEAL_REFUSED_MESSAGE, Unsealer } from '../src/kms/unseal';
import { newTlsKey, openTlsKey, tlsBlobSpki } from '../src/tls/key';
import { fakeNsm } from './fake-nsm';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const OTHER_ARN = 'arn:aws:kms:us-east-1:111122223333:key/99999999-2222-3333-4444-555555555555';
/** P-256's group order n: 32 bytes that are not a scalar. */
const P256_ORDER = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');

const kms = generateKeyPairSync('rsa', { modulusLength: 2048 });
const recipient = generateKeyPairSync('rsa', { modulusLength: 2048 });

const pointHex = (secret: Uint8Array) => `0x${(p256PublicKeyOf(secret) as Buffer).toString('hex')}`;

/** Seals `secret` as the tls blob of `publicKey` (by default its own point), as tls.create does. */
function sealTls(secret: Uint8Array, publicKey: string = pointHex(secret)): TlsBlob {
  return sealBlob(secret, { v: 2, kind: 'tls', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey }, { kmsPublicKey: kms.publicKey });
}

const sealedOf = (b: SealedBlob) => ({ createdAt: b.createdAt, wrappedKey: b.wrappedKey, iv: b.iv, ciphertext: b.ciphertext });
const dekOf = (blob: SealedBlob) =>
  privateDecrypt({ key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, blob.wrappedKey);
const answer = (plaintext: Uint8Array, keyId = ARN) => ({
  ciphertextForRecipient: buildEnvelopedData(plaintext, recipient.publicKey).toString('base64'),
  keyId,
});

describe('crypto/p256', () => {
  it('derives the uncompressed point of a scalar in [1, n-1], and nothing of another', () => {
    const one = Buffer.alloc(32);
    one[31] = 1;
    // 1·G is the generator itself.
    expect(p256PublicKeyOf(one)?.toString('hex')).toBe(
      '046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5',
    );
    const nMinus1 = Buffer.from(P256_ORDER);
    nMinus1[31] = (nMinus1[31] as number) - 1;
    expect(p256PublicKeyOf(nMinus1)).toHaveLength(P256_POINT_BYTES);
    for (const bad of [Buffer.alloc(32), P256_ORDER, Buffer.alloc(32, 0xff), Buffer.alloc(31, 1), Buffer.alloc(33, 1)]) {
      expect(p256PublicKeyOf(bad)).toBeNull();
    }
    expect(p256PublicKeyOf(DUMMY_SECRET)).toHaveLength(65);
  });

  it('makes fresh scalars on their own buffer, their SPKI and a private key that signs for that point', () => {
    const a = generateP256Secret();
    const b = generateP256Secret();
    expect([a.length, a.buffer.byteLength, Buffer.from(a).equals(Buffer.from(b))]).toEqual([32, 32, false]);
    const point = p256PublicKeyOf(a) as Buffer;
    const spki = p256Spki(point);
    const key = p256PrivateKey(a);
    expect(createPublicKey(key).export({ type: 'spki', format: 'der' })).toEqual(spki);
    const sig = sign('sha256', Buffer.from('m'), key);
    expect(verify('sha256', Buffer.from('m'), createPublicKey({ key: spki, format: 'der', type: 'spki' }), sig)).toBe(true);
    expect(() => p256Spki(point.subarray(1))).toThrow(RangeError);
    expect(() => p256Spki(Buffer.concat([Buffer.from([2]), point.subarray(1)]))).toThrow(RangeError);
    expect(() => p256PrivateKey(new Uint8Array(32))).toThrow('not a P-256 secret');
    expect(() => p256PrivateKey(new Uint8Array(31).fill(1))).toThrow('not a P-256 secret');
  });

  it('newTlsKey seals the key it returns, as a tls blob naming its point', () => {
    const k = newTlsKey({ kmsKeyArn: ARN, kmsPublicKey: kms.publicKey, createdAt: 1234 });
    const opened = openKmsAnswer(answer(dekOf(decode(k.blob))), recipient.privateKey, decode(k.blob));
    expect(opened).not.toBeNull();
    expect(p256PrivateKey(opened?.secret as Uint8Array).export({ type: 'pkcs8', format: 'der' })).toEqual(
      k.privateKey.export({ type: 'pkcs8', format: 'der' }),
    );
    expect(tlsBlobSpki(decode(k.blob))).toEqual(k.spki);
    expect(decode(k.blob).createdAt).toBe(1234);
  });
});

const decode = (bytes: Buffer) => decodeBlob(bytes) as TlsBlob;

describe('openKmsAnswer, tls blobs', () => {
  const secret = generateP256Secret();
  const blob = sealTls(secret);

  it('opens a genuine answer to the scalar and the blob’s public key', () => {
    const opened = openKmsAnswer(answer(dekOf(blob)), recipient.privateKey, blob);
    expect(Buffer.from(opened?.secret ?? [])).toEqual(Buffer.from(secret));
    expect(opened?.publicKey).toBe(blob.publicKey);
    expect(opened).not.toHaveProperty('address');
  });

  it('refuses forged answers to a tls unseal with the same null', () => {
    expect(openKmsAnswer(answer(randomBytes(32)), recipient.privateKey, blob)).toBeNull();
    expect(openKmsAnswer(answer(dekOf(blob), OTHER_ARN), recipient.privateKey, blob)).toBeNull();
    expect(openKmsAnswer('nope', recipient.privateKey, blob)).toBeNull();
  });

  it('refuses a scalar of the parent’s sealed as the tls blob of the genuine point (the substituted key)', () => {
    const substituted = sealTls(generateP256Secret(), blob.publicKey);
    expect(openKmsAnswer(answer(dekOf(substituted)), recipient.privateKey, substituted)).toBeNull();
  });

  it.each<[string, Uint8Array]>([
    ['zero', new Uint8Array(32)],
    ['the group order', new Uint8Array(P256_ORDER)],
  ])('refuses an invalid scalar (%s) without throwing, even sealed under the stand-in’s point', (_what, invalid) => {
    for (const publicKey of [pointHex(DUMMY_SECRET), blob.publicKey]) {
      const bad = sealTls(new Uint8Array(invalid), publicKey);
      expect(openKmsAnswer(answer(dekOf(bad)), recipient.privateKey, bad)).toBeNull();
    }
    // The stand-in itself, sealed as what it is, opens: the refusals above are for the invalid scalar.
    const dummy = sealTls(new Uint8Array(DUMMY_SECRET));
    expect(openKmsAnswer(answer(dekOf(dummy)), recipient.privateKey, dummy)?.publicKey).toBe(pointHex(DUMMY_SECRET));
  });

  it('opens a box only as the kind it was sealed as: tls is neither key nor identity, and neither is tls', () => {
    // 32 bytes that are a valid scalar on both curves and an Ed25519 seed.
    const shared = new Uint8Array(32).fill(7);
    const tlsBox = sealTls(shared);
    const asKey: KeyBlob = {
      ...sealedOf(tlsBox),
      v: 2,
      kind: 'key',
      alg: BLOB_ALG,
      kmsKeyArn: ARN,
      keyId: 'k1',
      address: addressOf(publicKeyOf(shared)),
      projectId: 'default',
      subject: null,
    };
    const asIdentity: IdentityBlob = {
      ...sealedOf(tlsBox),
      v: 2,
      kind: 'identity',
      alg: BLOB_ALG,
      kmsKeyArn: ARN,
      publicKey: ed25519PublicKeyHexOfSeed(shared),
    };
    expect(openKmsAnswer(answer(dekOf(tlsBox)), recipient.privateKey, tlsBox)).not.toBeNull();
    expect(openKmsAnswer(answer(dekOf(tlsBox)), recipient.privateKey, asKey)).toBeNull();
    expect(openKmsAnswer(answer(dekOf(tlsBox)), recipient.privateKey, asIdentity)).toBeNull();

    const keyBox = sealSecret(shared, {
      keyId: 'k1',
      address: asKey.address,
      projectId: 'default',
      subject: null,
      kmsKeyArn: ARN,
      kmsPublicKey: kms.publicKey,
    });
    const identityBox = sealBlob(shared, { ...asIdentity }, { kmsPublicKey: kms.publicKey });
    for (const other of [keyBox, identityBox]) {
      expect(openKmsAnswer(answer(dekOf(other)), recipient.privateKey, other)).not.toBeNull();
      const asTls: TlsBlob = { ...sealedOf(other), v: 2, kind: 'tls', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey: pointHex(shared) };
      expect(openKmsAnswer(answer(dekOf(other)), recipient.privateKey, asTls)).toBeNull();
    }
  });
});

/** An unsealer whose KMS proxy answers genuinely for the recipient key leased. */
function setup() {
  const nsm = fakeNsm();
  const keys = new RecipientKeys(nsm.client, { rotateMs: 3_600_000, documentMaxAgeMs: 60_000 });
  const failedOpens = new FailedOpens({ maxFailures: 100, windowMs: 60_000, cooldownMs: 60_000 });
  const forge = { on: false };
  let calls = 0;
  const proxy = {
    call: async (_m: string, p: { kmsKeyArn: string; ciphertextBlob: string }) => {
      calls += 1;
      const lease = await keys.current();
      const dek = forge.on
        ? randomBytes(32)
        : privateDecrypt(
            { key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
            Buffer.from(p.ciphertextBlob, 'base64'),
          );
      return {
        ciphertextForRecipient: buildEnvelopedData(dek, createPublicKey(lease.privateKey as KeyObject)).toString('base64'),
        keyId: p.kmsKeyArn,
      };
    },
  } as unknown as RpcClient;
  return {
    unsealer: new Unsealer(proxy, keys, failedOpens, { kmsKeyArn: ARN, deadlineMs: 60_000 }),
    keys,
    failedOpens,
    forge,
    calls: () => calls,
  };
}

describe('Unsealer, tls blobs', () => {
  it("counts a tls blob's Decrypt with the enclave's own keys, a user key's (version 2 or 1) with kmsCalls", async () => {
    const s = setup();
    const secret = generateP256Secret();
    const opened = await s.unsealer.unseal(sealTls(secret));
    expect([Buffer.from(opened.secret).equals(Buffer.from(secret)), opened.publicKey]).toEqual([true, pointHex(secret)]);
    expect([s.unsealer.kmsCalls, s.unsealer.identityKmsCalls]).toEqual([0, 1]);
    const k = new Uint8Array(32).fill(3);
    const address = addressOf(publicKeyOf(k));
    await s.unsealer.unseal(sealBlob(k, { v: 1, alg: BLOB_ALG, kmsKeyArn: ARN, keyId: 'k1', address }, { kmsPublicKey: kms.publicKey }));
    expect([s.unsealer.kmsCalls, s.unsealer.identityKmsCalls]).toEqual([1, 1]);
    await s.unsealer.unseal(
      sealSecret(k, { keyId: 'k1', address, projectId: 'default', subject: null, kmsKeyArn: ARN, kmsPublicKey: kms.publicKey }),
    );
    expect([s.unsealer.kmsCalls, s.unsealer.identityKmsCalls]).toEqual([2, 1]);
  });

  it('names what is sealed under another KMS key, without asking KMS', async () => {
    const s = setup();
    const tlsErr = await rejection(s.unsealer.unseal({ ...sealTls(generateP256Secret()), kmsKeyArn: OTHER_ARN }));
    expect([tlsErr.code, tlsErr.message]).toEqual([
      'KEY_INTEGRITY',
      `the TLS key is sealed under ${OTHER_ARN}, not this enclave's KMS key`,
    ]);
    const k = new Uint8Array(32).fill(3);
    const v1 = sealBlob(
      k,
      { v: 1, alg: BLOB_ALG, kmsKeyArn: OTHER_ARN, keyId: 'k9', address: addressOf(publicKeyOf(k)) },
      { kmsPublicKey: kms.publicKey },
    );
    expect((await rejection(s.unsealer.unseal(v1))).message).toBe(`key k9 is sealed under ${OTHER_ARN}, not this enclave's KMS key`);
    expect(s.calls()).toBe(0);
  });

  it('answers a forged answer to a tls unseal with the one refusal, retiring the key and counting the failure', async () => {
    const s = setup();
    s.forge.on = true;
    const err = await rejection(openTlsKey(s.unsealer, sealTls(generateP256Secret())));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE]);
    expect([s.unsealer.identityKmsCalls, s.keys.retirements, s.failedOpens.total]).toEqual([1, 1, 1]);
    s.forge.on = false;
    const secret = generateP256Secret();
    const key = await openTlsKey(s.unsealer, sealTls(secret));
    expect(createPublicKey(key).export({ type: 'spki', format: 'der' })).toEqual(p256Spki(p256PublicKeyOf(secret) as Buffer));
  });
});
