/**
 * The SDK's promises and the CLI's conventions against the real stack (one per file): request ids the parent
 * takes, bigints of viem's own objects signed as they mean, every key method answering the one `Key` shape; and
 * `nks` as a program (dist/cli.js, dist/parent.js, dist/enclave.js, dist/dev.js: `npm run build`): `--help` on
 * every command and subcommand and on the daemons, `--version`, connection flags anywhere, `--json` errors,
 * missing arguments and bad PEM files, r/s/yParity, `-q`. The transport cases (NETWORK, CLIENT_TIMEOUT,
 * --socket, --ca) are in sdk-transport.test.ts.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseTransaction, recoverTransactionAddress, recoverTypedDataAddress } from 'viem';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';
import { KeystoreApiError, KeystoreClient, type Key } from '../src/sdk';
import { RELEASE_VERSION as version } from '@nks/shared/release';
import { helpFor, normalizeLine } from '../src/cli/help';

const DIST = path.resolve(__dirname, '../../dist');
jest.setTimeout(120_000);

const run = (program: string, args: string[], env: NodeJS.ProcessEnv = {}) =>
  new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(DIST, program), ...args], {
      env: { ...process.env, NKS_URL: '', NKS_TOKEN: '', NKS_DEV_DIR: '/nonexistent', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
const nks = (args: string[], env: NodeJS.ProcessEnv = {}) => run('cli.js', args, env);

/** Every command and subcommand of nks, with the synopsis its --help must show. */
const COMMANDS: Array<[string[], string]> = [
  [['keys'], 'nks keys create'],
  ...['create', 'get', 'list', 'disable', 'enable', 'successor', 'activate', 'cancel', 'history', 'verify'].map(
    (sub): [string[], string] => [
      ['keys', sub],
      `nks keys ${sub === 'enable' ? 'disable|enable' : sub === 'cancel' ? 'activate|cancel' : sub}`,
    ],
  ),
  [['projects'], 'nks projects create'],
  ...['create', 'get', 'list', 'disable', 'enable'].map((sub): [string[], string] => [
    ['projects', sub],
    `nks projects ${sub === 'enable' ? 'disable|enable' : sub}`,
  ]),
  ...['get', 'set', 'approve', 'evaluate'].map((sub): [string[], string] => [['policies', sub], `nks policies ${sub}`]),
  ...['create', 'install', 'status', 'verify'].map((sub): [string[], string] => [['tls', sub], `nks tls ${sub}`]),
  [['identity'], 'nks identity'],
  [['genesis', 'verify'], 'nks genesis verify <genesis.json>'],
  [['sign'], 'nks sign <keyId>'],
  [['attestation', 'get'], 'nks attestation get'],
  [['attestation', 'verify'], 'nks attestation verify <file>'],
  [['policy'], 'nks policy --parent-role-arn'],
  [['dev'], 'nks dev [--dir DIR]'],
  [['dev', 'token', 'create'], 'nks dev token create --scopes'],
  [['store', 'status'], 'nks store status|migrate'],
  [['store', 'migrate'], 'nks store status|migrate'],
];

