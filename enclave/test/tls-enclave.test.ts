/**
 * The wallet routes' TLS key through the enclave program on the simulated platform, the test standing where
 * the parent would (docs/TLS.md): `tls.create` makes a key without KMS, signed, with a CSR and an attestation
 * of it; `tls.install` serves a chain from the operator's CA; and every way a parent could try to make the
 * enclave serve a key it knows, or a chain that is not the key's, is refused before any KMS call. After a
 * restart, installing the stored blob again costs exactly one Decrypt.
 */
import fs from 'node:fs';
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { verifyAttestation } from '@nks/shared/attestation';
import { tlsUserData } from '@nks/shared/attestation/user-data';
import { BLOB_ALG, decodeBlobBase64, decodeTlsBlob, encodeBlob, type TlsBlob } from '@nks/shared/blob';
import type { EnclaveHealth, TlsCreateResult } from '@nks/shared/enclave-api';
import { identityPublicKey } from '@nks/shared/records';
import { TLS_CHAIN_MAX_BYTES, tlsBlobDigest } from '@nks/shared/tls-identity';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { x509 } from '../../sim/src/nsm/x509';
import { findLeaks, recoverSecret } from '../../test/support/secrets';
import { generateP256Secret, p256PublicKeyOf, p256Spki } from '../src/crypto/p256';
import { KeystoreIdentity } from '../src/identity/keystore-identity';
import { sealBlob } from '../src/keys/seal';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { UNSEAL_REFUSED_MESSAGE } from '../src/kms/unseal';
import { startEnclaveHarness, type EnclaveHarness } from './harness';
import { issueForCsr, issueLeaf, makeAuthority, ownKeyPair, SUBJECT_ALT_NAME, type TestAuthority } from './tls-ca';

const NAMES = ['wallets.example.com', 'wallets-eu.example.com'];
const DAY = 24 * 3600_000;

