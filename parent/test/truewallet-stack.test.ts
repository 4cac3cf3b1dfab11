/**
 * Projects and the TrueWallet API over the real processes (test/support/stack.ts: the enclave bundle on the
 * simulated platform, the parent program), with real JWTs minted by the simulated IdP (jose, RS256 and ES256)
 * and its JWKS fetched by the enclave over HTTPS, through the egress relay, with the IdP's CA in the enclave's
 * configuration (`jwt.trustedCas`). When the parent program runs no egress relay of its own (its configuration
 * has no `egress` section), a stand-in relays to the IdP (test/support/open-relay.ts).
 *
 * The parent's own checks (enclave answers that lie, every 400 of the routes, each rate limit) are tested
 * in this process against the fake enclave (projects.test.ts); this file is what the real enclave answers.
 */
import { getBytes, TypedDataEncoder, verifyTypedData } from 'ethers';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startStack, waitReady, type Stack } from '../../test/support/stack';
import { ParentConfigSchema } from '../src/config';
import { startOpenRelay, type OpenRelay } from '../../test/support/open-relay';
import { call, expectWalletSignature, type Answer, type CallInit } from './wallet-client';

const ORIGIN = 'https://wallet.example';
/** Whether the parent program runs the egress relay itself (once it is wired into its configuration). */
const PARENT_RELAYS = 'egress' in ParentConfigSchema.shape;

