/**
 * The TrueWallet API end to end, over real processes as in development: the enclave bundle serving the wallet
 * routes over TLS that ends inside it (its own key, a certificate from a test CA, docs/TLS.md), the parent with
 * its ingress relay (ciphertext only) and egress relay, the KMS emulator and the NSM simulator on simulated vsock,
 * and simulated identity providers serving their JWKS over real HTTPS with CAs of their own, trusted through the
 * enclave's configuration. Tokens are real (jose, RS256 and ES256); signatures are checked with ethers. A project
 * is made over HTTP with the admin token, then used as the SDK's JWT signer uses it — over HTTPS to the enclave,
 * trusting the test CA; one refusal of each class the SDK maps, and the egress relay refusing what it must not
 * reach (docs/PROJECTS.md).
 */
import { getBytes, hexlify, randomBytes, recoverAddress, TypedDataEncoder, verifyMessage, verifyTypedData } from 'ethers';
import { tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startStack, waitReady, type Stack } from '../support/stack';
import { call, createProject, jwtProject, jwtStackOptions, walletApi, type CreatedProject } from '../support/truewallet';

const SECP256K1_HALF_N = BigInt('0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0');

/** 65 bytes, v 27 or 28, low s: what the SDK's signer returns. */
function expectCanonical(signature: string): void {
  expect(signature).toMatch(/^0x[0-9a-f]{130}$/);
  const bytes = getBytes(signature);
  expect([27, 28]).toContain(bytes[64]);
  expect(BigInt(hexlify(bytes.slice(32, 64)))).toBeLessThanOrEqual(SECP256K1_HALF_N);
}

