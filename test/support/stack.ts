/**
 * The whole system as separate processes on the simulated platform: NSM simulator, KMS emulator, enclave and
 * parent, talking over simulated vsock. Tests get the API URL, tokens for every scope, and the means to stop,
 * restart or kill -9 the enclave and the parent.
 *
 * The wallet routes (docs/TLS.md): the parent's ingress relay listens on 127.0.0.1 (a free port chosen at start
 * and kept across restarts, its URL the parent's `wallets.publicUrl`: `walletsUrl`); with `walletsTls` the stack has the enclave make its TLS key, a test CA signs its CSR
 * (localhost and 127.0.0.1) and the chain is installed, as an operator does (`walletsCa` is that CA).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { DEFAULT_WALLET_STORE_ADDRESS, DEFAULT_WALLETS_ADDRESS } from '@nks/shared/ingress';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS } from '@nks/shared/transport';
import { enclaveConfigFor, startPlatform, writeJson, type Platform } from './platform';
import { startProgram, type Running } from './process';
import { makeTestCa } from '../../sim/src/idp/tls';
import { startRelay, type Relay } from './relay';
import { freePort } from '../../sim/src/free-port';

export const ENCLAVE_ADDRESS = DEFAULT_ENCLAVE_ADDRESS;
export const PROXY_ADDRESS = DEFAULT_KMS_PROXY_ADDRESS;

export type TokenName = 'full' | 'create' | 'sign' | 'read' | 'admin';

export interface Stack {
  runDir: string;
  platform: Platform;
  url: string;
  /** The parent's operational listener (`/metrics`, `/healthz`, `/readyz`): a loopback port chosen at each start. */
  metricsUrl: string;
  tokens: Record<TokenName, string>;
  enclave: Running;
  parent: Running;
  parentConfigFile: string;
  dbPath: string;
  /** `https://127.0.0.1:PORT`: the parent's ingress relay to the enclave's HTTPS server (the same across restarts). */
  walletsUrl: string;
  /** The CA (PEM) of the installed wallet certificate, with `walletsTls` (or after `installWalletsTls`). */
  walletsCa: string | undefined;
  /**
   * Has the enclave make a TLS key for `names` (`POST /v1/tls/keys`), a fresh test CA issue its certificate (the
   * names and 127.0.0.1) and installs the chain (`PUT /v1/tls/certificate`); resolves once the enclave serves it.
   */
  installWalletsTls(names?: string[]): Promise<{ caPem: string; chain: string; publicKey: string }>;
  /** Stops the parent (the relay's port is then free); `startParent` starts it again with the same configuration. */
  stopParent(opts?: { kill?: boolean }): Promise<void>;
  startParent(): Promise<void>;
  api(
    pathname: string,
    init?: { method?: string; token?: TokenName | string | null; body?: unknown; headers?: Record<string, string> },
  ): Promise<{ status: number; body: any; headers: Headers }>;
  /** The parent's Prometheus text, from its operational listener (the caller API does not serve `/metrics`). */
  metrics(): Promise<string>;
  stopEnclave(): Promise<void>;
  startEnclave(): Promise<void>;
  restartParent(opts?: { kill?: boolean }): Promise<void>;
  /** Stops every process (state kept) and starts them all again. */
  restartAll(): Promise<void>;
  /** With `capture`: every byte between parent and enclave (RPC and KMS-proxy links). */
  capturedTraffic(): Buffer;
  /** Every log line of every parent process this stack ran. */
  parentLogs(): string;
  stop(): Promise<void>;
}

export interface StackOptions {
  /** A platform already started in `runDir` (the stack then owns it: `stop` stops it). */
  platform?: Platform;
  enclave?: Record<string, unknown>;
  parentApi?: Record<string, unknown>;
  /** Merged into the parent's `enclave` section (e.g. `{deadlineMs}`). */
  parentEnclave?: Record<string, unknown>;
  /** Merged into the parent's `kmsProxy` section (e.g. `{deadlineMs}`). */
  parentKmsProxy?: Record<string, unknown>;
  /** Replaces whole top-level sections of the parent configuration. */
  parent?: Record<string, unknown>;
  kmsLatencyMs?: number;
  /**
   * Put recording relays on every parent <-> enclave link: the RPC, the KMS proxy, the ingress relay's vsock side
   * and the wallet store.
   */
  capture?: boolean;
  /** Merged into the parent's `wallets.relay` (host 127.0.0.1 and a free port otherwise). */
  walletsRelay?: Record<string, unknown>;
  /** Install a TLS certificate for the wallet routes (a test CA) once the stack is up. */
  walletsTls?: boolean;
  /** false: keep only the programs' startup output (long benchmark runs). */
  keepLogs?: boolean;
  /** CPU lists (taskset) for the enclave and for the parent, to model the enclave's dedicated vCPUs. */
  cpus?: { enclave: string; parent: string };
  /** More environment for the parent processes (e.g. the disk-fault shim: test/chaos/disk-faults.ts). */
  parentEnv?: NodeJS.ProcessEnv;
}

