/**
 * Opening a KMS answer (open-answer.ts) and the unseal loop around it (unseal.ts), in-process: every step of
 * the one-verdict opening and every branch of the retry, retire and count logic, with forged answers made the
 * way a compromised parent would make them. The multi-process suites (adversarial-parent, enclave) test the same
 * behaviour through the built bundle; these tests exist so that mutation testing (npm run test:mutation),
 * which sees only in-process code, can tell when one of these checks stops being tested.
 */
import { constants, createPublicKey, generateKeyPairSync, privateDecrypt, randomBytes, type KeyObject } from 'node:crypto';
import { hexToBytes } from 'viem';
import { BLOB_ALG, type IdentityBlob, type KeyBlob, type SealedBlob } from '@nks/shared/blob';
import { KeystoreError } from '@nks/shared/errors';
import type { RpcClient } from '@nks/shared/rpc';
import { buildEnvelopedData, type ForgeryOptions } from '../../sim/src/kms/cms-writer';
import { rejection } from '@nks/shared-test/helpers';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import { ed25519PublicKeyHexOfSeed } from '../src/crypto/ed25519';
import { sealBlob, sealSecret } from '../src/keys/seal';
import { FailedOpens } from '../src/kms/failed-opens';
import { DUMMY_SECRET, openKmsAnswer } from '../src/kms/open-answer';
import { RecipientKeys } from '../src/kms/recipient';
import { UNSEAL_REFUSED_MESSAGE, Unsealer, unsealRefused, type UnsealObserver } from '../src/kms/unseal';
import { fakeNsm } from './fake-nsm';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const OTHER_ARN = 'arn:aws:kms:us-east-1:111122223333:key/99999999-2222-3333-4444-555555555555';
/** secp256k1's group order: 32 bytes that are not a valid private key. */
const CURVE_ORDER = hexToBytes('0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141');

const kms = generateKeyPairSync('rsa', { modulusLength: 2048 });
const recipient = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });

const secretOf = (n: number) => new Uint8Array(32).fill(n);
const addressFor = (secret: Uint8Array) => addressOf(publicKeyOf(secret));

/** Seals `secret` under `address` (by default its own) the way keys.create does. */
function seal(secret: Uint8Array, address: string = addressFor(secret), keyId = 'k1'): KeyBlob {
  return sealSecret(secret, { keyId, address, projectId: 'default', subject: null, kmsKeyArn: ARN, kmsPublicKey: kms.publicKey });
}

/** Seals an Ed25519 seed as the identity blob of `publicKey` (by default the seed's own), as genesis does. */
function sealIdentity(seed: Uint8Array, publicKey: string = ed25519PublicKeyHexOfSeed(seed)): IdentityBlob {
  return sealBlob(seed, { v: 2, kind: 'identity', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey }, { kmsPublicKey: kms.publicKey });
}

/** The sealed bytes of a blob, to put under another header. */
const sealedOf = (b: SealedBlob) => ({ createdAt: b.createdAt, wrappedKey: b.wrappedKey, iv: b.iv, ciphertext: b.ciphertext });

