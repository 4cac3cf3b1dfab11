/**
 * Attacks on tls.create / tls.install from an attacker review, the test standing where a compromised parent
 * would, against the real enclave bundle (dist/enclave.js) over simulated vsock (docs/SECURITY.md):
 * - a chain the enclave will not serve (OpenSSL refuses it, its leaf's validity cannot be read or is not now,
 *   the leaf is malformed) is refused with INVALID_PARAMS before any KMS call, however often it is sent;
 * - a malformed leaf is the chain's fault, never an INTERNAL error;
 * - the tls key, blob and signature stay in their own domain (attestation, signatures, key blobs);
 * - the keys held in memory stay bounded, and a chain for another of the enclave's keys costs no Decrypt.
 * tls-enclave.test.ts has the flows and the other refusals.
 */
import fs from 'node:fs';
import { randomBytes, verify, webcrypto, X509Certificate } from 'node:crypto';
import { verifyAttestation } from '@nks/shared/attestation';
import { tlsUserData } from '@nks/shared/attestation/user-data';
import type { EnclaveHealth, TlsCreateResult } from '@nks/shared/enclave-api';
import { identityBlobDigest, identityPublicKey, recordDigest } from '@nks/shared/records';
import { tlsBlobDigest } from '@nks/shared/tls-identity';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { x509 } from '../../sim/src/nsm/x509';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { startEnclaveHarness, type EnclaveHarness } from './harness';
import { issueForCsr, issueLeaf, makeAuthority, type TestAuthority } from './tls-ca';

const NAMES = ['wallets.example.com'];
const DAY = 24 * 3600_000;
const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const pemOf = (der: Buffer) => `${new x509.X509Certificate(der).toString('pem')}\n`;
const invalid = (why: string) => ['INVALID_PARAMS', `the certificate chain ${why}`];

