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

  it('validates base64 and key ids', () => {
    expect(base64.safeParse('AAAA').success).toBe(true);
    expect(base64.safeParse('AAA=').success).toBe(true);
    expect(base64.safeParse('AA=A').success).toBe(false);
    expect(base64.safeParse('A-_B').success).toBe(false);
    expect(keyId.safeParse('k_1-x').success).toBe(true);
    expect(keyId.safeParse('../etc').success).toBe(false);
    expect(keyId.safeParse('').success).toBe(false);
  });
});
