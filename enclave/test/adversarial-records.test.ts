/**
 * The adversarial-parent suite for signed records (docs/RECORDS.md): the test stands where a fully
 * compromised parent would, against the real enclave bundle over simulated vsock, with the KMS emulator and
 * the NSM simulator. The parent owns the database (every blob and record), the KMS proxy and the enclave's RPC
 * port; it can seal any secret to the (public) KMS key, but it cannot sign as the keystore identity.
 *
 * What must hold: the enclave signs only with a key its identity recorded, for the key id, project and blob
 * the records name, in the states they give; every mismatch ends with no signature, no KMS call, and the same
 * KEY_INTEGRITY bytes whichever check failed. Where the test needs a record the enclave has no method to make
 * yet (another project, a retired key), it signs one with the platform identity's seed, recovered from the
 * KMS emulator's state (`platformIdentity`): what the enclave would sign, not what a parent can.
 */
import { constants, createCipheriv, createHash, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import path from 'node:path';
import { recoverAddress, recoverMessageAddress } from 'viem';
import { BLOB_ALG, blobAad, decodeBlobBase64, encodeBlob, type KeyBlob } from '@nks/shared/blob';
import { canonicalCbor, decodeCanonicalCbor, encodeCbor } from '@nks/shared/cbor';
import type { EnclaveHealth } from '@nks/shared/enclave-api';
import {
  decodeKeyRecord,
  decodeProjectRecord,
  hex,
  identityPublicKey,
  openKeyRecord,
  recordDigest,
  type KeyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { genesisIdentity, PARENT_ROLE } from '../../test/support/platform';
import { startProgram } from '../../test/support/process';
import { RawPeer } from '../../test/support/raw-peer';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import { KeystoreIdentity } from '../src/identity/keystore-identity';
import { sealBlob } from '../src/keys/seal';
import { UNSEAL_REFUSED_MESSAGE } from '../src/kms/unseal';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { digestOf, ENCLAVE_ADDRESS, platformIdentity, startEnclaveHarness, type EnclaveHarness } from './harness';

/** What every record or blob mismatch answers, byte for byte (the raw peer always uses id 1). */
const REFUSAL = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  error: { code: -32001, message: INTEGRITY_REFUSED_MESSAGE, data: { code: 'KEY_INTEGRITY', retryable: false, reason: 'KEY_INTEGRITY' } },
});

const P2 = 'p_second-project-0001';
const P3 = 'p_third-project-00001';

/** The record's content, decoded (no signature check: the parent can read every record). */
const keyRecordOf = (s: SignedRecord): KeyRecord => decodeKeyRecord(Buffer.from(s.record, 'base64'));
const projectRecordOf = (s: SignedRecord): ProjectRecord => decodeProjectRecord(Buffer.from(s.record, 'base64'));
/** The record's bytes with fields replaced, and its original signature: what a parent editing its database makes. */
function edited(s: SignedRecord, over: Record<string, unknown>): SignedRecord {
  const m = decodeCanonicalCbor(Buffer.from(s.record, 'base64')) as Map<string, unknown>;
  const fields: Record<string, unknown> = Object.fromEntries(m);
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete fields[k];
    else fields[k] = v;
  }
  return { record: canonicalCbor(fields).toString('base64'), signature: s.signature };
}

function projectRecord(over: Partial<ProjectRecord> = {}): ProjectRecord {
  return {
    v: 1,
    kind: 'project',
    projectId: P2,
    projectKey: 'pk_second-project-key-01',
    auth: { type: 'token' },
    allowedRequestTypes: [...SIGN_REQUEST_TYPES],
    allowedOrigins: [],
    state: 'active',
    seq: 0,
    prev: null,
    createdAt: Date.now(),
    ...over,
  };
}