describe('SDK and CLI conventions against the real stack', () => {
  let s: Stack;
  let full: KeystoreClient;
  let key: Key;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-client-conventions-'));
    await waitReady(s);
    full = new KeystoreClient({ url: s.url, token: s.tokens.full });
    key = (await full.createKey({ externalId: 'conventions', labels: { team: 'a' } })).key;
    env = { NKS_URL: s.url, NKS_TOKEN: s.tokens.full };
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('SDK: the parent takes the call’s request id (errors carry it); every key method answers the one Key shape', async () => {
    const err = (await full
      .getKey('no-such-key-0000000000', { requestId: 'sdk-conventions.1' })
      .catch((e: unknown) => e)) as KeystoreApiError;
    expect([err.code, err.requestId]).toEqual([expect.stringMatching(/KEY_NOT_FOUND|BAD_REQUEST|VALIDATION/), 'sdk-conventions.1']);
    // The parent logs it as the request's id.
    await full.signMessage(key.keyId, 'hi', { requestId: 'sdk-conventions.2' });
    for (let i = 0; !s.parentLogs().includes('"sdk-conventions.2"'); i++) {
      if (i > 200) throw new Error('the parent never logged the request id');
      await new Promise((r) => setTimeout(r, 50));
    }

    const admin = new KeystoreClient({ url: s.url, token: s.tokens.admin });
    const got = await full.getKey(key.keyId);
    const same = [
      (await full.createKey({ externalId: 'conventions', labels: { team: 'a' } })).key,
      await full.findKeyByExternalId('conventions'),
      (await full.listKeys({ externalId: 'conventions' })).keys[0],
    ];
    for (const k of same) expect(k).toEqual(got);
    const disabled = await admin.disableKey(key.keyId);
    const enabled = await admin.enableKey(key.keyId);
    // The same view, with the key's next record (each change is one, signed by the identity).
    expect({ ...enabled, record: got.record }).toEqual(got);
    expect({ ...disabled, disabled: false, record: got.record }).toEqual(got);
    expect(await full.getKey(key.keyId)).toEqual(enabled);
  });

  it("SDK: viem's own bigint objects, nested, are signed as they mean", async () => {
    const tx = {
      type: 'eip1559' as const,
      chainId: 31337,
      nonce: 7,
      to: `0x${'22'.repeat(20)}` as const,
      value: 10n ** 18n + 1n,
      gas: 21_000n,
      maxFeePerGas: 2n ** 40n,
      maxPriorityFeePerGas: 3n,
    };
    const signed = await full.signTransaction(key.keyId, tx);
    const serialized = signed.serializedTransaction as `0x${string}`;
    expect(parseTransaction(serialized)).toMatchObject({ value: tx.value, gas: tx.gas, maxFeePerGas: tx.maxFeePerGas, nonce: 7 });
    expect(await recoverTransactionAddress({ serializedTransaction: serialized as never })).toBe(key.address);

    const typedData = {
      domain: { name: 'Conventions', version: '1', chainId: 31337n, verifyingContract: `0x${'33'.repeat(20)}` as const },
      types: {
        Order: [
          { name: 'amounts', type: 'uint256[]' },
          { name: 'inner', type: 'Inner' },
        ],
        Inner: [{ name: 'n', type: 'uint64' }],
      },
      primaryType: 'Order' as const,
      message: { amounts: [1n, 2n ** 200n], inner: { n: 2n ** 63n } },
    };
    const sig = await full.signTypedData(key.keyId, typedData);
    expect(await recoverTypedDataAddress({ ...typedData, signature: sig.signature })).toBe(key.address);
  });

  it('nks --help on every command and subcommand (its synopsis), exit 0; --version', async () => {
    // Every command's help, as the program computes it (in-process: 30-odd Node starts are minutes here).
    for (const [words, synopsis] of COMMANDS) {
      const line = normalizeLine([...words, '--help']);
      expect({ words, line: line.help, out: helpFor(line.args.slice(0, 2).filter((a) => !a.startsWith('-'))) }).toEqual({
        words,
        line: true,
        out: expect.stringContaining(`  ${synopsis}`),
      });
    }
    // And as a program: --help or -h anywhere, even on a line that is otherwise a usage error.
    for (const args of [
      ['keys', 'get', '--help'],
      ['dev', 'token', 'create', '-h'],
      ['keys', 'get', '--bogus', '--help'],
    ]) {
      const r = await nks(args);
      expect({ args, status: r.status, stderr: r.stderr }).toEqual({ args, status: 0, stderr: '' });
      expect(r.stdout).toContain(args[0] === 'keys' ? '  nks keys get <keyId>\n' : '  nks dev token create --scopes');
      expect(r.stdout).toContain('--socket PATH');
    }
    const all = await nks(['--help']);
    expect([all.status, all.stdout]).toEqual([0, expect.stringMatching(/^nks — nitro-keystore command-line client/)]);
    const v = await nks(['--version']);
    expect([v.status, v.stdout]).toEqual([0, `nks ${version}\n`]);
    const unknown = await nks(['frobnicate', '--help']);
    expect([unknown.status, unknown.stderr]).toEqual([2, expect.stringContaining('unknown command "frobnicate"')]);
  });

  it('the daemons print their usage on --help and exit 0', async () => {
    for (const [program, args, usage] of [
      ['parent.js', ['--help'], 'usage: parent [--config FILE]'],
      ['parent.js', ['genesis', '--help'], 'parent genesis --config FILE'],
      ['parent.js', ['store', 'status', '-h'], 'parent store status|migrate'],
      ['enclave.js', ['--help'], 'usage: enclave [--config FILE] [--check-config]'],
      ['dev.js', ['--help'], 'usage: dev [--dir DIR]'],
    ] as const) {
      const r = await run(program, [...args]);
      expect({ program, args, status: r.status, out: r.stdout }).toEqual({ program, args, status: 0, out: expect.stringContaining(usage) });
    }
  });

  it('nks: connection flags anywhere on the line; sign shows r, s and yParity; -q prints only the id(s)', async () => {
    const conn = ['--url', s.url, '--token', s.tokens.full];
    for (const args of [
      [...conn, 'keys', 'get', key.keyId, '--json'],
      ['keys', ...conn, 'get', key.keyId, '--json'],
      ['--json', 'keys', 'get', `--url=${s.url}`, key.keyId, '--token', s.tokens.full],
    ]) {
      const r = await nks(args);
      expect({ args, status: r.status, stderr: r.stderr }).toEqual({ args, status: 0, stderr: '' });
      expect(JSON.parse(r.stdout)).toMatchObject({ keyId: key.keyId, address: key.address });
    }
    const sign = await nks(['sign', key.keyId, '--message', 'hello'], env);
    expect(sign.status).toBe(0);
    for (const field of ['signature', 'r', 's', 'yParity', 'v', 'hash']) expect(sign.stdout).toMatch(new RegExp(`^${field} +\\S+$`, 'm'));
    const json = await nks(['sign', key.keyId, '--message', 'hello', '--json'], env);
    const res = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(sign.stdout).toContain(`r          ${res.r as string}`);
    expect(res).toMatchObject({
      r: expect.stringMatching(/^0x[0-9a-f]{64}$/),
      s: expect.stringMatching(/^0x[0-9a-f]{64}$/),
      yParity: expect.any(Number),
    });

    const quietSign = await nks(['-q', 'sign', key.keyId, '--message', 'hello'], env);
    expect(quietSign.stdout).toBe(`${res.signature as string}\n`);
    const created = await nks(['keys', 'create', '-q', '--external-id', 'quiet-1'], env);
    expect(created.stdout).toMatch(/^\S+\n$/);
    const listed = await nks(['keys', 'list', '--external-id', 'quiet-1', '-q'], env);
    expect(listed.stdout).toBe(created.stdout);
    expect((await full.getKey(created.stdout.trim())).externalId).toBe('quiet-1');
  });

  it('nks --json errors are {"error": {code, message}} on stdout; usage errors name the missing argument; a bad PEM file is named', async () => {
    const notFound = await nks(['keys', 'get', 'no-such-key-0000000000', '--json'], env);
    expect([notFound.status, notFound.stderr]).toEqual([1, '']);
    expect(JSON.parse(notFound.stdout)).toEqual({
      error: expect.objectContaining({
        code: expect.any(String),
        message: expect.any(String),
        status: expect.any(Number),
        retryable: false,
      }),
    });
    const usage = await nks(['--json', 'keys', 'get'], env);
    expect([usage.status, usage.stderr, JSON.parse(usage.stdout)]).toEqual([
      2,
      '',
      { error: { code: 'USAGE', message: 'missing <keyId>' } },
    ]);
    const unreachable = await nks(['keys', 'get', key.keyId, '--json', '--url', 'http://127.0.0.1:9', '--token', 't']);
    expect([unreachable.status, JSON.parse(unreachable.stdout)]).toEqual([
      1,
      { error: expect.objectContaining({ code: 'NETWORK', status: 0, retryable: true }) },
    ]);

    const missing = await nks(['keys', 'get'], env);
    expect([missing.status, missing.stdout]).toEqual([2, '']);
    expect(missing.stderr).toBe('nks: missing <keyId>\nusage:\n  nks keys get <keyId>\n(see nks keys get --help)\n');
    const extra = await nks(['projects', 'get', 'a', 'b'], env);
    expect([extra.status, extra.stderr]).toEqual([
      2,
      expect.stringMatching(/^nks: unexpected argument "b"\nusage:\n {2}nks projects get <projectId>/),
    ]);

    const dir = tempRunDir();
    try {
      const bad = path.join(dir, 'root.pem');
      fs.writeFileSync(bad, 'hello\n');
      const r = await nks(['attestation', 'verify', bad, '--root', bad, '--allow-unpinned']);
      expect([r.status, r.stderr]).toEqual([2, expect.stringMatching(/^nks: --root .*root\.pem holds no PEM certificate/)]);
      fs.writeFileSync(bad, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
      const broken = await nks(['keys', 'get', key.keyId, '--ca', bad], env);
      expect([broken.status, broken.stderr]).toEqual([
        2,
        expect.stringMatching(/^nks: --ca .*root\.pem: certificate 1 is not a valid PEM certificate/),
      ]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
