/**
 * `nks keys verify`, `nks identity` and `nks genesis verify` as programs (dist/cli.js: `npm run build`, or
 * `node scripts/build.mjs --only cli`): what they print, exit 0 / 1 with the reason / 2 for usage, against files
 * and against a stand-in API server that answers what a parent chooses.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { identityUserData } from '@nks/shared/attestation/identity';
import { tempRunDir } from '@nks/shared-test/helpers';
import {
  GENESIS_PCR0,
  identityBlob,
  makeDocuments,
  makeGenesisOutput,
  makeIdentity,
  makeKeyView,
  OTHER_PCR0,
  PCR0,
  type Documents,
  type Identity,
} from './keystore-fixtures';

const CLI = path.resolve(__dirname, '../../dist/cli.js');
jest.setTimeout(120_000);

/** Runs the CLI without blocking this process (the stand-in server answers it meanwhile). */
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

let dir: string;
let identity: Identity;
let docs: Documents;
let rootFile: string;

beforeAll(async () => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" (or node scripts/build.mjs --only cli) first`);
  dir = tempRunDir('nks-cli-verify-');
  identity = makeIdentity();
  docs = await makeDocuments();
  rootFile = path.join(dir, 'root.pem');
  fs.writeFileSync(rootFile, docs.ca.rootPem);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A stand-in caller API: `answer` decides each response, as a parent would. */
async function withServer<T>(
  answer: (url: URL, req: http.IncomingMessage) => Promise<{ status?: number; body: unknown }>,
  run: (url: string, requests: Array<{ url: string; authorization?: string }>) => Promise<T>,
): Promise<T> {
  const requests: Array<{ url: string; authorization?: string }> = [];
  const server = http.createServer((req, res) => {
    requests.push({ url: req.url ?? '', ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    answer(new URL(req.url ?? '/', 'http://x'), req).then(
      ({ status = 200, body }) => {
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      },
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    return await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests);
  } finally {
    await new Promise((r) => server.close(r));
  }
}

describe('nks keys verify', () => {
  it('verifies a saved view offline and prints what it checked; --json for scripts', async () => {
    const { view } = await makeKeyView(identity, docs);
    const file = path.join(dir, 'view.json');
    fs.writeFileSync(file, JSON.stringify(view));
    const args = ['keys', 'verify', 'key-1', '--view', file, '--identity', identity.publicKey, '--pcr0', PCR0, '--root', rootFile];
    const r = await nks(args);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(r.stdout).toMatch(/^VALID key key-1\n  ok  record signature verifies with the pinned identity/);
    expect(r.stdout).toMatch(/ok {2}birth attestation verifies .*PCR0 abab/);
    expect(r.stdout).toContain(`address          ${view.address}`);
    const json = await nks([...args, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({
      valid: true,
      identity: identity.publicKey,
      record: { keyId: 'key-1', subject: 'alice' },
    });
  });

  it('exits 1 with the reason when the record is not the pinned identity’s, or the birth image is not approved', async () => {
    const { view } = await makeKeyView(identity, docs);
    const file = path.join(dir, 'view-2.json');
    fs.writeFileSync(file, JSON.stringify(view));
    const base = ['keys', 'verify', 'key-1', '--view', file, '--root', rootFile];
    const other = await nks([...base, '--identity', makeIdentity().publicKey, '--pcr0', PCR0]);
    expect([other.status, other.stdout]).toEqual([1, expect.stringMatching(/^INVALID key key-1: RECORD_SIGNATURE: .*pinned identity/)]);
    const image = await nks([...base, '--identity', identity.publicKey, '--pcr0', OTHER_PCR0]);
    expect([image.status, image.stdout]).toEqual([1, expect.stringMatching(/^INVALID key key-1: ATTESTATION: .*PCR_MISMATCH/)]);
    // Several approved PCR0s: any one will do.
    const either = await nks([...base, '--identity', identity.publicKey, '--pcr0', OTHER_PCR0, '--pcr0', PCR0]);
    expect(either.status).toBe(0);
    const json = await nks([...base, '--identity', identity.publicKey, '--pcr0', OTHER_PCR0, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ valid: false, code: 'ATTESTATION', attestationCode: 'PCR_MISMATCH' });
  });

  it('takes the identity from a genesis output or identity file', async () => {
    const { view } = await makeKeyView(identity, docs, { attest: false });
    const file = path.join(dir, 'view-3.json');
    fs.writeFileSync(file, JSON.stringify(view));
    const idFile = path.join(dir, 'identity-section.json');
    fs.writeFileSync(idFile, JSON.stringify({ identity: { publicKey: identity.publicKey } }));
    const r = await nks(['keys', 'verify', 'key-1', '--view', file, '--identity', idFile, '--pcr0', PCR0]);
    expect([r.status, r.stdout]).toEqual([0, expect.stringContaining('no birth attestation')]);
    const required = await nks(['keys', 'verify', 'key-1', '--view', file, '--identity', idFile, '--pcr0', PCR0, '--require-birth']);
    expect([required.status, required.stdout]).toEqual([1, expect.stringContaining('NO_BIRTH_ATTESTATION')]);
  });

  it('fetches the key from the API and checks what the parent answers', async () => {
    const { view } = await makeKeyView(identity, docs);
    let served: object = view;
    await withServer(
      () => Promise.resolve({ body: served }),
      async (url, requests) => {
        const args = [
          'keys',
          'verify',
          'key-1',
          '--url',
          url,
          '--token',
          't',
          '--identity',
          identity.publicKey,
          '--pcr0',
          PCR0,
          '--root',
          rootFile,
        ];
        expect((await nks(args)).status).toBe(0);
        expect(requests[0]).toEqual({ url: '/v1/keys/key-1', authorization: 'Bearer t' });
        // The parent shows the key as another user's: its signed record says otherwise.
        served = { ...view, externalId: 'mallory' };
        const r = await nks(args);
        expect([r.status, r.stdout]).toEqual([
          1,
          expect.stringMatching(/VIEW_MISMATCH: .*externalId: the view says "mallory", the record "alice"/),
        ]);
      },
    );
  });

  it('exits 1 when the API answers the genuine view of another key than the one asked for (review 16, F1)', async () => {
    const alice = await makeKeyView(identity, docs, { keyId: 'alice-key', externalId: 'alice' });
    const mallory = await makeKeyView(identity, docs, { keyId: 'mallory-key', externalId: 'mallory' });
    let served: object = mallory.view; // whatever key is asked for, the parent answers mallory's (genuine, self-consistent)
    await withServer(
      () => Promise.resolve({ body: served }),
      async (url, requests) => {
        const args = (keyId: string, ...extra: string[]) => [
          'keys',
          'verify',
          keyId,
          '--url',
          url,
          '--token',
          't',
          '--identity',
          identity.publicKey,
          '--pcr0',
          PCR0,
          '--root',
          rootFile,
          ...extra,
        ];
        const r = await nks(args('alice-key'));
        expect(requests.map((q) => q.url)).toEqual(['/v1/keys/alice-key']);
        expect([r.status, r.stdout]).toEqual([
          1,
          expect.stringMatching(
            /^INVALID key alice-key: KEY_MISMATCH: the signed record is of key mallory-key .*keyId: you asked for "alice-key", the record is of "mallory-key"/,
          ),
        ]);
        expect(r.stdout).not.toMatch(/^VALID/m);
        const json = await nks([...args('alice-key'), '--json']);
        expect([json.status, JSON.parse(json.stdout)]).toEqual([1, expect.objectContaining({ valid: false, code: 'KEY_MISMATCH' })]);
        // The genuine answer: VALID, with the record's key id and address.
        served = alice.view;
        const ok = await nks(args('alice-key', '--external-id', 'alice'));
        expect({ status: ok.status, stderr: ok.stderr }).toEqual({ status: 0, stderr: '' });
        expect(ok.stdout).toMatch(/^VALID key alice-key\n/);
        expect(ok.stdout).toContain('  ok  the record is of the key asked for: keyId alice-key, project default, externalId "alice"\n');
        expect(ok.stdout).toContain(
          '  ok  the view agrees with the record: keyId, address, publicKey, project default, externalId "alice", state active, disabled false\n',
        );
        expect(ok.stdout).toContain(`keyId            alice-key\n`);
        expect(ok.stdout).toContain(`address          ${alice.view.address}\n`);
        // The right key id, the wrong owner.
        for (const extra of [
          ['--external-id', 'bob'],
          ['--subject', 'bob'],
          ['--project', 'p_0123456789abcdef'],
        ]) {
          const wrong = await nks(args('alice-key', ...extra));
          expect({ extra, status: wrong.status, stdout: wrong.stdout }).toEqual({
            extra,
            status: 1,
            stdout: expect.stringMatching(/^INVALID key alice-key: KEY_MISMATCH: /),
          });
        }
      },
    );
  });

  it('exits 1 when the view leaves out who the key belongs to, its project, state or disabled flag (review 16, F2)', async () => {
    const bob = await makeKeyView(identity, docs, { keyId: 'bob-key', externalId: 'bob' });
    const { externalId: _e, projectId: _p, state: _s, disabled: _d, ...stripped } = bob.view;
    await withServer(
      () => Promise.resolve({ body: stripped }),
      async (url) => {
        const r = await nks([
          'keys',
          'verify',
          'bob-key',
          '--url',
          url,
          '--token',
          't',
          '--identity',
          identity.publicKey,
          '--pcr0',
          PCR0,
          '--root',
          rootFile,
        ]);
        expect([r.status, r.stdout]).toEqual([
          1,
          expect.stringMatching(/^INVALID key bob-key: VIEW_MISMATCH: .*externalId: the view says nothing, the record "bob"/),
        ]);
      },
    );
  });

  it('exits 2 on usage errors', async () => {
    const file = path.join(dir, 'view.json');
    for (const [args, message] of [
      [['keys', 'verify', 'key-1', '--view', file, '--pcr0', PCR0], /--identity is required/],
      [['keys', 'verify', 'key-1', '--view', file, '--identity', identity.publicKey], /--pcr0 is required/],
      [
        ['keys', 'verify', 'key-9', '--view', file, '--identity', identity.publicKey, '--pcr0', PCR0],
        /is the view of key key-1, not key-9/,
      ],
      [['keys', 'verify', 'key-1', '--view', file, '--identity', '0x1234', '--pcr0', PCR0], /--identity takes 0x and 64/],
      [['keys', 'verify', 'key-1', '--view', file, '--identity', identity.publicKey, '--pcr0', 'abc'], /--pcr0 must be 48 bytes/],
    ] as Array<[string[], RegExp]>) {
      const r = await nks(args);
      expect({ args, status: r.status, stderr: r.stderr }).toEqual({ args, status: 2, stderr: expect.stringMatching(message) });
    }
  });
});

describe('nks identity', () => {
  /** A stand-in API whose identity answer a parent controls. */
  const identityAnswer =
    (over: { replayNonce?: Buffer; publicKey?: string; pcr0?: string } = {}) =>
    async (url: URL) => {
      const nonce = over.replayNonce ?? Buffer.from((url.searchParams.get('nonce') ?? '0x').slice(2), 'hex');
      return {
        body: {
          publicKey: identity.publicKey,
          genesisDocument: (await docs.document({ pcr0: GENESIS_PCR0, userData: identityUserData(identity.publicKey) })).toString('base64'),
          attestation: (
            await docs.document({ pcr0: over.pcr0 ?? PCR0, userData: identityUserData(over.publicKey ?? identity.publicKey), nonce })
          ).toString('base64'),
        },
      };
    };

  it('asks with a random nonce, needs no token, and checks the document binds the key and the nonce', async () => {
    await withServer(identityAnswer(), async (url, requests) => {
      const r = await nks([
        'identity',
        '--url',
        url,
        '--pcr0',
        PCR0,
        '--root',
        rootFile,
        '--identity',
        identity.publicKey,
        '--genesis-pcr0',
        GENESIS_PCR0,
      ]);
      expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
      expect(r.stdout).toMatch(new RegExp(`^VALID keystore identity ${identity.publicKey}\n  ok  the identity is the pinned one`));
      expect(r.stdout).toContain('genesis document verifies');
      expect(requests).toHaveLength(1);
      expect(requests[0]?.url).toMatch(/^\/v1\/identity\?nonce=0x[0-9a-f]{32}$/);
      expect(requests[0]?.authorization).toBeUndefined();
      const again = await nks(['identity', '--url', url, '--pcr0', PCR0, '--root', rootFile]);
      expect(again.stdout).toContain('--  the public key is not compared with a pinned one (--identity)');
      expect(requests[1]?.url).not.toBe(requests[0]?.url); // a new nonce each time
    });
  });

  it('exits 1 for a replayed document, another identity, or an image that is not approved', async () => {
    const cases: Array<[Parameters<typeof identityAnswer>[0], string[], RegExp]> = [
      [{ replayNonce: Buffer.from('00112233', 'hex') }, [], /ATTESTATION: fresh identity attestation: NONCE_MISMATCH/],
      [{ publicKey: makeIdentity().publicKey }, [], /ATTESTATION: .*USER_DATA_MISMATCH/],
      [{ pcr0: OTHER_PCR0 }, [], /ATTESTATION: .*PCR_MISMATCH/],
      [{}, ['--identity', makeIdentity().publicKey], /IDENTITY_MISMATCH/],
    ];
    for (const [over, extra, message] of cases) {
      await withServer(identityAnswer(over), async (url) => {
        const r = await nks(['identity', '--url', url, '--pcr0', PCR0, '--root', rootFile, ...extra]);
        expect([r.status, r.stdout]).toEqual([1, expect.stringMatching(new RegExp(`^INVALID keystore identity: ${message.source}`))]);
      });
    }
  });

  it("defaults --identity, --pcr0 and --root to the dev stack's only when talking to the dev stack", async () => {
    const { view } = await makeKeyView(identity, docs);
    await withServer(
      (url) => (url.pathname === '/v1/keys/key-1' ? Promise.resolve({ body: view }) : identityAnswer()(url)),
      async (url) => {
        const devDir = path.join(dir, 'dev');
        fs.mkdirSync(devDir, { recursive: true });
        const devJson = (pinned: string) =>
          fs.writeFileSync(path.join(devDir, 'dev.json'), JSON.stringify({ url, pcr0: PCR0, rootPem: rootFile, identity: pinned }));
        fs.writeFileSync(path.join(devDir, 'token'), 't\n');
        devJson(identity.publicKey);
        const dev = await nks(['identity', '--dev-dir', devDir]);
        expect([dev.status, dev.stdout]).toEqual([
          0,
          expect.stringMatching(/^VALID keystore identity .*\n {2}ok {2}the identity is the pinned one/),
        ]);
        const key = await nks(['keys', 'verify', 'key-1', '--dev-dir', devDir]);
        expect([key.status, key.stdout]).toEqual([0, expect.stringMatching(/^VALID key key-1/)]);
        const elsewhere = await nks(['identity', '--dev-dir', devDir, '--url', url]);
        expect([elsewhere.status, elsewhere.stderr]).toEqual([2, expect.stringMatching(/--pcr0 is required/)]);
        // The dev stack's identity is what the enclave's, and the key's record's, must be.
        devJson(makeIdentity().publicKey);
        expect((await nks(['identity', '--dev-dir', devDir])).stdout).toMatch(/IDENTITY_MISMATCH/);
        expect((await nks(['keys', 'verify', 'key-1', '--dev-dir', devDir])).stdout).toMatch(/RECORD_SIGNATURE/);
      },
    );
  });
});

describe('nks genesis verify', () => {
  it('verifies the genesis output and writes the identity section of the enclave configuration, never over a file', async () => {
    const nonce = Buffer.from('5eed5eed5eed5eed', 'hex');
    const file = path.join(dir, 'genesis.json');
    const output = await makeGenesisOutput(identity, docs, nonce);
    fs.writeFileSync(file, JSON.stringify(output));
    const out = path.join(dir, 'identity.json');
    const args = ['genesis', 'verify', file, '--pcr0', GENESIS_PCR0, '--nonce', `0x${nonce.toString('hex')}`, '--root', rootFile];
    const r = await nks([...args, '--out', out]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(r.stdout).toMatch(new RegExp(`^VALID genesis of keystore identity ${identity.publicKey}`));
    expect(r.stdout).toContain('  ok  the identity signed this blob (blobSignature over SHA-256("nks-identity-blob-v1" ‖ blob))\n');
    expect(r.stdout).toContain(`wrote the enclave configuration's identity section to ${out}`);
    expect(JSON.parse(fs.readFileSync(out, 'utf8'))).toEqual({
      identity: {
        publicKey: identity.publicKey,
        blob: output.blob,
        genesisDocument: output.attestation,
        defaultProject: output.defaultProject,
      },
    });
    const again = await nks([...args, '--out', out]);
    expect([again.status, again.stderr]).toEqual([2, expect.stringMatching(/cannot write .*EEXIST/)]);
  });

  it('exits 1 for a blob the identity did not sign and writes nothing (review 16, F10)', async () => {
    const nonce = Buffer.from('0badc0de', 'hex');
    const genuine = await makeGenesisOutput(identity, docs, nonce);
    const out = path.join(dir, 'identity-swapped.json');
    const cases: Array<[string, object, RegExp]> = [
      // The parent keeps the real blob and hands over one it made: the same header, junk inside.
      [
        'swapped',
        { blob: identityBlob(identity.publicKey) },
        /GENESIS_MISMATCH: the identity blob's signature \(blobSignature\) does not verify/,
      ],
      ['unsigned', { blobSignature: undefined }, /GENESIS_MISMATCH: the genesis output has no blobSignature/],
    ];
    for (const [name, change, message] of cases) {
      const file = path.join(dir, `genesis-${name}.json`);
      fs.writeFileSync(file, JSON.stringify({ ...genuine, ...change }));
      const r = await nks(['genesis', 'verify', file, '--pcr0', GENESIS_PCR0, '--nonce', '0x0badc0de', '--root', rootFile, '--out', out]);
      expect({ name, status: r.status, stdout: r.stdout }).toEqual({
        name,
        status: 1,
        stdout: expect.stringMatching(new RegExp(`^INVALID genesis: ${message.source}`)),
      });
      expect(fs.existsSync(out)).toBe(false);
    }
  });

  it('exits 1 for the wrong image or nonce and writes nothing; 2 without the genesis PCR0 or nonce', async () => {
    const nonce = Buffer.from('0badc0de', 'hex');
    const file = path.join(dir, 'genesis-2.json');
    fs.writeFileSync(file, JSON.stringify(await makeGenesisOutput(identity, docs, nonce)));
    const out = path.join(dir, 'identity-2.json');
    const image = await nks(['genesis', 'verify', file, '--pcr0', PCR0, '--nonce', '0x0badc0de', '--root', rootFile, '--out', out]);
    expect([image.status, image.stdout]).toEqual([1, expect.stringMatching(/^INVALID genesis: ATTESTATION: .*PCR_MISMATCH/)]);
    const replay = await nks([
      'genesis',
      'verify',
      file,
      '--pcr0',
      GENESIS_PCR0,
      '--nonce',
      '0x0badc0df',
      '--root',
      rootFile,
      '--out',
      out,
    ]);
    expect([replay.status, replay.stdout]).toEqual([1, expect.stringContaining('NONCE_MISMATCH')]);
    expect(fs.existsSync(out)).toBe(false);
    expect((await nks(['genesis', 'verify', file, '--nonce', '0x0badc0de'])).stderr).toMatch(
      /--pcr0 is required: the genesis image's PCR0/,
    );
    expect((await nks(['genesis', 'verify', file, '--pcr0', GENESIS_PCR0])).status).toBe(2);
    expect((await nks(['genesis', 'check', file])).status).toBe(2);
  });
});
