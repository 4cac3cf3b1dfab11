/**
 * Attestation verification (verify.ts) and birth attestations (birth.ts, user-data.ts) at each check's edge:
 * certificates that break the Nitro profile one rule at a time (no extensions, no basicConstraints, a CA
 * without keyCertSign, a leaf on another curve or an RSA key, an issuer named differently but signing with the
 * right key, unparsable DER), validity and freshness at exactly their limits, several trusted roots, PCRs given
 * as 0x-prefixed hex, and every refusal's code and message. Written for mutation testing (npm run
 * test:mutation): attestation.test.ts covers each failure's code; these pin the rest.
 */
import { createPrivateKey, generateKeyPairSync, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import { verifyAttestation, type VerifyOptions } from '../src/attestation';
import { verifyBirthAttestation } from '../src/attestation/birth';
import { birthContent, birthUserData, taggedUserData, USER_DATA_TAGS } from '../src/attestation/user-data';
import { SimulatedNitroCa, type DocumentSigner, type Issued } from '../../sim/src/nsm/ca';
import { signAttestationDocument, type DocumentFields } from '../../sim/src/nsm/document';
import { x509 } from '../../sim/src/nsm/x509';
import { failureOf, SAMPLE_PCR0, sampleDocumentFields } from './attestation-helpers';
import { createHash } from 'node:crypto';

const ALG = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' } as const;
const F = x509.KeyUsageFlags;
const HOUR = 3600_000;

const refusal = (fn: () => unknown) => {
  const e = failureOf(fn);
  return [e.code, e.message];
};

const pkcs8 = async (k: webcrypto.CryptoKey): Promise<KeyObject> =>
  createPrivateKey({ key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', k)), format: 'der', type: 'pkcs8' });

interface CertSpec {
  subject: string;
  /** Defaults to the issuer certificate's subject. */
  issuerName?: string;
  extensions: x509.Extension[];
  notBefore?: Date;
  notAfter?: Date;
  /** Defaults to a new P-384 key. */
  publicKey?: webcrypto.CryptoKey;
}

/** A certificate under `issuer` (signed with its key), with exactly the given names and extensions. */
async function certUnder(issuer: Issued, spec: CertSpec): Promise<Issued> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '0a',
    subject: spec.subject,
    issuer: spec.issuerName ?? issuer.cert.subject,
    notBefore: spec.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: spec.notAfter ?? new Date(Date.now() + HOUR),
    publicKey: spec.publicKey ?? keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: ALG,
    extensions: spec.extensions,
  });
  return { cert, keys };
}

const caExtensions = (pathLen?: number) => [
  new x509.BasicConstraintsExtension(true, pathLen, true),
  new x509.KeyUsagesExtension(F.keyCertSign | F.cRLSign | F.digitalSignature, true),
];
const leafExtensions = () => [
  new x509.BasicConstraintsExtension(false, undefined, true),
  new x509.KeyUsagesExtension(F.digitalSignature, true),
];

