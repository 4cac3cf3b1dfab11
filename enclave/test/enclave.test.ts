/**
 * The enclave program end to end on the simulated platform: key creation without KMS (a version 2 blob and
 * its first signed record), attested unsealing, the cache's KMS accounting, refusal of forged answers and of
 * tampered or misplaced blobs, and no secret (a key's or the identity's) in anything the enclave sends or logs.
 */
import { constants, createHash, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { recoverAddress } from 'viem';
import { birthUserData } from '@nks/shared/attestation/user-data';
import { decodeBlobBase64, encodeBlob, type KeyBlob } from '@nks/shared/blob';
import { canonicalCbor } from '@nks/shared/cbor';
import { verifyAttestation } from '@nks/shared/attestation';
import type { CreateResult } from '@nks/shared/enclave-api';
import { identityPublicKey, openKeyRecord } from '@nks/shared/records';
import type { RpcClient } from '@nks/shared/rpc';
import { buildEnvelopedData } from '../../sim/src/kms/cms-writer';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { findLeaks, recoverSecret } from '../../test/support/secrets';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { digestOf as digest, startEnclaveHarness, type EnclaveHarness } from './harness';

describe('enclave program', () => {
  let h: EnclaveHarness;
  const blobs: string[] = [];

  beforeAll(async () => {
    // A cache lifetime far beyond the suite's: no test here races it (expiry has its own suite below).
    h = await startEnclaveHarness(tempRunDir('nks-enc-'), {
      cache: { ttlMs: 3600_000, maxEntries: 1000 },
      failedOpens: { maxFailures: 1000, windowMs: 60_000, cooldownMs: 60_000 },
    });
  }, 90_000);

  afterAll(async () => {
    await h?.stop();
  });

  const keys = new Map<string, CreateResult>();
  const create = async (keyId: string, attest = false) => {
    const res = await h.create(keyId, { attest });
    blobs.push(res.blob);
    keys.set(keyId, res);
    return res;
  };
  /** Signs with `blob` as the key `keyId`, handing its genuine record. */
  const sign = (keyId: string, blob: string, n = 1) => h.signDigest({ keyId, blob, record: (keys.get(keyId) as CreateResult).record }, n);
  const health = () => h.client.call('enclave.health', {});
  const failure = rejection;

  it('unsealed its identity with one Decrypt of its own at start, before serving', async () => {
    const hh = await health();
    expect(hh).toMatchObject({ identity: 'ready', mode: 'normal', securityEpoch: 2 });
    expect(hh.counters.identityKmsCalls).toBe(1);
    expect(h.proxyRequests[0]?.ciphertextBlob).toBe(decodeBlobBase64(h.platform.identity.blob).wrappedKey.toString('base64'));
    expect(h.enclave.lines.join('\n')).toContain(h.platform.identity.publicKey);
  });

  it('creates a key without any KMS call, sealed in a version 2 blob with its first signed record', async () => {
    const before = await h.decryptCalls();
    const asked = h.proxyRequests.length;
    const kmsCalls = (await health()).counters.kmsCalls;
    const key = await create('user-1');
    expect(await h.decryptCalls()).toBe(before);
    expect(h.proxyRequests).toHaveLength(asked);
    expect((await health()).counters.kmsCalls).toBe(kmsCalls);
    const blob = decodeBlobBase64(key.blob) as KeyBlob;
    expect(blob).toMatchObject({
      v: 2,
      kind: 'key',
      alg: 'RSAES_OAEP_SHA_256/A256GCM',
      kmsKeyArn: h.platform.keyArn,
      keyId: 'user-1',
      address: key.address,
      projectId: 'default',
      subject: null,
    });
    expect(blob.iv).toHaveLength(12);
    expect(blob.ciphertext).toHaveLength(48);
    expect(key.publicKey).toMatch(/^0x04[0-9a-f]{128}$/);
    expect(key.attestation).toBeUndefined();
    const { record } = openKeyRecord(key.record, identityPublicKey(h.platform.identity.publicKey));
    expect(record).toEqual({
      v: 1,
      kind: 'key',
      keyId: 'user-1',
      address: key.address,
      blobSha256: `0x${createHash('sha256').update(Buffer.from(key.blob, 'base64')).digest('hex')}`,
      projectId: 'default',
      subject: null,
      state: 'active',
      disabled: false,
      seq: 0,
      prev: null,
      origin: 'created',
      createdAt: expect.any(Number),
    });
    expect(Math.abs(record.createdAt - Date.now())).toBeLessThan(60_000);
    // The subject is bound in the blob and the record alike.
    const owned = await h.create('user-1b', { subject: 'customer-42' });
    expect((decodeBlobBase64(owned.blob) as KeyBlob).subject).toBe('customer-42');
    expect(openKeyRecord(owned.record, identityPublicKey(h.platform.identity.publicKey)).record.subject).toBe('customer-42');
  });

  it('proves birth with an attestation binding keyId and address', async () => {
    const key = await create('user-2', true);
    const v = verifyAttestation(Buffer.from(key.attestation as string, 'base64'), {
      trustedRoots: [require('node:fs').readFileSync(h.platform.rootPem, 'utf8')],
      at: new Date(),
      maxAgeMs: 60_000,
      expectedPcrs: { 0: h.platform.pcr0 },
      expectedUserData: birthUserData('user-2', key.address),
    });
    expect(v.document.userData?.toString('hex')).toBe(birthUserData('user-2', key.address).toString('hex'));
  });

  it('signs cold with exactly one KMS Decrypt, and warm with none', async () => {
    const key = await create('user-3');
    const base = await h.decryptCalls();
    const cold = await sign('user-3', key.blob, 1);
    expect(await h.decryptCalls()).toBe(base + 1);
    expect(await recoverAddress({ hash: cold.hash, signature: cold.signature })).toBe(key.address);
    expect(cold.address).toBe(key.address);

    for (let i = 2; i < 6; i++) await sign('user-3', key.blob, i);
    expect(await h.decryptCalls()).toBe(base + 1);
  });

  it('shares one Decrypt among concurrent cold signs of one key', async () => {
    const key = await create('user-4');
    const base = await h.decryptCalls();
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => sign('user-4', key.blob, 100 + i)));
    expect(new Set(results.map((r) => r.address))).toEqual(new Set([key.address]));
    expect(await h.decryptCalls()).toBe(base + 1);
  });

  it('forgets a key on request: the next sign decrypts again', async () => {
    const key = await create('user-5');
    await sign('user-5', key.blob);
    const base = await h.decryptCalls();
    expect(await h.client.call('keys.forget', { keyId: 'user-5' })).toEqual({ keyId: 'user-5', forgotten: true });
    expect(await h.client.call('keys.forget', { keyId: 'user-5' })).toEqual({ keyId: 'user-5', forgotten: false });
    await sign('user-5', key.blob);
    expect(await h.decryptCalls()).toBe(base + 1);
  });

  it('refuses a forged KMS answer (a data key made up outside the enclave) and signs nothing', async () => {
    const key = await create('victim-1');
    const signsBefore = (await health()).counters.signs;
    h.forge = (p) => {
      // A compromised parent answers with its own data key, wrapped to the enclave's real recipient key.
      const { document } = require('@nks/shared/attestation').decodeAttestationDocument(Buffer.from(p.attestationDocument, 'base64'));
      const recipient = createPublicKey({ key: document.publicKey, format: 'der', type: 'spki' });
      return { ciphertextForRecipient: buildEnvelopedData(randomBytes(32), recipient).toString('base64'), keyId: p.kmsKeyArn };
    };
    try {
      const err = await failure(sign('victim-1', key.blob));
      expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', 'the key could not be unsealed']);
    } finally {
      h.forge = null;
    }
    expect((await health()).counters.signs).toBe(signsBefore);
    // The real answer still works afterwards.
    await expect(sign('victim-1', key.blob)).resolves.toMatchObject({ address: key.address });
  });

  it('refuses a KMS answer for another key, or one that is not CMS for this enclave', async () => {
    const key = await create('victim-2');
    h.forge = (p) => ({ ciphertextForRecipient: Buffer.from('not cms').toString('base64'), keyId: p.kmsKeyArn });
    try {
      expect((await failure(sign('victim-2', key.blob))).message).toBe('the key could not be unsealed');
      h.forge = (p) => ({ ciphertextForRecipient: 'AAAA', keyId: p.kmsKeyArn.replace(/key\/.*/, 'key/other') });
      expect((await failure(sign('victim-2', key.blob))).message).toBe('the key could not be unsealed');
    } finally {
      h.forge = null;
    }
  });

  it('refuses tampered blobs with the one integrity answer, before any KMS call, and signs nothing', async () => {
    const key = await create('victim-3');
    const blob = decodeBlobBase64(key.blob) as KeyBlob;
    const before = (await health()).counters;
    const asked = h.proxyRequests.length;
    const tamper = (over: Partial<KeyBlob>) => encodeBlob({ ...blob, ...over }).toString('base64');

    const flipped = Buffer.from(blob.ciphertext);
    flipped[3] = (flipped[3] as number) ^ 1;
    // Anyone can wrap a data key to the (public) KMS key; KMS would unwrap it, but it is not this blob.
    const otherWrap = publicEncrypt(
      {
        key: createPublicKey({ key: Buffer.from(h.platform.kmsPublicKey, 'base64'), format: 'der', type: 'spki' }),
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: 'sha256',
      },
      randomBytes(32),
    );
    const tampered = [
      tamper({ ciphertext: flipped }),
      tamper({ address: '0x000000000000000000000000000000000000dEaD' }),
      tamper({ wrappedKey: otherWrap }),
      tamper({ kmsKeyArn: h.platform.keyArn.replace(/key\/.*/, 'key/11111111-2222-3333-4444-555555555555') }),
      tamper({ createdAt: blob.createdAt + 1 }),
      Buffer.from('garbage').toString('base64'),
      canonicalCbor({ v: 2 }).toString('base64'),
      canonicalCbor({ v: 3 }).toString('base64'),
    ];
    for (const t of tampered) {
      const err = await failure(sign('victim-3', t));
      expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    }
    const after = (await health()).counters;
    expect(after.signs).toBe(before.signs);
    expect(after.integrityFailures - before.integrityFailures).toBe(tampered.length);
    expect([after.kmsCalls, after.failedOpens]).toEqual([before.kmsCalls, before.failedOpens]);
    expect(h.proxyRequests.length).toBe(asked);
  });

  it('refuses a blob presented under another key id, even with its keyId field rewritten', async () => {
    const a = await create('owner-a');
    const b = await create('owner-b');
    const asked = h.proxyRequests.length;
    // a's blob under b's id, with b's record or with a's.
    for (const record of [b.record, a.record]) {
      const err = await failure(h.signDigest({ keyId: 'owner-b', blob: a.blob, record }));
      expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    }
    const moved = encodeBlob({ ...(decodeBlobBase64(a.blob) as KeyBlob), keyId: 'owner-b' }).toString('base64');
    const err = await failure(sign('owner-b', moved));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    expect(h.proxyRequests.length).toBe(asked);
  });

  it('does not answer a tampered blob from the cache of the genuine one', async () => {
    const key = await create('cached-1');
    await sign('cached-1', key.blob); // now cached
    const blob = decodeBlobBase64(key.blob) as KeyBlob;
    const flipped = Buffer.from(blob.ciphertext);
    flipped[0] = (flipped[0] as number) ^ 0x80;
    const err = await failure(sign('cached-1', encodeBlob({ ...blob, ciphertext: flipped }).toString('base64')));
    expect(err.code).toBe('KEY_INTEGRITY');
  });

  it('answers attestation.get with a fresh document carrying the nonce', async () => {
    const nonce = `0x${randomBytes(16).toString('hex')}`;
    const res = await h.client.call('attestation.get', { nonce });
    const v = verifyAttestation(Buffer.from(res.document, 'base64'), {
      trustedRoots: [require('node:fs').readFileSync(h.platform.rootPem, 'utf8')],
      at: new Date(),
      expectedNonce: Buffer.from(nonce.slice(2), 'hex'),
      expectedPcrs: { 0: h.platform.pcr0 },
    });
    expect(v.document.pcrs.get(0)?.toString('hex')).toBe(h.platform.pcr0);
    expect((await failure(h.client.call('attestation.get', { nonce: `0x${'00'.repeat(513)}` }))).code).toBe('INVALID_PARAMS');
  });

  it('validates every method params object strictly', async () => {
    const project = h.defaultProject;
    const record = (await create('strict-1')).record;
    const request = { type: 'digest', digest: digest(1) };
    const cases: Array<[string, object]> = [
      ['keys.create', { keyId: 'a/b', project, subject: null }],
      ['keys.create', { keyId: 'ok', project, subject: null, extra: true }],
      ['keys.create', { keyId: 'ok', subject: null }],
      ['keys.create', { keyId: 'ok', project }],
      ['keys.create', { keyId: 'ok', project, subject: '' }],
      ['keys.create', { keyId: 'ok', project, subject: 'x'.repeat(1025) }],
      ['keys.create', { keyId: 'ok', project: { ...project, signature: 'AAAA' }, subject: null }],
      ['keys.sign', { keyId: 'ok', blob: '%%%', record, project, request }],
      ['keys.sign', { keyId: 'ok', blob: 'AAAA', record, project, request: { type: 'digest' } }],
      ['keys.sign', { keyId: 'ok', blob: 'AAAA', project, request }],
      ['keys.sign', { keyId: 'ok', blob: 'AAAA', record, request }],
      ['keys.sign', { keyId: 'ok', blob: 'AAAA', record: { ...record, extra: 1 }, project, request }],
      ['keys.setDisabled', { record, project }],
      ['keys.setDisabled', { record, project, disabled: 'yes' }],
      ['identity.get', { nonce: 'nope' }],
      ['keys.forget', {}],
      ['enclave.health', { verbose: true }],
    ];
    // Sent as a parent that ignores the method table would: through an untyped client.
    const untyped = h.client as unknown as RpcClient;
    for (const [method, params] of cases) expect((await failure(untyped.call(method, params))).code).toBe('INVALID_PARAMS');
  });

  it('reports health counters', async () => {
    // Its own activity, measured as differences: no dependence on what earlier tests did.
    const before = (await health()).counters;
    const key = await create('counted-1');
    await sign('counted-1', key.blob, 1); // cold: a miss and a KMS call
    await sign('counted-1', key.blob, 2); // warm: a hit
    const blob = decodeBlobBase64(key.blob) as KeyBlob;
    const flipped = Buffer.from(blob.ciphertext);
    flipped[5] = (flipped[5] as number) ^ 1;
    expect((await failure(sign('counted-1', encodeBlob({ ...blob, ciphertext: flipped }).toString('base64')))).code).toBe('KEY_INTEGRITY');
    const hh = await health();
    expect(hh).toMatchObject({ status: 'ok', nsm: 'simulated', identity: 'ready', mode: 'normal', securityEpoch: 2 });
    const d = (k: keyof typeof before) => (hh.counters[k] as number) - (before[k] as number);
    expect({
      creates: d('creates'),
      signs: d('signs'),
      cacheHits: d('cacheHits'),
      cacheMisses: d('cacheMisses'),
      kmsCalls: d('kmsCalls'),
      identityKmsCalls: d('identityKmsCalls'),
      integrityFailures: d('integrityFailures'),
      failedOpens: d('failedOpens'),
    }).toEqual({
      creates: 1,
      signs: 2,
      cacheHits: 1,
      cacheMisses: 2, // the cold sign and the tampered blob
      kmsCalls: 1, // the tampered blob is refused before asking KMS
      identityKmsCalls: 0,
      integrityFailures: 1,
      failedOpens: 0,
    });
    expect((hh.counters.errors.KEY_INTEGRITY ?? 0) - (before.errors.KEY_INTEGRITY ?? 0)).toBe(1);
    expect(hh.counters.cacheSize).toBeGreaterThanOrEqual(1);
    expect(hh.memory.rssBytes).toBeGreaterThan(0);
  });

  it('never sends or logs a private key (raw, hex or base64)', async () => {
    // Keys of its own, created, attested, signed cold and warm, and forgotten, so the scan has something to
    // find whatever ran before; then every key this suite made is looked for in everything the enclave sent.
    for (let i = 0; i < 12; i++) {
      const key = await create(`scanned-${i}`, i % 3 === 0);
      await sign(`scanned-${i}`, key.blob, 1);
      await sign(`scanned-${i}`, key.blob, 2);
      if (i % 4 === 0) await h.client.call('keys.forget', { keyId: `scanned-${i}` });
    }
    // The identity's seed too: the enclave unsealed it at start and signs records with it.
    const secrets = [h.platform.identity.blob, ...blobs].map((b) => recoverSecret(b, h.platform.kmsStateFile));
    expect(secrets.length).toBeGreaterThanOrEqual(13);
    // The scan can find a secret: a planted copy is detected.
    expect(findLeaks([secrets[0] as Buffer], { probe: `x${(secrets[0] as Buffer).toString('base64')}y` })).toEqual(['secret #0 in probe']);
    expect(h.recorded.bytes().length).toBeGreaterThan(1000);
    const leaks = findLeaks(secrets, { 'enclave outbound frames': h.recorded.bytes(), 'enclave logs': h.enclave.lines.join('\n') });
    expect(leaks).toEqual([]);
  });
});