const MAIL_TYPED_DATA = {
  domain: { name: 'Ether Mail', version: '1', chainId: 1, verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC' },
  types: {
    Person: [
      { name: 'name', type: 'string' },
      { name: 'wallet', type: 'address' },
    ],
    Mail: [
      { name: 'from', type: 'Person' },
      { name: 'to', type: 'Person' },
      { name: 'contents', type: 'string' },
    ],
  },
  primaryType: 'Mail',
  message: {
    from: { name: 'Cow', wallet: '0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826' },
    to: { name: 'Bob', wallet: '0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB' },
    contents: 'Hello, Bob!',
  },
};

describe('TrueWallet API end to end', () => {
  let idp: SimulatedIdp; // the project's JWKS server, trusted and allowed
  let idpDown: SimulatedIdp; // trusted and allowed, but stopped before its first fetch
  let idpBlocked: SimulatedIdp; // trusted, serving, but on a port the relay does not allow
  let s: Stack;
  let project: CreatedProject;

  beforeAll(async () => {
    idp = await startSimulatedIdp({ audience: 'truewallet-e2e' });
    idpDown = await startSimulatedIdp({ audience: 'truewallet-e2e' });
    idpBlocked = await startSimulatedIdp({ audience: 'truewallet-e2e' });
    s = await startStack(tempRunDir('nks-truewallet-'), { ...jwtStackOptions([idp, idpDown], [idpBlocked.caPem]), walletsTls: true });
    await waitReady(s);
  }, 120_000);

  afterAll(async () => {
    await s?.stop();
    await Promise.all([idp, idpDown, idpBlocked].map((i) => i?.close()));
  });

  it('creates a JWT project over HTTP with the admin token; the enclave chooses its id and key', async () => {
    const noAdmin = await s.api('/v1/projects', { token: 'full', body: jwtProject(idp) });
    expect(noAdmin.status).toBe(403);
    project = await createProject(s, jwtProject(idp, { allowedOrigins: ['http://localhost:3000'] }));
    expect(project.projectId).toMatch(/^p_[A-Za-z0-9_-]{22}$/);
    expect(project.projectKey).toMatch(/^pk_[A-Za-z0-9_-]{22}$/);
    const got = await s.api(`/v1/projects/${project.projectId}`, { token: 'admin' });
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ projectId: project.projectId, projectKey: project.projectKey });
  });

  it('gives each user one address, the same for RS256 and ES256 tokens and under concurrent first calls', async () => {
    const w = walletApi(s, project.projectKey);
    const first = await w.getAddress(await idp.mint({ sub: 'alice' }));
    expect(first.status).toBe(200);
    expect(first.body.address).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect((await w.getAddress(await idp.mint({ sub: 'alice' }, { alg: 'ES256' }))).body).toEqual(first.body);

    const carol = await Promise.all(Array.from({ length: 8 }, async () => w.getAddress(await idp.mint({ sub: 'carol' }))));
    expect(carol.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect(new Set(carol.map((r) => r.body.address)).size).toBe(1);
    expect(carol[0]?.body.address).not.toBe(first.body.address);
  });

  it('signs a 32-byte hash and a text message with EIP-191 (65 bytes, v 27/28, low s), as ethers verifies them', async () => {
    const w = walletApi(s, project.projectKey);
    const jwt = await idp.mint({ sub: 'alice' });
    const { address } = (await w.getAddress(jwt)).body as { address: string };

    const hash = hexlify(randomBytes(32));
    const byHash = await w.sign(jwt, hash, 'hash');
    expect(byHash.status).toBe(200);
    expectCanonical(byHash.body.signature);
    // What ethers `signMessage(getBytes(hash))` gives: EIP-191 over the 32 raw bytes, not over the hex text.
    expect(verifyMessage(getBytes(hash), byHash.body.signature)).toBe(address);

    const byText = await w.sign(jwt, 'hello from TrueWallet', 'message');
    expect(byText.status).toBe(200);
    expectCanonical(byText.body.signature);
    expect(verifyMessage('hello from TrueWallet', byText.body.signature)).toBe(address);
  });

  it('signs typed data through sign-request with the full sign result', async () => {
    const w = walletApi(s, project.projectKey);
    const jwt = await idp.mint({ sub: 'alice' }, { alg: 'ES256' });
    const { address } = (await w.getAddress(jwt)).body as { address: string };
    const res = await w.signRequest(jwt, { type: 'typedData', typedData: MAIL_TYPED_DATA });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ address, signature: expect.stringMatching(/^0x[0-9a-f]{130}$/) as unknown });
    expect(verifyTypedData(MAIL_TYPED_DATA.domain, MAIL_TYPED_DATA.types, MAIL_TYPED_DATA.message, res.body.signature)).toBe(address);
    expect(res.body.hash).toBe(TypedDataEncoder.hash(MAIL_TYPED_DATA.domain, MAIL_TYPED_DATA.types, MAIL_TYPED_DATA.message));
    expect(recoverAddress(res.body.hash, res.body.signature)).toBe(address);
  });

  it('answers a bad JWT with 400 naming jwt_token, and an unknown project key with 401', async () => {
    const w = walletApi(s, project.projectKey);
    const expired = await idp.mint({ sub: 'alice', iat: Math.floor(Date.now() / 1000) - 900, exp: Math.floor(Date.now() / 1000) - 600 });
    const bad = await w.sign(expired, hexlify(randomBytes(32)), 'hash');
    expect(bad.status).toBe(400);
    expect(bad.body.detail.jwt_token).toEqual([expect.stringMatching(/expired/)]);

    const unknown = await walletApi(s, `pk_${'A'.repeat(22)}`).getAddress(await idp.mint({ sub: 'alice' }));
    expect(unknown.status).toBe(401);
    expect(typeof unknown.body.detail).toBe('string');
  });

  it('answers 409 for a key an admin disabled, and signs again once it is enabled', async () => {
    const w = walletApi(s, project.projectKey);
    const jwt = await idp.mint({ sub: 'dave' });
    const { address } = (await w.getAddress(jwt)).body as { address: string };
    const keyId = await keyIdOf(s, address);
    expect((await s.api(`/v1/keys/${keyId}/disable`, { token: 'admin', method: 'POST' })).status).toBe(200);
    const refused = await w.sign(jwt, 'while disabled', 'message');
    expect(refused.status).toBe(409);
    expect(typeof refused.body.detail).toBe('string');
    expect((await s.api(`/v1/keys/${keyId}/enable`, { token: 'admin', method: 'POST' })).status).toBe(200);
    expect((await w.sign(jwt, 'enabled again', 'message')).status).toBe(200);
  });

  it('answers 503 with Retry-After (JWKS_UNAVAILABLE) while a project JWKS server is down', async () => {
    const down = await createProject(s, jwtProject(idpDown));
    await idpDown.stop();
    const res = await walletApi(s, down.projectKey).getAddress(await idpDown.mint({ sub: 'erin' }));
    expect(res.status).toBe(503);
    expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
    expect(res.body.detail).toMatch(/the JWKS could not be fetched/);
  });

  it('answers 503 JWKS_UNAVAILABLE when the relay refuses the JWKS host: a port it does not allow, the metadata address', async () => {
    const refusals = (reason: string) => refusalsIn(s, reason);
    // The enclave trusts idpBlocked's CA and the server answers, but its port is not allowed: the relay must not
    // connect (the server sees no fetch).
    const blocked = await createProject(s, jwtProject(idpBlocked));
    const res = await walletApi(s, blocked.projectKey).getAddress(await idpBlocked.mint({ sub: 'frank' }));
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBeTruthy();
    expect(res.body.detail).toMatch(/the JWKS could not be fetched/);
    expect(idpBlocked.fetches).toBe(0);
    // The relay logs each refusal with its reason (the log is written asynchronously: wait for the line).
    await waitFor(
      () => refusals('port_not_allowed').some((e) => e.host === 'localhost' && e.port === idpBlocked.port),
      5000,
      'the refusal',
    );

    // The instance metadata address is never allowed, whatever the configuration (loopback is allowed here).
    const issuer = 'https://metadata.test';
    const metadata = await createProject(s, {
      name: 'metadata',
      auth: { type: 'jwt', issuer, audience: idp.audience, jwksUri: 'https://169.254.169.254/.well-known/jwks.json' },
    });
    const viaMetadata = await walletApi(s, metadata.projectKey).getAddress(await idp.mint({ sub: 'grace', iss: issuer }));
    expect(viaMetadata.status).toBe(503);
    expect(viaMetadata.headers['retry-after']).toBeTruthy();
    expect(viaMetadata.body.detail).toMatch(/the JWKS could not be fetched/);
    await waitFor(() => refusals('metadata_address').some((e) => e.host === '169.254.169.254' && e.port === 443), 5000, 'the refusal');
  });

  it('lets only the project origins through CORS, without credentials', async () => {
    const preflight = (origin: string) =>
      call(s, `/v1/${project.projectKey}/wallets/sign`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      });
    const allowed = await preflight('http://localhost:3000');
    expect(allowed.headers['access-control-allow-origin']).toBe('http://localhost:3000');
    expect(allowed.headers['access-control-allow-credentials']).toBeUndefined();
    const other = await preflight('http://localhost:3001');
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('is not served by the parent: its own API answers 421 with the URL of the enclave’s server, without reading the body', async () => {
    const res = await s.api(`/v1/${project.projectKey}/wallets/sign`, {
      token: null,
      body: { jwt_token: await idp.mint({ sub: 'alice' }) },
    });
    expect(res.status).toBe(421);
    expect(res.body).toMatchObject({ url: s.walletsUrl, detail: expect.stringContaining(s.walletsUrl) as unknown });
  });
});

/** The relay's refusals of `reason` in the parent's log (`egress refused: <reason>`, with host and port). */
function refusalsIn(s: Stack, reason: string): Array<Record<string, unknown>> {
  return s
    .parentLogs()
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return [];
      }
    })
    .filter((e) => e.msg === `egress refused: ${reason}`);
}

/** The key id of the key with `address`, from the admin's listing. */
async function keyIdOf(s: Stack, address: string): Promise<string> {
  let cursor: string | undefined;
  for (;;) {
    const page = await s.api(`/v1/keys?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { token: 'admin' });
    if (page.status !== 200) throw new Error(`GET /v1/keys: HTTP ${page.status} ${JSON.stringify(page.body)}`);
    const hit = (page.body.keys as Array<{ keyId: string; address: string }>).find((k) => k.address === address);
    if (hit) return hit.keyId;
    cursor = page.body.nextCursor as string | undefined;
    if (!cursor) throw new Error(`no key with address ${address}`);
  }
}
