import { createHash, createPrivateKey, sign, webcrypto, X509Certificate } from 'node:crypto';
import {
  AttestationError,
  AWS_NITRO_ROOT_G1_PEM,
  AWS_NITRO_ROOT_G1_SHA256,
  decodeAttestationDocument,
  verifyAttestation,
  type VerifyOptions,
} from '../src/attestation';
import { decodeCbor, encodeCbor } from '../src/cbor';
import { SimulatedNitroCa, type DocumentSigner } from '../../sim/src/nsm/ca';
import { x509 } from '../../sim/src/nsm/x509';
import { signAttestationDocument, PROTECTED_HEADER } from '../../sim/src/nsm/document';
import { sigStructure } from '../src/attestation';
import realDoc from './fixtures/aws-nitro-attestation-debug.json';
import { failureOf, SAMPLE_PCR0, sampleDocumentFields } from './attestation-helpers';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof AttestationError) return e.code;
    throw e;
  }
  return 'OK';
}

const P384 = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' } as const;
const newKeys = async () => await webcrypto.subtle.generateKey(P384, true, ['sign', 'verify']);

/** A certificate like `template` (same serial, names as encoded, validity and extensions) for `publicKey`, signed with `signingKey`. */
async function lookalike(template: Buffer, publicKey: webcrypto.CryptoKey, signingKey: webcrypto.CryptoKey): Promise<Buffer> {
  const t = new x509.X509Certificate(template);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: t.serialNumber,
    subject: t.subjectName,
    issuer: t.issuerName,
    notBefore: t.notBefore,
    notAfter: t.notAfter,
    publicKey,
    signingKey,
    signingAlgorithm: P384,
    extensions: t.extensions,
  });
  return Buffer.from(cert.rawData);
}

/**
 * `chain` (root first) with certificate `link` replaced by a look-alike for a new key, signed by yet another key
 * instead of its issuer's (with `rightKey`, by its own key: self-signed, for a look-alike root); the
 * certificates below it are re-issued under it, correctly signed, so that the forged signature is the chain's
 * only defect. Returns a document signer for the forged leaf's key.
 */
async function forgeChain(chain: Buffer[], link: number, o: { rightKey?: boolean } = {}): Promise<DocumentSigner & { link: Buffer }> {
  const out = chain.slice(0, link);
  let keys = await newKeys();
  const signingKey = o.rightKey ? keys.privateKey : (await newKeys()).privateKey;
  out.push(await lookalike(chain[link] as Buffer, keys.publicKey, signingKey));
  for (let i = link + 1; i < chain.length; i++) {
    const next = await newKeys();
    out.push(await lookalike(chain[i] as Buffer, next.publicKey, keys.privateKey));
    keys = next;
  }
  const privateKey = createPrivateKey({
    key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
    format: 'der',
    type: 'pkcs8',
  });
  return { certificate: out[out.length - 1] as Buffer, cabundle: out.slice(0, -1), privateKey, link: out[link] as Buffer };
}