describe('attestation verification at the edges of each check', () => {
  let ca: SimulatedNitroCa;
  let signer: DocumentSigner;
  let zonal: Issued;
  const { fields } = sampleDocumentFields();
  const opts = (o: VerifyOptions = {}): VerifyOptions => ({ trustedRoots: [ca.rootPem], at: new Date(), allowUnpinned: true, ...o });

  /**
   * A document whose chain is root, regional, a fresh zonal CA, then `instance` (a spec, under that zonal) and
   * `leaf` (under the instance); the leaf's key signs.
   */
  async function chainDoc(
    spec: { instance?: Partial<CertSpec>; leaf?: Partial<CertSpec>; leafKey?: KeyObject; leafPublicKey?: webcrypto.CryptoKey },
    over: Partial<DocumentFields> = {},
  ) {
    const instance = await certUnder(zonal, { subject: 'CN=instance.test', extensions: caExtensions(0), ...spec.instance });
    const leaf = await certUnder(instance, {
      subject: 'CN=leaf.test',
      extensions: leafExtensions(),
      ...spec.leaf,
      ...(spec.leafPublicKey ? { publicKey: spec.leafPublicKey } : {}),
    });
    const s: DocumentSigner = {
      certificate: Buffer.from(leaf.cert.rawData),
      cabundle: [...signer.cabundle.slice(0, 2), Buffer.from(zonal.cert.rawData), Buffer.from(instance.cert.rawData)],
      privateKey: spec.leafKey ?? (await pkcs8(leaf.keys.privateKey)),
    };
    return { doc: signAttestationDocument(fields(over), s), leaf, instance };
  }

  beforeAll(async () => {
    ca = await SimulatedNitroCa.open(null);
    signer = await ca.signer();
    zonal = await ca.issue('zonal', new Date());
  });

  it('accepts the control chain built the same way, and reports its subjects joined with commas', async () => {
    const { doc } = await chainDoc({});
    const v = verifyAttestation(doc, opts());
    expect(v.chainSubjects.slice(3)).toEqual(['CN=instance.test', 'CN=leaf.test']);
    expect(v.chainSubjects[0]).toMatch(/^[A-Z]+=[^\n]+, CN=sim\.nitro-enclaves$/);
    expect(v.rootFingerprint).toBe(createHash('sha256').update(ca.rootDer).digest('hex'));
  });

  it('accepts a leaf without basicConstraints (only a CA needs it)', async () => {
    const { doc } = await chainDoc({ leaf: { extensions: [new x509.KeyUsagesExtension(F.digitalSignature, true)] } });
    expect(verifyAttestation(doc, opts()).chainSubjects).toHaveLength(5);
  });

  it.each<[string, () => Partial<CertSpec>, string]>([
    ['no extensions at all', () => ({ extensions: [] }), 'is not marked as a CA (basicConstraints)'],
    [
      'no basicConstraints',
      () => ({ extensions: [new x509.KeyUsagesExtension(F.keyCertSign, true)] }),
      'is not marked as a CA (basicConstraints)',
    ],
    [
      'basicConstraints without cA',
      () => ({
        extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(F.keyCertSign, true)],
      }),
      'is not marked as a CA (basicConstraints)',
    ],
    [
      'keyUsage without keyCertSign',
      () => ({
        extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(F.digitalSignature | F.cRLSign, true)],
      }),
      'lacks keyUsage keyCertSign',
    ],
    ['no keyUsage', () => ({ extensions: [new x509.BasicConstraintsExtension(true, 0, true)] }), 'lacks keyUsage keyCertSign'],
  ])('refuses an intermediate CA with %s', async (_what, instance, message) => {
    const { doc } = await chainDoc({ instance: instance() });
    expect(refusal(() => verifyAttestation(doc, opts()))).toEqual(['CERT_CONSTRAINTS', `CA certificate 3 (CN=instance.test) ${message}`]);
  });

  it('accepts an intermediate CA without pathLen', async () => {
    const { doc } = await chainDoc({ instance: { extensions: caExtensions(undefined) } });
    expect(verifyAttestation(doc, opts()).chainSubjects).toHaveLength(5);
  });

  it('refuses a leaf that is a CA, or lacks digitalSignature, or has no keyUsage', async () => {
    const cases: Array<[x509.Extension[], string]> = [
      [
        [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(F.digitalSignature, true)],
        'the signing certificate is a CA certificate',
      ],
      [
        [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(F.nonRepudiation, true)],
        'the signing certificate lacks keyUsage digitalSignature',
      ],
      [[new x509.BasicConstraintsExtension(false, undefined, true)], 'the signing certificate lacks keyUsage digitalSignature'],
    ];
    for (const [extensions, message] of cases) {
      const { doc } = await chainDoc({ leaf: { extensions } });
      expect(refusal(() => verifyAttestation(doc, opts()))).toEqual(['CERT_CONSTRAINTS', message]);
    }
  });

  it('refuses a leaf key that is not ECDSA P-384: P-256, and RSA', async () => {
    const p256 = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const rsaKeys = await webcrypto.subtle.generateKey(
      { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      true,
      ['sign', 'verify'],
    );
    // The document is signed with some P-384 key (a 96-byte ES384 signature), so the certificate's key is the
    // only defect.
    const signing = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey;
    for (const keys of [p256, rsaKeys]) {
      const { doc } = await chainDoc({ leafPublicKey: keys.publicKey, leafKey: signing });
      expect(refusal(() => verifyAttestation(doc, opts()))).toEqual(['CERT_CONSTRAINTS', 'the signing certificate key is not ECDSA P-384']);
    }
  });

  it('refuses a certificate signed with its issuer key but naming another issuer', async () => {
    const { doc } = await chainDoc({ leaf: { issuerName: 'CN=someone-else.test' } });
    expect(refusal(() => verifyAttestation(doc, opts()))).toEqual([
      'CHAIN_BROKEN',
      'the signing certificate (CN=leaf.test) was not issued by CA certificate 3 (CN=instance.test)',
    ]);
  });

  it('names the certificate that is not DER', () => {
    const leafDer = signer.certificate;
    const garbage = Buffer.from('not a certificate');
    const withBundle = (cabundle: Buffer[], certificate: Buffer) => signAttestationDocument(fields(), { ...signer, cabundle, certificate });
    expect(
      refusal(() => verifyAttestation(withBundle([signer.cabundle[0] as Buffer, garbage, ...signer.cabundle.slice(2)], leafDer), opts())),
    ).toEqual(['MALFORMED', 'attestation document: cabundle[1] is not a valid X.509 certificate']);
    expect(refusal(() => verifyAttestation(withBundle(signer.cabundle, garbage), opts()))).toEqual([
      'MALFORMED',
      'attestation document: certificate is not a valid X.509 certificate',
    ]);
    // The X.509 parser's own error stays as the cause.
    expect(() => verifyAttestation(withBundle(signer.cabundle, garbage), opts())).toThrow(
      expect.objectContaining({ cause: expect.objectContaining({ message: expect.any(String) }) }),
    );
  });

  it('checks validity inclusively at notBefore and notAfter, and says when it fails', async () => {
    // Inside the validity of every CA above it (each began 60 s before it was made).
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 30_000);
    const notAfter = new Date(notBefore.getTime() + HOUR);
    const { doc } = await chainDoc({ leaf: { notBefore, notAfter } });
    expect(verifyAttestation(doc, opts({ at: notBefore })).chainSubjects).toHaveLength(5);
    expect(verifyAttestation(doc, opts({ at: notAfter })).chainSubjects).toHaveLength(5);
    const before = new Date(notBefore.getTime() - 1000);
    const after = new Date(notAfter.getTime() + 1000);
    const leafName = 'the signing certificate (CN=leaf.test)';
    expect(refusal(() => verifyAttestation(doc, opts({ at: before })))).toEqual([
      'CERT_NOT_YET_VALID',
      `${leafName} is not valid before ${notBefore.toISOString()} (checked at ${before.toISOString()}, the time asked for)`,
    ]);
    expect(refusal(() => verifyAttestation(doc, opts({ at: after })))).toEqual([
      'CERT_EXPIRED',
      `${leafName} expired at ${notAfter.toISOString()} (checked at ${after.toISOString()}, the time asked for)`,
    ]);
  });

  it('accepts any of several trusted roots, given as PEM or DER, and names the root it does not trust', async () => {
    const other = await SimulatedNitroCa.open(null);
    const doc = signAttestationDocument(fields(), signer);
    for (const roots of [[other.rootPem, ca.rootPem], [ca.rootDer, other.rootDer], [new Uint8Array(ca.rootDer)]]) {
      expect(verifyAttestation(doc, { trustedRoots: roots, at: new Date(), allowUnpinned: true }).chainSubjects).toHaveLength(5);
    }
    const [code, message] = refusal(() => verifyAttestation(doc, { trustedRoots: [other.rootPem], at: new Date(), allowUnpinned: true }));
    expect(code).toBe('UNTRUSTED_ROOT');
    expect(message).toMatch(
      /^the chain does not start at a trusted root \(its root is CA certificate 0 \([A-Z]+=[^\n]+, CN=sim\.nitro-enclaves\)\)$/,
    );
  });

  it('applies freshness only when asked, with limits that are inclusive', () => {
    const t = Date.now() - 1000;
    const doc = signAttestationDocument(fields({ timestamp: t }), signer);
    const future = signAttestationDocument(fields({ timestamp: Date.now() + 10 * 60_000 }), signer);
    expect(verifyAttestation(future, opts()).document.timestamp).toBeGreaterThan(Date.now()); // no maxAgeMs: no freshness check
    expect(verifyAttestation(doc, opts({ maxAgeMs: 300_000, now: new Date(t + 300_000) })).document.timestamp).toBe(t);
    expect(refusal(() => verifyAttestation(doc, opts({ maxAgeMs: 300_000, now: new Date(t + 600_000) })))).toEqual([
      'STALE',
      'attestation document is 600 s old; at most 300 s allowed',
    ]);
    expect(verifyAttestation(doc, opts({ maxAgeMs: 300_000, now: new Date(t - 60_000) })).document.timestamp).toBe(t);
    expect(verifyAttestation(doc, opts({ maxAgeMs: 300_000, maxFutureSkewMs: 5_000, now: new Date(t - 5_000) })).document.timestamp).toBe(
      t,
    );
    expect(refusal(() => verifyAttestation(doc, opts({ maxAgeMs: 300_000, now: new Date(t - 120_000) })))).toEqual([
      'FROM_THE_FUTURE',
      'attestation document is dated 120 s in the future',
    ]);
  });

  it('says which optional check failed, and accepts PCRs as 0x-prefixed hex', () => {
    const doc = signAttestationDocument(fields(), signer);
    const pcr0 = SAMPLE_PCR0.toString('hex');
    expect(
      verifyAttestation(doc, opts({ expectedPcrs: { 0: `0x${pcr0}`, 1: `0X${Buffer.alloc(48, 1).toString('hex')}` } })).chainSubjects,
    ).toHaveLength(5);
    expect(refusal(() => verifyAttestation(doc, opts({ expectedNonce: Buffer.from('nonce-2') })))).toEqual([
      'NONCE_MISMATCH',
      'attestation document: nonce does not match the expected one',
    ]);
    expect(refusal(() => verifyAttestation(doc, opts({ expectedUserData: Buffer.from('other') })))).toEqual([
      'USER_DATA_MISMATCH',
      'attestation document: user_data does not match the expected value',
    ]);
    expect(refusal(() => verifyAttestation(doc, opts({ expectedPcrs: { 2: 'ff'.repeat(48) } })))).toEqual([
      'PCR_MISMATCH',
      `attestation document: PCR2 is ${Buffer.alloc(48, 2).toString('hex')}, expected ${'ff'.repeat(48)}`,
    ]);
    expect(refusal(() => verifyAttestation(doc, opts({ expectedPcrs: { 20: 'ff'.repeat(48) } })))).toEqual([
      'PCR_MISMATCH',
      `attestation document: PCR20 is absent, expected ${'ff'.repeat(48)}`,
    ]);
    const keyless = signAttestationDocument(fields({ publicKey: undefined }), signer);
    expect(refusal(() => verifyAttestation(keyless, opts({ requirePublicKey: true })))).toEqual([
      'MISSING_PUBLIC_KEY',
      'attestation document: public_key is absent',
    ]);
    const forged = signAttestationDocument(fields(), {
      ...signer,
      privateKey: createPrivateKey(
        generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
      ),
    });
    expect(refusal(() => verifyAttestation(forged, opts()))).toEqual([
      'BAD_SIGNATURE',
      'attestation document: the COSE signature does not verify with the signing certificate',
    ]);
  });

  describe('issue 22: strict certificates (RFC 5280 4.2)', () => {
    const UNKNOWN = '1.3.6.1.4.1.55555.1';
    const unknownExt = (critical: boolean) => new x509.Extension(UNKNOWN, critical, new Uint8Array([0x05, 0x00]));

    it('refuses a CA whose basicConstraints is not critical, naming it; the same CA with it critical verifies', async () => {
      const nonCritical = [new x509.BasicConstraintsExtension(true, 0, false), new x509.KeyUsagesExtension(F.keyCertSign, true)];
      const { doc } = await chainDoc({ instance: { extensions: nonCritical } });
      expect(refusal(() => verifyAttestation(doc, opts()))).toEqual([
        'CERT_CONSTRAINTS',
        'CA certificate 3 (CN=instance.test) is a CA whose basicConstraints is not marked critical',
      ]);
      const critical = [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(F.keyCertSign, true)];
      expect(verifyAttestation((await chainDoc({ instance: { extensions: critical } })).doc, opts()).chainSubjects).toHaveLength(5);
    });

    it('refuses an unknown critical extension on the leaf or on a CA, and accepts it non-critical', async () => {
      const leaf = await chainDoc({ leaf: { extensions: [...leafExtensions(), unknownExt(true)] } });
      expect(refusal(() => verifyAttestation(leaf.doc, opts()))).toEqual([
        'UNKNOWN_CRITICAL_EXTENSION',
        `the signing certificate (CN=leaf.test) has an unknown critical extension ${UNKNOWN} (only basicConstraints and keyUsage may be critical)`,
      ]);
      const ca = await chainDoc({ instance: { extensions: [...caExtensions(0), unknownExt(true)] } });
      expect(refusal(() => verifyAttestation(ca.doc, opts()))[1]).toMatch(
        /^CA certificate 3 \(CN=instance\.test\) has an unknown critical/,
      );
      const benign = await chainDoc({ leaf: { extensions: [...leafExtensions(), unknownExt(false)] } });
      expect(verifyAttestation(benign.doc, opts()).chainSubjects).toHaveLength(5);
    });

    it('refuses a known extension this verifier does not enforce when marked critical (extKeyUsage)', async () => {
      const { doc } = await chainDoc({
        leaf: { extensions: [...leafExtensions(), new x509.ExtendedKeyUsageExtension(['1.3.6.1.5.5.7.3.1'], true)] },
      });
      expect(refusal(() => verifyAttestation(doc, opts()))[0]).toBe('UNKNOWN_CRITICAL_EXTENSION');
    });

    it('refuses an extension that appears twice (a second, laxer basicConstraints)', async () => {
      const twice = [...caExtensions(0), new x509.BasicConstraintsExtension(true, 5, false)];
      const { doc } = await chainDoc({ instance: { extensions: twice } });
      // OpenSSL does not take such a certificate as issued by anything.
      expect(refusal(() => verifyAttestation(doc, opts()))).toEqual([
        'CHAIN_BROKEN',
        expect.stringMatching(/^CA certificate 3 \(CN=instance\.test\) was not issued by CA certificate 2 /),
      ]);
    });
  });

  describe('issue 22: PCR0 pinned, debug mode refused', () => {
    const pinnedOpts = (o: VerifyOptions = {}): VerifyOptions => ({ trustedRoots: [ca.rootPem], ...o });
    const required =
      'PCR0 is required (expectedPcrs[0]: the PCR0 of an image you approve): the Nitro hypervisor signs documents for any image; pass allowUnpinned to check without it';
    const debugMessage =
      'attestation document: PCR0 is all zeros, an enclave in debug mode (the host can read its memory); pass allowDebug to accept it';

    it('refuses an unpinned check unless allowUnpinned, and says whether PCR0 was pinned', () => {
      const doc = signAttestationDocument(fields(), signer);
      for (const o of [
        {},
        { expectedPcrs: { 3: Buffer.alloc(48, 3) } },
        { allowUnpinned: false },
        { expectedPcrs: {} },
      ] as VerifyOptions[]) {
        expect(refusal(() => verifyAttestation(doc, pinnedOpts(o)))).toEqual(['PCR_REQUIRED', required]);
      }
      expect(refusal(() => verifyAttestation(Buffer.from('junk'), pinnedOpts()))[0]).toBe('PCR_REQUIRED'); // before reading anything
      expect(verifyAttestation(doc, pinnedOpts({ allowUnpinned: true }))).toMatchObject({ pinned: false, debug: false });
      expect(verifyAttestation(doc, pinnedOpts({ expectedPcrs: { 0: SAMPLE_PCR0 } }))).toMatchObject({ pinned: true, debug: false });
    });

    it('refuses an all-zero PCR0 unless allowDebug, pinned or not; one non-zero byte is not debug mode', () => {
      const zero = Buffer.alloc(48);
      const debugDoc = signAttestationDocument(
        fields({
          pcrs: new Map([
            [0, zero],
            [1, Buffer.alloc(48, 1)],
          ]),
        }),
        signer,
      );
      expect(refusal(() => verifyAttestation(debugDoc, pinnedOpts({ allowUnpinned: true })))).toEqual(['DEBUG_MODE', debugMessage]);
      expect(refusal(() => verifyAttestation(debugDoc, pinnedOpts({ expectedPcrs: { 0: zero } })))).toEqual(['DEBUG_MODE', debugMessage]);
      expect(refusal(() => verifyAttestation(debugDoc, pinnedOpts({ expectedPcrs: { 0: zero }, allowDebug: false })))[0]).toBe(
        'DEBUG_MODE',
      );
      expect(verifyAttestation(debugDoc, pinnedOpts({ expectedPcrs: { 0: zero }, allowDebug: true }))).toMatchObject({
        pinned: true,
        debug: true,
      });
      for (const at of [0, 47]) {
        const almost = Buffer.alloc(48);
        almost[at] = 1;
        const doc = signAttestationDocument(fields({ pcrs: new Map([[0, almost]]) }), signer);
        expect(verifyAttestation(doc, pinnedOpts({ expectedPcrs: { 0: almost } })).debug).toBe(false);
      }
      // No PCR0 at all: not debug mode (and unpinned, so allowed only with allowUnpinned).
      const noPcr0 = signAttestationDocument(fields({ pcrs: new Map([[1, Buffer.alloc(48, 1)]]) }), signer);
      expect(verifyAttestation(noPcr0, pinnedOpts({ allowUnpinned: true })).debug).toBe(false);
    });
  });

  describe('issue 22: the check time', () => {
    // A leaf that lived from 2 h ago to 1 min ago, and a document made while it was valid (90 min ago).
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 2 * HOUR);
    const notAfter = new Date(notBefore.getTime() + 2 * HOUR - 60_000);
    const made = notBefore.getTime() + 30 * 60_000;
    let old: SimulatedNitroCa;
    let oldSigner: DocumentSigner;
    let doc: Buffer;
    let leafName: string;
    beforeAll(async () => {
      // A simulated Nitro CA as it was 3 hours ago, and its leaf.
      old = await SimulatedNitroCa.open(null, {}, new Date(notBefore.getTime() - HOUR));
      oldSigner = await old.signerWithLeaf(notBefore, notAfter);
      leafName = `the signing certificate (${new X509Certificate(oldSigner.certificate).subject.replace(/\n/g, ', ')})`;
      doc = signAttestationDocument(fields({ timestamp: made }), oldSigner);
    });
    const base = (o: VerifyOptions = {}): VerifyOptions => ({ trustedRoots: [old.rootPem], allowUnpinned: true, ...o });
    const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

    it('is the current time by default: a document whose leaf has expired is refused, with the way to check kept evidence', () => {
      const before = Date.now();
      const [code, message] = refusal(() => verifyAttestation(doc, base()));
      expect(code).toBe('CERT_EXPIRED');
      const m = new RegExp(
        `^${escape(leafName)} expired at ${notAfter.toISOString()} \\(checked at (\\S+), the current time; a document kept as evidence can be checked at its own time \\(at: 'document', --at document\\)\\)$`,
      ).exec(message as string);
      expect(m).not.toBeNull();
      expect(Date.parse(m?.[1] as string)).toBeGreaterThanOrEqual(before);
      expect(Date.parse(m?.[1] as string)).toBeLessThanOrEqual(Date.now());
      const now = new Date(notAfter.getTime() + 1000);
      expect(refusal(() => verifyAttestation(doc, base({ at: 'now', now })))).toEqual([
        'CERT_EXPIRED',
        `${leafName} expired at ${notAfter.toISOString()} (checked at ${now.toISOString()}, the current time; a document kept as evidence can be checked at its own time (at: 'document', --at document))`,
      ]);
      const earlier = new Date(notAfter.getTime() - 1000);
      expect(verifyAttestation(doc, base({ now: earlier })).checkedAt).toEqual({ time: earlier, basis: 'now' });
      expect(verifyAttestation(doc, base({ at: 'now', now: earlier })).checkedAt).toEqual({ time: earlier, basis: 'now' });
    });

    it("is the document's own time or an explicit one only when asked, and the result says which", () => {
      expect(verifyAttestation(doc, base({ at: 'document' })).checkedAt).toEqual({ time: new Date(made), basis: 'document' });
      const t = new Date(made + 1000);
      expect(verifyAttestation(doc, base({ at: t })).checkedAt).toEqual({ time: t, basis: 'explicit' });
      const late = new Date(notAfter.getTime() + 1000);
      expect(refusal(() => verifyAttestation(doc, base({ at: late })))).toEqual([
        'CERT_EXPIRED',
        `${leafName} expired at ${notAfter.toISOString()} (checked at ${late.toISOString()}, the time asked for)`,
      ]);
    });

    it("names the document's own time when a document claims a time before its certificates", async () => {
      const early = signAttestationDocument(fields({ timestamp: notBefore.getTime() - 1000 }), oldSigner);
      expect(refusal(() => verifyAttestation(early, base({ at: 'document' })))).toEqual([
        'CERT_NOT_YET_VALID',
        `${leafName} is not valid before ${notBefore.toISOString()} (checked at ${new Date(notBefore.getTime() - 1000).toISOString()}, the document's own time)`,
      ]);
    });

    it('refuses an `at` that is not now, document or a valid Date', () => {
      for (const at of ['yesterday', new Date(Number.NaN), 1731627989450]) {
        expect(() => verifyAttestation(doc, base({ at: at as never }))).toThrow(
          new TypeError(`verifyAttestation: options.at must be 'now', 'document' or a valid Date, not ${String(at)}`),
        );
      }
    });
  });
});

