import { z } from 'zod';
import { asKeystoreError, fromRpcError, KeystoreError, REASONS, toRpcError } from '../src/errors';
import { base64, keyId, parseOrThrow } from '../src/schema';

describe('error reasons', () => {
  it('round-trips every reason through the JSON-RPC error object', () => {
    for (const reason of Object.keys(REASONS) as Array<keyof typeof REASONS>) {
      const wire = JSON.parse(JSON.stringify(toRpcError(new KeystoreError(reason, `m-${reason}`))));
      expect(wire).toEqual({ code: REASONS[reason].rpcCode, message: `m-${reason}`, data: { reason, retryable: REASONS[reason].retryable } });
      const back = fromRpcError(wire);
      expect([back.reason, back.message, back.retryable]).toEqual([reason, `m-${reason}`, REASONS[reason].retryable]);
    }
  });

  it('gives every reason a distinct JSON-RPC code', () => {
    const codes = Object.values(REASONS).map((r) => r.rpcCode);
    expect(new Set(codes).size).toBe(codes.length);
  });

  it('maps unknown errors to INTERNAL without their text', () => {
    const ke = asKeystoreError(new Error('0xdeadbeef private'));
    expect(ke.reason).toBe('INTERNAL');
    expect(ke.message).toBe('internal error');
    expect(fromRpcError({ message: 'x', data: { reason: 'NOT_A_REASON' } }).reason).toBe('INTERNAL');
    expect(fromRpcError('garbage').reason).toBe('INTERNAL');
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
    expect(err.reason).toBe('INVALID_PARAMS');
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
        expect((e as KeystoreError).reason).toBe('INVALID_PARAMS');
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
    expect(verdict({ keyId: '', blob: '!' })).toBe('params.keyId: expected 1-64 characters of [A-Za-z0-9_-]; params.blob: expected standard padded base64');
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
    expect(message.split('; ').map((p) => p.split(':')[0])).toEqual(['body.f0', 'body.f1', 'body.f2', 'body.f3', 'body.f4', 'and 2 more']);
  });
});
