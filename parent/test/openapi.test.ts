/**
 * The caller API's OpenAPI document and reference page (issue 23 item 4; parent/src/api/openapi.ts): generated
 * from the routes' schemas, committed as docs/openapi.json (this fails when they drift), served at
 * `GET /v1/openapi.json` and `/docs` without a token, with every route, its bearer requirement and its error
 * answers; and the answers' schemas, with which the answers are serialized (responses.ts): an answer that is not
 * what its schema says fails rather than leave, except the sign route's, which is documented only.
 * In-process: the caller API server with the daemon's routes and a registry stub that only the answers below reach.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { RouteOptions } from 'fastify';
import { ERROR_CODES, KeystoreError, type ErrorCode } from '@nks/shared/errors';
import { captureLogger, tempRunDir } from '@nks/shared-test/helpers';
import { hashToken, TokenAuth } from '../src/api/auth';
import { DOCS_CSP } from '../src/api/openapi';
import { generateOpenApi } from '../src/api/openapi-document';
import { callerRoutes } from '../src/api/routes';
import { ApiServer } from '../src/api/server';
import { tlsRoutes } from '../src/api/tls-routes';
import { tokenRateLimits } from '../src/api/token-limits';
import { parseParentConfig } from '../src/config';
import type { KeyRegistry, KeyView } from '../src/key-registry';
import { Metrics } from '../src/metrics';
import type { TlsKeys } from '../src/tls/tls-keys';
import { call } from './http-client';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

const COMMITTED = path.join(__dirname, '..', '..', 'docs', 'openapi.json');
const ADMIN = 'nks_test_openapi_admin';
const KEY_ID = `k_${'A'.repeat(22)}`;
const KEY: KeyView = {
  keyId: KEY_ID,
  address: '0x' + '11'.repeat(20),
  publicKey: '0x04' + '22'.repeat(64),
  externalId: null,
  labels: {},
  createdAt: new Date(0).toISOString(),
  disabled: false,
  projectId: 'default',
  state: 'active',
  record: { record: 'AA==', signature: 'AA==' },
};
const SIGNED = {
  signature: '0x' + '33'.repeat(65),
  r: '0x' + '33'.repeat(32),
  s: '0x' + '33'.repeat(32),
  v: 27,
  yParity: 0,
  hash: '0x' + '44'.repeat(32),
  address: KEY.address,
};

describe('the OpenAPI document', () => {
  let server: ApiServer;
  let url: string;
  /** What the stub registry answers for a key (a test changes it). */
  const keyAnswer: Record<string, unknown> = { ...KEY };
  let attestationAnswer: Record<string, unknown> = { document: 'RE9D' };
  let readiness = async () => ({ ready: true, checks: { enclave: true } as Record<string, boolean> });
  let signAnswer: Record<string, unknown> = { ...SIGNED };
  /** Every route the server registered: method and documented path. */
  const registered: Array<{ method: string; name: string; scoped: boolean }> = [];
  let committed: string;

  beforeAll(async () => {
    committed = fs.readFileSync(COMMITTED, 'utf8');
    const config = parseParentConfig({
      api: { listen: { host: '127.0.0.1', port: 0 } },
      tokens: [{ name: 'admin', sha256: hashToken(ADMIN), scopes: ['admin'] }],
      database: { path: '/nonexistent/keys.db' },
      kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
    });
    const log = captureLogger('debug');
    const keys = {
      view: async () => keyAnswer,
      attestation: async () => attestationAnswer,
      sign: async () => signAnswer,
    } as unknown as KeyRegistry;
    server = new ApiServer({
      config: config.api,
      routes: (app) => {
        app.addHook('onRoute', (r: RouteOptions) => {
          for (const method of [r.method].flat())
            registered.push({ method, name: r.config?.name ?? r.url, scoped: r.config?.scope !== undefined });
        });
        tokenRateLimits()(app);
        callerRoutes(keys)(app);
        tlsRoutes({} as TlsKeys)(app);
      },
      auth: new TokenAuth(config.tokens),
      metrics: new Metrics({
        keyCounts: async () => ({ total: 0, disabled: 0, withoutRecord: 0, pending: 0 }),
        enclaveHealth: async () => null,
      }),
      logger: log.logger,
      accessLog: log.logger,
      readiness: async () => readiness(),
    });
    url = await server.listen();
  });
  afterAll(async () => {
    await server?.close(100);
  });

  it('is committed as docs/openapi.json, as generated (npm run openapi)', async () => {
    const generated = await generateOpenApi();
    if (generated !== committed) throw new Error("docs/openapi.json differs from the routes' schemas: run `npm run openapi` and commit it");
    expect(JSON.parse(committed).openapi).toBe('3.1.0');
  });

  it('is served at GET /v1/openapi.json without a token, as committed', async () => {
    const r = await call(url, '/v1/openapi.json');
    expect([r.status, r.headers['content-type']]).toEqual([200, 'application/json; charset=utf-8']);
    expect(`${JSON.stringify(r.body, null, 2)}\n`).toBe(committed);
    // A query is refused as on every other route.
    expect((await call(url, '/v1/openapi.json?x=1')).body.error.code).toBe('INVALID_PARAMS');
  });

  it('has every route the server registers, the bearer scheme on those that need a token, and no others', () => {
    const doc = JSON.parse(committed);
    const documented = Object.entries(doc.paths as Record<string, Record<string, { security: unknown[] }>>).flatMap(([p, ops]) =>
      Object.entries(ops).map(([m, op]) => ({ method: m.toUpperCase(), name: p, scoped: op.security.length > 0 })),
    );
    // The routes' own (those of the server itself are registered before them: health, readiness, the document).
    const served = [
      ...registered.filter((r) => r.method !== 'OPTIONS'),
      ...['/healthz', '/readyz', '/v1/openapi.json'].map((name) => ({ method: 'GET', name, scoped: false })),
    ];
    const key = (r: { method: string; name: string }) => `${r.method} ${r.name}`;
    expect(documented.map(key).sort()).toEqual(served.map(key).sort());
    expect(
      documented
        .filter((r) => r.scoped)
        .map(key)
        .sort(),
    ).toEqual(
      served
        .filter((r) => r.scoped)
        .map(key)
        .sort(),
    );
    expect(
      documented
        .filter((r) => !r.scoped)
        .map(key)
        .sort(),
    ).toEqual(['GET /healthz', 'GET /readyz', 'GET /v1/identity', 'GET /v1/openapi.json'].sort());
    expect(doc.components.securitySchemes.bearer).toEqual(expect.objectContaining({ type: 'http', scheme: 'bearer' }));
    const sign = doc.paths['/v1/keys/{keyId}/sign'].post;
    expect(sign.security).toEqual([{ bearer: [] }]);
    expect(sign.parameters).toEqual([expect.objectContaining({ in: 'path', name: 'keyId', required: true })]);
    expect(sign.responses['200'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/SignResult' });
    // The request body is the sign request's schema, each type a variant.
    const types = new Set<string>();
    const walk = (s: { properties?: { type?: { enum?: string[] } }; oneOf?: unknown[] }): void => {
      for (const t of s.properties?.type?.enum ?? []) types.add(t);
      for (const v of s.oneOf ?? []) walk(v as typeof s);
    };
    walk(sign.requestBody.content['application/json'].schema);
    expect([...types].sort()).toEqual(['authorization', 'digest', 'message', 'transaction', 'typedData', 'userOperation'].sort());
    expect(doc.paths['/v1/projects/{projectId}/policies:evaluate'].post).toBeDefined();
  });

  it('documents the error envelope, and each error status with the codes that have it', () => {
    const doc = JSON.parse(committed);
    const error = doc.components.schemas.Error.properties.error;
    expect(error.required.sort()).toEqual(['code', 'message', 'requestId', 'retryable']);
    expect(error.properties.code.enum.sort()).toEqual(Object.keys(ERROR_CODES).sort());
    const sign = doc.paths['/v1/keys/{keyId}/sign'].post.responses;
    for (const status of ['400', '401', '403', '404', '409', '413', '415', '429', '500', '502', '503', '504']) {
      const codes = (Object.keys(ERROR_CODES) as ErrorCode[]).filter((c) => String(ERROR_CODES[c].httpStatus) === status);
      expect([status, sign[status]?.description]).toEqual([status, codes.join(', ')]);
      expect(sign[status].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/Error' });
    }
    // No token, no 401.
    expect(doc.paths['/v1/identity'].get.responses['401']).toBeUndefined();
  });

  it('serves /docs without a token: a page whose every asset is same-origin, under a CSP that allows only this origin', async () => {
    const page = await call(url, '/docs');
    expect([page.status, page.headers['content-type']]).toEqual([200, 'text/html; charset=utf-8']);
    expect(page.headers['content-security-policy']).toBe(DOCS_CSP);
    expect(DOCS_CSP).toMatch(/default-src 'none'/);
    expect(DOCS_CSP).not.toMatch(/https?:|\*/);
    const html = page.body as string;
    const refs = [...html.matchAll(/\b(?:src|href|spec-url)="([^"]*)"/g)].map((m) => m[1] as string);
    expect(refs.sort()).toEqual(['/docs/redoc.standalone.js', '/v1/openapi.json']);
    expect(html).not.toMatch(/<script>|<style|@import|\/\/[a-z]/i);
    const script = await call(url, '/docs/redoc.standalone.js');
    expect([script.status, script.headers['content-type']]).toEqual([200, 'text/javascript; charset=utf-8']);
    expect((script.body as string).length).toBeGreaterThan(500_000);
    // Redoc's one image from its CDN (its sidebar logo) is left out (openapi.ts, sameOriginOnly).
    expect(script.body).not.toContain('cdn.redoc.ly');
  });

  it('serializes an answer with its schema: a field the schema does not name fails, and is not sent', async () => {
    // The attestation route answers what the enclave sent (a compromised enclave link, a bug): checked here.
    expect((await call(url, '/v1/attestation', { token: ADMIN })).body).toEqual({ document: 'RE9D' });
    attestationAnswer = { document: 'RE9D', sealedKey: 'SEALED-KEY-MATERIAL' };
    try {
      const r = await call(url, '/v1/attestation', { token: ADMIN });
      expect([r.status, r.body.error.code]).toEqual([500, 'INTERNAL']);
      expect(JSON.stringify(r.body)).not.toContain('SEALED');
      attestationAnswer = { document: 42 };
      expect((await call(url, '/v1/attestation', { token: ADMIN })).status).toBe(500);
    } finally {
      attestationAnswer = { document: 'RE9D' };
    }
  });

  it("writes the sign route's answer as the registry returns it (documented, not checked: the hot path)", async () => {
    const body = { type: 'digest', digest: '0x' + '55'.repeat(32) };
    const plain = await call(url, `/v1/keys/${KEY_ID}/sign`, { token: ADMIN, body });
    expect([plain.status, plain.body]).toEqual([200, SIGNED]);
    signAnswer = { ...SIGNED, transactionHash: '0x' + '66'.repeat(32) };
    try {
      const more = await call(url, `/v1/keys/${KEY_ID}/sign`, { token: ADMIN, body });
      expect([more.status, more.body]).toEqual([200, signAnswer]);
    } finally {
      signAnswer = { ...SIGNED };
    }
  });

  it('answers health and readiness as before, through their schemas', async () => {
    expect((await call(url, '/healthz')).body).toEqual({ status: 'ok' });
    expect((await call(url, '/readyz')).body).toEqual({ status: 'ready', checks: { enclave: true } });
    readiness = async () => ({ ready: false, checks: { enclave: false } });
    expect(await call(url, '/readyz')).toEqual(
      expect.objectContaining({ status: 503, body: { status: 'not ready', checks: { enclave: false } } }),
    );
    // An error of status 503 on /readyz is the error envelope, as anywhere (not refused by the answer's schema).
    readiness = async () => {
      throw new KeystoreError('STORAGE_UNAVAILABLE', 'the database did not answer');
    };
    const failed = await call(url, '/readyz');
    expect([failed.status, failed.body.error.code, failed.body.error.message]).toEqual([
      503,
      'STORAGE_UNAVAILABLE',
      'the database did not answer',
    ]);
  });
});

describe('the OpenAPI document of the daemon', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-openapi-'));
    await waitReady(s);
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('is the committed one: the daemon registers the routes the generator does (app.ts, openapi-document.ts)', async () => {
    const r = await s.api('/v1/openapi.json', { token: null });
    expect(r.status).toBe(200);
    expect(`${JSON.stringify(r.body, null, 2)}\n`).toBe(fs.readFileSync(COMMITTED, 'utf8'));
    const page = await s.api('/docs', { token: null });
    expect([page.status, page.headers.get('content-security-policy')]).toEqual([200, DOCS_CSP]);
  });
});
