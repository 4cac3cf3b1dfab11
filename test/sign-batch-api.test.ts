/**
 * POST /v1/keys/{keyId}/sign-batch on a real stack (parent and enclave processes over simulated vsock, the KMS
 * emulator): its limits (100 requests, its own 1 MiB body limit), a bad request answered 400 with its path, the
 * enclave's per-request refusals in order, the single route's reach rules and scope, and one KMS Decrypt for a
 * cold batch.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { recoverAddress, recoverMessageAddress } from 'viem';
import { tempRunDir } from '@nks/shared-test/helpers';
import { measureBatchedWarm } from '../scripts/bench-batch';
import { startStack, waitReady, type Stack } from './support/stack';

const sha = (t: string) => createHash('sha256').update(t).digest('hex');
const secret = (name: string) => `nks_${name}_${randomBytes(16).toString('hex')}`;
const T = { admin: secret('admin'), full: secret('full'), read: secret('read'), bound: secret('bound'), limited: secret('limited') };
type Name = keyof typeof T;
const SCOPES: Record<Name, string[]> = {
  admin: ['admin'],
  full: ['keys:create', 'keys:sign', 'keys:read'],
  read: ['keys:read'],
  bound: ['keys:sign', 'keys:read'],
  limited: ['keys:sign'],
};
const digestOf = (n: number) => `0x${n.toString(16).padStart(64, '0')}` as const;
const digest = (n: number) => ({ type: 'digest', digest: digestOf(n) });
const message = (text: string) => ({ type: 'message', message: text });

describe('POST /v1/keys/{keyId}/sign-batch', () => {
  let s: Stack;
  let other: string;
  const api = (name: Name | null, path: string, init: { method?: string; body?: unknown } = {}) =>
    s.api(path, { ...init, token: name === null ? null : T[name] });
  const newKey = async (projectId?: string) => {
    const made = await api('admin', '/v1/keys', { body: projectId ? { projectId } : {} });
    expect(made.status).toBe(201);
    return made.body as { keyId: string; address: `0x${string}` };
  };
  const batch = (keyId: string, requests: unknown[], name: Name = 'full') =>
    api(name, `/v1/keys/${keyId}/sign-batch`, { body: { requests } });
  const decrypts = async () => {
    const st = await s.platform.stats();
    return (st.Decrypt?.ok ?? 0) + (st.Decrypt?.error ?? 0);
  };

  beforeAll(async () => {
    const tokens = (Object.keys(T) as Name[]).map((n) => ({
      name: n,
      sha256: sha(T[n]),
      scopes: SCOPES[n],
      ...(n === 'bound' ? { projects: ['default'] } : {}),
      ...(n === 'limited' ? { rateLimit: { max: 5, windowMs: 3_600_000 } } : {}),
    }));
    s = await startStack(tempRunDir('nks-batch-api-'), { parent: { tokens } });
    await waitReady(s);
    const p = await api('admin', '/v1/projects', {
      body: {
        name: 'Texts',
        auth: { type: 'token' },
        allowedRequestTypes: ['message', 'typedData'],
        policies: {
          rules: [{ name: 'texts', effect: 'allow', when: { type: ['message'] } }],
          limits: [{ name: 'two', scope: 'key', window: 'hour', maxCount: 2 }],
        },
      },
    });
    expect(p.status).toBe(201);
    other = p.body.projectId;
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('signs each request in order, a cold batch with one KMS Decrypt', async () => {
    const key = await newKey();
    const before = await decrypts();
    const r = await batch(key.keyId, [digest(1), message('hi'), digest(2)]);
    expect(r.status).toBe(200);
    expect(await decrypts()).toBe(before + 1);
    const [a, b, c] = r.body.results.map((x: { result: { signature: `0x${string}`; hash: string } }) => x.result);
    expect(await recoverAddress({ hash: digestOf(1), signature: a.signature })).toBe(key.address);
    expect(await recoverMessageAddress({ message: 'hi', signature: b.signature })).toBe(key.address);
    expect(c.hash).toBe(digestOf(2));
    // The same as the single route answers.
    const single = await api('full', `/v1/keys/${key.keyId}/sign`, { body: digest(2) });
    expect(single.body).toEqual(c);
  });

  it('takes 100 requests, refuses 101 and an empty batch (400)', async () => {
    const key = await newKey();
    const hundred = Array.from({ length: 100 }, (_, i) => digest(i + 1));
    const ok = await batch(key.keyId, hundred);
    expect(ok.status).toBe(200);
    expect(ok.body.results.map((x: { result: { hash: string } }) => x.result.hash)).toEqual(hundred.map((d) => d.digest));
    const over = await batch(key.keyId, [...hundred, digest(101)]);
    expect([over.status, over.body.error.code]).toEqual([400, 'INVALID_PARAMS']);
    expect(over.body.error.message).toBe('body.requests: expected at most 100 requests');
    expect((await batch(key.keyId, [])).status).toBe(400);
    expect((await api('full', `/v1/keys/${key.keyId}/sign-batch`, { body: { requests: [digest(1)], extra: 1 } })).status).toBe(400);
  });

  it('has its own 1 MiB body limit: 600 KiB is signed (413 on the single route), over 1 MiB is 413', async () => {
    const key = await newKey();
    const text = 'y'.repeat(120 * 1024);
    const big = Array.from({ length: 5 }, () => message(text));
    const r = await batch(key.keyId, big);
    expect(r.status).toBe(200);
    expect(r.body.results).toHaveLength(5);
    const single = await api('full', `/v1/keys/${key.keyId}/sign`, { body: { type: 'message', message: text + text + text } });
    expect(single.status).toBe(413);
    const tooBig = await batch(
      key.keyId,
      Array.from({ length: 9 }, () => message(text)),
    );
    expect([tooBig.status, tooBig.body.error.code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
    expect(tooBig.body.error.message).toContain('1048576-byte limit');
  });

  it('one invalid request makes the whole batch 400, its path named; nothing is signed', async () => {
    const key = await newKey();
    const before = await decrypts();
    const r = await batch(key.keyId, [digest(1), digest(2), digest(3), { type: 'message', message: 5 }]);
    expect([r.status, r.body.error.code]).toEqual([400, 'INVALID_PARAMS']);
    expect(r.body.error.details[0].path).toBe('body.requests[3].message');
    expect(await decrypts()).toBe(before);
  });

  it("refusals of one request answer that request alone, in order, with the single route's code and message", async () => {
    const key = await newKey(other);
    const td = {
      type: 'typedData',
      typedData: { domain: { name: 'X' }, types: { M: [{ name: 'a', type: 'uint8' }] }, primaryType: 'M', message: { a: 1 } },
    };
    const r = await batch(key.keyId, [message('1'), digest(1), td, message('2'), message('3')]);
    expect(r.status).toBe(200);
    const codes = r.body.results.map((x: { error?: { code: string } }) => x.error?.code ?? 'ok');
    // digest: not an allowed type (the parent's answer); typed data: no rule allows it; the third message: the limit.
    expect(codes).toEqual(['ok', 'FORBIDDEN', 'POLICY_DENIED', 'ok', 'POLICY_DENIED']);
    const single = async (body: unknown) => (await api('full', `/v1/keys/${key.keyId}/sign`, { body })).body.error;
    const { requestId: _1, ...forbidden } = await single(digest(1));
    expect(r.body.results[1].error).toEqual(forbidden);
    const { requestId: _2, ...denied } = await single(message('4'));
    expect(r.body.results[4].error).toEqual(denied);
    expect(denied.details.limit).toBe('two');
  });

  it("answers a key out of the token's reach exactly like a missing one, and needs keys:sign", async () => {
    const key = await newKey(other);
    const out = await batch(key.keyId, [digest(1)], 'bound');
    const missingId = `${key.keyId.slice(0, -4)}zzzz`;
    const missing = await batch(missingId, [digest(1)], 'bound');
    expect(out.status).toBe(404);
    expect({ ...out.body.error, requestId: '-', message: out.body.error.message.replace(key.keyId, 'K') }).toEqual({
      ...missing.body.error,
      requestId: '-',
      message: missing.body.error.message.replace(missingId, 'K'),
    });
    const own = await newKey();
    expect((await batch(own.keyId, [digest(1)], 'bound')).status).toBe(200);
    expect((await batch(own.keyId, [digest(1)], 'read')).status).toBe(403);
    expect((await batch(own.keyId, [digest(1)] as unknown[], null as never)).status).toBe(401);
  });

  it("the benchmark's batched measure (scripts/bench-batch.ts) counts signed batches, and no errors", async () => {
    const key = await newKey();
    const st = await measureBatchedWarm({
      baseUrl: s.url,
      token: T.full,
      keyId: key.keyId,
      batchSize: 10,
      concurrency: 2,
      durationMs: 300,
    });
    expect(st.errors).toBe(0);
    expect(st.batchesPerSec).toBeGreaterThan(0);
    expect(st.signsPerSec).toBeCloseTo(st.batchesPerSec * 10, 6);
    expect(st.p99Ms).toBeGreaterThanOrEqual(st.p50Ms);
    const refused = await measureBatchedWarm({
      baseUrl: s.url,
      token: T.read,
      keyId: key.keyId,
      batchSize: 2,
      concurrency: 1,
      durationMs: 100,
    });
    expect([refused.signsPerSec, refused.errors > 0]).toEqual([0, true]);
  });

  it("each request of a batch counts against the token's rate limit, as a single sign does", async () => {
    const key = await newKey();
    // max 5 per window: a batch of 3 counts 3; the next batch of 3 passes 5 and is refused whole (what it counted stays
    // counted, as for any refused request): a single sign is refused too.
    expect((await batch(key.keyId, [digest(1), digest(2), digest(3)], 'limited')).status).toBe(200);
    const over = await batch(key.keyId, [digest(4), digest(5), digest(6)], 'limited');
    expect([over.status, over.body.error.code]).toEqual([429, 'RATE_LIMITED']);
    expect(over.headers.get('retry-after')).toMatch(/^\d+$/);
    expect((await api('limited', `/v1/keys/${key.keyId}/sign`, { body: digest(7) })).status).toBe(429);
  });
  // Last: it idles the API's connections past their keep-alive (one CLI start after another).
  it('nks sign-batch: one line per request, its signature or its error; exit 1 when any was refused', async () => {
    // Both keys first: the API calls below come after CLI runs, which idle this process's connections.
    const [key, spare] = [await newKey(other), await newKey()];
    const file = path.join(tempRunDir('nks-batch-cli-'), 'requests.json');
    fs.writeFileSync(file, JSON.stringify([message('cli'), digest(1)]));
    const nks = (...args: string[]) =>
      spawnSync(process.execPath, [path.resolve(__dirname, '../dist/cli.js'), 'sign-batch', ...args], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { ...process.env, NKS_URL: s.url, NKS_TOKEN: T.full, NKS_DEV_DIR: '/nonexistent' },
      });
    const run = nks(key.keyId, '--file', file, '--json');
    expect(run.status).toBe(1);
    const { results } = JSON.parse(run.stdout);
    expect(await recoverMessageAddress({ message: 'cli', signature: results[0].result.signature })).toBe(key.address);
    expect(results[1].error.code).toBe('FORBIDDEN');
    const human = nks(key.keyId, '--file', file);
    expect(human.stdout).toMatch(/^0 +0x[0-9a-f]{130}\n1 +error FORBIDDEN: /);
    // (The project's limit allows two signatures per key: a key of the default project signs the rest.)
    fs.writeFileSync(file, JSON.stringify({ requests: [message('a'), digest(2)] }));
    expect(nks(spare.keyId, '--file', file).status).toBe(0);
    const usage = nks(key.keyId);
    expect([usage.status, usage.stderr]).toEqual([2, expect.stringContaining('--file FILE is required')]);
    // A file that is not a batch is named, with what it should hold; nothing is sent.
    for (const doc of [{ request: [] }, [], Array.from({ length: 101 }, () => digest(1))]) {
      fs.writeFileSync(file, JSON.stringify(doc));
      const bad = nks(key.keyId, '--file', file);
      expect([bad.status, bad.stderr]).toEqual([2, expect.stringContaining(`${file}: expected 1 to 100 sign requests`)]);
    }
    fs.writeFileSync(file, '[{"type": "digest",');
    const notJson = nks(key.keyId, '--file', file);
    expect([notJson.status, notJson.stderr]).toEqual([2, expect.stringContaining(file)]);
  });
});
