/**
 * Signed records (records.ts, docs/RECORDS.md): the identity's signature over SHA-256("nks-record-v1" ‖ cbor),
 * and decoders that accept exactly the fields of a key or project record, each well formed, in the one
 * canonical encoding, with `prev` following `seq`. Every refusal is KEY_INTEGRITY; a signature failure says
 * nothing about the record's content.
 */
import { generateKeyPairSync, createHash, sign, type KeyObject } from 'node:crypto';
import { canonicalCbor, encodeCbor } from '../src/cbor';
import { KeystoreError } from '../src/errors';
import {
  decodeKeyRecord,
  decodeProjectRecord,
  encodeRecord,
  hex,
  identityPublicKey,
  identityPublicKeyHex,
  isFinalKeyState,
  KEY_STATES,
  MAX_RECORD_BYTES,
  openKeyRecord,
  openProjectRecord,
  PROJECT_KEY_RE,
  RECORD_SIGNATURE_TAG,
  recordDigest,
  verifySignedRecord,
  type AnyRecord,
  type KeyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '../src/records';
import { RESERVED_USER_CLAIMS } from '../src/project-auth';
import { PROJECT_RECORD_MAX_BYTES } from '../src/projects-schema';
import { SIGN_REQUEST_TYPES } from '../src/signing/request-types';
import { PoliciesSchema } from '../src/policy/schema';
import { getAddress } from 'viem';

function newIdentity(): { privateKey: KeyObject; publicKey: KeyObject; hex: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKey, hex: identityPublicKeyHex(publicKey) };
}
const identity = newIdentity();
const other = newIdentity();

/** Signs record bytes as an identity does: Ed25519 over the tagged digest. */
function signBytes(bytes: Buffer, key = identity.privateKey): SignedRecord {
  return { record: bytes.toString('base64'), signature: sign(null, recordDigest(bytes), key).toString('base64') };
}
const signRecord = (r: AnyRecord, key = identity.privateKey) => signBytes(encodeRecord(r), key);

const KEY: KeyRecord = {
  v: 1,
  kind: 'key',
  keyId: 'k_1',
  address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
  blobSha256: hex(Buffer.alloc(32, 0xab)),
  projectId: 'default',
  subject: 'user-1',
  state: 'active',
  disabled: false,
  seq: 0,
  prev: null,
  origin: 'created',
  createdAt: 1_764_633_600_123,
};
const PROJECT: ProjectRecord = {
  v: 1,
  kind: 'project',
  projectId: 'p_0123456789abcdef',
  projectKey: 'pk_0123456789abcdef',
  auth: { type: 'token' },
  allowedRequestTypes: ['digest', 'message'],
  allowedOrigins: ['https://app.example.com', 'http://localhost:3000'],
  state: 'active',
  seq: 0,
  prev: null,
  createdAt: 1_764_633_600_123,
};

const with_ = (base: AnyRecord, over: Record<string, unknown>): Buffer => {
  const fields: Record<string, unknown> = { ...base, ...over };
  return canonicalCbor(Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)));
};
function refusal(fn: () => unknown): [string, string] | 'accepted' {
  try {
    fn();
    return 'accepted';
  } catch (err) {
    expect(err).toBeInstanceOf(KeystoreError);
    return [(err as KeystoreError).code, (err as KeystoreError).message];
  }
}
const malformed = (what: string): [string, string] => ['KEY_INTEGRITY', `record is malformed: ${what}`];
const NOT_VERIFIED: [string, string] = ['KEY_INTEGRITY', 'record signature does not verify'];