describe('adversarial parent vs. signed records (real enclave bundle)', () => {
  let h: EnclaveHarness;
  let peer: RawPeer;
  /** The platform's identity (recovered seed) and another keystore's. */
  let identity: KeystoreIdentity;
  const stranger = KeystoreIdentity.fromSeed(randomBytes(32));
  let p2: SignedRecord;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-rec-'));
    identity = platformIdentity(h.platform);
    expect(identity.publicKey).toBe(h.platform.identity.publicKey);
    p2 = identity.sign(projectRecord()).signed;
    peer = new RawPeer();
    await peer.connect(h.runDir, ENCLAVE_ADDRESS);
  }, 90_000);

  afterAll(async () => {
    peer?.close();
    await h?.stop();
  });

  const health = (): Promise<EnclaveHealth> => h.client.call('enclave.health', {});
  const signParams = (keyId: string, blob: string, record: SignedRecord, project = h.defaultProject, n = 1) => ({
    keyId,
    blob,
    record,
    project,
    request: { type: 'digest', digest: digestOf(n) },
  });

  /**
   * Each case, sent as a parent would: answered with the one refusal, byte for byte, with no signature, no KMS
   * call and one integrity failure counted.
   */
  async function expectRefused(cases: Array<[string, string, unknown]>): Promise<void> {
    const before = (await health()).counters;
    const asked = h.proxyRequests.length;
    const kms = await h.decryptCalls();
    const answers: Array<[string, string]> = [];
    for (const [name, method, params] of cases) answers.push([name, (await peer.call(method, params)).toString('utf8')]);
    expect(answers).toEqual(cases.map(([name]) => [name, REFUSAL]));
    const after = (await health()).counters;
    expect({
      signs: after.signs - before.signs,
      integrityFailures: after.integrityFailures - before.integrityFailures,
      kmsCalls: after.kmsCalls - before.kmsCalls,
      proxyRequests: h.proxyRequests.length - asked,
      decrypts: (await h.decryptCalls()) - kms,
    }).toEqual({ signs: 0, integrityFailures: cases.length, kmsCalls: 0, proxyRequests: 0, decrypts: 0 });
  }

  /** A blob the parent builds around a secret of its choosing, with the header of `like` (edited by `over`). */
  const parentMadeBlob = (like: string, secret: Uint8Array, over: Partial<KeyBlob> = {}): string => {
    const header = { ...(decodeBlobBase64(like) as KeyBlob), ...over };
    const kmsPublicKey = createPublicKey({ key: Buffer.from(h.platform.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
    const dek = randomBytes(32);
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', dek, iv);
    cipher.setAAD(blobAad(header));
    const ciphertext = Buffer.concat([cipher.update(secret), cipher.final(), cipher.getAuthTag()]);
    const wrappedKey = publicEncrypt({ key: kmsPublicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, dek);
    return encodeBlob({ ...header, wrappedKey, iv, ciphertext }).toString('base64');
  };

  it('signs with a genuine key, its record and its project: the baseline every attack below departs from', async () => {
    const key = await h.create('base-1');
    const res = await h.signDigest(key, 1);
    expect(await recoverAddress({ hash: res.hash, signature: res.signature })).toBe(key.address);
  });

  it('refuses a blob the parent made itself, whatever record it comes with (or without one)', async () => {
    const victim = await h.create('victim-1');
    const own = randomBytes(32);
    const made = parentMadeBlob(victim.blob, own, { address: addressOf(publicKeyOf(own)) });
    const underVictim = parentMadeBlob(victim.blob, own); // the victim's address in the header
    // No record at all: the request is not even well formed.
    const noRecord = await peer.callJson('keys.sign', { ...signParams('victim-1', made, victim.record), record: undefined });
    expect(noRecord.error?.data?.code).toBe('INVALID_PARAMS');
    // A record of its own making: right content, signed by a key of its own (it cannot sign as the identity).
    const ownRecord = stranger.sign({
      ...keyRecordOf(victim.record),
      address: addressOf(publicKeyOf(own)),
      blobSha256: hex(sha256(made)),
    }).signed;
    await expectRefused([
      ['with the victim record', 'keys.sign', signParams('victim-1', underVictim, victim.record)],
      ['with the victim record, its own address', 'keys.sign', signParams('victim-1', made, victim.record)],
      ['with a record signed by its own key', 'keys.sign', signParams('victim-1', made, ownRecord)],
      ['with an empty record', 'keys.sign', signParams('victim-1', made, { record: '', signature: victim.record.signature })],
    ]);
  });

  it("refuses a copied record of another key, and a key's blob under another key's record", async () => {
    const a = await h.create('copy-a');
    const b = await h.create('copy-b');
    await h.signDigest(a, 1); // a is now cached: the warm path is checked as well as the cold one
    await expectRefused([
      ["a's blob and id, b's record", 'keys.sign', signParams('copy-a', a.blob, b.record)],
      ["a's blob, b's id and record", 'keys.sign', signParams('copy-b', a.blob, b.record)],
      ["b's blob and record, a's id", 'keys.sign', signParams('copy-a', b.blob, b.record)],
      ["a's blob and record, b's id", 'keys.sign', signParams('copy-b', a.blob, a.record)],
    ]);
    await expect(h.signDigest(b, 2)).resolves.toMatchObject({ address: b.address });
  });

  it('refuses a record edited in any field (or re-encoded, or with another signature), cold and warm', async () => {
    const key = await h.create('edited-1', { subject: 'alice' });
    const r = keyRecordOf(key.record);
    const edits: Array<[string, Record<string, unknown>]> = [
      ['v', { v: 2 }],
      ['kind', { kind: 'project' }],
      ['keyId', { keyId: 'edited-2' }],
      ['address', { address: addressOf(publicKeyOf(randomBytes(32))) }],
      ['blobSha256', { blobSha256: hex(randomBytes(32)) }],
      ['projectId', { projectId: P2 }],
      ['subject', { subject: 'mallory' }],
      ['subject null', { subject: null }],
      ['state', { state: 'pending' }],
      ['disabled', { disabled: true }],
      ['seq', { seq: 7, prev: hex(randomBytes(32)) }],
      ['prev', { prev: hex(randomBytes(32)) }],
      ['origin', { origin: 'migrated' }],
      ['createdAt', { createdAt: r.createdAt + 1 }],
      ['an extra field', { note: 'x' }],
      ['a missing field', { origin: undefined }],
    ];
    const unsorted = encodeCbor(
      new Map([...(decodeCanonicalCbor(Buffer.from(key.record.record, 'base64')) as Map<string, unknown>)].reverse()),
    );
    const cases: Array<[string, string, unknown]> = [
      ...edits.map(([name, over]): [string, string, unknown] => [
        name,
        'keys.sign',
        signParams('edited-1', key.blob, edited(key.record, over)),
      ]),
      [
        'the same content, not canonically encoded',
        'keys.sign',
        signParams('edited-1', key.blob, { ...key.record, record: unsorted.toString('base64') }),
      ],
      ['a signature bit flipped', 'keys.sign', signParams('edited-1', key.blob, { ...key.record, signature: flip(key.record.signature) })],
      [
        "another record's signature",
        'keys.sign',
        signParams('edited-1', key.blob, { ...key.record, signature: h.defaultProject.signature }),
      ],
    ];
    await expectRefused(cases); // cold: nothing cached yet
    await h.signDigest(key, 1); // warm from here: the verified record and the key are cached
    await expectRefused(cases);
    // The project record too.
    const projectEdits: Array<[string, Record<string, unknown>]> = [
      ['projectId', { projectId: P2 }],
      ['allowedRequestTypes', { allowedRequestTypes: ['digest'] }],
      ['state', { state: 'disabled' }],
      ['seq', { seq: 1, prev: hex(randomBytes(32)) }],
      ['allowedOrigins', { allowedOrigins: ['https://evil.example'] }],
    ];
    await expectRefused(
      projectEdits.map(([name, over]) => [
        `project ${name}`,
        'keys.sign',
        signParams('edited-1', key.blob, key.record, edited(h.defaultProject, over)),
      ]),
    );
    await expect(h.signDigest(key, 2)).resolves.toMatchObject({ address: key.address });
  });

  it('refuses a genuine record naming another blob, with the blob the cache holds (the warm check)', async () => {
    // Beyond what a parent can make: the identity's record for this key id naming another blob. The cached
    // key was opened from its own blob, whose hash the cache entry keeps: the record must name that one.
    const key = await h.create('warm-1');
    const other = await h.create('warm-2');
    await h.signDigest(key, 1); // cached
    const r = keyRecordOf(key.record);
    const naming = (over: Partial<KeyRecord>) =>
      identity.sign({ ...r, seq: 1, prev: hex(recordDigest(Buffer.from(key.record.record, 'base64'))), ...over }).signed;
    await expectRefused([
      ['another blob', 'keys.sign', signParams('warm-1', key.blob, naming({ blobSha256: keyRecordOf(other.record).blobSha256 }))],
      ['another address', 'keys.sign', signParams('warm-1', key.blob, naming({ address: other.address }))],
      ['another subject', 'keys.sign', signParams('warm-1', key.blob, naming({ subject: 'someone' }))],
    ]);
  });

  it("refuses a genuine record for one key naming another key's blob (the cold check), before any KMS call", async () => {
    // Beyond what a parent can make: were the identity to sign a record for key x naming key y's blob, the
    // blob's own key id, address, project and subject must still be the record's, or y's key would sign as x.
    const x = await h.create('cold-x');
    const y = await h.create('cold-y', { subject: 'yves' });
    const rx = keyRecordOf(x.record);
    const ySha = keyRecordOf(y.record).blobSha256;
    const naming = (over: Partial<KeyRecord>) =>
      identity.sign({ ...rx, seq: 1, prev: hex(recordDigest(Buffer.from(x.record.record, 'base64'))), blobSha256: ySha, ...over }).signed;
    await expectRefused([
      ["y's blob under x's id and address", 'keys.sign', signParams('cold-x', y.blob, naming({}))],
      ["y's blob under x's id, y's address", 'keys.sign', signParams('cold-x', y.blob, naming({ address: y.address, subject: 'yves' }))],
      [
        "y's blob under y's id, another subject",
        'keys.sign',
        signParams('cold-y', y.blob, naming({ keyId: 'cold-y', address: y.address })),
      ],
    ]);
  });

  it('refuses a version 1 blob on a normal image without unsealing it, even under a record that names it', async () => {
    const secret = randomBytes(32);
    const address = addressOf(publicKeyOf(secret));
    const kmsPublicKey = createPublicKey({ key: Buffer.from(h.platform.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
    const v1 = encodeBlob(
      sealBlob(secret, { v: 1, alg: BLOB_ALG, kmsKeyArn: h.platform.keyArn, keyId: 'legacy-1', address }, { kmsPublicKey }),
    ).toString('base64');
    const other = await h.create('legacy-other');
    // What only the identity could sign: a record naming the version 1 blob. Even that does not open it here.
    const naming = identity.sign({
      ...keyRecordOf(other.record),
      keyId: 'legacy-1',
      address,
      blobSha256: hex(sha256(v1)),
    }).signed;
    await expectRefused([
      ['with another key record', 'keys.sign', signParams('legacy-1', v1, other.record)],
      ['with a genuine record naming it', 'keys.sign', signParams('legacy-1', v1, naming)],
    ]);
  });

  it('refuses a blob moved to another project or subject, and a project record swapped for another project', async () => {
    const key = await h.create('homed-1', { subject: 'alice' });
    const inP2 = await h.create('homed-2', { project: p2, subject: 'bob' });
    const blob = decodeBlobBase64(key.blob) as KeyBlob;
    const moved = (over: Partial<KeyBlob>) => encodeBlob({ ...blob, ...over }).toString('base64');
    const stranger2 = stranger.sign(projectRecordOf(p2)).signed;
    await expectRefused([
      ['blob re-homed to project p2', 'keys.sign', signParams('homed-1', moved({ projectId: P2 }), key.record)],
      ['blob re-homed to subject bob', 'keys.sign', signParams('homed-1', moved({ subject: 'bob' }), key.record)],
      ['blob re-homed to no subject', 'keys.sign', signParams('homed-1', moved({ subject: null }), key.record)],
      ['default key with the p2 project record', 'keys.sign', signParams('homed-1', key.blob, key.record, p2)],
      ['p2 key with the default project record', 'keys.sign', signParams('homed-2', inP2.blob, inP2.record, h.defaultProject)],
      ['p2 key with a p2 record of another identity', 'keys.sign', signParams('homed-2', inP2.blob, inP2.record, stranger2)],
      ['a key record as the project record', 'keys.sign', signParams('homed-1', key.blob, key.record, key.record)],
      ['the project record as the key record', 'keys.sign', signParams('homed-1', key.blob, h.defaultProject)],
    ]);
    await expect(h.signDigest(inP2, 1, p2)).resolves.toMatchObject({ address: inP2.address });
  });

  it('refuses a re-homed blob even under a genuine record for it: its AAD does not authenticate (one failed open)', async () => {
    // Defense in depth, beyond what a parent can do: were the identity to sign a record for the re-homed blob,
    // the blob's AAD would still bind it to its birth project and subject.
    const key = await h.create('aad-1', { subject: 'alice' });
    const moved = encodeBlob({ ...(decodeBlobBase64(key.blob) as KeyBlob), projectId: P2, subject: 'bob' }).toString('base64');
    const record = identity.sign({
      ...keyRecordOf(key.record),
      projectId: P2,
      subject: 'bob',
      blobSha256: hex(sha256(moved)),
    }).signed;
    const before = (await health()).counters;
    const err = await rejection(h.signDigest({ keyId: 'aad-1', blob: moved, record }, 1, p2));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE]);
    const after = (await health()).counters;
    expect([after.signs - before.signs, after.kmsCalls - before.kmsCalls, after.failedOpens - before.failedOpens]).toEqual([0, 1, 1]);
  });

  it("refuses records signed by another keystore's identity", async () => {
    const key = await h.create('stranger-1');
    await expectRefused([
      [
        'key record re-signed by another identity',
        'keys.sign',
        signParams('stranger-1', key.blob, stranger.sign(keyRecordOf(key.record)).signed),
      ],
      [
        'project record re-signed by another identity',
        'keys.sign',
        signParams('stranger-1', key.blob, key.record, stranger.sign(projectRecordOf(h.defaultProject)).signed),
      ],
      [
        'create in a project of another identity',
        'keys.create',
        { keyId: 'stranger-2', project: stranger.sign(projectRecordOf(p2)).signed, subject: null },
      ],
      [
        'setDisabled with a record of another identity',
        'keys.setDisabled',
        { record: stranger.sign(keyRecordOf(key.record)).signed, project: h.defaultProject, disabled: false },
      ],
    ]);
  });

  it('refuses an older record replayed while it runs; after a restart it is accepted (the documented limit)', async () => {
    const key = await h.create('replay-1');
    await h.signDigest(key, 1);
    const disabled = (await h.client.call('keys.setDisabled', { record: key.record, project: h.defaultProject, disabled: true })).record;
    // The enclave made seq 1 and forgot the cached key: seq 0 (active) is older than what it has seen.
    expect(keyRecordOf(disabled)).toMatchObject({
      seq: 1,
      disabled: true,
      prev: hex(recordDigest(Buffer.from(key.record.record, 'base64'))),
    });
    const stale = await rejection(h.signDigest(key, 2));
    expect([stale.code, stale.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    const off = await rejection(h.signDigest({ ...key, record: disabled }, 3));
    expect([off.code, off.message]).toEqual(['KEY_DISABLED', 'the key is disabled']);
    const enabled = (await h.client.call('keys.setDisabled', { record: disabled, project: h.defaultProject, disabled: false })).record;
    expect(keyRecordOf(enabled)).toMatchObject({
      seq: 2,
      disabled: false,
      prev: hex(recordDigest(Buffer.from(disabled.record, 'base64'))),
    });
    await expect(h.signDigest({ ...key, record: enabled }, 4)).resolves.toMatchObject({ address: key.address });
    await expectRefused([
      ['seq 0 after seq 2', 'keys.sign', signParams('replay-1', key.blob, key.record)],
      ['seq 1 (disabled) after seq 2', 'keys.sign', signParams('replay-1', key.blob, disabled)],
      ['setDisabled from seq 0 after seq 2', 'keys.setDisabled', { record: key.record, project: h.defaultProject, disabled: false }],
    ]);
    // A project's older record likewise: once the enclave has seen p3 disabled (seq 1), seq 0 is refused.
    const p3v0 = identity.sign(projectRecord({ projectId: P3, projectKey: 'pk_third-project-key-001' })).signed;
    const inP3 = await h.create('replay-p3', { project: p3v0 });
    const p3v1 = identity.sign({
      ...projectRecordOf(p3v0),
      state: 'disabled',
      seq: 1,
      prev: hex(recordDigest(Buffer.from(p3v0.record, 'base64'))),
    }).signed;
    const p3off = await rejection(h.signDigest(inP3, 1, p3v1));
    expect([p3off.code, p3off.message]).toEqual(['KEY_DISABLED', 'the project is disabled']);
    await expectRefused([
      ['project seq 0 after seq 1', 'keys.sign', signParams('replay-p3', inP3.blob, inP3.record, p3v0)],
      ['create in project seq 0 after seq 1', 'keys.create', { keyId: 'replay-p3b', project: p3v0, subject: null }],
    ]);

    // The high-water marks live in memory: a restart forgets them, and the older records are accepted again
    // until a newer one is seen. The day this is fixed (marks kept across restarts), this test says so.
    await h.restartEnclave();
    const replayed = await h.signDigest(key, 5);
    expect(await recoverAddress({ hash: replayed.hash, signature: replayed.signature })).toBe(key.address);
    await expect(h.signDigest(inP3, 2, p3v0)).resolves.toMatchObject({ address: inP3.address });
    peer.close();
    peer = new RawPeer();
    await peer.connect(h.runDir, ENCLAVE_ADDRESS);
  }, 60_000);

  it('substituted identity: an image whose PCR0 KMS does not allow never gets its identity, answers IDENTITY_UNAVAILABLE and exits', async () => {
    // Editing the configuration (here: another identity made for the same KMS key) changes the image's PCR0;
    // the simulated NSM is started with another PCR0 to model that, so the key policy refuses its Decrypt.
    const other = await genesisIdentity(h.platform, path.join(h.runDir, 'other'));
    const socket = path.join(h.runDir, 'nsm-other.sock');
    const nsm = startProgram('nsm-sim', [
      '--socket',
      socket,
      '--state-dir',
      path.join(h.runDir, 'nsm'), // the same simulated Nitro CA, so only the PCR0 differs
      '--pcr0',
      'ab'.repeat(48),
      '--parent-role-arn',
      PARENT_ROLE,
    ]);
    try {
      await nsm.waitForLog((e) => e.msg === 'NSM simulator ready');
      const kmsErrors = (await h.platform.stats()).Decrypt?.error ?? 0;
      await h.restartEnclave(
        {
          identity: {
            publicKey: other.publicKey,
            blob: other.blob,
            genesisDocument: other.attestation,
            defaultProject: other.defaultProject,
          },
          nsm: { kind: 'simulated', socket },
          identityBoot: { maxAttempts: 3, retryMs: 1_000 },
        },
        { wait: 'listening' },
      );
      const p = new RawPeer();
      await p.connect(h.runDir, ENCLAVE_ADDRESS);
      try {
        const hh = (await p.callJson('enclave.health', {})).result as EnclaveHealth;
        expect(hh.identity).toBe('unsealing');
        for (const [method, params] of [
          ['keys.create', { keyId: 'sub-1', project: other.defaultProject, subject: null }],
          ['identity.get', {}],
          ['attestation.get', {}],
        ] as const) {
          const res = await p.callJson(method, params);
          expect([method, res.error?.data, res.error?.message]).toEqual([
            method,
            { code: 'IDENTITY_UNAVAILABLE', retryable: true, reason: 'IDENTITY_UNAVAILABLE' },
            'the keystore identity is not available',
          ]);
        }
      } finally {
        p.close();
      }
      expect(await h.enclave.exited).toBe(3);
      const log = h.enclave.lines.join('\n');
      expect(log).not.toMatch(/"msg":"enclave ready"/);
      expect(log).toMatch(/could not unseal the keystore identity; giving up/);
      expect(log).toMatch(/"code":"KMS_ACCESS_DENIED"/);
      expect(((await h.platform.stats()).Decrypt?.error ?? 0) - kmsErrors).toBe(3);
    } finally {
      await nsm.stop();
      await h.restartEnclave(); // back to the platform's identity, for anything after this test
    }
  }, 60_000);
});

describe('what the records allow (real enclave bundle)', () => {
  let h: EnclaveHarness;
  let identity: KeystoreIdentity;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-states-'));
    identity = platformIdentity(h.platform);
  }, 90_000);

  afterAll(async () => {
    await h?.stop();
  });

  const health = (): Promise<EnclaveHealth> => h.client.call('enclave.health', {});
  /** The key's record moved on to `over` by the identity (a state the enclave has no method for yet). */
  const next = (s: SignedRecord, over: Partial<KeyRecord>): SignedRecord => {
    const r = keyRecordOf(s);
    return identity.sign({ ...r, seq: r.seq + 1, prev: hex(recordDigest(Buffer.from(s.record, 'base64'))), ...over }).signed;
  };

  it('disables and re-enables a key: each new record is the last one plus one, signed; no sign while disabled', async () => {
    const key = await h.create('states-1');
    await h.signDigest(key, 1);
    const before = await h.decryptCalls();
    const off = await h.client.call('keys.setDisabled', { record: key.record, project: h.defaultProject, disabled: true });
    const { record } = openKeyRecord(off.record, identityPublicKey(h.platform.identity.publicKey));
    const old = keyRecordOf(key.record);
    expect(record).toEqual({
      ...old,
      disabled: true,
      seq: 1,
      prev: hex(recordDigest(Buffer.from(key.record.record, 'base64'))),
      createdAt: expect.any(Number),
    });
    expect(record.createdAt).toBeGreaterThanOrEqual(old.createdAt);
    const err = await rejection(h.signDigest({ ...key, record: off.record }, 2));
    expect([err.code, err.message, err.retryable]).toEqual(['KEY_DISABLED', 'the key is disabled', false]);
    const on = await h.client.call('keys.setDisabled', { record: off.record, project: h.defaultProject, disabled: false });
    expect(keyRecordOf(on.record)).toMatchObject({ disabled: false, seq: 2, state: 'active' });
    await expect(h.signDigest({ ...key, record: on.record }, 3)).resolves.toMatchObject({ address: key.address });
    // Disabling forgot the cached key: the sign after re-enabling unsealed it again, with one Decrypt.
    expect((await h.decryptCalls()) - before).toBe(1);
  });

  it('a retired or cancelled key never signs and never changes; a pending one signs (a successor during recovery)', async () => {
    for (const state of ['retired', 'cancelled'] as const) {
      const key = await h.create(`gone-${state}`);
      const rec = next(key.record, { state });
      const before = await h.decryptCalls();
      const err = await rejection(h.signDigest({ ...key, record: rec }, 1));
      expect([err.code, err.message, err.retryable]).toEqual(['KEY_RETIRED', `the key is ${state}`, false]);
      const change = await rejection(h.client.call('keys.setDisabled', { record: rec, project: h.defaultProject, disabled: true }));
      expect(change.code).toBe('KEY_RETIRED');
      expect(await h.decryptCalls()).toBe(before);
    }
    const pendingKey = await h.create('states-pending');
    const pending = await h.signDigest({ ...pendingKey, record: next(pendingKey.record, { state: 'pending' }) }, 1);
    expect(pending.address).toBe(pendingKey.address);
  });

  it('signs only the request types the project allows (FORBIDDEN otherwise, before any KMS call)', async () => {
    const messagesOnly = identity.sign(projectRecord({ allowedRequestTypes: ['message'] })).signed;
    const key = await h.create('types-1', { project: messagesOnly });
    const before = await h.decryptCalls();
    const err = await rejection(h.signDigest(key, 1, messagesOnly));
    expect([err.code, err.message]).toEqual(['FORBIDDEN', 'the project does not allow digest requests']);
    expect(await h.decryptCalls()).toBe(before);
    const res = await h.client.call('keys.sign', {
      keyId: 'types-1',
      blob: key.blob,
      record: key.record,
      project: messagesOnly,
      request: { type: 'message', message: 'hello' },
    });
    expect(await recoverMessageAddress({ message: 'hello', signature: res.signature })).toBe(key.address);
  });

  it('makes no key in a disabled project, and signs with none of its keys', async () => {
    const active = identity.sign(projectRecord({ projectId: P3, projectKey: 'pk_third-project-key-001' })).signed;
    const key = await h.create('in-p3', { project: active });
    const disabled = identity.sign({
      ...projectRecordOf(active),
      state: 'disabled',
      seq: 1,
      prev: hex(recordDigest(Buffer.from(active.record, 'base64'))),
    }).signed;
    const create = await rejection(h.create('in-p3-2', { project: disabled }));
    expect([create.code, create.message]).toEqual(['KEY_DISABLED', 'the project is disabled']);
    const sign = await rejection(h.signDigest(key, 1, disabled));
    expect([sign.code, sign.message]).toEqual(['KEY_DISABLED', 'the project is disabled']);
  });

  it('keeps health counters of integrity failures apart from failed opens', async () => {
    const before = (await health()).counters;
    const key = await h.create('count-1');
    await rejection(h.signDigest({ ...key, record: { ...key.record, signature: flip(key.record.signature) } }, 1));
    const after = (await health()).counters;
    expect([after.integrityFailures - before.integrityFailures, after.failedOpens - before.failedOpens]).toEqual([1, 0]);
    expect(after.errors.KEY_INTEGRITY! - (before.errors.KEY_INTEGRITY ?? 0)).toBe(1);
  });
});

/** SHA-256 of a base64 blob's bytes. */
function sha256(b64: string): Buffer {
  return createHash('sha256').update(Buffer.from(b64, 'base64')).digest();
}

/** The base64 text with one bit of its decoded bytes flipped. */
function flip(b64: string): string {
  const b = Buffer.from(b64, 'base64');
  b[10] = (b[10] as number) ^ 1;
  return b.toString('base64');
}
