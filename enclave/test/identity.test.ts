/**
 * The keystore identity and the record checks, in process: Ed25519 from a seed (RFC 8032 vectors), record
 * signing, genesis's NSM request, the boot's retries and give-up, and VerifiedRecords' cache, high-water marks
 * and bounds (the programs' suites drive the same code through the real bundle).
 */
import crypto, { generateKeyPairSync, randomBytes } from 'node:crypto';
import { decodeCbor, encodeCbor } from '@nks/shared/cbor';
import { taggedUserData, USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { BLOB_ALG, decodeBlobBase64, encodeBlob, type IdentityBlob } from '@nks/shared/blob';
import { KeystoreError } from '@nks/shared/errors';
import {
  DEFAULT_PROJECT_ID,
  encodeRecord,
  hex,
  identityPublicKey,
  MAX_RECORD_BYTES,
  openProjectRecord,
  recordDigest,
  verifySignedRecord,
  type KeyRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { PoliciesSchema } from '@nks/shared/policy/schema';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';
import { captureLogger, rejection } from '@nks/shared-test/helpers';
import { ed25519PrivateKey, ed25519PublicKeyHexOfSeed, ed25519RawPublicKey } from '../src/crypto/ed25519';
import { IdentityBootError, IdentityHolder, unsealIdentity } from '../src/identity/boot';
import { genesis } from '../src/identity/genesis';
import { defaultProjectRecord, KeystoreIdentity } from '../src/identity/keystore-identity';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import { sealBlob } from '../src/keys/seal';
import type { Unsealer } from '../src/kms/unseal';
import { NsmClient, type NsmTransport } from '../src/nsm/client';
import { Lru } from '../src/records/lru';
import { entryWeight, INTEGRITY_REFUSED_MESSAGE, VerifiedRecords } from '../src/records/verified';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const kms = generateKeyPairSync('rsa', { modulusLength: 2048 });

describe('Ed25519 from a seed', () => {
  // RFC 8032 §7.1, TEST 1 and TEST 2.
  it.each([
    [
      '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
      'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
      '',
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    ],
    [
      '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
      '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
      '72',
      '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
    ],
  ])('seed %s has the public key and signatures of RFC 8032', (seed, publicKey, message, signature) => {
    const key = ed25519PrivateKey(Buffer.from(seed, 'hex'));
    expect(ed25519RawPublicKey(key).toString('hex')).toBe(publicKey);
    expect(ed25519PublicKeyHexOfSeed(Buffer.from(seed, 'hex'))).toBe(`0x${publicKey}`);
    expect(crypto.sign(null, Buffer.from(message, 'hex'), key).toString('hex')).toBe(signature);
    expect(KeystoreIdentity.fromSeed(Buffer.from(seed, 'hex')).publicKey).toBe(`0x${publicKey}`);
  });

  it('takes exactly 32 bytes', () => {
    expect(() => ed25519PrivateKey(new Uint8Array(31))).toThrow('an Ed25519 seed is 32 bytes');
    expect(() => ed25519PrivateKey(new Uint8Array(33))).toThrow('an Ed25519 seed is 32 bytes');
  });
});

describe('KeystoreIdentity', () => {
  const identity = KeystoreIdentity.fromSeed(new Uint8Array(32).fill(4));

  it('signs a record over its tagged digest, verifiable with the public key only', () => {
    const record = defaultProjectRecord(1_795_000_000_000);
    const { signed, digest } = identity.sign(record);
    const bytes = Buffer.from(signed.record, 'base64');
    expect(bytes).toEqual(encodeRecord(record));
    expect(digest).toEqual(recordDigest(bytes));
    expect(crypto.verify(null, digest, identityPublicKey(identity.publicKey), Buffer.from(signed.signature, 'base64'))).toBe(true);
    // The signature is over the digest, not the bare CBOR (so it never doubles as a signature of other bytes).
    expect(crypto.verify(null, bytes, identityPublicKey(identity.publicKey), Buffer.from(signed.signature, 'base64'))).toBe(false);
    expect(verifySignedRecord(signed, identityPublicKey(identity.publicKey)).digest).toEqual(digest);
    expect(Object.keys(signed).sort()).toEqual(['record', 'signature']);
  });

  it('makes the default project: token-authorized, every request type, no origins, seq 0', () => {
    expect(defaultProjectRecord(5)).toEqual({
      v: 1,
      kind: 'project',
      projectId: DEFAULT_PROJECT_ID,
      projectKey: 'default',
      auth: { type: 'token' },
      allowedRequestTypes: [...SIGN_REQUEST_TYPES],
      allowedOrigins: [],
      state: 'active',
      seq: 0,
      prev: null,
      createdAt: 5,
    });
  });
});

describe('genesis (in process)', () => {
  it("asks the NSM for a document with the identity tag over the raw public key and the operator's nonce", async () => {
    const requests: unknown[] = [];
    const transport: NsmTransport = {
      kind: 'simulated',
      request: async (cbor) => {
        requests.push(decodeCbor(cbor));
        return encodeCbor(new Map([['Attestation', new Map([['document', Buffer.from('doc')]])]]));
      },
      close: () => undefined,
    };
    const nonce = randomBytes(24);
    const out = await genesis({ nsm: new NsmClient(transport), kmsKeyArn: ARN, kmsPublicKey: kms.publicKey, now: () => 42 }, nonce);
    const raw = Buffer.from(out.publicKey.slice(2), 'hex');
    expect(requests).toEqual([
      new Map([
        [
          'Attestation',
          new Map([
            ['user_data', taggedUserData(USER_DATA_TAGS.identity, raw)],
            ['nonce', nonce],
            ['public_key', null],
          ]),
        ],
      ]),
    ]);
    expect(out.attestation).toBe(Buffer.from('doc').toString('base64'));
    const blob = decodeBlobBase64(out.blob) as IdentityBlob;
    expect(blob).toMatchObject({ v: 2, kind: 'identity', kmsKeyArn: ARN, publicKey: out.publicKey });
    const { record } = openProjectRecord(out.defaultProject, identityPublicKey(out.publicKey));
    expect(record).toEqual(defaultProjectRecord(42));
  });
});

describe('unsealing the identity at start', () => {
  const seed = new Uint8Array(32).fill(6);
  const publicKey = ed25519PublicKeyHexOfSeed(seed);
  const blob = encodeBlob(
    sealBlob(seed, { v: 2, kind: 'identity', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey }, { kmsPublicKey: kms.publicKey }),
  ).toString('base64');

  /** An unsealer that fails `failures` times (with `error`), then opens the seed (a fresh copy each time). */
  function unsealer(failures: number, error = new KeystoreError('KMS_UNAVAILABLE', 'proxy not connected')) {
    const opened: Uint8Array[] = [];
    let calls = 0;
    const u = {
      unseal: async () => {
        calls += 1;
        if (calls <= failures) throw error;
        const secret = new Uint8Array(seed);
        opened.push(secret);
        return { secret, publicKey };
      },
    } as unknown as Unsealer;
    return { u, calls: () => calls, opened };
  }

  it('retries with back-off from retryMs, then returns the identity and wipes the seed it was given', async () => {
    const { u, calls, opened } = unsealer(3);
    const waits: number[] = [];
    const log = captureLogger();
    const identity = await unsealIdentity({
      publicKey,
      blob,
      maxAttempts: 5,
      retryMs: 100,
      unsealer: u,
      logger: log.logger,
      wait: async (ms) => waits.push(ms),
    });
    expect(identity.publicKey).toBe(publicKey);
    expect(calls()).toBe(4);
    expect(waits).toHaveLength(3);
    // Capped exponential back-off (shared/src/backoff.ts): attempt n waits within [c/2, c] for c = 100·2^n.
    waits.forEach((ms, n) => {
      expect(ms).toBeGreaterThanOrEqual((100 * 2 ** n) / 2);
      expect(ms).toBeLessThanOrEqual(100 * 2 ** n);
    });
    expect(opened.every((s) => s.every((b) => b === 0))).toBe(true);
    const lines = log.lines().filter((l) => l.msg === 'could not unseal the keystore identity; retrying');
    expect(lines.map((l) => [l.attempt, l.maxAttempts, l.code])).toEqual([
      [1, 5, 'KMS_UNAVAILABLE'],
      [2, 5, 'KMS_UNAVAILABLE'],
      [3, 5, 'KMS_UNAVAILABLE'],
    ]);
  });

  it('gives up after maxAttempts, saying so', async () => {
    const { u, calls } = unsealer(10, new KeystoreError('KMS_ACCESS_DENIED', 'KMS AccessDeniedException: not this image'));
    const log = captureLogger();
    const err = await rejection<Error>(
      unsealIdentity({ publicKey, blob, maxAttempts: 2, retryMs: 10, unsealer: u, logger: log.logger, wait: async () => undefined }),
    );
    expect(err).toBeInstanceOf(IdentityBootError);
    expect(err.message).toBe('the keystore identity could not be unsealed in 2 attempts (last: KMS_ACCESS_DENIED)');
    expect(calls()).toBe(2);
    expect(log.lines().map((l) => l.msg)).toEqual([
      'could not unseal the keystore identity; retrying',
      'could not unseal the keystore identity; giving up',
    ]);
  });

  it('never asks for a blob that is not the identity blob of the configured key', async () => {
    const { u, calls } = unsealer(0);
    const other = ed25519PublicKeyHexOfSeed(new Uint8Array(32).fill(7));
    const keyBlob = encodeBlob(
      sealBlob(
        seed,
        {
          v: 2,
          kind: 'key',
          alg: BLOB_ALG,
          kmsKeyArn: ARN,
          keyId: 'k',
          address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
          projectId: 'default',
          subject: null,
        },
        { kmsPublicKey: kms.publicKey },
      ),
    ).toString('base64');
    for (const [pk, b] of [
      [other, blob],
      [publicKey, keyBlob],
    ]) {
      const err = await rejection<Error>(
        unsealIdentity({
          publicKey: pk as string,
          blob: b as string,
          maxAttempts: 3,
          retryMs: 10,
          unsealer: u,
          logger: captureLogger().logger,
        }),
      );
      expect(err).toBeInstanceOf(IdentityBootError);
    }
    expect(calls()).toBe(0);
  });

  it('holds the state: unavailable until set, and a genesis image never gets one', () => {
    const holder = new IdentityHolder('unsealing');
    expect(holder.status).toBe('unsealing');
    expect(() => holder.get()).toThrow(
      expect.objectContaining({ code: 'IDENTITY_UNAVAILABLE', message: 'the keystore identity is not available' }),
    );
    const identity = KeystoreIdentity.fromSeed(seed);
    holder.set(identity);
    expect([holder.status, holder.get()]).toEqual(['ready', identity]);
    expect(() => new IdentityHolder('genesis').set(identity)).toThrow('a genesis image has no identity');
  });
});

describe('VerifiedRecords', () => {
  const identity = KeystoreIdentity.fromSeed(new Uint8Array(32).fill(8));
  const pub = identityPublicKey(identity.publicKey);
  const keyRecord = (over: Partial<KeyRecord> = {}): KeyRecord => ({
    v: 1,
    kind: 'key',
    keyId: 'k1',
    address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
    blobSha256: hex(Buffer.alloc(32, 1)),
    projectId: 'default',
    subject: null,
    state: 'active',
    disabled: false,
    seq: 0,
    prev: null,
    origin: 'created',
    createdAt: 1,
    ...over,
  });
  const signed = (over: Partial<KeyRecord> = {}) => identity.sign(keyRecord(over)).signed;
  const refusedWith = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return [(err as KeystoreError).code, (err as KeystoreError).message];
    }
    return 'accepted';
  };

  it('verifies a record once: the same text again costs no signature check, another signature is checked', () => {
    const v = new VerifiedRecords(pub, { maxVerified: 16, maxVerifiedBytes: 1 << 20, maxSeqMarks: 16 });
    const s = signed();
    const verify = jest.spyOn(crypto, 'verify');
    try {
      expect(v.key(s).record).toEqual(keyRecord());
      expect(v.key(s).digest).toEqual(recordDigest(Buffer.from(s.record, 'base64')));
      expect(v.key(s).record.keyId).toBe('k1');
      expect(verify).toHaveBeenCalledTimes(1);
      // The cached text with a forged signature is not the verified record.
      expect(refusedWith(() => v.key({ ...s, signature: signed({ keyId: 'k2' }).signature }))).toEqual([
        'KEY_INTEGRITY',
        INTEGRITY_REFUSED_MESSAGE,
      ]);
      expect(verify).toHaveBeenCalledTimes(2);
    } finally {
      verify.mockRestore();
    }
    expect(v.failures).toBe(1);
  });

  it('refuses, with one message, records of another identity, of the other kind, malformed or not canonical', () => {
    const v = new VerifiedRecords(pub, { maxVerified: 16, maxVerifiedBytes: 1 << 20, maxSeqMarks: 16 });
    const stranger = KeystoreIdentity.fromSeed(new Uint8Array(32).fill(9));
    const project = identity.sign(defaultProjectRecord(1)).signed;
    v.project(project); // cached as a project record
    const cases: Array<[string, () => unknown]> = [
      ['another identity', () => v.key(stranger.sign(keyRecord()).signed)],
      ['a project record as a key record (cached)', () => v.key(project)],
      ['a key record as a project record', () => v.project(signed())],
      ['not base64 of anything', () => v.key({ record: '', signature: signed().signature })],
      ['a short signature', () => v.key({ ...signed(), signature: 'AAAA' })],
      ['an unknown field, signed', () => v.key(identity.sign({ ...keyRecord(), note: 1 } as unknown as KeyRecord).signed)],
    ];
    for (const [name, fn] of cases) expect([name, refusedWith(fn)]).toEqual([name, ['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]]);
    expect(v.failures).toBe(cases.length);
    // A genesis image has no identity: nothing verifies.
    expect(
      refusedWith(() => new VerifiedRecords(null, { maxVerified: 16, maxVerifiedBytes: 1 << 20, maxSeqMarks: 16 }).key(signed())),
    ).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
  });

  it('refuses a record older than the newest seen for its key or project, and raises the mark', () => {
    const v = new VerifiedRecords(pub, { maxVerified: 16, maxVerifiedBytes: 1 << 20, maxSeqMarks: 16 });
    const s0 = signed();
    const s1 = signed({ seq: 1, prev: hex(recordDigest(Buffer.from(s0.record, 'base64'))), disabled: true });
    v.current(v.key(s0));
    v.current(v.key(s0)); // the same seq again is fine
    v.current(v.key(s1));
    expect(refusedWith(() => v.current(v.key(s0)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    v.current(v.key(s1));
    // Marks are per key id: another key's seq 0 is its own.
    v.current(v.key(signed({ keyId: 'k2' })));
    // remember() (a record the enclave just made) raises the mark too.
    const s2 = identity.sign(keyRecord({ seq: 2, prev: hex(Buffer.alloc(32)) }));
    v.remember(s2.signed, 'key');
    expect(refusedWith(() => v.current(v.key(s1)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    // Projects have their own marks.
    const p0 = identity.sign(defaultProjectRecord(1)).signed;
    const p1 = identity.sign({ ...defaultProjectRecord(2), seq: 1, prev: hex(Buffer.alloc(32)), state: 'disabled' }).signed;
    v.current(v.project(p1));
    expect(refusedWith(() => v.current(v.project(p0)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
  });

  it('is bounded: the least recently used mark is forgotten (as at a restart: the documented limit); first records take no mark', () => {
    const v = new VerifiedRecords(pub, { maxVerified: 16, maxVerifiedBytes: 1 << 20, maxSeqMarks: 16 });
    const old: SignedRecord = signed({ keyId: 'victim' });
    v.current(v.key(signed({ keyId: 'victim', seq: 3, prev: hex(Buffer.alloc(32)) })));
    expect(refusedWith(() => v.current(v.key(old)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    // Keys' first records (seq 0) take no mark, so making keys does not push the victim's out...
    for (let i = 0; i < 32; i++) v.current(v.key(signed({ keyId: `new-${i}` })));
    expect(refusedWith(() => v.current(v.key(old)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    // ...but 16 other changed keys do.
    for (let i = 0; i < 16; i++) v.current(v.key(signed({ keyId: `changed-${i}`, seq: 1, prev: hex(Buffer.alloc(32)) })));
    expect(refusedWith(() => v.current(v.key(old)))).toBe('accepted');
  });

  it('keeps a mark per key, not per key id: another key under the same id has its own', () => {
    const v = new VerifiedRecords(pub, { maxVerified: 16, maxVerifiedBytes: 1 << 20, maxSeqMarks: 16 });
    v.current(v.key(signed({ keyId: 'twin', seq: 2, prev: hex(Buffer.alloc(32)) })));
    const other = signed({ keyId: 'twin', address: addressOf(publicKeyOf(new Uint8Array(32).fill(9))) });
    expect(refusedWith(() => v.current(v.key(other)))).toBe('accepted');
    expect(refusedWith(() => v.current(v.key(signed({ keyId: 'twin' }))))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
  });
  it('stillCurrent refuses a record a newer one has superseded since it was checked, without raising any mark', () => {
    const v = new VerifiedRecords(pub, { maxVerified: 16, maxVerifiedBytes: 1 << 20, maxSeqMarks: 16 });
    const s0 = v.key(signed({ keyId: 'waits' }));
    v.current(s0);
    v.stillCurrent(s0); // nothing newer yet
    const s1 = v.key(signed({ keyId: 'waits', seq: 1, prev: hex(Buffer.alloc(32)), disabled: true }));
    v.stillCurrent(s1); // checks only: no mark raised by it...
    v.stillCurrent(s0); // ...so s0 is still the newest seen
    v.current(s1);
    expect(refusedWith(() => v.stillCurrent(s0))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    v.stillCurrent(s1);
    // Projects too (their marks are their own).
    const p0 = v.project(identity.sign(defaultProjectRecord(1)).signed);
    v.stillCurrent(p0);
    v.remember(identity.sign({ ...defaultProjectRecord(2), seq: 1, prev: hex(Buffer.alloc(32)), state: 'disabled' }).signed, 'project');
    expect(refusedWith(() => v.stillCurrent(p0))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
  });

  // Review 17, F3: remember() kept the object that was encoded; a value the encoding changed (a lone surrogate,
  // written as U+FFFD) was then enforced from the cache while the signed bytes said something else.
  it('remember keeps what the signed bytes decode to, never the object that was encoded', () => {
    const v = new VerifiedRecords(pub, { maxVerified: 16, maxVerifiedBytes: 1 << 20, maxSeqMarks: 16 });
    const record = keyRecord({ keyId: 'mine', subject: 'alice' });
    const s = identity.sign(record).signed;
    const kept = v.remember<KeyRecord>(s, 'key');
    expect(kept.record).toEqual(record);
    expect(kept.record).not.toBe(record);
    expect(kept.digest).toEqual(recordDigest(Buffer.from(s.record, 'base64')));
    expect(v.key(s)).toBe(kept); // the cache holds the decoded one
    // Bytes that say something else than the object the caller holds: what is kept is what they say.
    const other = identity.sign(keyRecord({ keyId: 'mine', subject: 'alice\ufffd' })).signed;
    expect(v.remember<KeyRecord>(other, 'key').record.subject).toBe('alice\ufffd');
    // A record the decoder refuses (here, of the other kind) is not kept, and says why (the caller's own input).
    const refused = refusedWith(() => v.remember(identity.sign(keyRecord({ keyId: 'x' })).signed, 'project'));
    expect(refused).toEqual([
      'INVALID_PARAMS',
      'the record these parameters make would not be readable: record is malformed: unknown field keyId',
    ]);
  });

  // Review 17, F4: a record over MAX_RECORD_BYTES was signed and cached, so it worked until the enclave restarted.
  it('never signs nor remembers a record over MAX_RECORD_BYTES', () => {
    const v = new VerifiedRecords(pub, { maxVerified: 16, maxVerifiedBytes: 1 << 20, maxSeqMarks: 16 });
    const origins = Array.from({ length: 64 }, (_, i) => `https://${String(i).padStart(2, '0')}${'o'.repeat(243)}.example`);
    // The largest origins (17 KB) and a policy's address lists take a record past the bound.
    const to = (n: number) => Array.from({ length: n }, (_, i) => `0x${i.toString(16).padStart(40, '0')}`);
    const policy = (n: number) =>
      PoliciesSchema.parse({
        rules: [0, 256].flatMap((from, k) =>
          n > from ? [{ name: `r${k}`, effect: 'allow', when: { to: to(n).slice(from, from + 256) } }] : [],
        ),
      });
    const big = { ...defaultProjectRecord(1), allowedOrigins: origins, policies: policy(400) };
    const size = encodeRecord(big).length;
    expect(size).toBeGreaterThan(MAX_RECORD_BYTES);
    const message = `the record would be ${size} bytes, over the ${MAX_RECORD_BYTES} a record may have`;
    expect(refusedWith(() => identity.sign(big))).toEqual(['INVALID_PARAMS', message]);
    const forged = { record: encodeRecord(big).toString('base64'), signature: Buffer.alloc(64).toString('base64') };
    expect(refusedWith(() => v.remember(forged, 'project'))).toEqual(['INVALID_PARAMS', message]);
    // At the limit exactly, it is signed.
    const fits = { ...defaultProjectRecord(1), allowedOrigins: [...origins.slice(0, 63), 'https://t'], policies: policy(1) };
    for (let n = 2; encodeRecord({ ...fits, policies: policy(n) }).length < MAX_RECORD_BYTES - 100; n++) fits.policies = policy(n);
    while (encodeRecord(fits).length < MAX_RECORD_BYTES) fits.allowedOrigins[63] += 't';
    expect(encodeRecord(fits).length).toBe(MAX_RECORD_BYTES);
    expect(v.remember(identity.sign(fits).signed, 'project').record).toEqual(fits);
  });

  // Review 17, F5: the cache was bounded in entries only, so 50,000 of the largest records took gigabytes.
  it('bounds the verified records by their weight as well as their number, dropping the least recently used first', () => {
    const v = new VerifiedRecords(pub, { maxVerified: 1000, maxVerifiedBytes: 100_000, maxSeqMarks: 16 });
    const origins = Array.from({ length: 64 }, (_, i) => `https://${String(i).padStart(2, '0')}${'o'.repeat(100)}.example`);
    const records = Array.from({ length: 20 }, (_, i) => identity.sign({ ...defaultProjectRecord(i), allowedOrigins: origins }).signed);
    const weight = entryWeight(records[0]?.record ?? '', records[0]?.signature ?? '');
    expect(weight).toBeGreaterThan(2 * Buffer.from(records[0]?.record ?? '', 'base64').length);
    const verify = jest.spyOn(crypto, 'verify');
    try {
      for (const r of records) v.project(r);
      expect(verify).toHaveBeenCalledTimes(20);
      // Only the last floor(100,000 / weight) are still cached: those cost no verification, the others one each.
      const kept = Math.floor(100_000 / weight);
      expect(kept).toBeGreaterThan(1);
      expect(kept).toBeLessThan(20);
      verify.mockClear();
      for (const r of records.slice(20 - kept)) v.project(r);
      expect(verify).toHaveBeenCalledTimes(0);
      v.project(records[0] as SignedRecord);
      expect(verify).toHaveBeenCalledTimes(1);
    } finally {
      verify.mockRestore();
    }
  });
});

describe('Lru', () => {
  it('drops the least recently used entry first; get marks an entry used', () => {
    const l = new Lru<string, number>(2);
    l.set('a', 1);
    l.set('b', 2);
    expect(l.get('a')).toBe(1);
    l.set('c', 3);
    expect([l.get('a'), l.get('b'), l.get('c'), l.size]).toEqual([1, undefined, 3, 2]);
    l.set('a', 4); // replacing does not evict
    expect([l.get('a'), l.get('c'), l.size]).toEqual([4, 3, 2]);
    expect(l.delete('a')).toBe(true);
    expect(() => new Lru(0)).toThrow('an LRU holds at least one entry');
  });

  it('with weights, also keeps their total within the bound (and at least the newest entry)', () => {
    const l = new Lru<string, number>(10, { maxWeight: 10, weigh: (_k, v) => v });
    l.set('a', 4);
    l.set('b', 4);
    expect([l.size, l.weight]).toEqual([2, 8]);
    l.set('c', 4); // a goes
    expect([l.get('a'), l.size, l.weight]).toEqual([undefined, 2, 8]);
    l.get('b'); // c is now the least recently used
    l.set('d', 6);
    expect([l.get('c'), l.get('b'), l.get('d'), l.weight]).toEqual([undefined, 4, 6, 10]);
    l.set('b', 1); // replacing re-weighs
    expect([l.size, l.weight]).toEqual([2, 7]);
    expect(l.delete('d')).toBe(true);
    expect(l.delete('d')).toBe(false);
    expect([l.size, l.weight]).toEqual([1, 1]);
    l.set('huge', 50); // heavier than the bound: kept alone
    expect([[...l.values()], l.weight]).toEqual([[50], 50]);
    // The count bound still holds with weights.
    const few = new Lru<string, number>(2, { maxWeight: 100, weigh: () => 1 });
    for (const k of ['a', 'b', 'c']) few.set(k, 0);
    expect([few.size, few.get('a'), few.weight]).toEqual([2, undefined, 2]);
  });
});
