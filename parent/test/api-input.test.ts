/**
 * Prototype-shaped input (issue 22 item 20): `__proto__`, `constructor` and `prototype` as label names, query
 * keys or (`__proto__`) any JSON field are refused with 400 INVALID_REQUEST naming where, never dropped or
 * misread. Over the real processes (the bodies as raw JSON text: a JavaScript object literal cannot hold an own
 * `__proto__`), and the parsing functions in-process.
 */
import { Readable } from 'node:stream';
import { z } from 'zod';
import { KeystoreError } from '@nks/shared/errors';
import { MAX_BODY_DEPTH, readJsonBody } from '@nks/shared/http/body';
import { fieldValidatorCompiler, FieldErrors, parseQuery, stringMap, validatorCompiler } from '@nks/shared/http/validation';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

const RESERVED = ['__proto__', 'constructor', 'prototype'];

describe('prototype-shaped input over HTTP', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-input-'));
    await waitReady(s);
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
  });
  const refusal = (r: { status: number; body: any }) => [r.status, r.body?.error?.code, r.body?.error?.message];

  it.each(RESERVED)('refuses the label name %s (raw JSON text), and makes no key', async (name) => {
    const before = (await s.api('/v1/keys?limit=1000')).body.keys.length;
    const r = await s.api('/v1/keys', { body: `{"labels":{"tier":"gold","${name}":"x"}}` });
    expect(refusal(r)).toEqual([400, 'INVALID_REQUEST', expect.stringMatching(new RegExp(`^body\\.labels: "${name}" is a reserved name`))]);
    expect((await s.api('/v1/keys?limit=1000')).body.keys.length).toBe(before);
  });

  it('refuses a __proto__ key anywhere in a body, also spelled with escapes', async () => {
    const sign = await s.api('/v1/keys', { body: {} });
    expect(sign.status).toBe(201);
    const nested = await s.api(`/v1/keys/${sign.body.keyId}/sign`, {
      body: '{"type":"typedData","typedData":{"types":{"__proto__":[]},"primaryType":"A","domain":{},"message":{}}}',
    });
    expect(refusal(nested)).toEqual([
      400,
      'INVALID_REQUEST',
      expect.stringMatching(/^body\.typedData\.types: "__proto__" is a reserved name/),
    ]);
    const escaped = await s.api('/v1/keys', { body: '{"labels":{"\\u005f_proto__":"x"}}' });
    expect(refusal(escaped)).toEqual([400, 'INVALID_REQUEST', expect.stringMatching(/^body\.labels: "__proto__"/)]);
    const top = await s.api('/v1/keys', { body: '{"__proto__":{"attest":true}}' });
    expect(refusal(top)).toEqual([400, 'INVALID_REQUEST', expect.stringMatching(/^body: "__proto__"/)]);
  });

  it.each(RESERVED)('refuses the query key %s on every kind of route', async (name) => {
    for (const path of ['/v1/keys', '/v1/attestation', `/v1/keys/k_${'A'.repeat(22)}`, '/v1/identity']) {
      const r = await s.api(`${path}?${name}=1`);
      expect([path, ...refusal(r)]).toEqual([
        path,
        400,
        'INVALID_REQUEST',
        `query: "${name}" is a reserved name (__proto__, constructor, prototype are never keys)`,
      ]);
    }
  });

  it('still answers other unknown query keys and labels as before', async () => {
    expect(refusal(await s.api('/v1/keys?toString=1'))).toEqual([400, 'INVALID_PARAMS', 'query: unknown field(s) "toString"']);
    const made = await s.api('/v1/keys', { body: '{"labels":{"toString":"a","valueOf":"b"}}' });
    expect(made.status).toBe(201);
    expect(made.body.labels).toEqual({ toString: 'a', valueOf: 'b' });
    expect((await s.api(`/v1/keys/${made.body.keyId}`)).body.labels).toEqual({ toString: 'a', valueOf: 'b' });
  });
});

