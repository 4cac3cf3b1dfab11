/**
 * Errors that say what to fix (issue 23 item 10), over the real processes: a validation failure names its first
 * problem and lists them all in `details` (`[{path, expected, received}]`, never the values); a typed-data
 * message is checked against its types; the Bearer scheme is case-insensitive (the token is not); a malformed key
 * id is 400, a well-formed unknown one 404, and a key the token does not reach answers exactly as a missing one.
 */
import { createHash, randomBytes } from 'node:crypto';
import { recoverTypedDataAddress, type TypedDataDefinition } from 'viem';
import { tempRunDir } from '@nks/shared-test/helpers';
import { KeystoreApiError, KeystoreClient } from '../../client/src/sdk';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

const sha = (t: string) => createHash('sha256').update(t).digest('hex');
const secret = (name: string) => `nks_${name}_${randomBytes(16).toString('hex')}`;
const T = { admin: secret('admin'), full: secret('full'), bound: secret('bound') };
type Name = keyof typeof T;
const SCOPES: Record<Name, string[]> = {
  admin: ['admin'],
  full: ['keys:create', 'keys:sign', 'keys:read'],
  bound: ['keys:read', 'keys:sign'],
};

const ALICE = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
const typedData = (message: Record<string, unknown>) => ({
  domain: { name: 'Ether Mail', version: '1', chainId: 1 },
  types: {
    Mail: [
      { name: 'to', type: 'address' },
      { name: 'amount', type: 'uint8' },
    ],
  },
  primaryType: 'Mail',
  message,
});

