/**
 * The JWT parts of the enclave in process (enclave/src/auth): the JWKS rules and cache (with a clock and a
 * fetcher of the test's), the clock check against a simulated NSM whose time the test shifts, the verifier's
 * messages, the HTTPS fetch through an egress relay that the test owns, and the cost of a warm verification.
 * The same parts in the real enclave bundle: jwt-projects.test.ts.
 */
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { SignJWT, type JWK } from 'jose';
import { USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import type { KeystoreError } from '@nks/shared/errors';
import { JWT_MAX_BYTES, jwtSubject, type JwtProjectAuth } from '@nks/shared/project-auth';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { rejection, sleep, tempRunDir } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { makeTestCa, type TestCa } from '../../sim/src/idp/tls';
import { SimulatedNitroCa } from '../../sim/src/nsm/ca';
import { SimulatedNsm } from '../../sim/src/nsm/device';
import { startOpenRelay, type OpenRelay } from '../../test/support/open-relay';
import { ClockCheck, CLOCK_NOT_TRUSTED_MESSAGE } from '../src/auth/clock';
import { httpsGet, type HttpsGetOptions } from '../src/auth/https-get';
import { JwksCache, maxAgeMs, parseJwks, type JwksLimits } from '../src/auth/jwks';
import { JwtVerifier, KID_REQUIRED_MESSAGE } from '../src/auth/jwt';
import { ENCLAVE_CONFIG_DEFAULTS, parseEnclaveConfig } from '../src/config';
import { NsmClient } from '../src/nsm/client';
import { startJwksServer, type JwksServer } from './jwks-server';

const LIMITS: JwksLimits = { ...ENCLAVE_CONFIG_DEFAULTS.jwt.jwks };
const rsaJwk = (bits = 2048): JWK => ({
  ...(generateKeyPairSync('rsa', { modulusLength: bits }).publicKey.export({ format: 'jwk' }) as JWK),
  kid: `rsa-${bits}`,
});
const body = (v: unknown) => Buffer.from(JSON.stringify(v));

/** A simulated NSM in process, whose clock is the test's own plus `offset.ms`. */
async function shiftedNsm(): Promise<{ client: NsmClient; offset: { ms: number }; fail: { on: boolean } }> {
  const offset = { ms: 0 };
  const fail = { on: false };
  const nsm = new SimulatedNsm({
    ca: await SimulatedNitroCa.open(null),
    moduleId: 'i-test-enc0',
    pcrs: new Map(),
    now: () => new Date(Date.now() + offset.ms),
  });
  const client = new NsmClient({
    kind: 'simulated',
    request: async (b) => {
      if (fail.on) throw new Error('device gone');
      return nsm.handle(b);
    },
    close: () => undefined,
  });
  return { client, offset, fail };
}

describe('JWKS rules', () => {
  it('takes a set of public RSA, EC and OKP keys', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const ed = generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' });
    expect(parseJwks(body({ keys: [rsaJwk(), ec, ed] }), 20).keys).toHaveLength(3);
    expect(parseJwks(body({ keys: [] }), 20).keys).toEqual([]);
  });

  it('keeps of each key only its public members and what key selection reads', () => {
    const rsa = rsaJwk();
    const [kept] = parseJwks(
      body({ keys: [{ ...rsa, use: 'sig', alg: 'RS256', x5c: ['AAAA'], x5t: 'x', pad: 'x'.repeat(1000) }] }),
      20,
    ).keys;
    expect(kept).toEqual({ kty: 'RSA', kid: rsa.kid, n: rsa.n, e: rsa.e, use: 'sig', alg: 'RS256' });
  });

  it('refuses the whole set for one bad key, too many keys, or a body that is not a key set', () => {
    const good = rsaJwk();
    const priv = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
    const cases: Array<[unknown, string]> = [
      [{ keys: [good, { kty: 'oct', k: 'c2VjcmV0' }] }, 'the JWKS holds a symmetric key'],
      [{ keys: [good, priv] }, 'the JWKS holds private key material'],
      [{ keys: [{ ...good, d: 'AQAB' }] }, 'the JWKS holds private key material'],
      [{ keys: [{ kty: 'AKP', alg: 'ML-DSA-44', pub: 'AA' }] }, 'the JWKS holds a key of another type than RSA, EC or OKP'],
      [{ keys: [{ n: good.n, e: good.e }] }, 'the JWKS holds a key of another type than RSA, EC or OKP'],
      [{ keys: [{ kty: 'RSA', n: 'AA', e: 'AQAB' }] }, 'the JWKS holds an RSA key under 2048 bits'],
      [{ keys: [{ kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }] }, 'a key of the JWKS is malformed'],
      [{ keys: [{ ...good, kid: 7 }] }, 'a key of the JWKS is malformed'],
      [{ keys: [rsaJwk(1024)] }, 'the JWKS holds an RSA key under 2048 bits'],
      [{ keys: Array.from({ length: 21 }, () => good) }, 'the JWKS has more than 20 keys'],
      [{ keys: [good, 'x'] }, 'a key of the JWKS is not an object'],
      [{ keys: {} }, 'the JWKS has no "keys" list'],
      [[good], 'the JWKS has no "keys" list'],
    ];
    for (const [set, message] of cases) expect(() => parseJwks(body(set), 20)).toThrow(message);
    expect(() => parseJwks(Buffer.from('<html>'), 20)).toThrow('the JWKS is not JSON');
    expect(parseJwks(body({ keys: Array.from({ length: 20 }, () => good) }), 20).keys).toHaveLength(20);
  });

  it('reads max-age from Cache-Control, and no-store / no-cache as 0', () => {
    expect(maxAgeMs('public, max-age=300')).toBe(300_000);
    expect(maxAgeMs('max-age="5", must-revalidate')).toBe(5_000);
    expect(maxAgeMs('s-maxage=9')).toBeUndefined();
    expect(maxAgeMs(undefined)).toBeUndefined();
    expect(maxAgeMs('no-store')).toBe(0);
    expect(maxAgeMs('private, no-cache')).toBe(0);
  });
});