describe('projects and the TrueWallet API against the enclave', () => {
  let idp: SimulatedIdp;
  let s: Stack;
  let relay: OpenRelay | undefined;
  let project: { projectId: string; projectKey: string };

  beforeAll(async () => {
    idp = await startSimulatedIdp();
    s = await startStack(tempRunDir('nks-tw-'), {
      enclave: { jwt: { trustedCas: [idp.caPem] } },
      parent: {
        wallets: { rateLimits: { failuresPerAddress: 4, perUser: 20 } },
        ...(PARENT_RELAYS ? { egress: { allowLoopback: true, allowedPorts: [idp.port] } } : {}),
      },
    });
    if (!PARENT_RELAYS) relay = await startOpenRelay(s.runDir);
    await waitReady(s);
    project = (await s.api('/v1/projects', { token: 'admin', body: { name: 'Wallet app', auth: jwtAuth(), allowedOrigins: [ORIGIN] } }))
      .body;
  }, 90_000);
  afterAll(async () => {
    await relay?.close();
    await s?.stop();
    await idp?.close();
  });

  function jwtAuth(over: Record<string, unknown> = {}) {
    return { type: 'jwt', issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri, ...over };
  }
  const wallet = (projectKey: string, route: string, body: unknown, init: CallInit = {}) =>
    call(s.url, `/v1/${projectKey}/wallets/${route}`, { body, ...init });
  const mint = (sub: string, options: Parameters<SimulatedIdp['mint']>[1] = {}, claims: Record<string, unknown> = {}) =>
    idp.mint({ sub, ...claims }, options);
  const expectDetail = (res: Answer, status: number, detail: unknown) => {
    expect({ status: res.status, body: res.body }).toEqual({ status, body: { detail } });
  };
  const keysOf = async (projectId: string) =>
    (
      (await s.api('/v1/keys?limit=1000', { token: 'admin' })).body.keys as Array<{ keyId: string; projectId: string; address: string }>
    ).filter((k) => k.projectId === projectId);

  it('creates a JWT project through the enclave, lists it with the default, disables and enables it', async () => {
    expect(project).toMatchObject({
      projectId: expect.stringMatching(/^p_[A-Za-z0-9_-]{22}$/),
      projectKey: expect.stringMatching(/^pk_[A-Za-z0-9_-]{22}$/),
      name: 'Wallet app',
      auth: { ...jwtAuth(), userClaim: 'sub', algorithms: ['RS256', 'ES256'], maxTokenLifetime: 600 },
      allowedOrigins: [ORIGIN],
      allowedRequestTypes: ['message', 'userOperation', 'typedData'],
      state: 'active',
    });
    const list = await s.api('/v1/projects', { token: 'admin' });
    expect(list.body.projects.map((p: { projectId: string }) => p.projectId).sort()).toEqual(['default', project.projectId].sort());
    expect((await s.api(`/v1/projects/${project.projectId}`, { token: 'admin' })).body).toEqual(project);
    expect((await s.api('/v1/projects', { token: 'full' })).status).toBe(403);

    const other = (await s.api('/v1/projects', { token: 'admin', body: { name: 'Other', auth: jwtAuth() } })).body;
    const jwt = await mint('toggle');
    expect((await wallet(other.projectKey, 'get-address', { jwt_token: jwt })).status).toBe(200);
    expect((await s.api(`/v1/projects/${other.projectId}/disable`, { token: 'admin', method: 'POST' })).body.state).toBe('disabled');
    expectDetail(
      await wallet(other.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.0.20' }),
      401,
      'this project is disabled',
    );
    expect((await s.api(`/v1/projects/${other.projectId}/enable`, { token: 'admin', method: 'POST' })).body.state).toBe('active');
    expect((await wallet(other.projectKey, 'get-address', { jwt_token: jwt })).status).toBe(200);
  });

  it('get-address makes the user key on first use and answers the same address after; concurrent first calls make one key', async () => {
    const first = await wallet(project.projectKey, 'get-address', { jwt_token: await mint('alice') });
    expect([first.status, first.body]).toEqual([200, { address: expect.stringMatching(/^0x[0-9a-fA-F]{40}$/) }]);
    const again = await wallet(project.projectKey, 'get-address', { jwt_token: await mint('alice', { alg: 'ES256' }) });
    expect(again.body).toEqual(first.body);

    const tokens = await Promise.all(Array.from({ length: 6 }, (_, i) => mint('bob', { alg: i % 2 ? 'ES256' : 'RS256' })));
    // From six addresses: one address may have at most failuresPerAddress (4 here) requests in flight.
    const answers = await Promise.all(
      tokens.map((jwt_token, i) => wallet(project.projectKey, 'get-address', { jwt_token }, { from: `127.0.0.${60 + i}` })),
    );
    expect(answers.map((a) => a.status)).toEqual(tokens.map(() => 200));
    expect(new Set(answers.map((a) => a.body.address)).size).toBe(1);
    const keys = await keysOf(project.projectId);
    expect(keys.filter((k) => k.address === answers[0]?.body.address)).toHaveLength(1);
    expect(keys.filter((k) => k.address === first.body.address)).toHaveLength(1);
  });

  it('signs a hash and a text (EIP-191, v 27/28, low s, checked with ethers), and sign-request answers the full result', async () => {
    const jwt = await mint('carol');
    const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).body;
    const hash = `0x${'c3'.repeat(32)}`;
    const h = await wallet(project.projectKey, 'sign', { message: hash, jwt_token: jwt, message_type: 'hash', wallet_type: 'evm' });
    expect([h.status, Object.keys(h.body)]).toEqual([200, ['signature']]);
    expectWalletSignature(h.body.signature, { hash }, address);
    const text = 'Sign in to Wallet app ✓';
    const t = await wallet(project.projectKey, 'sign', { message: text, jwt_token: jwt, message_type: 'message', wallet_type: 'evm' });
    expectWalletSignature(t.body.signature, { text }, address);

    const typedData = {
      domain: { name: 'Wallet app', version: '1', chainId: 1, verifyingContract: '0x000000000000000000000000000000000000dEaD' },
      types: { Mail: [{ name: 'contents', type: 'string' }] },
      primaryType: 'Mail',
      message: { contents: 'hello' },
    };
    const full = await wallet(project.projectKey, 'sign-request', { jwt_token: jwt, request: { type: 'typedData', typedData } });
    expect(full.status).toBe(200);
    expect(full.body).toMatchObject({ address, hash: TypedDataEncoder.hash(typedData.domain, typedData.types, typedData.message) });
    expect(verifyTypedData(typedData.domain, typedData.types, typedData.message, full.body.signature)).toBe(address);
    expect(getBytes(full.body.signature)).toHaveLength(65);
  });

  it('refuses what the enclave refuses, in the SDK format', async () => {
    const from = { from: '127.0.0.30' };
    const now = Math.floor(Date.now() / 1000);
    const expired = await mint('dave', {}, { iat: now - 1000, exp: now - 500 });
    expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: expired }, from), 400, {
      jwt_token: [expect.stringMatching(/expired/i)],
    });
    const otherAudience = await mint('dave', {}, { aud: 'another-app' });
    expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: otherAudience }, { from: '127.0.0.31' }), 400, {
      jwt_token: [expect.stringMatching(/audience/i)],
    });
    const otherIssuer = await mint('dave', {}, { iss: 'https://issuer.example' });
    expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: otherIssuer }, { from: '127.0.0.34' }), 400, {
      jwt_token: [expect.stringMatching(/issuer/i)],
    });
    const es256Only = (
      await s.api('/v1/projects', { token: 'admin', body: { name: 'ES256 only', auth: jwtAuth({ algorithms: ['ES256'] }) } })
    ).body;
    expectDetail(await wallet(es256Only.projectKey, 'get-address', { jwt_token: await mint('dave') }, { from: '127.0.0.35' }), 400, {
      jwt_token: [expect.stringMatching(/algorithm/i)],
    });
    expect((await wallet(es256Only.projectKey, 'get-address', { jwt_token: await mint('dave', { alg: 'ES256' }) })).status).toBe(200);
    // A request type the project does not allow.
    expectDetail(
      await wallet(project.projectKey, 'sign-request', {
        jwt_token: await mint('dave'),
        request: { type: 'digest', digest: `0x${'11'.repeat(32)}` },
      }),
      400,
      { request: ['type digest is not allowed for this project'] },
    );
    // A JWKS that cannot be fetched: retryable, never an auth failure.
    const unreachable = (
      await s.api('/v1/projects', { token: 'admin', body: { name: 'No JWKS', auth: jwtAuth({ jwksUri: `${idp.issuer}/missing.json` }) } })
    ).body;
    const down = await wallet(unreachable.projectKey, 'get-address', { jwt_token: await mint('dave') }, { from: '127.0.0.32' });
    expect([down.status, typeof down.body.detail]).toEqual([503, 'string']);
    expect(down.headers['retry-after']).toEqual(expect.any(String));
    expectDetail(
      await wallet(`pk_${'Q'.repeat(22)}`, 'get-address', { jwt_token: await mint('dave') }, { from: '127.0.0.33' }),
      401,
      'unknown project key',
    );
    expectDetail(
      await wallet('default', 'get-address', { jwt_token: await mint('dave') }, { from: '127.0.0.33' }),
      401,
      'this project does not take JWTs',
    );
  });

  it("refuses the operator token on a JWT user's key; an admin's disable stops the user's signatures (409) until enabled", async () => {
    const jwt = await mint('erin');
    const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).body;
    const key = (await keysOf(project.projectId)).find((k) => k.address === address) as { keyId: string };
    for (const token of ['full', 'admin']) {
      const res = await s.api(`/v1/keys/${key.keyId}/sign`, { token, body: { type: 'message', message: 'steal' } });
      expect([res.status, res.body.error.code]).toEqual([403, 'FORBIDDEN']);
    }
    expect((await s.api('/v1/keys', { token: 'full', body: { projectId: project.projectId } })).status).toBe(403);
    expect((await s.api(`/v1/keys/${key.keyId}/disable`, { token: 'admin', method: 'POST' })).body.disabled).toBe(true);
    const signBody = { message: 'x', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' };
    const refused = await wallet(project.projectKey, 'sign', signBody);
    expect([refused.status, typeof refused.body.detail]).toEqual([409, 'string']);
    expect((await s.api(`/v1/keys/${key.keyId}/enable`, { token: 'admin', method: 'POST' })).body.disabled).toBe(false);
    expect((await wallet(project.projectKey, 'sign', signBody)).status).toBe(200);
  });

  it('answers CORS for the project origin only, preflight included', async () => {
    const jwt = await mint('fay');
    const ok = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: ORIGIN } });
    expect([ok.status, ok.headers['access-control-allow-origin'], ok.headers['access-control-allow-credentials']]).toEqual([
      200,
      ORIGIN,
      undefined,
    ]);
    const other = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: 'https://evil.example' } });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    const preflight = (origin: string) =>
      call(s.url, `/v1/${project.projectKey}/wallets/sign`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      });
    const allowed = await preflight(ORIGIN);
    expect([allowed.status, allowed.headers['access-control-allow-origin'], allowed.headers['access-control-allow-methods']]).toEqual([
      204,
      ORIGIN,
      'POST',
    ]);
    const refused = await preflight('https://evil.example');
    expect([refused.status, refused.headers['access-control-allow-origin']]).toEqual([404, undefined]);
  });

  it('limits failures per address (403 + Retry-After) without locking out the user elsewhere, and a user to their quota', async () => {
    const jwt = await mint('gus');
    const forged = (await mint('gus')).replace(/\.[^.]+$/, '.c2lnbmF0dXJl');
    const attacker = { from: '127.0.0.40' };
    for (let i = 0; i < 4; i++) expect((await wallet(project.projectKey, 'get-address', { jwt_token: forged }, attacker)).status).toBe(400);
    const locked = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, attacker);
    expectDetail(locked, 403, 'too many failed requests from this address; retry later');
    expect(Number(locked.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // The user from their own address: served, up to their quota of 20 served requests.
    for (let i = 0; i < 20; i++)
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.0.41' })).status).toBe(200);
    const quota = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.0.41' });
    expectDetail(quota, 403, 'too many requests for this user; retry later');
    expect(Number(quota.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    if (relay) expect(relay.requests.some((r) => r.host === 'localhost' && r.port === idp.port)).toBe(true);
  });

  it("shows the TrueWallet outcomes and the enclave's JWT health in the metrics", async () => {
    const metrics = (await s.api('/metrics', { token: null })).body as string;
    expect(metrics).toMatch(/nks_wallet_requests_total\{route="\/v1\/\{projectKey\}\/wallets\/get-address",outcome="ok"\} \d+/);
    expect(metrics).toMatch(/nks_wallet_requests_total\{route="\/v1\/\{projectKey\}\/wallets\/get-address",outcome="invalid_jwt"\} \d+/);
    expect(metrics).toMatch(/nks_wallet_rate_limited_total\{limit="failures"\} 1/);
    expect(metrics).toMatch(/nks_wallet_rate_limited_total\{limit="user"\} 1/);
    expect(metrics).toMatch(/nks_enclave_clock\{state="trusted"\} 1/);
    expect(metrics).toMatch(/nks_enclave_counter\{counter="jwt_verifications"\} [1-9]\d*/);
    expect(metrics).toMatch(/nks_enclave_counter\{counter="jwt_refusals"\} [1-9]\d*/);
  });
});
