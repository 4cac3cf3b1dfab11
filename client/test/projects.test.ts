/**
 * Projects in the SDK (`createProject`, `listProjects`, …; `createKey({projectId})`) and `nks projects` as a
 * program (dist/cli.js: `npm run build`), against a stand-in API that records what it is asked: the routes,
 * bodies and retries, what the CLI prints, and its usage errors (exit 2). The routes themselves are tested
 * in parent/test/projects.test.ts.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { KeystoreApiError, KeystoreClient, type Project } from '../src/sdk';

const CLI = path.resolve(__dirname, '../../dist/cli.js');
jest.setTimeout(120_000);

const PROJECT: Project = {
  projectId: `p_${'A'.repeat(22)}`,
  projectKey: `pk_${'B'.repeat(22)}`,
  name: 'Wallet app',
  auth: {
    type: 'jwt',
    issuer: 'https://login.example',
    audience: 'app',
    userClaim: 'sub',
    jwksUri: 'https://login.example/jwks.json',
    algorithms: ['RS256', 'ES256'],
    maxTokenLifetime: 600,
  },
  allowedOrigins: ['https://app.example'],
  allowedRequestTypes: ['message', 'userOperation', 'typedData'],
  state: 'active',
  createdAt: '2026-01-01T00:00:00.000Z',
  policies: { rules: [], limits: [] },
  record: { record: 'AA==', signature: 'AA==' },
};

interface Seen {
  method: string;
  url: string;
  body: unknown;
  authorization: string | undefined;
}

/** A stand-in API: answers each request with `answer`, and records it. */
async function standIn(answer: (req: Seen) => { status: number; body: unknown }) {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      const s: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        body: text ? JSON.parse(text) : undefined,
        authorization: req.headers.authorization,
      };
      seen.push(s);
      const a = answer(s);
      res.writeHead(a.status, { 'content-type': 'application/json' }).end(JSON.stringify(a.body));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function nks(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, NKS_URL: '', NKS_TOKEN: '', NKS_DEV_DIR: '/nonexistent', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

describe('projects in the SDK', () => {
  it('creates, reads, lists, disables and enables projects on their routes; a create is never retried', async () => {
    let failNext = 0;
    const api = await standIn((req) => {
      if (failNext > 0) {
        failNext -= 1;
        return { status: 503, body: { error: { code: 'UNAVAILABLE', message: 'restarting', requestId: 'r1' } } };
      }
      if (req.url.startsWith('/v1/projects?') || (req.url === '/v1/projects' && req.method === 'GET'))
        return { status: 200, body: { projects: [PROJECT], nextCursor: req.url.includes('cursor') ? null : 'c1' } };
      if (req.url.endsWith('/disable')) return { status: 200, body: { ...PROJECT, state: 'disabled' } };
      if (req.method === 'POST' && req.url === '/v1/keys') return { status: 201, body: { keyId: 'k1', projectId: PROJECT.projectId } };
      return { status: req.method === 'POST' && req.url === '/v1/projects' ? 201 : 200, body: PROJECT };
    });
    try {
      const c = new KeystoreClient({ url: api.url, token: 'admin-token' });
      const input = {
        name: 'Wallet app',
        auth: { type: 'jwt' as const, issuer: 'https://login.example', audience: 'app', jwksUri: 'https://login.example/jwks.json' },
        allowedOrigins: ['https://app.example'],
      };
      expect(await c.createProject(input)).toEqual(PROJECT);
      expect(api.seen.at(-1)).toEqual({ method: 'POST', url: '/v1/projects', body: input, authorization: 'Bearer admin-token' });
      expect(await c.getProject(PROJECT.projectId)).toEqual(PROJECT);
      expect(api.seen.at(-1)?.url).toBe(`/v1/projects/${PROJECT.projectId}`);
      expect(await c.listProjects({ limit: 1 })).toEqual({ projects: [PROJECT], nextCursor: 'c1' });
      expect(api.seen.at(-1)?.url).toBe('/v1/projects?limit=1');
      const all: Project[] = [];
      for await (const p of c.allProjects(1)) all.push(p);
      expect(all).toHaveLength(2);
      expect((await c.disableProject(PROJECT.projectId)).state).toBe('disabled');
      expect(api.seen.at(-1)).toMatchObject({ method: 'POST', url: `/v1/projects/${PROJECT.projectId}/disable` });
      await c.enableProject(PROJECT.projectId);
      expect(api.seen.at(-1)).toMatchObject({ method: 'POST', url: `/v1/projects/${PROJECT.projectId}/enable` });
      await c.createKey({ projectId: PROJECT.projectId, externalId: 'e1' });
      expect(api.seen.at(-1)).toMatchObject({ method: 'POST', url: '/v1/keys', body: { projectId: PROJECT.projectId, externalId: 'e1' } });

      // A retryable answer: the read is retried, the create is not (a repeat would make a second project).
      const before = api.seen.length;
      failNext = 1;
      expect(await c.getProject(PROJECT.projectId)).toEqual(PROJECT);
      expect(api.seen.length - before).toBe(2);
      failNext = 1;
      const err = await c.createProject(input).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KeystoreApiError);
      expect([(err as KeystoreApiError).code, api.seen.length - before]).toEqual(['UNAVAILABLE', 3]);
    } finally {
      await api.close();
    }
  });
});

