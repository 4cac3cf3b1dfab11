/**
 * The genesis image and the identity it makes (docs/RECORDS.md), against the real enclave bundle: with no
 * identity in its configuration the enclave serves hello, health and identity.genesis only; each genesis makes
 * a new identity whose attestation binds its public key (tagged user_data) and the operator's nonce, whose
 * default project record verifies with it, and whose sealed seed boots a normal image. The identity blob is
 * never a key blob, and a key blob never boots as the identity.
 */
import { createHash, randomBytes, verify } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { verifyAttestation } from '@nks/shared/attestation';
import { taggedUserData, USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { BLOB_ALG, decodeBlobBase64, encodeBlob, type IdentityBlob, type KeyBlob } from '@nks/shared/blob';
import type { EnclaveHealth, GenesisResult } from '@nks/shared/enclave-api';
import { decodeKeyRecord, hex, identityBlobDigest, identityPublicKey, openProjectRecord } from '@nks/shared/records';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { enclaveConfigFor, writeJson } from '../../test/support/platform';
import { startProgram } from '../../test/support/process';
import { RawPeer } from '../../test/support/raw-peer';
import { recoverSecret } from '../../test/support/secrets';
import { KeystoreIdentity } from '../src/identity/keystore-identity';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { digestOf, ENCLAVE_ADDRESS, startEnclaveHarness, type EnclaveHarness } from './harness';

const identityConfig = (g: GenesisResult) => ({
  publicKey: g.publicKey,
  blob: g.blob,
  genesisDocument: g.attestation,
  defaultProject: g.defaultProject,
});

describe('the genesis image (real enclave bundle)', () => {
  let h: EnclaveHarness;
  let roots: string[];

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-gen-'), { identity: undefined });
    roots = [fs.readFileSync(h.platform.rootPem, 'utf8')];
  }, 90_000);

  afterAll(async () => {
    await h?.stop();
  });

  const health = (): Promise<EnclaveHealth> => h.client.call('enclave.health', {});
  const genesis = (nonce: string) => h.client.call('identity.genesis', { nonce });

  it('is ready at once, says it is a genesis image, and serves only hello, health and identity.genesis', async () => {
    expect(h.enclave.lines.join('\n')).toMatch(/"identity":"genesis".*"msg":"enclave ready"/);
    expect(await health()).toMatchObject({ status: 'ok', identity: 'genesis', mode: 'normal', securityEpoch: 2 });
    expect((await h.client.call('enclave.hello', { protocolVersion: 3 })).features).toEqual([
      'enclave.health',
      'enclave.hello',
      'enclave.logs',
      'identity.genesis',
    ]);
    const peer = new RawPeer();
    await peer.connect(h.runDir, ENCLAVE_ADDRESS);
    try {
      const project = h.platform.identity.defaultProject;
      const record = project; // well-formed params; the method is refused before looking at them
      const calls: Array<[string, object]> = [
        ['keys.create', { keyId: 'g-1', project, subject: null }],
        ['keys.sign', { keyId: 'g-1', blob: 'AAAA', record, project, request: { type: 'digest', digest: digestOf(1) } }],
        ['keys.setDisabled', { record, project, disabled: true }],
        ['keys.successor', { keyId: 'g-2', record, project }],
        ['keys.activate', { record, predecessor: record, project }],
        ['keys.cancel', { record, project }],
        ['keys.migrate', { keyId: 'g-1', blob: 'AAAA', project, subject: null }],
        ['keys.forget', { keyId: 'g-1' }],
        ['identity.get', {}],
        ['attestation.get', {}],
      ];
      const answers = new Set<string>();
      for (const [method, params] of calls) {
        const res = await peer.call(method, params);
        answers.add(res.toString('utf8'));
      }
      expect([...answers]).toEqual([
        JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          error: {
            code: -32006,
            message: 'the keystore identity is not available',
            data: { code: 'IDENTITY_UNAVAILABLE', retryable: true, reason: 'IDENTITY_UNAVAILABLE' },
          },
        }),
      ]);
    } finally {
      peer.close();
    }
    expect(h.proxyRequests).toHaveLength(0); // a genesis image never asks KMS anything
  });

  it("makes an identity whose document binds its public key and the operator's nonce, with no KMS call", async () => {
    const decrypts = await h.decryptCalls();
    const nonce = randomBytes(32);
    const g = await genesis(hex(nonce));
    expect(g.publicKey).toMatch(/^0x[0-9a-f]{64}$/);
    const raw = Buffer.from(g.publicKey.slice(2), 'hex');
    const v = verifyAttestation(Buffer.from(g.attestation, 'base64'), {
      trustedRoots: roots,
      at: new Date(),
      maxAgeMs: 60_000,
      expectedNonce: nonce,
      expectedUserData: taggedUserData(USER_DATA_TAGS.identity, raw),
      expectedPcrs: { 0: h.platform.pcr0 },
    });
    expect(v.document.userData).toEqual(createHash('sha256').update('nks-identity-v1').update(raw).digest());
    // Another nonce, or the untagged key, is not this document.
    const pcr0 = { 0: h.platform.pcr0 };
    expect(() =>
      verifyAttestation(Buffer.from(g.attestation, 'base64'), { trustedRoots: roots, expectedPcrs: pcr0, expectedNonce: randomBytes(32) }),
    ).toThrow(expect.objectContaining({ code: 'NONCE_MISMATCH' }));
    expect(() =>
      verifyAttestation(Buffer.from(g.attestation, 'base64'), {
        trustedRoots: roots,
        expectedPcrs: pcr0,
        expectedUserData: createHash('sha256').update(raw).digest(),
      }),
    ).toThrow(expect.objectContaining({ code: 'USER_DATA_MISMATCH' }));

    const blob = decodeBlobBase64(g.blob) as IdentityBlob;
    expect(blob).toMatchObject({ v: 2, kind: 'identity', alg: BLOB_ALG, kmsKeyArn: h.platform.keyArn, publicKey: g.publicKey });
    // The sealed seed is the key's (recovered here with the emulator's key material, as only a test can).
    const seed = recoverSecret(g.blob, h.platform.kmsStateFile);
    expect(KeystoreIdentity.fromSeed(seed).publicKey).toBe(g.publicKey);

    expect(await h.decryptCalls()).toBe(decrypts);
    expect(h.proxyRequests).toHaveLength(0);
  });

  it('signs its own blob with the new identity, so the operator can tell it is the blob the enclave sealed', async () => {
    const g = await genesis(hex(randomBytes(8)));
    const key = identityPublicKey(g.publicKey);
    const blob = Buffer.from(g.blob, 'base64');
    expect(verify(null, identityBlobDigest(blob), key, Buffer.from(g.blobSignature, 'base64'))).toBe(true);
    // Over this blob only, and not as a record: another identity blob of the same public key does not verify.
    const other = Buffer.from(blob);
    other[other.length - 1] = (other[other.length - 1] as number) ^ 1;
    expect(verify(null, identityBlobDigest(other), key, Buffer.from(g.blobSignature, 'base64'))).toBe(false);
  });

  it('signs the default project record with the new identity', async () => {
    const g = await genesis(hex(randomBytes(8)));
    const { record } = openProjectRecord(g.defaultProject, identityPublicKey(g.publicKey));
    expect(record).toEqual({
      v: 1,
      kind: 'project',
      projectId: 'default',
      projectKey: 'default',
      auth: { type: 'token' },
      allowedRequestTypes: [...SIGN_REQUEST_TYPES],
      allowedOrigins: [],
      state: 'active',
      seq: 0,
      prev: null,
      createdAt: expect.any(Number),
    });
    expect(Math.abs(record.createdAt - Date.now())).toBeLessThan(60_000);
    // Not by any other identity: the platform's, for one.
    expect(() => openProjectRecord(g.defaultProject, identityPublicKey(h.platform.identity.publicKey))).toThrow(
      expect.objectContaining({ code: 'KEY_INTEGRITY' }),
    );
  });

  it('makes a new identity on every call, and wants a nonce', async () => {
    const [a, b] = [await genesis('0x01'), await genesis('0x01')];
    expect(a.publicKey).not.toBe(b.publicKey);
    expect(a.blob).not.toBe(b.blob);
    for (const params of [{}, { nonce: '0x' }, { nonce: `0x${'00'.repeat(513)}` }, { nonce: '0x01', extra: 1 }]) {
      const err = await rejection(h.client.call('identity.genesis', params as { nonce: string }));
      expect(err.code).toBe('INVALID_PARAMS');
    }
  });

  it('the genesis output boots a normal image, which hands out the genesis document and fresh evidence', async () => {
    const g = await genesis(hex(randomBytes(16)));
    await h.restartEnclave({ identity: identityConfig(g) });
    try {
      expect(await health()).toMatchObject({ identity: 'ready', counters: { identityKmsCalls: 1, kmsCalls: 0 } });
      const nonce = randomBytes(20);
      const got = await h.client.call('identity.get', { nonce: hex(nonce) });
      expect(got).toEqual({
        publicKey: g.publicKey,
        genesisDocument: g.attestation,
        attestation: expect.any(String),
        defaultProject: g.defaultProject,
      });
      const v = verifyAttestation(Buffer.from(got.attestation, 'base64'), {
        trustedRoots: roots,
        at: new Date(),
        maxAgeMs: 60_000,
        expectedNonce: nonce,
        expectedUserData: taggedUserData(USER_DATA_TAGS.identity, Buffer.from(g.publicKey.slice(2), 'hex')),
        expectedPcrs: { 0: h.platform.pcr0 },
      });
      expect(v.document.nonce).toEqual(nonce);
      // No genesis on a normal image.
      expect((await rejection(genesis('0x02'))).code).toBe('METHOD_NOT_FOUND');

      // The identity blob is no key blob: refused before any KMS call, even under a record naming it.
      const key = await h.create('g-key', { project: g.defaultProject });
      const identity = KeystoreIdentity.fromSeed(recoverSecret(g.blob, h.platform.kmsStateFile));
      const naming = identity.sign({
        ...decodeKeyRecord(Buffer.from(key.record.record, 'base64')),
        blobSha256: hex(createHash('sha256').update(Buffer.from(g.blob, 'base64')).digest()),
      }).signed;
      const before = (await health()).counters;
      for (const record of [key.record, naming]) {
        const err = await rejection(h.signDigest({ keyId: 'g-key', blob: g.blob, record }, 1, g.defaultProject));
        expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
      }
      const after = (await health()).counters;
      expect([after.kmsCalls - before.kmsCalls, after.signs - before.signs, after.integrityFailures - before.integrityFailures]).toEqual([
        0, 0, 2,
      ]);
    } finally {
      await h.restartEnclave({ identity: undefined });
    }
  }, 60_000);

  it('a key blob never boots as the identity: refused by the configuration check, or unopened at boot', async () => {
    const g = await genesis(hex(randomBytes(16)));
    // A key blob of the platform's normal image (made there, so genuine), as the identity blob.
    await h.restartEnclave({ identity: h.platform.identity });
    const key = await h.create('k-as-identity');
    await h.restartEnclave({ identity: undefined });

    const dir = tempRunDir('nks-gen-cfg-');
    try {
      const file = writeJson(
        path.join(dir, 'enclave.json'),
        enclaveConfigFor(h.platform, dir, { identity: { ...identityConfig(g), blob: key.blob } }),
      );
      const refused = startProgram('enclave', ['--config', file]);
      expect(await refused.exited).toBe(2);
      expect(refused.lines.join('\n')).toMatch(/config\.identity\.blob: not an identity blob/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }

    // Its sealed bytes relabelled as the identity blob of the configured key pass the configuration's shape
    // check, and KMS unwraps the data key for this image; the box does not open as an identity (AAD).
    const k = decodeBlobBase64(key.blob) as KeyBlob;
    const relabelled = encodeBlob({
      v: 2,
      kind: 'identity',
      alg: BLOB_ALG,
      kmsKeyArn: k.kmsKeyArn,
      publicKey: g.publicKey,
      createdAt: k.createdAt,
      wrappedKey: k.wrappedKey,
      iv: k.iv,
      ciphertext: k.ciphertext,
    }).toString('base64');
    const asked = h.proxyRequests.length;
    await h.restartEnclave(
      { identity: { ...identityConfig(g), blob: relabelled }, identityBoot: { maxAttempts: 2, retryMs: 10 } },
      { wait: 'listening', connect: false },
    );
    try {
      expect(await h.enclave.exited).toBe(3);
      expect(h.proxyRequests.length - asked).toBe(2); // one Decrypt per attempt, each genuine, none opened
      expect(h.enclave.lines.join('\n')).toMatch(/"code":"KEY_INTEGRITY".*could not unseal the keystore identity; giving up/);
      expect(h.enclave.lines.join('\n')).not.toMatch(/"msg":"enclave ready"/);
    } finally {
      await h.restartEnclave({ identity: undefined });
    }
  }, 90_000);
});
