/**
 * The simulated IdP as the dev stack runs it (`npm run dev -- --idp`, sim/src/dev/idp.ts): its token endpoint
 * (development only, opt-in), and the state that brings the same IdP back after a restart (same CA, so the
 * same enclave image; same port, so the same project; same keys, so tokens already handed out still verify).
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { startSimulatedIdp } from '../src/idp/issuer';
import { devIdpPaths, startDevIdp } from '../src/dev/idp';
import { httpsGet as get } from '../../test/support/https-get';

describe('simulated IdP for development', () => {
  it('serves tokens for any user at /token only when asked to, and refuses bad parameters', async () => {
    const idp = await startSimulatedIdp({ tokenEndpoint: true });
    const plain = await startSimulatedIdp();
    try {
      const res = await get(`${idp.issuer}/token?sub=alice&alg=ES256&lifetime=60`, idp.caPem);
      expect(res.status).toBe(200);
      const { token } = JSON.parse(res.body) as { token: string };
      const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(idp.jwks()), {
        issuer: idp.issuer,
        audience: idp.audience,
      });
      expect(payload.sub).toBe('alice');
      expect(protectedHeader.alg).toBe('ES256');
      expect((payload.exp as number) - (payload.iat as number)).toBe(60);

      for (const [query, problem] of [
        ['', /sub/],
        ['?sub=', /sub/],
        ['?sub=a%20b', /sub/],
        ['?sub=bob&alg=HS256', /alg/],
        ['?sub=bob&lifetime=0', /lifetime/],
        ['?sub=bob&lifetime=1.5', /lifetime/],
      ] as const) {
        const bad = await get(`${idp.issuer}/token${query}`, idp.caPem);
        expect({ query, status: bad.status }).toEqual({ query, status: 400 });
        expect((JSON.parse(bad.body) as { error: string }).error).toMatch(problem);
      }
      expect((await get(`${plain.issuer}/token?sub=alice`, plain.caPem)).status).toBe(404);
    } finally {
      await idp.close();
      await plain.close();
    }
  });

  it('comes back as the same IdP from its exported state: CA, certificate and keys', async () => {
    const first = await startSimulatedIdp();
    const token = await first.mint({ sub: 'alice' });
    const state = await first.exportState();
    const jwks = first.jwks();
    await first.close();
    const again = await startSimulatedIdp({ port: first.port, state });
    try {
      expect(again.issuer).toBe(first.issuer);
      expect(again.caPem).toBe(first.caPem);
      expect(again.jwks()).toEqual(jwks);
      expect(JSON.stringify(again.jwks())).not.toMatch(/"d":/); // no private member in the public set
      expect((await get(again.jwksUri, first.caPem)).status).toBe(200);
      await expect(
        jwtVerify(token, createLocalJWKSet(again.jwks()), { issuer: again.issuer, audience: again.audience }),
      ).resolves.toBeTruthy();
    } finally {
      await again.close();
    }
  });

  it('keeps the dev IdP in the state directory across restarts, and says when its port is taken', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-dev-idp-'));
    try {
      const a = await startDevIdp(dir);
      const p = devIdpPaths(dir);
      expect(fs.statSync(p.state).mode & 0o777).toBe(0o600);
      expect(fs.readFileSync(p.caPem, 'utf8')).toBe(new X509Certificate(a.idp.caPem).toString());
      // While it runs, a second one on the same state cannot take its port.
      await expect(startDevIdp(dir)).rejects.toThrow(/port \d+ is in use/);
      await a.idp.close();
      const b = await startDevIdp(dir);
      try {
        expect(b.idp.issuer).toBe(a.idp.issuer);
        expect(b.idp.caPem).toBe(a.idp.caPem);
      } finally {
        await b.idp.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