describe('nks projects', () => {
  beforeAll(() => {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" (or node scripts/build.mjs --only cli) first`);
  });

  it('creates a JWT project from flags, prints it, and lists, reads, disables and enables', async () => {
    const api = await standIn((req) => {
      if (req.method === 'GET' && req.url.startsWith('/v1/projects?'))
        return { status: 200, body: { projects: [PROJECT], nextCursor: null } };
      if (req.url.endsWith('/disable')) return { status: 200, body: { ...PROJECT, state: 'disabled' } };
      return { status: req.url === '/v1/projects' ? 201 : 200, body: PROJECT };
    });
    try {
      const env = { NKS_URL: api.url, NKS_TOKEN: 'admin-token' };
      const created = await nks(
        [
          'projects',
          'create',
          '--name',
          'Wallet app',
          '--issuer',
          'https://login.example',
          '--audience',
          'app',
          '--jwks-uri',
          'https://login.example/jwks.json',
          '--algorithm',
          'ES256',
          '--max-token-lifetime',
          '300',
          '--origin',
          'https://app.example',
          '--request-type',
          'message',
        ],
        env,
      );
      expect({ status: created.status, stderr: created.stderr }).toEqual({ status: 0, stderr: '' });
      expect(created.stdout).toMatch(/^Created project/);
      expect(created.stdout).toContain(PROJECT.projectKey);
      expect(api.seen[0]).toEqual({
        method: 'POST',
        url: '/v1/projects',
        authorization: 'Bearer admin-token',
        body: {
          name: 'Wallet app',
          auth: {
            type: 'jwt',
            issuer: 'https://login.example',
            audience: 'app',
            jwksUri: 'https://login.example/jwks.json',
            algorithms: ['ES256'],
            maxTokenLifetime: 300,
          },
          allowedOrigins: ['https://app.example'],
          allowedRequestTypes: ['message'],
        },
      });
      const token = await nks(['projects', 'create', '--name', 'Server', '--token-auth', '--json'], env);
      expect(token.status).toBe(0);
      expect(JSON.parse(token.stdout)).toEqual(PROJECT);
      expect(api.seen[1]?.body).toEqual({ name: 'Server', auth: { type: 'token' } });

      const list = await nks(['projects', 'list', '--limit', '5'], env);
      expect([list.status, list.stdout]).toEqual([
        0,
        `1 project(s)\n${PROJECT.projectId}  ${PROJECT.projectKey}  jwt  active  Wallet app\n`,
      ]);
      const shown = (await nks(['projects', 'get', PROJECT.projectId], env)).stdout;
      expect(shown).toContain('jwksUri');
      expect(shown).toMatch(/^policies +none$/m);
      expect((await nks(['projects', 'disable', PROJECT.projectId], env)).stdout).toBe(`${PROJECT.projectId} is disabled\n`);
      expect((await nks(['projects', 'enable', PROJECT.projectId], env)).status).toBe(0);
      expect(api.seen.slice(2).map((s) => `${s.method} ${s.url}`)).toEqual([
        'GET /v1/projects?limit=5',
        `GET /v1/projects/${PROJECT.projectId}`,
        `POST /v1/projects/${PROJECT.projectId}/disable`,
        `POST /v1/projects/${PROJECT.projectId}/enable`,
      ]);
      const key = await nks(['keys', 'create', '--project', PROJECT.projectId, '--json'], env);
      expect(key.status).toBe(0);
      expect(api.seen.at(-1)).toMatchObject({ method: 'POST', url: '/v1/keys', body: { projectId: PROJECT.projectId } });
    } finally {
      await api.close();
    }
  });

  it('exits 2 on usage errors, without asking the API', async () => {
    const api = await standIn(() => ({ status: 500, body: {} }));
    try {
      const env = { NKS_URL: api.url, NKS_TOKEN: 't' };
      const cases: Array<[string[], RegExp]> = [
        [['projects', 'create', '--issuer', 'x'], /--name is required/],
        [['projects', 'create', '--name', 'a'], /needs --issuer, --audience and --jwks-uri/],
        [['projects', 'create', '--name', 'a', '--token-auth', '--issuer', 'x'], /--token-auth takes none of --issuer/],
        [
          ['projects', 'create', '--name', 'a', '--issuer', 'x', '--audience', 'y', '--jwks-uri', 'https://j', '--algorithm', 'HS256'],
          /--algorithm HS256: expected one of/,
        ],
        [
          ['projects', 'create', '--name', 'a', '--token-auth', '--request-type', 'everything'],
          /--request-type everything: expected one of/,
        ],
        [
          ['projects', 'create', '--name', 'a', '--issuer', 'x', '--audience', 'y', '--jwks-uri', 'https://j', '--max-token-lifetime', '0'],
          /--max-token-lifetime must be a positive integer/,
        ],
        [['projects', 'list', '--limit', 'x'], /--limit must be a positive integer/],
        [['projects', 'get'], /missing <projectId>/],
        [['projects', 'rename'], /usage: nks projects/],
      ];
      for (const [args, message] of cases) {
        const r = await nks(args, env);
        expect({ args, status: r.status }).toEqual({ args, status: 2 });
        expect(r.stderr).toMatch(message);
      }
      expect(api.seen).toEqual([]);
    } finally {
      await api.close();
    }
  });
});