describe('record signatures', () => {
  it('sign the tagged digest of the canonical bytes, and open to the record and that digest', () => {
    const bytes = encodeRecord(KEY);
    expect(recordDigest(bytes)).toEqual(createHash('sha256').update(RECORD_SIGNATURE_TAG).update(bytes).digest());
    expect(RECORD_SIGNATURE_TAG).toBe('nks-record-v1');
    const signed = signRecord(KEY);
    const opened = openKeyRecord(signed, identityPublicKey(identity.hex));
    expect(opened).toEqual({ record: KEY, digest: recordDigest(bytes) });
    expect(openProjectRecord(signRecord(PROJECT), identity.publicKey).record).toEqual(PROJECT);
    expect(identityPublicKeyHex(identityPublicKey(identity.hex))).toBe(identity.hex);
  });

  it('refuse a signature by another identity, over other bytes, over the untagged bytes, or of the wrong size', () => {
    const bytes = encodeRecord(KEY);
    const cases: Array<[string, SignedRecord]> = [
      ['another identity', signRecord(KEY, other.privateKey)],
      [
        'another record',
        { record: bytes.toString('base64'), signature: signRecord({ ...KEY, seq: 1, prev: hex(Buffer.alloc(32)) }).signature },
      ],
      [
        'the bare CBOR (no tag)',
        { record: bytes.toString('base64'), signature: sign(null, bytes, identity.privateKey).toString('base64') },
      ],
      [
        'SHA-256 of the CBOR (no tag)',
        {
          record: bytes.toString('base64'),
          signature: sign(null, createHash('sha256').update(bytes).digest(), identity.privateKey).toString('base64'),
        },
      ],
      ['a short signature', { record: bytes.toString('base64'), signature: Buffer.alloc(63).toString('base64') }],
      [
        'a long signature',
        {
          record: bytes.toString('base64'),
          signature: Buffer.concat([Buffer.from(signRecord(KEY).signature, 'base64'), Buffer.alloc(1)]).toString('base64'),
        },
      ],
      ['an empty record', { record: '', signature: signRecord(KEY).signature }],
      ['a record over the size limit', signBytes(Buffer.alloc(MAX_RECORD_BYTES + 1))],
    ];
    for (const [name, signed] of cases) {
      expect([name, refusal(() => verifySignedRecord(signed, identity.publicKey))]).toEqual([name, NOT_VERIFIED]);
      expect([name, refusal(() => openKeyRecord(signed, identity.publicKey))]).toEqual([name, NOT_VERIFIED]);
    }
    // A flipped bit anywhere in the record or the signature.
    const signed = signRecord(KEY);
    for (const part of ['record', 'signature'] as const) {
      const b = Buffer.from(signed[part], 'base64');
      for (const i of [0, Math.floor(b.length / 2), b.length - 1]) {
        const flipped = Buffer.from(b);
        flipped[i] = (flipped[i] as number) ^ 0x01;
        expect(refusal(() => verifySignedRecord({ ...signed, [part]: flipped.toString('base64') }, identity.publicKey))).toEqual(
          NOT_VERIFIED,
        );
      }
    }
  });

  it('identityPublicKey takes 32 bytes of lower-case hex only', () => {
    for (const bad of ['', '0x1234', identity.hex.toUpperCase(), identity.hex.slice(2), `${identity.hex}00`]) {
      expect(refusal(() => identityPublicKey(bad))).toEqual(['INVALID_PARAMS', 'identity public key is not 32 bytes of hex']);
    }
    expect(() => identityPublicKeyHex(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey)).toThrow('not an Ed25519 key');
  });
});

describe('decoding records: the canonical encoding only', () => {
  it('refuses a genuinely signed record that is not canonical CBOR, or not a map', () => {
    const canonical = encodeRecord(KEY);
    // seq 0 written with a one-byte argument (0x18 0x00) instead of 0x00: the same value, padded.
    const seqAt = canonical.indexOf(Buffer.from('63736571', 'hex')) + 4; // the text "seq", then its value
    expect(canonical[seqAt]).toBe(0x00);
    const variants: Array<[string, Buffer]> = [
      ['unsorted keys', encodeCbor(new Map(Object.entries(KEY).reverse()))],
      [
        'seq in a non-shortest head',
        Buffer.concat([canonical.subarray(0, seqAt), Buffer.from([0x18, 0x00]), canonical.subarray(seqAt + 1)]),
      ],
      ['trailing bytes', Buffer.concat([canonical, Buffer.from([0])])],
      ['a tag around it', Buffer.concat([Buffer.from([0xd8, 0x18]), canonical])],
      [
        'a duplicate key',
        Buffer.concat([Buffer.from([(canonical[0] as number) + 1]), canonical.subarray(1), canonicalCbor({ seq: 0 }).subarray(1)]),
      ],
    ];
    for (const [name, bytes] of variants) {
      const signed = signBytes(bytes); // genuinely signed: only the encoding is wrong
      expect([name, refusal(() => openKeyRecord(signed, identity.publicKey))]).toEqual([name, malformed('not canonical CBOR')]);
    }
    expect(refusal(() => decodeKeyRecord(canonicalCbor({ a: 1 }).subarray(1)))).toEqual(malformed('not canonical CBOR'));
    expect(refusal(() => decodeKeyRecord(Buffer.from([0x83, 1, 2, 3])))).toEqual(malformed('not a CBOR map'));
    // Nesting beyond what a record has: a policy's lists are the deepest, at 7 (record, policies, rules, a rule,
    // its condition, erc20, a list).
    expect(refusal(() => decodeProjectRecord(with_(PROJECT, { allowedOrigins: [[[[[[['x']]]]]]] })))).toEqual(
      malformed('not canonical CBOR'),
    );
    expect(refusal(() => decodeKeyRecord(with_(KEY, { subject: [[[['x']]]] })))).toEqual(malformed('not canonical CBOR'));
  });
});