describe('JWKS cache', () => {
  const SET = { keys: [rsaJwk()] };
  function cache(limits: Partial<JwksLimits> = {}) {
    const clock = { now: 1_000_000 };
    const calls: string[] = [];
    const answers: Array<() => Promise<{ body: Buffer; cacheControl: string | undefined }>> = [];
    let next: () => Promise<{ body: Buffer; cacheControl: string | undefined }> = async () => ({
      body: body(SET),
      cacheControl: 'max-age=300',
    });
    const c = new JwksCache(
      async (uri) => {
        calls.push(uri);
        return (answers.shift() ?? next)();
      },
      { ...LIMITS, ...limits },
      () => clock.now,
    );
    return {
      c,
      clock,
      calls,
      answers,
      setNext: (f: typeof next) => {
        next = f;
      },
    };
  }

  it('keeps a set for max-age clamped to [minTtl, maxTtl], serves it stale while one refresh runs, and drops it at the hard expiry', async () => {
    const t = cache();
    const first = await t.c.get('https://a/jwks');
    expect([t.calls.length, first.keys, first.staleAt - first.fetchedAt, first.expiresAt - first.fetchedAt]).toEqual([
      1, 1, 300_000, 3600_000,
    ]);
    t.clock.now += 299_000;
    expect(await t.c.get('https://a/jwks')).toBe(first);
    expect(t.calls).toHaveLength(1);
    // Stale: the old set answers at once, and one background refresh replaces it.
    t.clock.now += 2_000;
    expect(await t.c.get('https://a/jwks')).toBe(first);
    expect(await t.c.get('https://a/jwks')).toBe(first);
    await sleep(0);
    expect(t.calls).toHaveLength(2);
    expect(await t.c.get('https://a/jwks')).not.toBe(first);

    // Clamped: max-age=1 is kept the minimum (60 s), max-age=1 day the maximum (1 h), none the minimum.
    for (const [cc, ttl] of [
      ['max-age=1', 60_000],
      ['max-age=86400', 3600_000],
      [undefined, 60_000],
      ['no-store', 60_000],
    ] as const) {
      t.setNext(async () => ({ body: body(SET), cacheControl: cc }));
      const e = await t.c.get(`https://ttl/${cc}`);
      expect([cc, e.staleAt - e.fetchedAt]).toEqual([cc, ttl]);
    }
  });

  it('keeps a stale set while refreshes fail, until the hard expiry; then a fetch failure is JWKS_UNAVAILABLE', async () => {
    const t = cache({ failureRetryMs: 0 });
    const first = await t.c.get('https://a/jwks');
    t.setNext(async () => {
      throw new Error('down');
    });
    t.clock.now += 301_000;
    expect(await t.c.get('https://a/jwks')).toBe(first);
    await sleep(0);
    expect([t.calls.length, t.c.fetchFailures]).toEqual([2, 1]);
    t.clock.now += 3600_000;
    const err = await rejection(t.c.get('https://a/jwks'));
    expect([err.code, err.retryable, err.message]).toEqual(['JWKS_UNAVAILABLE', true, 'the JWKS could not be fetched: the fetch failed']);
    expect(t.c.cached).toBe(0);
  });

  it('answers a failure again without a fetch for failureRetryMs, then fetches', async () => {
    const t = cache({ failureRetryMs: 1_000 });
    t.answers.push(async () => ({ body: body({ keys: [{ kty: 'oct', k: 'AA' }] }), cacheControl: undefined }));
    expect((await rejection(t.c.get('https://a/jwks'))).message).toBe('the JWKS could not be fetched: the JWKS holds a symmetric key');
    expect((await rejection(t.c.get('https://a/jwks'))).message).toBe('the JWKS could not be fetched: the JWKS holds a symmetric key');
    expect(t.calls).toHaveLength(1);
    t.clock.now += 1_000;
    await expect(t.c.get('https://a/jwks')).resolves.toMatchObject({ keys: 1 });
    expect([t.calls.length, t.c.fetches, t.c.fetchFailures]).toEqual([2, 2, 1]);
  });

  it('shares one fetch among concurrent callers of one URI, not of two', async () => {
    const t = cache();
    let release!: () => void;
    t.answers.push(async () => {
      await new Promise<void>((r) => (release = r));
      return { body: body(SET), cacheControl: undefined };
    });
    const waiting = [t.c.get('https://a/jwks'), t.c.get('https://a/jwks'), t.c.refetchForUnknownKid('https://a/jwks')];
    await t.c.get('https://b/jwks');
    expect(t.calls).toEqual(['https://a/jwks', 'https://b/jwks']);
    release();
    const [a, b, c] = await Promise.all(waiting);
    expect(a === b && b === c).toBe(true);
  });

  it('refetches for an unknown key id at most once per unknownKidRefetchMs, counting every fetch of the URI', async () => {
    const t = cache({ unknownKidRefetchMs: 30_000 });
    await t.c.get('https://a/jwks');
    expect(await t.c.refetchForUnknownKid('https://a/jwks')).toBeNull();
    t.clock.now += 29_999;
    expect(await t.c.refetchForUnknownKid('https://a/jwks')).toBeNull();
    t.clock.now += 1;
    expect(await t.c.refetchForUnknownKid('https://a/jwks')).not.toBeNull();
    expect(await t.c.refetchForUnknownKid('https://a/jwks')).toBeNull();
    expect(t.calls).toHaveLength(2);
    // A URI never fetched may be fetched at once.
    expect(await t.c.refetchForUnknownKid('https://new/jwks')).not.toBeNull();
  });

  it('remembers at most maxUris URIs, least recently used dropped first', async () => {
    const t = cache({ maxUris: 2 });
    await t.c.get('https://1/');
    await t.c.get('https://2/');
    await t.c.get('https://1/');
    await t.c.get('https://3/');
    expect(t.c.cached).toBe(2);
    await t.c.get('https://1/');
    await t.c.get('https://2/');
    expect(t.calls).toEqual(['https://1/', 'https://2/', 'https://3/', 'https://2/']);
  });
});

