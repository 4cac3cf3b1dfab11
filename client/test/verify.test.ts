/**
 * The SDK's offline checks (client/src/verify.ts): a key view against the pinned identity, the key asked for and
 * approved PCR0s, the live identity against a nonce, and a genesis output. Each test changes one thing a parent (or
 * a mistake) could change and expects the check to refuse it with the reason.
 */
import { randomBytes } from 'node:crypto';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { birthUserData } from '@nks/shared/attestation/user-data';
import { identityUserData } from '@nks/shared/attestation/identity';
import { encodeRecord } from '@nks/shared/records';
import { VerificationError, verifyGenesis, verifyIdentity, verifyKey, verifyKeyBirth, type VerifyKeyOptions } from '../src/sdk';
import { addressOfPublicKey } from '../src/verify';
import { SimulatedNitroCa } from '../../sim/src/nsm/ca';
import { signAttestationDocument } from '../../sim/src/nsm/document';
import {
  defaultProjectRecord,
  GENESIS_PCR0,
  identityBlob,
  KMS_KEY_ARN,
  makeDocuments,
  makeGenesisOutput,
  makeIdentity,
  makeKeyView,
  OTHER_PCR0,
  PCR0,
  signIdentityBlob,
  type Documents,
  type Identity,
} from './keystore-fixtures';

let identity: Identity;
let docs: Documents;
let options: VerifyKeyOptions;

beforeAll(async () => {
  identity = makeIdentity();
  docs = await makeDocuments();
  options = {
    identityPublicKey: identity.publicKey,
    expected: { keyId: 'key-1' },
    expectedPcrs: { 0: PCR0 },
    rootCertificate: docs.ca.rootPem,
  };
});

/** The VerificationError `fn` throws; anything else fails the test. */
function refusal(fn: () => unknown): VerificationError {
  try {
    fn();
  } catch (err) {
    if (err instanceof VerificationError) return err;
    throw err;
  }
  throw new Error('expected a VerificationError');
}

