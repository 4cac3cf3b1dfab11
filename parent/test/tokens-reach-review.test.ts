/**
 * Review (issue 22, caller authorization): what a token reaches beyond its scopes and bindings.
 * Each was found by an attacker's review and fixed: a successor answers a create-only token without what it takes
 * from its predecessor, a bound token's lists are filtered by the query, /metrics has its own listener.
 *
 * 1. A keys:create-only token reads an existing key's labels through its successor's 201 answer
 *    (creating is supposed not to be a way to read a key: docs/SECURITY.md, "The reach of each token").
 * 2. A bound token's list pages reveal the other projects' keys: a page can be empty with a nextCursor, one per
 *    key elsewhere at limit=1, so a bound keys:read token counts and watches other projects' keys.
 * 3. /metrics is still served on the caller API listener to anyone without a token (issue 22 item 18, first
 *    half), with the key counts of every project.
 */
import { createHash, randomBytes } from 'node:crypto';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

const sha = (t: string) => createHash('sha256').update(t).digest('hex');
const secret = (name: string) => `nks_${name}_${randomBytes(16).toString('hex')}`;
const T = { admin: secret('admin'), full: secret('full'), create: secret('create'), bound: secret('bound') };
type Name = keyof typeof T;
const SCOPES: Record<Name, string[]> = {
  admin: ['admin'],
  full: ['keys:create', 'keys:sign', 'keys:read'],
  create: ['keys:create'],
  bound: ['keys:read'],
};

describe('review: token reach', () => {
  let s: Stack;
  let other: string;
  const api = (name: Name | null, path: string, init: { method?: string; body?: unknown } = {}) =>
    s.api(path, { ...init, token: name === null ? null : T[name] });

  beforeAll(async () => {
    const tokens = (Object.keys(T) as Name[]).map((n) => ({
      name: n,
      sha256: sha(T[n]),
      scopes: SCOPES[n],
      ...(n === 'bound' ? { projects: ['default'] } : {}),
    }));
    s = await startStack(tempRunDir('nks-rv-auth-'), { parent: { tokens } });
    await waitReady(s);
    const p = await api('admin', '/v1/projects', { body: { name: 'Other', auth: { type: 'token' } } });
    expect(p.status).toBe(201);
    other = p.body.projectId;
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it("a keys:create-only token does not read an existing key's labels through a successor", async () => {
    const ext = `victim-${randomBytes(4).toString('hex')}`;
    const made = await api('full', '/v1/keys', { body: { externalId: ext, labels: { customer: 'alice@example.com', tier: 'gold' } } });
    expect(made.status).toBe(201);
    // GET is refused to it, and create answers only the id (item 16)...
    expect((await api('create', `/v1/keys/${made.body.keyId}`)).status).toBe(403);
    const short = await api('create', '/v1/keys', { body: { externalId: ext } });
    expect(short.body).toEqual({ keyId: made.body.keyId, created: false });
    // ...and a successor of that id answers the new key, not what it takes from its predecessor.
    const succ = await api('create', `/v1/keys/${short.body.keyId}/successor`, { body: {} });
    expect(succ.status).toBe(201);
    expect(JSON.stringify(succ.body)).not.toContain('alice@example.com');
    expect(Object.keys(succ.body).filter((k) => ['labels', 'externalId', 'record'].includes(k))).toEqual([]);
    expect(succ.body).toMatchObject({ predecessor: made.body.keyId, state: 'pending' });
    expect(succ.body.address).toMatch(/^0x[0-9a-fA-F]{40}$/);
    // A token that may read keys gets the successor in full.
    const full = await api('admin', `/v1/keys/${succ.body.keyId}/cancel`, { body: {} });
    expect(full.status).toBe(200);
    const again = await api('full', `/v1/keys/${made.body.keyId}/successor`, { body: {} });
    expect(again.status).toBe(201);
    expect(again.body.labels).toEqual({ customer: 'alice@example.com', tier: 'gold' });
  });

  it("a bound token's pages do not reveal other projects' keys (no empty page with a next cursor)", async () => {
    // A key of its own project first, then keys of another project after it.
    expect((await api('full', '/v1/keys', { body: {} })).status).toBe(201);
    for (let i = 0; i < 3; i++) expect((await api('full', '/v1/keys', { body: { projectId: other } })).status).toBe(201);
    let cursor: string | null = null;
    let pages = 0;
    let emptyWithCursor = 0;
    do {
      const page: { status: number; body: any } = await api('bound', `/v1/keys?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      pages++;
      if (page.body.keys.length === 0 && page.body.nextCursor) emptyWithCursor++;
      cursor = page.body.nextCursor;
    } while (cursor && pages < 100);
    // Filtered after the query, there was one empty page per key of the other project: the bound token counted them.
    expect(emptyWithCursor).toBe(0);
  });

  it('/metrics is not served on the caller API listener without a token', async () => {
    const r = await api(null, '/metrics');
    // It was 200 with nks_keys{state=...} for every project, to anyone who could reach the API port.
    expect(r.status).not.toBe(200);
    expect(String(r.body)).not.toMatch(/nks_keys\{/);
  });
});
