/**
 * The caller API contract over the real processes: every route and documented status, auth per scope,
 * body limits and validation, request ids, readiness and metrics.
 */
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import { recoverMessageAddress } from 'viem';
import { birthUserData, taggedUserData, USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { verifyAttestation } from '@nks/shared/attestation/verify';
import { identityPublicKey, openKeyRecord } from '@nks/shared/records';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

describe('caller API', () => {
  let s: Stack;

  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-api-'), { parentApi: { maxBodyBytes: 4096 } });
    await waitReady(s);
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
  });

  /** node:http directly, for requests fetch will not make (a GET with a body). */
  const rawRequest = (path: string, method: string, body: string) =>
    new Promise<{ status: number; body: any; headers: Headers }>((resolve, reject) => {
      const url = new URL(`${s.url}${path}`);
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method,
          headers: {
            authorization: `Bearer ${s.tokens.full}`,
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              body: JSON.parse(Buffer.concat(chunks).toString()),
              headers: new Headers(res.headers as Record<string, string>),
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(body);
    });

  /** Exact bytes on a new connection, for requests no HTTP client sends: the answer's head and body, and whether the server closed. */
  const rawBytes = (bytes: string) =>
    new Promise<{ head: string; body: string; closed: boolean }>((resolve, reject) => {
      const url = new URL(s.url);
      const socket = net.connect(Number(url.port), url.hostname);
      let text = '';
      let settled = false;
      const done = (closed: boolean) => {
        if (settled) return;
        settled = true;
        socket.destroy();
        const cut = text.indexOf('\r\n\r\n');
        resolve({ head: text.slice(0, cut), body: text.slice(cut + 4), closed });
      };
      socket.on('data', (d) => {
        text += d.toString('latin1');
        const cut = text.indexOf('\r\n\r\n');
        const length = /^content-length: (\d+)$/im.exec(text.slice(0, cut))?.[1];
        if (cut >= 0 && length !== undefined && text.length >= cut + 4 + Number(length)) setTimeout(() => done(false), 200); // the server may still close
      });
      socket.on('close', () => done(true));
      socket.on('error', reject);
      socket.write(bytes);
    });

  /** `message`: what the error must say; for INVALID_PARAMS it names the field, so the test knows which check refused. */
  const expectError = (res: { status: number; body: any; headers: Headers }, status: number, code: string, message?: string | RegExp) => {
    expect({ status: res.status, code: res.body?.error?.code }).toEqual({ status, code });
    if (message !== undefined)
      expect(res.body.error.message).toEqual(typeof message === 'string' ? message : expect.stringMatching(message));
    expect(typeof res.body.error.message).toBe('string');
    expect(res.body.error.requestId).toBe(res.headers.get('x-request-id'));
  };

  it('creates keys, reads them, lists them with cursor paging', async () => {
    const created = await s.api('/v1/keys', { body: { labels: { tier: 'gold' } } });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      keyId: expect.stringMatching(/^k_[A-Za-z0-9_-]{22}$/),
      address: expect.stringMatching(/^0x[0-9a-fA-F]{40}$/),
      externalId: null,
      labels: { tier: 'gold' },
      disabled: false,
    });
    expect(new Date(created.body.createdAt).toISOString()).toBe(created.body.createdAt);
    expect(created.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);

    const got = await s.api(`/v1/keys/${created.body.keyId}`);
    expect(got.status).toBe(200);
    expect(got.body).toEqual({ ...created.body });

    for (let i = 0; i < 4; i++) expect((await s.api('/v1/keys', { body: {} })).status).toBe(201);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { status: number; body: any } = await s.api(`/v1/keys?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      expect(page.body.keys.length).toBeLessThanOrEqual(2);
      seen.push(...page.body.keys.map((k: { keyId: string }) => k.keyId));
      cursor = page.body.nextCursor;
    } while (cursor);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toContain(created.body.keyId);
    expect(seen.length).toBeGreaterThanOrEqual(5);
  });

  it('creates one key per external id: 201 first, then 200 with the same key', async () => {
    const first = await s.api('/v1/keys', { body: { externalId: 'user:alice', attest: true } });
    expect(first.status).toBe(201);
    expect(first.body.attestation).toEqual(expect.any(String));
    const again = await s.api('/v1/keys', { body: { externalId: 'user:alice' } });
    expect(again.status).toBe(200);
    expect(again.body.keyId).toBe(first.body.keyId);
    const byExternal = await s.api('/v1/keys?externalId=user:alice');
    expect(byExternal.body.keys.map((k: { keyId: string }) => k.keyId)).toEqual([first.body.keyId]);
    expect((await s.api('/v1/keys?externalId=user:nobody')).body).toEqual({ keys: [], nextCursor: null });
  });

  it('signs, and refuses while the key is disabled', async () => {
    const key = (await s.api('/v1/keys', { body: {} })).body;
    const signed = await s.api(`/v1/keys/${key.keyId}/sign`, { body: { type: 'message', message: 'hello' } });
    expect(signed.status).toBe(200);
    expect(await recoverMessageAddress({ message: 'hello', signature: signed.body.signature })).toBe(key.address);

    expect((await s.api(`/v1/keys/${key.keyId}/disable`, { method: 'POST', token: 'admin' })).body.disabled).toBe(true);
    expectError(await s.api(`/v1/keys/${key.keyId}/sign`, { body: { type: 'message', message: 'x' } }), 409, 'KEY_DISABLED');
    expect((await s.api(`/v1/keys/${key.keyId}/enable`, { method: 'POST', token: 'admin', body: {} })).body.disabled).toBe(false);
    expect((await s.api(`/v1/keys/${key.keyId}/sign`, { body: { type: 'message', message: 'x' } })).status).toBe(200);
  });

  it('serves attestation documents with a nonce', async () => {
    const res = await s.api('/v1/attestation?nonce=0x0102030405060708');
    expect(res.status).toBe(200);
    expect(Buffer.from(res.body.document, 'base64')[0]).toBe(0x84);
    expectError(await s.api('/v1/attestation?nonce=xyz'), 400, 'INVALID_PARAMS', 'query.nonce: expected 1-512 bytes of 0x-prefixed hex');
  });

  it('serves the keystore identity without a token: the genesis document, and a fresh one for the nonce, both binding the public key', async () => {
    const { identity } = s.platform;
    const res = await s.api('/v1/identity?nonce=0x6e6b732d6e6f6e6365', { token: null });
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['attestation', 'genesisDocument', 'publicKey']);
    expect([res.body.publicKey, res.body.genesisDocument]).toEqual([identity.publicKey, identity.genesisDocument]);
    const bindsKey = taggedUserData(USER_DATA_TAGS.identity, Buffer.from(identity.publicKey.slice(2), 'hex'));
    const trustedRoots = [fs.readFileSync(s.platform.rootPem, 'utf8')];
    const fresh = verifyAttestation(Buffer.from(res.body.attestation, 'base64'), {
      trustedRoots,
      expectedNonce: Buffer.from('nks-nonce'),
      expectedUserData: bindsKey,
      expectedPcrs: { 0: s.platform.pcr0 },
      maxAgeMs: 60_000,
    });
    expect(fresh.document.nonce?.toString()).toBe('nks-nonce');
    const genesis = verifyAttestation(Buffer.from(res.body.genesisDocument, 'base64'), {
      trustedRoots,
      expectedUserData: bindsKey,
      at: 'document', // evidence kept since genesis
      allowUnpinned: true,
    });
    expect(genesis.document.nonce?.toString('hex')).toBe(s.platform.genesis.nonce.slice(2));
    // Without a nonce too; any token (even a bad one) is ignored; the query is strict.
    expect((await s.api('/v1/identity', { token: null })).body.publicKey).toBe(identity.publicKey);
    expect((await s.api('/v1/identity', { token: 'nks_not_a_real_token' })).status).toBe(200);
    expectError(await s.api('/v1/identity?nonce=0x01&x=1', { token: null }), 400, 'INVALID_PARAMS', 'query: unknown field(s) "x"');
    expectError(
      await s.api('/v1/identity?nonce=0x1', { token: null }),
      400,
      'INVALID_PARAMS',
      'query.nonce: expected 1-512 bytes of 0x-prefixed hex',
    );
    expectError(await s.api('/v1/identity', { method: 'POST', body: {}, token: null }), 405, 'METHOD_NOT_ALLOWED');
  });

  it('key views carry the project, state, the record the enclave signed, and the birth attestation on every read', async () => {
    const created = await s.api('/v1/keys', { body: { externalId: 'views-1', attest: true } });
    expect(created.status).toBe(201);
    const key = created.body;
    expect(key).toMatchObject({ projectId: 'default', state: 'active', disabled: false, attestation: expect.any(String) });
    const identity = identityPublicKey(s.platform.identity.publicKey);
    const { record } = openKeyRecord(key.record, identity);
    expect(record).toMatchObject({
      keyId: key.keyId,
      address: key.address,
      projectId: 'default',
      subject: 'views-1',
      seq: 0,
      origin: 'created',
    });
    const birth = verifyAttestation(Buffer.from(key.attestation, 'base64'), {
      trustedRoots: [fs.readFileSync(s.platform.rootPem, 'utf8')],
      expectedUserData: birthUserData(key.keyId, key.address),
      expectedPcrs: { 0: s.platform.pcr0 },
    });
    expect(birth.document.pcrs.get(0)?.toString('hex')).toBe(s.platform.pcr0);
    expect((await s.api(`/v1/keys/${key.keyId}`)).body).toEqual(key);
    expect((await s.api('/v1/keys?externalId=views-1')).body.keys).toEqual([key]);

    // Disable and enable: each a new record from the enclave, one seq further.
    const off = await s.api(`/v1/keys/${key.keyId}/disable`, { method: 'POST', token: 'admin' });
    expect(openKeyRecord(off.body.record, identity).record).toMatchObject({ seq: 1, disabled: true });
    const on = await s.api(`/v1/keys/${key.keyId}/enable`, { method: 'POST', token: 'admin' });
    expect(openKeyRecord(on.body.record, identity).record).toMatchObject({ seq: 2, disabled: false });
    expect({ ...on.body, record: undefined }).toEqual({ ...key, record: undefined });
    expect((await s.api(`/v1/keys/${key.keyId}/sign`, { body: { type: 'message', message: 'after' } })).status).toBe(200);
  });

  it('requires a token with the right scope on every caller route', async () => {
    const key = (await s.api('/v1/keys', { body: {} })).body;
    const routes: Array<[string, string, unknown, string]> = [
      ['POST', '/v1/keys', {}, 'create'],
      ['GET', '/v1/keys', undefined, 'read'],
      ['GET', `/v1/keys/${key.keyId}`, undefined, 'read'],
      ['POST', `/v1/keys/${key.keyId}/sign`, { type: 'message', message: 'm' }, 'sign'],
      ['POST', `/v1/keys/${key.keyId}/disable`, undefined, 'admin'],
      ['POST', `/v1/keys/${key.keyId}/enable`, undefined, 'admin'],
      ['GET', '/v1/attestation?nonce=0x01', undefined, 'read'],
    ];
    for (const [method, path, body, allowed] of routes) {
      expectError(await s.api(path, { method, body, token: null }), 401, 'UNAUTHORIZED');
      expectError(await s.api(path, { method, body, token: 'nks_not_a_real_token' }), 401, 'UNAUTHORIZED');
      expectError(await s.api(path, { method, body, headers: { authorization: 'Basic abc' }, token: null }), 401, 'UNAUTHORIZED');
      for (const who of ['create', 'sign', 'read'] as const) {
        const res = await s.api(path, { method, body, token: who });
        if (who === allowed) expect(res.status).toBeLessThan(300);
        else expectError(res, 403, 'FORBIDDEN');
      }
      expect((await s.api(path, { method, body, token: 'admin' })).status).toBeLessThan(300); // admin has every scope
    }
    const unauth = await s.api('/v1/keys', { token: null });
    expect(unauth.headers.get('www-authenticate')).toBe('Bearer');
  });

  it('answers bad bodies and requests with their documented statuses', async () => {
    const key = (await s.api('/v1/keys', { body: {} })).body;
    expectError(await s.api('/v1/keys', { body: 'x'.repeat(5000) }), 413, 'PAYLOAD_TOO_LARGE');
    expectError(await s.api('/v1/keys', { body: '{"externalId": ' }), 400, 'INVALID_REQUEST');
    expectError(
      await s.api('/v1/keys', { body: { externalId: 'a', color: 'red' } }),
      400,
      'INVALID_PARAMS',
      'body: unknown field(s) "color"',
    );
    expectError(await s.api('/v1/keys', { body: { externalId: 42 } }), 400, 'INVALID_PARAMS', /^body\.externalId: [^;]*string/);
    expectError(
      await s.api('/v1/keys', { body: { labels: { 'bad key!': 'x' } } }),
      400,
      'INVALID_PARAMS',
      'body.labels.bad key!: Invalid key in record',
    );
    expectError(await s.api('/v1/keys', { body: '{}', headers: { 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    expectError(await s.api('/v1/keys?color=red', { body: {} }), 400, 'INVALID_PARAMS', 'query: unknown field(s) "color"');
    expectError(await s.api('/v1/keys?limit=0'), 400, 'INVALID_PARAMS', /^query\.limit: /);
    expectError(await s.api('/v1/keys?cursor=bm9wZQ'), 400, 'INVALID_PARAMS', 'cursor is not one this service issued');
    expectError(
      await s.api(`/v1/keys/${key.keyId}/disable`, { token: 'admin', body: { unexpected: true } }),
      400,
      'INVALID_PARAMS',
      'body: unknown field(s) "unexpected"',
    );
    const getWithBody = await rawRequest(`/v1/keys/${key.keyId}`, 'GET', '{"unexpected":true}');
    expect([getWithBody.status, getWithBody.body.error.code]).toEqual([400, 'INVALID_REQUEST']);
    expectError(
      await s.api(`/v1/keys/${key.keyId}/sign`, { body: { type: 'digest', digest: '0x12' } }),
      400,
      'INVALID_PARAMS',
      /^body\.digest: /,
    );
    expectError(
      await s.api(`/v1/keys/${key.keyId}/sign`, { body: { type: 'message', message: 'm', extra: 1 } }),
      400,
      'INVALID_PARAMS',
      'body: unknown field(s) "extra"',
    );
    expectError(await s.api(`/v1/keys/${key.keyId}/sign`, { method: 'POST' }), 400, 'INVALID_PARAMS', 'body: a sign request is required');
    expectError(
      await s.api(`/v1/keys/${key.keyId}/sign`, {
        body: {
          type: 'typedData',
          typedData: { types: { M: [{ name: 'a', type: 'address' }] }, primaryType: 'M', message: { a: 'nope' } },
        },
      }),
      400,
      'INVALID_PARAMS',
      'body.typedData.message.a: expected address: 20 bytes as 0x-prefixed hex',
    );
    // A checksum is viem's to check, in the enclave: a mixed-case address whose checksum is wrong.
    const badChecksum = '0x8ba1f109551bd432803012645Ac136ddd64DBA72';
    expectError(
      await s.api(`/v1/keys/${key.keyId}/sign`, {
        body: {
          type: 'typedData',
          typedData: { types: { M: [{ name: 'a', type: 'address' }] }, primaryType: 'M', message: { a: badChecksum } },
        },
      }),
      400,
      'INVALID_PARAMS',
      `typedData: Address "${badChecksum}" is invalid.`,
    );
    expectError(await s.api('/v1/keys/k_doesnotexist000000000000'), 404, 'KEY_NOT_FOUND');
    expectError(await s.api('/v1/keys/k_doesnotexist000000000000/sign', { body: { type: 'message', message: 'm' } }), 404, 'KEY_NOT_FOUND');
    expectError(await s.api('/v1/keys/k_doesnotexist000000000000/disable', { method: 'POST', token: 'admin' }), 404, 'KEY_NOT_FOUND');
    expectError(await s.api('/v1/nothing'), 404, 'NOT_FOUND');
    const wrongMethod = await s.api('/v1/keys', { method: 'DELETE' });
    expectError(wrongMethod, 405, 'METHOD_NOT_ALLOWED');
    expect(wrongMethod.headers.get('allow')).toBe('POST, GET');
  });

  it('answers 413 on a declared oversized body without reading it, and closes the connection', async () => {
    const url = new URL(`${s.url}/v1/keys`);
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: 'POST',
          headers: { authorization: `Bearer ${s.tokens.full}`, 'content-type': 'application/json', 'content-length': '10000000' },
        },
        (r) => {
          r.resume();
          resolve(r);
        },
      );
      req.on('error', reject);
      req.write('{"a":'); // the rest never comes
    });
    expect([res.statusCode, res.headers.connection]).toEqual([413, 'close']);
    const get = await rawBytes(
      `GET /v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${s.tokens.full}\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n{"a":`,
    );
    expect(get.head).toMatch(/^HTTP\/1.1 413 /);
    expect(JSON.parse(get.body).error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(get.closed).toBe(true);
  });

  it('keeps the envelope and codes where Fastify would answer otherwise', async () => {
    const key = (await s.api('/v1/keys', { body: {} })).body;
    // A `__proto__` key, anywhere, is refused by name (never dropped, never set as a prototype); `constructor` is
    // an ordinary (unknown) field, and refused as a label name (api-input.test.ts).
    expectError(
      await s.api('/v1/keys', { body: '{"__proto__": {"admin": true}}' }),
      400,
      'INVALID_REQUEST',
      'body: "__proto__" is a reserved name (__proto__, constructor, prototype are never keys)',
    );
    expectError(
      await s.api('/v1/keys', { body: '{"constructor": {"prototype": {}}}' }),
      400,
      'INVALID_PARAMS',
      'body: unknown field(s) "constructor"',
    );
    expectError(
      await s.api('/v1/keys', { body: '{"labels": {"__proto__": {"admin": true}, "tier": "gold"}}' }),
      400,
      'INVALID_REQUEST',
      'body.labels: "__proto__" is a reserved name (__proto__, constructor, prototype are never keys)',
    );
    // An empty body is no body, whatever its type; a JSON `null` body is a body, and refused.
    expect((await s.api('/v1/keys', { method: 'POST', body: '' })).status).toBe(201);
    expect(
      (
        await s.api(`/v1/keys/${key.keyId}/disable`, {
          method: 'POST',
          token: 'admin',
          body: '',
          headers: { 'content-type': 'text/plain' },
        })
      ).status,
    ).toBe(200);
    expectError(
      await s.api(`/v1/keys/${key.keyId}/sign`, { method: 'POST', body: '' }),
      400,
      'INVALID_PARAMS',
      'body: a sign request is required',
    );
    expectError(await s.api('/v1/keys', { body: 'null' }), 400, 'INVALID_PARAMS', 'body: Invalid input: expected object, received null');
    expectError(
      await s.api(`/v1/keys/${key.keyId}/enable`, { token: 'admin', body: 'null' }),
      400,
      'INVALID_PARAMS',
      'body: Invalid input: expected object, received null',
    );
    expectError(await rawRequest(`/v1/keys/${key.keyId}`, 'GET', 'null'), 400, 'INVALID_REQUEST', 'this route takes no request body');
    expectError(await rawRequest(`/v1/keys/${key.keyId}`, 'GET', '{"a":'), 400, 'INVALID_REQUEST', 'request body is not valid JSON');
    expectError(
      await rawRequest(`/v1/keys/${key.keyId}`, 'GET', 'x'.repeat(5000)),
      413,
      'PAYLOAD_TOO_LARGE',
      'request body of 5000 bytes exceeds the 4096-byte limit',
    );
    // Only application/json bodies; a malformed Content-Type is refused before the body is read.
    expectError(
      await s.api('/v1/keys', { body: '{}', headers: { 'content-type': 'application/json-patch+json' } }),
      415,
      'UNSUPPORTED_MEDIA_TYPE',
      'request body must be application/json',
    );
    expectError(
      await s.api('/v1/keys', { body: '{}', headers: { 'content-type': 'not a media type' } }),
      415,
      'UNSUPPORTED_MEDIA_TYPE',
      'request body must be application/json',
    );
    expect((await s.api('/v1/keys', { body: '{}', headers: { 'content-type': 'Application/JSON; charset=utf-8' } })).status).toBe(201);
    const untyped = await rawBytes(
      `POST /v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${s.tokens.full}\r\ncontent-length: 2\r\n\r\n{}`,
    );
    expect([untyped.head.split('\r\n')[0], JSON.parse(untyped.body).error.code]).toEqual([
      'HTTP/1.1 415 Unsupported Media Type',
      'UNSUPPORTED_MEDIA_TYPE',
    ]);
    expectError(await s.api('/v1/keys', { body: 'x'.repeat(5000), headers: { 'content-type': 'text/plain' } }), 413, 'PAYLOAD_TOO_LARGE'); // the limit before the type
    // Routes: a path no route has is 404 before any token is asked for, however the router fails to match it.
    // (A path segment over the router's 1,024 characters is no route either, a key id's included.)
    for (const path of ['/v1/nothing', '/v1/keys/%zz', '/v1/keys/', '/V1/keys', `/v1/keys/${'a'.repeat(1100)}/sign`]) {
      expectError(await s.api(path, { token: null }), 404, 'NOT_FOUND', `no route for ${path.slice(0, 200)}`);
    }
    // A malformed key id is a route's path with a bad parameter: the token first (401), then 400 saying what a key
    // id is (parent/test/api-errors.test.ts).
    for (const path of ['/v1/keys/not!an-id', `/v1/keys/${'a'.repeat(65)}`, `/v1/keys/${'a'.repeat(100)}/sign`]) {
      const body = path.endsWith('/sign') ? { type: 'message', message: 'm' } : undefined;
      expectError(await s.api(path, { token: null, body }), 401, 'UNAUTHORIZED');
      expectError(await s.api(path, { body }), 400, 'INVALID_PARAMS', /^params\.keyId: malformed key id: expected 1-64 characters/);
    }
    // Methods: 405 with Allow, for any method the path does not serve, HEAD included, before the token.
    for (const [method, path, allow, name] of [
      ['HEAD', '/v1/keys', 'POST, GET', '/v1/keys'],
      ['PUT', `/v1/keys/${key.keyId}`, 'GET, PATCH', '/v1/keys/{keyId}'],
      ['GET', `/v1/keys/${key.keyId}/sign`, 'POST', '/v1/keys/{keyId}/sign'],
      ['OPTIONS', '/v1/attestation', 'GET', '/v1/attestation'],
      ['POST', '/healthz', 'GET', '/healthz'],
      ['PATCH', '/readyz', 'GET', '/readyz'],
    ]) {
      const res = await s.api(path as string, { method, token: null });
      expect([res.status, res.headers.get('allow')]).toEqual([405, allow]);
      if (method !== 'HEAD') expectError(res, 405, 'METHOD_NOT_ALLOWED', `${method} is not allowed on ${name}`);
    }
    // Query strings: a key given twice is refused, not read as a list.
    expectError(await s.api('/v1/keys?limit=1&limit=2'), 400, 'INVALID_PARAMS', 'query: "limit" is given more than once');
    expectError(
      await s.api(`/v1/keys/${key.keyId}/sign?a=1&a=2`, { body: { type: 'message', message: 'm' } }),
      400,
      'INVALID_PARAMS',
      'query: "a" is given more than once',
    );
    // Bytes that are not HTTP: Node's own bare answer, as before.
    const garbage = await rawBytes('NOT HTTP\r\n\r\n');
    expect([garbage.head, garbage.closed]).toEqual(['HTTP/1.1 400 Bad Request\r\nConnection: close', true]);
  });

  it('echoes a well-formed caller request id and replaces a malformed one', async () => {
    expect((await s.api('/healthz', { token: null, headers: { 'x-request-id': 'req-123' } })).headers.get('x-request-id')).toBe('req-123');
    expect(
      (await s.api('/healthz', { token: null, headers: { 'x-request-id': 'bad id with spaces' } })).headers.get('x-request-id'),
    ).not.toBe('bad id with spaces');
  });

  it('serves health and readiness without a token, and metrics only on the operational listener', async () => {
    expect(await s.api('/healthz', { token: null })).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await s.api('/readyz', { token: null })).toMatchObject({
      status: 200,
      body: { status: 'ready', checks: { enclave: true, kmsProxy: true, enclaveKmsLink: true, database: true } },
    });
    // Not on the caller API, with or without a token (docs/OPERATIONS.md, "Metrics").
    expectError(await s.api('/metrics', { token: null }), 404, 'NOT_FOUND', 'no route for /metrics');
    expectError(await s.api('/metrics', { token: 'admin' }), 404, 'NOT_FOUND', 'no route for /metrics');
    const m = await fetch(`${s.metricsUrl}/metrics`);
    expect([m.status, m.headers.get('content-type')]).toEqual([200, 'text/plain; version=0.0.4; charset=utf-8']);
    expect(new URL(s.metricsUrl).hostname).toBe('127.0.0.1');
    const text = await m.text();
    for (const name of [
      'nks_http_requests_total',
      'nks_http_request_duration_seconds_bucket',
      'nks_enclave_rpc_duration_seconds_bucket',
      'nks_kms_calls_total',
      'nks_enclave_up 1',
      'nks_keys{state="enabled"}',
      'nks_enclave_counter{counter="signs"}',
      'nks_enclave_memory_bytes{kind="rss"}',
    ]) {
      expect(text).toContain(name);
    }
    expect(text).toMatch(/nks_http_requests_total\{route="\/v1\/keys\/\{keyId\}\/sign",method="POST",status="200"\} [1-9]/);
    expect(text).toMatch(/nks_kms_calls_total\{outcome="ok"\} [1-9]/);
    // The operational listener: health and readiness as on the API, 405 for another method, 404 for anything else.
    const op = async (path: string, init?: RequestInit) => {
      const r = await fetch(`${s.metricsUrl}${path}`, init);
      return { status: r.status, allow: r.headers.get('allow'), body: await r.json() };
    };
    expect(await op('/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await op('/readyz')).toMatchObject({ status: 200, body: { status: 'ready', checks: { enclave: true, database: true } } });
    expect(await op('/metrics', { method: 'POST', body: 'x' })).toMatchObject({
      status: 405,
      allow: 'GET',
      body: { error: { code: 'METHOD_NOT_ALLOWED' } },
    });
    expect(await op('/v1/keys')).toMatchObject({ status: 404, body: { error: { code: 'NOT_FOUND' } } });
  });

  it('never logs tokens, blobs or documents', () => {
    const logs = s.parent.lines.join('\n');
    for (const t of Object.values(s.tokens)) expect(logs).not.toContain(t);
    expect(logs).toContain('"msg":"request"');
    expect(logs).not.toMatch(/"blob":"[A-Za-z0-9+/]{40}/);
    expect(logs).not.toMatch(/"document":"[A-Za-z0-9+/]{40}/);
  });
});