describe('tls.create and tls.install against a compromised parent', () => {
  let h: EnclaveHarness;
  let root: TestAuthority;
  let intermediate: TestAuthority;
  /** A key the enclave made before a restart: installing it would need a Decrypt. */
  let created: TlsCreateResult;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-tls-review-'), {
      failedOpens: { maxFailures: 1000, windowMs: 60_000, cooldownMs: 60_000 },
    });
    root = await makeAuthority('operator root');
    intermediate = await makeAuthority('operator intermediate', root);
    created = await h.client.call('tls.create', { names: NAMES });
    await h.restartEnclave();
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
  });

  const health = (): Promise<EnclaveHealth> => h.client.call('enclave.health', {});
  const spkiOf = (c: TlsCreateResult) => Buffer.from(c.publicKey, 'base64');
  const install = (c: TlsCreateResult, chain: string) =>
    h.client.call('tls.install', { blob: c.blob, blobSignature: c.blobSignature, chain });
  /** What a refused install must leave unchanged: Decrypts asked of KMS, the enclave's own count of them, INTERNAL errors, TLS. */
  const snapshot = async () => {
    const hh = await health();
    return {
      decrypts: await h.decryptCalls(),
      ownKmsCalls: hh.counters.identityKmsCalls,
      internal: hh.counters.errors.INTERNAL ?? 0,
      tls: hh.tls,
    };
  };
  /** The leaf's DER as the intermediate issues it for the key, to be altered (a one-certificate chain). */
  const leafDer = async (c: TlsCreateResult, v = {}) =>
    Buffer.from(new x509.X509Certificate(await issueLeaf(intermediate, spkiOf(c), NAMES, v)).rawData);
  /** A certificate for `publicKey` signed by `issuer` with `hash` (the CA's own choice, e.g. SHA-1). */
  const certify = async (issuer: TestAuthority, publicKey: webcrypto.CryptoKey, hash: string, ca: boolean) =>
    x509.X509CertificateGenerator.create({
      serialNumber: randomBytes(8).toString('hex'),
      subject: ca ? 'CN=weak intermediate' : `CN=${NAMES[0]}`,
      issuer: issuer.cert.subject,
      notBefore: new Date(Date.now() - DAY),
      notAfter: new Date(Date.now() + 30 * DAY),
      publicKey,
      signingKey: issuer.keys.privateKey,
      signingAlgorithm: { name: 'ECDSA', hash },
      extensions: ca
        ? [new x509.BasicConstraintsExtension(true, 0, true), await x509.SubjectKeyIdentifierExtension.create(publicKey)]
        : [new x509.SubjectAlternativeNameExtension(NAMES.map((value) => ({ type: 'dns' as const, value })))],
    });
  const leafKey = () => webcrypto.subtle.importKey('spki', spkiOf(created), ECDSA_P256, true, ['verify']);

  describe('refuses a chain OpenSSL will not serve before any KMS call, every time it is sent', () => {
    it.each<[string, () => Promise<string>]>([
      [
        'a leaf signed with SHA-1',
        async () => `${(await certify(intermediate, await leafKey(), 'SHA-1', false)).toString('pem')}\n${intermediate.pem}`,
      ],
      [
        'an intermediate signed with SHA-1',
        async () => {
          const keys = await webcrypto.subtle.generateKey({ ...ECDSA_P256, hash: 'SHA-256' }, true, ['sign', 'verify']);
          const weak = { cert: await certify(root, keys.publicKey, 'SHA-1', true), keys, pem: '' };
          weak.pem = `${weak.cert.toString('pem')}\n`;
          return (await issueLeaf(weak, spkiOf(created), NAMES)) + weak.pem + root.pem;
        },
      ],
    ])('%s', async (_what, make) => {
      const chain = await make();
      const before = await snapshot();
      for (let i = 0; i < 3; i++) {
        const err = await rejection(install(created, chain));
        expect([err.code, err.message]).toEqual(invalid('is not usable for TLS (OpenSSL: ca md too weak)'));
      }
      expect(await snapshot()).toEqual(before);
    });
  });

  describe("reads the leaf's validity as OpenSSL does, refusing it before any KMS call", () => {
    /** Overwrites the 13-byte UTCTime of the leaf's notBefore or notAfter with bytes no parser should accept. */
    const unreadable = (der: Buffer, which: 'notBefore' | 'notAfter') => {
      const at = new x509.X509Certificate(der)[which];
      const utcTime = Buffer.concat([Buffer.from('170d', 'hex'), Buffer.from(`${at.toISOString().slice(2, 19).replace(/[-T:]/g, '')}Z`)]);
      const i = der.indexOf(utcTime);
      expect(i).toBeGreaterThan(0);
      Buffer.from('4901010000Z00').copy(der, i + 2);
      return der;
    };

    it.each<[string, () => Promise<Buffer>, unknown[]]>([
      [
        'a notBefore OpenSSL cannot read (a lenient parser makes it 1899)',
        async () => unreadable(await leafDer(created), 'notBefore'),
        invalid('has a leaf whose notBefore cannot be read'),
      ],
      [
        'a notAfter OpenSSL cannot read',
        async () => unreadable(await leafDer(created), 'notAfter'),
        invalid('has a leaf whose notAfter cannot be read'),
      ],
    ])('refuses %s', async (_what, make, expected) => {
      const der = await make();
      const openssl = new X509Certificate(der);
      expect([openssl.validFrom, openssl.validTo]).toContain('Bad time value'); // what clients make of it
      const before = await snapshot();
      const err = await rejection(install(created, pemOf(der)));
      expect([err.code, err.message]).toEqual(expected);
      expect(await snapshot()).toEqual(before);
    });

    it('refuses a leaf not valid yet, naming when it will be', async () => {
      const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 + DAY);
      const der = await leafDer(created, { notBefore, notAfter: new Date(notBefore.getTime() + 30 * DAY) });
      const before = await snapshot();
      const err = await rejection(install(created, pemOf(der)));
      expect([err.code, err.message]).toEqual(invalid(`has a leaf that is not valid before ${notBefore.toISOString()}`));
      expect(await snapshot()).toEqual(before);
    });
  });

  it.each<[string, (der: Buffer) => void]>([
    ['a subjectAltName that is not GeneralNames', (d) => void (d[d.indexOf(Buffer.from('0603551d11', 'hex')) + 9] = 0x05)],
    ['a public key on an unknown curve', (d) => void (d[d.indexOf(Buffer.from('06082a8648ce3d030107', 'hex')) + 9] = 0x7f)],
  ])('refuses a leaf with %s as a chain not well formed (not INTERNAL), before any KMS call', async (_what, alter) => {
    const der = await leafDer(created);
    alter(der);
    const before = await snapshot();
    const err = await rejection(install(created, pemOf(der)));
    expect([err.code, err.message]).toEqual(invalid('is not well formed'));
    expect(await snapshot()).toEqual(before);
  });

  it('attests a tls key with its SPKI under the tls tag only: no public_key (no KMS Recipient use), no nonce', async () => {
    const c = await h.client.call('tls.create', { names: ['a.example.com'] });
    const v = verifyAttestation(Buffer.from(c.attestation, 'base64'), {
      trustedRoots: [fs.readFileSync(h.platform.rootPem, 'utf8')],
      at: new Date(),
      maxAgeMs: 60_000,
      expectedPcrs: { 0: h.platform.pcr0 },
      expectedUserData: tlsUserData(spkiOf(c)),
    });
    expect([v.document.publicKey, v.document.nonce]).toEqual([undefined, undefined]);
  });

  it("signs a tls blob under its own domain: the signature verifies as no record's and no identity blob's", async () => {
    const id = identityPublicKey(h.platform.identity.publicKey);
    const blob = Buffer.from(created.blob, 'base64');
    const sig = Buffer.from(created.blobSignature, 'base64');
    expect(verify(null, tlsBlobDigest(blob), id, sig)).toBe(true);
    expect(verify(null, recordDigest(blob), id, sig)).toBe(false);
    expect(verify(null, identityBlobDigest(blob), id, sig)).toBe(false);
  });

  it('refuses a tls blob under a genuine key record for keys.sign with the one KEY_INTEGRITY, no KMS call', async () => {
    const key = await h.create('tls-review-key');
    const before = await h.decryptCalls();
    const err = await rejection(
      h.client.call('keys.sign', {
        keyId: key.keyId,
        blob: created.blob,
        record: key.record,
        project: h.defaultProject,
        request: { type: 'digest', digest: `0x${'11'.repeat(32)}` },
      }),
    );
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    expect(await h.decryptCalls()).toBe(before);
  });

  it('keeps few keys in memory however many creates: an older one costs one Decrypt to install', async () => {
    const first = await h.client.call('tls.create', { names: NAMES });
    await Promise.all(Array.from({ length: 20 }, () => h.client.call('tls.create', { names: NAMES })));
    const before = await h.decryptCalls();
    await install(first, (await issueForCsr(intermediate, first.csr)) + intermediate.pem);
    expect(await h.decryptCalls()).toBe(before + 1);
    expect((await health()).tls.publicKey).toBe(first.publicKey);
  });

  it("refuses the enclave's genuine blob with the chain of another of its keys (the other create's CSR) before KMS", async () => {
    const a = await h.client.call('tls.create', { names: NAMES });
    const b = await h.client.call('tls.create', { names: NAMES });
    await h.restartEnclave();
    const before = await snapshot();
    const err = await rejection(install(a, (await issueForCsr(intermediate, b.csr)) + intermediate.pem));
    expect(err.code).toBe('INVALID_PARAMS');
    expect(err.message).toMatch(/^the certificate chain starts with a certificate for another key/);
    expect(await snapshot()).toEqual(before);
  });
});
