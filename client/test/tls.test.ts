/**
 * The SDK's TLS checks (client/src/tls.ts) and `nks tls` as a program (dist/cli.js), against a stand-in HTTPS
 * server with a test CA (client/test/tls-fixtures.ts) and a stand-in caller API. Each test changes one thing a
 * lying server could change and expects the verdict to say so.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { tlsUserData } from '@nks/shared/attestation/user-data';
import { tempRunDir } from '@nks/shared-test/helpers';
import { makeTestCa } from '../../sim/src/idp/tls';
import { KeystoreClient } from '../src/sdk';
import { fetchTlsEvidence, verifyTlsEvidence } from '../src/tls';
import { VerificationError } from '../src/verify';
import { makeDocuments, OTHER_PCR0, PCR0, type Documents } from './keystore-fixtures';
import { makeCsr, startTlsServer, truthful, type TlsServer } from './tls-fixtures';

const CLI = path.resolve(__dirname, '../../dist/cli.js');
jest.setTimeout(60_000);

let docs: Documents;
let dir: string;
let rootFile: string;
const servers: TlsServer[] = [];
const serve = async (...a: Parameters<typeof startTlsServer>) => {
  const s = await startTlsServer(...a);
  servers.push(s);
  return s;
};

beforeAll(async () => {
  docs = await makeDocuments();
  dir = tempRunDir('nks-tls-cli-');
  rootFile = path.join(dir, 'root.pem');
  fs.writeFileSync(rootFile, docs.ca.rootPem);
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  fs.rmSync(dir, { recursive: true, force: true });
});

const failure = async (p: Promise<unknown>): Promise<VerificationError> => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof VerificationError)) throw new Error(`expected a VerificationError, got ${String(err)}`);
  return err;
};
const check = async (s: TlsServer, pcr0 = PCR0) =>
  verifyTlsEvidence(await fetchTlsEvidence(s.url, { ca: s.caPem }), { expectedPcrs: { 0: pcr0 }, rootCertificate: docs.ca.rootPem });

describe('fetchTlsEvidence + verifyTlsEvidence', () => {
  it('accepts a server whose served key the fresh document binds, and sends a new 32-byte nonce each time', async () => {
    const s = await serve(truthful(docs));
    const v = await check(s);
    expect(v.checks).toHaveLength(3);
    expect(v.checks[2]).toMatch(/binds the served key/);
    await check(s);
    expect(s.nonces).toHaveLength(2);
    for (const n of s.nonces) expect(n).toMatch(/^[0-9a-f]{64}$/);
    expect(s.nonces[0]).not.toBe(s.nonces[1]);
    // Several approved images: any one will do.
    const ev = await fetchTlsEvidence(s.url, { ca: s.caPem });
    expect(verifyTlsEvidence(ev, { expectedPcrs: { 0: [OTHER_PCR0, PCR0] }, rootCertificate: docs.ca.rootPem }).spkiSha256).toMatch(
      /^[0-9a-f]{64}$/,
    );
  });

  it('refuses a genuine document of another key: a server with a certificate of its own relaying the enclave’s attestation', async () => {
    const enclave = await makeCsr(['localhost']);
    const s = await serve(async ({ nonce }) => ({
      document: await docs.document({ userData: tlsUserData(enclave.spki), nonce: Buffer.from(nonce, 'hex') }),
    }));
    const err = await failure(check(s));
    expect([err.code, err.message]).toEqual(['TLS_KEY_MISMATCH', expect.stringMatching(/does not end in the attested enclave/)]);
  });

  it('refuses a replayed document (another nonce, or none), another image, and another root', async () => {
    const replay = await serve(async ({ spki }) => ({
      document: await docs.document({ userData: tlsUserData(spki), nonce: Buffer.alloc(32, 7) }),
    }));
    expect((await failure(check(replay))).attestationCode).toBe('NONCE_MISMATCH');
    const none = await serve(async ({ spki }) => ({ document: await docs.document({ userData: tlsUserData(spki) }) }));
    expect((await failure(check(none))).attestationCode).toBe('NONCE_MISMATCH');
    const image = await serve(truthful(docs, OTHER_PCR0));
    expect((await failure(check(image))).attestationCode).toBe('PCR_MISMATCH');
    const other = await makeDocuments();
    const root = await serve(truthful(other));
    expect((await failure(check(root))).attestationCode).toBe('UNTRUSTED_ROOT');
    // The untagged SPKI hash is not the TLS value (user_data is domain-tagged).
    const untagged = await serve(async ({ spki, nonce }) => ({
      document: await docs.document({ userData: createHash('sha256').update(spki).digest(), nonce: Buffer.from(nonce, 'hex') }),
    }));
    expect((await failure(check(untagged))).code).toBe('TLS_KEY_MISMATCH');
  });

  it('refuses a server whose certificate is not trusted or does not name the host, before asking it anything', async () => {
    const s = await serve(truthful(docs));
    const untrusted = await failure(fetchTlsEvidence(s.url, { ca: (await makeTestCa('another CA')).caPem }));
    expect([untrusted.code, untrusted.message]).toEqual(['TLS_HANDSHAKE', expect.stringMatching(/does not chain to a trusted CA/)]);
    expect((await failure(fetchTlsEvidence(s.url))).code).toBe('TLS_HANDSHAKE'); // Node's store does not hold the test CA
    const namedOnly = await serve(truthful(docs), { names: ['localhost'] });
    const wrongName = await failure(fetchTlsEvidence(namedOnly.url, { ca: namedOnly.caPem }));
    expect([wrongName.code, wrongName.message]).toEqual(['TLS_HANDSHAKE', expect.stringMatching(/ERR_TLS_CERT_ALTNAME_INVALID/)]);
    expect(s.nonces.length + namedOnly.nonces.length).toBe(0);
  });

  it('says what is wrong with an answer that is not a document, a URL that is not an origin, and a missing PCR0', async () => {
    const notFound = await serve(async () => ({ status: 404, body: { detail: 'no' } }));
    expect((await failure(fetchTlsEvidence(notFound.url, { ca: notFound.caPem }))).message).toMatch(/HTTP 404/);
    const notJson = await serve(async () => ({ body: 'hello' }));
    expect((await failure(fetchTlsEvidence(notJson.url, { ca: notJson.caPem }))).code).toBe('BAD_RESPONSE');
    for (const url of ['http://127.0.0.1:1', 'https://127.0.0.1:1/v1', 'https://u:p@127.0.0.1', 'not a url'])
      expect([url, (await failure(fetchTlsEvidence(url))).code]).toEqual([url, 'MALFORMED']);
    const s = await serve(truthful(docs));
    const ev = await fetchTlsEvidence(s.url, { ca: s.caPem });
    expect(() => verifyTlsEvidence(ev, { expectedPcrs: {} })).toThrow(/PCR0 is required/);
  });
});

describe('KeystoreClient.tls', () => {
  it('posts names, puts the chain and gets the status, with the bearer token; a create is never retried', async () => {
    const calls: Array<{ url: string; method: string; body: unknown }> = [];
    let status = 503;
    const f = (async (url: string, init: RequestInit) => {
      calls.push({ url, method: String(init.method), body: init.body ? JSON.parse(String(init.body)) : undefined });
      return new Response(JSON.stringify(status === 200 ? { ok: true } : { error: { code: 'UNAVAILABLE', message: 'x' } }), { status });
    }) as unknown as typeof fetch;
    const c = new KeystoreClient({ url: 'http://x', token: 't', fetch: f, retries: 2 });
    await expect(c.tls.createKey(['a.example'])).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(calls).toEqual([{ url: 'http://x/v1/tls/keys', method: 'POST', body: { names: ['a.example'] } }]);
    status = 200;
    await c.tls.install('PEM');
    await c.tls.status();
    expect(calls.slice(1)).toEqual([
      { url: 'http://x/v1/tls/certificate', method: 'PUT', body: { chain: 'PEM' } },
      { url: 'http://x/v1/tls', method: 'GET', body: undefined },
    ]);
  });
});

/** Runs the CLI without blocking this process (the stand-in servers answer it meanwhile). */
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