describe('verifyKey', () => {
  it('accepts a key whose record the pinned identity signed and whose birth attestation shows an approved PCR0', async () => {
    const { view, record } = await makeKeyView(identity, docs);
    const v = verifyKey(view, options);
    expect(v.record).toEqual(record);
    expect(v.recordDigest).toMatch(/^0x[0-9a-f]{64}$/);
    expect(v.birth?.document.pcrs.get(0)?.toString('hex')).toBe(PCR0);
    expect(v.checks).toEqual([
      expect.stringMatching(/^record signature verifies with the pinned identity/),
      'the record is of the key asked for: keyId key-1',
      'the view agrees with the record: keyId, address, publicKey, project default, externalId "alice", state active, disabled false',
      expect.stringMatching(/^birth attestation verifies .* and binds this key id and address$/),
    ]);
  });

  it('accepts a key without a birth attestation unless one is required', async () => {
    const { view } = await makeKeyView(identity, docs, { attest: false });
    expect(verifyKey(view, options).birth).toBeNull();
    expect(refusal(() => verifyKey(view, { ...options, requireBirthAttestation: true })).code).toBe('NO_BIRTH_ATTESTATION');
  });

  it('refuses a record signed by another identity, or altered after signing', async () => {
    const { view, record } = await makeKeyView(identity, docs);
    const other = makeIdentity();
    expect(refusal(() => verifyKey(view, { ...options, identityPublicKey: other.publicKey })).code).toBe('RECORD_SIGNATURE');
    // The parent's own record for the key, signed with a key of its own.
    expect(refusal(() => verifyKey({ ...view, record: other.sign(record) }, options)).code).toBe('RECORD_SIGNATURE');
    // The genuine signature beside an edited record (here: moved to another subject).
    const edited = { ...view, record: { ...view.record, record: encodeRecord({ ...record, subject: 'mallory' }).toString('base64') } };
    const err = refusal(() => verifyKey({ ...edited, externalId: 'mallory' }, options));
    expect([err.code, err.message]).toEqual(['RECORD_SIGNATURE', expect.stringMatching(/does not verify with the pinned identity/)]);
  });

  it('refuses a view that says something its record does not, naming the field', async () => {
    const { view, record } = await makeKeyView(identity, docs);
    const stranger = privateKeyToAccount(generatePrivateKey());
    const cases: Array<[Partial<typeof view>, RegExp]> = [
      [{ keyId: 'key-2' }, /keyId: the view says "key-2", the record "key-1"/],
      [{ address: stranger.address }, /address: the view says/],
      [{ publicKey: stranger.publicKey }, new RegExp(`publicKey: it is not the public key of ${record.address}`)],
      [{ projectId: 'p_0123456789abcdef' }, /projectId/],
      [{ state: 'retired' }, /state: the view says "retired", the record "active"/],
      [{ disabled: true }, /disabled: the view says true, the record false/],
      [{ externalId: 'mallory' }, /externalId: the view says "mallory", the record "alice"/],
    ];
    for (const [change, message] of cases) {
      const err = refusal(() => verifyKey({ ...view, ...change }, options));
      expect({ change, code: err.code, message: err.message }).toEqual({
        change,
        code: 'VIEW_MISMATCH',
        message: expect.stringMatching(message),
      });
    }
    // The address compares without regard to case (EIP-55 or not).
    expect(verifyKey({ ...view, address: view.address.toLowerCase() }, options).record.keyId).toBe('key-1');
  });

  it("refuses another key's genuine record under this key id", async () => {
    const { view } = await makeKeyView(identity, docs, { keyId: 'key-1' });
    const { view: other } = await makeKeyView(identity, docs, { keyId: 'key-2' });
    // Asked for key-1: the record is key-2's.
    const err = refusal(() => verifyKey({ ...view, record: other.record }, options));
    expect([err.code, err.message]).toEqual([
      'KEY_MISMATCH',
      expect.stringMatching(/keyId: you asked for "key-1", the record is of "key-2"/),
    ]);
    // Asked for key-2, whose record it is: the view, which says key-1, does not agree with it.
    const shown = refusal(() => verifyKey({ ...view, record: other.record }, { ...options, expected: { keyId: 'key-2' } }));
    expect([shown.code, shown.message]).toEqual(['VIEW_MISMATCH', expect.stringMatching(/keyId: .*address: /)]);
  });

  it('refuses the genuine, self-consistent view of another key than the one asked for (review 16, F1)', async () => {
    const { view: mallory, record } = await makeKeyView(identity, docs, { keyId: 'mallory-key', externalId: 'mallory' });
    const err = refusal(() => verifyKey(mallory, { ...options, expected: { keyId: 'alice-key' } }));
    expect([err.code, err.message]).toEqual([
      'KEY_MISMATCH',
      expect.stringMatching(
        new RegExp(
          `^the signed record is of key mallory-key \\(address ${record.address}, .*keyId: you asked for "alice-key", the record is of "mallory-key"`,
        ),
      ),
    ]);
    // The same view is fine for whoever asked for mallory-key.
    expect(verifyKey(mallory, { ...options, expected: { keyId: 'mallory-key' } }).record.subject).toBe('mallory');
    // Without the key asked for there is nothing to compare the record with.
    for (const expected of [undefined, {}, { keyId: '' }]) {
      const e = refusal(() => verifyKey(mallory, { ...options, expected: expected as VerifyKeyOptions['expected'] }));
      expect([e.code, e.message]).toEqual(['MALFORMED', expect.stringMatching(/expected.keyId is required/)]);
    }
  });

  it('compares the external id, subject and project asked for with the record, not the view', async () => {
    const { view } = await makeKeyView(identity, docs, { keyId: 'key-1', externalId: 'alice' });
    const asked = (expected: Omit<VerifyKeyOptions['expected'], 'keyId'>) => ({ ...options, expected: { keyId: 'key-1', ...expected } });
    const v = verifyKey(view, asked({ externalId: 'alice', projectId: 'default' }));
    expect(v.checks[1]).toBe('the record is of the key asked for: keyId key-1, project default, externalId "alice"');
    expect(verifyKey(view, asked({ subject: 'alice' })).checks[1]).toBe('the record is of the key asked for: keyId key-1, subject "alice"');
    const cases: Array<[Omit<VerifyKeyOptions['expected'], 'keyId'>, RegExp]> = [
      [{ externalId: 'bob' }, /externalId: you asked for "bob", the record is of "alice"/],
      [{ externalId: null }, /externalId: you asked for null, the record is of "alice"/],
      [{ subject: 'bob' }, /subject: you asked for "bob", the record is of "alice"/],
      [{ projectId: 'p_0123456789abcdef' }, /projectId: you asked for "p_0123456789abcdef", the record is of "default"/],
    ];
    for (const [expected, message] of cases) {
      const err = refusal(() => verifyKey(view, asked(expected)));
      expect({ expected, code: err.code, message: err.message }).toEqual({
        expected,
        code: 'KEY_MISMATCH',
        message: expect.stringMatching(message),
      });
    }
    // An external id is a subject of the default project: the same subject in another project is not that caller's key.
    const { view: elsewhere } = await makeKeyView(identity, docs, {
      keyId: 'key-1',
      externalId: 'alice',
      record: { projectId: 'p_0123456789abcdef' },
    });
    const viewElsewhere = { ...elsewhere, subject: 'alice' };
    expect(verifyKey(viewElsewhere, asked({ subject: 'alice' })).record.projectId).toBe('p_0123456789abcdef');
    const err = refusal(() => verifyKey(viewElsewhere, asked({ externalId: 'alice' })));
    expect([err.code, err.message]).toEqual([
      'KEY_MISMATCH',
      expect.stringMatching(/projectId: you asked for "default", the record is of "p_0123456789abcdef"/),
    ]);
  });

  it('refuses a view that leaves out a field of the record, and lists only the checks made (review 16, F2)', async () => {
    // The parent answers bob's key to a caller who asked for it by key id, minus what would show whose it is.
    const { view: bob } = await makeKeyView(identity, docs, { keyId: 'bob-key', externalId: 'bob' });
    const bobOptions = { ...options, expected: { keyId: 'bob-key' } };
    const { externalId: _e, projectId: _p, state: _s, disabled: _d, ...stripped } = bob;
    const all = refusal(() => verifyKey(stripped, bobOptions));
    expect([all.code, all.message]).toEqual([
      'VIEW_MISMATCH',
      expect.stringMatching(
        /projectId: the view says nothing, the record "default"; externalId: the view says nothing, the record "bob"; state: the view says nothing, the record "active"; disabled: the view says nothing, the record false$/,
      ),
    ]);
    for (const field of ['externalId', 'projectId', 'state', 'disabled'] as const) {
      const { [field]: _left, ...partial } = bob;
      const err = refusal(() => verifyKey(partial, bobOptions));
      expect({ field, code: err.code, message: err.message }).toEqual({
        field,
        code: 'VIEW_MISMATCH',
        message: expect.stringMatching(new RegExp(`: ${field}: the view says nothing, the record [^;]*$`)),
      });
    }
    // A view that names the subject as `subject` rather than `externalId` says who the key belongs to too.
    const { externalId: _x, ...bySubject } = bob;
    expect(verifyKey({ ...bySubject, subject: 'bob' }, bobOptions).checks[2]).toBe(
      'the view agrees with the record: keyId, address, publicKey, project default, subject "bob", state active, disabled false',
    );
    expect(refusal(() => verifyKey({ ...bySubject, subject: 'alice' }, bobOptions)).message).toMatch(
      /subject: the view says "alice", the record "bob"/,
    );
    // Outside the default project an external id is not the subject: the view must say the subject itself.
    const { view: elsewhere } = await makeKeyView(identity, docs, {
      keyId: 'bob-key',
      externalId: 'bob',
      record: { projectId: 'p_0123456789abcdef' },
    });
    const noSubject = refusal(() => verifyKey(elsewhere, bobOptions));
    expect([noSubject.code, noSubject.message]).toEqual(['VIEW_MISMATCH', expect.stringMatching(/subject: the view says nothing/)]);
    expect(verifyKey({ ...elsewhere, subject: 'bob' }, bobOptions).checks[2]).toBe(
      'the view agrees with the record: keyId, address, publicKey, project p_0123456789abcdef, subject "bob", state active, disabled false',
    );
    // A key without a subject: the view says null, and so does the record.
    const { view: nobody } = await makeKeyView(identity, docs, { keyId: 'key-1', externalId: null });
    expect(verifyKey(nobody, options).checks[2]).toMatch(/externalId null/);
    // The public key is not in the record: without it the view is complete, and the checklist does not claim it.
    const { publicKey: _k, ...noPublicKey } = bob;
    expect(verifyKey(noPublicKey, bobOptions).checks[2]).toBe(
      'the view agrees with the record: keyId, address, project default, externalId "bob", state active, disabled false',
    );
  });

  it('refuses a signed record that is not a key record, and a view without one', async () => {
    const { view } = await makeKeyView(identity, docs);
    expect(refusal(() => verifyKey({ ...view, record: identity.sign(defaultProjectRecord()) }, options)).code).toBe('RECORD_MALFORMED');
    expect(refusal(() => verifyKey({ ...view, record: undefined }, options)).code).toBe('MALFORMED');
    // A key made before 0.4 that is not migrated yet: the parent shows it without a record.
    const legacy = refusal(() => verifyKey({ ...view, record: null, projectId: null, state: null }, options));
    expect([legacy.code, legacy.message]).toEqual(['MALFORMED', expect.stringMatching(/made before 0.4 and is not migrated yet/)]);
    expect(refusal(() => verifyKey(view, { ...options, identityPublicKey: '0xABC' })).code).toBe('MALFORMED');
  });

  it('checks the birth attestation: an approved PCR0 (any of a list), this key, the pinned root', async () => {
    const { view } = await makeKeyView(identity, docs);
    const wrongPcr = refusal(() => verifyKey(view, { ...options, expectedPcrs: { 0: OTHER_PCR0 } }));
    expect([wrongPcr.code, wrongPcr.attestationCode]).toEqual(['ATTESTATION', 'PCR_MISMATCH']);
    expect(verifyKey(view, { ...options, expectedPcrs: { 0: [OTHER_PCR0, PCR0] } }).birth).not.toBeNull();
    expect(refusal(() => verifyKey(view, { ...options, expectedPcrs: { 0: [OTHER_PCR0] } })).attestationCode).toBe('PCR_MISMATCH');
    expect(refusal(() => verifyKey(view, { ...options, expectedPcrs: {} })).attestationCode).toBe('PCR_REQUIRED');
    // Without the test root the document's chain is not the AWS one.
    expect(
      refusal(() => verifyKey(view, { identityPublicKey: identity.publicKey, expected: { keyId: 'key-1' }, expectedPcrs: { 0: PCR0 } }))
        .attestationCode,
    ).toBe('UNTRUSTED_ROOT');
    // Another key's birth attestation.
    const { view: other } = await makeKeyView(identity, docs, { keyId: 'key-2' });
    expect(refusal(() => verifyKey({ ...view, attestation: other.attestation }, options)).attestationCode).toBe('USER_DATA_MISMATCH');
    // A document binding this key, but made by an image that is not approved.
    const rogue = await docs.document({ pcr0: OTHER_PCR0, userData: birthUserData(view.keyId, view.address) });
    expect(refusal(() => verifyKey({ ...view, attestation: rogue.toString('base64') }, options)).attestationCode).toBe('PCR_MISMATCH');
  });

  it('derives the address of an uncompressed public key', () => {
    const a = privateKeyToAccount(generatePrivateKey());
    expect(addressOfPublicKey(a.publicKey)).toBe(a.address.toLowerCase());
    expect(addressOfPublicKey('0x02abcd')).toBeUndefined();
  });
});