describe('decoding key records, field by field', () => {
  const ok = (over: Record<string, unknown>) => decodeKeyRecord(with_(KEY, over));
  const bad = (over: Record<string, unknown>) => refusal(() => decodeKeyRecord(with_(KEY, over)));

  it('round-trips, and accepts each field at its edges', () => {
    expect(decodeKeyRecord(encodeRecord(KEY))).toEqual(KEY);
    expect(ok({ subject: null }).subject).toBeNull();
    expect(ok({ subject: 'x'.repeat(1024) }).subject).toHaveLength(1024);
    for (const state of ['pending', 'active', 'retired', 'cancelled']) expect(ok({ state }).state).toBe(state);
    for (const origin of ['created', 'migrated']) expect(ok({ origin }).origin).toBe(origin);
    expect(ok({ disabled: true }).disabled).toBe(true);
    expect(ok({ seq: Number.MAX_SAFE_INTEGER, prev: hex(Buffer.alloc(32)) }).seq).toBe(Number.MAX_SAFE_INTEGER);
    expect(ok({ createdAt: 0 }).createdAt).toBe(0);
    expect(ok({ projectId: `p_${'a'.repeat(43)}` }).projectId).toBe(`p_${'a'.repeat(43)}`);
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['version 2', { v: 2 }, 'version is not 1'],
    ['no version', { v: undefined }, 'version is not 1'],
    ['kind project', { kind: 'project' }, 'kind is not key'],
    ['kind missing', { kind: undefined }, 'kind is missing'],
    ['kind other', { kind: 'blob' }, 'kind is not key'],
    ['an unknown field', { extra: 1 }, 'unknown field extra'],
    ['keyId missing', { keyId: undefined }, 'keyId is missing'],
    ['keyId malformed', { keyId: 'a/b' }, 'keyId is not well formed'],
    ['keyId too long', { keyId: 'k'.repeat(65) }, 'keyId is not well formed'],
    ['address malformed', { address: '0x1234' }, 'address is not well formed'],
    ['address as bytes', { address: Buffer.alloc(20) }, 'address is not well formed'],
    ['blobSha256 upper case', { blobSha256: KEY.blobSha256.toUpperCase().replace('0X', '0x') }, 'blobSha256 is not well formed'],
    ['blobSha256 short', { blobSha256: hex(Buffer.alloc(31)) }, 'blobSha256 is not well formed'],
    ['blobSha256 as bytes', { blobSha256: Buffer.alloc(32) }, 'blobSha256 is not well formed'],
    ['projectId malformed', { projectId: 'p_short' }, 'projectId is not well formed'],
    ['projectId missing', { projectId: undefined }, 'projectId is missing'],
    ['subject empty', { subject: '' }, 'subject is not null or a string'],
    ['subject too long', { subject: 'x'.repeat(1025) }, 'subject is not null or a string'],
    ['subject a number', { subject: 5 }, 'subject is not null or a string'],
    ['subject missing', { subject: undefined }, 'subject is missing'],
    ['state unknown', { state: 'deleted' }, 'state is not one of pending, active, retired, cancelled'],
    ['disabled a number', { disabled: 0 }, 'disabled is not a boolean'],
    ['disabled null', { disabled: null }, 'disabled is not a boolean'],
    ['seq negative', { seq: -1 }, 'seq is not a non-negative integer'],
    ['seq a string', { seq: '0' }, 'seq is not a non-negative integer'],
    ['seq beyond 2^53', { seq: 2n ** 60n, prev: hex(Buffer.alloc(32)) }, 'seq is not a non-negative integer'],
    ['origin unknown', { origin: 'imported' }, 'origin is not one of created, migrated'],
    ['createdAt negative', { createdAt: -1 }, 'createdAt is not a non-negative integer'],
    ['createdAt missing', { createdAt: undefined }, 'createdAt is missing'],
  ])('refuses %s', (_name, over, what) => {
    expect(bad(over)).toEqual(malformed(what));
  });

  it('follows seq with prev: null at 0, a 32-byte hex digest after', () => {
    const digest = hex(Buffer.alloc(32, 0xab));
    expect(ok({ seq: 1, prev: digest }).prev).toBe(digest);
    for (const [seq, prev] of [
      [0, digest],
      [1, null],
      [1, undefined],
      [2, digest.toUpperCase().replace('0X', '0x')],
      [2, digest.slice(0, -2)],
      [2, Buffer.alloc(32, 0xab)],
      [0, ''],
    ] as const) {
      const r = prev === undefined ? bad({ seq, prev: undefined }) : bad({ seq, prev });
      expect([seq, prev, r]).toEqual([seq, prev, prev === undefined ? malformed('prev is missing') : malformed('prev does not match seq')]);
    }
  });
});