describe('clock check against the NSM timestamp', () => {
  it('trusts the clock within maxDriftMs, refuses beyond it, and trusts it again when a later check passes', async () => {
    const { client, offset } = await shiftedNsm();
    const seen: string[] = [];
    const clock = new ClockCheck(() => client.attest({ tag: USER_DATA_TAGS.attestation }), {
      intervalMs: 3600_000,
      maxDriftMs: 30_000,
      onCheck: (r) => seen.push(r.state),
    });
    expect([clock.state, clock.driftMs]).toEqual(['unchecked', null]);
    // The first check runs when a JWT needs it.
    await clock.assertTrusted();
    expect(clock.state).toBe('trusted');
    expect(Math.abs(clock.driftMs as number)).toBeLessThan(1_000);

    offset.ms = 45_000; // the NSM is 45 s ahead: the enclave clock is 45 s behind
    await clock.check();
    expect(clock.state).toBe('untrusted');
    expect(clock.driftMs).toBeLessThan(-44_000);
    const err = await rejection(clock.assertTrusted());
    expect([err.code, err.retryable, err.message]).toEqual(['JWKS_UNAVAILABLE', true, CLOCK_NOT_TRUSTED_MESSAGE]);

    offset.ms = -29_000;
    await clock.check();
    expect(clock.state).toBe('trusted');
    offset.ms = -31_000;
    await clock.check();
    expect([clock.state, (clock.driftMs as number) > 30_000]).toEqual(['untrusted', true]);
    offset.ms = 0;
    await clock.check();
    await clock.assertTrusted();
    expect(seen).toEqual(['trusted', 'untrusted', 'trusted', 'untrusted', 'trusted']);
  });

  it('does not trust a clock it could not check (NSM failure), and runs on a timer from start()', async () => {
    const { client, fail } = await shiftedNsm();
    fail.on = true;
    const clock = new ClockCheck(() => client.attest({ tag: USER_DATA_TAGS.attestation }), { intervalMs: 1_000, maxDriftMs: 30_000 });
    await expect(clock.assertTrusted()).rejects.toThrow(CLOCK_NOT_TRUSTED_MESSAGE);
    expect(clock.state).toBe('untrusted');
    fail.on = false;
    clock.start();
    try {
      for (let i = 0; i < 300 && clock.state !== 'trusted'; i++) await sleep(10);
      expect(clock.state).toBe('trusted');
    } finally {
      clock.stop();
    }
  });
});

