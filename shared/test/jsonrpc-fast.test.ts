/**
 * The hot path's envelope checks and framing (shared/src/rpc/jsonrpc.ts, framed-connection.ts) against the
 * schemas and the codec they stand in for:
 *   - `isRequestEnvelope` accepts exactly what `RequestEnvelopeSchema` accepts (the enclave's side: the parent
 *     is untrusted, so the shortcut may not be looser), over generated envelopes near every rule's edge;
 *   - `isSuccessEnvelope` accepts nothing the schema refuses (what it does not take goes through the schema);
 *   - `jsonFrame` writes the bytes `encodeFrame` writes for the same message, and refuses an oversized one the same way.
 */
import fc from 'fast-check';
import { FrameDecoder, FrameError, encodeFrame } from '../src/framing';
import { jsonFrame } from '../src/rpc/framed-connection';
import { isRequestEnvelope, isSuccessEnvelope, RequestEnvelopeSchema, ResponseEnvelopeSchema } from '../src/rpc/jsonrpc';

/** Values near each rule's edge, and some far from it. */
const anyValue = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.boolean(),
  fc.constantFrom(0, -0, 1, -1, 1.5, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 1, -Number.MAX_SAFE_INTEGER, NaN, Infinity),
  fc.integer(),
  fc.string({ maxLength: 4 }),
  fc.constantFrom('', '2.0', '2', '1.0', 'x'.repeat(128), 'x'.repeat(129), 'keys.sign', 'a:b_c-d.e', 'bad id', 'é'),
  fc.constant([]),
  fc.constant({}),
  fc.constant({ a: 1 }),
  fc.constant([1, 2]),
);
const idLike = fc.oneof(anyValue, fc.string({ minLength: 120, maxLength: 136 }), fc.integer({ min: -5, max: 5 }));
const requestIdLike = fc.oneof(
  anyValue,
  fc.stringMatching(/^[A-Za-z0-9_.:-]{1,130}$/),
  fc.constant('a'.repeat(128)),
  fc.constant('a'.repeat(129)),
);
const methodLike = fc.oneof(anyValue, fc.string({ minLength: 0, maxLength: 3 }), fc.string({ minLength: 126, maxLength: 130 }));
const paramsLike = fc.oneof(anyValue, fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2 }));

/** An envelope with each field present or not, and sometimes a key more (`__proto__` as JSON.parse makes it among them). */
const envelope = fc
  .record(
    {
      jsonrpc: fc.oneof(fc.constant('2.0'), anyValue),
      id: idLike,
      method: methodLike,
      params: paramsLike,
      requestId: requestIdLike,
      extra: fc.constantFrom('extra', '__proto__', 'result', 'error', 'Method'),
    },
    { requiredKeys: [] },
  )
  .map((r) => {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(r)) if (k !== 'extra') out[k] = v;
    if ('extra' in r) Object.defineProperty(out, r.extra as string, { value: 1, enumerable: true, configurable: true, writable: true });
    return out;
  });

describe('isRequestEnvelope', () => {
  it('accepts exactly what RequestEnvelopeSchema accepts', () => {
    fc.assert(
      fc.property(envelope, (msg) => {
        expect(isRequestEnvelope(msg)).toBe(RequestEnvelopeSchema.safeParse(msg).success);
      }),
      { numRuns: 5000 },
    );
  });

  it('the well-formed envelopes the parent sends, and the ones a hostile parent might', () => {
    const ok = { jsonrpc: '2.0', id: 7, method: 'keys.sign', params: { keyId: 'k' }, requestId: 'req-1' };
    const cases: Array<[unknown, boolean]> = [
      [ok, true],
      [{ jsonrpc: '2.0', id: 'x'.repeat(128), method: 'm' }, true],
      [{ ...ok, requestId: undefined }, true],
      [JSON.parse('{"jsonrpc":"2.0","id":1,"method":"m","__proto__":{"x":1}}'), false],
      [{ ...ok, params: [1] }, false],
      [{ ...ok, params: null }, false],
      [{ ...ok, id: 1.5 }, false],
      [{ ...ok, id: null }, false],
      [{ ...ok, id: 'x'.repeat(129) }, false],
      [{ ...ok, method: '' }, false],
      [{ ...ok, requestId: 'has space' }, false],
      [{ ...ok, jsonrpc: '1.0' }, false],
      [{ ...ok, extra: 1 }, false],
      [[ok], false],
      [null, false],
      ['{}', false],
    ];
    for (const [msg, want] of cases) {
      expect([msg, isRequestEnvelope(msg)]).toEqual([msg, want]);
      expect([msg, RequestEnvelopeSchema.safeParse(msg).success]).toEqual([msg, want]);
    }
  });
});