describe('verifyIdentity', () => {
  const nonce = Buffer.from('0123456789abcdef0123456789abcdef', 'hex');
  const answer = async (over: { pcr0?: string; publicKey?: string; nonce?: Buffer; genesisPcr0?: string } = {}) => ({
    publicKey: identity.publicKey,
    genesisDocument: (
      await docs.document({
        pcr0: over.genesisPcr0 ?? GENESIS_PCR0,
        userData: identityUserData(identity.publicKey),
        nonce: Buffer.from('op'),
      })
    ).toString('base64'),
    attestation: (
      await docs.document({
        pcr0: over.pcr0 ?? PCR0,
        userData: identityUserData(over.publicKey ?? identity.publicKey),
        nonce: over.nonce ?? nonce,
      })
    ).toString('base64'),
  });
  const base = () => ({ nonce, expectedPcrs: { 0: PCR0 }, rootCertificate: docs.ca.rootPem });

  it('accepts a fresh document that carries the nonce and binds the public key, and checks the genesis document when asked', async () => {
    const v = verifyIdentity(await answer(), {
      ...base(),
      identityPublicKey: identity.publicKey,
      genesisPcr0: GENESIS_PCR0,
      maxAgeMs: 60_000,
    });
    expect(v.publicKey).toBe(identity.publicKey);
    expect(v.genesis?.document.pcrs.get(0)?.toString('hex')).toBe(GENESIS_PCR0);
    expect(v.checks).toHaveLength(3);
  });

  it('refuses another nonce, another public key, an unapproved image, another pinned identity, a wrong genesis image', async () => {
    expect(refusal(() => verifyIdentity({ publicKey: 'nope', genesisDocument: '', attestation: '' }, base())).code).toBe('MALFORMED');
    const cases: Array<[ReturnType<typeof answer>, object, string, string | undefined]> = [
      [answer({ nonce: Buffer.from('another') }), {}, 'ATTESTATION', 'NONCE_MISMATCH'],
      [answer({ publicKey: makeIdentity().publicKey }), {}, 'ATTESTATION', 'USER_DATA_MISMATCH'],
      [answer({ pcr0: OTHER_PCR0 }), {}, 'ATTESTATION', 'PCR_MISMATCH'],
      [answer(), { identityPublicKey: makeIdentity().publicKey }, 'IDENTITY_MISMATCH', undefined],
      [answer({ genesisPcr0: OTHER_PCR0 }), { genesisPcr0: GENESIS_PCR0 }, 'ATTESTATION', 'PCR_MISMATCH'],
      [answer(), { expectedPcrs: {} }, 'ATTESTATION', 'PCR_REQUIRED'],
    ];
    for (const [a, over, code, attestationCode] of cases) {
      const view = await a;
      const e = refusal(() => verifyIdentity(view, { ...base(), ...over }));
      expect([e.code, e.attestationCode]).toEqual([code, attestationCode]);
    }
  });

  it('refuses a nonce that is not 1-512 bytes of 0x hex rather than expect none, and so a replayable document (review 16, F9)', async () => {
    // What an enclave answers to a request without a nonce: a document anybody could have kept and replayed.
    const replayable = await answer({ nonce: Buffer.alloc(0) });
    const refused: Array<string | Uint8Array> = [
      '0x',
      '',
      'not-hex-at-all',
      '0xzz',
      '0x123', // half a byte
      '0123456789abcdef', // hex without 0x: refused rather than guessed at
      `0x${'00'.repeat(513)}`,
      Buffer.alloc(0),
      Buffer.alloc(513),
    ];
    for (const bad of refused) {
      const e = refusal(() => verifyIdentity(replayable, { ...base(), identityPublicKey: identity.publicKey, nonce: bad }));
      expect({ bad, code: e.code, message: e.message }).toEqual({
        bad,
        code: 'MALFORMED',
        message: expect.stringMatching(/^the nonce must be 1-512 bytes, given as bytes or as 0x and hex digits, not /),
      });
    }
    // 1 and 512 bytes, as hex (either case) or bytes, are nonces.
    for (const n of [Buffer.from('01', 'hex'), randomBytes(512)]) {
      const view = await answer({ nonce: n });
      for (const given of [n, `0x${n.toString('hex')}`, `0x${n.toString('hex').toUpperCase()}`]) {
        expect(verifyIdentity(view, { ...base(), nonce: given }).checks.join('\n')).toContain('carries the nonce');
      }
    }
  });
});