describe('JWT verification (jose, with the JWKS cached)', () => {
  let idp: SimulatedIdp;
  let verifier: JwtVerifier;
  let jwks: JwksCache;
  let auth: JwtProjectAuth;

  beforeAll(async () => {
    idp = await startSimulatedIdp();
    const { client } = await shiftedNsm();
    const clock = new ClockCheck(() => client.attest({ tag: USER_DATA_TAGS.attestation }), { intervalMs: 3600_000, maxDriftMs: 30_000 });
    jwks = new JwksCache(async () => ({ body: body(idp.jwks()), cacheControl: 'max-age=300' }), LIMITS);
    verifier = new JwtVerifier({ jwks, clock });
    auth = {
      type: 'jwt',
      issuer: idp.issuer,
      audience: idp.audience,
      userClaim: 'sub',
      jwksUri: idp.jwksUri,
      algorithms: ['RS256', 'ES256'],
      maxTokenLifetime: 600,
    };
  });
  afterAll(() => idp.close());

  it('answers the subject of a valid RS256 or ES256 JWT, and of another user claim', async () => {
    expect(await verifier.subjectOf(await idp.mint({ sub: 'alice' }), auth)).toBe(jwtSubject(idp.issuer, 'alice'));
    expect(await verifier.subjectOf(await idp.mint({ sub: 'alice' }, { alg: 'ES256' }), auth)).toBe(JSON.stringify([idp.issuer, 'alice']));
    const email = { ...auth, userClaim: 'email' };
    expect(await verifier.subjectOf(await idp.mint({ sub: 'x', email: 'a@b.c' }), email)).toBe(JSON.stringify([idp.issuer, 'a@b.c']));
  });

  it('refuses with INVALID_JWT and a message naming the problem', async () => {
    const now = Math.floor(Date.now() / 1000);
    const rsaPem = createPrivateKey({
      key: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }),
    });
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const cases: Array<[string, string | Promise<string>, string, JwtProjectAuth?]> = [
      ['expired', idp.mint({ sub: 'a', iat: now - 400, exp: now - 61 }), 'the JWT has expired'],
      ['not yet valid', idp.mint({ sub: 'a', nbf: now + 120 }), 'the JWT is not yet valid'],
      ['issued in the future', idp.mint({ sub: 'a', iat: now + 120, exp: now + 300 }), 'the JWT is not yet valid (issued in the future)'],
      ['too long-lived', idp.mint({ sub: 'a' }, { lifetimeS: 601 }), 'the JWT lives longer than the project allows'],
      ['old and long-lived', idp.mint({ sub: 'a', iat: now - 1000, exp: now + 100 }), 'the JWT lives longer than the project allows'],
      ['no iat', idp.mint({ sub: 'a', iat: undefined }), 'the JWT has no "iat" (issue time) claim'],
      ['no exp', idp.mint({ sub: 'a', exp: undefined }), 'the JWT has no "exp" (expiry) claim'],
      ['no aud', idp.mint({ sub: 'a', aud: undefined }), 'the JWT has no "aud" (audience) claim'],
      ['another issuer', idp.mint({ sub: 'a', iss: 'https://evil.example' }), 'the JWT is for another issuer'],
      ['another audience', idp.mint({ sub: 'a', aud: ['x', 'y'] }), 'the JWT is for another audience'],
      ['unknown kid', idp.mint({ sub: 'a' }, { kid: 'nope' }), "the JWT's key is unknown: no key of the project's JWKS matches it"],
      [
        'claim not a string',
        idp.mint({ sub: 42 as unknown as string }),
        'the JWT has no "sub" claim as a string (of at most 1 KiB with the issuer)',
      ],
      ['claim empty', idp.mint({ sub: '' }), 'the JWT has no "sub" claim as a string (of at most 1 KiB with the issuer)'],
      ['claim too long', idp.mint({ sub: 'x'.repeat(1100) }), 'the JWT has no "sub" claim as a string (of at most 1 KiB with the issuer)'],
      [
        'ES256 not allowed',
        idp.mint({ sub: 'a' }, { alg: 'ES256' }),
        "the JWT's algorithm is not allowed by the project",
        { ...auth, algorithms: ['RS256'] },
      ],
      [
        'alg none',
        `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'a', iss: idp.issuer, aud: idp.audience, iat: now, exp: now + 60 })}.`,
        "the JWT's algorithm is not allowed by the project",
      ],
      [
        'signed by another key under a known kid',
        new SignJWT({ sub: 'a', iss: idp.issuer, aud: idp.audience, iat: now, exp: now + 60 })
          .setProtectedHeader({ alg: 'RS256', kid: 'rs-1' })
          .sign(rsaPem),
        'the JWT signature does not verify',
      ],
      ['garbage', 'a.b.c', 'the JWT is malformed'],
      ['not three parts', 'abc', 'the JWT is malformed'],
      ['too large', `${'a'.repeat(JWT_MAX_BYTES)}.b.c`, `the JWT is longer than ${JWT_MAX_BYTES} bytes`],
    ];
    const before = verifier.refusals;
    const got: string[][] = [];
    for (const [name, token, , a] of cases) {
      const err = await rejection(verifier.subjectOf(await token, a ?? auth));
      got.push([name, err.code, err.message]);
    }
    expect(got).toEqual(cases.map(([name, , message]) => [name, 'INVALID_JWT', message]));
    expect(verifier.refusals - before).toBe(cases.length);
  });

  // Review 17 (informational): the issue's rule is "kid required when the JWKS has several keys"; jose alone asks
  // for one only when several keys match the JWT's algorithm.
  it('needs a kid when the set has more than one key, even when only one fits the algorithm', async () => {
    const { client } = await shiftedNsm();
    const clock = new ClockCheck(() => client.attest({ tag: USER_DATA_TAGS.attestation }), { intervalMs: 3600_000, maxDriftMs: 30_000 });
    const over = (keys: JWK[]) =>
      new JwtVerifier({ jwks: new JwksCache(async () => ({ body: body({ keys }), cacheControl: undefined }), LIMITS), clock });
    const noKid = await idp.mint({ sub: 'a' }, { kid: null });
    const [rsa, ec] = idp.jwks().keys as [JWK, JWK];
    // Two RSA keys (both could match), and the IdP's own set (one RSA, one EC key: only one fits RS256).
    expect((await rejection(over([rsa, ec, { ...rsaJwk(), kid: 'rs-2' }]).subjectOf(noKid, auth))).message).toBe(KID_REQUIRED_MESSAGE);
    expect((await rejection(verifier.subjectOf(noKid, auth))).message).toBe(KID_REQUIRED_MESSAGE);
    expect((await rejection(over([rsa, ec]).subjectOf(noKid, auth))).code).toBe('INVALID_JWT');
    // Two keys under the JWT's own kid: which one signed is a guess too.
    expect((await rejection(over([rsa, { ...rsaJwk(), kid: rsa.kid }]).subjectOf(await idp.mint({ sub: 'a' }), auth))).message).toBe(
      "several keys of the project's JWKS match the JWT's key id (kid)",
    );
    // A set of one key: no kid needed; with a kid, several keys are fine.
    expect(await over([rsa]).subjectOf(noKid, auth)).toBe(jwtSubject(idp.issuer, 'a'));
    expect(await over([rsa, ec]).subjectOf(await idp.mint({ sub: 'a' }), auth)).toBe(jwtSubject(idp.issuer, 'a'));
    // The same rule for the set refetched for an unknown key id: a set of one key without kid, then two.
    let keys: JWK[] = [{ ...rsa, kid: undefined }];
    const rotating = new JwtVerifier({
      jwks: new JwksCache(async () => ({ body: body({ keys }), cacheControl: undefined }), { ...LIMITS, unknownKidRefetchMs: 1_000 }),
      clock,
    });
    expect(await rotating.subjectOf(noKid, auth)).toBe(jwtSubject(idp.issuer, 'a'));
    keys = [rsa, ec];
    await sleep(1_100);
    expect(await rotating.subjectOf(await idp.mint({ sub: 'a' }), auth)).toBe(jwtSubject(idp.issuer, 'a')); // unknown kid rs-1: refetched
    expect((await rejection(rotating.subjectOf(noKid, auth))).message).toBe(KID_REQUIRED_MESSAGE);
  });

  // Review 17, F2: jose judged exp by the clock when the check began; the parent could then delay the JWKS
  // fetch (up to fetchTimeoutMs) and have a token accepted after exp + skew.
  it('judges the times again once the key is resolved: a JWT that expires while the JWKS is fetched is refused', async () => {
    const { client } = await shiftedNsm();
    const clock = new ClockCheck(() => client.attest({ tag: USER_DATA_TAGS.attestation }), { intervalMs: 3600_000, maxDriftMs: 30_000 });
    let clockMs = Date.now();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slow = new JwksCache(
      async () => {
        await gate;
        return { body: body(idp.jwks()), cacheControl: undefined };
      },
      LIMITS,
      () => clockMs,
    );
    const v = new JwtVerifier({ jwks: slow, clock, now: () => clockMs });
    const nowS = Math.floor(clockMs / 1000);
    // Acceptable for 10 s more (exp + 60 s skew).
    const token = await idp.mint({ sub: 'a', iat: nowS - 100, exp: nowS - 50 });
    const pending = v.subjectOf(token, auth);
    await sleep(50); // the check is waiting for the set
    clockMs += 11_000;
    release();
    expect([(await rejection(pending)).message, v.refusals]).toEqual(['the JWT has expired', 1]);
    // The set is now cached: the same token with the clock 11 s back verifies (it was the clock that refused).
    clockMs -= 11_000;
    expect(await v.subjectOf(token, auth)).toBe(jwtSubject(idp.issuer, 'a'));
  });

  it("JwtUser.stillValid judges exp, nbf and iat by the clock of now, and the clock's trust", async () => {
    const { client } = await shiftedNsm();
    const clock = new ClockCheck(() => client.attest({ tag: USER_DATA_TAGS.attestation }), { intervalMs: 3600_000, maxDriftMs: 30_000 });
    let clockMs = Date.now();
    const v = new JwtVerifier({ jwks, clock, now: () => clockMs });
    const nowS = Math.floor(clockMs / 1000);
    const expiring = await v.user(await idp.mint({ sub: 'a', iat: nowS - 100, exp: nowS - 50 }), auth);
    expect(expiring.subject).toBe(jwtSubject(idp.issuer, 'a'));
    expect(() => expiring.stillValid()).not.toThrow();
    clockMs += 11_000;
    expect(() => expiring.stillValid()).toThrow('the JWT has expired');
    clockMs -= 11_000;
    // A clock that went back (nbf and iat were accepted within the skew).
    const early = await v.user(await idp.mint({ sub: 'a', iat: nowS + 50, nbf: nowS + 50, exp: nowS + 300 }), auth);
    const future = await v.user(await idp.mint({ sub: 'a', iat: nowS + 50, exp: nowS + 300 }), auth);
    clockMs -= 20_000;
    expect(() => early.stillValid()).toThrow('the JWT is not yet valid');
    expect(() => future.stillValid()).toThrow('the JWT is not yet valid (issued in the future)');
    clockMs += 20_000;
    const refusals = v.refusals;
    expect(() => early.stillValid()).not.toThrow();
    // A clock no longer trusted: JWKS_UNAVAILABLE, not an auth failure (and no refusal counted).
    clock.state = 'untrusted';
    let err: unknown;
    try {
      early.stillValid();
    } catch (e) {
      err = e;
    }
    expect([(err as KeystoreError).code, (err as KeystoreError).message]).toEqual(['JWKS_UNAVAILABLE', CLOCK_NOT_TRUSTED_MESSAGE]);
    expect(v.refusals).toBe(refusals);
  });

  // Its cost is measured by `npm run bench` (the JWT row), never by a timed test; here only that a warm
  // verification touches no network: the JWKS is fetched once and then served from the cache.
  it('verifies warm tokens (RS256 and ES256) from the cached JWKS, without fetching it again', async () => {
    for (const alg of ['RS256', 'ES256'] as const) {
      const token = await idp.mint({ sub: 'warm' }, { alg, lifetimeS: 600 });
      await verifier.subjectOf(token, auth);
      const fetches = jwks.fetches;
      for (let i = 0; i < 20; i++) expect(await verifier.subjectOf(token, auth)).toBe(jwtSubject(idp.issuer, 'warm'));
      expect(jwks.fetches).toBe(fetches);
    }
  });
});