describe('decoding project records, field by field', () => {
  const ok = (over: Record<string, unknown>) => decodeProjectRecord(with_(PROJECT, over));
  const bad = (over: Record<string, unknown>) => refusal(() => decodeProjectRecord(with_(PROJECT, over)));

  it('round-trips, and accepts each field at its edges', () => {
    expect(decodeProjectRecord(encodeRecord(PROJECT))).toEqual(PROJECT);
    expect(ok({ projectId: 'default', projectKey: 'default' }).projectKey).toBe('default');
    expect(ok({ allowedRequestTypes: [] }).allowedRequestTypes).toEqual([]);
    expect(ok({ allowedRequestTypes: [...SIGN_REQUEST_TYPES] }).allowedRequestTypes).toEqual([...SIGN_REQUEST_TYPES]);
    expect(ok({ allowedOrigins: Array.from({ length: 64 }, (_, i) => `https://a${i}.example`) }).allowedOrigins).toHaveLength(64);
    expect(ok({ state: 'disabled', seq: 3, prev: hex(Buffer.alloc(32)) }).state).toBe('disabled');
    expect(PROJECT_KEY_RE.test(`pk_${'a'.repeat(43)}`)).toBe(true);
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['version 2', { v: 2 }, 'version is not 1'],
    ['kind key', { kind: 'key' }, 'kind is not project'],
    ['an unknown field', { jwt: {} }, 'unknown field jwt'],
    ['projectId malformed', { projectId: 'p-0123456789abcdef' }, 'projectId is not well formed'],
    ['projectKey malformed', { projectKey: 'pk_short' }, 'projectKey is not well formed'],
    ['projectKey a project id', { projectKey: 'p_0123456789abcdef' }, 'projectKey is not well formed'],
    ['auth of another type', { auth: { type: 'oauth' } }, 'auth is not {type:"token"} or {type:"jwt", …}'],
    ['a token auth with more fields', { auth: { type: 'token', issuer: 'x' } }, 'auth is not {type:"token"} or {type:"jwt", …}'],
    ['auth a string', { auth: 'token' }, 'auth is not a map'],
    ['auth null', { auth: null }, 'auth is not a map'],
    [
      'an unknown request type',
      { allowedRequestTypes: ['digest', 'blind'] },
      'allowedRequestTypes is not a list of distinct request types',
    ],
    [
      'a repeated request type',
      { allowedRequestTypes: ['digest', 'digest'] },
      'allowedRequestTypes is not a list of distinct request types',
    ],
    ['request types not a list', { allowedRequestTypes: 'digest' }, 'allowedRequestTypes is not a list of distinct request types'],
    ['an origin with a path', { allowedOrigins: ['https://a.example/x'] }, 'allowedOrigins is not a list of origins'],
    ['an origin of another scheme', { allowedOrigins: ['ftp://a.example'] }, 'allowedOrigins is not a list of origins'],
    [
      '65 origins',
      { allowedOrigins: Array.from({ length: 65 }, (_, i) => `https://a${i}.example`) },
      'allowedOrigins is not a list of origins',
    ],
    ['origins not a list', { allowedOrigins: 'https://a.example' }, 'allowedOrigins is not a list of origins'],
    ['state unknown', { state: 'retired' }, 'state is not one of active, disabled'],
    ['seq 1 without prev', { seq: 1 }, 'prev does not match seq'],
    ['prev at seq 0', { prev: hex(Buffer.alloc(32)) }, 'prev does not match seq'],
    ['createdAt a string', { createdAt: 'now' }, 'createdAt is not a non-negative integer'],
  ])('refuses %s', (_name, over, what) => {
    expect(bad(over)).toEqual(malformed(what));
  });

  const JWT = {
    type: 'jwt',
    issuer: 'https://login.example.com',
    audience: 'wallet-app',
    userClaim: 'sub',
    jwksUri: 'https://login.example.com/.well-known/jwks.json',
    algorithms: ['RS256', 'ES256'],
    maxTokenLifetime: 600,
  };
  const jwt = (over: Record<string, unknown>) => ({
    auth: Object.fromEntries(Object.entries({ ...JWT, ...over }).filter(([, v]) => v !== undefined)),
  });

  it('takes a JWT auth with each field at its edges', () => {
    expect(ok({ auth: JWT }).auth).toEqual(JWT);
    const round = { ...PROJECT, auth: { ...JWT, algorithms: ['EdDSA'] } } as ProjectRecord;
    expect(decodeProjectRecord(encodeRecord(round))).toEqual(round);
    expect(ok(jwt({ maxTokenLifetime: 1 })).auth).toMatchObject({ maxTokenLifetime: 1 });
    expect(ok(jwt({ maxTokenLifetime: 3600 })).auth).toMatchObject({ maxTokenLifetime: 3600 });
    expect(ok(jwt({ issuer: 'i'.repeat(512), audience: 'a'.repeat(512), userClaim: 'c'.repeat(64) })).auth).toMatchObject({
      userClaim: 'c'.repeat(64),
    });
    expect(ok(jwt({ issuer: 'x', audience: 'y', userClaim: 'email' })).auth).toMatchObject({ issuer: 'x', audience: 'y' });
    // Claim names are case-sensitive: these are not the registered claims.
    expect(ok(jwt({ userClaim: 'ISS' })).auth).toMatchObject({ userClaim: 'ISS' });
    expect(ok(jwt({ userClaim: 'oid' })).auth).toMatchObject({ userClaim: 'oid' });
  });

  it('refuses a reserved user claim: at least the registered claims other than sub', () => {
    for (const c of ['iss', 'aud', 'exp', 'nbf', 'iat', 'jti']) expect(RESERVED_USER_CLAIMS).toContain(c);
    expect(RESERVED_USER_CLAIMS).not.toContain('sub');
  });

  it("agrees with the settings schema on a record's size limit", () => {
    expect(PROJECT_RECORD_MAX_BYTES).toBe(MAX_RECORD_BYTES);
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['an unknown auth field', { extra: 1 }, 'unknown auth field extra'],
    ['no issuer', { issuer: undefined }, 'auth.issuer is not well formed'],
    ['an empty issuer', { issuer: '' }, 'auth.issuer is not well formed'],
    ['an issuer of 513 characters', { issuer: 'i'.repeat(513) }, 'auth.issuer is not well formed'],
    ['an issuer not a string', { issuer: 7 }, 'auth.issuer is not well formed'],
    ['an empty audience', { audience: '' }, 'auth.audience is not well formed'],
    ['an audience of 513 characters', { audience: 'a'.repeat(513) }, 'auth.audience is not well formed'],
    ['a list as audience', { audience: ['a'] }, 'auth.audience is not well formed'],
    ['a user claim with a space', { userClaim: 'user id' }, 'auth.userClaim is not well formed'],
    ['a user claim of 65 characters', { userClaim: 'c'.repeat(65) }, 'auth.userClaim is not well formed'],
    // Review 17 (informational): claims that name no user (every user would share one key, or get a new one each time).
    ...RESERVED_USER_CLAIMS.map((c): [string, Record<string, unknown>, string] => [
      `the user claim ${c}`,
      { userClaim: c },
      'auth.userClaim is not well formed',
    ]),
    ['an http JWKS URI', { jwksUri: 'http://login.example.com/jwks' }, 'auth.jwksUri is not well formed'],
    ['a JWKS URI with credentials', { jwksUri: 'https://u:p@login.example.com/jwks' }, 'auth.jwksUri is not well formed'],
    ['a JWKS URI with a fragment', { jwksUri: 'https://login.example.com/jwks#x' }, 'auth.jwksUri is not well formed'],
    ['a JWKS URI not in normal form', { jwksUri: 'https://LOGIN.example.com/jwks' }, 'auth.jwksUri is not well formed'],
    ['a JWKS URI that is not a URL', { jwksUri: 'login.example.com' }, 'auth.jwksUri is not well formed'],
    ['a JWKS URI over 2048 characters', { jwksUri: `https://a.example/${'x'.repeat(2031)}` }, 'auth.jwksUri is not well formed'],
    ['no algorithms', { algorithms: [] }, 'auth.algorithms is not a list of distinct asymmetric algorithms'],
    ['HS256', { algorithms: ['RS256', 'HS256'] }, 'auth.algorithms is not a list of distinct asymmetric algorithms'],
    ['none', { algorithms: ['none'] }, 'auth.algorithms is not a list of distinct asymmetric algorithms'],
    ['a repeated algorithm', { algorithms: ['ES256', 'ES256'] }, 'auth.algorithms is not a list of distinct asymmetric algorithms'],
    ['algorithms not a list', { algorithms: 'RS256' }, 'auth.algorithms is not a list of distinct asymmetric algorithms'],
    ['a lifetime of 0', { maxTokenLifetime: 0 }, 'auth.maxTokenLifetime is out of range'],
    ['a lifetime of 3601', { maxTokenLifetime: 3601 }, 'auth.maxTokenLifetime is out of range'],
    ['a lifetime as text', { maxTokenLifetime: '600' }, 'auth.maxTokenLifetime is out of range'],
  ])('refuses a JWT auth with %s', (_name, over, what) => {
    expect(bad(jwt(over))).toEqual(malformed(what));
  });

  it('a key record never opens as a project record, nor a project record as a key record', () => {
    expect(refusal(() => openProjectRecord(signRecord(KEY), identity.publicKey))).toEqual(malformed('unknown field keyId'));
    expect(refusal(() => openKeyRecord(signRecord(PROJECT), identity.publicKey))).toEqual(malformed('unknown field auth'));
  });
});