describe('verifyGenesis', () => {
  const nonce = Buffer.from('c0ffee00c0ffee00', 'hex');

  it('accepts the genesis output and returns the identity section of the enclave configuration', async () => {
    const output = await makeGenesisOutput(identity, docs, nonce);
    const v = verifyGenesis(output, { pcr0: GENESIS_PCR0, nonce: `0x${nonce.toString('hex')}`, rootCertificate: docs.ca.rootPem });
    expect(v.identity).toEqual({
      publicKey: identity.publicKey,
      blob: output.blob,
      genesisDocument: output.attestation,
      defaultProject: output.defaultProject,
    });
    expect(v.kmsKeyArn).toBe(KMS_KEY_ARN);
    expect(v.defaultProject).toMatchObject({ projectId: 'default', seq: 0, state: 'active', auth: { type: 'token' } });
    expect(v.checks).toEqual([
      expect.stringMatching(/^genesis document verifies/),
      expect.stringMatching(/^the blob is an identity blob/),
      'the identity signed this blob (blobSignature over SHA-256("nks-identity-blob-v1" ‖ blob))',
      expect.stringMatching(/^the default project record is signed by this identity/),
    ]);
  });

  it('refuses a blob the identity did not sign: a junk blob for the right public key, a missing or wrong signature (review 16, F10)', async () => {
    const good = await makeGenesisOutput(identity, docs, nonce);
    const opts = { pcr0: GENESIS_PCR0, nonce, rootCertificate: docs.ca.rootPem };
    // The parent keeps the real blob and hands over one of its own: the same public header, junk inside.
    const junk = identityBlob(identity.publicKey);
    const other = makeIdentity();
    const cases: Array<[string, object, RegExp]> = [
      ['a junk blob beside the genuine signature', { blob: junk }, /blobSignature\) does not verify with this public key/],
      ['no signature', { blobSignature: undefined }, /has no blobSignature/],
      ['an empty signature', { blobSignature: '' }, /has no blobSignature/],
      [
        'a junk blob the parent signed with a key of its own',
        { blob: junk, blobSignature: signIdentityBlob(other.privateKey, junk) },
        /does not verify/,
      ],
      [
        'the signature of the junk blob without the domain tag',
        { blob: junk, blobSignature: signIdentityBlob(identity.privateKey, junk, '') },
        /does not verify/,
      ],
      ['a signature that is not 64 bytes', { blobSignature: 'AAAA' }, /does not verify/],
      ['the signature of another blob', { blobSignature: signIdentityBlob(identity.privateKey, junk) }, /does not verify/],
    ];
    for (const [what, change, message] of cases) {
      const e = refusal(() => verifyGenesis({ ...good, ...change }, opts));
      expect({ what, code: e.code, message: e.message }).toEqual({
        what,
        code: 'GENESIS_MISMATCH',
        message: expect.stringMatching(message),
      });
    }
    // The identity's own signature over that junk blob would pass: the signature is what says which blob is genuine.
    expect(verifyGenesis({ ...good, blob: junk, blobSignature: signIdentityBlob(identity.privateKey, junk) }, opts).identity.blob).toBe(
      junk,
    );
  });

  it('refuses a nonce that is not 1-512 bytes of 0x hex, and so a genesis document made without one (review 16, F9)', async () => {
    // A genesis output whose document carries no nonce: the operator's check must not read "0x" as "expect none".
    const replayable = await makeGenesisOutput(identity, docs, Buffer.alloc(0));
    const good = await makeGenesisOutput(identity, docs, nonce);
    for (const output of [replayable, good]) {
      for (const bad of ['0x', '', 'not-hex-at-all', 'c0ffee00c0ffee00', Buffer.alloc(0)]) {
        const e = refusal(() => verifyGenesis(output, { pcr0: GENESIS_PCR0, nonce: bad, rootCertificate: docs.ca.rootPem }));
        expect([e.code, e.message]).toEqual(['MALFORMED', expect.stringMatching(/^the genesis run's nonce must be 1-512 bytes/)]);
      }
    }
  });

  it("refuses another image, another nonce, another key's blob or project record, and a default project genesis does not make", async () => {
    const good = await makeGenesisOutput(identity, docs, nonce);
    const opts = { pcr0: GENESIS_PCR0, nonce, rootCertificate: docs.ca.rootPem };
    const other = makeIdentity();
    const cases: Array<[object, object, string, RegExp]> = [
      [{}, { pcr0: PCR0 }, 'ATTESTATION', /PCR_MISMATCH/],
      [{}, { nonce: Buffer.from('00', 'hex') }, 'ATTESTATION', /NONCE_MISMATCH/],
      [{ blob: identityBlob(other.publicKey) }, {}, 'GENESIS_MISMATCH', /sealed for another public key/],
      [{ defaultProject: other.sign(defaultProjectRecord()) }, {}, 'RECORD_SIGNATURE', /default project/],
      [
        { defaultProject: identity.sign(defaultProjectRecord({ allowedOrigins: ['https://evil.example'] })) },
        {},
        'GENESIS_MISMATCH',
        /browser origins/,
      ],
      [{ defaultProject: identity.sign(defaultProjectRecord({ state: 'disabled' })) }, {}, 'GENESIS_MISMATCH', /state is disabled/],
      [
        { defaultProject: identity.sign(defaultProjectRecord({ allowedRequestTypes: ['digest'] })) },
        {},
        'GENESIS_MISMATCH',
        /every request type/,
      ],
      [{ publicKey: other.publicKey }, {}, 'ATTESTATION', /USER_DATA_MISMATCH/],
      [{ attestation: undefined }, {}, 'MALFORMED', /not a genesis output/],
    ];
    for (const [change, over, code, message] of cases) {
      const e = refusal(() => verifyGenesis({ ...good, ...change }, { ...opts, ...over }));
      expect({ change: Object.keys(change), code: e.code, message: e.message }).toEqual({
        change: Object.keys(change),
        code,
        message: expect.stringMatching(message),
      });
    }
  });
});

describe('the time each document is checked at (issue 22)', () => {
  const HOUR = 3600_000;
  const made = Date.now() - 5 * HOUR + 60_000;
  let old: Documents;

  beforeAll(async () => {
    // A simulated Nitro CA as it was 5 hours ago: its leaf expired 2 hours ago.
    const ca = await SimulatedNitroCa.open(null, {}, new Date(Date.now() - 5 * HOUR));
    const signer = await ca.signer(new Date(Date.now() - 5 * HOUR));
    old = {
      ca,
      document: async ({ pcr0 = PCR0, userData, nonce, timestamp = made }) =>
        signAttestationDocument(
          {
            moduleId: 'i-0123456789abcdef0-enc0000000000000001',
            timestamp,
            pcrs: new Map([[0, Buffer.from(pcr0, 'hex')]]),
            ...(userData ? { userData } : {}),
            ...(nonce ? { nonce } : {}),
          },
          signer,
        ),
    };
  });

  it("checks a key's birth attestation, evidence kept since its creation, at its own time unless asked otherwise", async () => {
    const { view } = await makeKeyView(identity, old);
    const opts = { ...options, rootCertificate: old.ca.rootPem };
    const v = verifyKey(view, opts);
    expect(v.birth?.checkedAt).toEqual({ time: new Date(made), basis: 'document' });
    expect(v.checks[3]).toContain(`chain at ${new Date(made).toISOString()}, the document's own time`);
    const birthOpts = { expectedPcrs: { 0: PCR0 }, trustedRoots: [old.ca.rootPem] };
    expect(verifyKeyBirth(view, birthOpts).checkedAt.basis).toBe('document');
    expect(() => verifyKeyBirth(view, { ...birthOpts, at: 'now' })).toThrow(expect.objectContaining({ code: 'CERT_EXPIRED' }));
    const now = refusal(() => verifyKey(view, { ...opts, at: 'now' }));
    expect([now.code, now.attestationCode, now.message]).toEqual([
      'ATTESTATION',
      'CERT_EXPIRED',
      expect.stringMatching(/^key key-1: birth attestation: CERT_EXPIRED: the signing certificate .* expired at .*the current time/),
    ]);
  });

  it('checks the live identity document at the current time and the genesis document at its own', async () => {
    const nonce = Buffer.from('0123456789abcdef', 'hex');
    const userData = identityUserData(identity.publicKey);
    const genesisDocument = (await old.document({ pcr0: GENESIS_PCR0, userData, nonce: Buffer.from('op') })).toString('base64');
    // A live document from a leaf of today, under the same root.
    const live = signAttestationDocument(
      {
        moduleId: 'i-0123456789abcdef0-enc0000000000000001',
        timestamp: Date.now(),
        pcrs: new Map([[0, Buffer.from(PCR0, 'hex')]]),
        userData,
        nonce,
      },
      await old.ca.signer(),
    ).toString('base64');
    const opts = { nonce, expectedPcrs: { 0: PCR0 }, genesisPcr0: GENESIS_PCR0, rootCertificate: old.ca.rootPem };
    const v = verifyIdentity({ publicKey: identity.publicKey, genesisDocument, attestation: live }, opts);
    expect(v.attestation.checkedAt.basis).toBe('now');
    expect(v.genesis?.checkedAt).toEqual({ time: new Date(made), basis: 'document' });
    expect(v.checks.join('\n')).toContain(`by the genesis image, chain at ${new Date(made).toISOString()}, the document's own time`);
    // A "live" document from 5 hours ago, whose leaf has expired since, is not live.
    const stale = (await old.document({ userData, nonce })).toString('base64');
    const e = refusal(() => verifyIdentity({ publicKey: identity.publicKey, genesisDocument, attestation: stale }, opts));
    expect([e.code, e.attestationCode, e.message]).toEqual([
      'ATTESTATION',
      'CERT_EXPIRED',
      expect.stringMatching(/^fresh identity attestation: CERT_EXPIRED: .*the current time/),
    ]);
  });

  it('checks a genesis output at its own time unless asked otherwise', async () => {
    const nonce = Buffer.from('c0ffee00c0ffee00', 'hex');
    const output = await makeGenesisOutput(identity, old, nonce);
    const opts = { pcr0: GENESIS_PCR0, nonce: `0x${nonce.toString('hex')}`, rootCertificate: old.ca.rootPem };
    expect(verifyGenesis(output, opts).attestation.checkedAt.basis).toBe('document');
    const now = refusal(() => verifyGenesis(output, { ...opts, at: 'now' }));
    expect([now.code, now.attestationCode]).toEqual(['ATTESTATION', 'CERT_EXPIRED']);
  });
});
