/**
 * README.md's "Use it from viem and ethers" examples, run as a user runs them: each ```js block of that section
 * is bundled as it stands (esbuild; the package names `nitro-keystore-client`, `/viem` and `/ethers` mapped to
 * client/src, as the published package maps them) and run by node in a process of its own, with the keystore
 * (the whole test stack) and a local EVM with Sepolia's chain id behind `KEYSTORE_URL` and `RPC_URL`. Each must
 * send a transfer the chain mines from the key and print a message signature that recovers to the key.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { build, type Plugin } from 'esbuild';
import { verifyMessage, type Hex } from 'viem';
import { sepolia } from 'viem/chains';
import type { Key } from '../../client/src/sdk';
import { startChain, type Chain } from './harness';
import { startKeystore, type ChainKeystore } from './keystore';
import { serveRpc } from './rpc-server';

const root = path.resolve(__dirname, '../..');
const RECIPIENT = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';

/** The ```js blocks of README.md's section `title`. */
function readmeExamples(title: string, readme = readFileSync(path.join(root, 'README.md'), 'utf8')): string[] {
  const start = readme.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`README.md has no section "## ${title}"`);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/** The client package's specifiers, as a user imports them, resolved to the sources here. */
const clientPackage: Plugin = {
  name: 'nitro-keystore-client',
  setup(b) {
    const entries: Record<string, string> = {
      'nitro-keystore-client': 'client/src/sdk.ts',
      'nitro-keystore-client/viem': 'client/src/adapters/viem.ts',
      'nitro-keystore-client/ethers': 'client/src/adapters/ethers.ts',
    };
    b.onResolve({ filter: /^nitro-keystore-client(\/.*)?$/ }, (args) => {
      const file = entries[args.path];
      return file ? { path: path.join(root, file) } : { errors: [{ text: `the client package has no export ${args.path}` }] };
    });
  },
};

let chain: Chain;
let keystore: ChainKeystore;
let rpc: { url: string; close(): Promise<void> };
let dir: string;
const examples = readmeExamples('Use it from viem and ethers');

beforeAll(async () => {
  [chain, keystore] = await Promise.all([startChain({ chainId: sepolia.id }), startKeystore('adapters-readme')]);
  rpc = await serveRpc(chain);
  dir = mkdtempSync(path.join(tmpdir(), 'nks-readme-'));
}, 60_000);

afterAll(async () => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  await rpc?.close();
  await keystore?.stop();
  await chain?.close();
});

test('the section has a viem example and an ethers example', () => {
  expect(examples).toHaveLength(2);
  expect(examples[0]).toContain("from 'nitro-keystore-client/viem'");
  expect(examples[1]).toContain("from 'nitro-keystore-client/ethers'");
});

/** Bundles `code` (an ES module) and runs it with node; resolves to its stdout. */
async function run(name: string, code: string, env: Record<string, string>): Promise<string> {
  const outfile = path.join(dir, `${name}.mjs`);
  await build({
    stdin: { contents: code, resolveDir: root, sourcefile: `README-${name}.mjs`, loader: 'js' },
    absWorkingDir: root,
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    plugins: [clientPackage],
    // CommonJS dependencies bundled into an ES module still call require for Node's built-ins.
    banner: { js: "import { createRequire as nksCreateRequire } from 'node:module'; const require = nksCreateRequire(import.meta.url);" },
    logLevel: 'silent',
  });
  const { stdout } = await promisify(execFile)(process.execPath, [outfile], {
    env: { PATH: process.env.PATH ?? '', ...env },
    timeout: 60_000,
  });
  return stdout;
}

test.each([
  ['viem', 0],
  ['ethers', 1],
])(
  'the %s example sends a transfer from the key and signs a message with it',
  async (name, i) => {
    const key: Key = (await keystore.client.createKey({ externalId: `readme-${name}` })).key;
    await chain.fund(key.address);
    const stdout = await run(name, examples[i]!, {
      KEYSTORE_URL: keystore.stack.url,
      KEYSTORE_TOKEN: keystore.stack.tokens.full,
      KEY_ID: key.keyId,
      RPC_URL: rpc.url,
    });

    const hash = /^sent (0x[0-9a-f]{64})$/m.exec(stdout)?.[1] as Hex | undefined;
    const signature = /^signed (0x[0-9a-f]{130})$/m.exec(stdout)?.[1] as Hex | undefined;
    expect({ stdout, hash, signature }).toEqual({ stdout, hash: expect.any(String), signature: expect.any(String) });
    const mined = await chain.publicClient.getTransaction({ hash: hash! });
    expect(mined).toMatchObject({ from: key.address.toLowerCase(), to: RECIPIENT.toLowerCase(), chainId: sepolia.id });
    expect(await verifyMessage({ address: key.address, message: 'hello from the keystore', signature: signature! })).toBe(true);
  },
  60_000,
);

/** The packages esbuild bundles for `entry` (node_modules folders, by name). */
async function bundledPackages(entry: string): Promise<Set<string>> {
  const { metafile } = await build({
    absWorkingDir: root,
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    write: false,
    metafile: true,
    outfile: 'out.mjs',
    logLevel: 'silent',
  });
  const names = Object.keys(metafile.inputs).map((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(f)?.[1]);
  return new Set(names.filter((n): n is string => n !== undefined));
}

test("ethers stays out of the SDK's import graph: only the ethers adapter brings it in", async () => {
  expect(await bundledPackages('client/src/sdk.ts')).not.toContain('ethers');
  expect(await bundledPackages('client/src/adapters/viem.ts')).not.toContain('ethers');
  expect(await bundledPackages('client/src/adapters/ethers.ts')).toContain('ethers');
}, 60_000);
