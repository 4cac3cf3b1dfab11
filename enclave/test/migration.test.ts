/**
 * The migration image (`mode: "migration"`, docs/RECORDS.md), against the real enclave bundle: it opens a
 * version 1 blob (releases up to 0.3) with the usual attested Decrypt, re-seals the same key as a version 2 blob
 * in the given project for the given subject, and signs its first record with origin "migrated". It serves
 * nothing else; a normal image serves no migration and never opens a version 1 blob.
 */
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { recoverAddress } from 'viem';
import { BLOB_ALG, decodeBlobBase64, encodeBlob, type KeyBlob } from '@nks/shared/blob';
import type { EnclaveHealth } from '@nks/shared/enclave-api';
import { hex, identityPublicKey, openKeyRecord, type ProjectRecord } from '@nks/shared/records';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { RawPeer } from '../../test/support/raw-peer';
import { recoverSecret } from '../../test/support/secrets';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import { sealBlob } from '../src/keys/seal';
import { UNSEAL_REFUSED_MESSAGE } from '../src/kms/unseal';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { digestOf, ENCLAVE_ADDRESS, platformIdentity, startEnclaveHarness, type EnclaveHarness } from './harness';

describe('the migration image (real enclave bundle)', () => {
  let h: EnclaveHarness;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-mig-'), { mode: 'migration' });
  }, 90_000);

  afterAll(async () => {
    await h?.stop();
  });

  const health = (): Promise<EnclaveHealth> => h.client.call('enclave.health', {});
  /** A version 1 blob as a 0.3 enclave sealed it (anyone can seal to the public KMS key; only KMS unwraps). */
  const v1Blob = (keyId: string, secret = randomBytes(32)) => {
    const kmsPublicKey = createPublicKey({ key: Buffer.from(h.platform.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
    const address = addressOf(publicKeyOf(secret));
    const blob = sealBlob(secret, { v: 1, alg: BLOB_ALG, kmsKeyArn: h.platform.keyArn, keyId, address }, { kmsPublicKey });
    return { secret, address, blob: encodeBlob(blob).toString('base64'), sealed: blob };
  };
  const migrate = (keyId: string, blob: string, subject: string | null = null, project = h.defaultProject) =>
    h.client.call('keys.migrate', { keyId, blob, project, subject });

  it('unseals its identity, and serves only hello, health, identity.get and keys.migrate', async () => {
    expect(await health()).toMatchObject({ identity: 'ready', mode: 'migration', securityEpoch: 2 });
    expect((await h.client.call('enclave.hello', { protocolVersion: 3 })).features).toEqual([
      'enclave.health',
      'enclave.hello',
      'enclave.logs',
      'identity.get',
      'keys.migrate',
    ]);
    expect((await h.client.call('identity.get', {})).publicKey).toBe(h.platform.identity.publicKey);
    const key = { keyId: 'm-0', blob: 'AAAA', record: h.defaultProject };
    const peer = new RawPeer();
    await peer.connect(h.runDir, ENCLAVE_ADDRESS);
    try {
      const calls: Array<[string, object]> = [
        ['keys.create', { keyId: 'm-0', project: h.defaultProject, subject: null }],
        ['keys.sign', { ...key, project: h.defaultProject, request: { type: 'digest', digest: digestOf(1) } }],
        ['keys.setDisabled', { record: key.record, project: h.defaultProject, disabled: true }],
        ['keys.successor', { keyId: 'm-1', record: key.record, project: h.defaultProject }],
        ['keys.activate', { record: key.record, predecessor: key.record, project: h.defaultProject }],
        ['keys.cancel', { record: key.record, project: h.defaultProject }],
        ['keys.forget', { keyId: 'm-0' }],
        ['attestation.get', {}],
        ['identity.genesis', { nonce: '0x01' }],
      ];
      for (const [method, params] of calls) {
        const res = await peer.callJson(method, params);
        expect([method, res.error?.data?.code, res.error?.message]).toEqual([
          method,
          'METHOD_NOT_FOUND',
          `method "${method}" is not served by a migration image`,
        ]);
      }
    } finally {
      peer.close();
    }
  });

  it('re-seals a version 1 blob as version 2 in the project and for the subject, with a "migrated" record', async () => {
    const old = v1Blob('legacy-1');
    const before = (await health()).counters;
    const decrypts = await h.decryptCalls();
    const res = await migrate('legacy-1', old.blob, 'customer-7');
    expect(res).toEqual({
      keyId: 'legacy-1',
      address: old.address,
      publicKey: hex(publicKeyOf(old.secret)),
      blob: expect.any(String),
      record: expect.any(Object),
    });
    const blob = decodeBlobBase64(res.blob) as KeyBlob;
    expect(blob).toMatchObject({ v: 2, kind: 'key', keyId: 'legacy-1', address: old.address, projectId: 'default', subject: 'customer-7' });
    // The same key, sealed anew (new data key and IV).
    expect(recoverSecret(res.blob, h.platform.kmsStateFile)).toEqual(old.secret);
    expect(blob.wrappedKey.equals(old.sealed.wrappedKey)).toBe(false);
    const { record } = openKeyRecord(res.record, identityPublicKey(h.platform.identity.publicKey));
    expect(record).toEqual({
      v: 1,
      kind: 'key',
      keyId: 'legacy-1',
      address: old.address,
      blobSha256: hex(createHash('sha256').update(Buffer.from(res.blob, 'base64')).digest()),
      projectId: 'default',
      subject: 'customer-7',
      state: 'active',
      disabled: false,
      seq: 0,
      prev: null,
      origin: 'migrated',
      createdAt: expect.any(Number),
    });
    // Exactly one attested Decrypt, counted as a key's.
    const after = (await health()).counters;
    expect([after.kmsCalls - before.kmsCalls, after.identityKmsCalls - before.identityKmsCalls]).toEqual([1, 0]);
    expect((await h.decryptCalls()) - decrypts).toBe(1);
  });

  it('migrates into another project the identity signed, and refuses a disabled or forged one', async () => {
    const identity = platformIdentity(h.platform);
    const project: ProjectRecord = {
      v: 1,
      kind: 'project',
      projectId: 'p_migration-target-01',
      projectKey: 'pk_migration-target-key',
      auth: { type: 'token' },
      allowedRequestTypes: [...SIGN_REQUEST_TYPES],
      allowedOrigins: [],
      state: 'active',
      seq: 0,
      prev: null,
      createdAt: Date.now(),
    };
    const p = identity.sign(project).signed;
    const res = await migrate('legacy-p', v1Blob('legacy-p').blob, null, p);
    expect((decodeBlobBase64(res.blob) as KeyBlob).projectId).toBe('p_migration-target-01');
    const disabled = identity.sign({ ...project, projectId: 'p_migration-target-02', state: 'disabled' }).signed;
    const off = await rejection(migrate('legacy-q', v1Blob('legacy-q').blob, null, disabled));
    expect([off.code, off.message]).toEqual(['KEY_DISABLED', 'the project is disabled']);
    const forged = { ...p, signature: h.defaultProject.signature };
    const bad = await rejection(migrate('legacy-r', v1Blob('legacy-r').blob, null, forged));
    expect([bad.code, bad.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
  });

  it('refuses what is not a version 1 blob of this key id before any KMS call, and a tampered one after it', async () => {
    const decrypts = await h.decryptCalls();
    const v2 = (await migrate('legacy-v2', v1Blob('legacy-v2').blob)).blob;
    const afterGood = await h.decryptCalls();
    expect(afterGood - decrypts).toBe(1);
    for (const [keyId, blob] of [
      ['legacy-v2', v2], // already version 2
      ['legacy-other', v1Blob('legacy-s').blob], // another key id's blob
      ['legacy-t', 'AAAA'],
      ['legacy-t', h.platform.identity.blob], // the identity blob
    ] as const) {
      const err = await rejection(migrate(keyId, blob));
      expect([keyId, err.code, err.message]).toEqual([keyId, 'KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    }
    expect(await h.decryptCalls()).toBe(afterGood);
    // A tampered version 1 blob is unwrapped by KMS but does not open: the one unseal refusal.
    const t = v1Blob('legacy-u');
    const flipped = Buffer.from(t.sealed.ciphertext);
    flipped[0] = (flipped[0] as number) ^ 1;
    const tampered = encodeBlob({ ...t.sealed, ciphertext: flipped }).toString('base64');
    const failed = (await health()).counters.failedOpens;
    const err = await rejection(migrate('legacy-u', tampered));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE]);
    expect((await health()).counters.failedOpens - failed).toBe(1);
  });

  it('the migrated key signs on a normal image, which refuses the version 1 blob and serves no migration', async () => {
    const old = v1Blob('legacy-n');
    const res = await migrate('legacy-n', old.blob);
    await h.restartEnclave({ mode: 'normal' });
    try {
      const signed = await h.signDigest(res, 9);
      expect(await recoverAddress({ hash: signed.hash, signature: signed.signature })).toBe(old.address);
      const again = await rejection(migrate('legacy-n', old.blob));
      expect([again.code, again.message]).toEqual(['METHOD_NOT_FOUND', 'method "keys.migrate" is not served by a normal image']);
      const decrypts = await h.decryptCalls();
      const v1 = await rejection(h.signDigest({ keyId: 'legacy-n', blob: old.blob, record: res.record }, 10));
      expect([v1.code, v1.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
      expect(await h.decryptCalls()).toBe(decrypts);
    } finally {
      await h.restartEnclave({ mode: 'migration' });
    }
  }, 60_000);
});
