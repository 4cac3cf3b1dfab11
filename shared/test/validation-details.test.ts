/**
 * Errors that say what to fix (shared/src/schema.ts `issuesOf`, `describeIssues`; the typed-data checks of
 * shared/src/signing/typed-data-budget.ts): each bad input's message names its first problem, and its issues give
 * the path, what was expected and what was received (a type and size, never the value).
 */
import { hashTypedData, type TypedDataDefinition } from 'viem';
import { z } from 'zod';
import { KeystoreError, toRpcError } from '../src/errors';
import { describeIssues, issuesOf, MAX_ISSUES, parseOrThrow, receivedOf } from '../src/schema';
import { SignRequestSchema } from '../src/signing/schema';
import { checkTypedDataBudget } from '../src/signing/typed-data-budget';
import { fieldsOf } from '../src/http/validation';
import * as payloads from './typed-data-payloads';

/** The sign-request schema's verdict as the caller API phrases it: the message and the issues. */
function refusal(request: unknown): { message: string; details: ReturnType<typeof issuesOf> } {
  const res = SignRequestSchema.safeParse(request);
  if (res.success) throw new Error('expected a refusal');
  return { message: describeIssues(res.error, 'body', request), details: issuesOf(res.error, request, 'body') };
}

const ALICE = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
const BOB = '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC';

