/**
 * JWT projects against the real enclave bundle over simulated vsock (docs/PROTOCOL.md, `jwt`): the test stands
 * where the parent would, with a simulated identity provider serving its JWKS over real HTTPS under its own CA
 * (trusted by the enclave's configuration), real jose-minted RS256 and ES256 tokens, and an egress relay that
 * connects wherever it is asked, or wherever the test says (test/support/open-relay.ts): a compromised parent.
 *
 * What must hold: a JWT project's key is made, signs and is looked up only with a valid JWT of its user,
 * verified inside the enclave before any KMS call or signature; no parent move (swapping records, subjects,
 * projects, leaving the JWT out, redirecting or changing the JWKS fetch) makes it sign otherwise; a JWKS that
 * cannot be fetched is JWKS_UNAVAILABLE (retryable), never an auth failure, and never blocks other signing.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { SignJWT } from 'jose';
import { getBytes, hexlify, randomBytes as ethersRandom, verifyMessage } from 'ethers';
import { recoverMessageAddress } from 'viem';
import type { CreateResult, EnclaveHealth, ProjectResult } from '@nks/shared/enclave-api';
import type { KeystoreError } from '@nks/shared/errors';
import { encodeFrame, FrameDecoder } from '@nks/shared/framing';
import { jwtSubject, type JwtProjectAuth } from '@nks/shared/project-auth';
import { decodeKeyRecord, decodeProjectRecord, identityPublicKey, openProjectRecord, type SignedRecord } from '@nks/shared/records';
import { simulatedSocketPath } from '@nks/shared/transport';
import { rejection, sleep, tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { makeTestCa } from '../../sim/src/idp/tls';
import { startOpenRelay, type OpenRelay } from '../../test/support/open-relay';
import { CLOCK_NOT_TRUSTED_MESSAGE } from '../src/auth/clock';
import { CREATE_WITHOUT_JWT_MESSAGE, NOT_THIS_USER_MESSAGE, SIGN_WITHOUT_JWT_MESSAGE, TOKEN_PROJECT_JWT_MESSAGE } from '../src/keys/vault';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { ENCLAVE_ADDRESS, startEnclaveHarness, type EnclaveHarness } from './harness';
import { startJwksServer, type JwksServer } from './jwks-server';
import { startShiftedNsm, type ShiftedNsm } from './shifted-nsm';

const keyRecordOf = (s: SignedRecord) => decodeKeyRecord(Buffer.from(s.record, 'base64'));
const projectRecordOf = (s: SignedRecord) => decodeProjectRecord(Buffer.from(s.record, 'base64'));
const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

describe('JWT projects (real enclave bundle, real HTTPS JWKS, an egress relay the parent owns)', () => {
  let runDir: string;
  let h: EnclaveHarness;
  let idp: SimulatedIdp;
  /** Another issuer, whose CA the enclave does not trust: the parent's own IdP. */
  let attacker: SimulatedIdp;
  let jwks: JwksServer;
  let otherName: JwksServer;
  let relay: OpenRelay;
  let jwtConfig: Record<string, unknown>;
  /** A JWT project on the IdP's JWKS (RS256, ES256; maxTokenLifetime 600 s). */
  let p1: ProjectResult;

  beforeAll(async () => {
    runDir = tempRunDir('nks-jwt-');
    idp = await startSimulatedIdp();
    attacker = await startSimulatedIdp();
    const ca = await makeTestCa('jwt test CA');
    jwks = await startJwksServer(ca);
    otherName = await startJwksServer(ca, ['other.example']);
    jwtConfig = {
      trustedCas: [idp.caPem, ca.caPem],
      jwks: { fetchTimeoutMs: 2_000, minTtlMs: 1_000, unknownKidRefetchMs: 2_000, failureRetryMs: 0 },
    };
    h = await startEnclaveHarness(runDir, { jwt: jwtConfig });
    relay = await startOpenRelay(runDir);
    p1 = await newProject();
  }, 120_000);

  afterAll(async () => {
    await relay?.close();
    await h?.stop();
    await Promise.all([idp?.close(), attacker?.close(), jwks?.close(), otherName?.close()]);
  });

  beforeEach(() => {
    relay.route = (req) => req;
    relay.tamper = null;
  });

  const health = (): Promise<EnclaveHealth> => h.client.call('enclave.health', {});
  function newProject(auth: Partial<JwtProjectAuth> = {}, rest: Record<string, unknown> = {}): Promise<ProjectResult> {
    return h.client.call('projects.create', {
      settings: { auth: { type: 'jwt', issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri, ...auth }, ...rest },
    });
  }
  let n = 0;
  const create = (project: ProjectResult, jwt: string | undefined, subject: string | null = null): Promise<CreateResult> =>
    h.client.call('keys.create', { keyId: `jwt-${++n}`, project: project.record, subject, ...(jwt === undefined ? {} : { jwt }) });
  const sign = (key: CreateResult, project: ProjectResult | SignedRecord, jwt: string | undefined, message: unknown = 'hello') =>
    h.client.call('keys.sign', {
      keyId: key.keyId,
      blob: key.blob,
      record: key.record,
      project: 'projectId' in project ? project.record : project,
      request: { type: 'message', message } as never,
      ...(jwt === undefined ? {} : { jwt }),
    });
  const lookup = (key: CreateResult, project: ProjectResult | SignedRecord, jwt: string) =>
    h.client.call('keys.lookup', { record: key.record, project: 'projectId' in project ? project.record : project, jwt });
  const mint = (sub: string, o: Parameters<SimulatedIdp['mint']>[1] = {}, claims: Record<string, unknown> = {}) =>
    idp.mint({ sub, ...claims }, o);

  /** The refusal `call` ends with, after which nothing was signed and KMS was not asked. */
  async function refused(call: () => Promise<unknown>): Promise<KeystoreError> {
    const before = (await health()).counters;
    const asked = h.proxyRequests.length;
    const err = await rejection(call());
    const after = (await health()).counters;
    expect({ signs: after.signs - before.signs, creates: after.creates - before.creates, kms: h.proxyRequests.length - asked }).toEqual({
      signs: 0,
      creates: 0,
      kms: 0,
    });
    return err;
  }
  const codeAndMessage = (e: KeystoreError) => [e.code, e.message];

  describe('projects', () => {
    it('projects.create: random p_/pk_ ids, a seq 0 active record with the settings (defaults filled), signed by the identity', async () => {
      const identity = identityPublicKey(h.platform.identity.publicKey);
      const a = await newProject({}, { allowedOrigins: ['https://wallet.example'] });
      const b = await h.client.call('projects.create', { settings: { auth: { type: 'token' } } });
      expect(a.projectId).toMatch(/^p_[A-Za-z0-9_-]{22}$/);
      expect(a.projectKey).toMatch(/^pk_[A-Za-z0-9_-]{22}$/);
      expect(new Set([a.projectId, b.projectId, p1.projectId]).size).toBe(3);
      expect(new Set([a.projectKey, b.projectKey, p1.projectKey]).size).toBe(3);
      const { record } = openProjectRecord(a.record, identity);
      expect(record).toEqual({
        v: 1,
        kind: 'project',
        projectId: a.projectId,
        projectKey: a.projectKey,
        auth: {
          type: 'jwt',
          issuer: idp.issuer,
          audience: idp.audience,
          userClaim: 'sub',
          jwksUri: idp.jwksUri,
          algorithms: ['RS256', 'ES256'],
          maxTokenLifetime: 600,
        },
        allowedRequestTypes: ['message', 'userOperation', 'typedData'],
        allowedOrigins: ['https://wallet.example'],
        state: 'active',
        seq: 0,
        prev: null,
        createdAt: expect.any(Number),
      });
      expect(openProjectRecord(b.record, identity).record.auth).toEqual({ type: 'token' });
    });

    it('projects.create refuses settings the schema refuses (HS256, none, http JWKS, * origin), naming the field', async () => {
      const bad: Array<[Record<string, unknown>, RegExp]> = [
        [
          { auth: { type: 'jwt', issuer: 'i', audience: 'a', jwksUri: idp.jwksUri, algorithms: ['HS256'] } },
          /settings\.auth\.algorithms\[0\]/,
        ],
        [
          { auth: { type: 'jwt', issuer: 'i', audience: 'a', jwksUri: idp.jwksUri, algorithms: ['none'] } },
          /settings\.auth\.algorithms\[0\]/,
        ],
        [{ auth: { type: 'jwt', issuer: 'i', audience: 'a', jwksUri: 'http://localhost/jwks' } }, /settings\.auth\.jwksUri/],
        [
          { auth: { type: 'jwt', issuer: 'i', audience: 'a', jwksUri: idp.jwksUri, maxTokenLifetime: 3601 } },
          /settings\.auth\.maxTokenLifetime/,
        ],
        [{ auth: { type: 'token' }, allowedOrigins: ['*'] }, /settings\.allowedOrigins\[0\]/],
      ];
      for (const [settings, field] of bad) {
        const err = await rejection(h.client.call('projects.create', { settings } as never));
        expect([err.code, field.test(err.message)]).toEqual(['INVALID_PARAMS', true]);
      }
    });

    it('projects.setState: disabling refuses create, sign and lookup (KEY_DISABLED); the record before is refused; enabling resumes', async () => {
      const p = await newProject();
      const jwt = await mint('dora');
      const key = await create(p, jwt);
      const off = await h.client.call('projects.setState', { project: p.record, state: 'disabled' });
      expect([off.projectId, off.projectKey]).toEqual([p.projectId, p.projectKey]);
      const offRecord = projectRecordOf(off.record);
      expect([offRecord.state, offRecord.seq, offRecord.prev]).toEqual(['disabled', 1, expect.stringMatching(/^0x[0-9a-f]{64}$/)]);
      expect(offRecord.auth).toEqual(projectRecordOf(p.record).auth);

      expect(codeAndMessage(await refused(() => create(off, jwt)))).toEqual(['KEY_DISABLED', 'the project is disabled']);
      expect(codeAndMessage(await refused(() => sign(key, off, jwt)))).toEqual(['KEY_DISABLED', 'the project is disabled']);
      expect(codeAndMessage(await rejection(lookup(key, off, jwt)))).toEqual(['KEY_DISABLED', 'the project is disabled']);
      // The parent hands back the active record from before: older than the newest seen.
      expect(codeAndMessage(await refused(() => sign(key, p, jwt)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
      expect((await rejection(h.client.call('projects.setState', { project: p.record, state: 'active' }))).code).toBe('KEY_INTEGRITY');

      const on = await h.client.call('projects.setState', { project: off.record, state: 'active' });
      expect(projectRecordOf(on.record)).toMatchObject({ state: 'active', seq: 2 });
      await expect(sign(key, on, jwt)).resolves.toMatchObject({ address: key.address });
      await expect(lookup(key, on, jwt)).resolves.toEqual({ keyId: key.keyId, address: key.address });
    });
  });

  describe('the happy path', () => {
    it.each(['RS256', 'ES256'] as const)(
      '%s: create with the JWT (subject from it), sign, look up; the signature recovers the address',
      async (alg) => {
        const jwt = await mint(`alice-${alg}`, { alg });
        const before = (await health()).jwt;
        const key = await create(p1, jwt);
        expect(keyRecordOf(key.record)).toMatchObject({
          projectId: p1.projectId,
          subject: jwtSubject(idp.issuer, `alice-${alg}`),
          state: 'active',
        });

        const text = await sign(key, p1, jwt, 'hello');
        expect(await recoverMessageAddress({ message: 'hello', signature: text.signature })).toBe(key.address);
        // TrueWallet's "hash": EIP-191 over the 32 raw bytes, what ethers signMessage(getBytes(hash)) gives.
        const hash = hexlify(ethersRandom(32));
        const raw = await sign(key, p1, jwt, { raw: hash });
        expect(verifyMessage(getBytes(hash), raw.signature)).toBe(key.address);

        expect(await lookup(key, p1, jwt)).toEqual({ keyId: key.keyId, address: key.address });
        const after = (await health()).jwt;
        expect(after.clock).toBe('trusted');
        expect(Math.abs(after.clockDriftMs as number)).toBeLessThan(5_000);
        expect(after.verifications - before.verifications).toBe(4);
        expect(after.jwksCached).toBeGreaterThanOrEqual(1);
      },
    );

    it('a cold key: the JWT is checked before the one KMS Decrypt; a warm sign makes no JWKS fetch', async () => {
      const jwt = await mint('carol');
      const key = await create(p1, jwt);
      const fetches = idp.fetches;
      expect((await h.client.call('keys.forget', { keyId: key.keyId })).forgotten).toBe(false);
      const asked = h.proxyRequests.length;
      await sign(key, p1, jwt);
      expect(h.proxyRequests.length - asked).toBe(1);
      await sign(key, p1, jwt);
      expect(h.proxyRequests.length - asked).toBe(1);
      expect(idp.fetches).toBe(fetches);
    });
  });

  describe('JWTs the enclave refuses (INVALID_JWT, nothing signed, no KMS call)', () => {
    let alice: CreateResult;
    let aliceJwt: string;
    beforeAll(async () => {
      aliceJwt = await mint('alice');
      alice = await create(p1, aliceJwt);
      // Cold: a refusal that reached the unseal would show as a KMS request.
      await h.client.call('keys.forget', { keyId: alice.keyId });
    });

    it('refuses each bad JWT with a message naming the problem, on sign, create and lookup', async () => {
      const now = Math.floor(Date.now() / 1000);
      const rsaPublicPem = createPublicKey({ key: idp.jwks().keys[0] as never, format: 'jwk' }).export({ format: 'pem', type: 'spki' });
      const cases: Array<[string, Promise<string> | string, string]> = [
        ['expired', mint('alice', {}, { iat: now - 400, exp: now - 100 }), 'the JWT has expired'],
        ['nbf in the future', mint('alice', {}, { nbf: now + 300 }), 'the JWT is not yet valid'],
        ['lifetime over the cap', mint('alice', { lifetimeS: 601 }), 'the JWT lives longer than the project allows'],
        ['iat missing', mint('alice', {}, { iat: undefined }), 'the JWT has no "iat" (issue time) claim'],
        ['wrong issuer', mint('alice', {}, { iss: attacker.issuer }), 'the JWT is for another issuer'],
        ['wrong audience', mint('alice', {}, { aud: 'another-app' }), 'the JWT is for another audience'],
        ['missing audience', mint('alice', {}, { aud: undefined }), 'the JWT has no "aud" (audience) claim'],
        ['unknown kid', mint('alice', { kid: 'rs-9' }), "the JWT's key is unknown: no key of the project's JWKS matches it"],
        [
          'a key not in the JWKS (under a kid that is)',
          attacker.mint({ sub: 'alice', iss: idp.issuer, aud: idp.audience }, { kid: 'rs-1' }),
          'the JWT signature does not verify',
        ],
        [
          'a jku header pointing to another JWKS',
          attacker.mint({ sub: 'alice', iss: idp.issuer, aud: idp.audience }, { kid: 'rs-1', header: { jku: attacker.jwksUri } }),
          'the JWT signature does not verify',
        ],
        [
          'alg none',
          `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'alice', iss: idp.issuer, aud: idp.audience, iat: now, exp: now + 60 })}.`,
          "the JWT's algorithm is not allowed by the project",
        ],
        [
          'HS256 with the RSA public key as secret',
          new SignJWT({ sub: 'alice', iss: idp.issuer, aud: idp.audience, iat: now, exp: now + 60 })
            .setProtectedHeader({ alg: 'HS256', kid: 'rs-1' })
            .sign(Buffer.from(rsaPublicPem)),
          "the JWT's algorithm is not allowed by the project",
        ],
        [
          'the claim not a string',
          mint('alice', {}, { sub: 42 }),
          'the JWT has no "sub" claim as a string (of at most 1 KiB with the issuer)',
        ],
        ['malformed', 'not.a.jwt', 'the JWT is malformed'],
      ];
      const before = (await health()).jwt;
      for (const [name, token, message] of cases) {
        const jwt = await token;
        const got = [
          codeAndMessage(await refused(() => sign(alice, p1, jwt))),
          codeAndMessage(await refused(() => create(p1, jwt))),
          codeAndMessage(await rejection(lookup(alice, p1, jwt))),
        ];
        expect([name, got]).toEqual([name, [0, 1, 2].map(() => ['INVALID_JWT', message])]);
      }
      expect((await health()).jwt.refusals - before.refusals).toBe(3 * cases.length);
      // The jku was never followed: the attacker's JWKS server was never asked, nor the relay for its port.
      expect(attacker.fetches).toBe(0);
      expect(relay.requests.filter((r) => r.port === attacker.port)).toEqual([]);
    });

    it('refuses a JWT over 8 KiB at the protocol (INVALID_PARAMS), before any check', async () => {
      const big = await mint('alice', {}, { pad: 'x'.repeat(8200) });
      const err = await refused(() => sign(alice, p1, big));
      expect([err.code, err.message]).toEqual(['INVALID_PARAMS', 'params.jwt: expected a JWT of at most 8192 bytes']);
    });
  });

  describe('what a parent may try with records, subjects and projects', () => {
    let alice: CreateResult;
    let aliceJwt: string;
    let bobJwt: string;
    beforeAll(async () => {
      aliceJwt = await mint('alice-2');
      bobJwt = await mint('bob-2', { alg: 'ES256' });
      alice = await create(p1, aliceJwt);
    });

    it("another user's JWT on this user's key: FORBIDDEN, the same answer for sign and lookup", async () => {
      expect(codeAndMessage(await refused(() => sign(alice, p1, bobJwt)))).toEqual(['FORBIDDEN', NOT_THIS_USER_MESSAGE]);
      expect(codeAndMessage(await rejection(lookup(alice, p1, bobJwt)))).toEqual(['FORBIDDEN', NOT_THIS_USER_MESSAGE]);
    });

    it('the same user claim at another issuer (a project of the parent, its own IdP) does not reach the key', async () => {
      // The parent may create projects: one with its own IdP, whose JWKS the enclave then fetches. Its "alice" is
      // another subject, in another project: handing the enclave that project's record with alice's key fails the
      // record check, and handing p1's record with the parent's JWT fails the issuer.
      const parents = await newProject({ issuer: attacker.issuer, jwksUri: attacker.jwksUri });
      const forged = await attacker.mint({ sub: 'alice-2' });
      expect(codeAndMessage(await refused(() => sign(alice, parents, forged)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
      // jose checks the signature before the claims: the parent's key is not in p1's JWKS.
      expect(codeAndMessage(await refused(() => sign(alice, p1, forged)))).toEqual(['INVALID_JWT', 'the JWT signature does not verify']);
    });

    it("swapping the project record: the token project's (no JWT needed there) or another JWT project's is KEY_INTEGRITY", async () => {
      const p2 = await newProject();
      expect(codeAndMessage(await refused(() => sign(alice, h.defaultProject, undefined)))).toEqual([
        'KEY_INTEGRITY',
        INTEGRITY_REFUSED_MESSAGE,
      ]);
      expect(codeAndMessage(await refused(() => sign(alice, p2, aliceJwt)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
      expect(codeAndMessage(await rejection(lookup(alice, p2, aliceJwt)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    });

    it("swapping the subject: a record edited to bob's subject does not verify; bob's own key is not alice's", async () => {
      const bob = await create(p1, bobJwt);
      // Bob's key with alice's blob (and the reverse): the record names another blob.
      expect(codeAndMessage(await refused(() => sign({ ...bob, blob: alice.blob }, p1, bobJwt)))).toEqual([
        'KEY_INTEGRITY',
        INTEGRITY_REFUSED_MESSAGE,
      ]);
      // Alice's record, bob's JWT: another user.
      expect(codeAndMessage(await refused(() => sign(alice, p1, bobJwt)))).toEqual(['FORBIDDEN', NOT_THIS_USER_MESSAGE]);
      await expect(sign(bob, p1, bobJwt)).resolves.toMatchObject({ address: bob.address });
    });

    it('no JWT on a JWT key is FORBIDDEN (no operator token signs for a JWT user); a JWT on a token project is INVALID_PARAMS', async () => {
      expect(codeAndMessage(await refused(() => sign(alice, p1, undefined)))).toEqual(['FORBIDDEN', SIGN_WITHOUT_JWT_MESSAGE]);
      expect(codeAndMessage(await refused(() => create(p1, undefined)))).toEqual(['FORBIDDEN', CREATE_WITHOUT_JWT_MESSAGE]);
      const subjectToo = await refused(() => create(p1, aliceJwt, 'alice'));
      expect(codeAndMessage(subjectToo)).toEqual([
        'INVALID_PARAMS',
        "a JWT project's key takes its subject from the JWT: subject must be null",
      ]);

      const tokenKey = await h.create('token-key-jwt');
      const tokenProject = { projectId: 'default', projectKey: 'default', record: h.defaultProject };
      expect(codeAndMessage(await refused(() => sign(tokenKey, tokenProject, aliceJwt)))).toEqual([
        'INVALID_PARAMS',
        TOKEN_PROJECT_JWT_MESSAGE,
      ]);
      expect(codeAndMessage(await refused(() => create(tokenProject, aliceJwt)))).toEqual(['INVALID_PARAMS', TOKEN_PROJECT_JWT_MESSAGE]);
      expect(codeAndMessage(await rejection(lookup(tokenKey, tokenProject, aliceJwt)))).toEqual([
        'INVALID_PARAMS',
        TOKEN_PROJECT_JWT_MESSAGE,
      ]);
      // The token path is unchanged.
      await expect(sign(tokenKey, tokenProject, undefined)).resolves.toMatchObject({ address: tokenKey.address });
    });

    it('keys.setDisabled needs no JWT; a disabled key refuses sign and lookup (KEY_DISABLED), its old record is refused', async () => {
      const jwt = await mint('erin');
      const key = await create(p1, jwt);
      const { record } = await h.client.call('keys.setDisabled', { record: key.record, project: p1.record, disabled: true });
      expect(codeAndMessage(await refused(() => sign({ ...key, record }, p1, jwt)))).toEqual(['KEY_DISABLED', 'the key is disabled']);
      expect(codeAndMessage(await rejection(lookup({ ...key, record }, p1, jwt)))).toEqual(['KEY_DISABLED', 'the key is disabled']);
      expect(codeAndMessage(await rejection(lookup(key, p1, jwt)))).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    });

    it('a key disabled (and dropped from the cache) while its JWT is checked: the sign starts again and refuses the old record', async () => {
      const jwt = await mint('fay');
      const key = await create(p1, jwt);
      await sign(key, p1, jwt); // warm
      // Both requests in one write: the enclave starts the sign, and runs the disable while the JWT verifies.
      const sock = net.connect(simulatedSocketPath(runDir, ENCLAVE_ADDRESS));
      await new Promise((r) => sock.once('connect', r));
      type Answer = { id: number; result?: unknown; error?: { message: string; data: { code: string } } };
      const answers = new Map<number, Answer>();
      const decoder = new FrameDecoder();
      sock.on('data', (chunk: Buffer) => {
        for (const f of decoder.push(chunk)) {
          const m = JSON.parse(f.toString()) as Answer;
          answers.set(m.id, m);
        }
      });
      const frame = (id: number, method: string, params: unknown) =>
        encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id, method, params })));
      sock.write(
        Buffer.concat([
          frame(1, 'keys.sign', {
            keyId: key.keyId,
            blob: key.blob,
            record: key.record,
            project: p1.record,
            request: { type: 'message', message: 'x' },
            jwt,
          }),
          frame(2, 'keys.setDisabled', { record: key.record, project: p1.record, disabled: true }),
        ]),
      );
      await waitFor(() => answers.size === 2, 5_000, 'both answers');
      sock.destroy();
      expect(answers.get(2)?.result).toMatchObject({ record: expect.anything() });
      expect([answers.get(1)?.error?.data.code, answers.get(1)?.error?.message]).toEqual(['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE]);
    });
  });

  describe('JWKS fetches the enclave refuses (JWKS_UNAVAILABLE, retryable)', () => {
    const jwksOf = () => idp.jwks();
    /** A project whose JWKS is `path` on the test server (a URI of its own: nothing cached). */
    const projectAt = (uri: string) => newProject({ jwksUri: uri });
    async function unavailable(uri: string): Promise<string> {
      const p = await projectAt(uri);
      const err = await refused(() => create(p, aliceJwt));
      expect([err.code, err.retryable]).toEqual(['JWKS_UNAVAILABLE', true]);
      return err.message;
    }
    let aliceJwt: string;
    beforeAll(async () => {
      aliceJwt = await mint('alice-3');
    });

    it('a JWKS server that is down, then up again', async () => {
      // 127.0.0.1 instead of localhost: another URI, so nothing cached (the certificate names both).
      const uri = idp.jwksUri.replace('localhost', '127.0.0.1');
      await idp.stop();
      try {
        const before = (await health()).jwt.jwksFetchFailures;
        expect(await unavailable(uri)).toMatch(/^the JWKS could not be fetched: the egress relay refused the connection$/);
        expect((await health()).jwt.jwksFetchFailures - before).toBe(1);
      } finally {
        await idp.start();
      }
      const p = await projectAt(uri);
      await expect(create(p, aliceJwt)).resolves.toMatchObject({ record: expect.anything() });
    });

    it('a JWKS too big, with too many keys, a symmetric key, private parts, not JSON, a redirect or another status', async () => {
      const cases: Array<[string, Parameters<JwksServer['serve']>[1], string]> = [
        ['/big', { body: { keys: jwksOf().keys, pad: 'x'.repeat(70_000) } }, 'the JWKS is larger than 65536 bytes'],
        ['/big-chunked', { body: { keys: jwksOf().keys, pad: 'x'.repeat(70_000) }, chunked: 8192 }, 'the JWKS is larger than 65536 bytes'],
        [
          '/many',
          { body: { keys: Array.from({ length: 21 }, (_, i) => ({ ...jwksOf().keys[0], kid: `k${i}` })) } },
          'the JWKS has more than 20 keys',
        ],
        ['/oct', { body: { keys: [...jwksOf().keys, { kty: 'oct', k: 'c2VjcmV0', kid: 'hs' }] } }, 'the JWKS holds a symmetric key'],
        [
          '/private',
          { body: { keys: [generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' })] } },
          'the JWKS holds private key material',
        ],
        ['/html', { body: '<html>' }, 'the JWKS is not JSON'],
        ['/redirect', { redirectTo: idp.jwksUri }, 'the JWKS server answered HTTP 302 (redirects are not followed)'],
        ['/500', { status: 500, body: jwksOf() }, 'the JWKS server answered HTTP 500'],
        ['/missing', {}, 'the JWKS server answered HTTP 404'],
      ];
      const idpFetches = idp.fetches;
      for (const [p, route, reason] of cases) {
        if (p !== '/missing') jwks.serve(p, route);
        expect([p, await unavailable(jwks.url(p))]).toEqual([p, `the JWKS could not be fetched: ${reason}`]);
      }
      // The redirect was not followed.
      expect(idp.fetches).toBe(idpFetches);
    });

    it('a relay that refuses, says another first byte, or never answers', async () => {
      jwks.serve('/relay', { body: jwksOf() });
      relay.route = () => 'refuse';
      expect(await unavailable(jwks.url('/relay'))).toBe('the JWKS could not be fetched: the egress relay refused the connection');
      relay.route = () => Buffer.from('HTTP/1.1 200 OK\r\n\r\n{"keys":[]}');
      expect(await unavailable(jwks.url('/relay'))).toBe('the JWKS could not be fetched: the egress relay refused the connection');
      relay.route = () => 'hang';
      expect(await unavailable(jwks.url('/relay'))).toBe('the JWKS could not be fetched: the egress relay did not answer in time');
    });

    it('a relay that connects to another server: TLS refuses a certificate for another name, or from an untrusted CA', async () => {
      jwks.serve('/elsewhere', { body: jwksOf() });
      relay.route = () => ({ host: '127.0.0.1', port: otherName.port });
      expect(await unavailable(jwks.url('/elsewhere'))).toBe(
        'the JWKS could not be fetched: TLS with the JWKS server failed (ERR_TLS_CERT_ALTNAME_INVALID)',
      );
      // The parent's own HTTPS server, with a certificate for localhost that the enclave's CAs do not sign.
      relay.route = () => ({ host: '127.0.0.1', port: attacker.port });
      expect(await unavailable(jwks.url('/elsewhere'))).toMatch(
        /^the JWKS could not be fetched: TLS with the JWKS server failed \([A-Z_]+\)$/,
      );
      expect(attacker.fetches).toBe(0);
    });

    it('a relay that changes bytes: TLS fails, whichever byte', async () => {
      jwks.serve('/tampered', { body: jwksOf() });
      relay.tamper = (chunk, offset) => {
        if (offset > 0) return chunk;
        const out = Buffer.from(chunk);
        out[out.length - 1] = (out[out.length - 1] as number) ^ 1;
        return out;
      };
      expect(await unavailable(jwks.url('/tampered'))).toMatch(/^the JWKS could not be fetched: TLS with the JWKS server failed \(/);
      // After the handshake: every chunk but the first changed.
      relay.tamper = (chunk, offset) => {
        if (offset === 0) return chunk;
        const out = Buffer.from(chunk);
        out[0] = (out[0] as number) ^ 1;
        return out;
      };
      expect(await unavailable(jwks.url('/tampered'))).toMatch(
        /^the JWKS could not be fetched: (TLS with|the connection to) the JWKS server failed \(/,
      );
    });

    it('a fetch that hangs does not block other signing', async () => {
      relay.route = () => 'hang';
      jwks.serve('/blocked', { body: jwksOf() });
      const p = await projectAt(jwks.url('/blocked'));
      const tokenKey = await h.create('token-while-fetching');
      let settled = false;
      const pending = rejection(create(p, aliceJwt)).finally(() => {
        settled = true;
      });
      await waitFor(() => relay.requests.some((r) => r.port === jwks.port), 2_000, 'the relay request');
      // Five signs complete while the fetch still hangs (no wall-clock bound: the machine may be slow).
      for (let i = 0; i < 5; i++) await h.signDigest(tokenKey, i);
      expect(settled).toBe(false);
      expect((await pending).code).toBe('JWKS_UNAVAILABLE');
    });
  });

  describe('the JWKS cache', () => {
    it('honours max-age (clamped to minTtlMs here: 1 s), then refetches once, in the background', async () => {
      jwks.serve('/short', { body: idp.jwks(), cacheControl: 'max-age=1' });
      jwks.serve('/long', { body: idp.jwks(), cacheControl: 'max-age=300' });
      const short = await newProject({ jwksUri: jwks.url('/short') });
      const long = await newProject({ jwksUri: jwks.url('/long') });
      const jwt = await mint('frank');
      const ks = await create(short, jwt);
      const kl = await create(long, jwt);
      for (let i = 0; i < 3; i++) {
        await sign(ks, short, jwt);
        await sign(kl, long, jwt);
      }
      expect([jwks.fetches('/short'), jwks.fetches('/long')]).toEqual([1, 1]);
      await sleep(1_200);
      await sign(ks, short, jwt); // stale: answered from the set, which is refreshed meanwhile
      await sign(kl, long, jwt);
      await waitFor(() => jwks.fetches('/short') === 2, 2_000, 'the background refresh');
      await sign(ks, short, jwt);
      expect([jwks.fetches('/short'), jwks.fetches('/long')]).toEqual([2, 1]);
    });

    it('an unknown kid refetches at most once per unknownKidRefetchMs (2 s here); concurrent first fetches share one', async () => {
      jwks.serve('/kid', { body: idp.jwks(), delayMs: 200 });
      const p = await newProject({ jwksUri: jwks.url('/kid') });
      const jwts = await Promise.all(['g1', 'g2', 'g3', 'g4'].map((s) => mint(s)));
      await Promise.all(jwts.map((jwt) => create(p, jwt)));
      expect(jwks.fetches('/kid')).toBe(1);
      const unknown = await mint('g1', { kid: 'rotated' });
      for (let i = 0; i < 3; i++) expect((await rejection(create(p, unknown))).code).toBe('INVALID_JWT');
      expect(jwks.fetches('/kid')).toBe(1);
      await sleep(2_100);
      expect((await rejection(create(p, unknown))).code).toBe('INVALID_JWT');
      expect((await rejection(create(p, unknown))).code).toBe('INVALID_JWT');
      expect(jwks.fetches('/kid')).toBe(2);
      // The issuer rotates in a new key: the next refetch finds it.
      const rotated = { keys: [{ ...idp.jwks().keys[0], kid: 'rotated' }] };
      jwks.serve('/kid', { body: rotated });
      await sleep(2_100);
      await expect(create(p, unknown)).resolves.toMatchObject({ keyId: expect.any(String) });
      expect(jwks.fetches('/kid')).toBe(3);
    });
  });

  describe('the clock check (an NSM whose time the test shifts: the enclave clock drifted)', () => {
    let shifted: ShiftedNsm;
    beforeAll(async () => {
      shifted = await startShiftedNsm(h.platform, path.join(runDir, 'nsm-shifted.sock'));
      await h.restartEnclave({ nsm: { kind: 'simulated', socket: shifted.socket }, jwt: { ...jwtConfig, clockCheckMs: 1_000 } });
    }, 60_000);
    afterAll(async () => {
      await shifted?.close();
      fs.rmSync(shifted.socket, { force: true });
    });

    it('refuses JWT checks past 30 s of drift (JWKS_UNAVAILABLE), signs with tokens meanwhile, and trusts the clock again once it agrees', async () => {
      const jwt = await mint('gina');
      const key = await create(p1, jwt);
      const tokenKey = await h.create('token-during-drift');
      expect((await health()).jwt.clock).toBe('trusted');

      shifted.offsetMs = 45_000;
      for (let i = 0; i < 100 && (await health()).jwt.clock !== 'untrusted'; i++) await sleep(50);
      const drifted = (await health()).jwt;
      expect(drifted.clock).toBe('untrusted');
      expect(drifted.clockDriftMs).toBeLessThan(-44_000);
      for (const call of [() => sign(key, p1, jwt), () => create(p1, jwt), () => lookup(key, p1, jwt)]) {
        const err = await rejection(call());
        expect([err.code, err.retryable, err.message]).toEqual(['JWKS_UNAVAILABLE', true, CLOCK_NOT_TRUSTED_MESSAGE]);
      }
      await expect(h.signDigest(tokenKey, 7)).resolves.toMatchObject({ address: tokenKey.address });

      shifted.offsetMs = 0;
      for (let i = 0; i < 100 && (await health()).jwt.clock !== 'trusted'; i++) await sleep(50);
      expect((await health()).jwt.clock).toBe('trusted');
      await expect(sign(key, p1, jwt)).resolves.toMatchObject({ address: key.address });
    });
  });

  describe('the migration image', () => {
    it('migrates keys into token projects only', async () => {
      await h.restartEnclave({ mode: 'migration', jwt: jwtConfig });
      const err = await rejection(h.client.call('keys.migrate', { keyId: 'm-1', blob: 'AAAA', project: p1.record, subject: 'x' }));
      expect(codeAndMessage(err)).toEqual(['FORBIDDEN', 'keys are migrated into token projects only']);
    });
  });
});