describe('errors that say what to fix', () => {
  let s: Stack;
  /** A key of the default project, and one of another project (which the bound token does not reach). */
  let key: { keyId: string; address: `0x${string}` };
  let elsewhere: string;
  const api = (name: Name | null, path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
    s.api(path, { ...init, token: name === null ? null : T[name] });
  const error = (r: { status: number; body: any }) => ({ status: r.status, ...r.body?.error, requestId: undefined });

  beforeAll(async () => {
    const tokens = (Object.keys(T) as Name[]).map((n) => ({
      name: n,
      sha256: sha(T[n]),
      scopes: SCOPES[n],
      ...(n === 'bound' ? { projects: ['default'] } : {}),
    }));
    s = await startStack(tempRunDir('nks-errors-'), { parent: { tokens } });
    await waitReady(s);
    key = (await api('full', '/v1/keys', { body: {} })).body;
    const p = await api('admin', '/v1/projects', { body: { name: 'Other', auth: { type: 'token' } } });
    expect(p.status).toBe(201);
    const other = await api('admin', '/v1/keys', { body: { projectId: p.body.projectId } });
    expect(other.status).toBe(201);
    elsewhere = other.body.keyId;
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  describe('details', () => {
    it('a missing field: the message names it, details say what it should be', async () => {
      expect(error(await api('full', `/v1/keys/${key.keyId}/sign`, { body: { type: 'message' } }))).toEqual({
        status: 400,
        code: 'INVALID_PARAMS',
        message: 'body.message is required',
        retryable: false,
        details: [{ path: 'body.message', expected: 'string or object', received: 'missing' }],
      });
      // No body at all where one is required.
      expect(error(await api('full', `/v1/keys/${key.keyId}/sign`, { method: 'POST' }))).toMatchObject({
        status: 400,
        message: 'body: a sign request is required',
        details: [{ path: 'body', expected: 'a sign request is required', received: 'missing' }],
      });
    });

    it('every problem of a body, in order, an unknown field by its name', async () => {
      const r = await api('full', `/v1/keys/${key.keyId}/sign`, {
        body: {
          type: 'transaction',
          transaction: { type: 'eip1559', chainId: 1, nonce: 0, gas: 'lots', maxFeePerGas: '1', maxPriorityFeePerGas: '1', tip: 1 },
        },
      });
      expect(error(r)).toMatchObject({
        status: 400,
        code: 'INVALID_PARAMS',
        message: 'body.transaction.gas: expected a uint64 as a decimal string or 0x hex; body.transaction: unknown field(s) "tip"',
        details: [
          { path: 'body.transaction.gas', expected: 'a uint64 as a decimal string or 0x hex', received: 'string (4 characters)' },
          { path: 'body.transaction.tip', expected: 'no such field', received: 'number' },
        ],
      });
      expect(error(await api('full', '/v1/keys', { body: { labels: { tier: 5 } } })).details).toEqual([
        { path: 'body.labels.tier', expected: 'string', received: 'number' },
      ]);
    });

    it('a query: a bad value and a key given twice', async () => {
      expect(error(await api('full', '/v1/keys?limit=many')).details).toEqual([
        { path: 'query.limit', expected: expect.any(String), received: 'string (4 characters)' },
      ]);
      expect(error(await api('full', '/v1/keys?limit=1&limit=2'))).toMatchObject({
        status: 400,
        message: 'query: "limit" is given more than once',
        details: [{ path: 'query.limit', expected: 'one value', received: 'more than one value' }],
      });
    });

    it('never echoes what was sent: a private key pasted as a digest stays out of the answer', async () => {
      const pasted = `0x${randomBytes(32).toString('hex')}`;
      const r = await api('full', `/v1/keys/${key.keyId}/sign`, { body: { type: 'digest', digest: `${pasted}00`, privateKey: pasted } });
      expect(r.status).toBe(400);
      expect(JSON.stringify(r.body)).not.toContain(pasted.slice(2, 34));
      expect(r.body.error.details).toEqual([
        { path: 'body.digest', expected: '32 bytes as 0x-prefixed hex', received: 'string (68 characters)' },
        { path: 'body.privateKey', expected: 'no such field', received: 'string (66 characters)' },
      ]);
    });

    it('other errors keep their own details, or none', async () => {
      expect(error(await api('full', '/v1/keys/k_doesnotexist000000000000')).details).toBeUndefined();
    });
  });

  describe('typed data checked against its types', () => {
    it('signs a message that matches its types (the key signed it)', async () => {
      const td = typedData({ to: ALICE, amount: '7' });
      const r = await api('full', `/v1/keys/${key.keyId}/sign`, { body: { type: 'typedData', typedData: td } });
      expect(r.status).toBe(200);
      const signer = await recoverTypedDataAddress({ ...(td as unknown as TypedDataDefinition), signature: r.body.signature });
      expect(signer).toBe(key.address);
    });

    it('refuses an extra field, naming it, and signs nothing', async () => {
      const r = await api('full', `/v1/keys/${key.keyId}/sign`, {
        body: { type: 'typedData', typedData: typedData({ to: ALICE, amount: '7', memo: 'pay twice' }) },
      });
      expect(error(r)).toMatchObject({
        status: 400,
        code: 'INVALID_PARAMS',
        message: 'body.typedData.message.memo: unknown field: "Mail" has no field "memo" (its fields: "to", "amount")',
        details: [
          {
            path: 'body.typedData.message.memo',
            expected: 'no such field ("Mail" has: "to", "amount")',
            received: 'string (9 characters)',
          },
        ],
      });
      expect(r.body.signature).toBeUndefined();
    });

    it('names a missing field and a wrong type', async () => {
      const missing = await api('full', `/v1/keys/${key.keyId}/sign`, { body: { type: 'typedData', typedData: typedData({ to: ALICE }) } });
      expect(error(missing)).toMatchObject({
        status: 400,
        message: 'body.typedData.message.amount is required ("uint8", a field of "Mail")',
        details: [{ path: 'body.typedData.message.amount', expected: '"uint8", a field of "Mail"', received: 'missing' }],
      });
      const range = await api('full', `/v1/keys/${key.keyId}/sign`, {
        body: { type: 'typedData', typedData: typedData({ to: ALICE, amount: 300 }) },
      });
      expect(error(range).details).toEqual([
        {
          path: 'body.typedData.message.amount',
          expected: 'uint8: an integer from 0 to 2^8-1, as a decimal string, 0x hex or a safe JSON integer',
          received: 'number',
        },
      ]);
    });
  });

  describe("the caller's names in a refusal: escaped, cut to 64 code points, a bounded list", () => {
    /** C0/C1 controls, DEL, and the bidi overrides/isolates: nothing a terminal or a log viewer should be handed raw. */
    const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
    const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
    const sign = (body: unknown) => api('full', `/v1/keys/${key.keyId}/sign`, { body });

    it('a primaryType with CR/LF, ANSI and bidi characters is quoted escaped, 64 of its characters at most', async () => {
      const evil = `A\r\n2026-12-03T15:00:00Z level=info msg="token accepted"\u001b[2J\u202e${'x'.repeat(180)}`;
      const r = await sign({ type: 'typedData', typedData: { ...typedData({ to: ALICE, amount: 1 }), primaryType: evil } });
      expect(r.status).toBe(400);
      expect(r.body.error.message).not.toMatch(UNSAFE);
      expect(r.body.error.message).not.toMatch(/x{65}/);
      expect(r.body.error.message).toMatch(
        /^body\.typedData\.primaryType: "A\\r\\n2026.*\\u001b\[2J\\u202ex+…" is not a type defined in types$/,
      );
    });

    it('an unknown field of a type with long names stays short; thousands of unknown fields are not all listed', async () => {
      const T = `T${'t'.repeat(255)}`;
      const fields = Array.from({ length: 8 }, (_, i) => ({ name: `f${i}${'n'.repeat(254)}`, type: 'string' }));
      const message = Object.fromEntries([...fields.map((f) => [f.name, 'v']), ['extra', 'v']]);
      const r = await sign({ type: 'typedData', typedData: { types: { [T]: fields }, primaryType: T, message } });
      expect(r.status).toBe(400);
      expect(r.body.error.message.length).toBeLessThanOrEqual(512);
      const body: Record<string, unknown> = { type: 'message', message: 'm' };
      for (let i = 0; i < 15_000; i++) body[`k${i}`] = 0;
      const many = await sign(body);
      expect(many.status).toBe(400);
      expect(many.body.error.details).toHaveLength(20);
      expect(many.body.error.message).toBe('body: unknown field(s) "k0", "k1", "k2", "k3", "k4", and 14995 more');
    });

    it('a name is cut at a code point, never between the halves of a surrogate pair', async () => {
      const r = await sign({ type: 'typedData', typedData: typedData({ to: ALICE, amount: 1, [`${'a'.repeat(62)}\u{1F600}tail`]: 1 }) });
      expect(r.status).toBe(400);
      expect(r.body.error.message).not.toMatch(LONE_SURROGATE);
      for (const d of r.body.error.details) expect(d.path).not.toMatch(LONE_SURROGATE);
    });
  });

  describe('the Bearer scheme', () => {
    it.each(['Bearer', 'bearer', 'BEARER', 'bEaReR'])('is accepted as %s (RFC 7235: case-insensitive)', async (scheme) => {
      const r = await api(null, `/v1/keys/${key.keyId}`, { headers: { authorization: `${scheme} ${T.full}` } });
      expect([r.status, r.body.keyId]).toEqual([200, key.keyId]);
    });

    it('the token itself is compared as sent: another case is another token', async () => {
      for (const authorization of [`Bearer ${T.full.toUpperCase()}`, `Basic ${T.full}`, `Bearer${T.full}`, `Bearer ${T.full} x`]) {
        const r = await api(null, `/v1/keys/${key.keyId}`, { headers: { authorization } });
        expect([authorization.slice(0, 8), r.status, r.body.error.code]).toEqual([authorization.slice(0, 8), 401, 'UNAUTHORIZED']);
      }
    });
  });

  describe('key ids', () => {
    const malformed = ['not!an-id', 'k.1', 'a b', 'x'.repeat(65), 'k%2F1', 'k..1', '%C3%A9'];

    it.each(malformed)('a malformed key id (%s) is 400 on every key route, saying what a key id is', async (id) => {
      const routes: Array<[string, string, unknown]> = [
        ['GET', `/v1/keys/${id}`, undefined],
        ['POST', `/v1/keys/${id}/sign`, { type: 'message', message: 'm' }],
        ['GET', `/v1/keys/${id}/history`, undefined],
        ['POST', `/v1/keys/${id}/successor`, {}],
        ['POST', `/v1/keys/${id}/disable`, undefined],
      ];
      for (const [method, path, body] of routes) {
        const r = await api('admin', path, { method, body });
        expect([method, path, error(r)]).toEqual([
          method,
          path,
          {
            status: 400,
            code: 'INVALID_PARAMS',
            message: 'params.keyId: malformed key id: expected 1-64 characters of [A-Za-z0-9_-]',
            retryable: false,
            requestId: undefined,
            details: [
              {
                path: 'params.keyId',
                expected: '1-64 characters of [A-Za-z0-9_-]',
                received: expect.stringMatching(/^string \(\d+ characters\)$/),
              },
            ],
          },
        ]);
      }
    });

    it.each([65, 101, 300, 1024])('a malformed id of %i characters is 400 after the token, 401 without one', async (n) => {
      const id = 'k'.repeat(n);
      const withToken = await api('admin', `/v1/keys/${id}`);
      expect([n, withToken.status, withToken.body.error.code]).toEqual([n, 400, 'INVALID_PARAMS']);
      const noToken = await api(null, `/v1/keys/${id}/sign`, { body: { type: 'message', message: 'm' } });
      expect([n, noToken.status, noToken.body.error.code]).toEqual([n, 401, 'UNAUTHORIZED']);
      // Beyond the router's 1024 characters a segment is no route at all.
      if (n === 1024) expect((await api('admin', `/v1/keys/${id}k`)).status).toBe(404);
    });

    it('the token is asked for first: without one, 401 (the id is not looked at)', async () => {
      expect(error(await api(null, '/v1/keys/not!an-id')).code).toBe('UNAUTHORIZED');
    });

    it('a well-formed unknown id is 404, and a key the token does not reach answers exactly the same', async () => {
      const unknown = `k_${randomBytes(16).toString('hex').slice(0, 22)}`;
      const scrub = (r: { status: number; body: any }, id: string) => JSON.stringify(error(r)).replaceAll(id, '<id>');
      for (const [method, suffix, body] of [
        ['GET', '', undefined],
        ['POST', '/sign', { type: 'message', message: 'm' }],
        ['GET', '/history', undefined],
      ] as const) {
        const missing = await api('bound', `/v1/keys/${unknown}${suffix}`, { method, body });
        const unreached = await api('bound', `/v1/keys/${elsewhere}${suffix}`, { method, body });
        expect([suffix, missing.status, missing.body.error.code]).toEqual([suffix, 404, 'KEY_NOT_FOUND']);
        expect([suffix, scrub(unreached, elsewhere)]).toEqual([suffix, scrub(missing, unknown)]);
      }
      // The admin reaches it: it exists.
      expect((await api('admin', `/v1/keys/${elsewhere}`)).status).toBe(200);
    });

    it('the SDK gets a final INVALID_PARAMS for a malformed id (not retried, not KEY_NOT_FOUND)', async () => {
      let calls = 0;
      const client = new KeystoreClient({
        url: s.url,
        token: T.full,
        retries: 2,
        fetch: (input, init) => {
          calls += 1;
          return fetch(input, init);
        },
      });
      const err = await client.getKey('bad/id').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KeystoreApiError);
      expect([(err as KeystoreApiError).status, (err as KeystoreApiError).code, (err as KeystoreApiError).retryable, calls]).toEqual([
        400,
        'INVALID_PARAMS',
        false,
        1,
      ]);
      expect((err as Error).message).toContain('malformed key id');
      // The server's details array reaches the caller as issues.
      expect((err as KeystoreApiError).issues).toEqual([expect.objectContaining({ path: 'params.keyId' })]);
      const missing = await client.getKey('k_doesnotexist000000000000').catch((e: unknown) => e);
      expect([(missing as KeystoreApiError).status, (missing as KeystoreApiError).code]).toEqual([404, 'KEY_NOT_FOUND']);
    });
  });
});