describe('nks tls verify', () => {
  beforeAll(() => {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" (or node scripts/build.mjs --only cli) first`);
  });

  it('prints VALID and what it checked for a truthful server; INVALID with the reason, exit 1, for a lying one', async () => {
    const s = await serve(truthful(docs));
    const caFile = path.join(dir, 'ca.pem');
    fs.writeFileSync(caFile, s.caPem);
    const args = ['tls', 'verify', '--url', s.url, '--ca', caFile, '--pcr0', PCR0, '--root', rootFile];
    const ok = await nks(args);
    expect({ status: ok.status, stderr: ok.stderr }).toEqual({ status: 0, stderr: '' });
    expect(ok.stdout).toMatch(new RegExp(`^VALID TLS key of ${s.url}: the connection ends in an attested enclave\\n  ok  TLS handshake`));
    expect(ok.stdout).toMatch(/ok {2}the attestation binds the served key/);
    const json = JSON.parse((await nks([...args, '--json'])).stdout);
    expect(json).toMatchObject({ valid: true, url: s.url, pcr0: PCR0, nonce: expect.stringMatching(/^[0-9a-f]{64}$/) });

    const enclave = await makeCsr(['localhost']);
    const liar = await serve(async ({ nonce }) => ({
      document: await docs.document({ userData: tlsUserData(enclave.spki), nonce: Buffer.from(nonce, 'hex') }),
    }));
    fs.writeFileSync(path.join(dir, 'liar-ca.pem'), liar.caPem);
    const bad = await nks(['tls', 'verify', '--url', liar.url, '--ca', path.join(dir, 'liar-ca.pem'), '--pcr0', PCR0, '--root', rootFile]);
    expect([bad.status, bad.stdout]).toEqual([1, expect.stringMatching(new RegExp(`^INVALID TLS key of ${liar.url}: TLS_KEY_MISMATCH: `))]);
    const untrusted = await nks(['tls', 'verify', '--url', s.url, '--pcr0', PCR0, '--root', rootFile]);
    expect([untrusted.status, untrusted.stdout]).toEqual([1, expect.stringMatching(/^INVALID TLS key of .*: TLS_HANDSHAKE: /)]);
    const image = await nks([...args.slice(0, 6), '--pcr0', OTHER_PCR0, '--root', rootFile, '--json']);
    expect([image.status, JSON.parse(image.stdout)]).toEqual([
      1,
      expect.objectContaining({ valid: false, attestationCode: 'PCR_MISMATCH' }),
    ]);
  });

  it('is a usage error (exit 2) without --pcr0 or --url, or with a URL that is not an https origin', async () => {
    for (const args of [
      ['tls', 'verify', '--url', 'https://127.0.0.1:1'],
      ['tls', 'verify', '--pcr0', PCR0],
      ['tls', 'verify', '--url', 'http://127.0.0.1:1', '--pcr0', PCR0],
      ['tls', 'verify', '--url', 'https://127.0.0.1:1/v1/x', '--pcr0', PCR0],
      ['tls', 'nope'],
    ]) {
      const r = await nks(args);
      expect([args, r.status]).toEqual([args, 2]);
    }
  });
});