describe('a real AWS Nitro attestation document', () => {
  const bytes = Buffer.from(realDoc.documentHex, 'hex');
  const at = new Date(realDoc.verifiedAtMs);

  it('pins the AWS root by its published fingerprint', () => {
    expect(createHash('sha256').update(new X509Certificate(AWS_NITRO_ROOT_G1_PEM).raw).digest('hex')).toBe(AWS_NITRO_ROOT_G1_SHA256);
  });

  // A debug-mode document (PCR0 all zeros) from November 2024: its certificates expired long ago.
  const evidence: VerifyOptions = { at: 'document', allowDebug: true, allowUnpinned: true };

  it('is refused by default as expired, checked at the current time, with the reason and the way to check it as evidence', () => {
    const before = Date.now();
    const err = failureOf(() => verifyAttestation(bytes, { expectedPcrs: { 0: Buffer.alloc(48) }, allowDebug: true }));
    expect(err.code).toBe('CERT_EXPIRED');
    // The first certificate of the chain that has expired (the regional CA, 20 days) is named.
    expect(err.message).toMatch(/^CA certificate 1 \(.*\) expired at 2024-12-03T08:32:55\.000Z \(checked at (\S+), the current time; /);
    const checked = Date.parse(/checked at (\S+),/.exec(err.message)?.[1] as string);
    expect(checked).toBeGreaterThanOrEqual(before);
    expect(err.message).toContain("at: 'document', --at document");
    // Explicitly 'now' is the same; a pinned all-zero PCR0 is still debug mode.
    expect(codeOf(() => verifyAttestation(bytes, { ...evidence, at: 'now' }))).toBe('CERT_EXPIRED');
    expect(codeOf(() => verifyAttestation(bytes, { at: 'document', expectedPcrs: { 0: Buffer.alloc(48) } }))).toBe('DEBUG_MODE');
    expect(codeOf(() => verifyAttestation(bytes, { at: 'document' }))).toBe('PCR_REQUIRED');
  });

  it('verifies against the AWS root at its own time when asked, says so, and decodes its fields', () => {
    const v = verifyAttestation(bytes, evidence);
    expect(v.checkedAt).toEqual({ time: new Date(1731627989450), basis: 'document' });
    expect([v.pinned, v.debug]).toEqual([false, true]);
    expect(v.rootFingerprint).toBe(AWS_NITRO_ROOT_G1_SHA256);
    expect(v.document.moduleId).toBe('i-0f73a4b4cb74cc9f2-enc0192e4188fef781d');
    expect(v.document.timestamp).toBe(1731627989450);
    expect(v.document.pcrs.size).toBe(16);
    expect(v.document.pcrs.get(0)?.equals(Buffer.alloc(48))).toBe(true); // debug mode
    expect(v.document.userData).toHaveLength(32);
    expect(v.document.publicKey).toBeUndefined(); // CBOR null means absent
    expect(v.chainSubjects).toHaveLength(5);
    const explicit = verifyAttestation(bytes, { ...evidence, at });
    expect(explicit.checkedAt).toEqual({ time: at, basis: 'explicit' });
  });

  it('accepts the tagged COSE_Sign1 form as well', () => {
    const tagged = Buffer.concat([Buffer.from([0xd2]), bytes]);
    expect(codeOf(() => verifyAttestation(tagged, evidence))).toBe('OK');
  });

  it("refuses a signing certificate forged under the AWS intermediate's names and key identifier, signed by another key", async () => {
    const { document } = decodeAttestationDocument(bytes);
    const chain = [...document.cabundle, document.certificate];
    const forged = await forgeChain(chain, chain.length - 1);
    const leaf = new X509Certificate(forged.link);
    // Names, validity and every extension (authority key identifier included) copied from the real leaf.
    expect([leaf.subject, leaf.issuer, leaf.validTo]).toEqual([
      new X509Certificate(document.certificate).subject,
      new X509Certificate(document.certificate).issuer,
      new X509Certificate(document.certificate).validTo,
    ]);
    expect(leaf.checkIssued(new X509Certificate(chain[chain.length - 2] as Buffer))).toBe(true);
    const pcrs = new Map(document.pcrs);
    const forgedDoc = signAttestationDocument(
      { moduleId: document.moduleId, timestamp: document.timestamp, pcrs, userData: Buffer.from('chosen by the forger') },
      forged,
    );
    const err = failureOf(() => verifyAttestation(forgedDoc, evidence)); // the real AWS root, at the document's own time
    expect([err.code, err.message]).toEqual([
      'CHAIN_BROKEN',
      expect.stringMatching(/^the signing certificate \(.*\) has a signature that does not verify with its issuer's key$/),
    ]);
  });

  it('fails with its own reason for each kind of defect', () => {
    expect(codeOf(() => verifyAttestation(bytes, { ...evidence, at: new Date() }))).toBe('CERT_EXPIRED');
    expect(codeOf(() => verifyAttestation(bytes, { ...evidence, at: new Date(realDoc.verifiedAtMs - 3 * 3600_000) }))).toBe(
      'CERT_NOT_YET_VALID',
    );
    expect(codeOf(() => verifyAttestation(bytes, { ...evidence, maxAgeMs: 60_000 }))).toBe('STALE');

    const { cose, document } = decodeAttestationDocument(bytes);
    const rebuild = (payload: Buffer, signature = cose.signature) => encodeCbor([cose.protectedHeader, new Map(), payload, signature]);

    const sig = Buffer.from(cose.signature);
    sig[10] = (sig[10] as number) ^ 1;
    expect(codeOf(() => verifyAttestation(rebuild(cose.payload, sig), evidence))).toBe('BAD_SIGNATURE');

    const payload = decodeCbor(cose.payload) as Map<string, unknown>;
    payload.set('module_id', 'i-0f73a4b4cb74cc9f2-enc0192e4188fef781e');
    expect(codeOf(() => verifyAttestation(rebuild(encodeCbor(payload)), evidence))).toBe('BAD_SIGNATURE');

    const shortBundle = decodeCbor(cose.payload) as Map<string, unknown>;
    shortBundle.set('cabundle', document.cabundle.slice(0, 3));
    expect(codeOf(() => verifyAttestation(rebuild(encodeCbor(shortBundle)), evidence))).toBe('CHAIN_BROKEN');

    expect(codeOf(() => verifyAttestation(Buffer.from('0000', 'hex'), evidence))).toBe('MALFORMED');
    expect(codeOf(() => verifyAttestation(encodeCbor([1, 2, 3]), evidence))).toBe('MALFORMED');
    expect(
      codeOf(() => verifyAttestation(encodeCbor([encodeCbor(new Map([[1, -7]])), new Map(), cose.payload, cose.signature]), evidence)),
    ).toBe('UNSUPPORTED_ALGORITHM');
  });
});

describe('documents from the simulated NSM CA', () => {
  let ca: SimulatedNitroCa;
  let signer: DocumentSigner;
  const { rsa, fields } = sampleDocumentFields();

  beforeAll(async () => {
    ca = await SimulatedNitroCa.open(null);
    signer = await ca.signer();
  });

  const opts = (o: VerifyOptions = {}): VerifyOptions => ({ trustedRoots: [ca.rootPem], at: new Date(), allowUnpinned: true, ...o });

  it('verify against the simulator root, with nonce, user data and PCR checks', () => {
    const doc = signAttestationDocument(fields(), signer);
    expect(doc[0]).toBe(0x84); // untagged COSE_Sign1, as the NSM emits
    const v = verifyAttestation(
      doc,
      opts({
        maxAgeMs: 60_000,
        expectedNonce: Buffer.from('nonce-1'),
        expectedUserData: Buffer.from('user-data'),
        expectedPcrs: { 0: SAMPLE_PCR0.toString('hex'), 3: Buffer.alloc(48, 3) },
        requirePublicKey: true,
      }),
    );
    expect(v.document.publicKey?.equals(rsa.publicKey.export({ type: 'spki', format: 'der' }))).toBe(true);
    expect(v.chainSubjects.map((s) => s.split('CN=')[1])).toEqual([
      expect.stringMatching(/^sim\.nitro-enclaves/),
      expect.stringMatching(/us-east-1/),
      expect.stringMatching(/zonal/),
      expect.stringMatching(/^i-/),
      expect.stringMatching(/-enc/),
    ]);
  });

  it('accepts an indefinite-length payload map', () => {
    const definite = decodeCbor(signAttestationDocument(fields(), signer)) as [Buffer, unknown, Buffer, Buffer];
    const payload = definite[2];
    expect(payload[0]).toBe(0xa9); // map(9)
    const indefinite = Buffer.concat([Buffer.from([0xbf]), payload.subarray(1), Buffer.from([0xff])]);
    const cose = { protectedHeader: PROTECTED_HEADER, payload: indefinite, signature: Buffer.alloc(0) };
    const signature = sign('sha384', sigStructure(cose), { key: signer.privateKey, dsaEncoding: 'ieee-p1363' });
    expect(codeOf(() => verifyAttestation(encodeCbor([PROTECTED_HEADER, new Map(), indefinite, signature]), opts()))).toBe('OK');
  });

  it('fail with their own reason: wrong root, expired leaf, stale, future, nonce, user data, PCR, no key', async () => {
    const doc = signAttestationDocument(fields(), signer);
    expect(codeOf(() => verifyAttestation(doc, { allowUnpinned: true }))).toBe('UNTRUSTED_ROOT');
    const other = await SimulatedNitroCa.open(null);
    expect(codeOf(() => verifyAttestation(doc, { trustedRoots: [other.rootPem], allowUnpinned: true }))).toBe('UNTRUSTED_ROOT');

    const expired = await ca.signerWithLeaf(new Date(Date.now() - 4 * 3600_000), new Date(Date.now() - 3600_000));
    expect(codeOf(() => verifyAttestation(signAttestationDocument(fields(), expired), opts()))).toBe('CERT_EXPIRED');

    const old = signAttestationDocument(fields({ timestamp: Date.now() - 10 * 60_000 }), signer);
    expect(codeOf(() => verifyAttestation(old, opts({ maxAgeMs: 5 * 60_000 })))).toBe('STALE');
    const future = signAttestationDocument(fields({ timestamp: Date.now() + 10 * 60_000 }), signer);
    expect(codeOf(() => verifyAttestation(future, opts({ maxAgeMs: 5 * 60_000 })))).toBe('FROM_THE_FUTURE');

    expect(codeOf(() => verifyAttestation(doc, opts({ expectedNonce: Buffer.from('nonce-2') })))).toBe('NONCE_MISMATCH');
    expect(codeOf(() => verifyAttestation(doc, opts({ expectedUserData: Buffer.from('other') })))).toBe('USER_DATA_MISMATCH');
    expect(codeOf(() => verifyAttestation(doc, opts({ expectedPcrs: { 0: 'ff'.repeat(48) } })))).toBe('PCR_MISMATCH');
    expect(codeOf(() => verifyAttestation(doc, opts({ expectedPcrs: { 20: 'ff'.repeat(48) } })))).toBe('PCR_MISMATCH');
    const keyless = signAttestationDocument(fields({ publicKey: undefined }), signer);
    expect(codeOf(() => verifyAttestation(keyless, opts({ requirePublicKey: true })))).toBe('MISSING_PUBLIC_KEY');
  });

  it('refuses certificates that break the profile: a CA as signer, a leaf without digitalSignature, pathLen', async () => {
    const caLeaf = await ca.issue('leaf', new Date(), undefined, { ca: true, pathLen: 0, keyUsage: 32 | 1 });
    const caSigner = await ca.signerUsing(caLeaf);
    expect(codeOf(() => verifyAttestation(signAttestationDocument(fields(), caSigner), opts()))).toBe('CERT_CONSTRAINTS');
    const noSig = await ca.issue('leaf', new Date(), undefined, { keyUsage: 2 });
    const noSigSigner = await ca.signerUsing(noSig);
    expect(codeOf(() => verifyAttestation(signAttestationDocument(fields(), noSigSigner), opts()))).toBe('CERT_CONSTRAINTS');

    // An extra CA below the instance CA (pathLen 0) breaks the instance CA's path length constraint.
    const extraCa = await ca.issue('leaf', new Date(), undefined, { ca: true, keyUsage: 32 });
    const alg = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' } as const;
    const leafKeys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: '01',
      subject: 'CN=below-extra-ca',
      issuer: extraCa.cert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3600_000),
      publicKey: leafKeys.publicKey,
      signingKey: extraCa.keys.privateKey,
      signingAlgorithm: alg,
      extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(1, false)],
    });
    const base = await ca.signerUsing(extraCa);
    const tooDeep: DocumentSigner = {
      certificate: Buffer.from(leaf.rawData),
      cabundle: [...base.cabundle, base.certificate],
      privateKey: createPrivateKey({
        key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey)),
        format: 'der',
        type: 'pkcs8',
      }),
    };
    const err = (() => {
      try {
        verifyAttestation(signAttestationDocument(fields(), tooDeep), opts());
      } catch (e) {
        return e as AttestationError;
      }
      throw new Error('expected a failure');
    })();
    expect(err.code).toBe('CERT_CONSTRAINTS');
    expect(err.message).toMatch(/has pathLen 2 but 3 CA certificate\(s\) below it/);
  });

  it('refuses a certificate that names the real issuer but was signed by another key, at every link of the chain', async () => {
    const real = await ca.signer();
    const chain = [...real.cabundle, real.certificate]; // root, regional, zonal, instance, leaf
    const doc = (signer: DocumentSigner) => signAttestationDocument(fields(), signer);
    // Control: the same look-alike construction, signed by the right keys all the way down from a root we
    // trust, verifies; so the only defect in the forgeries below is the one signature made with another key.
    const control = await forgeChain(chain, 0, { rightKey: true });
    expect(codeOf(() => verifyAttestation(doc(control), opts({ trustedRoots: [control.cabundle[0] as Buffer] })))).toBe('OK');
    for (let link = 1; link < chain.length; link++) {
      const forged = await forgeChain(chain, link);
      // Same issuer and subject names (byte for byte), serial, validity and extensions as the real certificate.
      const [original, fake] = [new X509Certificate(chain[link] as Buffer), new X509Certificate(forged.link)];
      expect([fake.subject, fake.issuer, fake.serialNumber, fake.validTo]).toEqual([
        original.subject,
        original.issuer,
        original.serialNumber,
        original.validTo,
      ]);
      expect(fake.checkIssued(new X509Certificate(chain[link - 1] as Buffer))).toBe(true); // the name check alone accepts it
      const err = failureOf(() => verifyAttestation(doc(forged), opts()));
      expect([link, err.code, err.message]).toEqual([
        link,
        'CHAIN_BROKEN',
        expect.stringMatching(/has a signature that does not verify with its issuer's key$/),
      ]);
    }
  });

  it('rejects malformed payload fields by name', () => {
    const bad = (mutate: (m: Map<string, unknown>) => void) => {
      const [p, u, payload] = decodeCbor(signAttestationDocument(fields(), signer)) as [Buffer, Map<unknown, unknown>, Buffer, Buffer];
      const m = decodeCbor(payload) as Map<string, unknown>;
      mutate(m);
      const np = encodeCbor(m);
      const signature = sign('sha384', sigStructure({ protectedHeader: p, payload: np, signature: Buffer.alloc(0) }), {
        key: signer.privateKey,
        dsaEncoding: 'ieee-p1363',
      });
      try {
        verifyAttestation(encodeCbor([p, u, np, signature]), opts());
      } catch (e) {
        return (e as Error).message;
      }
      return 'OK';
    };
    expect(bad((m) => m.set('digest', 'SHA256'))).toMatch(/digest/);
    expect(bad((m) => m.delete('module_id'))).toMatch(/module_id/);
    expect(bad((m) => m.set('pcrs', new Map([[0, Buffer.alloc(47)]])))).toMatch(/PCR0/);
    expect(bad((m) => m.set('timestamp', -5))).toMatch(/timestamp/);
    expect(bad((m) => m.set('cabundle', []))).toMatch(/cabundle/);
    expect(bad((m) => m.set('user_data', Buffer.alloc(1025)))).toMatch(/user_data/);
  });
});