describe('HTTPS through the egress relay (in process, simulated vsock)', () => {
  let ca: TestCa;
  let server: JwksServer;
  let relay: OpenRelay;
  let runDir: string;
  let options: HttpsGetOptions;

  beforeAll(async () => {
    runDir = tempRunDir('nks-egress-');
    ca = await makeTestCa('egress test CA');
    server = await startJwksServer(ca);
    relay = await startOpenRelay(runDir);
    options = {
      transport: new SimulatedVsockTransport(runDir),
      egress: 'vsock://3:8001',
      ca: [ca.caPem],
      timeoutMs: 2_000,
      maxBytes: 64 * 1024,
    };
  });
  afterAll(async () => {
    await relay.close();
    await server.close();
  });
  beforeEach(() => {
    relay.route = (req) => req;
    relay.tamper = null;
  });

  const failure = async (uri: string, o: Partial<HttpsGetOptions> = {}) =>
    (await rejection<Error>(httpsGet(uri, { ...options, ...o }))).message;

  it('fetches a body near the cap intact, in many chunks (backpressure both ways), with its Cache-Control', async () => {
    const big = { keys: [], pad: 'x'.repeat(60 * 1024) };
    server.serve('/big-ok', { body: big, chunked: 1000, cacheControl: 'max-age=77' });
    const answer = await httpsGet(server.url('/big-ok'), options);
    expect(JSON.parse(answer.body.toString())).toEqual(big);
    expect(answer.cacheControl).toBe('max-age=77');
    expect(relay.requests.at(-1)).toEqual({ host: 'localhost', port: server.port });
  });

  it('refuses a body over the cap as soon as it passes it, with or without a Content-Length', async () => {
    server.serve('/over', { body: 'x'.repeat(64 * 1024 + 1) });
    server.serve('/over-chunked', { body: 'x'.repeat(1024 * 1024), chunked: 4096 });
    expect(await failure(server.url('/over'))).toBe('the JWKS is larger than 65536 bytes');
    expect(await failure(server.url('/over-chunked'))).toBe('the JWKS is larger than 65536 bytes');
  });

  it('fails on a status but 200 (a redirect is not followed), a slow server, a refusing or silent relay', async () => {
    server.serve('/moved', { redirectTo: server.url('/big-ok') });
    server.serve('/gone', { status: 404 });
    server.serve('/slow', { delayMs: 3_000 });
    expect(await failure(server.url('/moved'))).toBe('the JWKS server answered HTTP 302 (redirects are not followed)');
    expect(await failure(server.url('/gone'))).toBe('the JWKS server answered HTTP 404');
    expect(await failure(server.url('/slow'), { timeoutMs: 300 })).toBe('the JWKS server did not answer in time');
    relay.route = () => 'refuse';
    expect(await failure(server.url('/gone'))).toBe('the egress relay refused the connection');
    relay.route = () => Buffer.from([0x02, 0x01]);
    expect(await failure(server.url('/gone'))).toBe('the egress relay refused the connection');
    relay.route = () => 'hang';
    expect(await failure(server.url('/gone'), { timeoutMs: 300 })).toBe('the egress relay did not answer in time');
    expect(await failure(server.url('/gone'), { egress: 'vsock://3:9999' })).toBe('the egress relay is not reachable');
  });

  it('ends TLS here: another CA, another name or a changed byte fails it', async () => {
    server.serve('/ok', { body: { keys: [] } });
    expect(await failure(server.url('/ok'), { ca: [] })).toMatch(
      /^TLS with the JWKS server failed \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)$/,
    );
    const other = await startJwksServer(ca, ['other.example']);
    try {
      relay.route = () => ({ host: '127.0.0.1', port: other.port });
      expect(await failure(server.url('/ok'))).toBe('TLS with the JWKS server failed (ERR_TLS_CERT_ALTNAME_INVALID)');
    } finally {
      await other.close();
    }
    relay.route = (req) => req;
    relay.tamper = (chunk, offset) => {
      if (offset > 0 || chunk.length < 100) return chunk;
      const out = Buffer.from(chunk);
      out[out.length - 10] = (out[out.length - 10] as number) ^ 0x40;
      return out;
    };
    expect(await failure(server.url('/ok'))).toMatch(/^TLS with the JWKS server failed \(/);
    relay.tamper = null;
    // An IPv4 host is checked against the certificate's IP addresses (no SNI).
    expect((await httpsGet(server.url('/ok', '127.0.0.1'), options)).body.toString()).toBe('{"keys":[]}');
  });

  it('asks the relay for DNS names and IPv4 addresses only', async () => {
    expect(await failure('https://[::1]:443/jwks')).toBe('the JWKS host is not a DNS name or an IPv4 address');
    expect(await failure('http://localhost/jwks')).toBe('the JWKS URI is not https');
  });
});