/** The AWS credentials the parent programs run with: the emulator maps any unknown access key to the parent role. */
export const PARENT_AWS_ENV = { AWS_ACCESS_KEY_ID: 'AKIDPARENT', AWS_SECRET_ACCESS_KEY: 'not-a-secret', AWS_REGION: 'us-east-1' };

/** The parent's database in a stack's run directory. */
export const stackDbPath = (runDir: string) => path.join(runDir, 'parent', 'keys.db');

/**
 * A parent configuration for `platform` in `runDir` (its database at `stackDbPath`, simulated vsock, the
 * platform's KMS emulator), with a token per name in `tokens`; `over` replaces whole top-level sections.
 */
export function parentConfigFor(
  platform: Platform,
  runDir: string,
  tokens: Partial<Record<TokenName, string>> = {},
  over: Record<string, unknown> = {},
): Record<string, unknown> {
  const sha = (t: string) => createHash('sha256').update(t).digest('hex');
  const scopes: Record<TokenName, string[]> = {
    full: ['keys:create', 'keys:sign', 'keys:read'],
    create: ['keys:create'],
    sign: ['keys:sign'],
    read: ['keys:read'],
    admin: ['admin'],
  };
  const named = (Object.entries(tokens) as Array<[TokenName, string]>).map(([name, t]) => ({ name, sha256: sha(t), scopes: scopes[name] }));
  return {
    // No pre-drain: tests stop parents with SIGTERM and have no load balancer to wait for (the drain test sets one).
    api: { listen: { host: '127.0.0.1', port: 0 }, preDrainMs: 0 },
    tokens: named.length ? named : [{ name: 'admin', sha256: sha(randomBytes(16).toString('hex')), scopes: ['admin'] }],
    database: { path: stackDbPath(runDir) },
    transport: { kind: 'simulated', runDir },
    enclave: { address: ENCLAVE_ADDRESS, poolSize: 2, deadlineMs: 5000 },
    kmsProxy: {
      listen: PROXY_ADDRESS,
      allowedKeyArns: [platform.keyArn],
      region: 'us-east-1',
      endpoint: platform.kmsUrl,
      deadlineMs: 4000,
    },
    // Never the default 0.0.0.0:8443: every stack on this machine would want it.
    wallets: { relay: { host: '127.0.0.1', port: 0 } },
    // Never the default 127.0.0.1:9464: every parent on this machine would want it.
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
    logLevel: 'debug',
    ...over,
  };
}

/** Where the capture relays sit (opts.capture): each side talks to a relay that forwards to the other's address. */
const CAPTURED = {
  enclave: 'vsock://17:5000',
  kmsProxy: 'vsock://13:8000',
  walletsListener: 'vsock://17:8443',
  walletStore: 'vsock://13:8002',
} as const;

