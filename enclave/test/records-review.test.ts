/**
 * Findings of an attacker's review of the signed records, each fixed and kept as a regression test. The tests
 * stand where a fully compromised parent would, against the real enclave bundle over simulated vsock (KMS
 * emulator, NSM simulator), as enclave/test/adversarial-records.test.ts does.
 */
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { recoverAddress } from 'viem';
import { BLOB_ALG, encodeBlob } from '@nks/shared/blob';
import type { EnclaveHealth } from '@nks/shared/enclave-api';
import { decodeKeyRecord, type SignedRecord } from '@nks/shared/records';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { RawPeer } from '../../test/support/raw-peer';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import { sealBlob } from '../src/keys/seal';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { digestOf, ENCLAVE_ADDRESS, startEnclaveHarness, type EnclaveHarness } from './harness';

jest.setTimeout(120_000);

const keyRecordOf = (s: SignedRecord) => decodeKeyRecord(Buffer.from(s.record, 'base64'));

/** The same bytes under another base64 text: the unused low bits of the last data character changed. */
function base64Variant(b64: string): string | null {
  const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
  if (pad === 0) return null;
  const at = b64.length - pad - 1;
  const idx = A.indexOf(b64[at] as string);
  const unused = pad === 2 ? 0b1111 : 0b11;
  const next = (idx & ~unused) | ((idx + 1) & unused);
  const v = `${b64.slice(0, at)}${A[next]}${b64.slice(at + 1)}`;
  return Buffer.from(v, 'base64').equals(Buffer.from(b64, 'base64')) && v !== b64 ? v : null;
}

describe('records review: a compromised parent vs. the enclave (real bundle)', () => {
  let h: EnclaveHarness;
  let peer: RawPeer;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-r16-'));
    peer = new RawPeer();
    await peer.connect(h.runDir, ENCLAVE_ADDRESS);
  }, 90_000);

  afterAll(async () => {
    peer?.close();
    await h?.stop();
  });

  const health = async (): Promise<EnclaveHealth['counters']> => (await h.client.call('enclave.health', {})).counters;
  const signParams = (keyId: string, blob: string, record: SignedRecord, n = 1) => ({
    keyId,
    blob,
    record,
    project: h.defaultProject,
    request: { type: 'digest', digest: digestOf(n) },
  });

  it('a refused sign moves the health counters the same whichever check refused it (records or blob, stale or current record)', async () => {
    const a = await h.create('r16-oracle-a');
    const b = await h.create('r16-oracle-b');
    // A record refusal: a's record with a flipped signature bit (refused at check 1, before the cache is consulted).
    const sig = Buffer.from(a.record.signature, 'base64');
    sig[5] = (sig[5] as number) ^ 1;
    const badRecord = signParams('r16-oracle-a', a.blob, { ...a.record, signature: sig.toString('base64') });
    // A blob refusal: a's genuine record and project, with b's blob (refused at check 4/5, after a cache lookup).
    const badBlob = signParams('r16-oracle-a', b.blob, a.record);

    const probe = async (params: unknown) => {
      const before = await health();
      const answer = (await peer.call('keys.sign', params)).toString('utf8');
      const after = await health();
      return {
        answer,
        integrityFailures: after.integrityFailures - before.integrityFailures,
        cacheMisses: after.cacheMisses - before.cacheMisses,
      };
    };
    const r1 = await probe(badRecord);
    const r2 = await probe(badBlob);
    // Same bytes on the wire, same integrity count...
    expect(r1.answer).toBe(r2.answer);
    expect(JSON.parse(r1.answer).error.message).toBe(INTEGRITY_REFUSED_MESSAGE);
    expect([r1.integrityFailures, r2.integrityFailures]).toEqual([1, 1]);
    // ...and the same cache counters: the lookup comes before any check.
    expect(r1.cacheMisses).toBe(r2.cacheMisses);

    // Nor does an older genuine record (below the high-water mark) look different from a current one.
    const off = (await h.client.call('keys.setDisabled', { record: a.record, project: h.defaultProject, disabled: true })).record;
    const stale = await probe(signParams('r16-oracle-a', b.blob, a.record)); // seq 0 < mark 1
    const current = await probe(signParams('r16-oracle-a', b.blob, off)); // seq 1 = mark
    expect(stale.answer).toBe(current.answer);
    expect(stale.cacheMisses).toBe(current.cacheMisses);
  });

  it('two keys the parent made under one key id keep separate high-water marks: disabling one does not refuse the other', async () => {
    const first = await h.create('r16-dup', { subject: 'alice' });
    const second = await h.create('r16-dup', { subject: 'alice' });
    expect(second.address).not.toBe(first.address);
    expect([keyRecordOf(first.record).seq, keyRecordOf(second.record).seq]).toEqual([0, 0]);
    await h.client.call('keys.setDisabled', { record: second.record, project: h.defaultProject, disabled: true });
    const s1 = await h.signDigest(first, 3);
    expect(await recoverAddress({ hash: s1.hash, signature: s1.signature })).toBe(first.address);
    // The disabled one's older record stays refused, and making another key under the id is no integrity failure.
    expect((await rejection(h.signDigest(second, 4))).code).toBe('KEY_INTEGRITY');
    const before = await health();
    await h.create('r16-dup', { subject: 'alice' });
    expect((await health()).integrityFailures - before.integrityFailures).toBe(0);
  });

  it('another base64 spelling of a genuine blob (same bytes) is refused without a KMS call and leaves the cached key alone', async () => {
    let key = await h.create('r16-b64-0');
    for (let i = 1; base64Variant(key.blob) === null; i++) key = await h.create(`r16-b64-${i}`);
    const variant = base64Variant(key.blob) as string;
    expect(createHash('sha256').update(Buffer.from(variant, 'base64')).digest('hex')).toBe(keyRecordOf(key.record).blobSha256.slice(2));
    const before = await health();
    await h.signDigest(key, 1); // cold: 1 Decrypt
    await h.signDigest(key, 2); // warm
    const err = await rejection(h.signDigest({ ...key, blob: variant }, 3));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    await h.signDigest(key, 4); // still warm
    const after = await health();
    expect(after.kmsCalls - before.kmsCalls).toBe(1);
    expect(after.cacheHits - before.cacheHits).toBe(2);
  });
});