describe('key records of successors (docs/LIFECYCLE.md): the optional predecessor', () => {
  const SUCCESSOR: KeyRecord = { ...KEY, keyId: 'k_2', state: 'pending', predecessor: 'k_1' };

  it('leaves a key record without a predecessor byte for byte what it was before the lifecycle existed', () => {
    const before = canonicalCbor({ ...KEY });
    expect(encodeRecord(KEY)).toEqual(before);
    expect(encodeRecord({ ...KEY, predecessor: undefined })).toEqual(before);
    const decoded = decodeKeyRecord(before);
    expect(decoded).toEqual(KEY);
    expect('predecessor' in decoded).toBe(false);
  });

  it('round-trips a predecessor, through a genuine signature too', () => {
    const bytes = encodeRecord(SUCCESSOR);
    expect(bytes).toEqual(canonicalCbor({ ...SUCCESSOR }));
    expect(decodeKeyRecord(bytes)).toEqual(SUCCESSOR);
    expect(openKeyRecord(signRecord(SUCCESSOR), identity.publicKey).record.predecessor).toBe('k_1');
  });

  it.each<[string, unknown]>([
    ['empty', ''],
    ['malformed', 'a/b'],
    ['too long', 'k'.repeat(65)],
    ['a number', 1],
    ['null', null],
  ])('refuses a predecessor that is %s', (_name, predecessor) => {
    expect(refusal(() => decodeKeyRecord(with_(SUCCESSOR, { predecessor })))).toEqual(malformed('predecessor is not well formed'));
  });

  it('has no predecessor field in a project record', () => {
    expect(refusal(() => decodeProjectRecord(with_(PROJECT, { predecessor: 'k_1' })))).toEqual(malformed('unknown field predecessor'));
  });

  it('calls retired and cancelled final, pending and active not', () => {
    expect(KEY_STATES.map((s) => [s, isFinalKeyState(s)])).toEqual([
      ['pending', false],
      ['active', false],
      ['retired', true],
      ['cancelled', true],
    ]);
  });
});