/** The data key KMS would recover from the blob. */
const dekOf = (blob: SealedBlob) =>
  privateDecrypt({ key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, blob.wrappedKey);

/** KMS's answer (or a forgery of it) as the proxy relays it. */
function answer(
  plaintext: Uint8Array,
  opts: { to?: KeyObject; forgery?: ForgeryOptions; keyId?: string } = {},
): { ciphertextForRecipient: string; keyId: string } {
  return {
    ciphertextForRecipient: buildEnvelopedData(plaintext, opts.to ?? recipient.publicKey, opts.forgery).toString('base64'),
    keyId: opts.keyId ?? ARN,
  };
}

describe('openKmsAnswer', () => {
  const secret = secretOf(7);
  const blob = seal(secret);
  const dek = dekOf(blob);

  it('opens a genuine answer to the key and its address', () => {
    const opened = openKmsAnswer(answer(dek), recipient.privateKey, blob);
    expect(opened).not.toBeNull();
    expect(Buffer.from(opened?.secret ?? [])).toEqual(Buffer.from(secret));
    expect(opened?.address).toBe(blob.address);
    // The 48-byte shape KMS uses, written without OpenSSL's padding: the same answer, accepted too.
    const unpadded = Buffer.concat([dek, Buffer.alloc(16, 16)]);
    expect(openKmsAnswer(answer(unpadded, { forgery: { pad: false } }), recipient.privateKey, blob)?.address).toBe(blob.address);
  });

  it.each<[string, () => unknown]>([
    ['not an object', () => 'nope'],
    ['null', () => null],
    ['an answer without keyId', () => ({ ciphertextForRecipient: answer(dek).ciphertextForRecipient })],
    ['an answer with an extra field', () => ({ ...answer(dek), plaintext: dek.toString('base64') })],
    ['an answer for another KMS key', () => answer(dek, { keyId: OTHER_ARN })],
    [
      'ciphertextForRecipient that is not base64',
      () => ({ ...answer(dek), ciphertextForRecipient: `*${answer(dek).ciphertextForRecipient}` }),
    ],
    ['an empty ciphertextForRecipient', () => ({ ciphertextForRecipient: '', keyId: ARN })],
    ['CMS that does not parse', () => ({ ciphertextForRecipient: randomBytes(300).toString('base64'), keyId: ARN })],
    ['content of 32 bytes (the data key unpadded)', () => answer(dek, { forgery: { pad: false } })],
    ['content of 64 bytes', () => answer(Buffer.concat([dek, Buffer.alloc(16, 16), Buffer.alloc(16, 16)]), { forgery: { pad: false } })],
    ['content of 16 bytes', () => answer(Buffer.alloc(16, 16), { forgery: { pad: false } })],
    ['a content key wrapped to another RSA key', () => answer(dek, { to: otherRsa.publicKey })],
    ['a 16-byte content key', () => answer(dek, { forgery: { contentKey: randomBytes(16) } })],
    ['a 48-byte content key', () => answer(dek, { forgery: { contentKey: randomBytes(48) } })],
    // PKCS#7 would accept a last byte of 1; the only padding of a 32-byte key is a full block of 16s.
    [
      'short padding that PKCS#7 would accept',
      () => answer(Buffer.concat([dek, Buffer.alloc(15, 16), Buffer.from([1])]), { forgery: { pad: false } }),
    ],
    [
      'a padding block with one byte off',
      () => answer(Buffer.concat([dek, Buffer.alloc(15, 16), Buffer.from([17])]), { forgery: { pad: false } }),
    ],
    [
      'a padding block whose first byte is off',
      () => answer(Buffer.concat([dek, Buffer.from([15]), Buffer.alloc(15, 16)]), { forgery: { pad: false } }),
    ],
    ['another data key', () => answer(randomBytes(32))],
    ['a data key with one bit flipped', () => answer(Buffer.from(dek.map((b, i) => (i === 31 ? b ^ 1 : b))))],
  ])('says only "no" (null, no exception) to %s', (_what, raw) => {
    expect(openKmsAnswer(raw(), recipient.privateKey, blob)).toBeNull();
  });

  it('refuses, without throwing, an answer whose IV is not 16 bytes (AES-CBC would throw on it)', () => {
    for (const length of [0, 8, 12, 32])
      expect(openKmsAnswer(answer(dek, { forgery: { iv: Buffer.alloc(length, 1) } }), recipient.privateKey, blob)).toBeNull();
  });

  it('refuses an answer opened with the wrong recipient key', () => {
    expect(openKmsAnswer(answer(dek), otherRsa.privateKey, blob)).toBeNull();
  });

  it('refuses a blob altered after sealing (another key id, another address)', () => {
    expect(openKmsAnswer(answer(dek), recipient.privateKey, { ...blob, keyId: 'k2' })).toBeNull();
    expect(openKmsAnswer(answer(dek), recipient.privateKey, { ...blob, address: addressFor(secretOf(8)) })).toBeNull();
  });

  it('refuses a different valid secret sealed under the victim address (the substituted key)', () => {
    // Anyone can seal to the KMS public key: the parent seals a key it knows under the victim's address.
    const substituted = seal(secretOf(9), blob.address);
    expect(substituted.address).toBe(blob.address);
    expect(openKmsAnswer(answer(dekOf(substituted)), recipient.privateKey, substituted)).toBeNull();
  });

  it.each<[string, Uint8Array]>([
    ['zero', new Uint8Array(32)],
    ['the curve order', CURVE_ORDER],
  ])('refuses an invalid secp256k1 secret (%s), even sealed under the stand-in key address', (_what, invalid) => {
    // The address step runs on a stand-in key when the secret is invalid: sealing the invalid secret under
    // the stand-in's own address must still fail, and must not throw.
    for (const address of [addressFor(DUMMY_SECRET), blob.address]) {
      const bad = seal(new Uint8Array(invalid), address);
      expect(openKmsAnswer(answer(dekOf(bad)), recipient.privateKey, bad)).toBeNull();
    }
  });

  it('opens a version 1 key blob (the migration image) with the same address check', () => {
    const v1 = sealBlob(
      secret,
      { v: 1, alg: BLOB_ALG, kmsKeyArn: ARN, keyId: 'k1', address: blob.address },
      { kmsPublicKey: kms.publicKey },
    );
    expect(openKmsAnswer(answer(dekOf(v1)), recipient.privateKey, v1)?.address).toBe(blob.address);
    const substituted = sealBlob(secretOf(9), { ...v1 }, { kmsPublicKey: kms.publicKey });
    expect(openKmsAnswer(answer(dekOf(substituted)), recipient.privateKey, substituted)).toBeNull();
  });

  it("opens an identity blob to its seed, checking the seed's Ed25519 public key is the blob's", () => {
    const seed = secretOf(11);
    const identity = sealIdentity(seed);
    const opened = openKmsAnswer(answer(dekOf(identity)), recipient.privateKey, identity);
    expect(Buffer.from(opened?.secret ?? [])).toEqual(Buffer.from(seed));
    expect(opened?.publicKey).toBe(identity.publicKey);
    expect(opened).not.toHaveProperty('address');
    // A seed of the parent's, sealed as the identity blob of the genuine public key: opens, but is not that key.
    const substituted = sealIdentity(secretOf(12), identity.publicKey);
    expect(openKmsAnswer(answer(dekOf(substituted)), recipient.privateKey, substituted)).toBeNull();
    // Forged answers to an identity unseal get the same null.
    expect(openKmsAnswer(answer(randomBytes(32)), recipient.privateKey, identity)).toBeNull();
    expect(openKmsAnswer(answer(dekOf(identity), { keyId: OTHER_ARN }), recipient.privateKey, identity)).toBeNull();
    // The zero seed (what a failed step leaves behind) is refused too, sealed under its own public key.
    const zero = sealIdentity(new Uint8Array(32));
    expect(openKmsAnswer(answer(randomBytes(32)), recipient.privateKey, zero)).toBeNull();
  });

  it('opens a box only as the kind it was sealed as: an identity blob is no key blob, a key blob no identity', () => {
    const seed = secretOf(13); // also a valid secp256k1 secret
    const identity = sealIdentity(seed);
    const asKey: KeyBlob = {
      ...sealedOf(identity),
      v: 2,
      kind: 'key',
      alg: BLOB_ALG,
      kmsKeyArn: ARN,
      keyId: 'k1',
      address: addressFor(seed),
      projectId: 'default',
      subject: null,
    };
    expect(openKmsAnswer(answer(dekOf(identity)), recipient.privateKey, asKey)).toBeNull();
    const key = seal(seed);
    const asIdentity: IdentityBlob = {
      ...sealedOf(key),
      v: 2,
      kind: 'identity',
      alg: BLOB_ALG,
      kmsKeyArn: ARN,
      publicKey: ed25519PublicKeyHexOfSeed(seed),
    };
    expect(openKmsAnswer(answer(dekOf(key)), recipient.privateKey, asIdentity)).toBeNull();
  });

  it('returns a fresh copy of the secret and a valid stand-in', () => {
    const a = openKmsAnswer(answer(dek), recipient.privateKey, blob);
    const b = openKmsAnswer(answer(dek), recipient.privateKey, blob);
    expect(a?.secret).not.toBe(b?.secret);
    a?.secret.fill(0);
    expect(Buffer.from(b?.secret ?? [])).toEqual(Buffer.from(secret));
    expect(addressFor(DUMMY_SECRET)).toMatch(/^0x[0-9a-fA-F]{40}$/);
  });
});

interface ProxyCall {
  method: string;
  params: { kmsKeyArn: string; ciphertextBlob: string; attestationDocument: string };
  options: unknown;
}

/**
 * A KMS proxy that answers genuinely for the recipient key currently leased, unless `answer` says otherwise.
 * `before` runs first on each call (a test uses it to retire keys while the call is in flight).
 */
/** Long enough for an RSA key pair on a loaded machine: the tests of the deadline set their own. */
const DEADLINE_MS = 60_000;

function setup(opts: { failedOpens?: FailedOpens; maxFailures?: number; deadlineMs?: number; observer?: UnsealObserver } = {}) {
  const nsm = fakeNsm();
  const keys = new RecipientKeys(nsm.client, { rotateMs: 3_600_000, documentMaxAgeMs: 60_000 });
  const failedOpens = opts.failedOpens ?? new FailedOpens({ maxFailures: opts.maxFailures ?? 100, windowMs: 60_000, cooldownMs: 60_000 });
  const calls: ProxyCall[] = [];
  const hooks: {
    before?: (n: number) => Promise<void> | void;
    answer?: (p: ProxyCall['params'], genuine: () => Promise<unknown>) => Promise<unknown> | unknown;
  } = {};
  const genuine = async (p: ProxyCall['params']) => {
    const lease = await keys.current();
    const pub = lease.privateKey ? createPublicKey(lease.privateKey) : otherRsa.publicKey;
    const dek = privateDecrypt(
      { key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      Buffer.from(p.ciphertextBlob, 'base64'),
    );
    return answer(dek, { to: pub, keyId: p.kmsKeyArn });
  };
  const proxy = {
    call: async (method: string, params: ProxyCall['params'], options: unknown) => {
      calls.push({ method, params, options });
      await hooks.before?.(calls.length);
      return hooks.answer ? hooks.answer(params, () => genuine(params)) : genuine(params);
    },
  } as unknown as RpcClient;
  const unsealer = new Unsealer(proxy, keys, failedOpens, { kmsKeyArn: ARN, deadlineMs: opts.deadlineMs ?? DEADLINE_MS }, opts.observer);
  return { unsealer, keys, failedOpens, calls, hooks, nsm };
}

describe('Unsealer', () => {
  const secret = secretOf(5);
  const blob = seal(secret);

  it('asks the proxy for an attested Decrypt of the blob and opens the answer', async () => {
    const s = setup();
    const opened = await s.unsealer.unseal(blob);
    expect(Buffer.from(opened.secret)).toEqual(Buffer.from(secret));
    expect(opened.address).toBe(blob.address);
    expect(s.calls).toEqual([
      {
        method: 'kms.decrypt',
        params: {
          kmsKeyArn: ARN,
          ciphertextBlob: blob.wrappedKey.toString('base64'),
          attestationDocument: Buffer.from('doc-1').toString('base64'),
          deadlineMs: s.calls[0]?.options && (s.calls[0].options as { deadlineMs: number }).deadlineMs,
        },
        options: { deadlineMs: expect.any(Number) },
      },
    ]);
    // The time left of the unseal's deadline (the recipient key and its document came first).
    const left = (s.calls[0]?.options as { deadlineMs: number }).deadlineMs;
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThanOrEqual(DEADLINE_MS);
    expect([s.unsealer.kmsCalls, s.unsealer.kmsErrors, s.keys.retirements, s.failedOpens.total]).toEqual([1, 0, 0, 0]);
  });

  it('refuses a blob sealed under another KMS key without asking KMS', async () => {
    const s = setup();
    const err = await rejection(s.unsealer.unseal({ ...blob, kmsKeyArn: OTHER_ARN }));
    expect(err).toBeInstanceOf(KeystoreError);
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', `key k1 is sealed under ${OTHER_ARN}, not this enclave's KMS key`]);
    expect([s.calls.length, s.unsealer.kmsCalls, s.failedOpens.total]).toEqual([0, 0, 0]);
  });

  it('answers a forged answer with the one refusal, retires the recipient key and counts the failure', async () => {
    const s = setup();
    s.hooks.answer = (p) => answer(randomBytes(32), { to: recipient.publicKey, keyId: p.kmsKeyArn });
    const first = await s.keys.current();
    const err = await rejection(s.unsealer.unseal(blob));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE]);
    expect([s.unsealer.kmsCalls, s.keys.retirements, s.failedOpens.total]).toEqual([1, 1, 1]);
    expect(first.privateKey).toBeNull();
    // The next unseal runs with a new key and opens a genuine answer.
    delete s.hooks.answer;
    const opened = await s.unsealer.unseal(blob);
    expect(opened.address).toBe(blob.address);
    expect(s.calls[1]?.params.attestationDocument).not.toBe(s.calls[0]?.params.attestationDocument);
    expect([s.unsealer.kmsCalls, s.keys.retirements, s.failedOpens.total]).toEqual([2, 1, 1]);
  });

  it('refuses before any KMS call while the failed-open limit cools down, and counts the refusal', async () => {
    let now = 0;
    const failedOpens = new FailedOpens({ maxFailures: 1, windowMs: 10_000, cooldownMs: 5_000 }, () => now);
    const s = setup({ failedOpens });
    s.hooks.answer = (p) => answer(randomBytes(32), { to: recipient.publicKey, keyId: p.kmsKeyArn });
    await rejection(s.unsealer.unseal(blob));
    await rejection(s.unsealer.unseal(blob));
    expect(failedOpens.coolingDown).toBe(true);
    delete s.hooks.answer;
    const err = await rejection(s.unsealer.unseal(blob));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE]);
    expect([s.calls.length, s.unsealer.kmsCalls, failedOpens.total]).toEqual([2, 2, 3]);
    now = 5_000 + 1;
    expect((await s.unsealer.unseal(blob)).address).toBe(blob.address);
    expect(s.calls.length).toBe(3);
  });

  it('passes the proxy error on unchanged, counting it, without retiring or counting a failed open', async () => {
    const s = setup();
    const refused = new KeystoreError('KMS_ACCESS_DENIED', 'KMS AccessDeniedException: no');
    s.hooks.answer = () => {
      throw refused;
    };
    expect(await rejection(s.unsealer.unseal(blob))).toBe(refused);
    expect([s.unsealer.kmsCalls, s.unsealer.kmsErrors, s.keys.retirements, s.failedOpens.total]).toEqual([1, 1, 0, 0]);
    delete s.hooks.answer;
    await s.unsealer.unseal(blob);
    expect([s.unsealer.kmsCalls, s.unsealer.kmsErrors]).toEqual([2, 1]);
  });

  it('asks once more with the new key when another call retired its key while it waited, never opening with a retired key', async () => {
    const s = setup();
    s.hooks.before = async (n) => {
      if (n === 1) s.keys.retire(await s.keys.current()); // another call's failed open, while this one waits
    };
    const opened = await s.unsealer.unseal(blob);
    expect(opened.address).toBe(blob.address);
    expect(s.calls.length).toBe(2);
    expect(s.calls[1]?.params.attestationDocument).not.toBe(s.calls[0]?.params.attestationDocument);
    // The retirement was someone else's: this call neither retired nor counted anything.
    expect([s.unsealer.kmsCalls, s.keys.retirements, s.failedOpens.total]).toEqual([2, 1, 0]);
  });

  it('gives up with the one refusal when the key is retired under it twice', async () => {
    const s = setup();
    s.hooks.before = async () => {
      s.keys.retire(await s.keys.current());
    };
    const err = await rejection(s.unsealer.unseal(blob));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE]);
    expect([s.calls.length, s.unsealer.kmsCalls, s.keys.retirements, s.failedOpens.total]).toEqual([2, 2, 2, 0]);
  });

  it('gives the second ask only the time left of one deadline, and none once it has passed', async () => {
    const s = setup({ deadlineMs: 400 });
    await s.keys.current(); // the key pair made before the clock starts
    s.hooks.before = async (n) => {
      if (n === 1) {
        s.keys.retire(await s.keys.current());
        await new Promise((r) => setTimeout(r, 450));
      }
    };
    const err = await rejection(s.unsealer.unseal(blob));
    expect([err.code, err.message]).toEqual(['TIMEOUT', 'the unseal did not finish within 400 ms']);
    // No second kms.decrypt: the deadline had passed; the timeout is counted as a KMS error.
    expect([s.calls.length, s.unsealer.kmsCalls, s.unsealer.kmsErrors]).toEqual([1, 1, 1]);
    expect((s.calls[0]?.options as { deadlineMs: number }).deadlineMs).toBeLessThanOrEqual(400);
  });

  it('tells its observer of each outcome: success, a proxy error, a failed open', async () => {
    const seen: string[] = [];
    const observer: UnsealObserver = {
      succeeded: () => seen.push('ok'),
      failed: (err) => seen.push((err as KeystoreError).code),
    };
    const s = setup({ observer });
    await s.unsealer.unseal(blob);
    s.hooks.answer = () => {
      throw new KeystoreError('KMS_ACCESS_DENIED', 'no');
    };
    await rejection(s.unsealer.unseal(blob));
    s.hooks.answer = (p) => answer(randomBytes(32), { to: recipient.publicKey, keyId: p.kmsKeyArn });
    await rejection(s.unsealer.unseal(blob));
    await rejection(s.unsealer.unseal({ ...blob, kmsKeyArn: OTHER_ARN }));
    expect(seen).toEqual(['ok', 'KMS_ACCESS_DENIED', 'KEY_INTEGRITY', 'KEY_INTEGRITY']);
  });

  it("counts the identity's Decrypt apart from the keys' (kmsCalls stays one per cold key)", async () => {
    const s = setup();
    const seed = secretOf(21);
    const identity = sealIdentity(seed);
    const opened = await s.unsealer.unseal(identity);
    expect([Buffer.from(opened.secret).equals(Buffer.from(seed)), opened.publicKey]).toEqual([true, identity.publicKey]);
    expect([s.unsealer.kmsCalls, s.unsealer.identityKmsCalls]).toEqual([0, 1]);
    await s.unsealer.unseal(blob);
    expect([s.unsealer.kmsCalls, s.unsealer.identityKmsCalls]).toEqual([1, 1]);
    // The same refusal, retirement and count for a forged answer to the identity's Decrypt.
    s.hooks.answer = (p) => answer(randomBytes(32), { to: recipient.publicKey, keyId: p.kmsKeyArn });
    const err = await rejection(s.unsealer.unseal(identity));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE]);
    expect([s.unsealer.kmsCalls, s.unsealer.identityKmsCalls, s.keys.retirements, s.failedOpens.total]).toEqual([1, 2, 1, 1]);
    const other = await rejection(s.unsealer.unseal({ ...identity, kmsKeyArn: OTHER_ARN }));
    expect(other.message).toBe(`the identity is sealed under ${OTHER_ARN}, not this enclave's KMS key`);
  });

  it('unsealRefused is the KEY_INTEGRITY refusal with the fixed message', () => {
    const e = unsealRefused();
    expect([e.code, e.message, e.retryable]).toEqual(['KEY_INTEGRITY', 'the key could not be unsealed', false]);
  });
});