/** EIP-712's own example (Mail), with every kind of field a message can carry. */
function mail(message: Record<string, unknown>, extraTypes: Record<string, Array<{ name: string; type: string }>> = {}) {
  return {
    type: 'typedData',
    typedData: {
      domain: { name: 'Ether Mail', version: '1', chainId: 1, verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC' },
      types: {
        Person: [
          { name: 'name', type: 'string' },
          { name: 'wallet', type: 'address' },
        ],
        Mail: [
          { name: 'from', type: 'Person' },
          { name: 'to', type: 'Person[]' },
          { name: 'contents', type: 'string' },
          { name: 'amount', type: 'uint8' },
          { name: 'delta', type: 'int16' },
          { name: 'salt', type: 'bytes4' },
          { name: 'data', type: 'bytes' },
          { name: 'urgent', type: 'bool' },
          { name: 'pair', type: 'uint256[2]' },
        ],
        ...extraTypes,
      },
      primaryType: 'Mail',
      message,
    },
  };
}

const goodMail = (): Record<string, unknown> => ({
  from: { name: 'Cow', wallet: ALICE },
  to: [{ name: 'Bob', wallet: BOB }],
  contents: 'Hello, Bob!',
  amount: '255',
  delta: -32768,
  salt: '0xdeadbeef',
  data: '0x',
  urgent: true,
  pair: ['0x01', 2],
});

describe('a missing field is named as required', () => {
  it('names the field, not zod words, and says what it should be', () => {
    expect(refusal({ type: 'message' })).toEqual({
      message: 'body.message is required',
      details: [{ path: 'body.message', expected: 'string or object', received: 'missing' }],
    });
    expect(refusal({})).toEqual({
      message: 'body.type is required',
      details: [
        {
          path: 'body.type',
          expected: 'one of "digest", "message", "typedData", "transaction", "authorization", "userOperation"',
          received: 'missing',
        },
      ],
    });
    expect(
      refusal({ type: 'transaction', transaction: { type: 'eip1559', nonce: 0, maxFeePerGas: '1', maxPriorityFeePerGas: '1' } }),
    ).toEqual({
      message: 'body.transaction.chainId is required',
      details: [{ path: 'body.transaction.chainId', expected: 'string or number', received: 'missing' }],
    });
  });

  it('without the input (a caller that has none to give), says what zod says, as before', () => {
    const res = SignRequestSchema.safeParse({ type: 'message' });
    expect(res.success || describeIssues(res.error, 'body')).toBe('body.message: expected string or object');
  });
});

describe('details: path, expected, received for every problem', () => {
  it('names each wrong field, an unknown one as its own problem, in order', () => {
    const bad = {
      type: 'transaction',
      transaction: { type: 'eip1559', chainId: 1, nonce: 0, gas: 'abc', maxFeePerGas: '1', maxPriorityFeePerGas: true, tip: 5, memo: 'x' },
    };
    const { message, details } = refusal(bad);
    expect(message).toBe(
      'body.transaction.gas: expected a uint64 as a decimal string or 0x hex; body.transaction.maxPriorityFeePerGas: expected string or number; body.transaction: unknown field(s) "tip", "memo"',
    );
    expect(details).toEqual([
      { path: 'body.transaction.gas', expected: 'a uint64 as a decimal string or 0x hex', received: 'string (3 characters)' },
      { path: 'body.transaction.maxPriorityFeePerGas', expected: 'string or number', received: 'boolean' },
      { path: 'body.transaction.tip', expected: 'no such field', received: 'number' },
      { path: 'body.transaction.memo', expected: 'no such field', received: 'string (1 characters)' },
    ]);
  });

  it('paths index arrays and name wrong literals by the values allowed', () => {
    const { details } = refusal({
      type: 'transaction',
      transaction: {
        type: 'eip1559',
        chainId: 1,
        nonce: 0,
        maxFeePerGas: '1',
        maxPriorityFeePerGas: '1',
        accessList: [{ address: 'x', storageKeys: [] }],
      },
    });
    expect(details).toEqual([
      { path: 'body.transaction.accessList[0].address', expected: 'a 20-byte 0x-prefixed address', received: 'string (1 characters)' },
    ]);
    expect(refusal({ type: 'userOperation', version: '0.9' }).details).toEqual([
      { path: 'body.version', expected: 'one of "0.6", "0.7", "0.8"', received: 'string (3 characters)' },
    ]);
  });

  it('never echoes a value: a secret sent in the wrong place appears in neither message nor details', () => {
    const secret = '0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318';
    const huge = 'y'.repeat(200_000);
    const { message, details } = refusal({ type: 'digest', digest: `${secret}00`, privateKey: secret, note: huge });
    const text = `${message}${JSON.stringify(details)}`;
    expect(text).not.toContain(secret.slice(2, 20));
    expect(text).not.toContain('yyyy');
    expect(details).toEqual([
      { path: 'body.digest', expected: '32 bytes as 0x-prefixed hex', received: 'string (68 characters)' },
      { path: 'body.privateKey', expected: 'no such field', received: 'string (66 characters)' },
      { path: 'body.note', expected: 'no such field', received: 'string (200000 characters)' },
    ]);
  });

  it('names at most 5 unknown fields in the message, then how many more', () => {
    const body: Record<string, unknown> = { type: 'message', message: 'm' };
    for (let i = 0; i < 15_000; i++) body[`k${i}`] = 0;
    const { message, details } = refusal(body);
    expect(message).toBe('body: unknown field(s) "k0", "k1", "k2", "k3", "k4", and 14995 more');
    expect(details).toHaveLength(MAX_ISSUES);
  });

  it('is bounded: at most MAX_ISSUES problems, long field names clipped', () => {
    const many = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`${'f'.repeat(300)}${i}`, i]));
    const details = refusal({ type: 'digest', digest: `0x${'00'.repeat(32)}`, ...many }).details;
    expect(details).toHaveLength(MAX_ISSUES);
    for (const d of details) expect(d.path.length).toBeLessThanOrEqual(256);
    expect(details[0]?.path).toBe(`body.${'f'.repeat(64)}…`);
  });

  it('parseOrThrow (the enclave and every RPC boundary) carries the issues; they do not cross the RPC', () => {
    const err = (() => {
      try {
        parseOrThrow(z.strictObject({ keyId: z.string(), n: z.number() }), { n: 'one' });
      } catch (e) {
        return e as KeystoreError;
      }
      throw new Error('expected a refusal');
    })();
    expect([err.code, err.message]).toEqual([
      'INVALID_PARAMS',
      'params.keyId is required; params.n: Invalid input: expected number, received string',
    ]);
    expect(err.issues).toEqual([
      { path: 'params.keyId', expected: 'string', received: 'missing' },
      { path: 'params.n', expected: 'number', received: 'string (3 characters)' },
    ]);
    expect(JSON.stringify(toRpcError(err))).not.toContain('received":');
  });

  it('says what each kind of value is', () => {
    expect([
      receivedOf(false, undefined),
      receivedOf(true, null),
      receivedOf(true, [1, 2]),
      receivedOf(true, {}),
      receivedOf(true, 'abc'),
      receivedOf(true, 1.5),
      receivedOf(true, false),
    ]).toEqual(['missing', 'null', 'array (2 items)', 'object', 'string (3 characters)', 'number', 'boolean']);
  });
});