describe('project records with policies (docs/POLICIES.md)', () => {
  const USDC = '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48';
  const POLICIES = PoliciesSchema.parse({
    rules: [
      { name: 'no-blind', effect: 'deny', when: { type: ['digest'] } },
      { name: 'usdc', effect: 'allow', when: { chainId: [1], to: [USDC], erc20: { function: ['transfer'], maxAmount: '1000000' } } },
    ],
    limits: [{ name: 'daily', scope: 'key', window: 'day', maxValue: '1000000000000000000' }],
  });
  const withPolicies = (policies: unknown) => with_(PROJECT, { policies });
  const bad = (policies: unknown) => refusal(() => decodeProjectRecord(withPolicies(policies)));

  it('leaves a record without policies byte for byte what it was before policies existed', () => {
    // The encoding before the field existed was canonicalCbor of the record's fields, nothing else.
    const before = canonicalCbor({ ...PROJECT });
    expect(encodeRecord(PROJECT)).toEqual(before);
    expect(createHash('sha256').update(before).digest('hex')).toBe('8309bf74f2a9d29ef4dd1635abf18dcea0692568babde1e65220e3faa1691331');
    // An empty policy is no policy: the field is left out, not written empty.
    expect(encodeRecord({ ...PROJECT, policies: { rules: [], limits: [] } })).toEqual(before);
    const decoded = decodeProjectRecord(before);
    expect(decoded).toEqual(PROJECT);
    expect('policies' in decoded).toBe(false);
  });

  it('round-trips a policy, through a genuine signature too', () => {
    const record: ProjectRecord = { ...PROJECT, policies: POLICIES };
    expect(decodeProjectRecord(encodeRecord(record))).toEqual(record);
    expect(openProjectRecord(signRecord(record), identity.publicKey).record.policies).toEqual(POLICIES);
    // Only limits, or only rules, are policies too.
    expect(decodeProjectRecord(withPolicies({ rules: [], limits: POLICIES.limits })).policies).toEqual({
      rules: [],
      limits: POLICIES.limits,
    });
    expect(decodeProjectRecord(withPolicies({ rules: POLICIES.rules, limits: [] })).policies).toEqual({
      rules: POLICIES.rules,
      limits: [],
    });
  });

  it('round-trips chain ids of 2^32 and above, up to 2^53 - 1 (CBOR gives them back as bigint)', () => {
    // Palm's chain id is 11297108109: a policy naming it must not make a record nobody can decode.
    const record: ProjectRecord = {
      ...PROJECT,
      policies: PoliciesSchema.parse({
        rules: [{ name: 'big chains', effect: 'allow', when: { chainId: [2 ** 32, 11_297_108_109, Number.MAX_SAFE_INTEGER] } }],
        limits: [{ name: 'l', scope: 'key', window: 'day', maxCount: 1_000_000_000, when: { chainId: [2 ** 32 - 1] } }],
      }),
    };
    expect(openProjectRecord(signRecord(record), identity.publicKey).record).toEqual(record);
    // Beyond 2^53 - 1 is no chain id of the schema's: refused, as any invalid policy.
    const beyond = canonicalCbor({
      ...PROJECT,
      policies: { rules: [{ name: 'a', effect: 'allow', when: { chainId: [2n ** 53n] } }], limits: [] },
    });
    expect(refusal(() => decodeProjectRecord(beyond))).toEqual(malformed('policies is not a valid policy'));
  });

  it('takes a policy up to the size limit: a 32 KiB record verifies and decodes', () => {
    // Rules of up to 256 distinct addresses each (an address is 43 bytes of CBOR), in the normalized form.
    const addresses = Array.from({ length: 1024 }, (_, i) =>
      getAddress(`0x${createHash('sha256').update(String(i)).digest('hex').slice(0, 40)}`),
    );
    const recordWith = (count: number): ProjectRecord => ({
      ...PROJECT,
      policies: {
        rules: Array.from({ length: Math.ceil(count / 256) }, (_, r) => ({
          name: `r${r}`,
          effect: 'allow' as const,
          when: { to: addresses.slice(256 * r, Math.min(count, 256 * (r + 1))) },
        })),
        limits: [],
      },
    });
    let n = 1; // the most addresses that fit, by bisection
    for (let hi = addresses.length; hi - n > 1;) {
      const mid = (n + hi) >> 1;
      if (encodeRecord(recordWith(mid)).length <= MAX_RECORD_BYTES) n = mid;
      else hi = mid;
    }
    const largest = recordWith(n);
    expect(PoliciesSchema.parse(largest.policies)).toEqual(largest.policies);
    const bytes = encodeRecord(largest);
    expect(bytes.length).toBeGreaterThan(MAX_RECORD_BYTES - 64);
    expect(bytes.length).toBeLessThanOrEqual(32_768);
    expect(openProjectRecord(signRecord(largest), identity.publicKey).record).toEqual(largest);
    // One address more and nobody verifies it.
    expect(refusal(() => openProjectRecord(signRecord(recordWith(n + 1)), identity.publicKey))).toEqual(NOT_VERIFIED);
  });

  it.each<[string, unknown, string]>([
    ['an empty policy', { rules: [], limits: [] }, 'policies is empty (a project without policies has no field)'],
    [
      'a lower-case address',
      { rules: [{ name: 'a', effect: 'allow', when: { to: [USDC.toLowerCase()] } }], limits: [] },
      'policies is not in normalized form',
    ],
    [
      'an upper-case selector',
      { rules: [{ name: 'a', effect: 'allow', when: { selector: ['0xA9059CBB'] } }], limits: [] },
      'policies is not in normalized form',
    ],
    [
      'an amount with a leading zero',
      { rules: [{ name: 'a', effect: 'allow', when: { maxValue: '0100' } }], limits: [] },
      'policies is not in normalized form',
    ],
    [
      'a rule without its (default) condition',
      { rules: [{ name: 'a', effect: 'allow' }], limits: [] },
      'policies is not in normalized form',
    ],
    ['no limits field', { rules: [{ name: 'a', effect: 'allow', when: {} }] }, 'policies is not in normalized form'],
    [
      'a bad checksum',
      { rules: [{ name: 'a', effect: 'allow', when: { to: [USDC.replace('A0b', 'a0B')] } }], limits: [] },
      'policies is not a valid policy',
    ],
    [
      'an unknown condition field',
      { rules: [{ name: 'a', effect: 'allow', when: { value: '1' } }], limits: [] },
      'policies is not a valid policy',
    ],
    [
      'an unknown erc20 field',
      { rules: [{ name: 'a', effect: 'allow', when: { erc20: { token: [USDC] } } }], limits: [] },
      'policies is not a valid policy',
    ],
    ['an unknown top-level field', { rules: [], limits: [], version: 1 }, 'policies is not a valid policy'],
    [
      'an amount as a number',
      { rules: [{ name: 'a', effect: 'allow', when: { maxValue: 100 } }], limits: [] },
      'policies is not a valid policy',
    ],
    ['an empty list', { rules: [{ name: 'a', effect: 'allow', when: { chainId: [] } }], limits: [] }, 'policies is not a valid policy'],
    [
      'a repeated name',
      { rules: [{ name: 'a', effect: 'allow', when: {} }], limits: [{ name: 'a', scope: 'key', window: 'hour', maxCount: 1 }] },
      'policies is not a valid policy',
    ],
    ['a limit without a maximum', { rules: [], limits: [{ name: 'l', scope: 'key', window: 'hour' }] }, 'policies is not a valid policy'],
    ['policies as text', 'deny everything', 'policies is not a valid policy'],
    ['policies null', null, 'policies is not a valid policy'],
    [
      'a map with an integer key',
      new Map<unknown, unknown>([
        [1, []],
        ['rules', []],
      ]),
      'policies has a key that is not text',
    ],
  ])('refuses %s', (_name, policies, what) => {
    expect(bad(policies)).toEqual(malformed(what));
  });

  it('refuses a policy nested deeper than the language nests', () => {
    // A list inside a list, where an address goes: depth 8.
    const deep = { rules: [{ name: 'a', effect: 'allow', when: { erc20: { recipient: [[USDC]] } } }], limits: [] };
    expect(bad(deep)).toEqual(malformed('not canonical CBOR'));
    // One level less is decoded, and refused by the schema.
    expect(bad({ rules: [{ name: 'a', effect: 'allow', when: { erc20: { recipient: [] } } }], limits: [] })).toEqual(
      malformed('policies is not a valid policy'),
    );
  });
});

describe('record chains', () => {
  it("name the previous record by its digest: seq n+1's prev is recordDigest of seq n", () => {
    const r0 = signRecord(KEY);
    const r1rec: KeyRecord = { ...KEY, disabled: true, seq: 1, prev: hex(recordDigest(Buffer.from(r0.record, 'base64'))) };
    const r1 = openKeyRecord(signRecord(r1rec), identity.publicKey);
    expect(r1.record.prev).toBe(hex(openKeyRecord(r0, identity.publicKey).digest));
    expect(r1.digest).not.toEqual(openKeyRecord(r0, identity.publicKey).digest);
  });
});