describe('prototype-shaped input, in-process', () => {
  const body = (text: string) => readJsonBody(Readable.from([Buffer.from(text)]), { 'content-type': 'application/json' }, 1 << 20);
  const reason = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (err) {
      return [(err as KeystoreError).code, (err as KeystoreError).message];
    }
    return undefined;
  };

  it('finds __proto__ at any depth, in arrays, and in deeply nested bodies without overflowing', async () => {
    expect(await reason(body('{"a":[1,{"b":{"__proto__":1}}]}'))).toEqual([
      'INVALID_REQUEST',
      expect.stringMatching(/^body\.a\[1\]\.b: "__proto__"/),
    ]);
    // As deep as a body may be (MAX_BODY_DEPTH, shared/src/http/body.ts): found, and its path cut short.
    const deep = `${'['.repeat(MAX_BODY_DEPTH - 1)}{"__proto__":0}${']'.repeat(MAX_BODY_DEPTH - 1)}`;
    const [code, message] = (await reason(body(deep))) as string[];
    expect([code, message]).toEqual(['INVALID_REQUEST', expect.stringMatching(/^body\[0\]\[0\].*…: "__proto__" is a reserved name/)]);
    expect(message?.length).toBeLessThan(400);
    // Deeper: refused before it is parsed.
    const deeper = `${'['.repeat(100_000)}{"__proto__":0}${']'.repeat(100_000)}`;
    expect(await reason(body(deeper))).toEqual(['INVALID_REQUEST', `request body is nested more than ${MAX_BODY_DEPTH} levels deep`]);
    expect(await body('{"a":"__proto__","b":{"c":"\\u00e9"}}')).toEqual({ a: '__proto__', b: { c: 'é' } });
  });

  it('marks reserved query keys before duplicates, and keeps other keys on an object without prototype', () => {
    const validate = validatorCompiler({
      schema: z.strictObject({ a: z.string().optional() }),
      httpPart: 'querystring',
      method: 'GET',
      url: '/',
    }) as (d: unknown) => { error?: KeystoreError; value?: unknown };
    for (const k of RESERVED) {
      const e = validate(parseQuery(`a=1&a=2&${k}=x`)).error;
      expect([e?.code, e?.message]).toEqual([
        'INVALID_REQUEST',
        `query: "${k}" is a reserved name (__proto__, constructor, prototype are never keys)`,
      ]);
    }
    const q = parseQuery('a=1');
    expect(Object.getPrototypeOf(q)).toBeNull();
    expect(validate(q).value).toEqual({ a: '1' });
  });

  it("the TrueWallet routes' validator refuses reserved query keys by field, in the SDK's format", () => {
    const validate = fieldValidatorCompiler({
      schema: z.strictObject({ nonce: z.string() }),
      httpPart: 'querystring',
      method: 'GET',
      url: '/',
    }) as (d: unknown) => { error?: FieldErrors };
    for (const k of RESERVED)
      expect(validate(parseQuery(`nonce=1&${k}=1`)).error?.fields).toEqual({ query: [`"${k}" is a reserved name`] });
  });

  it('stringMap refuses reserved keys as sent and answers a map without prototype', () => {
    const m = stringMap(z.string(), z.string());
    const bad = m.safeParse(JSON.parse('{"ok":"1","constructor":"x"}'));
    expect(bad.success).toBe(false);
    const good = m.parse(JSON.parse('{"ok":"1","hasOwnProperty":"x"}'));
    expect(Object.getPrototypeOf(good)).toBeNull();
    expect({ ...good }).toEqual({ ok: '1', hasOwnProperty: 'x' });
    const validate = validatorCompiler({ schema: z.strictObject({ labels: m }), httpPart: 'body', method: 'POST', url: '/' }) as (
      d: unknown,
    ) => { error?: KeystoreError };
    const e = validate(JSON.parse('{"labels":{"prototype":"x"}}')).error;
    expect([e?.code, e?.message]).toEqual([
      'INVALID_REQUEST',
      'body.labels: "prototype" is a reserved name (__proto__, constructor, prototype are never keys)',
    ]);
    expect(validate({ labels: { a: 1 } }).error?.code).toBe('INVALID_PARAMS');
  });
});
