import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  BLOB_ALG,
  blobAad,
  decodeBlob,
  decodeBlobBase64,
  encodeBlob,
  type IdentityBlob,
  type KeyBlob,
  type SealedBlob,
} from '@nks/shared/blob';
import { canonicalCbor, decodeCbor, encodeCbor } from '@nks/shared/cbor';
import { KeyCache } from '../src/keys/cache';
import { openSealed, sealBlob, sealSecret } from '../src/keys/seal';
import { FailedOpens } from '../src/kms/failed-opens';
import { RecipientKeys } from '../src/kms/recipient';
import { NsmClient } from '../src/nsm/client';
import { DeviceNsmTransport, loadNsmAddon } from '../src/nsm/device';
import { ENCLAVE_CONFIG_DEFAULTS, parseEnclaveConfig } from '../src/config';
import { genesis } from '../src/identity/genesis';
import { SECURITY_EPOCH } from '@nks/shared/release';
import type { GenesisResult } from '@nks/shared/enclave-api';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS } from '@nks/shared/transport';
import { startProgram } from '../../test/support/process';
import { tempRunDir } from '@nks/shared-test/helpers';
import { fakeNsm } from './fake-nsm';
import { IDENTIFIER_SAMPLES } from '@nks/shared-test/identifier-samples';

const kms = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ARN = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const ADDRESS = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266';

describe('key cache', () => {
  let now = 1_000;
  const cache = () => new KeyCache({ ttlMs: 100, maxEntries: 2, now: () => now });
  const entry = (n: number) => ({
    secret: new Uint8Array(32).fill(n),
    address: ADDRESS as `0x${string}`,
    blob: `blob-${n}`,
    blobSha256: `0x${'00'.repeat(32)}`,
    projectId: 'default',
    subject: null,
  });

  it('expires entries after the TTL and zeroes them', () => {
    const c = cache();
    const e = entry(7);
    c.set('k', e);
    expect(c.get('k', 'blob-7')?.secret[0]).toBe(7);
    now += 101;
    expect(c.get('k', 'blob-7')).toBeUndefined();
    expect(e.secret.every((b) => b === 0)).toBe(true);
    expect(c.stats).toMatchObject({ hits: 1, misses: 1, expirations: 1, size: 0 });
  });

  it('evicts the least recently used entry beyond maxEntries, zeroing it', () => {
    const c = cache();
    const [a, b, d] = [entry(1), entry(2), entry(3)];
    c.set('a', a);
    c.set('b', b);
    c.get('a', 'blob-1'); // a is now more recently used than b
    c.set('d', d);
    expect(c.get('b', 'blob-2')).toBeUndefined();
    expect(b.secret.every((x) => x === 0)).toBe(true);
    expect(c.get('a', 'blob-1')).toBeDefined();
    expect(c.stats.evictions).toBe(1);
  });

  it('treats another blob under the same key id as a miss, and zeroes on forget, replace and clear', () => {
    const c = cache();
    const first = entry(4);
    c.set('k', first);
    expect(c.get('k', 'other-blob')).toBeUndefined();
    c.set('k', entry(5));
    expect(first.secret.every((x) => x === 0)).toBe(true);
    const second = c.get('k', 'blob-5');
    expect(c.forget('k')).toBe(true);
    expect(second?.secret.every((x) => x === 0)).toBe(true);
    const third = entry(6);
    c.set('z', third);
    now += 1000;
    expect(c.sweep()).toBe(1);
    expect(third.secret.every((x) => x === 0)).toBe(true);
    const fourth = entry(8);
    c.set('y', fourth);
    c.clear();
    expect(fourth.secret.every((x) => x === 0)).toBe(true);
  });

  it("drops and zeroes every key of a project (it was disabled), and only that project's", () => {
    const c = new KeyCache({ ttlMs: 100, maxEntries: 10, now: () => now });
    const [a, b, other] = [entry(1), entry(2), { ...entry(3), projectId: 'p_other' }];
    c.set('a', a);
    c.set('b', b);
    c.set('o', other);
    expect(c.forgetProject('default')).toBe(2);
    expect([a, b].every((e) => e.secret.every((x) => x === 0))).toBe(true);
    expect([c.get('a', 'blob-1'), c.get('b', 'blob-2'), c.get('o', 'blob-3')?.secret[0]]).toEqual([undefined, undefined, 3]);
    expect(c.forgetProject('default')).toBe(0);
  });
});