describe('birth attestations', () => {
  let ca: SimulatedNitroCa;
  let signer: DocumentSigner;
  const key = { keyId: 'key-1', address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8' };
  const pcr0 = Buffer.alloc(48, 0x5e);
  const doc = (userData: Buffer) =>
    signAttestationDocument(
      {
        moduleId: 'i-0123456789abcdef0-enc0123456789abcdef',
        timestamp: Date.now(),
        pcrs: new Map([
          [0, pcr0],
          [3, Buffer.alloc(48, 3)],
        ]),
        userData,
      },
      signer,
    );

  beforeAll(async () => {
    ca = await SimulatedNitroCa.open(null);
    signer = await ca.signer();
  });

  const opts = () => ({ trustedRoots: [ca.rootPem], at: new Date(), expectedPcrs: { 0: pcr0.toString('hex') } });

  it('verifies the birth of this key id and address with the approved PCR0', () => {
    const v = verifyBirthAttestation(doc(birthUserData(key.keyId, key.address)), key, opts());
    expect(v.document.userData).toEqual(taggedUserData(USER_DATA_TAGS.birth, birthContent(key.keyId, key.address)));
  });

  it('requires PCR0, whatever else is given', () => {
    const d = doc(birthUserData(key.keyId, key.address));
    const message = 'a birth attestation is evidence only together with the PCR0 of an image you approve: pass the expected PCR0';
    for (const expectedPcrs of [{}, { 3: Buffer.alloc(48, 3) }, undefined]) {
      expect(refusal(() => verifyBirthAttestation(d, key, { ...opts(), expectedPcrs: expectedPcrs as never }))).toEqual([
        'PCR_REQUIRED',
        message,
      ]);
    }
  });

  it('runs the document checks (PCR0) before the user data', () => {
    const d = doc(birthUserData('another-key', key.address));
    expect(failureOf(() => verifyBirthAttestation(d, key, { ...opts(), expectedPcrs: { 0: 'ff'.repeat(48) } })).code).toBe('PCR_MISMATCH');
  });

  it('refuses the birth of another key, and a 0.1-era untagged document', () => {
    expect(refusal(() => verifyBirthAttestation(doc(birthUserData('key-2', key.address)), key, opts()))).toEqual([
      'USER_DATA_MISMATCH',
      `attestation document: user_data is not the birth attestation of key ${key.keyId} with address ${key.address}`,
    ]);
    const legacy = createHash('sha256').update(birthContent(key.keyId, key.address)).digest();
    expect(failureOf(() => verifyBirthAttestation(doc(legacy), key, opts())).code).toBe('LEGACY_BIRTH');
  });
});
