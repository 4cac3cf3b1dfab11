/**
 * The parent's side of projects and of the TrueWallet API (docs/PROJECTS.md), in this process against the
 * fake enclave (fake-enclave.ts: genuine record signatures, and JWTs checked with jose against the simulated
 * IdP's keys): the project routes and every 400; enclave answers that are not what was asked, refused and
 * not stored; the operator routes on JWT projects; the TrueWallet routes' keys (one per user, also under
 * concurrent first calls), signatures checked with ethers, their error format, CORS, and rate limits.
 * The same flows against the real enclave bundle, with JWKS over HTTPS through the egress relay, are in
 * truewallet-stack.test.ts.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createLocalJWKSet } from 'jose';
import { privateKeyToAccount } from 'viem/accounts';
import { jwtSubject } from '@nks/shared/project-auth';
import { decodeKeyRecord, openProjectRecord } from '@nks/shared/records';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { captureLogger, tempRunDir, waitFor, type CapturedLogger } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { hashToken } from '../src/api/auth';
import { startParent, type RunningParent } from '../src/app';
import { UNAVAILABLE_DETAILS } from '../src/api/wallets';
import { parseParentConfig } from '../src/config';
import { FAKE_KMS_KEY_ARN, FakeEnclave } from './fake-enclave';
import { call, expectWalletSignature, type Answer, type CallInit } from './wallet-client';

const ENCLAVE = 'vsock://16:5000';
const TOKENS = { admin: 'nks_test_admin', full: 'nks_test_full' };
const ORIGIN = 'https://app.example';

describe('projects and the TrueWallet API in the parent', () => {
  let idp: SimulatedIdp;
  let runDir: string;
  let enclave: FakeEnclave;
  let parent: RunningParent | undefined;
  let log: CapturedLogger;

  beforeAll(async () => {
    idp = await startSimulatedIdp();
  });
  afterAll(async () => {
    await idp?.close();
  });

  const start = async (over: Record<string, unknown> = {}) => {
    const config = parseParentConfig({
      api: { listen: { host: '127.0.0.1', port: 0 } },
      tokens: [
        { name: 'admin', sha256: hashToken(TOKENS.admin), scopes: ['admin'] },
        { name: 'full', sha256: hashToken(TOKENS.full), scopes: ['keys:create', 'keys:sign', 'keys:read'] },
      ],
      database: { path: path.join(runDir, 'keys.db') },
      transport: { kind: 'simulated', runDir },
      enclave: { address: ENCLAVE, poolSize: 2, connectTimeoutMs: 1000, deadlineMs: 5000 },
      kmsProxy: { listen: 'vsock://3:8000', allowedKeyArns: [FAKE_KMS_KEY_ARN], region: 'us-east-1', endpoint: 'http://127.0.0.1:9' },
      logLevel: 'debug',
      ...over,
    });
    parent = await startParent(config, log.logger);
    await parent.pool.waitUp(5000);
    return parent;
  };

  beforeEach(async () => {
    runDir = tempRunDir('nks-projects-');
    log = captureLogger('debug');
    enclave = new FakeEnclave();
    enclave.jwks = createLocalJWKSet(idp.jwks());
    await enclave.listen(new SimulatedVsockTransport(runDir), ENCLAVE);
  });
  afterEach(async () => {
    enclave?.releaseAll();
    await parent?.stop();
    parent = undefined;
    await enclave?.close();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const api = (pathname: string, init: CallInit = {}) => call((parent as RunningParent).url, pathname, { token: TOKENS.admin, ...init });
  const jwtAuth = (over: Record<string, unknown> = {}) => ({
    type: 'jwt',
    issuer: idp.issuer,
    audience: idp.audience,
    jwksUri: idp.jwksUri,
    ...over,
  });
  const createProject = async (body: Record<string, unknown> = {}) => {
    const res = await api('/v1/projects', { body: { name: 'Test app', auth: jwtAuth(), allowedOrigins: [ORIGIN], ...body } });
    expect([res.status, res.body?.error]).toEqual([201, undefined]);
    return res.body as { projectId: string; projectKey: string; state: string; record: { record: string; signature: string } };
  };
  /** The TrueWallet routes: no token. */
  const wallet = (projectKey: string, route: string, body: unknown, init: CallInit = {}) =>
    call((parent as RunningParent).url, `/v1/${projectKey}/wallets/${route}`, { body, ...init });
  const mint = (sub: unknown, options: Parameters<SimulatedIdp['mint']>[1] = {}) => idp.mint({ sub } as Record<string, unknown>, options);
  const expectDetail = (res: Answer, status: number, detail: unknown) => {
    expect({ status: res.status, body: res.body }).toEqual({ status, body: { detail } });
  };

  describe('projects', () => {
    beforeEach(async () => {
      await start();
    });

    it('creates JWT and token projects (the enclave chooses id and key), lists them with the default, reads one', async () => {
      const before = Date.now();
      const jwt = await createProject();
      expect(jwt).toEqual({
        projectId: expect.stringMatching(/^p_[A-Za-z0-9_-]{22}$/),
        projectKey: expect.stringMatching(/^pk_[A-Za-z0-9_-]{22}$/),
        name: 'Test app',
        auth: { ...jwtAuth(), userClaim: 'sub', algorithms: ['RS256', 'ES256'], maxTokenLifetime: 600 },
        allowedOrigins: [ORIGIN],
        allowedRequestTypes: ['message', 'userOperation', 'typedData'],
        state: 'active',
        createdAt: expect.any(String),
        record: { record: expect.any(String), signature: expect.any(String) },
      });
      expect(Date.parse((jwt as unknown as { createdAt: string }).createdAt)).toBeGreaterThanOrEqual(before - 1000);
      // The view is its record's content: the record verifies with the identity and says the same.
      const { record } = openProjectRecord(jwt.record, enclave.identity.publicKeyObject);
      expect(record).toMatchObject({ projectId: jwt.projectId, projectKey: jwt.projectKey, state: 'active', seq: 0 });

      const token = await createProject({
        name: 'Server app ✓',
        auth: { type: 'token' },
        allowedOrigins: [],
        allowedRequestTypes: ['digest'],
      });
      expect(token).toMatchObject({ name: 'Server app ✓', auth: { type: 'token' }, allowedRequestTypes: ['digest'], allowedOrigins: [] });

      const list = await api('/v1/projects');
      expect(list.status).toBe(200);
      expect(list.body.nextCursor).toBeNull();
      expect(list.body.projects.map((p: { projectId: string }) => p.projectId).sort()).toEqual(
        ['default', jwt.projectId, token.projectId].sort(),
      );
      expect(list.body.projects.find((p: { projectId: string }) => p.projectId === 'default')).toMatchObject({
        projectKey: 'default',
        name: 'default',
        auth: { type: 'token' },
        state: 'active',
      });
      const paged: string[] = [];
      let cursor: string | null = null;
      do {
        const page: Answer = await api(`/v1/projects?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
        expect(page.body.projects).toHaveLength(1);
        paged.push(page.body.projects[0].projectId);
        cursor = page.body.nextCursor;
      } while (cursor);
      expect(paged).toEqual(list.body.projects.map((p: { projectId: string }) => p.projectId));

      expect((await api(`/v1/projects/${jwt.projectId}`)).body).toEqual(jwt);
      expect(enclave.calls['projects.create']).toBe(2);
    });

    it('disables and enables: each a new record through the enclave; a repeat changes nothing', async () => {
      const p = await createProject();
      const off = await api(`/v1/projects/${p.projectId}/disable`, { method: 'POST' });
      expect([off.status, off.body.state]).toEqual([200, 'disabled']);
      const { record } = openProjectRecord(off.body.record, enclave.identity.publicKeyObject);
      expect([record.state, record.seq]).toEqual(['disabled', 1]);
      expect((await api(`/v1/projects/${p.projectId}/disable`, { method: 'POST', body: {} })).body.state).toBe('disabled');
      expect(enclave.calls['projects.setState']).toBe(1);
      // Disabled: its JWKS host is no longer one the egress relay allows.
      expect((parent as RunningParent).jwksHosts()).toEqual([]);
      const on = await api(`/v1/projects/${p.projectId}/enable`, { method: 'POST' });
      expect([on.status, on.body.state, openProjectRecord(on.body.record, enclave.identity.publicKeyObject).record.seq]).toEqual([
        200,
        'active',
        2,
      ]);
      expect((parent as RunningParent).jwksHosts()).toEqual(['localhost']);
      expect((await api(`/v1/projects/${p.projectId}`)).body.state).toBe('active');
    });

    it('gives the egress relay the JWKS hosts of active JWT projects only', async () => {
      expect((parent as RunningParent).jwksHosts()).toEqual([]);
      await createProject({ auth: jwtAuth({ jwksUri: 'https://login.example.com/.well-known/jwks.json' }) });
      await createProject({ auth: jwtAuth({ jwksUri: 'https://login.example.com/other.json' }) });
      await createProject({ auth: { type: 'token' } });
      await createProject();
      expect((parent as RunningParent).jwksHosts().sort()).toEqual(['localhost', 'login.example.com']);
    });

    it.each<[string, unknown, RegExp]>([
      ['no body', undefined, /^body: a project is required$/],
      ['no name', { auth: { type: 'token' } }, /^body\.name: /],
      ['an empty name', { name: '', auth: { type: 'token' } }, /^body\.name: /],
      ['a name of 129 characters', { name: 'x'.repeat(129), auth: { type: 'token' } }, /^body\.name: /],
      [
        'a name with a control character',
        { name: 'bell\u0007', auth: { type: 'token' } },
        /^body\.name: expected 1-128 printable characters$/,
      ],
      ['no auth', { name: 'a' }, /^body\.auth: /],
      ['an unknown auth type', { name: 'a', auth: { type: 'oauth' } }, /^body\.auth/],
      [
        'a JWT auth without issuer',
        { name: 'a', auth: { type: 'jwt', audience: 'x', jwksUri: 'https://a.example/j' } },
        /^body\.auth\.issuer: /,
      ],
      [
        'a JWT auth without audience',
        { name: 'a', auth: { type: 'jwt', issuer: 'x', jwksUri: 'https://a.example/j' } },
        /^body\.auth\.audience: /,
      ],
      [
        'an http JWKS URI',
        { name: 'a', auth: { type: 'jwt', issuer: 'x', audience: 'y', jwksUri: 'http://a.example/j' } },
        /^body\.auth\.jwksUri: expected an absolute https URL/,
      ],
      [
        'HS256',
        { name: 'a', auth: { type: 'jwt', issuer: 'x', audience: 'y', jwksUri: 'https://a.example/j', algorithms: ['HS256'] } },
        /^body\.auth\.algorithms\[0\]: expected asymmetric algorithms/,
      ],
      [
        'alg none',
        { name: 'a', auth: { type: 'jwt', issuer: 'x', audience: 'y', jwksUri: 'https://a.example/j', algorithms: ['none'] } },
        /^body\.auth\.algorithms\[0\]: /,
      ],
      [
        'a token lifetime over an hour',
        { name: 'a', auth: { type: 'jwt', issuer: 'x', audience: 'y', jwksUri: 'https://a.example/j', maxTokenLifetime: 3601 } },
        /^body\.auth\.maxTokenLifetime: /,
      ],
      [
        'a bad user claim',
        { name: 'a', auth: { type: 'jwt', issuer: 'x', audience: 'y', jwksUri: 'https://a.example/j', userClaim: 'a b' } },
        /^body\.auth\.userClaim: /,
      ],
      ['the origin *', { name: 'a', auth: { type: 'token' }, allowedOrigins: ['*'] }, /^body\.allowedOrigins\[0\]: expected an origin/],
      ['the origin null', { name: 'a', auth: { type: 'token' }, allowedOrigins: ['null'] }, /^body\.allowedOrigins\[0\]: /],
      [
        'an origin with a path',
        { name: 'a', auth: { type: 'token' }, allowedOrigins: ['https://a.example/x'] },
        /^body\.allowedOrigins\[0\]: /,
      ],
      [
        'an origin twice',
        { name: 'a', auth: { type: 'token' }, allowedOrigins: [ORIGIN, ORIGIN] },
        /^body\.allowedOrigins: expected distinct origins$/,
      ],
      ['no request types', { name: 'a', auth: { type: 'token' }, allowedRequestTypes: [] }, /^body\.allowedRequestTypes: /],
      [
        'an unknown request type',
        { name: 'a', auth: { type: 'token' }, allowedRequestTypes: ['everything'] },
        /^body\.allowedRequestTypes\[0\]: /,
      ],
      ['an unknown field', { name: 'a', auth: { type: 'token' }, owner: 'me' }, /^body: unknown field\(s\) "owner"$/],
    ])('refuses %s with 400 naming the field', async (_name, body, message) => {
      const res = await api('/v1/projects', { ...(body === undefined ? { method: 'POST' } : { body }) });
      expect({ status: res.status, code: res.body.error.code }).toEqual({ status: 400, code: 'INVALID_PARAMS' });
      expect(res.body.error.message).toMatch(message);
      expect(enclave.calls['projects.create']).toBeUndefined();
    });

    it('answers the other refusals of the project routes', async () => {
      const code = (r: Answer) => [r.status, r.body?.error?.code];
      expect(code(await api('/v1/projects', { token: TOKENS.full, body: { name: 'a', auth: { type: 'token' } } }))).toEqual([
        403,
        'FORBIDDEN',
      ]);
      expect(code(await api('/v1/projects', { token: TOKENS.full }))).toEqual([403, 'FORBIDDEN']);
      expect(code(await api('/v1/projects', { token: '' }))).toEqual([401, 'UNAUTHORIZED']);
      expect(code(await api('/v1/projects?limit=0'))).toEqual([400, 'INVALID_PARAMS']);
      expect((await api('/v1/projects?cursor=garbage')).body.error.message).toMatch(/^query.cursor: /);
      expect(code(await api(`/v1/projects/p_${'A'.repeat(22)}`))).toEqual([404, 'NOT_FOUND']);
      expect(code(await api('/v1/projects/not-an-id'))).toEqual([404, 'NOT_FOUND']);
      expect(code(await api(`/v1/projects/p_${'A'.repeat(22)}/disable`, { method: 'POST' }))).toEqual([404, 'NOT_FOUND']);
      expect(code(await api('/v1/projects', { method: 'DELETE' }))).toEqual([405, 'METHOD_NOT_ALLOWED']);
      expect(code(await api('/v1/projects/default/disable', { body: { now: true } }))).toEqual([400, 'INVALID_PARAMS']);
    });

    it.each<[string, (r: import('@nks/shared/records').ProjectRecord) => import('@nks/shared/records').ProjectRecord]>([
      ['other origins', (r) => ({ ...r, allowedOrigins: ['https://evil.example'] })],
      ['another issuer', (r) => ({ ...r, auth: { ...(r.auth as object), issuer: 'https://evil.example' } as typeof r.auth })],
      ['a token auth', (r) => ({ ...r, auth: { type: 'token' } })],
      ['more request types', (r) => ({ ...r, allowedRequestTypes: [...r.allowedRequestTypes, 'transaction'] })],
      ['a disabled state', (r) => ({ ...r, state: 'disabled' })],
      ['a later seq', (r) => ({ ...r, seq: 1, prev: `0x${'ab'.repeat(32)}` })],
      ['the default project', (r) => ({ ...r, projectId: 'default' })],
    ])('refuses a projects.create answer with %s, and stores nothing', async (_name, change) => {
      enclave.alter.projectCreate = change;
      const res = await api('/v1/projects', { body: { name: 'x', auth: jwtAuth(), allowedOrigins: [ORIGIN] } });
      expect([res.status, res.body.error.code, res.body.error.message]).toEqual([
        500,
        'KEY_INTEGRITY',
        'the enclave answered with a project record that does not match the request',
      ]);
      expect((await api('/v1/projects')).body.projects.map((p: { projectId: string }) => p.projectId)).toEqual(['default']);
    });

    it('refuses a projects.setState answer that changes anything else, and keeps the stored record', async () => {
      const p = await createProject();
      enclave.alter.projectSetState = (r) => ({ ...r, allowedOrigins: ['https://evil.example'] });
      const res = await api(`/v1/projects/${p.projectId}/disable`, { method: 'POST' });
      expect([res.status, res.body.error.code]).toEqual([500, 'KEY_INTEGRITY']);
      expect((await api(`/v1/projects/${p.projectId}`)).body).toMatchObject({ state: 'active', record: p.record });
      enclave.alter.projectSetState = (r) => ({ ...r, state: 'active' });
      expect((await api(`/v1/projects/${p.projectId}/disable`, { method: 'POST' })).status).toBe(500);
      enclave.alter.projectSetState = undefined;
      expect((await api(`/v1/projects/${p.projectId}/disable`, { method: 'POST' })).body.state).toBe('disabled');
    });
  });

  describe('operator routes and JWT projects', () => {
    beforeEach(async () => {
      await start();
    });

    it('creates keys in token projects (projectId), never in JWT projects', async () => {
      const jwt = await createProject();
      const token = await createProject({ auth: { type: 'token' } });
      const made = await api('/v1/keys', { token: TOKENS.full, body: { projectId: token.projectId, externalId: 'server-1' } });
      expect([made.status, made.body.projectId]).toEqual([201, token.projectId]);
      expect(decodeKeyRecord(Buffer.from(made.body.record.record, 'base64'))).toMatchObject({
        projectId: token.projectId,
        subject: 'server-1',
      });
      expect((await api(`/v1/keys/${made.body.keyId}/sign`, { token: TOKENS.full, body: { type: 'message', message: 'hi' } })).status).toBe(
        200,
      );
      // The same external id again: the same key; in another project: CONFLICT.
      expect((await api('/v1/keys', { token: TOKENS.full, body: { projectId: token.projectId, externalId: 'server-1' } })).body.keyId).toBe(
        made.body.keyId,
      );
      const elsewhere = await api('/v1/keys', { token: TOKENS.full, body: { externalId: 'server-1' } });
      expect([elsewhere.status, elsewhere.body.error.code]).toEqual([409, 'CONFLICT']);

      const refused = await api('/v1/keys', { token: TOKENS.full, body: { projectId: jwt.projectId } });
      expect([refused.status, refused.body.error.code]).toEqual([403, 'FORBIDDEN']);
      expect(refused.body.error.message).toMatch(/authorizes its users with JWTs/);
      const unknown = await api('/v1/keys', { token: TOKENS.full, body: { projectId: `p_${'Z'.repeat(22)}` } });
      expect([unknown.status, unknown.body.error.message]).toEqual([400, `body.projectId: project p_${'Z'.repeat(22)} does not exist`]);
      expect((await api('/v1/keys', { token: TOKENS.full, body: { projectId: 'p_x' } })).body.error.message).toMatch(/^body.projectId: /);
      await api(`/v1/projects/${token.projectId}/disable`, { method: 'POST' });
      expect((await api('/v1/keys', { token: TOKENS.full, body: { projectId: token.projectId } })).body.error.code).toBe('KEY_DISABLED');
      expect(enclave.calls['keys.create']).toBe(1);
    });

    it("refuses the operator token on a JWT user's key (before the enclave); admins may still disable and enable it", async () => {
      const p = await createProject();
      const jwt = await mint('alice');
      const { address } = (await wallet(p.projectKey, 'get-address', { jwt_token: jwt })).body;
      const key = (await api('/v1/keys')).body.keys.find((k: { address: string }) => k.address === address);
      expect(key).toMatchObject({ projectId: p.projectId, externalId: null });
      // A token below admin does not see it (docs/SECURITY.md, "Who sees JWT users' keys").
      expect((await api('/v1/keys', { token: TOKENS.full })).body.keys).toEqual([]);
      expect((await api(`/v1/keys/${key.keyId}`, { token: TOKENS.full })).body.error.code).toBe('KEY_NOT_FOUND');

      const signs = enclave.calls['keys.sign'] ?? 0;
      for (const token of [TOKENS.full, TOKENS.admin]) {
        const res = await api(`/v1/keys/${key.keyId}/sign`, { token, body: { type: 'message', message: 'steal' } });
        expect([res.status, res.body.error.code]).toEqual([403, 'FORBIDDEN']);
        expect(res.body.error.message).toBe(
          `key ${key.keyId}: a JWT project's key signs only with its user's JWT (the TrueWallet API), never with an operator token`,
        );
      }
      expect(enclave.calls['keys.sign'] ?? 0).toBe(signs);

      expect((await api(`/v1/keys/${key.keyId}/disable`, { method: 'POST' })).body.disabled).toBe(true);
      expectDetail(
        await wallet(p.projectKey, 'sign', { jwt_token: jwt, message: 'hi', message_type: 'message', wallet_type: 'evm' }),
        409,
        'the key is disabled',
      );
      expect((await api(`/v1/keys/${key.keyId}/enable`, { method: 'POST' })).body.disabled).toBe(false);
      expect(
        (await wallet(p.projectKey, 'sign', { jwt_token: jwt, message: 'hi', message_type: 'message', wallet_type: 'evm' })).status,
      ).toBe(200);
    });
  });

  describe('the TrueWallet routes', () => {
    let project: { projectId: string; projectKey: string };

    const startWith = async (rateLimits: Record<string, number> = {}, settings: Record<string, unknown> = {}) => {
      await start({ wallets: { rateLimits } });
      project = await createProject(settings);
    };

    it('get-address makes the key on first use, then answers the same address through keys.lookup', async () => {
      await startWith();
      const jwt = await mint('alice');
      const first = await wallet(project.projectKey, 'get-address', { jwt_token: jwt });
      expect(first.status).toBe(200);
      expect(first.body).toEqual({ address: expect.stringMatching(/^0x[0-9a-fA-F]{40}$/) });
      const again = await wallet(project.projectKey, 'get-address', { jwt_token: await mint('alice') });
      expect(again.body).toEqual(first.body);
      expect([enclave.calls['keys.create'], enclave.calls['keys.lookup']]).toEqual([1, 1]);
      const stored = (parent as RunningParent).store.activeKeyFor(project.projectId, jwtSubject(idp.issuer, 'alice') as string);
      expect(stored).toMatchObject({
        address: first.body.address,
        projectId: project.projectId,
        subject: JSON.stringify([idp.issuer, 'alice']),
      });
      // Another user, another key; the user claim's value only (not the token) decides.
      const bob = await wallet(project.projectKey, 'get-address', { jwt_token: await mint('bob', { alg: 'ES256' }) });
      expect(bob.body.address).not.toBe(first.body.address);
    });

    it('makes one key for concurrent first calls of a user, and answers a forged one among them with a refusal', async () => {
      await startWith();
      enclave.createDelayMs = 50;
      const tokens = await Promise.all(Array.from({ length: 8 }, () => mint('carol')));
      const forged = (await mint('carol')).replace(/\.[^.]+$/, '.c2lnbmF0dXJl');
      const answers = await Promise.all([forged, ...tokens].map((jwt_token) => wallet(project.projectKey, 'get-address', { jwt_token })));
      expectDetail(answers[0] as Answer, 400, { jwt_token: ['the JWT does not verify'] });
      const addresses = new Set(answers.slice(1).map((a) => a.body.address));
      expect(addresses.size).toBe(1);
      expect([...addresses][0]).toMatch(/^0x[0-9a-fA-F]{40}$/);
      expect(enclave.calls['keys.create']).toBe(2); // the forged one's create was refused, then one for carol
      expect((await api('/v1/keys')).body.keys).toHaveLength(1);
    });

    it('signs a hash (EIP-191 over its 32 bytes) and a text, and sign-request answers the full result', async () => {
      await startWith();
      const jwt = await mint('dave');
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).body;
      const hash = `0x${'5a'.repeat(32)}`;
      const h = await wallet(project.projectKey, 'sign', { message: hash, jwt_token: jwt, message_type: 'hash', wallet_type: 'evm' });
      expect([h.status, Object.keys(h.body)]).toEqual([200, ['signature']]);
      expectWalletSignature(h.body.signature, { hash }, address);
      const t = await wallet(project.projectKey, 'sign', {
        message: 'Hello, TrueWallet ✓',
        jwt_token: jwt,
        message_type: 'message',
        wallet_type: 'evm',
      });
      expectWalletSignature(t.body.signature, { text: 'Hello, TrueWallet ✓' }, address);

      const full = await wallet(project.projectKey, 'sign-request', {
        jwt_token: jwt,
        request: { type: 'message', message: { raw: hash } },
      });
      expect(full.status).toBe(200);
      expect(full.body).toEqual({
        signature: h.body.signature,
        r: expect.any(String),
        s: expect.any(String),
        v: expect.any(Number),
        yParity: expect.any(Number),
        hash: expect.stringMatching(/^0x[0-9a-f]{64}$/),
        address,
      });
    });

    it('signs for a user without a key yet by making it first (as get-address would)', async () => {
      await startWith();
      const jwt = await mint('erin');
      const s = await wallet(project.projectKey, 'sign', { message: 'first', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' });
      expect(s.status).toBe(200);
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).body;
      expectWalletSignature(s.body.signature, { text: 'first' }, address);
      expect(enclave.calls['keys.create']).toBe(1);
    });

    it('answers every refusal in the SDK format', async () => {
      await startWith({}, { allowedRequestTypes: ['message'] });
      const jwt = await mint('frank');
      const signBody = (over: Record<string, unknown> = {}) => ({
        message: 'x',
        jwt_token: jwt,
        message_type: 'message',
        wallet_type: 'evm',
        ...over,
      });
      // 401: unknown key, a token project, a disabled project.
      expectDetail(await wallet(`pk_${'Q'.repeat(22)}`, 'get-address', { jwt_token: jwt }), 401, 'unknown project key');
      expectDetail(await wallet('default', 'get-address', { jwt_token: jwt }), 401, 'this project does not take JWTs');
      const other = await createProject();
      await api(`/v1/projects/${other.projectId}/disable`, { method: 'POST' });
      expectDetail(await wallet(other.projectKey, 'sign', signBody()), 401, 'this project is disabled');
      // 400: the body, field by field.
      expectDetail(await wallet(project.projectKey, 'get-address', undefined, { method: 'POST' }), 400, {
        body: ['a JSON body is required'],
      });
      expectDetail(await wallet(project.projectKey, 'get-address', {}), 400, { jwt_token: [expect.any(String)] });
      expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: jwt, extra: 1 }), 400, { extra: ['unknown field'] });
      expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: 'x'.repeat(8193) }), 400, {
        jwt_token: ['expected a JWT of at most 8192 bytes'],
      });
      expectDetail(
        await wallet(project.projectKey, 'get-address', '{"jwt_token":', { headers: { 'content-type': 'application/json' } }),
        400,
        {
          body: ['request body is not valid JSON'],
        },
      );
      expectDetail(
        await wallet(project.projectKey, 'get-address', JSON.stringify({ jwt_token: jwt }), { headers: { 'content-type': 'text/plain' } }),
        400,
        {
          body: ['request body must be application/json'],
        },
      );
      expectDetail(await wallet(project.projectKey, 'sign', signBody({ message_type: 'hash' })), 400, {
        message: ['expected 32 bytes as 0x-prefixed hex when message_type is "hash"'],
      });
      expectDetail(await wallet(project.projectKey, 'sign', signBody({ wallet_type: 'solana' })), 400, {
        wallet_type: [expect.any(String)],
      });
      expectDetail(await wallet(project.projectKey, 'sign', signBody({ message_type: 'raw' })), 400, {
        message_type: [expect.any(String)],
      });
      expectDetail(await wallet(project.projectKey, 'sign-request', { jwt_token: jwt, request: { type: 'message' } }), 400, {
        request: [expect.stringMatching(/^message: /)],
      });
      expectDetail(
        await wallet(project.projectKey, 'sign-request', { jwt_token: jwt, request: { type: 'digest', digest: `0x${'11'.repeat(32)}` } }),
        400,
        {
          request: ['type digest is not allowed for this project'],
        },
      );
      // 400 for the JWT: not a JWT, no user claim, one that does not verify (the enclave's word).
      expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: 'not.a.jwt' }), 400, {
        jwt_token: ['not a JWT (expected the compact form: three base64url parts, a JSON payload)'],
      });
      expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: await idp.mint({}) }), 400, {
        jwt_token: ['the claim "sub" is missing, empty, not a string or too long'],
      });
      expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: await mint(42) }), 400, {
        jwt_token: [expect.stringMatching(/claim "sub"/)],
      });
      const otherIdp = await startSimulatedIdp();
      try {
        const foreign = await otherIdp.mint({ sub: 'frank', iss: idp.issuer, aud: idp.audience });
        expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: foreign }), 400, {
          jwt_token: ['the JWT does not verify'],
        });
      } finally {
        await otherIdp.close();
      }
      // 409 for a disabled key, 503 + Retry-After when the JWKS cannot be had, 500 without internals.
      const { address } = (await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).body;
      const key = (parent as RunningParent).store.activeKeyFor(project.projectId, jwtSubject(idp.issuer, 'frank') as string);
      expect(key?.address).toBe(address);
      await api(`/v1/keys/${key?.keyId}/disable`, { method: 'POST' });
      expectDetail(await wallet(project.projectKey, 'sign', signBody()), 409, 'the key is disabled');
      await api(`/v1/keys/${key?.keyId}/enable`, { method: 'POST' });
      enclave.jwks = null;
      const down = await wallet(project.projectKey, 'sign', signBody());
      // A fixed text (the enclave's own words are logged with the request id).
      expectDetail(down, 503, UNAVAILABLE_DETAILS.jwks);
      expect(down.headers['retry-after']).toBe('1');
      expect(log.lines()).toContainEqual(
        expect.objectContaining({ requestId: down.headers['x-request-id'], code: 'JWKS_UNAVAILABLE', detail: 'no JWKS' }),
      );
      enclave.jwks = createLocalJWKSet(idp.jwks());
      enclave.signAs = privateKeyToAccount(`0x${'01'.repeat(32)}`);
      const lied = await wallet(project.projectKey, 'sign', signBody());
      expect(lied.status).toBe(500);
      expect(lied.body.detail).toMatch(/^the keystore could not answer this request \(request id [0-9a-f-]+\)$/);
      expect(lied.headers['x-request-id']).toEqual(expect.any(String));
      enclave.signAs = null;
      // No bearer token is needed, and one given changes nothing; the existing routes keep their envelope.
      expect((await wallet(project.projectKey, 'sign', signBody(), { token: 'nks_unknown' })).status).toBe(200);
      expect((await wallet(project.projectKey, 'verify', { jwt_token: jwt })).body.error.code).toBe('NOT_FOUND');
      const get = await call((parent as RunningParent).url, `/v1/${project.projectKey}/wallets/sign`);
      expect([get.status, get.body.error.code, get.headers.allow]).toEqual([405, 'METHOD_NOT_ALLOWED', 'POST']);
    });

    it('refuses when the enclave is down: 503 with Retry-After', async () => {
      await startWith();
      const jwt = await mint('gina');
      await enclave.close();
      await waitFor(() => !(parent as RunningParent).pool.up, 5000, 'the pool to notice');
      const res = await wallet(project.projectKey, 'get-address', { jwt_token: jwt });
      expect(res.status).toBe(503);
      expect(typeof res.body.detail).toBe('string');
      expect(res.headers['retry-after']).toBe('1');
    });

    it('allows CORS for exactly the project origins: answers, errors and preflight; others get no CORS headers', async () => {
      await startWith();
      const jwt = await mint('hana');
      const ok = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: ORIGIN } });
      expect(ok.status).toBe(200);
      expect(ok.headers['access-control-allow-origin']).toBe(ORIGIN);
      expect(ok.headers['access-control-allow-credentials']).toBeUndefined();
      expect(ok.headers['access-control-expose-headers']).toBe('retry-after, x-request-id');
      expect(ok.headers.vary).toMatch(/Origin/);
      const err = await wallet(project.projectKey, 'get-address', { jwt_token: 'x' }, { headers: { origin: ORIGIN } });
      expect([err.status, err.headers['access-control-allow-origin']]).toEqual([400, ORIGIN]);

      const evil = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: 'https://evil.example' } });
      expect(evil.status).toBe(200); // not a browser: CORS does not stop it, it only withholds the answer from pages
      expect(evil.headers['access-control-allow-origin']).toBeUndefined();

      const preflight = (origin: string, key = project.projectKey) =>
        call((parent as RunningParent).url, `/v1/${key}/wallets/sign`, {
          method: 'OPTIONS',
          headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
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
        expect(refused.status).toBe(404);
        expect(refused.headers['access-control-allow-origin']).toBeUndefined();
        expect(refused.headers['access-control-allow-methods']).toBeUndefined();
      }
      // Only these routes: the operator API has no CORS at all.
      const operator = await api('/v1/keys', { headers: { origin: ORIGIN } });
      expect(operator.headers['access-control-allow-origin']).toBeUndefined();
      expect(
        (
          await call((parent as RunningParent).url, '/v1/keys', {
            method: 'OPTIONS',
            headers: { origin: ORIGIN, 'access-control-request-method': 'POST' },
          })
        ).status,
      ).toBe(405);
    });

    it('limits requests per client address: 403 with Retry-After', async () => {
      await startWith({ perAddress: 3 });
      const jwt = await mint('ivan');
      for (let i = 0; i < 3; i++) expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).status).toBe(200);
      const limited = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { headers: { origin: ORIGIN } });
      expectDetail(limited, 403, 'too many requests from this address; retry later');
      expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(Number(limited.headers['retry-after'])).toBeLessThanOrEqual(60);
      expect(limited.headers['access-control-allow-origin']).toBe(ORIGIN);
      // Another address is another client.
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.0.2' })).status).toBe(200);
      const metrics = (await call((parent as RunningParent).url, '/metrics')).body as string;
      expect(metrics).toMatch(/nks_wallet_rate_limited_total\{limit="address"\} 1/);
      expect(metrics).toMatch(/nks_wallet_requests_total\{route="\/v1\/\{projectKey\}\/wallets\/get-address",outcome="ok"\} 4/);
      expect(metrics).toMatch(/nks_wallet_requests_total\{route="\/v1\/\{projectKey\}\/wallets\/get-address",outcome="rate_limited"\} 1/);
      // The enclave's JWT health is scraped with the rest.
      expect(metrics).toMatch(/nks_enclave_clock\{state="trusted"\} 1/);
      expect(metrics).toMatch(/nks_enclave_clock_drift_seconds 0.012/);
      expect(metrics).toMatch(/nks_enclave_counter\{counter="jwt_verifications"\} 0/);
    });

    it('limits requests per verified user, counting only what the enclave served; forged tokens for the user spend nothing', async () => {
      await startWith({ perUser: 2 });
      const forged = (await mint('judy')).replace(/\.[^.]+$/, '.c2lnbmF0dXJl');
      for (let i = 0; i < 5; i++)
        expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: forged }, { from: `127.0.0.${10 + i}` }), 400, {
          jwt_token: ['the JWT does not verify'],
        });
      const jwt = await mint('judy');
      for (let i = 0; i < 2; i++) expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).status).toBe(200);
      const limited = await wallet(
        project.projectKey,
        'sign',
        { message: 'x', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' },
        { from: '127.0.0.3' },
      );
      expectDetail(limited, 403, 'too many requests for this user; retry later');
      expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // Counted once the enclave had answered: the over-limit signature was made and dropped, never answered.
      expect([enclave.calls['keys.sign'], enclave.answered.length]).toEqual([1, 1]);
      // A forged token naming the busy user is refused as any other (no "this user is busy" without their JWT).
      expectDetail(await wallet(project.projectKey, 'get-address', { jwt_token: forged }, { from: '127.0.0.20' }), 400, {
        jwt_token: ['the JWT does not verify'],
      });
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: await mint('kim') })).status).toBe(200);
    });

    it('limits failures per client address without locking the user out from another address', async () => {
      await startWith({ failuresPerAddress: 3 });
      const jwt = await mint('leo');
      const forged = (await mint('leo')).replace(/\.[^.]+$/, '.c2lnbmF0dXJl');
      const attacker = { from: '127.0.0.2' };
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: forged }, attacker)).status).toBe(400);
      expect((await wallet(`pk_${'Q'.repeat(22)}`, 'get-address', { jwt_token: forged }, attacker)).status).toBe(401);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: 'garbage' }, attacker)).status).toBe(400);
      // The budget is spent: even a valid token from that address waits.
      const locked = await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, attacker);
      expectDetail(locked, 403, 'too many failed requests from this address; retry later');
      expect(Number(locked.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // The user, from their own address, is served.
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt })).status).toBe(200);
      // Bad bodies are not failures of authentication: they do not spend the budget.
      for (let i = 0; i < 4; i++)
        expect((await wallet(project.projectKey, 'get-address', { nope: 1 }, { from: '127.0.0.4' })).status).toBe(400);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, { from: '127.0.0.4' })).status).toBe(200);
      const metrics = (await call((parent as RunningParent).url, '/metrics')).body as string;
      expect(metrics).toMatch(/nks_wallet_jwt_refusals_total\{stage="enclave"\} 1/);
      expect(metrics).toMatch(/nks_wallet_jwt_refusals_total\{stage="parent"\} 1/);
    });

    it("limits a project's served requests", async () => {
      await startWith({ perProject: 2 });
      for (const sub of ['m1', 'm2'])
        expect((await wallet(project.projectKey, 'get-address', { jwt_token: await mint(sub) })).status).toBe(200);
      expectDetail(
        await wallet(project.projectKey, 'get-address', { jwt_token: await mint('m3') }),
        403,
        "this project's request quota is used up for now; retry later",
      );
      const other = await createProject();
      expect((await wallet(other.projectKey, 'get-address', { jwt_token: await mint('m3') })).status).toBe(200);
    });

    it('warns at start, and in /metrics, when the API listens on loopback and trusts no proxy; trusts X-Forwarded-For from listed proxies only', async () => {
      await startWith({ failuresPerAddress: 2 });
      const warning = () => log.lines().filter((l) => l.level === 40 && String(l.msg).includes('api.trustProxy'));
      expect(warning()).toHaveLength(1);
      expect(String(warning()[0]?.msg)).toMatch(/listens on loopback \(127\.0\.0\.1\) and api.trustProxy is empty/);
      expect((await call((parent as RunningParent).url, '/metrics')).body).toMatch(/^nks_api_client_address_shared 1$/m);
      // Not trusted: X-Forwarded-For is ignored, every client of a proxy at 127.0.0.9 is one.
      const jwt = await mint('pia');
      for (let i = 0; i < 2; i++)
        expect(
          (
            await wallet(
              project.projectKey,
              'get-address',
              { jwt_token: 'x' },
              { from: '127.0.0.9', headers: { 'x-forwarded-for': '203.0.113.1' } },
            )
          ).status,
        ).toBe(400);
      expect(
        (
          await wallet(
            project.projectKey,
            'get-address',
            { jwt_token: jwt },
            { from: '127.0.0.9', headers: { 'x-forwarded-for': '198.51.100.1' } },
          )
        ).status,
      ).toBe(403);

      await parent?.stop();
      log = captureLogger('debug');
      await start({
        api: { listen: { host: '127.0.0.1', port: 0 }, trustProxy: ['127.0.0.9', '10.0.0.0/8'] },
        wallets: { rateLimits: { failuresPerAddress: 2 } },
      });
      expect(warning()).toEqual([]);
      expect((await call((parent as RunningParent).url, '/metrics')).body).toMatch(/^nks_api_client_address_shared 0$/m);
      const via = (xff: string, from = '127.0.0.9') => ({ from, headers: { 'x-forwarded-for': xff } });
      for (let i = 0; i < 2; i++)
        expect((await wallet(project.projectKey, 'get-address', { jwt_token: 'x' }, via('203.0.113.1'))).status).toBe(400);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, via('203.0.113.1'))).status).toBe(403);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, via('198.51.100.1'))).status).toBe(200);
      // Walking back past listed proxies (10/8), up to the first address that is not one.
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, via('203.0.113.1, 10.1.2.3'))).status).toBe(403);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, via('203.0.113.1, 198.51.100.1'))).status).toBe(200);
      // IPv6 clients count by /64 (as the plugin does).
      for (let i = 0; i < 2; i++)
        expect((await wallet(project.projectKey, 'get-address', { jwt_token: 'x' }, via(`2001:db8:1:2::${i + 1}`))).status).toBe(400);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, via('2001:db8:1:2::99'))).status).toBe(403);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, via('2001:db8:1:3::1'))).status).toBe(200);
      // A peer that is not listed cannot pick its address.
      for (let i = 0; i < 2; i++)
        expect((await wallet(project.projectKey, 'get-address', { jwt_token: 'x' }, via(`192.0.2.${i}`, '127.0.0.10'))).status).toBe(400);
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: jwt }, via('192.0.2.77', '127.0.0.10'))).status).toBe(403);
    });

    it('on a Unix socket, trusts the X-Forwarded-For of its peer only with api.trustProxy ["unix"]', async () => {
      const socket = path.join(runDir, 'api.sock');
      for (const trustProxy of [[], ['unix']]) {
        await parent?.stop();
        log = captureLogger('debug');
        await start({ api: { listen: { socket }, trustProxy }, wallets: { rateLimits: { failuresPerAddress: 2 } } });
        project = await createProject();
        const url = (parent as RunningParent).url;
        expect(url).toBe(`unix:${socket}`);
        const post = (jwt: string, xff: string) =>
          call(url, `/v1/${project.projectKey}/wallets/get-address`, { body: { jwt_token: jwt }, headers: { 'x-forwarded-for': xff } });
        const shared = trustProxy.length === 0;
        expect(log.lines().some((l) => l.level === 40 && String(l.msg).includes(`listens on the Unix socket ${socket}`))).toBe(shared);
        for (let i = 0; i < 2; i++) expect((await post('x', '203.0.113.1')).status).toBe(400);
        expect((await post(await mint('quinn'), '203.0.113.1')).status).toBe(403);
        // Without "unix", every caller of the socket is one client; with it, each is its forwarded address.
        expect([trustProxy, (await post(await mint('quinn'), '198.51.100.1')).status]).toEqual([trustProxy, shared ? 403 : 200]);
      }
    });

    it('holds the failure budget for each request in flight: a burst of forged tokens gets no further than the budget', async () => {
      await startWith({ failuresPerAddress: 3 });
      // The enclave's key lookup is slow: the whole burst arrives before the first failure is known.
      const keys = createLocalJWKSet(idp.jwks());
      enclave.jwks = async (header, token) => {
        await new Promise((r) => setTimeout(r, 300));
        return keys(header, token);
      };
      const forged = (await mint('nina')).replace(/\.[^.]+$/, '.c2lnbmF0dXJl');
      const from = { from: '127.0.0.5' };
      const answers = await Promise.all(
        Array.from({ length: 12 }, () => wallet(project.projectKey, 'get-address', { jwt_token: forged }, from)),
      );
      expect(answers.filter((a) => a.status === 400)).toHaveLength(3);
      const held = answers.filter((a) => a.status === 403);
      expect(held).toHaveLength(9);
      for (const a of held) expectDetail(a, 403, 'too many requests in progress from this address; retry shortly');
      expect(enclave.calls['keys.create']).toBe(3);
      expectDetail(
        await wallet(project.projectKey, 'get-address', { jwt_token: await mint('nina') }, from),
        403,
        'too many failed requests from this address; retry later',
      );
      const metrics = (await call((parent as RunningParent).url, '/metrics')).body as string;
      expect(metrics).toMatch(/nks_wallet_rate_limited_total\{limit="concurrent"\} 9/);
      // Successes give their hold back: another address makes more requests than its budget, one after another.
      enclave.jwks = keys;
      for (let i = 0; i < 5; i++)
        expect((await wallet(project.projectKey, 'get-address', { jwt_token: await mint('nina') }, { from: '127.0.0.6' })).status).toBe(
          200,
        );
    });

    it('gives a hold back when its request is abandoned, refused before its work, or outlives its deadline', async () => {
      await start({
        api: { listen: { host: '127.0.0.1', port: 0 }, requestTimeoutMs: 200 },
        wallets: { rateLimits: { failuresPerAddress: 2 } },
      });
      project = await createProject();
      const url = new URL((parent as RunningParent).url);
      const from = '127.0.0.7';
      // Abandoned in the middle of its body, three times (more than the budget).
      for (let i = 0; i < 3; i++) {
        await new Promise<void>((resolve, reject) => {
          const socket = net.connect({ host: url.hostname, port: Number(url.port), localAddress: from }, () => {
            socket.write(
              `POST /v1/${project.projectKey}/wallets/get-address HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"jwt_`,
            );
            setTimeout(() => {
              socket.destroy();
              resolve();
            }, 50);
          });
          socket.on('error', reject);
        });
      }
      // Bad bodies (answered before the route's work runs), more than the budget.
      for (let i = 0; i < 3; i++) expect((await wallet(project.projectKey, 'get-address', { nope: 1 }, { from })).status).toBe(400);
      // The server has seen the abandoned requests end (they count in flight until they are answered).
      for (let until = Date.now() + 5000; (await (parent as RunningParent).metrics.inFlight.get()).values[0]?.value !== 0;) {
        if (Date.now() > until) throw new Error('requests still in flight');
        await new Promise((r) => setTimeout(r, 10));
      }
      expect((await wallet(project.projectKey, 'get-address', { jwt_token: await mint('olga') }, { from })).status).toBe(200);
      // Past its deadline (503), the request's work goes on: its hold is kept until the enclave refuses the JWT,
      // which is then counted.
      const keys = createLocalJWKSet(idp.jwks());
      enclave.jwks = async (header, token) => {
        await new Promise((r) => setTimeout(r, 400));
        return keys(header, token);
      };
      const forged = (await mint('olga')).replace(/\.[^.]+$/, '.c2lnbmF0dXJl');
      const late = await Promise.all(
        [1, 2].map(() =>
          wallet(
            project.projectKey,
            'sign',
            { message: 'x', jwt_token: forged, message_type: 'message', wallet_type: 'evm' },
            { from: '127.0.0.8' },
          ),
        ),
      );
      expect(late.map((a) => a.status)).toEqual([503, 503]);
      // Both still hold the budget: nothing more from that address until they end.
      expectDetail(
        await wallet(project.projectKey, 'get-address', { jwt_token: await mint('olga') }, { from: '127.0.0.8' }),
        403,
        'too many requests in progress from this address; retry shortly',
      );
      await new Promise((r) => setTimeout(r, 500));
      enclave.jwks = keys;
      expectDetail(
        await wallet(project.projectKey, 'get-address', { jwt_token: await mint('olga') }, { from: '127.0.0.8' }),
        403,
        'too many failed requests from this address; retry later',
      );
    });
  });
});
