/**
 * The public wallet routes attacked over the real processes, now that the enclave serves them over TLS that ends
 * inside it (docs/TLS.md): the enclave bundle on the simulated platform with its certificate from a test CA, the
 * parent program relaying ciphertext, a simulated IdP. Each `it` is one attack, ported from the parent's TrueWallet
 * tests of issue 17 (parent/test/truewallet-attacks.test.ts and truewallet-stack.test.ts, gone with the parent's
 * routes) where it still applies; the client address is now the TCP peer the relay saw (a request `from` another
 * loopback address is another client), which no header can change.
 */
import { CompactSign, importJWK } from 'jose';
import { getBytes, hashMessage, TypedDataEncoder, verifyMessage, verifyTypedData } from 'ethers';
import { tempRunDir } from '@nks/shared-test/helpers';
import { decodeKeyRecord } from '@nks/shared/records';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startStack, waitReady, type Stack } from '../support/stack';
import { call, type Answer, type CallInit } from '../support/truewallet';
import { expectWalletSignature } from '../support/wallet-signature';

const ORIGIN = 'https://wallet.example';
const FAILURES = 5;
const PER_USER = 30;
const UNAVAILABLE = 'the keystore is temporarily unavailable; retry';
const JWKS_UNAVAILABLE = 'the JWKS could not be fetched, or the keystore clock is not trusted; retry';

