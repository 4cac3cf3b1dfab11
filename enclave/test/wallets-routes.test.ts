/**
 * The TrueWallet routes served by the enclave over real HTTPS (docs/TLS.md, docs/PROJECTS.md): the real enclave
 * bundle on the simulated platform, the test CA trusted, real JWTs from a simulated IdP whose JWKS the enclave
 * fetches itself, and the test in the parent's seat (wallets-setup.ts). What the parent's routes answered, the
 * enclave's answer now: shapes, status codes, the SDK's error format, CORS and every rate limit; plus health and
 * the TLS attestation, and that nothing the parent sees (the store's calls) holds a JWT or a body.
 */
import { createPublicKey, X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { getBytes, Signature, TypedDataEncoder, verifyMessage, verifyTypedData } from 'ethers';
import { tlsUserData } from '@nks/shared/attestation/user-data';
import { decodeKeyRecord } from '@nks/shared/records';
import { jwtSubject } from '@nks/shared/project-auth';
import { decodeAttestationDocument } from '@nks/shared/attestation/document';
import { UNAVAILABLE_DETAILS } from '../src/wallets/answers';
import { NAME, ORIGIN, startWalletsRig, type Answer, type WalletsRig } from './wallets-setup';

/** secp256k1's order: a low-s signature has s ≤ n/2. */
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

function expectWalletSignature(signature: string, message: { hash: string } | { text: string }, address: string): void {
  expect(signature).toMatch(/^0x[0-9a-f]{130}$/);
  expect([27, 28]).toContain(parseInt(signature.slice(130), 16));
  expect(BigInt(Signature.from(signature).s) <= N / 2n).toBe(true);
  const recovered = 'hash' in message ? verifyMessage(getBytes(message.hash), signature) : verifyMessage(message.text, signature);
  expect(recovered).toBe(address);
}

const expectDetail = (res: Answer, status: number, detail: unknown) =>
  expect({ status: res.status, body: res.body }).toEqual({ status, body: { detail } });

describe('the wallet routes in the enclave, over HTTPS', () => {
  let w: WalletsRig;

  beforeAll(async () => {
    w = await startWalletsRig({
      wallets: { rateLimits: { perAddress: 8, failuresPerAddress: 3, perProject: 12, perUser: 6 } },
    });
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  const forged = async (sub: string) => (await w.mint(sub)).replace(/\.[^.]+$/, '.c2lnbmF0dXJl');

  it('serves TLS 1.2+ with the installed chain for its name, and answers health and a fresh TLS attestation', async () => {
    const socket = tls.connect({ host: '127.0.0.1', port: w.ingress.port, servername: NAME, ca: w.ca.caPem });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    const leaf = socket.getPeerX509Certificate() as X509Certificate;
    expect([socket.authorized, leaf.subjectAltName, ['TLSv1.2', 'TLSv1.3'].includes(socket.getProtocol() ?? '')]).toEqual([
      true,
      `DNS:${NAME}`,
      true,
    ]);
    socket.destroy();
    // Older protocols are refused by the enclave (the client offers TLS 1.1, which it may at security level 0).
    const old = tls.connect({
      host: '127.0.0.1',
      port: w.ingress.port,
      servername: NAME,
      ca: w.ca.caPem,
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    const refused = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      old.once('secureConnect', () => resolve(null)).once('error', resolve);
    });
    old.destroy();
    expect(refused?.code).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');

    const health = await w.call('/v1/health', { from: '127.0.1.1' });
    expect([health.status, health.body]).toEqual([200, { status: 'ok', tls: 'installed' }]);
    expect(health.headers['x-request-id']).toEqual(expect.any(String));

    const nonce = 'ab'.repeat(16);
    const att = await w.call(`/v1/tls/attestation?nonce=${nonce}`, { from: '127.0.1.1' });
    expect(att.status).toBe(200);
    const spki = Buffer.from(att.body.publicKey, 'base64');
    // The key the attestation binds is the key the certificate names.
    expect(spki.equals(leaf.publicKey.export({ format: 'der', type: 'spki' }))).toBe(true);
    expect(createPublicKey({ key: spki, format: 'der', type: 'spki' }).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const { document: doc } = decodeAttestationDocument(Buffer.from(att.body.document, 'base64'));
    expect(doc.userData?.equals(tlsUserData(spki))).toBe(true);
    expect(doc.nonce?.toString('hex')).toBe(nonce);

    for (const bad of ['', '?nonce=abc', '?nonce=0x' + 'ab'.repeat(16), `?nonce=${'ab'.repeat(4)}`, `?nonce=${nonce}&nonce=${nonce}`]) {
      const res = await w.call(`/v1/tls/attestation${bad}`, { from: '127.0.1.2' });
      expect([bad, res.status, Object.keys(res.body.detail)]).toEqual([bad, 400, [expect.stringMatching(/^(nonce|query)$/)]]);
    }
  });

  it('get-address makes the user key on first use, answers the same address after; concurrent first calls make one key', async () => {
    const project = await w.newProject();
    const first = await w.wallet(project.projectKey, 'get-address', { jwt_token: await w.mint('alice') }, { from: '127.0.2.1' });
    expect([first.status, first.body]).toEqual([200, { address: expect.stringMatching(/^0x[0-9a-fA-F]{40}$/) }]);
    const again = await w.wallet(
      project.projectKey,
      'get-address',
      { jwt_token: await w.mint('alice', {}, { alg: 'ES256' }) },
      { from: '127.0.2.1' },
    );
    expect(again.body).toEqual(first.body);
    const stored = w.store.userKey(project.projectId, jwtSubject(w.idp.issuer, 'alice') as string);
    expect(decodeKeyRecord(Buffer.from(stored?.record.record as string, 'base64'))).toMatchObject({
      address: first.body.address,
      projectId: project.projectId,
      subject: JSON.stringify([w.idp.issuer, 'alice']),
      origin: 'created',
    });

    // Six first calls at once (from six addresses: one address has failuresPerAddress in flight at most).
    const tokens = await Promise.all(Array.from({ length: 6 }, () => w.mint('bob')));
    const answers = await Promise.all(
      tokens.map((jwt_token, i) => w.wallet(project.projectKey, 'get-address', { jwt_token }, { from: `127.0.2.${10 + i}` })),
    );
    expect(answers.map((a) => a.status)).toEqual(tokens.map(() => 200));
    expect(new Set(answers.map((a) => a.body.address)).size).toBe(1);
    expect(answers[0]?.body.address).not.toBe(first.body.address);
    expect(
      w.store.keys().filter((k) => decodeKeyRecord(Buffer.from(k.record.record, 'base64')).projectId === project.projectId),
    ).toHaveLength(2);
  });

  it('signs a hash (EIP-191 over its 32 bytes) and a text; sign-request answers the full result; a first sign makes the key', async () => {
    const project = await w.newProject();
    const jwt = await w.mint('carol');
    const from = { from: '127.0.3.1' };
    const first = await w.wallet(
      project.projectKey,
      'sign',
      { message: 'first', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' },
      from,
    );
    expect(first.status).toBe(200);
    const { address } = (await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, from)).body;
    expectWalletSignature(first.body.signature, { text: 'first' }, address);

    const hash = `0x${'c3'.repeat(32)}`;
    const h = await w.wallet(project.projectKey, 'sign', { message: hash, jwt_token: jwt, message_type: 'hash', wallet_type: 'evm' }, from);
    expect([h.status, Object.keys(h.body)]).toEqual([200, ['signature']]);
    expectWalletSignature(h.body.signature, { hash }, address);

    const typedData = {
      domain: { name: 'Wallet app', version: '1', chainId: 1, verifyingContract: '0x000000000000000000000000000000000000dEaD' },
      types: { Mail: [{ name: 'contents', type: 'string' }] },
      primaryType: 'Mail',
      message: { contents: 'hello' },
    };
    const full = await w.wallet(project.projectKey, 'sign-request', { jwt_token: jwt, request: { type: 'typedData', typedData } }, from);
    expect(full.status).toBe(200);
    expect(full.body).toEqual({
      signature: expect.stringMatching(/^0x[0-9a-f]{130}$/),
      r: expect.any(String),
      s: expect.any(String),
      v: expect.any(Number),
      yParity: expect.any(Number),
      hash: TypedDataEncoder.hash(typedData.domain, typedData.types, typedData.message),
      address,
    });
    expect(verifyTypedData(typedData.domain, typedData.types, typedData.message, full.body.signature)).toBe(address);
  });

  it('answers every refusal in the SDK format', async () => {
    const project = await w.newProject({ allowedRequestTypes: ['message'] });
    const jwt = await w.mint('dave');
    let n = 0;
    // Each from its own address: the failures below would spend one address's budget.
    const next = () => ({ from: `127.0.4.${++n}` });
    const signBody = (over: Record<string, unknown> = {}) => ({
      message: 'x',
      jwt_token: jwt,
      message_type: 'message',
      wallet_type: 'evm',
      ...over,
    });
    // 401: unknown key, a token project, a disabled project.
    expectDetail(await w.wallet(`pk_${'Q'.repeat(22)}`, 'get-address', { jwt_token: jwt }, next()), 401, 'unknown project key');
    w.store.putProject(w.h.defaultProject);
    expectDetail(await w.wallet('default', 'get-address', { jwt_token: jwt }, next()), 401, 'this project does not take JWTs');
    const other = await w.newProject();
    w.store.putProject(await w.h.client.call('projects.setState', { project: other.record, state: 'disabled' }));
    expectDetail(await w.wallet(other.projectKey, 'sign', signBody(), next()), 401, 'this project is disabled');
    // 400: the body, field by field.
    const p = project.projectKey;
    expectDetail(await w.wallet(p, 'get-address', undefined, { method: 'POST', ...next() }), 400, { body: ['a JSON body is required'] });
    expectDetail(await w.wallet(p, 'get-address', {}, next()), 400, { jwt_token: [expect.any(String)] });
    expectDetail(await w.wallet(p, 'get-address', { jwt_token: jwt, extra: 1 }, next()), 400, { extra: ['unknown field'] });
    expectDetail(await w.wallet(p, 'get-address', { jwt_token: 'x'.repeat(8193) }, next()), 400, {
      jwt_token: ['expected a JWT of at most 8192 bytes'],
    });
    expectDetail(await w.wallet(p, 'get-address', '{"jwt_token":', { headers: { 'content-type': 'application/json' }, ...next() }), 400, {
      body: ['request body is not valid JSON'],
    });
    expectDetail(
      await w.wallet(p, 'get-address', JSON.stringify({ jwt_token: jwt }), { headers: { 'content-type': 'text/plain' }, ...next() }),
      400,
      {
        body: ['request body must be application/json'],
      },
    );
    const huge = await w.wallet(p, 'get-address', { jwt_token: 'x'.repeat(300_000) }, next());
    expect([huge.status, huge.body.detail.body]).toEqual([400, [expect.stringMatching(/exceeds the \d+-byte limit/)]]);
    expectDetail(await w.wallet(p, 'sign', signBody({ message_type: 'hash' }), next()), 400, {
      message: ['expected 32 bytes as 0x-prefixed hex when message_type is "hash"'],
    });
    expectDetail(await w.wallet(p, 'sign', signBody({ wallet_type: 'solana' }), next()), 400, { wallet_type: [expect.any(String)] });
    expectDetail(await w.wallet(p, 'sign-request', { jwt_token: jwt, request: { type: 'message' } }, next()), 400, {
      request: [expect.stringMatching(/^message: /)],
    });
    expectDetail(
      await w.wallet(p, 'sign-request', { jwt_token: jwt, request: { type: 'digest', digest: `0x${'11'.repeat(32)}` } }, next()),
      400,
      {
        request: ['type digest is not allowed for this project'],
      },
    );
  });

  it('refuses JWTs the enclave does not verify (400 jwt_token); 409 for a disabled key; 503 with Retry-After and a fixed text when the JWKS cannot be had', async () => {
    const project = await w.newProject();
    const p = project.projectKey;
    let n = 0;
    const next = () => ({ from: `127.0.5.${++n}` });
    const now = Math.floor(Date.now() / 1000);
    for (const [jwt, reason] of [
      ['not.a.jwt', /malformed/],
      [await forged('erin'), /does not verify/],
      [await w.mint('erin', { iat: now - 1000, exp: now - 500 }), /expired/],
      [await w.mint('erin', { aud: 'another-app' }), /audience/],
      [await w.mint('erin', { iss: 'https://issuer.example' }), /issuer/],
      [await w.idp.mint({}), /"sub"/],
    ] as const) {
      expectDetail(await w.wallet(p, 'get-address', { jwt_token: jwt }, next()), 400, { jwt_token: [expect.stringMatching(reason)] });
    }

    const jwt = await w.mint('erin');
    const from = next();
    expect((await w.wallet(p, 'get-address', { jwt_token: jwt }, from)).status).toBe(200);
    const key = w.store.userKey(project.projectId, jwtSubject(w.idp.issuer, 'erin') as string);
    if (!key) throw new Error('no key stored');
    const { record } = await w.h.client.call('keys.setDisabled', { record: key.record, project: project.record, disabled: true });
    w.store.putUserKey({ ...key, record });
    const signBody = { message: 'x', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' };
    expectDetail(await w.wallet(p, 'sign', signBody, from), 409, 'the key is disabled');

    const noJwks = await w.newProject({
      auth: { type: 'jwt', issuer: w.idp.issuer, audience: w.idp.audience, jwksUri: `${w.idp.issuer}/missing.json` },
    });
    const down = await w.wallet(noJwks.projectKey, 'get-address', { jwt_token: jwt }, next());
    expectDetail(down, 503, UNAVAILABLE_DETAILS.jwks);
    expect(down.headers['retry-after']).toBe('1');
    // The reason is in the enclave's log, with the request id, for operators.
    await w.h.enclave.waitForLog((e) => e.requestId === down.headers['x-request-id'] && e.code === 'JWKS_UNAVAILABLE');
  });

  it('allows CORS for exactly the project origins: answers, errors and preflight; others get no CORS headers', async () => {
    const project = await w.newProject();
    const jwt = await w.mint('frank');
    const from = { from: '127.0.6.1' };
    const ok = await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: ORIGIN }, ...from });
    expect(ok.status).toBe(200);
    expect(ok.headers['access-control-allow-origin']).toBe(ORIGIN);
    expect(ok.headers['access-control-allow-credentials']).toBeUndefined();
    expect(ok.headers['access-control-expose-headers']).toBe('retry-after, x-request-id');
    expect(ok.headers.vary).toMatch(/Origin/);
    const err = await w.wallet(project.projectKey, 'get-address', { jwt_token: 'x' }, { headers: { origin: ORIGIN }, from: '127.0.6.2' });
    expect([err.status, err.headers['access-control-allow-origin']]).toEqual([400, ORIGIN]);
    const evil = await w.wallet(
      project.projectKey,
      'get-address',
      { jwt_token: jwt },
      { headers: { origin: 'https://evil.example' }, ...from },
    );
    expect(evil.status).toBe(200); // not a browser: CORS only withholds the answer from pages
    expect(evil.headers['access-control-allow-origin']).toBeUndefined();

    const preflight = (origin: string, key = project.projectKey) =>
      w.call(`/v1/${key}/wallets/sign`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
        ...from,
      });
    const pre = await preflight(ORIGIN);
    expect(pre.status).toBe(204);
    expect(pre.headers).toMatchObject({
      'access-control-allow-origin': ORIGIN,
      'access-control-allow-methods': 'POST',
      'access-control-allow-headers': 'content-type',
      'access-control-max-age': '600',
    });
    expect(pre.headers['access-control-allow-credentials']).toBeUndefined();
    for (const refused of [
      await preflight('https://evil.example'),
      await preflight('null'),
      await preflight(ORIGIN, `pk_${'Q'.repeat(22)}`),
    ]) {
      expect([refused.status, refused.body]).toEqual([404, { detail: expect.any(String) }]);
      expect(refused.headers['access-control-allow-origin']).toBeUndefined();
      expect(refused.headers['access-control-allow-methods']).toBeUndefined();
    }
    // Only these routes: health has no CORS.
    expect((await w.call('/v1/health', { headers: { origin: ORIGIN }, ...from })).headers['access-control-allow-origin']).toBeUndefined();
  });

  it('answers 404 and 405 (with Allow) in the {detail} shape, and echoes a well-formed x-request-id', async () => {
    const project = await w.newProject();
    const from = { from: '127.0.7.1' };
    const unknown = await w.wallet(project.projectKey, 'verify', { jwt_token: 'x' }, from);
    expect([unknown.status, unknown.body]).toEqual([404, { detail: expect.stringMatching(/^no route for /) }]);
    const get = await w.call(`/v1/${project.projectKey}/wallets/sign`, from);
    expect([get.status, get.body, get.headers.allow]).toEqual([405, { detail: expect.any(String) }, 'POST']);
    const post = await w.call('/v1/health', { method: 'POST', body: {}, ...from });
    expect([post.status, post.headers.allow]).toEqual([405, 'GET']);
    expect((await w.call('/v1/keys', from)).status).toBe(404);
    expect((await w.call('/%zz', from)).status).toBe(404);
    expect((await w.call('/v1/health', { headers: { 'x-request-id': 'trace-42' }, ...from })).headers['x-request-id']).toBe('trace-42');
    const bad = await w.call('/v1/health', { headers: { 'x-request-id': 'no spaces' }, ...from });
    expect(bad.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("limits requests per client address (the preamble's): 403 with Retry-After, before the project is looked up; another address is another client", async () => {
    const project = await w.newProject();
    const jwt = await w.mint('gina');
    const from = { from: '127.0.8.1' };
    // Eight users behind one address (a NAT): each within its own limit, the address at its.
    for (let i = 0; i < 8; i++)
      expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: await w.mint(`gina${i}`) }, from)).status).toBe(200);
    const lookups = w.store.calls.filter((c) => c.method === 'store.project').length;
    const limited = await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: ORIGIN }, ...from });
    expectDetail(limited, 403, 'too many requests from this address; retry later');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Refused before CORS asks the store for the project: no store call, hence no CORS headers.
    expect(w.store.calls.filter((c) => c.method === 'store.project').length).toBe(lookups);
    expect(limited.headers['access-control-allow-origin']).toBeUndefined();
    // The TLS attestation (an NSM call each) is limited per address too.
    const attest = () => w.call(`/v1/tls/attestation?nonce=${'cd'.repeat(8)}`, { from: '127.0.8.3' });
    for (let i = 0; i < 8; i++) expect((await attest()).status).toBe(200);
    const refused = await attest();
    expectDetail(refused, 403, 'too many requests from this address; retry later');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: await w.mint('gina2') }, { from: '127.0.8.2' })).status).toBe(
      200,
    );
  });

  it('limits requests per verified user, counting what the vault served; forged tokens naming the user spend nothing', async () => {
    const project = await w.newProject();
    for (let i = 0; i < 8; i++) {
      expectDetail(
        await w.wallet(project.projectKey, 'get-address', { jwt_token: await forged('hana') }, { from: `127.0.9.${10 + i}` }),
        400,
        {
          jwt_token: ['the JWT signature does not verify'],
        },
      );
    }
    const jwt = await w.mint('hana');
    for (let i = 0; i < 6; i++)
      expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: `127.0.9.${30 + i}` })).status).toBe(200);
    const signs = (await w.health()).counters.signs;
    const limited = await w.wallet(
      project.projectKey,
      'sign',
      { message: 'x', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' },
      { from: '127.0.9.40' },
    );
    expectDetail(limited, 403, 'too many requests for this user; retry later');
    // Counted once the vault had answered: the over-limit signature was made, and dropped.
    expect((await w.health()).counters.signs).toBe(signs + 1);
    // A forged token naming the busy user is refused as any other (no "this user is busy" without their JWT).
    expectDetail(await w.wallet(project.projectKey, 'get-address', { jwt_token: await forged('hana') }, { from: '127.0.9.41' }), 400, {
      jwt_token: ['the JWT signature does not verify'],
    });
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: await w.mint('ivan') }, { from: '127.0.9.42' })).status).toBe(
      200,
    );
  });

  it('limits failures per client address without locking the user out from another address; bad bodies are not failures', async () => {
    const project = await w.newProject();
    const jwt = await w.mint('judy');
    const attacker = { from: '127.0.10.1' };
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: await forged('judy') }, attacker)).status).toBe(400);
    expect((await w.wallet(`pk_${'Q'.repeat(22)}`, 'get-address', { jwt_token: jwt }, attacker)).status).toBe(401);
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: 'garbage' }, attacker)).status).toBe(400);
    const locked = await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, attacker);
    expectDetail(locked, 403, 'too many failed requests from this address; retry later');
    expect(Number(locked.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.10.2' })).status).toBe(200);
    for (let i = 0; i < 4; i++)
      expect((await w.wallet(project.projectKey, 'get-address', { nope: 1 }, { from: '127.0.10.3' })).status).toBe(400);
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.10.3' })).status).toBe(200);
  });

  it('holds the failure budget for each request in flight: a burst of forged tokens gets no further than the budget', async () => {
    const project = await w.newProject();
    // The store is slow: the whole burst is admitted before the first failure is known.
    const from = { from: '127.0.11.1' };
    const token = await forged('kim');
    w.store.delayMs = 300;
    let answers: Answer[];
    try {
      answers = await Promise.all(Array.from({ length: 7 }, () => w.wallet(project.projectKey, 'get-address', { jwt_token: token }, from)));
    } finally {
      w.store.delayMs = 0;
    }
    expect(answers.filter((a) => a.status === 400)).toHaveLength(3);
    const held = answers.filter((a) => a.status === 403);
    expect(held).toHaveLength(4);
    for (const a of held) expectDetail(a, 403, 'too many requests in progress from this address; retry shortly');
    expectDetail(
      await w.wallet(project.projectKey, 'get-address', { jwt_token: await w.mint('kim') }, from),
      403,
      'too many failed requests from this address; retry later',
    );
    // Successes give their hold back: another address makes more requests than its budget, one after another.
    const jwt = await w.mint('kim');
    for (let i = 0; i < 5; i++)
      expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.11.2' })).status).toBe(200);
  });

  it("limits a project's served requests", async () => {
    const project = await w.newProject();
    for (let i = 0; i < 12; i++)
      expect(
        (await w.wallet(project.projectKey, 'get-address', { jwt_token: await w.mint(`m${i}`) }, { from: `127.0.12.${1 + (i % 4)}` }))
          .status,
      ).toBe(200);
    expectDetail(
      await w.wallet(project.projectKey, 'get-address', { jwt_token: await w.mint('m12') }, { from: '127.0.12.9' }),
      403,
      "this project's request quota is used up for now; retry later",
    );
    const other = await w.newProject();
    expect((await w.wallet(other.projectKey, 'get-address', { jwt_token: await w.mint('m12') }, { from: '127.0.12.9' })).status).toBe(200);
  });

  it('never lets a JWT or a request body reach the parent: the relay carries ciphertext, the store calls and vsock hold neither', async () => {
    const project = await w.newProject();
    const jwt = await w.mint('leo');
    const marker = 'a body the parent must never read 7f3a9c';
    const res = await w.wallet(
      project.projectKey,
      'sign',
      { message: marker, jwt_token: jwt, message_type: 'message', wallet_type: 'evm' },
      { from: '127.0.13.1' },
    );
    expect(res.status).toBe(200);
    const [header, payload, signature] = jwt.split('.') as [string, string, string];
    const parentSaw = Buffer.concat([...w.ingress.seen, w.h.recorded.bytes(), Buffer.from(JSON.stringify(w.store.calls))]);
    for (const secret of [payload, signature, marker, Buffer.from(marker).toString('base64')])
      expect(parentSaw.includes(secret)).toBe(false);
    // (The header is the IdP's, the same in every token: not a secret.)
    expect(header.length).toBeGreaterThan(0);
    expect(w.store.calls.map((c) => c.method)).toEqual(expect.arrayContaining(['store.project', 'store.userKey', 'store.insertUserKey']));
  });

  it("answers a sign the project's policy refuses with 403 {detail} naming the rule or limit: no failure, no quota spent", async () => {
    const project = await w.newProject({
      allowedRequestTypes: ['message', 'typedData'],
      policies: {
        rules: [{ name: 'texts', effect: 'allow', when: { type: ['message'] } }],
        limits: [{ name: 'one a day', scope: 'key', window: 'day', maxCount: 1 }],
      },
    });
    const jwt = await w.mint('erin');
    const typedData = {
      domain: { name: 'Wallet app', chainId: 1 },
      types: { Mail: [{ name: 'contents', type: 'string' }] },
      primaryType: 'Mail',
      message: { contents: 'hello' },
    };
    const body = (message: string) => ({ message, jwt_token: jwt, message_type: 'message', wallet_type: 'evm' });
    // More refusals from one address than its failure budget (3): a policy's refusal is no failure.
    const from = { from: '127.0.16.1' };
    for (let i = 0; i < 4; i++) {
      const denied = await w.wallet(
        project.projectKey,
        'sign-request',
        { jwt_token: jwt, request: { type: 'typedData', typedData } },
        from,
      );
      expectDetail(denied, 403, `denied by the project's policy (no rule allows it): rule "texts": type typedData is not in the list`);
      expect(denied.headers['retry-after']).toBeUndefined();
    }
    expect((await w.wallet(project.projectKey, 'sign', body('hi'), from)).status).toBe(200);
    expectDetail(
      await w.wallet(project.projectKey, 'sign', body('again'), from),
      403,
      `denied by the project's policy (limit "one a day"): 1 signature in the last day, the maximum is 1`,
    );
  });

  it('counts its answers by outcome in enclave.health, and says nothing internal in its own health', async () => {
    const h = await w.health();
    expect(h.wallets).toEqual({
      connections: expect.any(Number),
      connectionsRefused: 0,
      connectionsEvicted: 0,
      handshakeFailures: expect.any(Number),
      requests: expect.objectContaining({
        ok: expect.any(Number),
        bad_request: expect.any(Number),
        invalid_jwt: expect.any(Number),
        unauthorized: expect.any(Number),
        rate_limited: expect.any(Number),
        conflict: 1,
        unavailable: 1,
        policy_denied: 5,
        not_found: expect.any(Number),
      }),
    });
    expect(h.tls).toMatchObject({ state: 'installed', names: [NAME] });
    expect(Object.keys((await w.call('/v1/health', { from: '127.0.14.1' })).body).sort()).toEqual(['status', 'tls']);
  });
});
