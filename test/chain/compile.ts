/**
 * Solidity for the chain tests: sources compiled by solc-js from npm (pinned in package.json), imports resolved
 * from node_modules only (@openzeppelin/contracts, @account-abstraction/contracts-v06/v07/v08), and the output
 * cached by the hash of everything that
 * determines it (compiler and library versions, settings, sources) under node_modules/.cache/nks-chain, so only
 * the first run pays for the compiler. No network at any time.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Abi, Hex } from 'viem';

const root = path.resolve(__dirname, '../..');
const nodeModules = path.join(root, 'node_modules');
/** The test contracts. One imports another by its file name, and both are given to `compile` (so both are hashed). */
export const CONTRACTS_DIR = path.join(__dirname, 'contracts');
export const CACHE_DIR = path.join(nodeModules, '.cache', 'nks-chain');

/** What a test needs of a compiled contract. `bytecode` is 0x (empty) for abstract contracts and interfaces. */
export interface Artifact {
  contractName: string;
  sourceName: string;
  abi: Abi;
  bytecode: Hex;
}

export interface CompileOptions {
  /** Default `prague`, the chain's hardfork. */
  evmVersion?: string;
  /** Optimizer runs; default 200. */
  optimizerRuns?: number;
}

interface SolcError {
  severity: 'error' | 'warning' | 'info';
  formattedMessage?: string;
  message: string;
}
interface SolcOutput {
  errors?: SolcError[];
  contracts?: Record<string, Record<string, { abi: Abi; evm: { bytecode: { object: string } } }>>;
}

/** The npm packages test contracts may import from; their versions are part of the cache key. */
const IMPORTABLE_PACKAGES = [
  '@openzeppelin/contracts',
  '@account-abstraction/contracts-v06',
  '@account-abstraction/contracts-v07',
  '@account-abstraction/contracts-v08',
];

const versionOf = (pkg: string): string =>
  (JSON.parse(fs.readFileSync(path.join(nodeModules, pkg, 'package.json'), 'utf8')) as { version: string }).version;

/** The sources of test/chain/contracts files, by file name, ready for `compile`. */
export function contractSources(...files: string[]): Record<string, string> {
  return Object.fromEntries(files.map((f) => [f, fs.readFileSync(path.join(CONTRACTS_DIR, f), 'utf8')]));
}

/**
 * Every contract in test/chain/contracts, compiled together: one solc run (and one cache entry) serves every
 * chain test file, which matters on a fresh machine where each run of the compiler costs seconds.
 */
export function compileTestContracts(): Promise<Record<string, Artifact>> {
  const files = fs.readdirSync(CONTRACTS_DIR).filter((f) => f.endsWith('.sol'));
  return compile(contractSources(...files.sort()));
}

/**
 * Compiles `sources` (source unit name → Solidity text) and returns the contracts they define (not those of
 * their imports), by contract name. A compiler error throws with solc's messages; a name defined twice throws.
 */
export async function compile(sources: Record<string, string>, options: CompileOptions = {}): Promise<Record<string, Artifact>> {
  const input = {
    language: 'Solidity',
    sources: Object.fromEntries(Object.entries(sources).map(([name, content]) => [name, { content }])),
    settings: {
      evmVersion: options.evmVersion ?? 'prague',
      optimizer: { enabled: true, runs: options.optimizerRuns ?? 200 },
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
  // An imported library is fixed by its version (npm packages are immutable), so its files need not be hashed.
  const libraries = Object.fromEntries(IMPORTABLE_PACKAGES.map((p) => [p, versionOf(p)]));
  const key = createHash('sha256')
    .update(JSON.stringify({ solc: versionOf('solc'), libraries, input }))
    .digest('hex');
  const cached = path.join(CACHE_DIR, `solc-${key}.json`);
  let output: SolcOutput;
  if (fs.existsSync(cached)) {
    output = JSON.parse(fs.readFileSync(cached, 'utf8')) as SolcOutput;
  } else {
    output = await runSolc(input);
    fs.mkdirSync(CACHE_DIR, { recursive: true });
    // Parallel jest workers may compile the same input: each writes its own file and renames it into place.
    const tmp = `${cached}.${process.pid}.${Date.now()}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(output));
    fs.renameSync(tmp, cached);
  }
  // Failures are cached too: the same input fails the same way, and a test of a failure stays quick.
  failOnErrors(output);
  return artifactsOf(output, Object.keys(sources));
}

function failOnErrors(output: SolcOutput): void {
  const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length > 0) throw new Error(`solc: ${errors.map((e) => e.formattedMessage ?? e.message).join('\n')}`);
}

function artifactsOf(output: SolcOutput, sourceNames: string[]): Record<string, Artifact> {
  const artifacts: Record<string, Artifact> = {};
  for (const sourceName of sourceNames) {
    for (const [contractName, c] of Object.entries(output.contracts?.[sourceName] ?? {})) {
      if (artifacts[contractName]) throw new Error(`contract ${contractName} is defined in two sources; compile them apart`);
      artifacts[contractName] = { contractName, sourceName, abi: c.abi, bytecode: `0x${c.evm.bytecode.object}` };
    }
  }
  return artifacts;
}

/** solc-js in a child process (test/chain/solc-worker.cjs): see there why. */
function runSolc(input: object): Promise<SolcOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'solc-worker.cjs')], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`solc worker exited with ${code}: ${Buffer.concat(err).toString('utf8')}`));
      try {
        resolve(JSON.parse(Buffer.concat(out).toString('utf8')) as SolcOutput);
      } catch (e) {
        reject(new Error(`solc worker wrote no JSON: ${String(e)}`));
      }
    });
    child.stdin.end(JSON.stringify({ input, roots: [nodeModules] }));
  });
}

/** A contract as @openzeppelin/contracts publishes it compiled (build/contracts/NAME.json): no solc needed. */
export function openZeppelinArtifact(name: string): Artifact {
  return publishedArtifact(path.join('@openzeppelin', 'contracts', 'build', 'contracts'), name);
}

/** The ERC-4337 EntryPoint versions exercised, each its @account-abstraction/contracts release through an npm alias. */
export const ENTRY_POINT_VERSIONS = ['0.6', '0.7', '0.8'] as const;
export type EntryPointVersion = (typeof ENTRY_POINT_VERSIONS)[number];

/**
 * A contract as @account-abstraction/contracts `version`.0 publishes it compiled (artifacts/NAME.json, built by
 * eth-infinitism with that release's own compiler settings): EntryPoint, SimpleAccountFactory, SimpleAccount...
 */
export function accountAbstractionArtifact(version: EntryPointVersion, name: string): Artifact {
  return publishedArtifact(path.join('@account-abstraction', `contracts-v${version.replace('.', '')}`, 'artifacts'), name);
}

/** A Hardhat-format artifact (NAME.json under `dir` in node_modules). */
function publishedArtifact(dir: string, name: string): Artifact {
  if (!/^[A-Za-z0-9_]+$/.test(name)) throw new Error(`not a contract name: ${name}`);
  const file = path.join(nodeModules, dir, `${name}.json`);
  const a = JSON.parse(fs.readFileSync(file, 'utf8')) as { contractName: string; sourceName: string; abi: Abi; bytecode: Hex };
  return { contractName: a.contractName, sourceName: a.sourceName, abi: a.abi, bytecode: a.bytecode };
}
