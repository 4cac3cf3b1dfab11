import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { startSimulatedIdp, type SimulatedIdp } from '../src/idp/issuer';
import { httpsGet as get } from '../../test/support/https-get';

describe('simulated identity provider', () => {
  let idp: SimulatedIdp;
  beforeAll(async () => {
    idp = await startSimulatedIdp();
  });
  afterAll(() => idp.close());

  it('serves its JWKS over HTTPS under its own CA, and only to a client that trusts that CA', async () => {
    const { status, body } = await get(idp.jwksUri, idp.caPem);
    expect(status).toBe(200);
    expect((JSON.parse(body) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid)).toEqual(['rs-1', 'es-1']);
    await expect(get(idp.jwksUri, '')).rejects.toThrow(/certificate/);
    expect(idp.fetches).toBe(1);
  });

  it.each(['RS256', 'ES256'] as const)('mints %s tokens that verify against the JWKS', async (alg) => {
    const token = await idp.mint({ sub: 'user-1' }, { alg });
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(idp.jwks()), {
      issuer: idp.issuer,
      audience: idp.audience,
    });
    expect(payload.sub).toBe('user-1');
    expect(protectedHeader.alg).toBe(alg);
    expect(decodeProtectedHeader(await idp.mint({ sub: 'x' }, { kid: null })).kid).toBeUndefined();
  });

  it('can be stopped and started again on the same port', async () => {
    await idp.stop();
    await expect(get(idp.jwksUri, idp.caPem)).rejects.toThrow(/ECONNREFUSED/);
    await idp.start();
    expect((await get(idp.jwksUri, idp.caPem)).status).toBe(200);
  });
});