describe('the wallet routes under attack, served by the enclave', () => {
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
      enclave: {
        jwt: { trustedCas: [idp.caPem, slowIdp.caPem] },
        wallets: { rateLimits: { failuresPerAddress: FAILURES, perUser: PER_USER, perAddress: 1000 } },
      },
      parent: { egress: { allowLoopback: true, allowedPorts: [idp.port, slowIdp.port] } },
      walletsTls: true,
    });
    await waitReady(s);
    project = (await s.api('/v1/projects', { token: 'admin', body: { name: 'attacks', auth: jwtAuth(), allowedOrigins: [ORIGIN] } })).body;
    // The IdP's own signing key, to sign payloads jose's SignJWT would not produce (duplicate keys): what a
    // (buggy) IdP could issue. It is NOT an attacker capability.
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
    call(s, `/v1/${projectKey}/wallets/${route}`, { body, ...init });
  const mint = (sub: string, options: Parameters<SimulatedIdp['mint']>[1] = {}, claims: Record<string, unknown> = {}) =>
    idp.mint({ sub, ...claims }, options);
  const b64 = (o: unknown) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
  /** The attacker's own valid token with its payload swapped for one naming `victim` (signature kept). */
  const forgedFor = async (victim: string) => {
    const [h, p, sig] = (await mint('mallory')).split('.');
    const payload = JSON.parse(Buffer.from(p as string, 'base64url').toString());
    return `${h}.${b64({ ...payload, sub: victim })}.${sig}`;
  };
  const strip = (a: Answer) => ({ status: a.status, body: a.body });
  const expectDetail = (res: Answer, status: number, detail: unknown) => expect(strip(res)).toEqual({ status, body: { detail } });
  /** Every key, with the admin token (the only one that sees JWT projects' keys). */
  const allKeys = async () =>
    (await s.api('/v1/keys?limit=1000', { token: 'admin' })).body.keys as Array<{
      keyId: string;
      projectId: string;
      address: string;
      record: { record: string } | null;
    }>;

  describe('client addresses, failure budgets and quotas', () => {
    it('each client is the address the relay saw: forged tokens lock out their sender only, and no header moves it', async () => {
      const victimJwt = await mint('victim-addr');
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, { from: '127.0.0.7' })).status).toBe(200);
      for (let i = 0; i < FAILURES; i++)
        expect((await wallet(project.projectKey, 'get-address', { jwt_token: 'not.a.jwt' }, { from: '127.0.0.66' })).status).toBe(400);
      const locked = await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, { from: '127.0.0.66' });
      expectDetail(locked, 403, 'too many failed requests from this address; retry later');
      expect(Number(locked.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // Every other client is still served.
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, { from: '127.0.0.7' })).status).toBe(200);
      // Forwarding headers are the client's own words: they name no other address.
      for (const headers of [{ 'x-forwarded-for': '127.0.0.7' }, { forwarded: 'for=127.0.0.7' }, { 'x-real-ip': '127.0.0.7' }] as Array<
        Record<string, string>
      >) {
        const spoofed = await wallet(project.projectKey, 'get-address', { jwt_token: victimJwt }, { from: '127.0.0.66', headers });
        expect([headers, spoofed.status]).toEqual([headers, 403]);
      }
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
      // 24 at once: within the enclave's connections per address (wallets.maxConnectionsPerAddress, 32).
      const BURST = 24;
      let answers: Answer[];
      try {
        answers = await Promise.all(
          Array.from({ length: BURST }, () => wallet(slow.projectKey, 'get-address', { jwt_token: forged }, from)),
        );
      } finally {
        slowIdp.control.delayMs = 0;
      }
      expect(answers.filter((a) => a.status === 400)).toHaveLength(FAILURES);
      const held = answers.filter((a) => a.status === 403);
      expect(held).toHaveLength(BURST - FAILURES);
      for (const a of held) {
        expect(a.body).toEqual({ detail: 'too many requests in progress from this address; retry shortly' });
        expect(a.headers['retry-after']).toBe('1');
      }
      expectDetail(
        await wallet(slow.projectKey, 'get-address', { jwt_token: forged }, from),
        403,
        'too many failed requests from this address; retry later',
      );
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
      expectDetail(
        await wallet(project.projectKey, 'get-address', { jwt_token: await forgedFor('busy-user') }, attacker),
        403,
        'too many failed requests from this address; retry later',
      );
      // The user, with their own valid token, is told they are over their limit (from any address).
      expectDetail(
        await wallet(project.projectKey, 'get-address', { jwt_token: busy }, { from: '127.0.0.112' }),
        403,
        'too many requests for this user; retry later',
      );
    });
  });

  describe('answers', () => {
    it('503 answers are fixed texts whatever failed (KMS, JWKS)', async () => {
      const jwt = await mint(`kms-${Date.now()}`);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.0.129' })).status).toBe(200);
      await s.platform.setFaults({ errorNext: 20, ops: ['Decrypt'] });
      let r: Answer;
      try {
        r = await wallet(
          project.projectKey,
          'sign',
          { message: 'x', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' },
          { from: '127.0.0.129' },
        );
      } finally {
        await s.platform.setFaults({ errorNext: 0, ops: [] });
      }
      expectDetail(r, 503, UNAVAILABLE);
      expect(r.headers['retry-after']).toBe('1');
      const noJwks = (
        await s.api('/v1/projects', { token: 'admin', body: { name: 'no JWKS', auth: jwtAuth({ jwksUri: `${idp.issuer}/missing.json` }) } })
      ).body;
      const down = await wallet(noJwks.projectKey, 'get-address', { jwt_token: await mint('x') }, { from: '127.0.0.130' });
      expectDetail(down, 503, JWKS_UNAVAILABLE);
    });

    it('refuses what the enclave refuses, in the SDK format', async () => {
      const now = Math.floor(Date.now() / 1000);
      const refused = async (jwt: string, from: string, projectKey = project.projectKey) =>
        wallet(projectKey, 'get-address', { jwt_token: jwt }, { from });
      expectDetail(await refused(await mint('dave', {}, { iat: now - 1000, exp: now - 500 }), '127.0.0.30'), 400, {
        jwt_token: [expect.stringMatching(/expired/i)],
      });
      expectDetail(await refused(await mint('dave', {}, { aud: 'another-app' }), '127.0.0.31'), 400, {
        jwt_token: [expect.stringMatching(/audience/i)],
      });
      expectDetail(await refused(await mint('dave', {}, { iss: 'https://issuer.example' }), '127.0.0.34'), 400, {
        jwt_token: [expect.stringMatching(/issuer/i)],
      });
      const es256Only = (
        await s.api('/v1/projects', { token: 'admin', body: { name: 'ES256 only', auth: jwtAuth({ algorithms: ['ES256'] }) } })
      ).body;
      expectDetail(await refused(await mint('dave'), '127.0.0.35', es256Only.projectKey), 400, {
        jwt_token: [expect.stringMatching(/algorithm/i)],
      });
      expect((await refused(await mint('dave', { alg: 'ES256' }), '127.0.0.36', es256Only.projectKey)).status).toBe(200);
      expectDetail(
        await wallet(project.projectKey, 'sign-request', {
          jwt_token: await mint('dave'),
          request: { type: 'digest', digest: `0x${'11'.repeat(32)}` },
        }),
        400,
        { request: ['type digest is not allowed for this project'] },
      );
      expectDetail(await refused(await mint('dave'), '127.0.0.33', `pk_${'Q'.repeat(22)}`), 401, 'unknown project key');
      expectDetail(await refused(await mint('dave'), '127.0.0.37', 'default'), 401, 'this project does not take JWTs');
    });

    it('a disabled project answers 401 until enabled', async () => {
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
  });

  describe('attacks that never worked', () => {
    it('no wallet-existence oracle: a forged token naming a user with a key, without one, or with a disabled key answers alike', async () => {
      const withKey = await mint('has-wallet');
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: withKey })).body;
      const dis = (await wallet(project.projectKey, 'get-address', { jwt_token: await mint('has-disabled-wallet') })).body.address;
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
      // Unsigned (alg none) tokens too.
      const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: idp.issuer, aud: idp.audience, sub: 'has-wallet', iat: 1, exp: 9e9 })}.`;
      const r = await wallet(project.projectKey, 'get-address', { jwt_token: none }, { from: '127.0.0.70' });
      expect([r.status, Object.keys(r.body.detail)]).toEqual([400, ['jwt_token']]);
    });

    it('concurrent first calls with forged and valid tokens make one key, answered only to the valid ones', async () => {
      const user = `race-${Date.now()}`;
      const valid = await mint(user);
      const forged = await forgedFor(user);
      // (Each from its own address: one address has at most its failure budget's worth of requests in progress.)
      const answers = await Promise.all(
        Array.from({ length: 16 }, (_, i) =>
          i % 2 === 0
            ? wallet(project.projectKey, 'get-address', { jwt_token: valid }, { from: `127.0.2.${i}` })
            : wallet(project.projectKey, 'get-address', { jwt_token: forged }, { from: `127.0.1.${i}` }),
        ),
      );
      const ok = answers.filter((_a, i) => i % 2 === 0);
      expect(new Set(ok.map((a) => `${a.status} ${a.body.address}`)).size).toBe(1);
      expect(ok[0]!.status).toBe(200);
      for (const a of answers.filter((_a, i) => i % 2 === 1)) expect(a.status).toBe(400);
      const mine = (await allKeys()).filter(
        (k) => k.record && decodeKeyRecord(Buffer.from(k.record.record, 'base64')).subject === JSON.stringify([idp.issuer, user]),
      );
      expect(mine).toHaveLength(1);
    });

    it('a payload with duplicate keys names one user (the last), and look-alike names are distinct users', async () => {
      const bob = (await wallet(project.projectKey, 'get-address', { jwt_token: await mint('dup-bob') })).body.address;
      const now = Math.floor(Date.now() / 1000);
      const raw = `{"iss":${JSON.stringify(idp.issuer)},"aud":${JSON.stringify(idp.audience)},"iat":${now},"exp":${now + 300},"sub":"dup-alice","sub":"dup-bob"}`;
      const jwt = await new CompactSign(new TextEncoder().encode(raw))
        .setProtectedHeader({ alg: 'RS256', kid: rsKid, typ: 'JWT' })
        .sign(privateRs256);
      expect(strip(await wallet(project.projectKey, 'get-address', { jwt_token: jwt }))).toEqual({ status: 200, body: { address: bob } });
      const plain = (await wallet(project.projectKey, 'get-address', { jwt_token: await mint('jose\u0301') })).body.address;
      const nfc = (await wallet(project.projectKey, 'get-address', { jwt_token: await mint('jos\u00e9') })).body.address;
      expect(plain).not.toBe(nfc);
    });

    it('a project with another userClaim: a token without that claim is refused, never resolved through sub or the prototype', async () => {
      const byEmail = (await s.api('/v1/projects', { token: 'admin', body: { name: 'email', auth: jwtAuth({ userClaim: 'email' }) } }))
        .body;
      expect(
        (await wallet(byEmail.projectKey, 'get-address', { jwt_token: await idp.mint({ sub: 'x1', email: 'e@example.com' }) })).status,
      ).toBe(200);
      const noClaim = await wallet(byEmail.projectKey, 'get-address', { jwt_token: await mint('only-sub') }, { from: '127.0.0.90' });
      expect(noClaim.status).toBe(400);
      const proto = await s.api('/v1/projects', { token: 'admin', body: { name: 'proto', auth: jwtAuth({ userClaim: '__proto__' }) } });
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
      for (const origin of variants) {
        const r = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin } });
        expect([origin, r.headers['access-control-allow-origin']]).toEqual([origin, undefined]);
        const pre = await call(s, `/v1/${project.projectKey}/wallets/sign`, {
          method: 'OPTIONS',
          headers: { origin, 'access-control-request-method': 'POST' },
        });
        expect([origin, pre.headers['access-control-allow-origin']]).toEqual([origin, undefined]);
      }
      const ok = await call(s, `/v1/${project.projectKey}/wallets/sign`, {
        method: 'OPTIONS',
        headers: {
          origin: ORIGIN,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type, authorization',
        },
      });
      expect([ok.status, ok.headers['access-control-allow-origin'], ok.headers['access-control-allow-methods']]).toEqual([
        204,
        ORIGIN,
        'POST',
      ]);
      expect(ok.headers['access-control-allow-credentials']).toBeUndefined();
      expect(String(ok.headers['access-control-allow-headers'])).toBe('content-type');
      const answered = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: ORIGIN } });
      expect([
        answered.status,
        answered.headers['access-control-allow-origin'],
        answered.headers['access-control-allow-credentials'],
      ]).toEqual([200, ORIGIN, undefined]);
      // Another project's origin does not open this one.
      await s.api('/v1/projects', { token: 'admin', body: { name: 'o', auth: jwtAuth(), allowedOrigins: ['https://other.example'] } });
      const cross = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: 'https://other.example' } });
      expect(cross.headers['access-control-allow-origin']).toBeUndefined();
    });

    it("the caller API: a token below admin sees no JWT project's keys, creates or reads no project, and nobody signs with a user's key", async () => {
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: await mint('op-victim') })).body;
      const key = (await allKeys()).find((k) => k.address === address)!;
      expect(decodeKeyRecord(Buffer.from(key.record!.record, 'base64')).subject).toBe(JSON.stringify([idp.issuer, 'op-victim']));
      for (const token of ['read', 'full']) {
        const keys = (await s.api('/v1/keys?limit=1000', { token })).body.keys as Array<{ projectId: string }>;
        expect([token, keys.filter((k) => k.projectId !== 'default')]).toEqual([token, []]);
        expect([token, (await s.api(`/v1/keys/${key.keyId}`, { token })).status]).toEqual([token, 404]);
      }
      for (const token of ['full', 'create', 'sign', 'read']) {
        expect((await s.api('/v1/projects', { token, body: { name: 'x', auth: jwtAuth() } })).status).toBe(403);
        expect((await s.api(`/v1/projects/${project.projectId}`, { token })).status).toBe(403);
      }
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
      // Only admin toggles the disabled flag, an emergency stop: the user's signatures answer 409 until enabled.
      for (const token of ['full', 'sign', 'read', 'create'])
        expect((await s.api(`/v1/keys/${key.keyId}/disable`, { token, method: 'POST' })).status).toBe(403);
      const jwt = await mint('op-victim');
      const signBody = { message: 'x', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' };
      expect((await s.api(`/v1/keys/${key.keyId}/disable`, { token: 'admin', method: 'POST' })).body.disabled).toBe(true);
      expect([(await wallet(project.projectKey, 'sign', signBody)).status]).toEqual([409]);
      expect((await s.api(`/v1/keys/${key.keyId}/enable`, { token: 'admin', method: 'POST' })).body.disabled).toBe(false);
      expect((await wallet(project.projectKey, 'sign', signBody)).status).toBe(200);
    });

    it('sign: hash is EIP-191 over the 32 bytes (any hex case), message is the text; malformed hashes are 400 message', async () => {
      const jwt = await mint('signer');
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).body;
      const hash = `0x${'AB'.repeat(16)}${'cd'.repeat(16)}`;
      const sig = (await wallet(project.projectKey, 'sign', { message: hash, jwt_token: jwt, message_type: 'hash', wallet_type: 'evm' }))
        .body.signature;
      expectWalletSignature(sig, { hash }, address);
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
      // Duplicate "type" in the raw JSON: the check and the signer read the same (last) one.
      const rawBody = `{"jwt_token":${JSON.stringify(jwt)},"request":{"type":"message","type":"digest","digest":"0x${'11'.repeat(32)}"}}`;
      const dup = await call(s, `/v1/${project.projectKey}/wallets/sign-request`, {
        method: 'POST',
        body: rawBody,
        headers: { 'content-type': 'application/json' },
      });
      expect(dup.status).toBe(400);
      // sign-request answers the full result.
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
    });

    it("shows the wallet routes' outcomes and the enclave's JWT health in the parent's metrics (counts, nothing of the requests)", async () => {
      const metrics = await s.metrics();
      for (const outcome of ['ok', 'invalid_jwt', 'rate_limited', 'unauthorized'])
        expect([outcome, new RegExp(`^nks_enclave_wallet_requests\\{outcome="${outcome}"\\} [1-9]\\d*$`, 'm').test(metrics)]).toEqual([
          outcome,
          true,
        ]);
      expect(metrics).toMatch(/^nks_enclave_clock\{state="trusted"\} 1$/m);
      expect(metrics).toMatch(/^nks_enclave_counter\{counter="jwt_verifications"\} [1-9]\d*$/m);
      expect(metrics).toMatch(/^nks_enclave_counter\{counter="jwt_refusals"\} [1-9]\d*$/m);
      expect(metrics).toMatch(/^nks_tls_installed 1$/m);
    });

    it('path confusion: project key case, encoding, default, trailing slash', async () => {
      const jwt = await mint('path-user');
      const pk = project.projectKey;
      const statuses: Record<string, number> = {};
      for (const p of [pk.toUpperCase(), pk.replace('pk_', 'PK_'), 'default', `${pk}%2Fwallets`, `${pk}/`])
        statuses[p] = (await wallet(p, 'get-address', { jwt_token: jwt }, { from: '127.0.0.95' })).status;
      // Never another project, never served: unknown keys are 401 or 404, the default project is 401.
      for (const [p, status] of Object.entries(statuses)) expect([p, [401, 404].includes(status)]).toEqual([p, true]);
      expect(statuses.default).toBe(401);
      const slash = await call(s, `/v1/${pk}/wallets/get-address/`, { body: { jwt_token: jwt } });
      expect(slash.status).toBe(404);
    });
  });
});
