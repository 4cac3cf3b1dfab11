/**
 * The token logic in-process (issue 22 items 16, 18, 19): the token schema, TokenAuth (expiry, binding, limits,
 * replacing the set) and the SIGHUP reload (token-reload.ts) against files on disk. tokens.test.ts runs the same
 * through the real parent process.
 */
import fs from 'node:fs';
import path from 'node:path';
import { captureLogger, tempRunDir } from '@nks/shared-test/helpers';
import { KeystoreError } from '@nks/shared/errors';
import { hashToken, TokenAuth } from '../src/api/auth';
import { changedSections, reloadTokens } from '../src/api/token-reload';
import { parseParentConfig } from '../src/config';

const base = {
  api: { listen: { port: 7070 } },
  tokens: [{ name: 'a', sha256: hashToken('secret-a'), scopes: ['admin'] }],
  database: { path: '/tmp/x.db' },
  kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
};
const fail = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    return (err as Error).message;
  }
  return 'no error';
};
const bearer = (t: string) => `Bearer ${t}`;
const refusal = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    return [(err as KeystoreError).code, (err as KeystoreError).message];
  }
  return undefined;
};

describe('token configuration', () => {
  const withTokens =
    (tokens: unknown[], extra: Record<string, unknown> = {}) =>
    () =>
      parseParentConfig({ ...base, tokens, ...extra });
  const t = (name: string, extra: Record<string, unknown> = {}) => ({ name, sha256: hashToken(name), scopes: ['keys:sign'], ...extra });

  it('reads projects, expiresAt, rateLimit and tokenDefaults', () => {
    const c = parseParentConfig({
      ...base,
      tokens: [
        t('b', {
          projects: ['default', `p_${'a'.repeat(22)}`],
          expiresAt: '2030-01-01T00:00:00+02:00',
          rateLimit: { max: 5, windowMs: 1000 },
        }),
      ],
      tokenDefaults: { rateLimit: { max: 100, windowMs: 60_000 } },
    });
    expect(c.tokens[0]).toMatchObject({
      projects: ['default', `p_${'a'.repeat(22)}`],
      expiresAt: '2030-01-01T00:00:00+02:00',
      rateLimit: { max: 5, windowMs: 1000 },
    });
    expect(parseParentConfig(base).tokenDefaults).toEqual({});
  });

  it('refuses bad token settings, naming the field', () => {
    expect(fail(withTokens([t('b', { projects: ['nope'] })]))).toMatch(/config\.tokens\[0\]\.projects\[0\]: expected "default" or p_/);
    expect(fail(withTokens([t('b', { projects: [] })]))).toMatch(/config\.tokens\[0\]\.projects/);
    expect(fail(withTokens([t('b', { projects: ['default', 'default'] })]))).toMatch(/expected distinct project ids/);
    expect(fail(withTokens([{ ...t('b', { projects: ['default'] }), scopes: ['admin'] }]))).toMatch(
      /config\.tokens\[0\]\.projects: an admin token cannot be bound to projects/,
    );
    expect(fail(withTokens([t('b', { expiresAt: '2030-01-01' })]))).toMatch(
      /config\.tokens\[0\]\.expiresAt: expected an ISO 8601 date and time/,
    );
    expect(fail(withTokens([t('b', { expiresAt: '2030-01-01T00:00:00' })]))).toMatch(/expiresAt/);
    expect(fail(withTokens([t('b', { rateLimit: { max: 0, windowMs: 1000 } })]))).toMatch(/config\.tokens\[0\]\.rateLimit\.max/);
    expect(fail(withTokens([t('b', { rateLimit: { max: 1, windowMs: 10 } })]))).toMatch(/config\.tokens\[0\]\.rateLimit\.windowMs/);
    expect(fail(withTokens([t('b')], { tokenDefaults: { rateLimit: { max: 1 } } }))).toMatch(/config\.tokenDefaults\.rateLimit\.windowMs/);
    expect(fail(withTokens([t('b'), t('c'), t('b')]))).toMatch(/token names must be unique \("b" is given more than once\)/);
    expect(fail(withTokens([t('b'), { ...t('c'), sha256: hashToken('b') }]))).toMatch(/token "c" has the sha256 of an earlier token/);
  });
});