describe('isSuccessEnvelope', () => {
  const response = fc
    .record(
      {
        jsonrpc: fc.oneof(fc.constant('2.0'), anyValue),
        id: idLike,
        result: anyValue,
        error: fc.oneof(anyValue, fc.constant({ code: -32600, message: 'no' })),
        extra: fc.constantFrom('extra', '__proto__', 'method'),
      },
      { requiredKeys: [] },
    )
    .map((r) => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(r)) if (k !== 'extra') out[k] = v;
      if ('extra' in r) Object.defineProperty(out, r.extra as string, { value: 1, enumerable: true, configurable: true, writable: true });
      return out;
    });

  it('accepts only what ResponseEnvelopeSchema accepts as a result answer', () => {
    let accepted = 0;
    fc.assert(
      fc.property(response, (msg) => {
        if (!isSuccessEnvelope(msg)) return;
        accepted += 1;
        const parsed = ResponseEnvelopeSchema.safeParse(msg);
        expect(parsed.success).toBe(true);
        expect(parsed.success && 'result' in parsed.data).toBe(true);
      }),
      { numRuns: 5000 },
    );
    expect(accepted).toBeGreaterThan(0);
  });

  it('an answer of the parent’s own shape is taken; an error answer or an extra key is left to the schema', () => {
    expect(isSuccessEnvelope({ jsonrpc: '2.0', id: 3, result: { signature: '0x' } })).toBe(true);
    expect(isSuccessEnvelope({ jsonrpc: '2.0', id: 3, error: { code: 1, message: 'no' } })).toBe(false);
    expect(isSuccessEnvelope({ jsonrpc: '2.0', id: 3, result: 1, error: null })).toBe(false);
    expect(isSuccessEnvelope(JSON.parse('{"jsonrpc":"2.0","id":3,"__proto__":1}'))).toBe(false);
  });
});

describe('jsonFrame', () => {
  it('writes the bytes encodeFrame writes for the same JSON, and they decode to the same message', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.string({ unit: 'grapheme' }), (value, text) => {
        const msg = { jsonrpc: '2.0', id: 1, result: { value, text } };
        const frame = jsonFrame(msg);
        expect(frame.equals(encodeFrame(Buffer.from(JSON.stringify(msg), 'utf8')))).toBe(true);
        const [payload] = new FrameDecoder().push(frame);
        expect(JSON.parse((payload as Buffer).toString('utf8'))).toEqual(JSON.parse(JSON.stringify(msg)));
      }),
      { numRuns: 500 },
    );
  });

  it('refuses a message over the limit as encodeFrame does (counted in UTF-8 bytes, not characters)', () => {
    const msg = { t: 'é'.repeat(50) }; // 50 characters, 100 bytes of UTF-8
    const bytes = Buffer.byteLength(JSON.stringify(msg));
    expect(jsonFrame(msg, bytes).length).toBe(bytes + 8);
    const err = (() => {
      try {
        jsonFrame(msg, bytes - 1);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(FrameError);
    expect((err as FrameError).code).toBe('FRAME_TOO_LARGE');
  });
});
