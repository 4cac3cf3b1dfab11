/**
 * Tokens over the real processes (dist/parent.js, a simulated enclave, the KMS emulator): what a token reaches
 * (issue 22 item 16: a create-only token is not a way to read keys; a token bound to projects reaches only their
 * keys, and another project's key is answered exactly as a missing one), per-token rate limits (18: 429 +
 * Retry-After, per token, window resets), tokens reloaded on SIGHUP and expiring (19). The stack starts with its
 * own token set, which the tests rewrite and reload.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

const execFileAsync = promisify(execFile);
const sha = (t: string) => createHash('sha256').update(t).digest('hex');
const secret = (name: string) => `nks_${name}_${randomBytes(16).toString('hex')}`;
const T = {
  admin: secret('admin'),
  full: secret('full'),
  create: secret('create'),
  bound: secret('bound'),
  limited: secret('limited'),
  brief: secret('brief'),
  expired: secret('expired'),
  later: secret('later'),
};
type Name = keyof typeof T;
const SCOPES: Record<Name, string[]> = {
  admin: ['admin'],
  full: ['keys:create', 'keys:sign', 'keys:read'],
  create: ['keys:create'],
  bound: ['keys:create', 'keys:sign', 'keys:read'],
  limited: ['keys:read'],
  brief: ['keys:read'],
  expired: ['keys:read'],
  later: ['keys:read', 'keys:sign'],
};
const token = (name: Name, extra: Record<string, unknown> = {}) => ({ name, sha256: sha(T[name]), scopes: SCOPES[name], ...extra });
const INITIAL = [
  token('admin'),
  token('full'),
  token('create'),
  token('bound', { projects: ['default'] }),
  token('limited', { rateLimit: { max: 3, windowMs: 60_000 } }),
  token('brief', { rateLimit: { max: 1, windowMs: 1000 } }),
  token('expired', { expiresAt: '2020-01-01T00:00:00Z' }),
];

describe('tokens', () => {
  let s: Stack;
  /** A key of another token project than `default`, and one of `default`. */
  let other: { projectId: string; keyId: string; externalId: string };
  let mine: { keyId: string; externalId: string };

  const api = (name: Name, path: string, init: { method?: string; body?: unknown } = {}) => s.api(path, { ...init, token: T[name] });
  const code = (r: { status: number; body: any }) => [r.status, r.body?.error?.code];
  const config = () => JSON.parse(fs.readFileSync(s.parentConfigFile, 'utf8')) as Record<string, unknown>;
  const writeConfig = (text: string) => fs.writeFileSync(s.parentConfigFile, text);
  /** Sends SIGHUP to the parent process and waits for its log line `msg` after it. */
  const sighup = async (msg: string): Promise<Record<string, unknown>> => {
    const from = s.parent.lines.length;
    process.kill(s.parent.child.pid as number, 'SIGHUP');
    const until = Date.now() + 15_000;
    for (;;) {
      for (const line of s.parent.lines.slice(from)) {
        try {
          const e = JSON.parse(line) as Record<string, unknown>;
          if (e.msg === msg) return e;
        } catch {
          /* not a log line */
        }
      }
      if (s.parent.child.exitCode !== null) throw new Error(`the parent exited after SIGHUP:\n${s.parent.lines.slice(from).join('\n')}`);
      if (Date.now() > until) throw new Error(`no "${msg}" after SIGHUP:\n${s.parent.lines.slice(from).join('\n')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-tokens-'), { parent: { tokens: INITIAL } });
    await waitReady(s);
    const project = await api('admin', '/v1/projects', { body: { name: 'Other', auth: { type: 'token' } } });
    expect(project.status).toBe(201);
    const otherExt = `other-${randomBytes(4).toString('hex')}`;
    const made = await api('full', '/v1/keys', { body: { externalId: otherExt, projectId: project.body.projectId } });
    expect(made.status).toBe(201);
    other = { projectId: project.body.projectId, keyId: made.body.keyId, externalId: otherExt };
    const mineExt = `mine-${randomBytes(4).toString('hex')}`;
    const m = await api('bound', '/v1/keys', { body: { externalId: mineExt } });
    expect(m.status).toBe(201);
    mine = { keyId: m.body.keyId, externalId: mineExt };
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  describe('scope: creating is not reading', () => {
    it('a keys:create-only token that creates with an existing externalId gets only {keyId, created: false}', async () => {
      const probe = await api('create', '/v1/keys', { body: { externalId: mine.externalId } });
      expect(probe.status).toBe(200);
      expect(probe.body).toEqual({ keyId: mine.keyId, created: false });
      // Not the record, the address or an attestation, which GET would have refused it anyway.
      expect(code(await api('create', `/v1/keys/${mine.keyId}`))).toEqual([403, 'FORBIDDEN']);
    });

    it('the CLI shows a create-only token the existing key by its id only', async () => {
      const env = { ...process.env, NKS_URL: s.url, NKS_TOKEN: T.create, NKS_DEV_DIR: '/nonexistent' };
      const run = (args: string[]) => execFileAsync(process.execPath, [path.resolve(__dirname, '../../dist/cli.js'), ...args], { env });
      const json = await run(['keys', 'create', '--external-id', mine.externalId, '--json']);
      expect(JSON.parse(json.stdout)).toEqual({ keyId: mine.keyId, created: false });
      const text = await run(['keys', 'create', '--external-id', mine.externalId]);
      expect(text.stdout).toMatch(new RegExp(`^Existing key\\n.*keyId.*${mine.keyId}`, 's'));
      expect(text.stdout).not.toMatch(/address/);
    });

    it('a new key is still answered in full (201), and a token with keys:read still sees the existing key', async () => {
      const made = await api('create', '/v1/keys', { body: { labels: { a: 'b' } } });
      expect(made.status).toBe(201);
      expect(made.body).toMatchObject({ keyId: expect.any(String), address: expect.stringMatching(/^0x/), labels: { a: 'b' } });
      const again = await api('full', '/v1/keys', { body: { externalId: mine.externalId } });
      expect(again.status).toBe(200);
      expect(again.body).toMatchObject({ keyId: mine.keyId, externalId: mine.externalId, address: expect.stringMatching(/^0x/) });
    });
  });

  describe('project binding', () => {
    const missing = 'k_AAAAAAAAAAAAAAAAAAAAAA';

    it("a bound token signs its project's keys, and another project's key is answered as a missing key", async () => {
      expect((await api('bound', `/v1/keys/${mine.keyId}/sign`, { body: { type: 'message', message: 'm' } })).status).toBe(200);
      const refused = await api('bound', `/v1/keys/${other.keyId}/sign`, { body: { type: 'message', message: 'm' } });
      const absent = await api('bound', `/v1/keys/${missing}/sign`, { body: { type: 'message', message: 'm' } });
      expect(code(refused)).toEqual([404, 'KEY_NOT_FOUND']);
      // The same answer as for a key that does not exist, but for the id: nothing tells them apart.
      expect(refused.body.error.message.replace(other.keyId, 'K')).toBe(absent.body.error.message.replace(missing, 'K'));
      // The unbound token signs with it.
      expect((await api('full', `/v1/keys/${other.keyId}/sign`, { body: { type: 'message', message: 'm' } })).status).toBe(200);
    });

    it("cannot read, page through or find by externalId another project's key", async () => {
      expect(code(await api('bound', `/v1/keys/${other.keyId}`))).toEqual([404, 'KEY_NOT_FOUND']);
      expect(code(await api('bound', `/v1/keys/${other.keyId}/history`))).toEqual([404, 'KEY_NOT_FOUND']);
      expect((await api('bound', `/v1/keys?externalId=${other.externalId}`)).body).toEqual({ keys: [], nextCursor: null });
      expect((await api('full', `/v1/keys?externalId=${other.externalId}`)).body.keys).toHaveLength(1);
      const seen: Array<{ keyId: string; projectId: string }> = [];
      let cursor: string | null = null;
      do {
        const page: { status: number; body: any } = await api('bound', `/v1/keys?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
        expect(page.status).toBe(200);
        seen.push(...page.body.keys);
        cursor = page.body.nextCursor;
      } while (cursor);
      expect(seen.map((k) => k.keyId)).toContain(mine.keyId);
      expect(seen.map((k) => k.keyId)).not.toContain(other.keyId);
      expect(new Set(seen.map((k) => k.projectId))).toEqual(new Set(['default']));
    });

    it('cannot make keys in, or successors of keys of, another project; an externalId taken there is a conflict', async () => {
      const refused = await api('bound', '/v1/keys', { body: { projectId: other.projectId } });
      const nowhere = await api('bound', '/v1/keys', { body: { projectId: `p_${'Z'.repeat(22)}` } });
      expect(code(refused)).toEqual([403, 'FORBIDDEN']);
      // Whether the project exists or not: the same answer, but for its id.
      expect(refused.body.error.message.replace(other.projectId, 'P')).toBe(nowhere.body.error.message.replace(`p_${'Z'.repeat(22)}`, 'P'));
      expect(code(await api('bound', `/v1/keys/${other.keyId}/successor`, { body: {} }))).toEqual([404, 'KEY_NOT_FOUND']);
      // External ids are unique across projects: that one is taken, and nothing of its key is answered.
      const taken = await api('bound', '/v1/keys', { body: { externalId: other.externalId } });
      expect(code(taken)).toEqual([409, 'CONFLICT']);
      expect(JSON.stringify(taken.body)).not.toContain(other.keyId);
    });
  });

  describe('rate limits', () => {
    it('refuses a token over its limit with 429 RATE_LIMITED and Retry-After; other tokens are not affected', async () => {
      for (let i = 0; i < 3; i++) expect((await api('limited', '/v1/keys?limit=1')).status).toBe(200);
      const over = await api('limited', '/v1/keys?limit=1');
      expect(code(over)).toEqual([429, 'RATE_LIMITED']);
      expect(over.body.error.retryable).toBe(true);
      const after = Number(over.headers.get('retry-after'));
      expect(after).toBeGreaterThanOrEqual(1);
      expect(after).toBeLessThanOrEqual(60);
      expect(over.body.error.message).toMatch(/token "limited"/);
      expect((await api('full', '/v1/keys?limit=1')).status).toBe(200);
      expect((await s.api('/healthz', { token: null })).status).toBe(200);
      // Still refused: the window is a minute.
      expect(code(await api('limited', '/v1/keys?limit=1'))).toEqual([429, 'RATE_LIMITED']);
    });

    it('lets the token in again once its window has passed', async () => {
      expect((await api('brief', '/v1/keys?limit=1')).status).toBe(200);
      let refused: { status: number; body: any; headers: Headers } | undefined;
      for (let i = 0; i < 20 && !refused; i++) {
        const r = await api('brief', '/v1/keys?limit=1');
        if (r.status === 429) refused = r;
      }
      expect(refused?.headers.get('retry-after')).toBe('1');
      const until = Date.now() + 15_000;
      let status = 429;
      while (status === 429 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 100));
        status = (await api('brief', '/v1/keys?limit=1')).status;
      }
      expect(status).toBe(200);
    });
  });

  describe('expiry and SIGHUP', () => {
    it('refuses an expired token with 401 saying so', async () => {
      const r = await api('expired', '/v1/keys?limit=1');
      expect(code(r)).toEqual([401, 'UNAUTHORIZED']);
      expect(r.body.error.message).toBe('the bearer token expired at 2020-01-01T00:00:00.000Z');
      // An unknown token is told nothing more than before.
      expect((await s.api('/v1/keys', { token: secret('nobody') })).body.error.message).toBe('unknown bearer token');
    });

    it('adds, binds and expires tokens on SIGHUP, without a restart', async () => {
      const pid = s.parent.child.pid;
      expect(code(await api('later', `/v1/keys/${other.keyId}`))).toEqual([401, 'UNAUTHORIZED']);
      const expiresAt = new Date(Date.now() + 4000).toISOString();
      const next = { ...config(), tokens: [...INITIAL, token('later', { projects: [other.projectId], expiresAt })] };
      writeConfig(JSON.stringify(next));
      const reloaded = await sighup('tokens reloaded');
      expect(reloaded.tokens).toContain('later');
      expect(s.parent.child.pid).toBe(pid);
      expect((await api('later', `/v1/keys/${other.keyId}`)).status).toBe(200);
      expect((await api('later', `/v1/keys/${other.keyId}/sign`, { body: { type: 'message', message: 'm' } })).status).toBe(200);
      expect(code(await api('later', `/v1/keys/${mine.keyId}/sign`, { body: { type: 'message', message: 'm' } }))).toEqual([
        404,
        'KEY_NOT_FOUND',
      ]);
      // Its expiry comes: from then on, 401 saying it expired.
      const until = Date.now() + 20_000;
      let r = await api('later', `/v1/keys/${other.keyId}`);
      while (r.status === 200 && Date.now() < until) {
        await new Promise((res) => setTimeout(res, 200));
        r = await api('later', `/v1/keys/${other.keyId}`);
      }
      expect(code(r)).toEqual([401, 'UNAUTHORIZED']);
      expect(r.body.error.message).toMatch(/expired/);
    });

    it('keeps the tokens in use when the file is bad, and logs why without a hash', async () => {
      const good = JSON.stringify(config());
      const bad: Array<[string, string, RegExp]> = [
        ['not JSON', `${good.slice(0, -1)},`, /not valid JSON/],
        [
          'a schema error',
          JSON.stringify({ ...config(), tokens: [{ ...token('full'), scopes: ['keys:everything'] }] }),
          /config\.tokens\[0\]\.scopes/,
        ],
        [
          'two tokens with one name',
          JSON.stringify({ ...config(), tokens: [token('admin'), { ...token('full'), name: 'admin' }] }),
          /token names must be unique/,
        ],
        ['no tokens', JSON.stringify({ ...config(), tokens: [] }), /config\.tokens/],
      ];
      try {
        for (const [what, text, reason] of bad) {
          writeConfig(text);
          const line = await sighup('tokens not reloaded: the configuration is invalid; the tokens in use are kept');
          expect([what, line.level, String(line.reason)]).toEqual([what, 50, expect.stringMatching(reason)]);
          expect(JSON.stringify(line)).not.toMatch(/[0-9a-f]{64}/);
          // Every token still works as before, the parent unchanged.
          expect((await api('full', '/v1/keys?limit=1')).status).toBe(200);
          expect((await api('admin', '/v1/projects')).status).toBe(200);
        }
      } finally {
        writeConfig(good);
      }
    });

    it('removes a token on SIGHUP, and says which other changes need a restart', async () => {
      const before = config();
      writeConfig(JSON.stringify({ ...before, tokens: INITIAL.filter((t) => t.name !== 'create'), logLevel: 'info' }));
      const warned = await sighup('configuration changes outside tokens and tokenDefaults are ignored until the parent restarts');
      expect(warned.sections).toEqual(['logLevel']);
      expect(code(await api('create', '/v1/keys', { body: {} }))).toEqual([401, 'UNAUTHORIZED']);
      expect((await api('full', '/v1/keys?limit=1')).status).toBe(200);
    });
  });
});