describe('enclave configuration: jwt', () => {
  const kms = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const valid = {
    kmsKeyArn: 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab',
    kmsPublicKey: kms.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
  };

  it('takes trusted CAs as PEM certificates and refuses anything else, naming the field', async () => {
    const ca = await makeTestCa();
    expect(parseEnclaveConfig({ ...valid, jwt: { trustedCas: [ca.caPem] } }).jwt.trustedCas).toEqual([ca.caPem]);
    for (const bad of [
      'not a certificate',
      `${ca.caPem}${ca.caPem}`,
      ca.caPem
        .split('\n')
        .filter((_, i) => i !== 3)
        .join('\n'),
    ])
      expect(() => parseEnclaveConfig({ ...valid, jwt: { trustedCas: [bad] } })).toThrow(
        'config.jwt.trustedCas[0]: expected one PEM certificate',
      );
  });

  it('bounds the JWKS limits: they may be lowered, not raised', () => {
    expect(() => parseEnclaveConfig({ ...valid, jwt: { jwks: { maxBytes: 65537 } } })).toThrow('config.jwt.jwks.maxBytes');
    expect(() => parseEnclaveConfig({ ...valid, jwt: { jwks: { maxKeys: 21 } } })).toThrow('config.jwt.jwks.maxKeys');
    expect(() => parseEnclaveConfig({ ...valid, jwt: { jwks: { minTtlMs: 5000, maxTtlMs: 4000 } } })).toThrow('config.jwt.jwks.minTtlMs');
    expect(() => parseEnclaveConfig({ ...valid, jwt: { egress: 'tcp://x' } })).toThrow('config.jwt.egress');
    expect(parseEnclaveConfig({ ...valid, jwt: { jwks: { maxKeys: 5 } } }).jwt.jwks).toEqual({ ...LIMITS, maxKeys: 5 });
  });
});