describe('enclave key cache lifetime', () => {
  const TTL_MS = 1000; // the shortest the configuration allows
  let h: EnclaveHarness;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-ttl-'), { cache: { ttlMs: TTL_MS, maxEntries: 100 } });
  }, 90_000);

  afterAll(async () => {
    await h?.stop();
  });

  const health = () => h.client.call('enclave.health', {});

  it('decrypts once more after the cached key expires, and counts the expiry', async () => {
    const key = await h.create('expiring-1');
    const base = await h.decryptCalls();
    const expirations = (await health()).counters.cacheExpirations;
    const cold = await h.signDigest(key, 1);
    expect(cold.address).toBe(key.address);
    expect(await h.decryptCalls()).toBe(base + 1);
    // The event, not a sleep: the cache's sweeper drops the expired key and counts it (it runs every TTL).
    let counters = (await health()).counters;
    const until = Date.now() + 30_000; // generous: only an expiry that never happens ends here
    while (!(counters.cacheExpirations > expirations && counters.cacheSize === 0)) {
      if (Date.now() > until) throw new Error(`the cached key did not expire: ${JSON.stringify(counters)}`);
      await new Promise((r) => setTimeout(r, 50));
      counters = (await health()).counters;
    }
    expect(counters.cacheExpirations).toBe(expirations + 1);
    const again = await h.signDigest(key, 2);
    expect(await recoverAddress({ hash: again.hash, signature: again.signature })).toBe(key.address);
    expect(await h.decryptCalls()).toBe(base + 2);
  });
});
