import { z } from 'zod';
import { asKeystoreError, fromRpcError, KeystoreError, ERROR_CODES, toRpcError } from '../src/errors';
import { base64, keyId, parseOrThrow } from '../src/schema';

describe('error codes', () => {
  it('round-trips every code through the JSON-RPC error object', () => {
    for (const code of Object.keys(ERROR_CODES) as Array<keyof typeof ERROR_CODES>) {
      const wire = JSON.parse(JSON.stringify(toRpcError(new KeystoreError(code, `m-${code}`))));
      expect(wire).toEqual({
        code: ERROR_CODES[code].rpcCode,
        message: `m-${code}`,
        data: { code, retryable: ERROR_CODES[code].retryable, reason: code },
      });
      const back = fromRpcError(wire);
      expect([back.code, back.message, back.retryable]).toEqual([code, `m-${code}`, ERROR_CODES[code].retryable]);
    }
  });

  it('never puts a cause on the wire: only the code, the message and retryability cross', () => {
    const inner = Object.assign(new Error('OAEP decoding error at byte 17'), { key: Buffer.alloc(32, 7) });
    const refused = new KeystoreError('KEY_INTEGRITY', 'the key could not be unsealed', {
      cause: new Error('GCM tag mismatch', { cause: inner }),
    });
    expect(refused.cause).toBeInstanceOf(Error);
    const text = JSON.stringify(toRpcError(refused));
    expect(JSON.parse(text)).toEqual({
      code: -32001,
      message: 'the key could not be unsealed',
      data: { code: 'KEY_INTEGRITY', retryable: false, reason: 'KEY_INTEGRITY' },
    });
    for (const hidden of ['cause', 'GCM', 'OAEP', 'byte 17', Buffer.alloc(32, 7).toString('hex')])
      expect([hidden, text.includes(hidden)]).toEqual([hidden, false]);
    // An unknown error becomes INTERNAL with a fixed message; its text stays in the cause, off the wire.
    const unknown = asKeystoreError(new Error('library detail'));
    expect([unknown.code, unknown.message, (unknown.cause as Error).message]).toEqual(['INTERNAL', 'internal error', 'library detail']);
    expect(JSON.stringify(toRpcError(unknown))).not.toContain('library detail');
  });

  it('reads a protocol-1 peer error (data.reason only), and prefers data.code when both are there', () => {
    const v1 = fromRpcError({ code: -32021, message: 'slow', data: { reason: 'TIMEOUT', retryable: true } });
    expect([v1.code, v1.retryable, v1.message]).toEqual(['TIMEOUT', true, 'slow']);
    const both = fromRpcError({ code: -32002, message: 'x', data: { code: 'KEY_NOT_FOUND', reason: 'TIMEOUT' } });
    expect(both.code).toBe('KEY_NOT_FOUND');
    const bad = fromRpcError({ code: -32002, message: 'x', data: { code: 'NOPE', reason: 'ALSO_NOPE' } });
    expect(bad.code).toBe('INTERNAL');
  });

  it('gives every reason a distinct JSON-RPC code', () => {
    const codes = Object.values(ERROR_CODES).map((r) => r.rpcCode);
    expect(new Set(codes).size).toBe(codes.length);
  });

  it('maps unknown errors to INTERNAL without their text', () => {
    const ke = asKeystoreError(new Error('0xdeadbeef private'));
    expect(ke.code).toBe('INTERNAL');
    expect(ke.message).toBe('internal error');
    expect(fromRpcError({ message: 'x', data: { code: 'NOT_A_REASON' } }).code).toBe('INTERNAL');
    expect(fromRpcError('garbage').code).toBe('INTERNAL');
  });

  it('lets a caller override retryable', () => {
    expect(new KeystoreError('INTERNAL', 'x', { retryable: true }).retryable).toBe(true);
  });
});

describe('schema helper', () => {
  const schema = z.strictObject({ keyId, blob: base64, nested: z.strictObject({ n: z.number() }) });

  it('names unknown fields and wrong types by path, without echoing values', () => {
    const err = (() => {
      try {
        parseOrThrow(schema, { keyId: 'k1', blob: 'AAAA', nested: { n: 'secret-value', m: 1 }, zzz: 2 });
      } catch (e) {
        return e as KeystoreError;
      }
      throw new Error('expected a failure');
    })();
    expect(err.code).toBe('INVALID_PARAMS');
    expect(err.message).toContain('params: unknown field(s) "zzz"');
    expect(err.message).toContain('params.nested: unknown field(s) "m"');
    expect(err.message).toContain('params.nested.n');
    expect(err.message).not.toContain('secret-value');
  });

  it('validates base64 and key ids, naming the field that fails and why', () => {
    const shape = z.strictObject({ keyId, blob: base64 });
    const verdict = (value: unknown) => {
      try {
        parseOrThrow(shape, value);
        return 'OK';
      } catch (e) {
        expect((e as KeystoreError).code).toBe('INVALID_PARAMS');
        return (e as KeystoreError).message;
      }
    };
    for (const blob of ['AAAA', 'AAA=', 'AA==', '', 'ab+/']) expect([blob, verdict({ keyId: 'k', blob })]).toEqual([blob, 'OK']);
    for (const blob of ['AA=A', 'A-_B', 'AAA', 'AAAA====', 'A===', 'AAAA\n']) {
      expect([blob, verdict({ keyId: 'k', blob })]).toEqual([blob, 'params.blob: expected standard padded base64']);
    }
    for (const id of ['k_1-x', 'x'.repeat(64), 'A']) expect([id, verdict({ keyId: id, blob: 'AAAA' })]).toEqual([id, 'OK']);
    for (const id of ['../etc', '', 'x'.repeat(65), 'a b', 'k/1', 'k.1']) {
      expect([id, verdict({ keyId: id, blob: 'AAAA' })]).toEqual([id, 'params.keyId: expected 1-64 characters of [A-Za-z0-9_-]']);
    }
    // Both wrong: both named, in order.
    expect(verdict({ keyId: '', blob: '!' })).toBe(
      'params.keyId: expected 1-64 characters of [A-Za-z0-9_-]; params.blob: expected standard padded base64',
    );
  });

  it('names at most five problems and counts the rest', () => {
    const wide = z.strictObject(Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`f${i}`, z.number()])));
    const message = (() => {
      try {
        parseOrThrow(wide, {}, 'body');
      } catch (e) {
        return (e as KeystoreError).message;
      }
      return 'OK';
    })();
    expect(message.split('; ')).toEqual([
      'body.f0 is required',
      'body.f1 is required',
      'body.f2 is required',
      'body.f3 is required',
      'body.f4 is required',
      'and 2 more',
    ]);
  });
});