const KEY = { keyId: 'k1', address: ADDRESS, projectId: 'default', subject: null, kmsKeyArn: ARN, kmsPublicKey: kms.publicKey };

describe('sealing', () => {
  const { privateDecrypt, constants } = require('node:crypto');
  const dekOf = (b: SealedBlob) =>
    privateDecrypt({ key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, b.wrappedKey) as Buffer;

  it('round-trips a version 2 key blob and binds its header (key id, address, project, subject) as AAD', () => {
    const secret = new Uint8Array(32).fill(9);
    const blob = sealSecret(secret, KEY);
    const decoded = decodeBlob(encodeBlob(blob)) as KeyBlob;
    expect(decoded).toEqual(blob);
    expect(decoded).toMatchObject({ v: 2, kind: 'key', projectId: 'default', subject: null });
    const dek = dekOf(blob);
    expect(Buffer.from(openSealed(decoded, dek) ?? [])).toEqual(Buffer.from(secret));
    expect(openSealed({ ...decoded, keyId: 'k2' }, dek)).toBeNull();
    expect(openSealed({ ...decoded, projectId: 'p_0123456789abcdefgh' }, dek)).toBeNull();
    expect(openSealed({ ...decoded, subject: 'someone-else' }, dek)).toBeNull();
    expect(openSealed(decoded, Buffer.alloc(32))).toBeNull();
    expect(blobAad(blob)).toEqual(
      canonicalCbor({
        v: 2,
        kind: 'key',
        alg: BLOB_ALG,
        kmsKeyArn: ARN,
        keyId: 'k1',
        address: ADDRESS,
        projectId: 'default',
        subject: null,
      }),
    );
  });

  it('seals identity and version 1 blobs the same way, each opening only as what it was sealed as', () => {
    const secret = new Uint8Array(32).fill(5);
    const publicKey = `0x${'ab'.repeat(32)}`;
    const identity = sealBlob(
      secret,
      { v: 2, kind: 'identity', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey },
      { kmsPublicKey: kms.publicKey },
    );
    const v1 = sealBlob(secret, { v: 1, alg: BLOB_ALG, kmsKeyArn: ARN, keyId: 'k1', address: ADDRESS }, { kmsPublicKey: kms.publicKey });
    expect(decodeBlob(encodeBlob(identity))).toEqual(identity);
    expect(decodeBlob(encodeBlob(v1), { acceptV1: true })).toEqual(v1);
    expect(Buffer.from(openSealed(identity, dekOf(identity)) ?? [])).toEqual(Buffer.from(secret));
    expect(Buffer.from(openSealed(v1, dekOf(v1)) ?? [])).toEqual(Buffer.from(secret));
    // The same sealed bytes presented as another kind (or version) do not authenticate.
    const sealedOf = (b: SealedBlob) => ({ createdAt: b.createdAt, wrappedKey: b.wrappedKey, iv: b.iv, ciphertext: b.ciphertext });
    expect(
      openSealed(
        {
          ...sealedOf(identity),
          v: 2,
          kind: 'key',
          alg: BLOB_ALG,
          kmsKeyArn: ARN,
          keyId: 'k1',
          address: ADDRESS,
          projectId: 'default',
          subject: null,
        },
        dekOf(identity),
      ),
    ).toBeNull();
    expect(
      openSealed(
        {
          ...sealedOf(v1),
          v: 2,
          kind: 'key',
          alg: BLOB_ALG,
          kmsKeyArn: ARN,
          keyId: 'k1',
          address: ADDRESS,
          projectId: 'default',
          subject: null,
        },
        dekOf(v1),
      ),
    ).toBeNull();
    expect(openSealed({ ...sealedOf(v1), v: 2, kind: 'identity', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey }, dekOf(v1))).toBeNull();
    expect(() =>
      sealBlob(new Uint8Array(31), { v: 2, kind: 'identity', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey }, { kmsPublicKey: kms.publicKey }),
    ).toThrow('a sealed secret is 32 bytes');
  });

  it('encodes canonically (deterministic bytes; createdAt as an integer)', () => {
    const blob = sealSecret(new Uint8Array(32).fill(1), { ...KEY, createdAt: 1_795_000_000_000 });
    const a = encodeBlob(blob);
    const b = encodeBlob({ ...blob });
    expect(a).toEqual(b);
    expect(a.includes(Buffer.from('1b000001a1ee565e00', 'hex'))).toBe(true); // uint64, not a float
  });

  it.each<[string, (b: KeyBlob) => unknown, RegExp]>([
    ['a missing field', (b) => ({ ...b, iv: undefined }), /iv is not a byte string/],
    ['a short iv', (b) => ({ ...b, iv: Buffer.alloc(8) }), /iv is 8 bytes/],
    ['an unknown field', (b) => ({ ...b, extra: 1 }), /unknown field extra/],
    ['a bad address', (b) => ({ ...b, address: 'nope' }), /address/],
    ['another algorithm', (b) => ({ ...b, alg: 'RSA/CBC' }), /alg is not/],
  ])('rejects a blob with %s', (_name, mutate, message) => {
    const blob = sealSecret(new Uint8Array(32).fill(1), KEY);
    const m = mutate(blob) as Record<string, unknown>;
    const bytes = canonicalCbor(
      Object.fromEntries(
        Object.entries(m)
          .filter(([, v]) => v !== undefined)
          .map(([k, v]) => [k, k === 'createdAt' ? BigInt(v as number) : v]),
      ),
    );
    expect(() => decodeBlob(bytes)).toThrow(message);
  });

  it('decodes only the canonical encoding: another encoding of the same blob is refused', () => {
    const blob = sealSecret(new Uint8Array(32).fill(1), KEY);
    const canonical = encodeBlob(blob);
    expect(decodeBlob(canonical)).toEqual(blob);
    const fields = [...(decodeCbor(canonical) as Map<string, unknown>)];
    const variants: Array<[string, Buffer]> = [
      ['unsorted keys', encodeCbor(new Map(fields.reverse()))],
      ['a duplicate key', Buffer.concat([Buffer.from([0xaa]), canonical.subarray(1), encodeCbor('keyId'), encodeCbor('k1')])],
      ['a tag around it', Buffer.concat([Buffer.from([0xd8, 0x18]), canonical])],
      ['trailing bytes', Buffer.concat([canonical, Buffer.from([0])])],
    ];
    const refusal = (bytes: Buffer) => {
      try {
        decodeBlob(bytes);
        return 'accepted';
      } catch (err) {
        return (err as Error).message;
      }
    };
    for (const [what, bytes] of variants)
      expect({ what, refusal: refusal(bytes) }).toEqual({ what, refusal: 'key blob is malformed: not canonical CBOR' });
  });
});

describe('recipient key', () => {
  it('reuses its document only within the bounded age and rotates the key on schedule', async () => {
    let now = 0;
    const nsm = fakeNsm();
    const r = new RecipientKeys(nsm.client, { rotateMs: 10_000, documentMaxAgeMs: 1_000, now: () => now });
    const [a, b] = await Promise.all([r.current(), r.current()]);
    expect(a.document).toEqual(b.document);
    expect(nsm.attests()).toBe(1);
    now = 999;
    expect((await r.current()).document.toString()).toBe('doc-1');
    now = 1_000;
    const c = await r.current();
    expect(c.document.toString()).toBe('doc-2');
    expect(c.privateKey).toBe(a.privateKey); // same key, new document
    now = 10_000;
    const d = await r.current();
    expect(d.privateKey).not.toBe(a.privateKey);
    expect(r.rotations).toBe(2);
  });

  it('retires a key at once: leases of it open nothing, and the next call gets a new key and document', async () => {
    const r = new RecipientKeys(fakeNsm().client, ENCLAVE_CONFIG_DEFAULTS.recipient);
    const first = await r.current();
    const held = await r.current(); // another call in flight with the same key
    expect(held.sameKey(first)).toBe(true);
    expect(r.retire(first)).toBe(true);
    expect(r.retire(held)).toBe(false); // already retired
    expect(first.privateKey).toBeNull();
    expect(held.privateKey).toBeNull();
    const next = await r.current();
    expect(next.sameKey(first)).toBe(false);
    expect(next.privateKey).not.toBeNull();
    expect(next.document.toString()).not.toBe(first.document.toString());
    expect([r.rotations, r.retirements]).toEqual([2, 1]);
  });
});

describe('failed-open limit', () => {
  it('cools down only above maxFailures within the window, counts refusals in the one total, and recovers', () => {
    let now = 0;
    const f = new FailedOpens({ maxFailures: 2, windowMs: 1_000, cooldownMs: 500 }, () => now);
    f.record();
    now = 600;
    f.record();
    now = 1_100; // the first failure left the window: two in the window, not above the limit
    f.record();
    expect([f.refusing(), f.total]).toEqual([false, 3]);
    now = 1_200;
    f.record(); // three within the window
    expect(f.coolingDown).toBe(true);
    expect([f.refusing(), f.refusing(), f.total]).toEqual([true, true, 6]);
    now = 1_700;
    expect([f.refusing(), f.total]).toEqual([false, 6]);
  });
});

describe('NSM device addon', () => {
  it('builds and loads', () => {
    const addon = loadNsmAddon();
    expect(typeof addon.open).toBe('function');
  });

  it('fails clearly when the device is missing', () => {
    expect(() => new DeviceNsmTransport('/nonexistent/nsm')).toThrow(
      'NSM device /nonexistent/nsm does not exist: this is not a Nitro Enclave',
    );
  });

  it('fails clearly when the device is not an NSM', async () => {
    const t = new DeviceNsmTransport('/dev/null');
    try {
      await expect(t.request(Buffer.from('6947657452616e646f6d', 'hex'))).rejects.toThrow(
        /the device is not an NSM: it rejected the NSM ioctl/,
      );
      await expect(t.request(Buffer.alloc(4097))).rejects.toThrow(/exceeds 4096/);
      const client = new NsmClient(t);
      await expect(client.getRandom()).rejects.toMatchObject({ code: 'ATTESTATION_FAILED' });
    } finally {
      t.close();
    }
  });

  it('names every place it looked when the addon cannot be loaded', () => {
    expect(() => loadNsmAddon(['/nope/nsm.node'])).toThrow(/NSM addon .* could not be loaded[\s\S]*\/nope\/nsm.node/);
  });
});

describe('enclave configuration', () => {
  const valid = { kmsKeyArn: ARN, kmsPublicKey: kms.publicKey.export({ type: 'spki', format: 'der' }).toString('base64') };

  it('fills every optional setting with its exported default', () => {
    const { kmsKeyArn, kmsPublicKey, kmsPublicKeyObject, ...rest } = parseEnclaveConfig(valid);
    expect([kmsKeyArn, kmsPublicKey, kmsPublicKeyObject.asymmetricKeyType]).toEqual([valid.kmsKeyArn, valid.kmsPublicKey, 'rsa']);
    expect(rest).toEqual(ENCLAVE_CONFIG_DEFAULTS);
    // The parent's defaults dial the same addresses (parent/test/units.test.ts checks its side).
    expect([ENCLAVE_CONFIG_DEFAULTS.listen, ENCLAVE_CONFIG_DEFAULTS.kmsProxy]).toEqual([
      DEFAULT_ENCLAVE_ADDRESS,
      DEFAULT_KMS_PROXY_ADDRESS,
    ]);
  });

  it('takes exactly the KMS key ARNs the shared definition does', () => {
    const { good, bad } = IDENTIFIER_SAMPLES.kmsKeyArn;
    for (const arn of good) expect(parseEnclaveConfig({ ...valid, kmsKeyArn: arn }).kmsKeyArn).toBe(arn);
    for (const arn of bad)
      expect(() => parseEnclaveConfig({ ...valid, kmsKeyArn: arn })).toThrow(/config.kmsKeyArn: expected a KMS key ARN/);
  });

  describe('identity, mode and security epoch', () => {
    let genesisOut: GenesisResult;
    let other: GenesisResult;
    beforeAll(async () => {
      genesisOut = await genesis({ nsm: fakeNsm().client, kmsKeyArn: ARN, kmsPublicKey: kms.publicKey }, Buffer.from('nonce'));
      other = await genesis({ nsm: fakeNsm().client, kmsKeyArn: ARN, kmsPublicKey: kms.publicKey }, Buffer.from('nonce'));
    });
    const identityOf = (g: GenesisResult) => ({
      publicKey: g.publicKey,
      blob: g.blob,
      genesisDocument: g.attestation,
      defaultProject: g.defaultProject,
    });

    it('takes a genesis output as the identity, in a normal or a migration image; a migration image needs one', () => {
      const identity = identityOf(genesisOut);
      expect(parseEnclaveConfig({ ...valid, identity }).identity).toEqual(identity);
      expect(parseEnclaveConfig({ ...valid, identity, mode: 'migration' }).mode).toBe('migration');
      expect(parseEnclaveConfig(valid).identity).toBeUndefined(); // a genesis image
      expect(() => parseEnclaveConfig({ ...valid, mode: 'migration' })).toThrow(
        /config.identity: a migration image needs the identity \(the genesis output\)/,
      );
      expect(() => parseEnclaveConfig({ ...valid, identity, mode: 'genesis' })).toThrow(/config.mode/);
    });

    it("refuses a security epoch below this release's, and names the field", () => {
      expect(SECURITY_EPOCH).toBe(2);
      expect(parseEnclaveConfig({ ...valid, securityEpoch: 3 }).securityEpoch).toBe(3);
      expect(parseEnclaveConfig(valid).securityEpoch).toBe(SECURITY_EPOCH);
      expect(() => parseEnclaveConfig({ ...valid, securityEpoch: 1 })).toThrow(
        /config.securityEpoch: expected at least 2, this release's security epoch/,
      );
      expect(() => parseEnclaveConfig({ ...valid, securityEpoch: 2.5 })).toThrow(/config.securityEpoch/);
    });

    it.each<[string, (i: ReturnType<typeof identityOf>) => unknown, RegExp]>([
      [
        'a public key that is not 32 bytes of hex',
        (i) => ({ ...i, publicKey: '0x1234' }),
        /config.identity.publicKey: expected a 32-byte Ed25519/,
      ],
      [
        "another identity's public key",
        (i) => ({ ...i, publicKey: other.publicKey }),
        /config.identity.blob: sealed for another public key/,
      ],
      ['a blob that is not a blob', (i) => ({ ...i, blob: 'AAAA' }), /config.identity.blob: not a sealed blob/],
      [
        'a key blob as the identity blob',
        (i) => ({ ...i, blob: encodeBlob(sealSecret(new Uint8Array(32).fill(1), KEY)).toString('base64') }),
        /config.identity.blob: not an identity blob/,
      ],
      [
        'an identity blob under another KMS key',
        (i) => ({
          ...i,
          blob: encodeBlob({ ...(decodeBlobBase64(i.blob) as IdentityBlob), kmsKeyArn: ARN.replace(/key\/.*/, 'key/other') }).toString(
            'base64',
          ),
        }),
        /config.identity.blob: sealed under another KMS key/,
      ],
      [
        'the default project of another identity',
        (i) => ({ ...i, defaultProject: other.defaultProject }),
        /config.identity.defaultProject: not a project record signed/,
      ],
      ['a missing genesis document', (i) => ({ ...i, genesisDocument: undefined }), /config.identity.genesisDocument/],
      ['an unknown field', (i) => ({ ...i, seed: 'AAAA' }), /config.identity: unknown field\(s\) "seed"/],
    ])('refuses an identity with %s, naming the field', (_name, mutate, message) => {
      expect(() => parseEnclaveConfig({ ...valid, identity: mutate(identityOf(genesisOut)) })).toThrow(message);
    });

    it.each<[string, object, RegExp]>([
      ['no attempts', { maxAttempts: 0 }, /config.identityBoot.maxAttempts/],
      ['a retry delay below 10 ms', { retryMs: 5 }, /config.identityBoot.retryMs/],
      ['an unknown field', { attempts: 3 }, /config.identityBoot: unknown field\(s\) "attempts"/],
    ])('refuses identityBoot with %s', (_name, identityBoot, message) => {
      expect(() => parseEnclaveConfig({ ...valid, identityBoot })).toThrow(message);
    });
  });

  it.each<[string, object, RegExp]>([
    ['a missing ARN', { kmsPublicKey: valid.kmsPublicKey }, /config.kmsKeyArn/],
    ['a malformed ARN', { ...valid, kmsKeyArn: 'arn:aws:s3:::bucket' }, /expected a KMS key ARN/],
    ['an unknown field', { ...valid, debug: true }, /unknown field\(s\) "debug"/],
    ['a public key that is not DER', { ...valid, kmsPublicKey: 'AAAA' }, /not a base64 DER SubjectPublicKeyInfo/],
    [
      'an EC public key',
      {
        ...valid,
        kmsPublicKey: generateKeyPairSync('ec', { namedCurve: 'P-256' })
          .publicKey.export({ type: 'spki', format: 'der' })
          .toString('base64'),
      },
      /RSA key of at least 2048 bits/,
    ],
    ['a zero TTL', { ...valid, cache: { ttlMs: 0, maxEntries: 1 } }, /config.cache.ttlMs/],
    ['a bad listen address', { ...valid, listen: 'tcp://0.0.0.0:5000' }, /config.listen: expected vsock:\/\/CID:PORT/],
    [
      'a listen address the transport cannot use',
      { ...valid, listen: 'vsock://16:4294967295' },
      /config.listen: expected vsock:\/\/CID:PORT/,
    ],
  ])('rejects %s', (_name, raw, message) => {
    expect(() => parseEnclaveConfig(raw)).toThrow(message);
  });

  it('stops the program with exit code 2 and the reason', async () => {
    const dir = tempRunDir();
    try {
      const file = path.join(dir, 'enclave.json');
      fs.writeFileSync(file, JSON.stringify({ ...valid, cache: { ttlMs: -1 } }));
      const bad = startProgram('enclave', ['--config', file]);
      expect(await bad.exited).toBe(2);
      expect(bad.lines.join('\n')).toMatch(/enclave: invalid configuration .*config.cache.ttlMs/);

      const missing = startProgram('enclave', ['--config', path.join(dir, 'absent.json')]);
      expect(await missing.exited).toBe(2);
      expect(missing.lines.join('\n')).toMatch(/cannot read configuration .*absent.json: ENOENT/);

      fs.writeFileSync(file, JSON.stringify(valid)); // valid, but the default NSM is the real device
      const noDevice = startProgram('enclave', ['--config', file]);
      expect(await noDevice.exited).toBe(2);
      expect(noDevice.lines.join('\n')).toMatch(/NSM device \/dev\/nsm does not exist/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