describe('records review: high-water marks under a small bound (real bundle)', () => {
  let h: EnclaveHarness;
  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-r16-lru-'), { records: { maxVerified: 16, maxSeqMarks: 16 } });
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
  });

  it("making keys under fresh ids does not push a disabled key's mark out: its older record stays refused", async () => {
    const victim = await h.create('r16-victim');
    await h.signDigest(victim, 1);
    await h.client.call('keys.setDisabled', { record: victim.record, project: h.defaultProject, disabled: true });
    expect((await rejection(h.signDigest(victim, 2))).code).toBe('KEY_INTEGRITY');
    for (let i = 0; i < 32; i++) await h.create(`r16-filler-${i}`);
    const replayed = await rejection(h.signDigest(victim, 3));
    expect([replayed.code, replayed.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
  });
});

describe('records review: the migration image', () => {
  let h: EnclaveHarness;
  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-r16-mig-'), { mode: 'migration' });
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
  });

  it('refuses a blob sealed under another KMS key with the one integrity answer, counted, before any KMS call', async () => {
    const kmsPublicKey = createPublicKey({ key: Buffer.from(h.platform.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
    const secret = randomBytes(32);
    const otherArn = h.platform.keyArn.replace(/key\/.*$/, 'key/00000000-0000-0000-0000-000000000000');
    const blob = encodeBlob(
      sealBlob(
        secret,
        { v: 1, alg: BLOB_ALG, kmsKeyArn: otherArn, keyId: 'r16-arn', address: addressOf(publicKeyOf(secret)) },
        { kmsPublicKey },
      ),
    ).toString('base64');
    const before = (await h.client.call('enclave.health', {})).counters;
    const err = await rejection(h.client.call('keys.migrate', { keyId: 'r16-arn', blob, project: h.defaultProject, subject: null }));
    const after = (await h.client.call('enclave.health', {})).counters;
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    expect(after.integrityFailures - before.integrityFailures).toBe(1);
    expect(after.kmsCalls - before.kmsCalls).toBe(0);
  });
});
