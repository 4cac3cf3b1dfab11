/**
 * The parent's side of projects (docs/PROJECTS.md), in this process against the fake enclave (fake-enclave.ts:
 * genuine record signatures, and JWTs checked with jose against the simulated IdP's keys): the project routes
 * and every 400; enclave answers that are not what was asked, refused and not stored; the operator routes on
 * JWT projects, whose users' keys the enclave makes (here: the fake's keys.create with the user's JWT) and
 * stores through the parent's wallet store (wallet-store.test.ts), as the enclave's wallet routes do.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createLocalJWKSet } from 'jose';
import { WalletStoreApi } from '@nks/shared/enclave-api';
import { newKeyId } from '@nks/shared/identifiers';
import { silentLogger } from '@nks/shared/log';
import { decodeKeyRecord, openProjectRecord } from '@nks/shared/records';
import { RpcClient } from '@nks/shared/rpc';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { captureLogger, tempRunDir, type CapturedLogger } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { hashToken } from '../src/api/auth';
import { startParent, type RunningParent } from '../src/app';
import { parseParentConfig } from '../src/config';
import { FAKE_KMS_KEY_ARN, FakeEnclave } from './fake-enclave';
import { call, type Answer, type CallInit } from './http-client';

const ENCLAVE = 'vsock://16:5000';
const TOKENS = { admin: 'nks_test_admin', full: 'nks_test_full' };
const ORIGIN = 'https://app.example';

describe('projects in the parent', () => {
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
      metrics: { listen: { host: '127.0.0.1', port: 0 } },
      tokens: [
        { name: 'admin', sha256: hashToken(TOKENS.admin), scopes: ['admin'] },
        { name: 'full', sha256: hashToken(TOKENS.full), scopes: ['keys:create', 'keys:sign', 'keys:read'] },
      ],
      database: { path: path.join(runDir, 'keys.db') },
      transport: { kind: 'simulated', runDir },
      enclave: { address: ENCLAVE, poolSize: 2, connectTimeoutMs: 1000, deadlineMs: 5000 },
      kmsProxy: { listen: 'vsock://3:8000', allowedKeyArns: [FAKE_KMS_KEY_ARN], region: 'us-east-1', endpoint: 'http://127.0.0.1:9' },
      wallets: { relay: { host: '127.0.0.1', port: 0 } },
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
  const mint = (sub: unknown, options: Parameters<SimulatedIdp['mint']>[1] = {}) => idp.mint({ sub } as Record<string, unknown>, options);
  /** Standing where the enclave's wallet routes are: the parent's wallet store over the simulated vsock. */
  const walletStore = async () => {
    const client = new RpcClient<WalletStoreApi>({
      name: 'test-wallet-store',
      transport: new SimulatedVsockTransport(runDir),
      address: 'vsock://3:8002',
      logger: silentLogger(),
    });
    client.start();
    await client.waitConnected(5000);
    return client;
  };
  /** A JWT user's first key, as the enclave's get-address makes it: keys.create with the JWT, then store.insertUserKey. */
  const userKey = async (project: { projectId: string; record: { record: string; signature: string } }, jwt: string) => {
    const made = await (parent as RunningParent).pool.call('keys.create', {
      keyId: newKeyId(),
      project: project.record,
      subject: null,
      jwt,
    });
    const store = await walletStore();
    try {
      const { inserted, key } = await store.call('store.insertUserKey', made);
      expect(inserted).toBe(true);
      return { ...key, address: made.address };
    } finally {
      await store.close();
    }
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
        policies: { rules: [], limits: [] },
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
      expect(await (parent as RunningParent).jwksHosts()).toEqual([]);
      const on = await api(`/v1/projects/${p.projectId}/enable`, { method: 'POST' });
      expect([on.status, on.body.state, openProjectRecord(on.body.record, enclave.identity.publicKeyObject).record.seq]).toEqual([
        200,
        'active',
        2,
      ]);
      expect(await (parent as RunningParent).jwksHosts()).toEqual(['localhost']);
      expect((await api(`/v1/projects/${p.projectId}`)).body.state).toBe('active');
    });

    it('gives the egress relay the JWKS hosts of active JWT projects only', async () => {
      expect(await (parent as RunningParent).jwksHosts()).toEqual([]);
      await createProject({ auth: jwtAuth({ jwksUri: 'https://login.example.com/.well-known/jwks.json' }) });
      await createProject({ auth: jwtAuth({ jwksUri: 'https://login.example.com/other.json' }) });
      await createProject({ auth: { type: 'token' } });
      await createProject();
      expect((await (parent as RunningParent).jwksHosts()).sort()).toEqual(['localhost', 'login.example.com']);
    });

    it.each<[string, unknown, RegExp]>([
      ['no body', undefined, /^body: a project is required$/],
      ['no name', { auth: { type: 'token' } }, /^body\.name is required$/],
      ['an empty name', { name: '', auth: { type: 'token' } }, /^body\.name: /],
      ['a name of 129 characters', { name: 'x'.repeat(129), auth: { type: 'token' } }, /^body\.name: /],
      [
        'a name with a control character',
        { name: 'bell\u0007', auth: { type: 'token' } },
        /^body\.name: expected 1-128 printable characters$/,
      ],
      ['no auth', { name: 'a' }, /^body\.auth is required$/],
      ['an unknown auth type', { name: 'a', auth: { type: 'oauth' } }, /^body\.auth/],
      [
        'a JWT auth without issuer',
        { name: 'a', auth: { type: 'jwt', audience: 'x', jwksUri: 'https://a.example/j' } },
        /^body\.auth\.issuer is required$/,
      ],
      [
        'a JWT auth without audience',
        { name: 'a', auth: { type: 'jwt', issuer: 'x', jwksUri: 'https://a.example/j' } },
        /^body\.auth\.audience is required$/,
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
      const { address } = await userKey(p, await mint('alice'));
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

      // Disabled and enabled by new records, which the wallet store answers the enclave from then on.
      const store = await walletStore();
      const stored = async () => {
        const { subject } = decodeKeyRecord(Buffer.from(key.record.record, 'base64'));
        const { key: k } = await store.call('store.userKey', { projectId: p.projectId, subject: subject as string });
        return decodeKeyRecord(Buffer.from((k as { record: { record: string } }).record.record, 'base64'));
      };
      try {
        expect((await api(`/v1/keys/${key.keyId}/disable`, { method: 'POST' })).body.disabled).toBe(true);
        expect(await stored()).toMatchObject({ keyId: key.keyId, disabled: true, seq: 1 });
        expect((await api(`/v1/keys/${key.keyId}/enable`, { method: 'POST' })).body.disabled).toBe(false);
        expect(await stored()).toMatchObject({ keyId: key.keyId, disabled: false, seq: 2 });
      } finally {
        await store.close();
      }
    });
  });
});
