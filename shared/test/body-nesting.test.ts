/**
 * Deep nesting (review of issue 22, item 20): a token holder's 256 KiB body nested 120,000 levels deep held the
 * parent's event loop for hundreds of ms (JSON.parse, then the `__proto__` walk), for every caller. A body nested
 * deeper than MAX_BODY_DEPTH is refused before it is parsed (shared/src/http/body.ts).
 */
import { Readable } from 'node:stream';
import { KeystoreError } from '@nks/shared/errors';
import { MAX_BODY_DEPTH, nestingDepth, readJsonBody } from '@nks/shared/http/body';

const read = (text: string) => {
  const body = Buffer.from(text);
  return readJsonBody(Readable.from([body]), { 'content-type': 'application/json', 'content-length': String(body.length) }, 262_144);
};

const outcome = (text: string) =>
  read(text).then(
    () => 'accepted',
    (err: unknown) => (err instanceof KeystoreError ? `${err.code}: ${err.message}` : String(err)),
  );
const nested = (n: number) => `["\\u0061",${'['.repeat(n - 1)}${']'.repeat(n - 1)}]`;

it('a body nested 120,000 levels deep (one \\u escape) is refused before it is parsed or walked', async () => {
  expect(await outcome(nested(120_000))).toBe(`INVALID_REQUEST: request body is nested more than ${MAX_BODY_DEPTH} levels deep`);
});

it('takes a body nested exactly MAX_BODY_DEPTH levels, and counts brackets inside strings as text', async () => {
  expect(await outcome(nested(MAX_BODY_DEPTH))).toBe('accepted');
  expect(await outcome(nested(MAX_BODY_DEPTH + 1))).toMatch(/^INVALID_REQUEST: request body is nested/);
  // Brackets and escaped quotes inside strings are not nesting.
  expect(await outcome(JSON.stringify({ a: '['.repeat(1000) + '\\"{'.repeat(500) }))).toBe('accepted');
  expect(nestingDepth(Buffer.from('{"a":[{"b":"]]]}}"}],"c":{}}'))).toBe(3);
  expect(nestingDepth(Buffer.from('"\\\\"[['))).toBe(2);
});