export async function startStack(runDir: string, opts: StackOptions = {}): Promise<Stack> {
  let platform = opts.platform ?? (await startPlatform(runDir, { kmsLatencyMs: opts.kmsLatencyMs ?? 0 }));
  // With capture, each side talks to a relay that forwards to the other side's real address.
  const enclaveListen = opts.capture ? CAPTURED.enclave : ENCLAVE_ADDRESS;
  const proxyListen = opts.capture ? CAPTURED.kmsProxy : PROXY_ADDRESS;
  const tokens = Object.fromEntries(
    (['full', 'create', 'sign', 'read', 'admin'] as const).map((n) => [n, `nks_${n}_${randomBytes(16).toString('hex')}`]),
  ) as Record<TokenName, string>;

  const enclaveWallets = opts.enclave?.wallets as Record<string, unknown> | undefined;
  const enclaveConfigFile = writeJson(
    path.join(runDir, 'enclave.json'),
    enclaveConfigFor(platform, runDir, {
      listen: enclaveListen,
      ...opts.enclave,
      ...(opts.capture ? { wallets: { ...enclaveWallets, store: CAPTURED.walletStore } } : {}),
    }),
  );
  const dbPath = stackDbPath(runDir);
  const base = parentConfigFor(platform, runDir, tokens) as {
    api: object;
    enclave: object;
    kmsProxy: object;
    wallets: { relay: object };
  };
  const parentWallets = (opts.parent?.wallets ?? {}) as { relay?: object };
  const parentConfigFile = writeJson(path.join(runDir, 'parent.json'), {
    ...base,
    api: { ...base.api, ...opts.parentApi },
    enclave: { ...base.enclave, ...opts.parentEnclave },
    kmsProxy: { ...base.kmsProxy, listen: proxyListen, ...opts.parentKmsProxy },
    ...opts.parent,
    wallets: {
      ...parentWallets,
      relay: {
        ...base.wallets.relay,
        ...parentWallets.relay,
        ...opts.walletsRelay,
        ...(opts.capture ? { enclave: CAPTURED.walletsListener } : {}),
      },
    },
  });
  const awsEnv = PARENT_AWS_ENV;

  const launchEnclave = async (track?: Running[]) => {
    const p = startProgram(
      'enclave',
      ['--config', enclaveConfigFile],
      {},
      { keepLines: opts.keepLogs ?? true, ...(opts.cpus ? { cpus: opts.cpus.enclave } : {}) },
    );
    track?.push(p);
    await p.waitForLog((e) => e.msg === 'enclave ready');
    return p;
  };
  const parents: Running[] = [];
  /** The relay's port is chosen here and kept in the configuration, so its public URL is known from the first start. */
  const pinWalletsPort = async () => {
    const config = JSON.parse(fs.readFileSync(parentConfigFile, 'utf8')) as { wallets: { publicUrl?: string; relay: { port: number } } };
    const port = await freePort();
    config.wallets.relay.port = port;
    config.wallets.publicUrl = `https://127.0.0.1:${port}`;
    writeJson(parentConfigFile, config);
  };
  const choosePort =
    (JSON.parse(fs.readFileSync(parentConfigFile, 'utf8')) as { wallets: { relay: { port: number } } }).wallets.relay.port === 0;
  const parentEnv = { ...awsEnv, ...opts.parentEnv };
  const launchParent = async () => {
    for (let attempt = 1; ; attempt++) {
      if (choosePort && attempt > 1) await pinWalletsPort();
      const p = startProgram('parent', ['--config', parentConfigFile], parentEnv, {
        keepLines: opts.keepLogs ?? true,
        ...(opts.cpus ? { cpus: opts.cpus.parent } : {}),
      });
      parents.push(p);
      let ready: Record<string, unknown>;
      try {
        ready = await p.waitForLog((e) => e.msg === 'parent ready');
      } catch (err) {
        // Another process took the chosen port between the choice and the parent's bind: choose again.
        if (choosePort && attempt < 3 && p.lines.some((l) => l.includes('EADDRINUSE'))) continue;
        throw err;
      }
      stack.walletsUrl = `https://127.0.0.1:${Number(ready.walletsRelayPort)}`;
      stack.metricsUrl = String(ready.metricsUrl);
      return { p, url: String(ready.url) };
    }
  };
  if (choosePort) await pinWalletsPort();

  const relays: Relay[] = [];
  const traffic: Buffer[] = [];
  const startRelays = async () => {
    if (!opts.capture) return;
    relays.push(
      await startRelay(runDir, ENCLAVE_ADDRESS, enclaveListen),
      await startRelay(runDir, PROXY_ADDRESS, proxyListen),
      // The parent's ingress relay dials the capture address, the enclave listens on its default one; the enclave
      // dials the wallet store at the capture address, the parent listens on its default one.
      await startRelay(runDir, CAPTURED.walletsListener, DEFAULT_WALLETS_ADDRESS),
      await startRelay(runDir, CAPTURED.walletStore, DEFAULT_WALLET_STORE_ADDRESS),
    );
  };
  const stopRelays = async () => {
    for (const r of relays.splice(0)) {
      traffic.push(r.bytes());
      await r.close();
    }
  };
  const stack: Partial<Stack> = { runDir, platform, tokens, parentConfigFile, dbPath, walletsCa: undefined };
  const launched: Running[] = [];
  /** Stops every process and relay this stack started; keeps going past failures, then reports the first. */
  const stopEverything = async () => {
    const programs = new Set([stack.parent, stack.enclave, ...parents, ...launched].filter((p): p is Running => p !== undefined));
    const results: Array<PromiseSettledResult<unknown>> = await Promise.allSettled<unknown>([...programs].map((p) => p.stop()));
    results.push(...(await Promise.allSettled([platform.stop(), stopRelays()])));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  };
  try {
    await startRelays();
    // The parent first: its KMS proxy must be listening before the enclave needs it.
    const first = await launchParent();
    stack.parent = first.p;
    stack.url = first.url;
    stack.enclave = await launchEnclave(launched);
  } catch (err) {
    // A failed start leaves no process behind (a leaked process keeps Jest from exiting).
    await stopEverything().catch(() => undefined);
    throw err;
  }

  stack.api = async (pathname, init = {}) => {
    const token =
      init.token === null
        ? undefined
        : init.token === undefined
          ? tokens.full
          : ((tokens as Record<string, string>)[init.token] ?? init.token);
    const headers: Record<string, string> = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...init.headers };
    let body: string | undefined;
    if (init.body !== undefined) {
      body = typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
      headers['content-type'] ??= 'application/json';
    }
    const res = await fetch(`${stack.url}${pathname}`, { method: init.method ?? (body ? 'POST' : 'GET'), headers, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON (metrics) */
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  stack.metrics = async () => {
    const res = await fetch(`${stack.metricsUrl}/metrics`);
    const text = await res.text();
    if (res.status !== 200) throw new Error(`GET /metrics: HTTP ${res.status} ${text.slice(0, 200)}`);
    return text;
  };
  stack.installWalletsTls = async (names = ['localhost']) => {
    const ca = await makeTestCa('nitro-keystore test wallets CA');
    const made = await stack.api!('/v1/tls/keys', { token: 'admin', body: { names } });
    if (made.status !== 201) throw new Error(`POST /v1/tls/keys: HTTP ${made.status} ${JSON.stringify(made.body)}`);
    const leaf = await ca.issueForCsr(String(made.body.csr), [...names, '127.0.0.1']);
    const chain = `${leaf}${ca.caPem.trimEnd()}\n`;
    const installed = await stack.api!('/v1/tls/certificate', { token: 'admin', method: 'PUT', body: { chain } });
    if (installed.status !== 200) throw new Error(`PUT /v1/tls/certificate: HTTP ${installed.status} ${JSON.stringify(installed.body)}`);
    stack.walletsCa = ca.caPem;
    await waitWalletsTls(stack as Stack, String(made.body.publicKey));
    return { caPem: ca.caPem, chain, publicKey: String(made.body.publicKey) };
  };
  stack.stopParent = async ({ kill = false } = {}) => {
    await stack.parent?.stop(kill ? 'SIGKILL' : 'SIGTERM');
  };
  stack.startParent = async () => {
    const next = await launchParent();
    stack.parent = next.p;
    stack.url = next.url;
  };
  stack.stopEnclave = async () => {
    await stack.enclave?.stop();
  };
  stack.startEnclave = async () => {
    stack.enclave = await launchEnclave(launched);
  };
  stack.restartParent = async ({ kill = false } = {}) => {
    await stack.parent?.stop(kill ? 'SIGKILL' : 'SIGTERM');
    const next = await launchParent();
    stack.parent = next.p;
    stack.url = next.url;
  };
  stack.parentLogs = () => parents.map((p) => p.lines.join('\n')).join('\n');
  stack.capturedTraffic = () => Buffer.concat([...traffic, ...relays.map((r) => r.bytes())]);
  stack.restartAll = async () => {
    await stack.parent?.stop();
    await stack.enclave?.stop();
    await platform.stop();
    await stopRelays();
    platform = await startPlatform(runDir, {
      kmsLatencyMs: opts.kmsLatencyMs ?? 0,
      reuse: { keyArn: platform.keyArn, kmsPublicKey: platform.kmsPublicKey },
    });
    stack.platform = platform;
    // The KMS emulator listens on a new port: point the parent at it.
    const parentConfig = JSON.parse(fs.readFileSync(parentConfigFile, 'utf8')) as { kmsProxy: { endpoint: string } };
    parentConfig.kmsProxy.endpoint = platform.kmsUrl;
    writeJson(parentConfigFile, parentConfig);
    await startRelays();
    const next = await launchParent();
    stack.parent = next.p;
    stack.url = next.url;
    stack.enclave = await launchEnclave(launched);
  };
  stack.stop = async () => {
    try {
      await stopEverything();
    } finally {
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  };
  if (opts.walletsTls) {
    try {
      await waitReady(stack as Stack);
      await stack.installWalletsTls();
    } catch (err) {
      await stopEverything().catch(() => undefined);
      throw err;
    }
  }
  return stack as Stack;
}

/** Polls `GET /v1/tls` until the enclave serves the key `publicKey` (base64 SPKI), or fails. */
export async function waitWalletsTls(stack: Stack, publicKey: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await stack.api('/v1/tls', { token: 'admin' }).catch(() => ({ status: 0, body: undefined }));
    if (r.status === 200 && r.body?.status?.state === 'installed' && r.body.status.publicKey === publicKey) return;
    if (Date.now() > until) throw new Error(`the enclave did not serve the TLS key within ${timeoutMs} ms: ${JSON.stringify(r.body)}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** Polls until the API says ready (enclave reachable), or fails. */
export async function waitReady(stack: Stack, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await stack.api('/readyz', { token: null }).catch(() => ({ status: 0 }));
    if (r.status === 200) return;
    if (Date.now() > until) throw new Error('the stack did not become ready');
    await new Promise((res) => setTimeout(res, 50));
  }
}