describe('tls.create and tls.install on the enclave program', () => {
  let h: EnclaveHarness;
  let root: TestAuthority;
  let intermediate: TestAuthority;
  let created: TlsCreateResult;
  let chain: string;
  const blobs: string[] = [];

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-tls-'), { failedOpens: { maxFailures: 1000, windowMs: 60_000, cooldownMs: 60_000 } });
    root = await makeAuthority('operator root');
    intermediate = await makeAuthority('operator intermediate', root);
  }, 90_000);

  afterAll(async () => {
    await h?.stop();
  });

  const health = (): Promise<EnclaveHealth> => h.client.call('enclave.health', {});
  const create = async (names = NAMES) => {
    const res = await h.client.call('tls.create', { names });
    blobs.push(res.blob);
    return res;
  };
  const install = (p: { blob: string; blobSignature: string; chain: string }) => h.client.call('tls.install', p);
  const chainFor = async (c: TlsCreateResult) => (await issueForCsr(intermediate, c.csr)) + intermediate.pem;
  /** What the parent would see and the enclave would spend: proxy requests, emulator Decrypts, counters. */
  const snapshot = async () => {
    const hh = await health();
    return {
      proxy: h.proxyRequests.length,
      decrypts: await h.decryptCalls(),
      kmsCalls: hh.counters.kmsCalls,
      ownKmsCalls: hh.counters.identityKmsCalls,
      integrityFailures: hh.counters.integrityFailures,
      failedOpens: hh.counters.failedOpens,
      tls: hh.tls,
    };
  };

  it('serves tls.* in a normal image; health reports no TLS installed and an idle wallets server', async () => {
    const hello = await h.client.call('enclave.hello', { protocolVersion: 3 });
    expect(hello.features).toEqual(expect.arrayContaining(['tls.create', 'tls.install']));
    const hh = await health();
    expect(hh.tls).toEqual({ state: 'none', publicKey: null, names: [], notBefore: null, notAfter: null, fingerprint256: null });
    expect(hh.wallets).toEqual({ connections: 0, connectionsRefused: 0, connectionsEvicted: 0, handshakeFailures: 0, requests: {} });
  });

  it('creates a key with no KMS call: a tls blob the identity signed, a CSR naming the key, an attestation of it', async () => {
    const before = await snapshot();
    created = await create();
    const after = await snapshot();
    expect(after).toEqual(before);

    const spki = Buffer.from(created.publicKey, 'base64');
    const blob = decodeTlsBlob(created.blob);
    expect(blob).toMatchObject({ v: 2, kind: 'tls', alg: BLOB_ALG, kmsKeyArn: h.platform.keyArn });
    expect(p256Spki(Buffer.from(blob.publicKey.slice(2), 'hex'))).toEqual(spki);
    const identity = identityPublicKey(h.platform.identity.publicKey);
    expect(verify(null, tlsBlobDigest(Buffer.from(created.blob, 'base64')), identity, Buffer.from(created.blobSignature, 'base64'))).toBe(
      true,
    );

    const csr = new x509.Pkcs10CertificateRequest(created.csr);
    expect(await csr.verify()).toBe(true);
    expect(Buffer.from(csr.publicKey.rawData)).toEqual(spki);
    expect(csr.subject).toBe(`CN=${NAMES[0]}`);
    const san = csr.getExtension(SUBJECT_ALT_NAME) as x509.SubjectAlternativeNameExtension;
    expect(san.names.items.map((n) => `${n.type}:${n.value}`)).toEqual(NAMES.map((n) => `dns:${n}`));

    const v = verifyAttestation(Buffer.from(created.attestation, 'base64'), {
      trustedRoots: [fs.readFileSync(h.platform.rootPem, 'utf8')],
      at: new Date(),
      maxAgeMs: 60_000,
      expectedPcrs: { 0: h.platform.pcr0 },
      expectedUserData: tlsUserData(spki),
    });
    expect(v.document.userData).toEqual(tlsUserData(spki));
    expect(v.document.nonce).toBeUndefined();
  });

  it('refuses names that are not lower-case DNS names, clearly', async () => {
    for (const names of [[], ['*.example.com'], ['A.example'], ['a.example', 'a.example']]) {
      const err = await rejection(h.client.call('tls.create', { names }));
      expect(err.code).toBe('INVALID_PARAMS');
    }
  });

  it('installs the key with a chain from the operator CA, from memory (no KMS call); health shows it', async () => {
    chain = await chainFor(created);
    const before = await snapshot();
    const status = await install({ blob: created.blob, blobSignature: created.blobSignature, chain });
    const after = await snapshot();
    expect({ ...after, tls: null }).toEqual({ ...before, tls: null });
    const leaf = new x509.X509Certificate(chain.slice(0, chain.indexOf('-----END CERTIFICATE-----') + 25));
    expect(status).toEqual({
      state: 'installed',
      publicKey: created.publicKey,
      names: NAMES,
      notBefore: leaf.notBefore.toISOString(),
      notAfter: leaf.notAfter.toISOString(),
      fingerprint256: Buffer.from(await leaf.getThumbprint('SHA-256')).toString('hex'),
    });
    expect(after.tls).toEqual(status);
  });

  describe('refuses a blob that is not one this enclave made, with the one KEY_INTEGRITY and before any KMS call', () => {
    /** The parent's own P-256 key, sealed to the (public) KMS key as a tls blob: it knows the private key. */
    const parentsOwn = () => {
      const secret = generateP256Secret();
      const point = p256PublicKeyOf(secret) as Buffer;
      const kmsPublicKey = createPublicKey({ key: Buffer.from(h.platform.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
      const blob = encodeBlob(
        sealBlob(
          secret,
          { v: 2, kind: 'tls', alg: BLOB_ALG, kmsKeyArn: h.platform.keyArn, publicKey: `0x${point.toString('hex')}` },
          { kmsPublicKey },
        ),
      );
      return { blob, spki: p256Spki(point) };
    };

    it.each<[string, () => Promise<{ blob: string; blobSignature: string; chain: string }>]>([
      [
        'a blob the parent sealed itself, with no identity signature (random bytes, one of its own)',
        async () => {
          const own = parentsOwn();
          return {
            blob: own.blob.toString('base64'),
            blobSignature: KeystoreIdentity.fromSeed(randomBytes(32)).signTlsBlob(own.blob),
            chain: (await issueLeaf(intermediate, own.spki, NAMES)) + intermediate.pem,
          };
        },
      ],
      [
        "a blob the parent sealed itself, with the identity's signature of another blob",
        async () => {
          const own = parentsOwn();
          return {
            blob: own.blob.toString('base64'),
            blobSignature: created.blobSignature,
            chain: (await issueLeaf(intermediate, own.spki, NAMES)) + intermediate.pem,
          };
        },
      ],
      [
        "the genuine blob with the identity's signature of another genuine tls blob",
        async () => {
          const other = await create(['other.example.com']);
          return { blob: created.blob, blobSignature: other.blobSignature, chain };
        },
      ],
      [
        'a user key blob presented as a tls blob',
        async () => {
          const key = await h.create('tls-not-a-key');
          return { blob: key.blob, blobSignature: created.blobSignature, chain };
        },
      ],
      [
        "the identity blob with the identity's genuine (genesis) signature of it",
        async () => ({ blob: h.platform.genesis.blob, blobSignature: h.platform.genesis.blobSignature, chain }),
      ],
      [
        'the genuine blob with one bit of its ciphertext flipped',
        async () => {
          const b = decodeBlobBase64(created.blob) as TlsBlob;
          const ciphertext = Buffer.from(b.ciphertext);
          ciphertext[5] = (ciphertext[5] as number) ^ 0x10;
          return { blob: encodeBlob({ ...b, ciphertext }).toString('base64'), blobSignature: created.blobSignature, chain };
        },
      ],
      ['garbage for a blob', async () => ({ blob: randomBytes(200).toString('base64'), blobSignature: created.blobSignature, chain })],
    ])('%s', async (_what, make) => {
      const p = await make();
      const before = await snapshot();
      const err = await rejection(install(p));
      expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
      const after = await snapshot();
      expect(after.integrityFailures - before.integrityFailures).toBe(1);
      expect({ ...after, integrityFailures: 0 }).toEqual({ ...before, integrityFailures: 0 });
      expect(after.tls.publicKey).toBe(created.publicKey);
    });
  });

  describe('refuses a chain that is not for this key or not usable, saying what is wrong with the chain', () => {
    it.each<[string, () => Promise<string>, RegExp]>([
      [
        'a leaf for another key (the parent’s own, certified by the same CA)',
        async () => (await issueLeaf(intermediate, (await ownKeyPair()).spki, NAMES)) + intermediate.pem,
        /^the certificate chain starts with a certificate for another key/,
      ],
      [
        'an expired leaf',
        async () =>
          (await issueLeaf(intermediate, Buffer.from(created.publicKey, 'base64'), NAMES, {
            notBefore: new Date(Date.now() - 10 * DAY),
            notAfter: new Date(Date.now() - DAY),
          })) + intermediate.pem,
        /^the certificate chain has a leaf that expired at \d{4}-\d\d-\d\dT/,
      ],
      [
        'a chain out of order (root before the intermediate)',
        async () => (await issueForCsr(intermediate, created.csr)) + root.pem + intermediate.pem,
        /^the certificate chain is out of order or incomplete: certificate 1 is not issued by certificate 2/,
      ],
      [
        'the intermediate first',
        async () => intermediate.pem + (await issueForCsr(intermediate, created.csr)),
        /^the certificate chain starts with a certificate for another key/,
      ],
      [
        'garbage PEM',
        async () => '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n',
        /^the certificate chain: certificate 1 is not an X\.509 certificate$/,
      ],
      ['not PEM at all', async () => 'hello', /^the certificate chain holds text that is not a PEM CERTIFICATE block$/],
      [
        'nine certificates',
        async () => chain + intermediate.pem.repeat(7),
        /^the certificate chain has 9 certificates, more than the 8 allowed$/,
      ],
      ['over 64 KiB', async () => chain + ' '.repeat(TLS_CHAIN_MAX_BYTES), /^params.chain: expected a PEM chain of at most 65536 bytes$/],
    ])('%s', async (_what, make, message) => {
      const bad = await make();
      const before = await snapshot();
      const err = await rejection(install({ blob: created.blob, blobSignature: created.blobSignature, chain: bad }));
      expect(err.code).toBe('INVALID_PARAMS');
      expect(err.message).toMatch(message);
      // Nothing about the key: the blob was genuine, and the reason is the chain's.
      expect(err.message).not.toMatch(/unseal|secret|private|KMS/i);
      expect(await snapshot()).toEqual(before);
    });
  });

  it('after a restart installs the stored blob with exactly one Decrypt, and again with none', async () => {
    await h.restartEnclave();
    const booted = await snapshot();
    expect(booted.tls.state).toBe('none');
    await install({ blob: created.blob, blobSignature: created.blobSignature, chain });
    const first = await snapshot();
    expect([first.decrypts - booted.decrypts, first.proxy - booted.proxy]).toEqual([1, 1]);
    expect([first.ownKmsCalls - booted.ownKmsCalls, first.kmsCalls - booted.kmsCalls]).toEqual([1, 0]);
    expect(first.tls).toMatchObject({ state: 'installed', publicKey: created.publicKey, names: NAMES });
    // The parent installs the current key again after each reconnect: the enclave holds it, no KMS call.
    await install({ blob: created.blob, blobSignature: created.blobSignature, chain });
    const again = await snapshot();
    expect({ ...again }).toEqual({ ...first });
  });

  it('answers a forged KMS answer to a tls unseal with the one refusal, keeping what is installed', async () => {
    const other = await create(['forged.example.com']);
    const otherChain = await chainFor(other);
    await h.restartEnclave();
    await install({ blob: created.blob, blobSignature: created.blobSignature, chain });
    const before = await snapshot();
    h.forge = (p) => ({ ciphertextForRecipient: randomBytes(400).toString('base64'), keyId: p.kmsKeyArn });
    try {
      const err = await rejection(install({ blob: other.blob, blobSignature: other.blobSignature, chain: otherChain }));
      expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE]);
    } finally {
      h.forge = null;
    }
    const after = await snapshot();
    expect([after.failedOpens - before.failedOpens, after.ownKmsCalls - before.ownKmsCalls]).toEqual([1, 1]);
    expect(after.tls.publicKey).toBe(created.publicKey);
    // The genuine answer then installs it.
    expect((await install({ blob: other.blob, blobSignature: other.blobSignature, chain: otherChain })).publicKey).toBe(other.publicKey);
  });

  it('never sends or logs a TLS private key', async () => {
    const secrets = blobs.map((b) => recoverSecret(b, h.platform.kmsStateFile));
    expect(secrets.length).toBeGreaterThanOrEqual(3);
    expect(findLeaks([secrets[0] as Buffer], { probe: (secrets[0] as Buffer).toString('hex') })).toEqual(['secret #0 in probe']);
    expect(findLeaks(secrets, { 'enclave outbound frames': h.recorded.bytes(), 'enclave logs': h.enclave.lines.join('\n') })).toEqual([]);
  });
});