describe('a typed-data message is checked against its types', () => {
  it('accepts a message that matches (and viem hashes it)', () => {
    const request = mail(goodMail());
    const res = SignRequestSchema.safeParse(request);
    expect(res.success).toBe(true);
    expect(hashTypedData(request.typedData as unknown as TypedDataDefinition)).toMatch(/^0x[0-9a-f]{64}$/);
  });

  it('refuses a field the type does not have, naming it (viem would leave it out of the hash)', () => {
    const extra = { ...goodMail(), cc: BOB };
    // What the refusal prevents: viem hashes the message without the extra field, as if it were not there.
    expect(hashTypedData(mail(extra).typedData as unknown as TypedDataDefinition)).toBe(
      hashTypedData(mail(goodMail()).typedData as unknown as TypedDataDefinition),
    );
    expect(refusal(mail(extra))).toEqual({
      message:
        'body.typedData.message.cc: unknown field: "Mail" has no field "cc" (its fields: "from", "to", "contents", "amount", … (9 fields))',
      details: [
        {
          path: 'body.typedData.message.cc',
          expected: 'no such field ("Mail" has: "from", "to", "contents", "amount", … (9 fields))',
          received: 'string (42 characters)',
        },
      ],
    });
    // In a nested struct, and in a struct inside an array.
    expect(refusal(mail({ ...goodMail(), from: { name: 'Cow', wallet: ALICE, age: 3 } })).message).toBe(
      'body.typedData.message.from.age: unknown field: "Person" has no field "age" (its fields: "name", "wallet")',
    );
    expect(
      refusal(
        mail({
          ...goodMail(),
          to: [
            { name: 'Bob', wallet: BOB },
            { name: 'Eve', wallet: BOB, admin: true },
          ],
        }),
      ).details,
    ).toEqual([
      { path: 'body.typedData.message.to[1].admin', expected: 'no such field ("Person" has: "name", "wallet")', received: 'boolean' },
    ]);
  });

  it('names an unknown field of any length in at most 64 characters', () => {
    const long = 'z'.repeat(10_000);
    const { message, details } = refusal(mail({ ...goodMail(), [long]: 1 }));
    expect(message).toBe(
      `body.typedData.message.${'z'.repeat(64)}…: unknown field: "Mail" has no field "${'z'.repeat(64)}…" (its fields: "from", "to", "contents", "amount", … (9 fields))`,
    );
    expect(details[0]?.path).toBe(`body.typedData.message.${'z'.repeat(64)}…`);
  });

  it('names a missing field, anywhere', () => {
    const { contents: _gone, ...noContents } = goodMail();
    expect(refusal(mail(noContents))).toEqual({
      message: 'body.typedData.message.contents is required ("string", a field of "Mail")',
      details: [{ path: 'body.typedData.message.contents', expected: '"string", a field of "Mail"', received: 'missing' }],
    });
    expect(refusal(mail({ ...goodMail(), to: [{ name: 'Bob' }] })).message).toBe(
      'body.typedData.message.to[0].wallet is required ("address", a field of "Person")',
    );
  });

  const wrong: Array<[string, Record<string, unknown>, string, string, string]> = [
    [
      'an address that is not one',
      { from: { name: 'Cow', wallet: '0x1234' } },
      'from.wallet',
      'address: 20 bytes as 0x-prefixed hex',
      'string (6 characters)',
    ],
    ['an address as a number', { from: { name: 'Cow', wallet: 1 } }, 'from.wallet', 'address: 20 bytes as 0x-prefixed hex', 'number'],
    [
      'a uint8 of 256',
      { amount: 256 },
      'amount',
      'uint8: an integer from 0 to 2^8-1, as a decimal string, 0x hex or a safe JSON integer',
      'number',
    ],
    [
      'a negative uint8',
      { amount: '-1' },
      'amount',
      'uint8: an integer from 0 to 2^8-1, as a decimal string, 0x hex or a safe JSON integer',
      'string (2 characters)',
    ],
    [
      'a uint8 as a fraction',
      { amount: 1.5 },
      'amount',
      'uint8: an integer from 0 to 2^8-1, as a decimal string, 0x hex or a safe JSON integer',
      'number',
    ],
    [
      'a uint8 that is not a number',
      { amount: 'ten' },
      'amount',
      'uint8: an integer from 0 to 2^8-1, as a decimal string, 0x hex or a safe JSON integer',
      'string (3 characters)',
    ],
    [
      'an int16 below its range',
      { delta: -32769 },
      'delta',
      'int16: an integer from -2^15 to 2^15-1, as a decimal string, 0x hex or a safe JSON integer',
      'number',
    ],
    [
      'a bytes4 of 5 bytes',
      { salt: '0xdeadbeef00' },
      'salt',
      'bytes4: exactly 4 bytes as 0x-prefixed hex (8 hex digits)',
      'string (12 characters)',
    ],
    [
      'a bytes4 of 3 bytes',
      { salt: '0xdeadbe' },
      'salt',
      'bytes4: exactly 4 bytes as 0x-prefixed hex (8 hex digits)',
      'string (8 characters)',
    ],
    ['bytes of odd length', { data: '0xabc' }, 'data', 'bytes: 0x-prefixed hex bytes', 'string (5 characters)'],
    ['a bool as a string', { urgent: 'true' }, 'urgent', 'bool: true or false', 'string (4 characters)'],
    ['a string as a number', { contents: 42 }, 'contents', 'string: a JSON string', 'number'],
    ['a uint256[2] of 3', { pair: [1, 2, 3] }, 'pair', 'array of 2 items ("uint256[2]")', 'array (3 items)'],
    [
      'an array element out of range',
      { pair: [1, `0x1${'0'.repeat(64)}`] },
      'pair[1]',
      'uint256: an integer from 0 to 2^256-1, as a decimal string, 0x hex or a safe JSON integer',
      'string (67 characters)',
    ],
    ['a struct array as an object', { to: { name: 'Bob', wallet: BOB } }, 'to', 'array ("Person[]")', 'object'],
    ['a struct as an array', { from: [] }, 'from', 'object (struct "Person")', 'array (0 items)'],
  ];
  it.each(wrong)('refuses %s, naming the field and its type', (_name, change, path, expected, received) => {
    const { message, details } = refusal(mail({ ...goodMail(), ...change }));
    expect(details).toEqual([{ path: `body.typedData.message.${path}`, expected, received }]);
    expect(message.startsWith(`body.typedData.message.${path}: expected `)).toBe(true);
  });

  it('accepts every integer form the encoder takes, at the edges of the range', () => {
    for (const amount of [0, 255, '255', '0xff', '0x0', '007'])
      expect([amount, SignRequestSchema.safeParse(mail({ ...goodMail(), amount })).success]).toEqual([amount, true]);
    for (const delta of ['-32768', 32767, '0x7fff'])
      expect([delta, SignRequestSchema.safeParse(mail({ ...goodMail(), delta })).success]).toEqual([delta, true]);
    // An unsafe JSON number is not the integer the caller wrote: a decimal string is.
    expect(refusal(mail({ ...goodMail(), pair: [2 ** 60, 1] })).details[0]?.path).toBe('body.typedData.message.pair[0]');
  });

  it('refuses types that name no type, and a primary type that is not defined', () => {
    expect(refusal(mail(goodMail(), { Extra: [{ name: 'n', type: 'uint7' }] })).details).toEqual([
      {
        path: 'body.typedData.types.Extra[0].type',
        expected: 'a struct defined in types or an EIP-712 type',
        received: 'string (5 characters)',
      },
    ]);
    expect(refusal(mail(goodMail(), { Extra: [{ name: 'p', type: 'Persn[]' }] })).message).toMatch(
      /^body\.typedData\.types\.Extra\[0\]\.type: type "Persn\[\]" is neither a struct defined in types nor an EIP-712 type/,
    );
    expect(refusal(mail(goodMail(), { Extra: [{ name: 'n', type: 'uint' }] })).details[0]?.path).toBe('body.typedData.types.Extra[0].type');
    expect(
      refusal(
        mail(goodMail(), {
          Twice: [
            { name: 'a', type: 'bool' },
            { name: 'a', type: 'string' },
          ],
        }),
      ).message,
    ).toBe('body.typedData.types.Twice[1].name: type "Twice" names its field "a" twice');
    const request = mail(goodMail());
    const noPrimary = { ...request, typedData: { ...request.typedData, primaryType: 'Letter' } };
    expect(refusal(noPrimary).details).toEqual([
      { path: 'body.typedData.primaryType', expected: 'one of the types defined in types', received: 'string (6 characters)' },
    ]);
  });

  it('quotes every caller-chosen name escaped and cut to 64 code points: no control, bidi or half-surrogate characters', () => {
    const evil = `A\r\n2026-12-03 level=info msg="ok"\u001b[2J\u0085\u202e${'x'.repeat(180)}`;
    const request = mail(goodMail());
    const text = refusal({ ...request, typedData: { ...request.typedData, primaryType: evil } }).message;
    expect(text).toBe(
      `body.typedData.primaryType: "A\\r\\n2026-12-03 level=info msg=\\"ok\\"\\u001b[2J\\u0085\\u202e${'x'.repeat(25)}…" is not a type defined in types`,
    );
    // A long type with long field names: each name cut, the list cut at 4 names.
    const T = `T${'t'.repeat(255)}`;
    const fields = Array.from({ length: 8 }, (_, i) => ({ name: `f${i}${'n'.repeat(254)}`, type: 'string' }));
    const message = Object.fromEntries([...fields.map((f) => [f.name, 'v']), ['extra', 'v']]);
    const long = refusal({ type: 'typedData', typedData: { types: { [T]: fields }, primaryType: T, message } });
    expect(long.message.length).toBeLessThanOrEqual(512);
    expect(long.message).toContain(`(its fields: "f0${'n'.repeat(62)}…", "f1`);
    expect(long.message).toContain(`, … (8 fields))`);
    // An emoji across the cut (UTF-16 units 63-64) is kept whole or left out, never halved.
    const key = `${'a'.repeat(63)}\u{1F600}tail`;
    const cut = refusal(mail({ ...goodMail(), [key]: 1 }));
    expect(cut.message).toContain(`has no field "${'a'.repeat(63)}\u{1F600}…"`);
    expect(cut.details[0]?.path).toBe(`body.typedData.message.${'a'.repeat(63)}\u{1F600}…`);
    const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
    const halves = refusal(mail({ ...goodMail(), [`${'a'.repeat(62)}\u{1F600}tail`]: 1 }));
    expect(halves.message).not.toMatch(LONE_SURROGATE);
    expect(halves.details[0]?.path).not.toMatch(LONE_SURROGATE);
    // A field path step is escaped the same way.
    expect(refusal(mail({ ...goodMail(), 'x\ny': 1 })).details[0]?.path).toBe('body.typedData.message.x\\ny');
  });

  it("still passes real protocols' payloads, and the budget still names its limit first for the attack shapes", () => {
    for (const td of [
      payloads.seaportOrder(30, 30),
      payloads.permit2Batch(20),
      payloads.uniswapXV2DutchOrder(3),
      payloads.safeTransaction(10),
    ])
      expect(SignRequestSchema.safeParse({ type: 'typedData', typedData: td }).success).toBe(true);
    const verdict = checkTypedDataBudget(payloads.hugeArray(100_000));
    expect(verdict.ok || verdict.limit).toBe('maxArrayLength');
  });
});

describe('the TrueWallet routes’ field errors (fieldsOf) quote what the caller named', () => {
  it('names at most 5 nested unknown fields, quoted and cut at code points, and top-level ones as inert keys', () => {
    const nested = z.strictObject({ inner: z.strictObject({ a: z.string() }) });
    const many = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`k${i}\u202e\n`, 1]));
    const res = nested.safeParse({ inner: { a: 'x', ...many } });
    const reason = fieldsOf((res as { error: z.ZodError }).error).inner?.[0] ?? '';
    expect(reason).toContain('unknown field(s) "k0\\u202e\\n", "k1\\u202e\\n"');
    expect(reason).toContain('and 195 more');
    expect(reason).not.toMatch(/[\n\u202e]/);
    const top = z.strictObject({ a: z.string() }).safeParse({ a: 'x', [`${'x'.repeat(63)}😀😀`]: 1, 'b\u202e': 2 });
    const names = Object.keys(fieldsOf((top as { error: z.ZodError }).error));
    expect(names).toEqual([`${'x'.repeat(63)}😀…`, 'b\\u202e']);
  });
});