describe('TokenAuth', () => {
  const specs = [
    { name: 'open', sha256: hashToken('open'), scopes: ['keys:sign' as const] },
    {
      name: 'bound',
      sha256: hashToken('bound'),
      scopes: ['keys:sign' as const],
      projects: ['default'],
      rateLimit: { max: 2, windowMs: 1000 },
    },
    { name: 'old', sha256: hashToken('old'), scopes: ['keys:read' as const], expiresAt: '2026-01-01T00:00:00Z' },
  ];

  it('binds, limits (its own limit, else the default) and expires', () => {
    const auth = new TokenAuth(specs, { rateLimit: { max: 9, windowMs: 5000 } });
    const open = auth.authenticate(bearer('open'));
    expect([open.name, open.projects, open.rateLimit]).toEqual(['open', null, { max: 9, windowMs: 5000 }]);
    const bound = auth.authenticate(bearer('bound'));
    expect([bound.projects, bound.rateLimit]).toEqual([new Set(['default']), { max: 2, windowMs: 1000 }]);
    expect(new TokenAuth(specs).authenticate(bearer('open')).rateLimit).toBeNull();
    expect([TokenAuth.reaches(bound, 'default'), TokenAuth.reaches(bound, null), TokenAuth.reaches(bound, `p_${'a'.repeat(22)}`)]).toEqual([
      true,
      true,
      false,
    ]);
    expect(TokenAuth.reaches(open, `p_${'a'.repeat(22)}`)).toBe(true);
    const expiry = Date.parse('2026-01-01T00:00:00Z');
    expect(auth.authenticate(bearer('old'), expiry - 1).name).toBe('old');
    expect(refusal(() => auth.authenticate(bearer('old'), expiry))).toEqual([
      'UNAUTHORIZED',
      'the bearer token expired at 2026-01-01T00:00:00.000Z',
    ]);
    expect(refusal(() => auth.authenticate(bearer('nobody'), expiry))).toEqual(['UNAUTHORIZED', 'unknown bearer token']);
    expect(auth.expired(expiry)).toEqual(['old']);
    expect(auth.expired(expiry - 1)).toEqual([]);
  });

  it('replaces the whole set at once', () => {
    const auth = new TokenAuth(specs);
    const before = auth.authenticate(bearer('open'));
    auth.replace([{ name: 'new', sha256: hashToken('new'), scopes: ['admin'] }]);
    expect(auth.authenticate(bearer('new')).name).toBe('new');
    expect(refusal(() => auth.authenticate(bearer('open')))).toEqual(['UNAUTHORIZED', 'unknown bearer token']);
    // A principal already handed out is not changed by a reload.
    expect([before.name, [...before.scopes]]).toEqual(['open', ['keys:sign']]);
  });
});

describe('reloadTokens', () => {
  let dir: string;
  let file: string;
  const write = (value: unknown) => fs.writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  beforeEach(() => {
    dir = tempRunDir('nks-reload-');
    file = path.join(dir, 'parent.json');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const setup = () => {
    const running = parseParentConfig(base);
    const auth = new TokenAuth(running.tokens, running.tokenDefaults);
    const log = captureLogger();
    const reload = (env: NodeJS.ProcessEnv = {}) => reloadTokens({ file, env, running, auth, logger: log.logger });
    return { running, auth, log, reload };
  };

  it('replaces the tokens and the defaults, and names the other sections that changed (not applied)', () => {
    const { auth, log, reload } = setup();
    write({
      ...base,
      tokens: [
        { name: 'b', sha256: hashToken('secret-b'), scopes: ['keys:read'], expiresAt: '2020-01-01T00:00:00Z' },
        { name: 'c', sha256: hashToken('secret-c'), scopes: ['keys:read'] },
      ],
      tokenDefaults: { rateLimit: { max: 3, windowMs: 2000 } },
      logLevel: 'warn',
      api: { listen: { port: 7071 } },
    });
    expect(reload()).toEqual({ ok: true, tokens: ['b', 'c'], expired: ['b'], ignored: ['api', 'logLevel'] });
    expect(auth.authenticate(bearer('secret-c')).rateLimit).toEqual({ max: 3, windowMs: 2000 });
    expect(refusal(() => auth.authenticate(bearer('secret-a')))).toEqual(['UNAUTHORIZED', 'unknown bearer token']);
    const lines = log.lines();
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [40, 'configuration changes outside tokens and tokenDefaults are ignored until the parent restarts'],
      [30, 'tokens reloaded'],
    ]);
    expect(lines[1]).toMatchObject({ tokens: ['b', 'c'], expired: ['b'] });
    expect(log.text()).not.toMatch(/[0-9a-f]{64}/);
  });

  it('applies the environment overrides as at start: an override is not a change', () => {
    const running = parseParentConfig(base, { NKS_API_PORT: '9000' });
    write(base);
    expect(changedSections(running, parseParentConfig(base, { NKS_API_PORT: '9000' }))).toEqual([]);
    expect(changedSections(running, parseParentConfig(base))).toEqual(['api']);
    const auth = new TokenAuth(running.tokens);
    expect(reloadTokens({ file, env: { NKS_API_PORT: '9000' }, running, auth, logger: captureLogger().logger })).toMatchObject({
      ignored: [],
    });
  });

  it.each([
    ['unreadable', null, /cannot read configuration .*ENOENT/],
    ['not JSON', '{"tokens": [', /is not valid JSON/],
    ['not an object', '[]', /not a JSON object/],
    ['a schema error', { ...base, tokens: [{ name: 'b', sha256: 'nothex', scopes: ['admin'] }] }, /config\.tokens\[0\]\.sha256/],
    ['no tokens', { ...base, tokens: [] }, /config\.tokens/],
    [
      'duplicate names',
      { ...base, tokens: [base.tokens[0], { ...base.tokens[0], sha256: hashToken('other') }] },
      /token names must be unique/,
    ],
    ['another section invalid', { ...base, database: {} }, /config\.database/],
  ])('keeps the tokens in use when the file is %s, and logs why at error level', (_what, content, reason) => {
    const { auth, log, reload } = setup();
    if (content !== null) write(content);
    const outcome = reload();
    expect(outcome).toEqual({ ok: false, reason: expect.stringMatching(reason) });
    expect(auth.authenticate(bearer('secret-a')).name).toBe('a');
    const lines = log.lines();
    expect(lines.map((l) => [l.level, l.msg, l.reason])).toEqual([
      [50, 'tokens not reloaded: the configuration is invalid; the tokens in use are kept', expect.stringMatching(reason)],
    ]);
    expect(log.text()).not.toMatch(/[0-9a-f]{64}/);
  });
});