/** A stand-in caller API: records each request and answers with `answer`. */
async function withApi<T>(
  answer: (method: string, url: string, body: any) => Promise<{ status?: number; body: unknown }>,
  run: (url: string, requests: Array<{ method: string; url: string; body: any; authorization?: string }>) => Promise<T>,
): Promise<T> {
  const requests: Array<{ method: string; url: string; body: any; authorization?: string }> = [];
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => (text += d.toString()));
    req.on('end', () => {
      const body = text ? JSON.parse(text) : undefined;
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        body,
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      });
      answer(req.method ?? '', req.url ?? '', body).then(
        ({ status = 200, body: b }) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(b)),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    return await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests);
  } finally {
    await new Promise((r) => server.close(r));
  }
}

describe('nks tls create | install | status', () => {
  const status = {
    state: 'installed',
    publicKey: Buffer.from('spki').toString('base64'),
    names: ['wallets.example.com'],
    notBefore: '2026-01-01T00:00:00.000Z',
    notAfter: '2026-04-01T00:00:00.000Z',
    fingerprint256: 'ab'.repeat(32),
  };

  it('create writes the CSR, prints the public key, checks the creation attestation with --pcr0, and says what to do next', async () => {
    const { csr, spki } = await makeCsr(['wallets.example.com', 'w2.example.com']);
    const created = async (pcr0 = PCR0) => ({
      publicKey: spki.toString('base64'),
      csr,
      attestation: (await docs.document({ pcr0, userData: tlsUserData(spki) })).toString('base64'),
      names: ['wallets.example.com', 'w2.example.com'],
      createdAt: '2026-01-01T00:00:00.000Z',
    });
    let answer = await created();
    await withApi(
      async () => ({ status: 201, body: answer }),
      async (url, requests) => {
        const csrOut = path.join(dir, 'wallets.csr');
        const base = ['tls', 'create', '--url', url, '--token', 'tok', '--name', 'wallets.example.com', '--name', 'w2.example.com'];
        const r = await nks([...base, '--csr-out', csrOut, '--pcr0', PCR0, '--root', rootFile]);
        expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
        expect(requests).toEqual([
          { method: 'POST', url: '/v1/tls/keys', body: { names: ['wallets.example.com', 'w2.example.com'] }, authorization: 'Bearer tok' },
        ]);
        expect(fs.readFileSync(csrOut, 'utf8')).toBe(csr.endsWith('\n') ? csr : `${csr}\n`);
        expect(r.stdout).toContain(`publicKey    ${spki.toString('base64')}`);
        expect(r.stdout).toMatch(/ok {2}the creation attestation binds this key \(PCR0 abab/);
        expect(r.stdout).toContain('nks tls install --chain fullchain.pem');
        expect(r.stdout).toContain('nks tls verify --url https://wallets.example.com --pcr0');
        // Without --pcr0 the document is not checked, and it says so; without --csr-out the CSR is printed.
        const unchecked = await nks(base);
        expect(unchecked.stdout).toMatch(/-- {2}the creation attestation is not checked/);
        expect(unchecked.stdout).toContain(csr.trim());
        // A document of another image: INVALID, exit 1.
        answer = await created(OTHER_PCR0);
        const bad = await nks([...base, '--pcr0', PCR0, '--root', rootFile]);
        expect([bad.status, bad.stdout]).toEqual([
          1,
          expect.stringMatching(/^INVALID the new TLS key's creation attestation: PCR_MISMATCH/),
        ]);
      },
    );
  });

  it('create refuses names the enclave would refuse, before asking it (exit 2)', async () => {
    for (const name of ['Wallets.example.com', '*.example.com', '127.0.0.1', 'a..b', '-a.example', 'x'.repeat(64)]) {
      const r = await nks(['tls', 'create', '--url', 'http://127.0.0.1:1', '--token', 't', `--name=${name}`]);
      expect([name, r.status, r.stderr]).toEqual([name, 2, expect.stringMatching(/lower-case DNS name/)]);
    }
    const dup = await nks(['tls', 'create', '--url', 'http://127.0.0.1:1', '--token', 't', '--name', 'a.example', '--name', 'a.example']);
    expect(dup.status).toBe(2);
    expect((await nks(['tls', 'create', '--url', 'http://127.0.0.1:1', '--token', 't'])).status).toBe(2);
  });

  it('install puts the chain file; status prints the state; a chain file without a certificate is a usage error', async () => {
    const view = {
      status,
      current: { publicKey: status.publicKey, names: status.names, notAfter: status.notAfter, installedAt: '2026-01-02T00:00:00.000Z' },
      pending: [{ publicKey: Buffer.from('other').toString('base64'), names: ['w2.example.com'], createdAt: '2026-02-01T00:00:00.000Z' }],
    };
    const chainFile = path.join(dir, 'fullchain.pem');
    const ca = await makeTestCa();
    const { certPem } = await ca.issueServer(['wallets.example.com']);
    fs.writeFileSync(chainFile, `${certPem}${ca.caPem}`);
    await withApi(
      async (method) => ({ body: method === 'PUT' ? status : view }),
      async (url, requests) => {
        const r = await nks(['tls', 'install', '--url', url, '--token', 'tok', '--chain', chainFile]);
        expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
        expect(requests[0]).toEqual({
          method: 'PUT',
          url: '/v1/tls/certificate',
          body: { chain: `${certPem}${ca.caPem}` },
          authorization: 'Bearer tok',
        });
        expect(r.stdout).toMatch(/^Installed the TLS certificate\nstate +installed/);
        expect(r.stdout).toContain(`certificate sha256  ${'ab'.repeat(32)}`);
        const st = await nks(['tls', 'status', '--url', url, '--token', 'tok', '--json']);
        expect(JSON.parse(st.stdout)).toEqual(view);
        const human = await nks(['tls', 'status', '--url', url, '--token', 'tok']);
        expect(human.stdout).toMatch(/^state +installed: the enclave serves the wallet routes with this key\n/);
        expect(human.stdout).toMatch(
          /pending key \(made, not installed\): w2\.example\.com, created 2026-02-01T00:00:00\.000Z, spki sha256 [0-9a-f]{64}/,
        );
      },
    );
    fs.writeFileSync(path.join(dir, 'not-a-chain.pem'), 'hello');
    const bad = await nks(['tls', 'install', '--url', 'http://127.0.0.1:1', '--token', 't', '--chain', path.join(dir, 'not-a-chain.pem')]);
    expect([bad.status, bad.stderr]).toEqual([2, expect.stringMatching(/holds no PEM certificate/)]);
    expect((await nks(['tls', 'install', '--url', 'http://127.0.0.1:1', '--token', 't'])).status).toBe(2);
  });
});
