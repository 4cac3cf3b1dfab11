/**
 * The settings issue 22 added to the parent's configuration (drain, overload, enclave liveness, per-token limits,
 * expiry and binding): a value out of range is refused at start with the setting's path and what it expects.
 */
import { hashToken } from '../src/api/auth';
import { parseParentConfig } from '../src/config';

const token = { name: 'caller', sha256: hashToken('nks_test_caller'), scopes: ['keys:sign'] };
const base = {
  api: { listen: { host: '127.0.0.1', port: 0 } },
  tokens: [token],
  database: { path: '/nonexistent/keys.db' },
  kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
};

describe('parent configuration: the reliability and token settings refuse bad values, naming them', () => {
  it.each([
    ['api.preDrainMs', { api: { ...base.api, preDrainMs: -1 } }, /config\.api\.preDrainMs: .*>=0/],
    ['api.headersTimeoutMs', { api: { ...base.api, headersTimeoutMs: 0 } }, /config\.api\.headersTimeoutMs: .*>=1000/],
    ['api.maxConnections', { api: { ...base.api, maxConnections: 0 } }, /config\.api\.maxConnections: .*>=1/],
    ['enclave.maxQueued', { enclave: { maxQueued: 0 } }, /config\.enclave\.maxQueued: .*>=1/],
    ['enclave.pingMisses', { enclave: { pingMisses: 0 } }, /config\.enclave\.pingMisses: .*>=1/],
    ['enclave.pingTimeoutMs', { enclave: { pingTimeoutMs: 0 } }, /config\.enclave\.pingTimeoutMs: .*>=10/],
    ['a probe timeout longer than its interval', { enclave: { pingIntervalMs: 100, pingTimeoutMs: 200 } }, /config\.enclave/],
    [
      'tokens[0].rateLimit.windowMs',
      { tokens: [{ ...token, rateLimit: { max: 1, windowMs: 10 } }] },
      /config\.tokens\[0\]\.rateLimit\.windowMs: .*>=1000/,
    ],
    [
      'tokens[0].rateLimit.max',
      { tokens: [{ ...token, rateLimit: { max: 0, windowMs: 1000 } }] },
      /config\.tokens\[0\]\.rateLimit\.max: .*>=1/,
    ],
    [
      'tokens[0].expiresAt',
      { tokens: [{ ...token, expiresAt: 'tomorrow' }] },
      /config\.tokens\[0\]\.expiresAt: expected an ISO 8601 date and time/,
    ],
    ['tokens[0].projects (empty)', { tokens: [{ ...token, projects: [] }] }, /config\.tokens\[0\]\.projects: .*>=1/],
    [
      'tokens[0].projects[0]',
      { tokens: [{ ...token, projects: ['not a project'] }] },
      /config\.tokens\[0\]\.projects\[0\]: expected "default" or p_/,
    ],
    [
      'an admin token bound to projects',
      { tokens: [{ ...token, scopes: ['admin'], projects: ['default'] }] },
      /config\.tokens\[0\]\.projects: an admin token cannot be bound/,
    ],
  ])('%s', (_what, over, message) => {
    expect(() => parseParentConfig({ ...base, ...over })).toThrow(message);
  });

  it('takes each at its bound (so the refusals above are the bounds, not the fields)', () => {
    const c = parseParentConfig({
      ...base,
      api: { ...base.api, preDrainMs: 0, headersTimeoutMs: 1000, maxConnections: 1 },
      enclave: { maxQueued: 1, pingMisses: 1, pingIntervalMs: 50, pingTimeoutMs: 10 },
      tokens: [{ ...token, rateLimit: { max: 1, windowMs: 1000 }, expiresAt: '2030-01-01T00:00:00Z', projects: ['default'] }],
    });
    expect([c.api.preDrainMs, c.api.headersTimeoutMs, c.api.maxConnections, c.enclave.maxQueued, c.enclave.pingMisses]).toEqual([
      0, 1000, 1, 1, 1,
    ]);
    expect(c.tokens[0]?.rateLimit).toEqual({ max: 1, windowMs: 1000 });
  });
});
