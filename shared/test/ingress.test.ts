/** The ingress preamble (shared/src/ingress.ts) and the one-frame JSON reading it shares with the egress relay. */
import { encodeIngressPreamble, INGRESS_PREAMBLE_MAX_BYTES, parseIngressPreamble } from '../src/ingress';
import { jsonFrameObject } from '../src/json-frame';

const bytes = (s: string) => Buffer.from(s, 'utf8');

describe('the ingress preamble', () => {
  it('round-trips an IPv4, an IPv6 address or "unknown"', () => {
    for (const client of ['203.0.113.7', '2001:db8::1', 'unknown']) {
      expect(parseIngressPreamble(encodeIngressPreamble({ client }))).toEqual({ client });
    }
  });

  it('refuses anything else: not an address, other keys, not an object, not JSON, too long', () => {
    for (const bad of [
      '{"client":"example.com"}',
      '{"client":""}',
      '{"client":7}',
      '{"client":"1.2.3.4","port":1}',
      '{}',
      '["1.2.3.4"]',
      'null',
      '"1.2.3.4"',
      '{"client":"1.2.3.4"',
      `{"client":"unknown","pad":"${'x'.repeat(INGRESS_PREAMBLE_MAX_BYTES)}"}`,
    ]) {
      expect([bad, parseIngressPreamble(bytes(bad))]).toEqual([bad, null]);
    }
    expect(parseIngressPreamble(Buffer.from([0xff, 0xfe]))).toBeNull();
  });

  it('jsonFrameObject: exactly the keys asked for, within the size', () => {
    expect(jsonFrameObject(bytes('{"a":1,"b":2}'), 64, ['a', 'b'])).toEqual({ a: 1, b: 2 });
    expect(jsonFrameObject(bytes('{"b":2,"a":1}'), 64, ['a', 'b'])).toEqual({ a: 1, b: 2 });
    expect(jsonFrameObject(bytes('{"a":1}'), 64, ['a', 'b'])).toBeNull();
    expect(jsonFrameObject(bytes('{"a":1,"c":2}'), 64, ['a', 'b'])).toBeNull();
    expect(jsonFrameObject(bytes('{"a":1,"b":2}'), 12, ['a', 'b'])).toBeNull();
    expect(jsonFrameObject(bytes('{"a":1,"b":2}'), 13, ['a', 'b'])).toEqual({ a: 1, b: 2 });
  });
});
