/**
 * The parent's public TrueWallet surface attacked over the real processes (the enclave bundle on the simulated
 * platform, the parent program, a simulated IdP): the regression tests of an attacker review (issue 17). Each
 * `it` is one attack. The first group are attacks that once worked and now fail (client addresses behind a
 * proxy, a concurrent burst past the failure budget, the per-user limit as an oracle, `keys:read` listing JWT
 * users, internal text in 503 answers); the rest are attacks that never worked, kept so they stay that way.
 * The parent's side of the same rules against the fake enclave is in projects.test.ts.
 */
import { CompactSign, importJWK } from 'jose';
import { getBytes, hashMessage, verifyMessage } from 'ethers';
import { tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { decodeKeyRecord } from '@nks/shared/records';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startStack, waitReady, type Stack } from '../../test/support/stack';
import { UNAVAILABLE_DETAILS } from '../src/api/wallets';
import { call, type Answer, type CallInit } from './wallet-client';

const ORIGIN = 'https://wallet.example';
const FAILURES = 5;
const PER_USER = 30;
/** The proxy in front of the parent (in `api.trustProxy`): its X-Forwarded-For names the client. */
const PROXY = '127.0.0.99';

describe('the TrueWallet surface under attack', () => {
  let idp: SimulatedIdp;
  /** A second IdP, its JWKS not fetched until the burst test. */
  let slowIdp: SimulatedIdp;
  let s: Stack;
  let project: { projectId: string; projectKey: string };
  let privateRs256: Awaited<ReturnType<typeof importJWK>>;
  let rsKid: string;

  beforeAll(async () => {
    idp = await startSimulatedIdp();
    slowIdp = await startSimulatedIdp();
    s = await startStack(tempRunDir('nks-tw-attacks-'), {
      enclave: { jwt: { trustedCas: [idp.caPem, slowIdp.caPem] } },
      parentApi: { trustProxy: [PROXY] },
      parent: {
        wallets: { rateLimits: { failuresPerAddress: FAILURES, perUser: PER_USER, perAddress: 1000 } },
        egress: { allowLoopback: true, allowedPorts: [idp.port, slowIdp.port] },
      },
    });
    await waitReady(s);
    project = (await s.api('/v1/projects', { token: 'admin', body: { name: 'attacks', auth: jwtAuth(), allowedOrigins: [ORIGIN] } })).body;
    // The IdP's own signing key, to sign payloads jose's SignJWT would not produce (duplicate keys): what a
    // (buggy) IdP could issue. It is NOT an attacker capability; it checks the parent and enclave parse alike.
    const state = await idp.exportState();
    const rs = state.keys.find((k) => k.alg === 'RS256')!;
    rsKid = rs.kid;
    privateRs256 = await importJWK(rs.privateJwk, 'RS256');
  }, 120_000);
  afterAll(async () => {
    await s?.stop();
    await idp?.close();
    await slowIdp?.close();
  });

  function jwtAuth(over: Record<string, unknown> = {}) {
    return { type: 'jwt', issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri, ...over };
  }
  const wallet = (projectKey: string, route: string, body: unknown, init: CallInit = {}) =>
    call(s.url, `/v1/${projectKey}/wallets/${route}`, { body, ...init });
  const mint = (sub: string) => idp.mint({ sub });
  const b64 = (o: unknown) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
  /** The attacker's own valid token with its payload swapped for one naming `victim` (signature kept). */
  const forgedFor = async (victim: string) => {
    const [h, p, sig] = (await mint('mallory')).split('.');
    const payload = JSON.parse(Buffer.from(p as string, 'base64url').toString());
    return `${h}.${b64({ ...payload, sub: victim })}.${sig}`;
  };
  const strip = (a: Answer) => ({ status: a.status, body: a.body });
  /** Every key, with the admin token (the only one that sees JWT projects' keys). */
  const allKeys = async () =>
    (await s.api('/v1/keys?limit=1000', { token: 'admin' })).body.keys as Array<{
      keyId: string;
      projectId: string;
      address: string;
      record: { record: string } | null;
    }>;

  describe('attacks that worked before, refused now', () => {
    it('behind a trusted proxy each client is its X-Forwarded-For address: forged tokens lock out their sender, not the others', async () => {
      const via = (client: string) => ({ from: PROXY, headers: { 'x-forwarded-for': client } });
      const victimJwt = await mint('victim-proxy');
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, via('198.51.100.7'))).status).toBe(200);
      // The attacker, relayed by the same proxy: FAILURES invalid tokens.
      for (let i = 0; i < FAILURES; i++)
        expect((await wallet(project.projectKey, 'get-address', { jwt_token: 'not.a.jwt' }, via('203.0.113.66'))).status).toBe(400);
      const locked = await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, via('203.0.113.66'));
      expect(strip(locked)).toEqual({ status: 403, body: { detail: 'too many failed requests from this address; retry later' } });
      // Every other client of that proxy is still served.
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, via('198.51.100.7'))).status).toBe(200);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, via('2001:db8::7'))).status).toBe(200);
      // A client cannot choose its address through the proxy: only the entry the trusted proxy appended counts,
      // not the one the client sent it (the proxy appends the address it saw to the header it was given).
      const spoofed = await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, via('198.51.100.7, 203.0.113.66'));
      expect(spoofed.status).toBe(403);
      // A peer that is not a listed proxy: its X-Forwarded-For is ignored, its own address counts.
      const direct = (client: string) => ({ from: '127.0.0.98', headers: { 'x-forwarded-for': client } });
      for (let i = 0; i < FAILURES; i++)
        expect((await wallet(project.projectKey, 'get-address', { jwt_token: 'not.a.jwt' }, direct(`192.0.2.${i}`))).status).toBe(400);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, direct('192.0.2.200'))).status).toBe(403);
      // The proxy is trusted, so the start-up warning about a shared client address was not given.
      expect(s.parentLogs()).not.toMatch(/api.trustProxy/);
      expect((await s.api('/metrics', { token: null })).body).toMatch(/^nks_api_client_address_shared 0$/m);
    });

    it('a concurrent burst of forged tokens gets no further than the failure budget: requests in flight hold it', async () => {
      // A project whose JWKS the enclave has not fetched yet, served slowly: the whole burst arrives before the
      // first failure is known.
      const slow = (
        await s.api('/v1/projects', {
          token: 'admin',
          body: { name: 'slow', auth: { type: 'jwt', issuer: slowIdp.issuer, audience: slowIdp.audience, jwksUri: slowIdp.jwksUri } },
        })
      ).body;
      slowIdp.control.delayMs = 1500;
      const from = { from: '127.0.0.50' };
      const [h, p] = (await slowIdp.mint({ sub: 'burst-victim' })).split('.');
      const forged = `${h}.${p}.c2lnbmF0dXJl`;
      let answers: Answer[];
      try {
        answers = await Promise.all(Array.from({ length: 40 }, () => wallet(slow.projectKey, 'get-address', { jwt_token: forged }, from)));
      } finally {
        slowIdp.control.delayMs = 0;
      }
      const reachedEnclave = answers.filter((a) => a.status === 400);
      expect(reachedEnclave).toHaveLength(FAILURES);
      const held = answers.filter((a) => a.status === 403);
      expect(held).toHaveLength(40 - FAILURES);
      for (const a of held) {
        expect(a.body).toEqual({ detail: 'too many requests in progress from this address; retry shortly' });
        expect(a.headers['retry-after']).toBe('1');
      }
      expect(strip(await wallet(slow.projectKey, 'get-address', { jwt_token: forged }, from))).toEqual({
        status: 403,
        body: { detail: 'too many failed requests from this address; retry later' },
      });
    });

    it('the per-user limit is no oracle: a forged token naming a busy user is refused as any forged token, and counted as a failure', async () => {
      const busy = await mint('busy-user');
      for (let i = 0; i < PER_USER; i++)
        expect((await wallet(project.projectKey, 'get-address', { jwt_token: busy }, { from: '127.0.0.110' })).status).toBe(200);
      const attacker = { from: '127.0.0.111' };
      const probes = [];
      for (let i = 0; i < FAILURES; i++)
        probes.push(
          strip(
            await wallet(project.projectKey, 'get-address', { jwt_token: await forgedFor(i % 2 ? 'idle-user' : 'busy-user') }, attacker),
          ),
        );
      for (const p of probes) expect(p).toEqual({ status: 400, body: { detail: { jwt_token: [expect.any(String)] } } });
      expect(new Set(probes.map((p) => JSON.stringify(p))).size).toBe(1);
      // The probes spent the attacker's failure budget.
      expect(strip(await wallet(project.projectKey, 'get-address', { jwt_token: await forgedFor('busy-user') }, attacker))).toEqual({
        status: 403,
        body: { detail: 'too many failed requests from this address; retry later' },
      });
      // The user, with their own valid token, is told they are over their limit (from any address).
      expect(strip(await wallet(project.projectKey, 'get-address', { jwt_token: busy }, { from: '127.0.0.112' }))).toEqual({
        status: 403,
        body: { detail: 'too many requests for this user; retry later' },
      });
    });

    it("a token below admin does not see JWT projects' keys (users and their addresses); admin sees them all", async () => {
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: await idp.mint({ sub: 'alice@corp.example' }) }))
        .body;
      const operatorKey = (await s.api('/v1/keys', { token: 'create', body: { externalId: 'operator-key' } })).body;
      for (const token of ['read', 'full']) {
        const keys = (await s.api('/v1/keys?limit=1000', { token })).body.keys as Array<{ keyId: string; projectId: string }>;
        expect([token, keys.filter((k) => k.projectId !== 'default')]).toEqual([token, []]);
        expect(keys.map((k) => k.keyId)).toContain(operatorKey.keyId);
      }
      const key = (await allKeys()).find((k) => k.address === address)!;
      expect(decodeKeyRecord(Buffer.from(key.record!.record, 'base64')).subject).toBe(JSON.stringify([idp.issuer, 'alice@corp.example']));
      for (const token of ['read', 'full']) {
        const one = await s.api(`/v1/keys/${key.keyId}`, { token });
        expect([token, one.status, one.body.error]).toEqual([
          token,
          404,
          { code: 'KEY_NOT_FOUND', message: `key ${key.keyId} does not exist`, requestId: expect.any(String) },
        ]);
      }
      expect((await s.api(`/v1/keys/${key.keyId}`, { token: 'admin' })).body.address).toBe(address);
    });

    it('503 answers of the wallet routes are fixed texts; the detail (KMS, JWKS) is logged with the request id', async () => {
      const jwt = await mint(`kms-${Date.now()}`);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).status).toBe(200);
      await s.platform.setFaults({ errorNext: 20, ops: ['Decrypt'] });
      let r: Answer;
      try {
        r = await wallet(project.projectKey, 'sign', { message: 'x', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' });
      } finally {
        await s.platform.setFaults({ errorNext: 0, ops: [] });
      }
      expect(strip(r)).toEqual({ status: 503, body: { detail: UNAVAILABLE_DETAILS.other } });
      expect(r.headers['retry-after']).toBe('1');
      /** The log line of the wallets' 503, by request id (the parent's output arrives asynchronously). */
      const logged = async (requestId: unknown) => {
        const line = () =>
          s
            .parentLogs()
            .split('\n')
            .find((l) => l.includes(String(requestId)) && l.includes('TrueWallet request unavailable'));
        await waitFor(() => line() !== undefined, 5000, `the log line of request ${String(requestId)}`);
        return line();
      };
      expect(await logged(r.headers['x-request-id'])).toMatch(/"code":"KMS_UNAVAILABLE","detail":"KMS /);

      const noJwks = (
        await s.api('/v1/projects', { token: 'admin', body: { name: 'no JWKS', auth: jwtAuth({ jwksUri: `${idp.issuer}/missing.json` }) } })
      ).body;
      const down = await wallet(noJwks.projectKey, 'get-address', { jwt_token: await mint('x') }, { from: '127.0.0.130' });
      expect(strip(down)).toEqual({ status: 503, body: { detail: UNAVAILABLE_DETAILS.jwks } });
      expect(await logged(down.headers['x-request-id'])).toMatch(/"code":"JWKS_UNAVAILABLE"/);
    });
  });

  describe('attacks that never worked', () => {
    it('no wallet-existence oracle: a forged token naming a user with a key, without one, or with a disabled key answers alike', async () => {
      const withKey = await mint('has-wallet');
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: withKey })).body;
      const disabledJwt = await mint('has-disabled-wallet');
      const dis = (await wallet(project.projectKey, 'get-address', { jwt_token: disabledJwt })).body.address;
      const disKey = (await allKeys()).find((k) => k.address === dis)!;
      expect((await s.api(`/v1/keys/${disKey.keyId}/disable`, { token: 'admin', method: 'POST' })).status).toBe(200);
      expect(address).toMatch(/^0x/);

      const answers: Array<ReturnType<typeof strip>> = [];
      let n = 60;
      for (const victim of ['has-wallet', 'never-seen-user', 'has-disabled-wallet'])
        for (const route of ['get-address', 'sign']) {
          const jwt = await forgedFor(victim);
          const body =
            route === 'sign' ? { message: 'x', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' } : { jwt_token: jwt };
          answers.push(strip(await wallet(project.projectKey, route, body, { from: `127.0.0.${n++}` })));
        }
      for (const a of answers) expect(a).toEqual({ status: 400, body: { detail: { jwt_token: [expect.any(String)] } } });
      expect(new Set(answers.map((a) => JSON.stringify(a))).size).toBe(1);
      // Unsigned (alg none) and garbage-signature tokens too.
      const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: idp.issuer, aud: idp.audience, sub: 'has-wallet', iat: 1, exp: 9e9 })}.`;
      const r = await wallet(project.projectKey, 'get-address', { jwt_token: none }, { from: '127.0.0.70' });
      expect(r.status).toBe(400);
      expect(r.body.detail.jwt_token).toBeDefined();
    });

    it('concurrent first calls with forged and valid tokens make one key, answered only to the valid ones', async () => {
      const user = `race-${Date.now()}`;
      const valid = await mint(user);
      const forged = await forgedFor(user);
      // (Each from its own address: one address has at most its failure budget's worth of requests in progress.)
      const calls = Array.from({ length: 16 }, (_, i) =>
        i % 2 === 0
          ? wallet(project.projectKey, 'get-address', { jwt_token: valid }, { from: `127.0.2.${i}` })
          : wallet(project.projectKey, 'get-address', { jwt_token: forged }, { from: `127.0.1.${i}` }),
      );
      const answers = await Promise.all(calls);
      const ok = answers.filter((_a, i) => i % 2 === 0);
      const bad = answers.filter((_a, i) => i % 2 === 1);
      expect(new Set(ok.map((a) => `${a.status} ${a.body.address}`)).size).toBe(1);
      expect(ok[0]!.status).toBe(200);
      for (const a of bad) expect(a.status).toBe(400);
      const mine = (await allKeys()).filter(
        (k) => k.record && decodeKeyRecord(Buffer.from(k.record.record, 'base64')).subject === JSON.stringify([idp.issuer, user]),
      );
      expect(mine).toHaveLength(1);
    });

    it('the parent and the enclave read the same user from a payload with duplicate keys (last wins in both)', async () => {
      const bob = (await wallet(project.projectKey, 'get-address', { jwt_token: await mint('dup-bob') })).body.address;
      const now = Math.floor(Date.now() / 1000);
      const raw = `{"iss":${JSON.stringify(idp.issuer)},"aud":${JSON.stringify(idp.audience)},"iat":${now},"exp":${now + 300},"sub":"dup-alice","sub":"dup-bob"}`;
      const jwt = await new CompactSign(new TextEncoder().encode(raw))
        .setProtectedHeader({ alg: 'RS256', kid: rsKid, typ: 'JWT' })
        .sign(privateRs256);
      const res = await wallet(project.projectKey, 'get-address', { jwt_token: jwt });
      expect(strip(res)).toEqual({ status: 200, body: { address: bob } });
      // Unicode look-alikes and normalisation forms are distinct users, consistently (no folding anywhere).
      const plain = (await wallet(project.projectKey, 'get-address', { jwt_token: await mint('jose\u0301') })).body.address;
      const nfc = (await wallet(project.projectKey, 'get-address', { jwt_token: await mint('jos\u00e9') })).body.address;
      expect(plain).not.toBe(nfc);
    });

    it('a project with another userClaim cannot be pointed at another user by the claim the parent reads', async () => {
      const byEmail = (await s.api('/v1/projects', { token: 'admin', body: { name: 'email', auth: jwtAuth({ userClaim: 'email' }) } }))
        .body;
      const t = await idp.mint({ sub: 'x1', email: 'e@example.com' });
      expect((await wallet(byEmail.projectKey, 'get-address', { jwt_token: t })).status).toBe(200);
      const noClaim = await wallet(byEmail.projectKey, 'get-address', { jwt_token: await mint('only-sub') }, { from: '127.0.0.90' });
      expect(noClaim.status).toBe(400);
      const proto = await s.api('/v1/projects', { token: 'admin', body: { name: 'proto', auth: jwtAuth({ userClaim: '__proto__' }) } });
      // __proto__ is a legal claim name; a token without it must not resolve to some inherited value.
      if (proto.status === 201) {
        const r = await wallet(proto.body.projectKey, 'get-address', { jwt_token: await mint('p') }, { from: '127.0.0.91' });
        expect(r.status).toBe(400);
      }
    });

    it('CORS: exact origins only, never credentials; case, slash, port, null and look-alikes refused', async () => {
      const jwt = await mint('cors-user');
      const variants = [
        'https://WALLET.example',
        'https://wallet.example/',
        'https://wallet.example:443',
        'null',
        'http://wallet.example',
        'https://wallet.example.evil',
        'https://evil.wallet.example',
        `${ORIGIN}, https://evil.example`,
      ];
      // (A leading space is optional whitespace in HTTP: the parser strips it, so it is the same origin.)
      for (const origin of variants) {
        const r = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin } });
        expect([origin, r.headers['access-control-allow-origin']]).toEqual([origin, undefined]);
        const pre = await call(s.url, `/v1/${project.projectKey}/wallets/sign`, {
          method: 'OPTIONS',
          headers: { origin, 'access-control-request-method': 'POST' },
        });
        expect([origin, pre.headers['access-control-allow-origin']]).toEqual([origin, undefined]);
      }
      const ok = await call(s.url, `/v1/${project.projectKey}/wallets/sign`, {
        method: 'OPTIONS',
        headers: {
          origin: ORIGIN,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type, authorization',
        },
      });
      expect(ok.headers['access-control-allow-credentials']).toBeUndefined();
      expect(String(ok.headers['access-control-allow-headers'])).toBe('content-type');
      // Another project's origin does not open this one.
      const other = (
        await s.api('/v1/projects', { token: 'admin', body: { name: 'o', auth: jwtAuth(), allowedOrigins: ['https://other.example'] } })
      ).body;
      const cross = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: 'https://other.example' } });
      expect(cross.headers['access-control-allow-origin']).toBeUndefined();
      expect(other.projectKey).toBeDefined();
    });

    it('projects API: no token below admin can create, list, read, disable or enable projects', async () => {
      for (const token of ['full', 'create', 'sign', 'read']) {
        expect((await s.api('/v1/projects', { token, body: { name: 'x', auth: jwtAuth() } })).status).toBe(403);
        expect((await s.api('/v1/projects', { token })).status).toBe(403);
        expect((await s.api(`/v1/projects/${project.projectId}`, { token })).status).toBe(403);
        for (const a of ['disable', 'enable'])
          expect((await s.api(`/v1/projects/${project.projectId}/${a}`, { token, method: 'POST' })).status).toBe(403);
      }
      expect((await s.api('/v1/projects', { token: null, body: { name: 'x', auth: jwtAuth() } })).status).toBe(401);
    });

    it('operator routes never sign with, create or move a JWT user key; only admin toggles disabled', async () => {
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: await mint('op-victim') })).body;
      const key = (await allKeys()).find((k) => k.address === address)!;
      for (const token of ['full', 'sign', 'admin']) {
        for (const body of [
          { type: 'message', message: 'x' },
          { type: 'digest', digest: `0x${'11'.repeat(32)}` },
        ]) {
          const r = await s.api(`/v1/keys/${key.keyId}/sign`, { token, body });
          expect([token, r.status]).toEqual([token, 403]);
        }
      }
      for (const token of ['full', 'create', 'admin'])
        expect(
          (await s.api('/v1/keys', { token, body: { projectId: project.projectId, externalId: 'op-victim' } })).status,
        ).toBeGreaterThanOrEqual(400);
      for (const token of ['full', 'sign', 'read', 'create'])
        expect((await s.api(`/v1/keys/${key.keyId}/disable`, { token, method: 'POST' })).status).toBe(403);
    });

    it('sign: hash is EIP-191 over the 32 bytes (any hex case), message is the text; malformed hashes are 400 message', async () => {
      const jwt = await mint('signer');
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).body;
      const hash = `0x${'AB'.repeat(16)}${'cd'.repeat(16)}`;
      const sig = (await wallet(project.projectKey, 'sign', { message: hash, jwt_token: jwt, message_type: 'hash', wallet_type: 'evm' }))
        .body.signature;
      expect(verifyMessage(getBytes(hash), sig)).toBe(address);
      const text = (
        await wallet(project.projectKey, 'sign', { message: hash, jwt_token: jwt, message_type: 'message', wallet_type: 'evm' })
      ).body.signature;
      expect(verifyMessage(hash, text)).toBe(address);
      expect(hashMessage(hash)).not.toBe(hashMessage(getBytes(hash)));
      for (const message of [
        '0x' + 'ab'.repeat(31),
        '0x' + 'ab'.repeat(33),
        'ab'.repeat(32),
        '0x' + 'zz'.repeat(32),
        '0x' + 'a'.repeat(63),
        '0X' + 'ab'.repeat(32),
      ]) {
        const r = await wallet(project.projectKey, 'sign', { message, jwt_token: jwt, message_type: 'hash', wallet_type: 'evm' });
        expect([message, r.status, Object.keys(r.body.detail)]).toEqual([message, 400, ['message']]);
      }
      const wt = await wallet(project.projectKey, 'sign', { message: 'x', jwt_token: jwt, message_type: 'message', wallet_type: 'solana' });
      expect([wt.status, Object.keys(wt.body.detail)]).toEqual([400, ['wallet_type']]);
      for (const request of [
        { type: 'digest', digest: `0x${'11'.repeat(32)}` },
        {
          type: 'transaction',
          transaction: {
            type: 'eip1559',
            chainId: 1,
            nonce: 0,
            to: address,
            value: '1',
            gas: '21000',
            maxFeePerGas: '1',
            maxPriorityFeePerGas: '1',
          },
        },
        { type: 'authorization', authorization: { chainId: 1, address, nonce: 0 } },
      ]) {
        const r = await wallet(project.projectKey, 'sign-request', { jwt_token: jwt, request });
        expect([request.type, r.status, Object.keys(r.body.detail)]).toEqual([request.type, 400, ['request']]);
      }
      // Duplicate "type" in the raw JSON: the parent's check and the enclave read the same (last) one.
      const rawBody = `{"jwt_token":${JSON.stringify(jwt)},"request":{"type":"message","type":"digest","digest":"0x${'11'.repeat(32)}"}}`;
      const dup = await call(s.url, `/v1/${project.projectKey}/wallets/sign-request`, {
        method: 'POST',
        body: rawBody,
        headers: { 'content-type': 'application/json' },
      });
      expect(dup.status).toBe(400);
    });

    it('path confusion: project key case, encoding, default, trailing slash', async () => {
      const jwt = await mint('path-user');
      const pk = project.projectKey;
      const statuses: Record<string, number> = {};
      for (const p of [pk.toUpperCase(), pk.replace('pk_', 'pk%5F'), pk.replace('pk_', 'PK_'), 'default', `${pk}%2Fwallets`, `${pk}/`])
        statuses[p] = (await wallet(p, 'get-address', { jwt_token: jwt }, { from: '127.0.0.95' })).status;
      // A percent-encoded `_` is decoded by the router: the same project (and the same CORS origins), harmless.
      expect(statuses).toEqual({
        [pk.toUpperCase()]: 404,
        [pk.replace('pk_', 'pk%5F')]: 200,
        [pk.replace('pk_', 'PK_')]: 404,
        default: 401,
        [`${pk}%2Fwallets`]: 404,
        [`${pk}/`]: 404,
      });
      const slash = await call(s.url, `/v1/${pk}/wallets/get-address/`, { body: { jwt_token: jwt } });
      expect(slash.status).toBe(404);
    });

    it('no JWT reaches the parent logs', async () => {
      const jwt = await mint('log-user');
      await wallet(project.projectKey, 'get-address', { jwt_token: jwt });
      await wallet(project.projectKey, 'get-address', { jwt_token: jwt.slice(0, -4) + 'AAAA' }, { from: '127.0.0.120' });
      const logs = s.parentLogs();
      expect(logs.includes(jwt.split('.')[2] as string)).toBe(false);
      expect(logs.includes(jwt.split('.')[1] as string)).toBe(false);
    });
  });
});
