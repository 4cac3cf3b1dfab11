/**
 * `npm run bench [-- --quick]`: the system measured the way its users feel it, on the simulated platform
 * (KMS emulator with 15 ms of injected latency, as a stand-in for AWS KMS in-region).
 *
 * Measured in one run:
 *   - raw in-process @noble/secp256k1 signing rate on one thread (the reference, same configuration as the enclave);
 *   - warm signing end to end (HTTP -> parent -> simulated vsock -> enclave -> back) at concurrency 1, 8, 32, 128;
 *   - cold signing: latency, and KMS Decrypt calls per key;
 *   - key creation: throughput and latency (durable: committed before the answer), KMS calls;
 *   - enclave memory: the enclave process before and after caching keys, and the key cache's footprint at
 *     10,000 and 100,000 entries (the enclave's own KeyCache filled in a separate process);
 *   - typed data at the complexity budget's limit: the worst-case time of one request (in this process, and the
 *     enclave's CPU per request end to end), and a digest sign's latency while such requests run concurrently;
 *   - JWT signing: warm signs through a JWT project's TrueWallet route (served by the enclave over its own TLS,
 *     keep-alive) against the same signs through the token API, and the enclave CPU each costs (docs/PROJECTS.md;
 *     the route's figure now includes the HTTPS serving the parent used to do);
 *   - wallets: the wallet route over the enclave's TLS (docs/TLS.md) — warm signing with keep-alive (handshakes
 *     excluded) beside the operator API's warm signing, a new TLS connection per request, and the enclave's RSS
 *     idle and with 512 TLS connections open.
 * Prints a table, then one JSON line with rawSignPerSec, e2eSignPerSec, ratio, p50Ms, p99Ms,
 * coldKmsCallsPerKey, createKmsCalls, createPerSec, typedData, jwt, wallets (and more).
 *
 * Shows its steps and counts on stderr (shared/src/progress.ts: a bar on a terminal, plain lines when piped, JSON
 * lines with `--json`), and writes its table (report.md, report.json) and a latency-against-concurrency chart
 * (latency.svg) into `--report DIR` (default reports/bench-<timestamp>/; scripts/bench-report.ts).
 *
 * `--database postgres` measures warm signs and creates on SQLite and on PostgreSQL (embedded) one after the other,
 * and how long a disable made through one of two instances on one PostgreSQL takes to be refused by the other.
 * `--only jwt` runs the JWT comparison alone, `--only wallets` the wallets section alone (a stack of its own each,
 * about a minute). `--only policy` measures signing policies (docs/POLICIES.md) in this process, no stack: the CPU
 * of reading a request's facts and evaluating a 20-rule policy on it, against the enclave's 50 µs budget.
 */
import { spawnSync } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { Progress } from '@nks/shared/progress';
import * as secp from '@noble/secp256k1';
import { Pool } from 'undici';
import Database from 'better-sqlite3';
import type { EnclaveApi } from '@nks/shared/enclave-api';
import { silentLogger } from '@nks/shared/log';
import { RpcClient } from '@nks/shared/rpc';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { startSimulatedIdp, type SimulatedIdp } from '../sim/src/idp/issuer';
import { ENCLAVE_ADDRESS, startStack, stackDbPath, waitReady, type Stack } from '../test/support/stack';
import { startDevStack } from '../test/support/dev-stack';
import { defaultReportDir, writeBenchReport, type BenchSummary } from './bench-report';
import { measureBatchedWarm, type BatchedWarmStats } from './bench-batch';
import { measureRawCurves } from './bench-curve';
import { busyVerdict, parseProcStat, targetVerdicts, verdictLines, type BusySample, type TargetFigures } from './bench-targets';
import { startPostgres } from '../test/support/postgres';
import { createProject, jwtProject, jwtStackOptions } from '../test/support/truewallet';
import { SignRequestSchema } from '@nks/shared/signing/schema';
import { checkTypedDataBudget, TYPED_DATA_LIMITS } from '@nks/shared/signing/typed-data-budget';
import { atLimitStructs, atLimitTypeStrings, atLimitValues, type TypedDataInput } from '@nks/shared-test/typed-data-payloads';
import { signRequest } from '../enclave/src/signing/sign';
import { requestFacts } from '@nks/shared/policy/facts';
import { compilePolicy, evaluateRules } from '@nks/shared/policy/evaluate';
import { PoliciesSchema } from '@nks/shared/policy/schema';
import type { SignRequest } from '@nks/shared/signing/schema';
import {
  ALICE,
  batchCallsData,
  batchV07Data,
  BOB,
  DAI,
  DELEGATE,
  ENTRY_POINT_07,
  MALLORY,
  transactionRequest,
  transferData,
  USDC,
  userOperationRequest,
} from '@nks/shared-test/policy-requests';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    signers: { type: 'string' },
    profile: { type: 'string' },
    only: { type: 'string' },
    'cache-footprint': { type: 'string' },
    database: { type: 'string' },
    report: { type: 'string' },
    json: { type: 'boolean' },
    // Taken by the npm script's launcher (scripts/bench-run.mjs), which then skips the build; accepted here too.
    'no-build': { type: 'boolean' },
  },
  strict: true,
});

interface Stats {
  count: number;
  perSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** CPU microseconds per request, by process (from /proc; the load generator is this process). */
  cpuUsPerRequest?: Record<string, number>;
}

/** user+system CPU of a process in microseconds (Linux /proc; clock ticks of 10 ms). */
function processCpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/**
 * Runs `fn` and attributes the CPU the given processes (and this one) spent to each request it made. `fn` calls
 * `measuring()` when its measured window starts (closedLoop's `onMeasureStart`: after the warm-up), so the
 * warm-up's CPU is not charged to the requests counted after it; without that call the whole of `fn` counts.
 */
async function withCpu(pids: Record<string, number>, fn: (measuring: () => void) => Promise<Stats>): Promise<Stats> {
  const sample = () => ({
    procs: Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuUs(pid)])),
    self: process.cpuUsage(),
  });
  let before = sample();
  const stats = await fn(() => {
    before = sample();
  });
  const used = process.cpuUsage(before.self);
  const total = stats.count + stats.errors || 1;
  stats.cpuUsPerRequest = Object.fromEntries([
    ...Object.entries(pids).map(([k, pid]) => [k, Math.round((processCpuUs(pid) - (before.procs[k] as number)) / total)]),
    ['loadgen', Math.round((used.user + used.system) / total)],
  ]);
  return stats;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

function summarize(latencies: number[], seconds: number, errors: number): Stats {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    count: latencies.length,
    perSec: latencies.length / seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    errors,
  };
}

/** The reference: @noble/secp256k1 signing 32-byte digests in this process, one thread, as the enclave does. */
function rawSignRate(seconds: number): number {
  secp.hashes.sha256 = (m) => new Uint8Array(createHash('sha256').update(m).digest());
  secp.hashes.hmacSha256 = (k, m) => new Uint8Array(createHmac('sha256', k).update(m).digest());
  const sk = secp.utils.randomSecretKey();
  const digests = Array.from({ length: 256 }, () => new Uint8Array(randomBytes(32)));
  for (let i = 0; i < 500; i++) secp.sign(digests[i % 256] as Uint8Array, sk, { prehash: false, format: 'recovered' });
  let n = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 50; i++) secp.sign(digests[(n + i) % 256] as Uint8Array, sk, { prehash: false, format: 'recovered' });
    n += 50;
  }
  return n / ((performance.now() - t0) / 1000);
}

/**
 * Closed-loop load: `concurrency` workers over an undici pool of as many keep-alive connections, each sending
 * its next request when the previous one returns. Latency is measured per request after the warm-up.
 */
async function closedLoop(
  opts: {
    url: string;
    /** The bearer token; none for the TrueWallet routes, which take the user's JWT in the body. */
    token: string | undefined;
    /** TLS options of the connections (the CA of the wallet route's certificate). */
    connect?: { ca: string; servername?: string };
    /** A new connection for every request (for https: a full TLS handshake each time). */
    newConnectionPerRequest?: boolean;
    concurrency: number;
    seconds: number;
    warmupSeconds: number;
    next: (i: number) => { path: string; body: unknown };
    /** Called when the measured window starts (after the warm-up): withCpu's `measuring`. */
    onMeasureStart?: () => void;
  },
  latenciesOut?: number[],
): Promise<Stats> {
  const pool = new Pool(opts.url, { connections: opts.concurrency, pipelining: 1, ...(opts.connect ? { connect: opts.connect } : {}) });
  const headers = { ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), 'content-type': 'application/json' };
  const latencies: number[] = [];
  let errors = 0;
  let seq = 0;
  const t0 = performance.now();
  const measureFrom = t0 + opts.warmupSeconds * 1000;
  const end = measureFrom + opts.seconds * 1000;
  const marker = opts.onMeasureStart ? setTimeout(opts.onMeasureStart, opts.warmupSeconds * 1000) : undefined;
  const worker = async () => {
    while (performance.now() < end) {
      const { path: p, body } = opts.next(seq++);
      const start = performance.now();
      let status: number;
      try {
        const res = await pool.request({
          path: p,
          method: 'POST',
          headers,
          body: typeof body === 'string' ? body : JSON.stringify(body),
          ...(opts.newConnectionPerRequest ? { reset: true } : {}),
        });
        status = res.statusCode;
        await res.body.dump();
      } catch {
        status = 0;
      }
      const done = performance.now();
      if (start < measureFrom) continue;
      if (status === 200 || status === 201) latencies.push(done - start);
      else errors += 1;
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  clearTimeout(marker);
  await pool.close();
  latenciesOut?.push(...latencies);
  return summarize(latencies, opts.seconds, errors);
}

async function kmsDecrypts(s: Stack): Promise<number> {
  const st = await s.platform.stats();
  return (st.Decrypt?.ok ?? 0) + (st.Decrypt?.error ?? 0);
}

/** The enclave's RSS and cache size, as the parent exports them from enclave.health. */
async function enclaveMemory(s: Stack): Promise<{ rssBytes: number; cacheSize: number }> {
  const text = await s.metrics();
  return {
    rssBytes: Number(/nks_enclave_memory_bytes\{kind="rss"\} (\d+)/.exec(text)?.[1] ?? NaN),
    cacheSize: Number(/nks_enclave_counter\{counter="cacheSize"\} (\d+)/.exec(text)?.[1] ?? NaN),
  };
}

const mb = (b: number) => (b / 1024 / 1024).toFixed(1);
const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');

type Topology = 'dedicated' | 'shared';

/** Pins this process (all its threads) to `cpus` (taskset), or frees it. */
function pinSelf(cpus: string): void {
  spawnSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
}

interface WarmSeries {
  topology: Topology;
  levels: Record<number, Stats>;
  kmsCalls: number;
}

/** `n` keys, each signed once (so each is in the enclave's cache: the signs after it are warm). */
async function warmKeys(s: Stack, n = 16): Promise<string[]> {
  const keys: string[] = [];
  for (let i = 0; i < n; i++) keys.push((await s.api('/v1/keys', { body: {} })).body.keyId);
  for (const k of keys) await s.api(`/v1/keys/${k}/sign`, { body: { type: 'digest', digest: `0x${'11'.repeat(32)}` } });
  return keys;
}

/** Warm digest signs over `keys`, round robin, at concurrency `c`, with the CPU per request of each process. */
async function warmLevel(s: Stack, keys: string[], c: number, o: { seconds: number; warmup: number }): Promise<Stats> {
  const digests = Array.from({ length: 64 }, () => `0x${randomBytes(32).toString('hex')}`);
  const next = (i: number) => ({
    path: `/v1/keys/${keys[i % keys.length]}/sign`,
    body: { type: 'digest', digest: digests[i % digests.length] },
  });
  const pids = { parent: s.parent.child.pid as number, enclave: s.enclave.child.pid as number };
  return withCpu(pids, (measuring) =>
    closedLoop({
      url: s.url,
      token: s.tokens.full,
      concurrency: c,
      seconds: o.seconds,
      warmupSeconds: o.warmup,
      next,
      onMeasureStart: measuring,
    }),
  );
}

const cpuText = (st: Stats) =>
  Object.entries(st.cpuUsPerRequest ?? {})
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');

/** The concurrencies whose throughput is shown beside the threshold-based headline (a fixed load, comparable run to run). */
const FIXED_CONCURRENCIES = [8, 32] as const;
/** The level whose CPU per request by process the CPU targets are judged on. */
const CPU_REFERENCE_CONCURRENCY = 32;

/** Warm signing at each concurrency, sampling the raw reference between levels. */
async function warmSeries(
  s: Stack,
  topology: Topology,
  o: { seconds: number; warmup: number; rawSamples: number[] },
  progress?: Progress,
): Promise<WarmSeries & { keys: string[] }> {
  const keys = await warmKeys(s);
  const before = await kmsDecrypts(s);
  const levels: Record<number, Stats> = {};
  const concurrencies = [1, 4, 8, 16, 32, 128];
  const shown = progress?.count('concurrency levels', concurrencies.length);
  for (const c of concurrencies) {
    const st = await warmLevel(s, keys, c, o);
    levels[c] = st;
    o.rawSamples.push(rawSignRate(1));
    console.log(
      `warm sign [${topology}], concurrency ${String(c).padStart(3)}: ${f(st.perSec)}/s  p50 ${f(st.p50Ms, 2)} ms  p99 ${f(st.p99Ms, 2)} ms  errors ${st.errors}  (CPU µs/request: ${cpuText(st)})`,
    );
    shown?.tick();
  }
  shown?.done();
  return { topology, levels, kmsCalls: (await kmsDecrypts(s)) - before, keys };
}

/**
 * The enclave's own capacity, at its RPC boundary: a load generator here speaks the enclave's RPC directly to
 * its socket (as the parent does, bypassing it), `keys.sign` of warm keys with their stored blob and records, at
 * `concurrency` calls in flight. Reported as signs/s, signs/s per enclave vCPU (the CPUs it is pinned to), and
 * the enclave's CPU per sign (1e6 / that is what one fully busy vCPU would sign).
 */
async function enclaveCapacity(
  s: Stack,
  keyIds: string[],
  o: { seconds: number; warmup: number; concurrency: number; enclaveCpus: number },
): Promise<{
  signsPerSec: number;
  signsPerSecPerVcpu: number;
  enclaveCpuUsPerSign: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  concurrency: number;
  enclaveCpus: number;
}> {
  const db = new Database(stackDbPath(s.runDir), { readonly: true, fileMustExist: true });
  let params: Array<Record<string, unknown>>;
  try {
    const key = db.prepare('SELECT blob, record, record_signature, project_id FROM keys WHERE key_id = ?');
    const project = db.prepare('SELECT record, signature FROM projects WHERE project_id = ?');
    params = keyIds.map((keyId) => {
      const k = key.get(keyId) as { blob: string; record: string; record_signature: string; project_id: string };
      const p = project.get(k.project_id) as { record: string; signature: string };
      return {
        keyId,
        blob: k.blob,
        record: { record: k.record, signature: k.record_signature },
        project: { record: p.record, signature: p.signature },
      };
    });
  } finally {
    db.close();
  }
  const rpc = new RpcClient<EnclaveApi>({
    name: 'bench-enclave',
    transport: new SimulatedVsockTransport(s.runDir),
    address: ENCLAVE_ADDRESS,
    logger: silentLogger(),
    maxInFlight: 4096,
  });
  const digests = Array.from({ length: 64 }, () => `0x${randomBytes(32).toString('hex')}`);
  try {
    await rpc.waitConnected(5000);
    const st = await withCpu({ enclave: s.enclave.child.pid as number }, async (measuring) => {
      const latencies: number[] = [];
      let errors = 0;
      let seq = 0;
      const t0 = performance.now();
      const measureFrom = t0 + o.warmup * 1000;
      const end = measureFrom + o.seconds * 1000;
      const marker = setTimeout(measuring, o.warmup * 1000);
      const worker = async () => {
        while (performance.now() < end) {
          const i = seq++;
          const call = { ...params[i % params.length], request: { type: 'digest', digest: digests[i % digests.length] } };
          const start = performance.now();
          let ok = true;
          try {
            await rpc.call('keys.sign', call as never);
          } catch {
            ok = false;
          }
          const done = performance.now();
          if (start < measureFrom) continue;
          if (ok) latencies.push(done - start);
          else errors += 1;
        }
      };
      await Promise.all(Array.from({ length: o.concurrency }, worker));
      clearTimeout(marker);
      return summarize(latencies, o.seconds, errors);
    });
    const enclaveCpuUsPerSign = st.cpuUsPerRequest?.enclave ?? NaN;
    return {
      signsPerSec: Math.round(st.perSec),
      signsPerSecPerVcpu: Math.round(st.perSec / o.enclaveCpus),
      enclaveCpuUsPerSign,
      p50Ms: Number(st.p50Ms.toFixed(3)),
      p99Ms: Number(st.p99Ms.toFixed(3)),
      errors: st.errors,
      concurrency: o.concurrency,
      enclaveCpus: o.enclaveCpus,
    };
  } finally {
    await rpc.close();
  }
}

/** Raw libsecp256k1 through the enclave's own addon, one thread (scripts/bench-curve.ts). */
function rawLibsecp256k1(seconds: number): number {
  return measureRawCurves({ seconds }).libsecp256k1SignsPerSec;
}

/**
 * Warm signing in batches of `batchSize` digests through `POST /v1/keys/{keyId}/sign-batch` (scripts/bench-batch.ts),
 * with the parent's and the enclave's CPU per signature (not per batch).
 */
async function batchedWarm(
  s: Stack,
  keyId: string,
  o: { seconds: number; batchSize: number; concurrency: number },
): Promise<BatchedWarmStats & { cpuUsPerSign: Record<string, number> }> {
  const pids = { parent: s.parent.child.pid as number, enclave: s.enclave.child.pid as number };
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuUs(pid)]));
  const stats = await measureBatchedWarm({
    baseUrl: s.url,
    token: s.tokens.full,
    keyId,
    batchSize: o.batchSize,
    concurrency: o.concurrency,
    durationMs: o.seconds * 1000,
  });
  const signs = Math.max(1, Math.round(stats.signsPerSec * o.seconds));
  const cpuUsPerSign = Object.fromEntries(
    Object.entries(pids).map(([k, pid]) => [k, Math.round((processCpuUs(pid) - (before[k] as number)) / signs)]),
  );
  return { ...stats, cpuUsPerSign };
}

/** user+system CPU of every process now, by pid (those that vanish mid-read are skipped). */
function allProcessCpu(): Map<number, { name: string; ticks: number }> {
  const out = new Map<number, { name: string; ticks: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const name = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      const fields = text.slice(text.lastIndexOf(') ') + 2).split(' ');
      out.set(Number(entry), { name, ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // gone
    }
  }
  return out;
}

/** Samples the machine for `ms` before the run: CPU idle, load average, the busiest processes. */
async function sampleBusy(ms: number): Promise<BusySample> {
  const before = parseProcStat(readFileSync('/proc/stat', 'utf8'));
  const procs = allProcessCpu();
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const seconds = (performance.now() - t0) / 1000;
  const after = parseProcStat(readFileSync('/proc/stat', 'utf8'));
  const top: BusySample['top'] = [];
  for (const [pid, now] of allProcessCpu()) {
    const was = procs.get(pid);
    if (pid === process.pid || !was || was.name !== now.name) continue;
    // Clock ticks of 10 ms (processCpuUs): the share of one core over the window.
    top.push({ pid, name: now.name, cores: ((now.ticks - was.ticks) * 0.01) / seconds });
  }
  top.sort((a, b) => b.cores - a.cores);
  const busiest = top.slice(0, 10).map((p) => ({ ...p, name: commandOf(p.pid) ?? p.name }));
  return { cores: os.availableParallelism(), before, after, loadAvg1: os.loadavg()[0] as number, top: busiest };
}

/** A short name for a process: its program and first argument, last two path parts each (`node jest/bin/jest.js`). */
function commandOf(pid: number): string | undefined {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    const short = (a: string) => a.split('/').slice(-2).join('/');
    return argv.length ? argv.slice(0, 2).map(short).join(' ').slice(0, 80) : undefined;
  } catch {
    return undefined;
  }
}

/** Warns (stdout, so it is in any saved output) when the machine is busy; returns the verdict for the report. */
async function warnIfBusy(): Promise<{ busy: boolean; idle: number; loadAvg1: number; warning?: string } | undefined> {
  try {
    const v = busyVerdict(await sampleBusy(1500));
    if (v.warning) console.log(`WARNING: ${v.warning}`);
    return { ...v, idle: Number(v.idle.toFixed(3)), loadAvg1: Number(v.loadAvg1.toFixed(2)) };
  } catch (err) {
    console.log(`(could not tell whether the machine is busy: ${(err as Error).message})`);
    return undefined;
  }
}

/** The best load that keeps p99 under 10 ms (the target's "at that load"); the fastest overall if none does. */
function bestOf(levels: Record<number, Stats>): [number, Stats] {
  const byRate = Object.entries(levels).sort((a, b) => b[1].perSec - a[1].perSec);
  const [c, st] = (byRate.find(([, x]) => x.p99Ms < 10) ?? byRate[0]) as [string, Stats];
  return [Number(c), st];
}

const levelsJson = (levels: Record<number, Stats>) =>
  Object.fromEntries(
    Object.entries(levels).map(([c, st]) => [
      c,
      {
        perSec: Math.round(st.perSec),
        p50Ms: Number(st.p50Ms.toFixed(3)),
        p99Ms: Number(st.p99Ms.toFixed(3)),
        errors: st.errors,
        cpuUsPerRequest: st.cpuUsPerRequest,
      },
    ]),
  );

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/**
 * Typed data at the complexity budget's limit (shared/src/signing/typed-data-budget.ts), three shapes that
 * each spend a different part of the budget. Figures, not assertions:
 *   - in-process: validating (schema + budget) and hashing + signing each shape on this thread, median of runs;
 *   - end to end: each shape signed through the whole stack, sequentially; latency and the enclave process's
 *     CPU per request (all its threads, from /proc);
 *   - interference: warm digest signs at concurrency 8 while two callers keep sending the costliest shape.
 */
async function typedDataSeries(
  s: Stack,
  o: { seconds: number; warmup: number; quick: boolean },
  baseline: Stats | undefined,
): Promise<Record<string, unknown>> {
  const secret = secp.utils.randomSecretKey();
  const shapes: Record<string, TypedDataInput> = { structs: atLimitStructs(), values: atLimitValues(), typeStrings: atLimitTypeStrings() };
  const runs = o.quick ? 3 : 7;
  const inProcess: Record<string, Record<string, unknown>> = {};
  for (const [name, typedData] of Object.entries(shapes)) {
    const input = { type: 'typedData', typedData };
    const body = JSON.stringify(input);
    const verdict = checkTypedDataBudget(typedData);
    const validate: number[] = [];
    const sign: number[] = [];
    for (let i = 0; i <= runs; i++) {
      const t0 = performance.now();
      const req = SignRequestSchema.parse(JSON.parse(body));
      const t1 = performance.now();
      signRequest(req, secret, '0x0000000000000000000000000000000000000001');
      const t2 = performance.now();
      if (i === 0) continue; // warm-up
      validate.push(t1 - t0);
      sign.push(t2 - t1);
    }
    inProcess[name] = {
      bytes: body.length,
      usage: verdict.ok ? verdict.usage : verdict.limit,
      validateMs: Number(median(validate).toFixed(1)),
      signMs: Number(median(sign).toFixed(1)),
      signMaxMs: Number(Math.max(...sign).toFixed(1)),
    };
    console.log(
      `typed data at the limit [${name}], in-process: ${body.length} bytes, ${verdict.ok ? `${verdict.usage.structInstances} structs, ${verdict.usage.values} values, ${verdict.usage.typeStringChars} type-string chars` : verdict.limit}; validate (schema + budget) ${f(median(validate), 1)} ms, hash + sign ${f(median(sign), 1)} ms (max ${f(Math.max(...sign), 1)} ms)`,
    );
  }

  const keyId = (await s.api('/v1/keys', { body: {} })).body.keyId as string;
  await s.api(`/v1/keys/${keyId}/sign`, { body: { type: 'digest', digest: `0x${'44'.repeat(32)}` } });
  const enclavePid = s.enclave.child.pid as number;
  const endToEnd: Record<string, Record<string, unknown>> = {};
  for (const [name, typedData] of Object.entries(shapes)) {
    const body = JSON.stringify({ type: 'typedData', typedData });
    const lat: number[] = [];
    let errors = 0;
    const n = o.quick ? 4 : 10;
    await s.api(`/v1/keys/${keyId}/sign`, { body }); // warm-up
    const cpu0 = processCpuUs(enclavePid);
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const r = await s.api(`/v1/keys/${keyId}/sign`, { body });
      if (r.status === 200) lat.push(performance.now() - t);
      else errors += 1;
    }
    const enclaveCpuMs = (processCpuUs(enclavePid) - cpu0) / 1000 / n;
    endToEnd[name] = {
      p50Ms: Number(median(lat).toFixed(1)),
      maxMs: Number(Math.max(...lat).toFixed(1)),
      enclaveCpuMsPerRequest: Number(enclaveCpuMs.toFixed(1)),
      errors,
    };
    console.log(
      `typed data at the limit [${name}], end to end (${n} sequential): p50 ${f(median(lat), 1)} ms  max ${f(Math.max(...lat), 1)} ms  enclave CPU ${f(enclaveCpuMs, 1)} ms/request  errors ${errors}`,
    );
  }

  // The costliest shape, two callers in a loop, while digest signs run at concurrency 8.
  const worst =
    Object.entries(endToEnd).sort((a, b) => (b[1].enclaveCpuMsPerRequest as number) - (a[1].enclaveCpuMsPerRequest as number))[0]?.[0] ??
    'structs';
  const heavyBody = JSON.stringify({ type: 'typedData', typedData: shapes[worst] });
  const keys: string[] = [];
  for (let i = 0; i < 8; i++) keys.push((await s.api('/v1/keys', { body: {} })).body.keyId);
  for (const k of keys) await s.api(`/v1/keys/${k}/sign`, { body: { type: 'digest', digest: `0x${'55'.repeat(32)}` } });
  const digests = Array.from({ length: 64 }, () => `0x${randomBytes(32).toString('hex')}`);
  const heavyLatencies: number[] = [];
  const [digestStats, heavyStats] = await Promise.all([
    closedLoop({
      url: s.url,
      token: s.tokens.full,
      concurrency: 8,
      seconds: o.seconds,
      warmupSeconds: o.warmup,
      next: (i) => ({ path: `/v1/keys/${keys[i % keys.length]}/sign`, body: { type: 'digest', digest: digests[i % digests.length] } }),
    }),
    closedLoop(
      {
        url: s.url,
        token: s.tokens.full,
        concurrency: 2,
        seconds: o.seconds,
        warmupSeconds: o.warmup,
        next: () => ({ path: `/v1/keys/${keyId}/sign`, body: heavyBody }),
      },
      heavyLatencies,
    ),
  ]);
  const heavySorted = [...heavyLatencies].sort((a, b) => a - b);
  console.log(
    `digest sign, concurrency 8, while 2 callers send typed data at the limit [${worst}]: ${f(digestStats.perSec)}/s  p50 ${f(digestStats.p50Ms, 2)} ms  p99 ${f(digestStats.p99Ms, 2)} ms  errors ${digestStats.errors}` +
      (baseline ? `  (without: p50 ${f(baseline.p50Ms, 2)} ms  p99 ${f(baseline.p99Ms, 2)} ms)` : '') +
      `; typed data ${heavyStats.count} done, p50 ${f(heavyStats.p50Ms, 1)} ms  max ${f(heavySorted[heavySorted.length - 1] ?? NaN, 1)} ms  errors ${heavyStats.errors}`,
  );
  return {
    limits: TYPED_DATA_LIMITS,
    inProcess,
    endToEnd,
    worstShape: worst,
    worstEnclaveCpuMs: endToEnd[worst]?.enclaveCpuMsPerRequest,
    digestWhileTypedData: {
      perSec: Math.round(digestStats.perSec),
      p50Ms: Number(digestStats.p50Ms.toFixed(3)),
      p99Ms: Number(digestStats.p99Ms.toFixed(3)),
      errors: digestStats.errors,
      typedDataDone: heavyStats.count,
      typedDataP50Ms: Number(heavyStats.p50Ms.toFixed(1)),
      typedDataErrors: heavyStats.errors,
    },
    ...(baseline ? { digestWithoutTypedData: { p50Ms: Number(baseline.p50Ms.toFixed(3)), p99Ms: Number(baseline.p99Ms.toFixed(3)) } } : {}),
  };
}

/**
 * Warm signing with a JWT against the same signing with a token (issue 17: a warm sign with a JWT costs at most
 * 1 ms of enclave CPU more). The same work on both sides: EIP-191 over a 32-byte hash (the TrueWallet `sign`
 * route's `message_type: "hash"`; `{type: "message", message: {raw}}` through the token API), 16 warm keys,
 * concurrency 8. Each JWT user's token is minted once and reused within its lifetime, as a wallet app reuses its
 * login's token, and the project's JWKS is cached after its first fetch. Rounds alternate token, RS256 and
 * ES256 so that the machine's drift falls on all three; the enclave's CPU per sign is from /proc.
 */
async function jwtSeries(
  s: Stack,
  idp: SimulatedIdp,
  o: { seconds: number; warmup: number; rounds: number },
): Promise<Record<string, unknown>> {
  const project = await createProject(s, jwtProject(idp));
  const users = Array.from({ length: 16 }, (_, i) => `bench-user-${i}`);
  const jwts = {
    RS256: await Promise.all(users.map((sub) => idp.mint({ sub }, { alg: 'RS256', lifetimeS: 600 }))),
    ES256: await Promise.all(users.map((sub) => idp.mint({ sub }, { alg: 'ES256', lifetimeS: 600 }))),
  };
  const hashes = Array.from({ length: 64 }, () => `0x${randomBytes(32).toString('hex')}`);
  const walletPath = `/v1/${project.projectKey}/wallets/sign`;
  for (const jwt of jwts.RS256) await walletGetAddress(s, project.projectKey, jwt);
  const keys: string[] = [];
  for (let i = 0; i < 16; i++) keys.push((await s.api('/v1/keys', { body: {} })).body.keyId);

  const rows = {
    token: (i: number) => ({
      path: `/v1/keys/${keys[i % keys.length]}/sign`,
      body: { type: 'message', message: { raw: hashes[i % hashes.length] } },
    }),
    RS256: (i: number) => ({
      path: walletPath,
      body: { message: hashes[i % hashes.length], jwt_token: jwts.RS256[i % users.length], message_type: 'hash', wallet_type: 'evm' },
    }),
    ES256: (i: number) => ({
      path: walletPath,
      body: { message: hashes[i % hashes.length], jwt_token: jwts.ES256[i % users.length], message_type: 'hash', wallet_type: 'evm' },
    }),
  };
  /** The token API on the parent; the wallet route on the enclave's TLS server (through the relay). */
  const target = (name: keyof typeof rows) =>
    name === 'token' ? { url: s.url, token: s.tokens.full } : { url: s.walletsUrl, token: undefined, connect: walletsConnect(s) };
  // Every key warm (one sign each) before anything is measured.
  for (const name of Object.keys(rows) as Array<keyof typeof rows>) {
    await closedLoop({ ...target(name), concurrency: 8, seconds: 1, warmupSeconds: 0, next: rows[name] });
  }
  const pids = { parent: s.parent.child.pid as number, enclave: s.enclave.child.pid as number };
  const runs: Record<keyof typeof rows, Stats[]> = { token: [], RS256: [], ES256: [] };
  for (let round = 0; round < o.rounds; round++) {
    for (const name of Object.keys(rows) as Array<keyof typeof rows>) {
      const st = await withCpu(pids, (measuring) =>
        closedLoop({
          ...target(name),
          concurrency: 8,
          seconds: o.seconds,
          warmupSeconds: o.warmup,
          next: rows[name],
          onMeasureStart: measuring,
        }),
      );
      runs[name].push(st);
      console.log(
        `warm EIP-191 sign, ${name === 'token' ? 'token API' : `JWT ${name}`}, concurrency 8 (round ${round + 1}): ${f(st.perSec)}/s  p50 ${f(st.p50Ms, 2)} ms  p99 ${f(st.p99Ms, 2)} ms  errors ${st.errors}  (enclave CPU ${st.cpuUsPerRequest?.enclave} µs/sign, parent ${st.cpuUsPerRequest?.parent} µs)`,
      );
    }
  }
  const mean = (xs: Stats[], pick: (x: Stats) => number) => xs.reduce((sum, x) => sum + pick(x), 0) / xs.length;
  const summarizeRuns = (xs: Stats[]) => ({
    perSec: Math.round(mean(xs, (x) => x.perSec)),
    p50Ms: Number(mean(xs, (x) => x.p50Ms).toFixed(3)),
    p99Ms: Number(mean(xs, (x) => x.p99Ms).toFixed(3)),
    errors: xs.reduce((sum, x) => sum + x.errors, 0),
    enclaveCpuUsPerSign: Math.round(mean(xs, (x) => x.cpuUsPerRequest?.enclave ?? NaN)),
    parentCpuUsPerSign: Math.round(mean(xs, (x) => x.cpuUsPerRequest?.parent ?? NaN)),
  });
  const summary = { token: summarizeRuns(runs.token), RS256: summarizeRuns(runs.RS256), ES256: summarizeRuns(runs.ES256) };
  const extra = {
    RS256: summary.RS256.enclaveCpuUsPerSign - summary.token.enclaveCpuUsPerSign,
    ES256: summary.ES256.enclaveCpuUsPerSign - summary.token.enclaveCpuUsPerSign,
  };
  const met = Math.max(extra.RS256, extra.ES256) <= 1000 && summary.RS256.errors + summary.ES256.errors === 0;
  console.log(
    `JWT (wallet route over the enclave's TLS) vs token API, enclave CPU per warm sign: token ${summary.token.enclaveCpuUsPerSign} µs, RS256 ${summary.RS256.enclaveCpuUsPerSign} µs (+${extra.RS256}), ES256 ${summary.ES256.enclaveCpuUsPerSign} µs (+${extra.ES256}; the JWT and the HTTPS serving); throughput ${summary.token.perSec} / ${summary.RS256.perSec} / ${summary.ES256.perSec} per s, p99 ${f(summary.token.p99Ms, 2)} / ${f(summary.RS256.p99Ms, 2)} / ${f(summary.ES256.p99Ms, 2)} ms; target (at most +1,000 µs, no errors): ${met ? 'met' : 'NOT met'}`,
  );
  return { concurrency: 8, rounds: o.rounds, ...summary, extraEnclaveCpuUsPerSign: extra, targetMet: met };
}

/** The TLS options of a connection to the stack's wallet route: its test CA, the name its certificate has. */
const walletsConnect = (s: Stack) => ({ ca: s.walletsCa as string, servername: 'localhost' });

/** `get-address` for a user over the enclave's TLS (makes the user's key on first use). */
async function walletGetAddress(s: Stack, projectKey: string, jwt: string): Promise<void> {
  const pool = new Pool(s.walletsUrl, { connect: walletsConnect(s) });
  try {
    const r = await pool.request({
      path: `/v1/${projectKey}/wallets/get-address`,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jwt_token: jwt }),
    });
    const text = await r.body.text();
    if (r.statusCode !== 200) throw new Error(`get-address: HTTP ${r.statusCode} ${text}`);
  } finally {
    await pool.close();
  }
}

/**
 * The stack options a JWT project needs (the IdP's CA in the enclave's image, the relay allowed to reach it), the
 * wallet routes over the enclave's TLS (a test CA's certificate installed), and limits far above what the load
 * generator does from its one address: the enclave's rate limits, the relay's connections per address, and the
 * enclave's headers timeout (the memory row keeps 512 connections open without a request).
 */
function jwtOptions(idp: SimulatedIdp) {
  const o = jwtStackOptions([idp]);
  const unlimited = { perAddress: 10_000_000, failuresPerAddress: 10_000_000, perProject: 100_000_000, perUser: 10_000_000 };
  return {
    enclave: { ...o.enclave, wallets: { rateLimits: unlimited, headersTimeoutMs: 120_000, requestTimeoutMs: 120_000 } },
    parent: o.parent ?? {},
    walletsRelay: { maxConnections: 100_000, maxPerAddress: 100_000 },
    walletsTls: true,
  };
}

/** The enclave's wallet-server connections now, as the parent exports enclave.health (NaN if not exported). */
async function walletConnections(s: Stack): Promise<number> {
  const text = await s.metrics();
  return Number(/^nks_enclave_counter\{counter="wallets_connections"\} (\d+)/m.exec(text)?.[1] ?? NaN);
}

/**
 * The wallet route over the enclave's TLS (docs/TLS.md), beside the operator API, with the same work (EIP-191 over
 * a 32-byte hash, 16 warm keys, concurrency 8): keep-alive (the handshakes fall in the warm-up), and a new TLS
 * connection per request (a full handshake each, through the relay). Rounds alternate the rows. Then the enclave's
 * RSS idle and with 512 TLS connections open (handshake done, no request).
 */
async function walletsSeries(
  s: Stack,
  idp: SimulatedIdp,
  o: { seconds: number; warmup: number; rounds: number },
): Promise<Record<string, unknown>> {
  const project = await createProject(s, jwtProject(idp));
  const users = Array.from({ length: 16 }, (_, i) => `bench-wallets-${i}`);
  const jwts = await Promise.all(users.map((sub) => idp.mint({ sub }, { alg: 'ES256', lifetimeS: 600 })));
  for (const jwt of jwts) await walletGetAddress(s, project.projectKey, jwt);
  const keys: string[] = [];
  for (let i = 0; i < 16; i++) keys.push((await s.api('/v1/keys', { body: {} })).body.keyId);
  const hashes = Array.from({ length: 64 }, () => `0x${randomBytes(32).toString('hex')}`);
  const walletPath = `/v1/${project.projectKey}/wallets/sign`;
  const wallet = (i: number) => ({
    path: walletPath,
    body: { message: hashes[i % hashes.length], jwt_token: jwts[i % jwts.length], message_type: 'hash', wallet_type: 'evm' },
  });
  const rows = {
    operatorApi: {
      url: s.url,
      token: s.tokens.full,
      next: (i: number) => ({
        path: `/v1/keys/${keys[i % keys.length]}/sign`,
        body: { type: 'message', message: { raw: hashes[i % hashes.length] } },
      }),
    },
    walletTls: { url: s.walletsUrl, token: undefined, connect: walletsConnect(s), next: wallet },
    walletTlsNewConnection: {
      url: s.walletsUrl,
      token: undefined,
      connect: walletsConnect(s),
      newConnectionPerRequest: true,
      next: wallet,
    },
  };
  const labels: Record<keyof typeof rows, string> = {
    operatorApi: 'operator API (HTTP to the parent), keep-alive',
    walletTls: "wallet route over the enclave's TLS, keep-alive",
    walletTlsNewConnection: "wallet route over the enclave's TLS, a new TLS connection per request",
  };
  for (const row of Object.values(rows)) await closedLoop({ ...row, concurrency: 8, seconds: 1, warmupSeconds: 0 });
  const pids = { parent: s.parent.child.pid as number, enclave: s.enclave.child.pid as number };
  const runs: Record<keyof typeof rows, Stats[]> = { operatorApi: [], walletTls: [], walletTlsNewConnection: [] };
  for (let round = 0; round < o.rounds; round++) {
    for (const name of Object.keys(rows) as Array<keyof typeof rows>) {
      const st = await withCpu(pids, (measuring) =>
        closedLoop({ ...rows[name], concurrency: 8, seconds: o.seconds, warmupSeconds: o.warmup, onMeasureStart: measuring }),
      );
      runs[name].push(st);
      console.log(
        `wallets: ${labels[name]}, concurrency 8 (round ${round + 1}): ${f(st.perSec)}/s  p50 ${f(st.p50Ms, 2)} ms  p99 ${f(st.p99Ms, 2)} ms  errors ${st.errors}  (CPU µs/request: enclave ${st.cpuUsPerRequest?.enclave}, parent ${st.cpuUsPerRequest?.parent})`,
      );
    }
  }
  const mean = (xs: Stats[], pick: (x: Stats) => number) => xs.reduce((sum, x) => sum + pick(x), 0) / xs.length;
  const summarizeRuns = (xs: Stats[]) => ({
    perSec: Math.round(mean(xs, (x) => x.perSec)),
    p50Ms: Number(mean(xs, (x) => x.p50Ms).toFixed(3)),
    p99Ms: Number(mean(xs, (x) => x.p99Ms).toFixed(3)),
    errors: xs.reduce((sum, x) => sum + x.errors, 0),
    enclaveCpuUsPerRequest: Math.round(mean(xs, (x) => x.cpuUsPerRequest?.enclave ?? NaN)),
    parentCpuUsPerRequest: Math.round(mean(xs, (x) => x.cpuUsPerRequest?.parent ?? NaN)),
  });

  // Memory: idle, then with 512 TLS connections open through the relay.
  const idle = await enclaveMemory(s);
  const sockets: tls.TLSSocket[] = [];
  let failed = 0;
  await Promise.all(
    Array.from(
      { length: 512 },
      () =>
        new Promise<void>((resolve) => {
          const u = new URL(s.walletsUrl);
          const socket = tls.connect({ host: u.hostname, port: Number(u.port), ...walletsConnect(s) });
          sockets.push(socket);
          socket.once('secureConnect', () => resolve());
          socket.on('error', () => undefined);
          socket.once('close', () => {
            failed += 1;
            resolve();
          });
        }),
    ),
  );
  const open = await walletConnections(s);
  const loaded = await enclaveMemory(s);
  for (const socket of sockets) socket.destroy();
  const memory = {
    idleRssMiB: Number(mb(idle.rssBytes)),
    rssMiBWith512Connections: Number(mb(loaded.rssBytes)),
    perConnectionKiB: Math.round((loaded.rssBytes - idle.rssBytes) / 1024 / Math.max(1, 512 - failed)),
    connectionsOpen: open,
    connectionsFailed: failed,
  };
  console.log(
    `wallets: enclave RSS idle ${mb(idle.rssBytes)} MiB, with 512 TLS connections open ${mb(loaded.rssBytes)} MiB (${memory.perConnectionKiB} KiB each; the enclave reported ${Number.isFinite(open) ? open : '?'} open, ${failed} failed)`,
  );
  const summary = {
    concurrency: 8,
    rounds: o.rounds,
    operatorApi: summarizeRuns(runs.operatorApi),
    walletTls: summarizeRuns(runs.walletTls),
    walletTlsNewConnection: summarizeRuns(runs.walletTlsNewConnection),
    memory,
  };
  console.log(
    `wallets: warm sign ${summary.walletTls.perSec}/s p99 ${f(summary.walletTls.p99Ms, 2)} ms over the enclave's TLS (keep-alive) vs ${summary.operatorApi.perSec}/s p99 ${f(summary.operatorApi.p99Ms, 2)} ms on the operator API; ${summary.walletTlsNewConnection.perSec}/s p99 ${f(summary.walletTlsNewConnection.p99Ms, 2)} ms with a new TLS connection per request`,
  );
  return summary;
}

async function onlyWallets(quick: boolean): Promise<void> {
  const cores = os.availableParallelism();
  console.log(`nitro-keystore benchmark, wallets only (${quick ? 'quick' : 'full'}): ${cores} cores, Node ${process.version}`);
  const dedicated = cores >= 2;
  const otherCpus = cores > 2 ? `0-${cores - 2}` : '0';
  if (dedicated) pinSelf(otherCpus);
  const idp = await startSimulatedIdp({ audience: 'nitro-keystore-bench' });
  const j = jwtOptions(idp);
  const s = await startStack(path.join(os.tmpdir(), `nks-bench-wallets-${process.pid}`), {
    kmsLatencyMs: 15,
    ...j,
    enclave: { logLevel: 'info', ...j.enclave },
    parentApi: { maxInFlight: 4096 },
    keepLogs: false,
    ...(dedicated ? { cpus: { enclave: String(cores - 1), parent: otherCpus } } : {}),
  });
  try {
    await waitReady(s);
    const wallets = await walletsSeries(s, idp, { seconds: quick ? 4 : 10, warmup: quick ? 1 : 2, rounds: quick ? 1 : 3 });
    console.log(JSON.stringify({ machine: { cores, node: process.version }, topology: dedicated ? 'dedicated' : 'shared', wallets }));
  } finally {
    await s.stop();
    await idp.close();
  }
}

async function onlyJwt(quick: boolean): Promise<void> {
  const cores = os.availableParallelism();
  console.log(`nitro-keystore benchmark, JWT signing only (${quick ? 'quick' : 'full'}): ${cores} cores, Node ${process.version}`);
  const dedicated = cores >= 2;
  const otherCpus = cores > 2 ? `0-${cores - 2}` : '0';
  if (dedicated) pinSelf(otherCpus);
  const idp = await startSimulatedIdp({ audience: 'nitro-keystore-bench' });
  const j = jwtOptions(idp);
  const s = await startStack(path.join(os.tmpdir(), `nks-bench-jwt-${process.pid}`), {
    kmsLatencyMs: 15,
    ...j,
    enclave: { logLevel: 'info', ...j.enclave },
    parentApi: { maxInFlight: 4096 },
    keepLogs: false,
    ...(dedicated ? { cpus: { enclave: String(cores - 1), parent: otherCpus } } : {}),
  });
  try {
    await waitReady(s);
    const jwt = await jwtSeries(s, idp, { seconds: quick ? 4 : 10, warmup: quick ? 1 : 2, rounds: quick ? 1 : 3 });
    console.log(JSON.stringify({ machine: { cores, node: process.version }, topology: dedicated ? 'dedicated' : 'shared', jwt }));
  } finally {
    await s.stop();
    await idp.close();
  }
}

/**
 * `--database postgres`: warm signing and creates on each store in one run (docs/STORAGE.md), one stack after the
 * other with the same topology. A warm sign reads neither database (its key and project are cached), so its rate
 * should not depend on the engine (target: PostgreSQL within 10% of SQLite); a create is one transaction each.
 */
async function databaseComparison(quick: boolean): Promise<void> {
  const cores = os.availableParallelism();
  console.log(`nitro-keystore benchmark, SQLite against PostgreSQL (${quick ? 'quick' : 'full'}): ${cores} cores, Node ${process.version}`);
  const dedicated = cores >= 2;
  const otherCpus = cores > 2 ? `0-${cores - 2}` : '0';
  if (dedicated) pinSelf(otherCpus);
  const seconds = quick ? 4 : 10;
  const warmup = quick ? 1 : 2;
  const pg = await startPostgres();
  const out: Record<string, { warmPerSec: number; warmP99Ms: number; createPerSec: number; createP99Ms: number }> = {};
  try {
    for (const engine of ['sqlite', 'postgres'] as const) {
      const runDir = path.join(os.tmpdir(), `nks-bench-db-${engine}-${process.pid}`);
      const database =
        engine === 'sqlite' ? { kind: 'sqlite', path: stackDbPath(runDir) } : { kind: 'postgres', url: pg.url, poolSize: 10 };
      const s = await startStack(runDir, {
        kmsLatencyMs: 15,
        enclave: { logLevel: 'info' },
        parentApi: { maxInFlight: 4096 },
        parent: { database },
        keepLogs: false,
        ...(dedicated ? { cpus: { enclave: String(cores - 1), parent: otherCpus } } : {}),
      });
      try {
        await waitReady(s);
        const keys: string[] = [];
        for (let i = 0; i < 16; i++) keys.push((await s.api('/v1/keys', { body: {} })).body.keyId);
        for (const k of keys) await s.api(`/v1/keys/${k}/sign`, { body: { type: 'digest', digest: `0x${'11'.repeat(32)}` } });
        const warm = await closedLoop({
          url: s.url,
          token: s.tokens.full,
          concurrency: 8,
          seconds,
          warmupSeconds: warmup,
          next: (i) => ({ path: `/v1/keys/${keys[i % keys.length]}/sign`, body: { type: 'digest', digest: `0x${'22'.repeat(32)}` } }),
        });
        const creates = await closedLoop({
          url: s.url,
          token: s.tokens.full,
          concurrency: 8,
          seconds: quick ? 3 : 8,
          warmupSeconds: 0.5,
          next: () => ({ path: '/v1/keys', body: {} }),
        });
        out[engine] = {
          warmPerSec: Math.round(warm.perSec),
          warmP99Ms: Number(warm.p99Ms.toFixed(2)),
          createPerSec: Math.round(creates.perSec),
          createP99Ms: Number(creates.p99Ms.toFixed(2)),
        };
        console.log(
          `${engine}: warm sign (concurrency 8) ${f(warm.perSec)}/s p99 ${f(warm.p99Ms, 2)} ms errors ${warm.errors}; create (concurrency 8) ${f(creates.perSec)}/s p99 ${f(creates.p99Ms, 2)} ms errors ${creates.errors}`,
        );
      } finally {
        await s.stop();
      }
    }
  } finally {
    await pg.stop();
  }
  // Coherence across instances: a disable made through one instance, polled on the other until it refuses.
  const propagation: number[] = [];
  const dev = await startDevStack(path.join(os.tmpdir(), `nks-bench-two-${process.pid}`), [
    '--instances',
    '2',
    '--database',
    'postgres',
    '--api-port',
    '0',
  ]);
  try {
    const sign = { type: 'digest', digest: `0x${'33'.repeat(32)}` };
    for (let i = 0; i < (quick ? 10 : 30); i++) {
      const made = await dev.api(0, '/v1/keys', { body: {} });
      const keyId = (made.body as { keyId: string }).keyId;
      if ((await dev.api(1, `/v1/keys/${keyId}/sign`, { body: sign })).status !== 200)
        throw new Error('a key did not sign on the other instance');
      await dev.api(0, `/v1/keys/${keyId}/disable`, { body: {} });
      const t0 = performance.now();
      while ((await dev.api(1, `/v1/keys/${keyId}/sign`, { body: sign })).status === 200) {
        if (performance.now() - t0 > 5000) throw new Error('a disable did not reach the other instance within 5 s');
      }
      propagation.push(performance.now() - t0);
    }
  } finally {
    await dev.stop();
  }
  const sortedProp = [...propagation].sort((x, y) => x - y);
  const disablePropagationMs = {
    p50: Number((sortedProp[Math.floor(sortedProp.length / 2)] as number).toFixed(1)),
    max: Number((sortedProp[sortedProp.length - 1] as number).toFixed(1)),
  };
  console.log(
    `disable through instance 0 refused by instance 1 after: p50 ${f(disablePropagationMs.p50, 1)} ms, max ${f(disablePropagationMs.max, 1)} ms (${propagation.length} keys; bound 1 s)`,
  );
  const sqlite = out.sqlite as (typeof out)[string];
  const postgres = out.postgres as (typeof out)[string];
  const warmRatio = postgres.warmPerSec / sqlite.warmPerSec;
  console.log(
    `warm signing on PostgreSQL: ${f(warmRatio * 100, 1)}% of SQLite's (target: within 10%: ${warmRatio >= 0.9 ? 'met' : 'NOT met'}); creates ${f((postgres.createPerSec / sqlite.createPerSec) * 100, 1)}%`,
  );
  console.log(
    JSON.stringify({
      machine: { cores, node: process.version },
      database: { ...out, warmRatio: Number(warmRatio.toFixed(3)), disablePropagationMs },
    }),
  );
}

/** The enclave's budget for facts + rules of a 20-rule policy on a transaction (docs/POLICIES.md). */
const POLICY_BUDGET_US = 50;

/**
 * A project's policy as it grows in practice: two deny rules, then allow rules of every kind of condition, none
 * of which matches the requests below before the last: every rule is evaluated and every failed one explained.
 */
function twentyRulePolicy() {
  const addresses = (n: number, seed: number) =>
    Array.from({ length: n }, (_, i) => `0x${createHash('sha256').update(`${seed}:${i}`).digest('hex').slice(0, 40)}`);
  const rules: unknown[] = [
    { name: 'no-blind', effect: 'deny', when: { type: ['digest'] } },
    { name: 'no-7702-everywhere', effect: 'deny', when: { type: ['authorization'], chainId: [0] } },
  ];
  for (let i = 0; i < 15; i++) {
    const kind = i % 5;
    rules.push({
      name: `allow-${i}`,
      effect: 'allow',
      when: [
        { type: ['transaction'], chainId: [10, 8453], to: addresses(20, i), maxValue: '1000000000000000000' },
        { type: ['transaction'], erc20: { function: ['transfer'], recipient: addresses(20, i), maxAmount: '1000000' } },
        { type: ['typedData'], typedData: { primaryType: ['Permit'], verifyingContract: addresses(10, i) } },
        { type: ['userOperation'], userOperation: { entryPoint: [ENTRY_POINT_07], targets: addresses(20, i) }, maxValue: '0' },
        { type: ['authorization', 'transaction'], chainId: [1], delegate: [DELEGATE] },
      ][kind],
    });
  }
  rules.push(
    {
      name: 'usdc',
      effect: 'allow',
      when: { type: ['transaction'], chainId: [1], to: [USDC], maxValue: '0', erc20: { recipient: [ALICE, BOB], maxAmount: '1000000000' } },
    },
    {
      name: 'app-ops',
      effect: 'allow',
      when: { type: ['userOperation'], chainId: [1], userOperation: { targets: [USDC, DAI, BOB] }, maxGasPrice: '100000000000' },
    },
    {
      name: 'payments',
      effect: 'allow',
      when: { type: ['transaction'], chainId: [1], to: [BOB, ALICE], maxValue: '1000000000000000000', maxGasPrice: '100000000000' },
    },
  );
  return compilePolicy(PoliciesSchema.parse({ rules }));
}

/** CPU microseconds (user + system, this thread's process) per facts + rules evaluation of `req`. */
function policyCpuUs(policy: ReturnType<typeof compilePolicy>, req: SignRequest, iterations: number): number {
  let allowed = 0;
  for (let i = 0; i < Math.ceil(iterations / 10); i++) allowed += Number(evaluateRules(policy, requestFacts(req)).allowed); // warm-up
  const before = process.cpuUsage();
  for (let i = 0; i < iterations; i++) allowed += Number(evaluateRules(policy, requestFacts(req)).allowed);
  const used = process.cpuUsage(before);
  if (allowed < 0) throw new Error('unreachable'); // keeps the loop's result alive
  return (used.user + used.system) / iterations;
}

function onlyPolicy(quick: boolean): void {
  const iterations = quick ? 20_000 : 200_000;
  console.log(
    `nitro-keystore benchmark, signing policies (${quick ? 'quick' : 'full'}): Node ${process.version}, ${iterations} evaluations each`,
  );
  const policy = twentyRulePolicy();
  const calls = (n: number) => Array.from({ length: n }, (_, i) => ({ target: [USDC, DAI, BOB][i % 3] as string, value: 0n }));
  const cases: Array<[string, SignRequest, boolean]> = [
    ['transaction (eip1559, ether to a listed address)', transactionRequest('eip1559', { to: BOB, value: '1000' }), true],
    ['transaction, denied (no rule allows it)', transactionRequest('eip1559', { to: MALLORY, value: '1000' }), true],
    ['ERC-20 transfer', transactionRequest('eip1559', { to: USDC, data: transferData(ALICE, 5_000_000n) }), true],
    ['userOperation 0.7 executeBatch (3 calls)', userOperationRequest('0.7', batchV07Data([USDC, DAI, BOB], [0n, 0n, 0n])), true],
    ['userOperation executeBatch((address,uint256,bytes)[]) (3 calls)', userOperationRequest('0.7', batchCallsData(calls(3))), true],
    ['userOperation executeBatch, 64 calls (the decoding bound)', userOperationRequest('0.7', batchCallsData(calls(64))), false],
  ];
  const results: Record<string, number> = {};
  for (const [name, req, budgeted] of cases) {
    const us = policyCpuUs(policy, req, budgeted ? iterations : Math.ceil(iterations / 20));
    results[name] = Number(us.toFixed(2));
    const verdict = !budgeted
      ? 'the bound of the work a request can ask for'
      : us <= POLICY_BUDGET_US
        ? `within the ${POLICY_BUDGET_US} µs budget`
        : `OVER the ${POLICY_BUDGET_US} µs budget`;
    console.log(`  ${name}: ${f(us, 2)} µs CPU per evaluation (${verdict})`);
  }
  const worst = Math.max(...cases.filter((c) => c[2]).map((c) => results[c[0]] as number));
  console.log(
    `policy: 20 rules, facts + rules, worst ${f(worst, 2)} µs: ${worst <= POLICY_BUDGET_US ? 'met' : 'NOT met'} (budget ${POLICY_BUDGET_US} µs)`,
  );
  console.log(
    JSON.stringify({
      machine: { node: process.version },
      policy: { rules: policy.rules.length, budgetUs: POLICY_BUDGET_US, cpuUsPerEvaluation: results },
    }),
  );
}

/**
 * `--only warm`: the parent hop alone, quickly (about half a minute): warm signs at the fixed concurrencies with
 * the CPU per request of each process, and the enclave's own capacity at its RPC boundary. With `--profile DIR`
 * each program's CPU profile covers little more than this warm path.
 */
async function onlyWarm(quick: boolean): Promise<void> {
  const o = { seconds: quick ? 4 : 10, warmup: quick ? 1 : 2 };
  const cores = os.availableParallelism();
  const dedicated = cores >= 2;
  console.log(`nitro-keystore benchmark, warm path only (${quick ? 'quick' : 'full'}): ${cores} cores, Node ${process.version}`);
  const busy = await warnIfBusy();
  if (values.profile) process.env.NKS_PROFILE_DIR = path.resolve(values.profile);
  const enclaveCpus = String(cores - 1);
  const otherCpus = cores > 2 ? `0-${cores - 2}` : '0';
  if (dedicated) pinSelf(otherCpus);
  const s = await startStack(path.join(os.tmpdir(), `nks-bench-warm-${process.pid}`), {
    kmsLatencyMs: 15,
    enclave: { logLevel: 'info' },
    parentApi: { maxInFlight: 4096 },
    keepLogs: false,
    ...(dedicated ? { cpus: { enclave: enclaveCpus, parent: otherCpus } } : {}),
  });
  try {
    await waitReady(s);
    const keys = await warmKeys(s);
    const warm: Record<number, Stats> = {};
    for (const c of FIXED_CONCURRENCIES) {
      const st = await warmLevel(s, keys, c, o);
      warm[c] = st;
      console.log(
        `warm sign, concurrency ${String(c).padStart(3)}: ${f(st.perSec)}/s  p50 ${f(st.p50Ms, 2)} ms  p99 ${f(st.p99Ms, 2)} ms  errors ${st.errors}  (CPU µs/request: ${cpuText(st)})`,
      );
    }
    const capacity = await enclaveCapacity(s, keys, { ...o, concurrency: 32, enclaveCpus: dedicated ? 1 : cores });
    console.log(
      `enclave capacity at its RPC boundary (concurrency 32, ${capacity.enclaveCpus} vCPU): ${f(capacity.signsPerSec)}/s, ${f(capacity.signsPerSecPerVcpu)}/s per vCPU, enclave CPU ${f(capacity.enclaveCpuUsPerSign)} µs/sign  p99 ${f(capacity.p99Ms, 2)} ms  errors ${capacity.errors}`,
    );
    console.log(JSON.stringify({ machine: { cores, node: process.version }, busy, warm: levelsJson(warm), enclaveCapacity: capacity }));
  } finally {
    await s.stop();
  }
}

async function main(): Promise<void> {
  const quick = values.quick ?? false;
  const o = { seconds: quick ? 4 : 10, warmup: quick ? 1 : 2, rawSamples: [] as number[] };
  const started = Date.now();
  const cores = os.availableParallelism();
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const reportDir = path.resolve(values.report ?? defaultReportDir(process.cwd()));
  const steps = new Progress({ total: cores >= 2 ? 13 : 12, json: values.json ?? false, source: 'bench' });
  console.log(
    `nitro-keystore benchmark (${quick ? 'quick' : 'full'}): ${cores} cores (${cpu}), Node ${process.version}, KMS emulator latency 15 ms`,
  );
  const busy = await warnIfBusy();
  if (values.profile) process.env.NKS_PROFILE_DIR = path.resolve(values.profile); // CPU profiles of every program
  const signing = values.signers === undefined ? {} : { signing: { workers: Number(values.signers) } };

  // Production topology: a Nitro enclave's vCPUs are its own. Here the enclave gets the last CPU and the parent,
  // the simulators and this load generator share the others. With one CPU everything shares it.
  const dedicated = cores >= 2;
  const enclaveCpus = String(cores - 1);
  const otherCpus = cores > 2 ? `0-${cores - 2}` : '0';
  if (dedicated) pinSelf(otherCpus);
  steps.next('raw in-process signing rate (the reference)');
  o.rawSamples.push(rawSignRate(quick ? 2 : 4));
  console.log(`raw @noble/secp256k1 sign, one thread: ${f(o.rawSamples[0] as number)}/s`);
  const rawLibsecp = rawLibsecp256k1(quick ? 2 : 4);
  console.log(`raw libsecp256k1 sign (as the enclave signs), one thread: ${f(rawLibsecp)}/s`);

  const runDir = path.join(os.tmpdir(), `nks-bench-${process.pid}`);
  steps.next('starting the stack (KMS emulator, NSM simulator, parent, enclave)');
  const idp = await startSimulatedIdp({ audience: 'nitro-keystore-bench' });
  const j = jwtOptions(idp);
  const s = await startStack(runDir, {
    kmsLatencyMs: 15,
    ...j,
    enclave: { logLevel: 'info', ...signing, ...j.enclave },
    // Bodies up to the enclave's 1 MiB frame, so typed data at the budget's limit reaches the enclave.
    parentApi: { maxInFlight: 4096, maxBodyBytes: 1024 * 1024 },
    keepLogs: false,
    ...(dedicated ? { cpus: { enclave: enclaveCpus, parent: otherCpus } } : {}),
  });
  let result: Record<string, unknown>;
  try {
    await waitReady(s);
    steps.next(`warm signing at each concurrency [${dedicated ? 'dedicated' : 'shared'} topology]`);
    const primary = await warmSeries(s, dedicated ? 'dedicated' : 'shared', o, steps);
    steps.next('warm signing in batches');
    const batched = await batchedWarm(s, primary.keys[0] as string, { seconds: o.seconds, batchSize: 100, concurrency: 8 });
    console.log(
      `warm sign, batched (100 a batch, concurrency 8): ${f(batched.signsPerSec)} signs/s  ${f(batched.batchesPerSec)} batches/s  p50 ${f(batched.p50Ms, 2)} ms  p99 ${f(batched.p99Ms, 2)} ms  errors ${batched.errors}  CPU per sign: parent ${batched.cpuUsPerSign.parent} µs, enclave ${batched.cpuUsPerSign.enclave} µs`,
    );
    steps.next("the enclave's own capacity, at its RPC boundary");
    const capacity = await enclaveCapacity(s, primary.keys, {
      seconds: o.seconds,
      warmup: o.warmup,
      concurrency: 32,
      enclaveCpus: dedicated ? 1 : cores,
    });
    console.log(
      `enclave capacity at its RPC boundary (concurrency 32, ${capacity.enclaveCpus} vCPU): ${f(capacity.signsPerSec)}/s, ${f(capacity.signsPerSecPerVcpu)}/s per vCPU, enclave CPU ${f(capacity.enclaveCpuUsPerSign)} µs/sign  p99 ${f(capacity.p99Ms, 2)} ms  errors ${capacity.errors}`,
    );
    steps.next('JWT signing: TrueWallet route against the token API');
    const jwt = await jwtSeries(s, idp, { seconds: o.seconds, warmup: o.warmup, rounds: quick ? 1 : 2 });
    steps.next("wallet routes over the enclave's TLS");
    const wallets = await walletsSeries(s, idp, { seconds: o.seconds, warmup: o.warmup, rounds: quick ? 1 : 2 });

    // Cold signing: fresh keys, each signed once.
    const coldN = quick ? 200 : 1000;
    steps.next(`cold signing: ${coldN} new keys, each signed once`);
    const coldKeys: string[] = [];
    const made = steps.count('keys created', coldN);
    for (let i = 0; i < coldN; i++) {
      coldKeys.push((await s.api('/v1/keys', { body: {} })).body.keyId);
      made.tick();
    }
    made.done();
    const signed = steps.count('cold signs', coldN);
    const coldBefore = await kmsDecrypts(s);
    const coldLat: number[] = [];
    let coldErrors = 0;
    const coldT0 = performance.now();
    const coldConc = 8;
    let ci = 0;
    await Promise.all(
      Array.from({ length: coldConc }, async () => {
        while (ci < coldKeys.length) {
          const k = coldKeys[ci++] as string;
          const t = performance.now();
          const r = await s.api(`/v1/keys/${k}/sign`, { body: { type: 'digest', digest: `0x${'33'.repeat(32)}` } });
          if (r.status === 200) coldLat.push(performance.now() - t);
          else coldErrors += 1;
          signed.tick();
        }
      }),
    );
    const cold = summarize(coldLat, (performance.now() - coldT0) / 1000, coldErrors);
    signed.done();
    const coldKmsCallsPerKey = ((await kmsDecrypts(s)) - coldBefore) / coldN;
    console.log(
      `cold sign (concurrency ${coldConc}, ${coldN} keys): ${f(cold.perSec)}/s  p50 ${f(cold.p50Ms, 1)} ms  p99 ${f(cold.p99Ms, 1)} ms  KMS Decrypt per key ${f(coldKmsCallsPerKey, 2)}`,
    );

    // Key creation (durable), with KMS accounting over every operation.
    steps.next('key creation (durable)');
    const statsBefore = await s.platform.stats();
    const creates = await closedLoop({
      url: s.url,
      token: s.tokens.full,
      concurrency: 8,
      seconds: quick ? 3 : 8,
      warmupSeconds: 0.5,
      next: () => ({ path: '/v1/keys', body: {} }),
    });
    const statsAfter = await s.platform.stats();
    const createKmsCalls = Object.keys(statsAfter).reduce(
      (sum, op) =>
        sum + ((statsAfter[op]?.ok ?? 0) + (statsAfter[op]?.error ?? 0)) - ((statsBefore[op]?.ok ?? 0) + (statsBefore[op]?.error ?? 0)),
      0,
    );
    console.log(
      `create (concurrency 8, committed before 201): ${f(creates.perSec)}/s  p50 ${f(creates.p50Ms, 2)} ms  p99 ${f(creates.p99Ms, 2)} ms  KMS calls ${createKmsCalls}`,
    );

    // Memory: the enclave process with the keys it now caches, and the cache's footprint at scale.
    steps.next("enclave memory and the key cache's footprint");
    const mem = await enclaveMemory(s);
    const footprint = (n: number) => {
      const r = spawnSync(process.execPath, ['--expose-gc', __filename, '--cache-footprint', String(n)], { encoding: 'utf8' });
      return JSON.parse(r.stdout.trim()) as { n: number; rssBytes: number; heapBytes: number };
    };
    const f10k = footprint(10_000);
    const f100k = footprint(100_000);
    console.log(`enclave RSS ${mb(mem.rssBytes)} MiB with ${mem.cacheSize} keys cached`);
    console.log(
      `key cache footprint: 10,000 keys +${mb(f10k.heapBytes)} MiB heap (+${mb(f10k.rssBytes)} MiB RSS); 100,000 keys +${mb(f100k.heapBytes)} MiB heap (+${mb(f100k.rssBytes)} MiB RSS)`,
    );

    steps.next("typed data at the complexity budget's limit");
    const typedData = await typedDataSeries(s, { seconds: o.seconds, warmup: o.warmup, quick }, primary.levels[8]);
    result = {
      primary,
      batched,
      enclaveCapacity: capacity,
      coldKmsCallsPerKey: Number(coldKmsCallsPerKey.toFixed(3)),
      coldPerSec: Math.round(cold.perSec),
      coldP50Ms: Number(cold.p50Ms.toFixed(1)),
      coldP99Ms: Number(cold.p99Ms.toFixed(1)),
      createKmsCalls,
      createPerSec: Math.round(creates.perSec),
      createP50Ms: Number(creates.p50Ms.toFixed(2)),
      createP99Ms: Number(creates.p99Ms.toFixed(2)),
      enclaveRssMiB: Number(mb(mem.rssBytes)),
      enclaveCachedKeys: mem.cacheSize,
      cacheMiBPer10kKeys: Number(mb(f10k.heapBytes)),
      cacheMiBPer100kKeys: Number(mb(f100k.heapBytes)),
      typedData,
      jwt,
      wallets,
    };
  } finally {
    await s.stop();
    await idp.close();
  }

  // For comparison, the same warm series with every process sharing every CPU (no dedicated enclave vCPU).
  let shared: WarmSeries | undefined;
  if (dedicated) {
    steps.next('warm signing again, every process sharing every CPU');
    pinSelf(`0-${cores - 1}`);
    const s2 = await startStack(`${runDir}-shared`, {
      kmsLatencyMs: 15,
      enclave: { logLevel: 'info', ...signing },
      parentApi: { maxInFlight: 4096 },
      keepLogs: false,
    });
    try {
      await waitReady(s2);
      shared = await warmSeries(s2, 'shared', o, steps);
    } finally {
      await s2.stop();
    }
  }

  const sortedRaw = [...o.rawSamples].sort((a, b) => a - b);
  const raw = sortedRaw[Math.floor(sortedRaw.length / 2)] as number;
  console.log(
    `raw reference: median ${f(raw)}/s of ${o.rawSamples.length} samples (${f(sortedRaw[0] as number)}-${f(sortedRaw[sortedRaw.length - 1] as number)}/s)`,
  );
  const primary = result.primary as WarmSeries;
  const [bestC, best] = bestOf(primary.levels);
  const batched = result.batched as Awaited<ReturnType<typeof batchedWarm>>;
  const capacity = result.enclaveCapacity as Awaited<ReturnType<typeof enclaveCapacity>>;
  const cpuRef = primary.levels[CPU_REFERENCE_CONCURRENCY]?.cpuUsPerRequest ?? {};
  const figures: TargetFigures = {
    rawSignPerSec: raw,
    e2eSignPerSec: best.perSec,
    p99Ms: best.p99Ms,
    ...(batched ? { batchedSignPerSec: batched.signsPerSec } : {}),
    ...(cpuRef.enclave !== undefined ? { enclaveCpuUsPerSign: cpuRef.enclave } : {}),
    ...(cpuRef.parent !== undefined ? { parentCpuUsPerSign: cpuRef.parent } : {}),
    coldKmsCallsPerKey: result.coldKmsCallsPerKey as number,
    createKmsCalls: result.createKmsCalls as number,
  };
  const verdicts = targetVerdicts(figures);
  const atFixed = Object.fromEntries(
    FIXED_CONCURRENCIES.map((c) => [
      c,
      { perSec: Math.round(primary.levels[c]?.perSec ?? NaN), ratio: Number(((primary.levels[c]?.perSec ?? NaN) / raw).toFixed(3)) },
    ]),
  );
  const summary = {
    machine: { cores, cpu, node: process.version },
    ...(busy ? { busy } : {}),
    mode: quick ? 'quick' : 'full',
    topology: primary.topology,
    rawSignPerSec: Math.round(raw),
    rawSignSamples: o.rawSamples.map((r) => Math.round(r)),
    rawLibsecp256k1PerSec: Math.round(rawLibsecp),
    e2eSignPerSec: Math.round(best.perSec),
    bestConcurrency: bestC,
    ratio: Number((best.perSec / raw).toFixed(3)),
    p50Ms: Number(best.p50Ms.toFixed(3)),
    p99Ms: Number(best.p99Ms.toFixed(3)),
    e2eSignPerSecAt8: atFixed[8]?.perSec,
    e2eSignPerSecAt32: atFixed[32]?.perSec,
    atConcurrency: atFixed,
    batchedSignPerSec: batched ? Math.round(batched.signsPerSec) : null,
    batchedP99Ms: batched ? Number(batched.p99Ms.toFixed(3)) : null,
    batchedCpuUsPerSign: batched?.cpuUsPerSign ?? null,
    enclaveSignsPerSecPerVcpu: capacity.signsPerSecPerVcpu,
    enclaveCpuUsPerSign: cpuRef.enclave ?? null,
    parentCpuUsPerSign: cpuRef.parent ?? null,
    loadgenCpuUsPerSign: cpuRef.loadgen ?? null,
    cpuReferenceConcurrency: CPU_REFERENCE_CONCURRENCY,
    warm: levelsJson(primary.levels),
    warmKmsCalls: primary.kmsCalls,
    ...(shared
      ? {
          shared: {
            ...(() => {
              const [c, st] = bestOf(shared.levels);
              return {
                e2eSignPerSec: Math.round(st.perSec),
                bestConcurrency: c,
                ratio: Number((st.perSec / raw).toFixed(3)),
                p50Ms: Number(st.p50Ms.toFixed(3)),
                p99Ms: Number(st.p99Ms.toFixed(3)),
              };
            })(),
            warm: levelsJson(shared.levels),
          },
        }
      : {}),
    ...Object.fromEntries(Object.entries(result).filter(([k]) => k !== 'primary')),
    targets: verdicts,
    targetsNotMet: verdicts.filter((v) => v.verdict === 'NOT met').map((v) => v.name),
    seconds: Math.round((Date.now() - started) / 1000),
  } as unknown as Record<string, unknown>;
  console.log(
    `warm sign headline [${primary.topology} topology]: ${f(best.perSec)}/s at concurrency ${bestC} (${best.p99Ms < 10 ? 'the best with p99 < 10 ms' : 'no level kept p99 under 10 ms: the fastest'}), ${(best.perSec / raw).toFixed(2)}x raw noble; at a fixed load: ${FIXED_CONCURRENCIES.map((c) => `c=${c} ${f(atFixed[c]?.perSec ?? NaN)}/s (${(atFixed[c]?.ratio ?? NaN).toFixed(2)}x)`).join(', ')}`,
  );
  console.log(`targets [${primary.topology} topology; CPU per sign at concurrency ${CPU_REFERENCE_CONCURRENCY}]:`);
  for (const line of verdictLines(verdicts)) console.log(line);
  if (busy?.warning) console.log(`WARNING (repeated from the start): ${busy.warning}`);
  steps.next(`writing the report into ${reportDir}`);
  for (const file of writeBenchReport(reportDir, summary as unknown as BenchSummary)) steps.note(file);
  console.log(JSON.stringify(summary));
}

// --cache-footprint N: child mode, fills the enclave's KeyCache with N realistic entries and reports memory.
if (values['cache-footprint']) {
  void (async () => {
    const { KeyCache } = await import('../enclave/src/keys/cache');
    const n = Number(values['cache-footprint']);
    const cache = new KeyCache({ ttlMs: 3600_000, maxEntries: n + 1 });
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const before = process.memoryUsage();
    for (let i = 0; i < n; i++) {
      // Same shapes as a real entry: a 32-byte secret, a checksummed address, the base64 blob it came from, its
      // SHA-256 as the key's record names it, and the project and subject it is bound to.
      const blob = randomBytes(420).toString('base64');
      const entry = {
        secret: new Uint8Array(randomBytes(32)),
        address: `0x${randomBytes(20).toString('hex')}` as const,
        blob,
        blobSha256: `0x${createHash('sha256').update(Buffer.from(blob, 'base64')).digest('hex')}`,
        projectId: 'default',
        subject: `user-${i}`,
      };
      cache.set(`k_${randomBytes(16).toString('base64url')}`, entry);
    }
    gc?.();
    const after = process.memoryUsage();
    // Reading the cache after the measurement keeps it alive through the gc() above.
    process.stdout.write(
      `${JSON.stringify({ n: cache.stats.size, rssBytes: after.rss - before.rss, heapBytes: after.heapUsed - before.heapUsed + (after.arrayBuffers - before.arrayBuffers) })}\n`,
    );
  })();
} else if ((values.report !== undefined || values.json) && (values.database !== undefined || values.only !== undefined)) {
  console.error('bench: --report and --json go with the whole benchmark, not with --only or --database');
  process.exit(2);
} else if (values.database !== undefined) {
  if (values.database !== 'postgres') {
    console.error('bench: --database takes "postgres" (it is measured beside SQLite)');
    process.exit(2);
  }
  void databaseComparison(values.quick ?? false).catch((err: unknown) => {
    console.error(`bench: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  });
} else if (values.only === 'policy') {
  onlyPolicy(values.quick ?? false);
} else if (values.only === 'warm') {
  void onlyWarm(values.quick ?? false).catch((err: unknown) => {
    console.error(`bench: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  });
} else if (values.only !== undefined) {
  if (values.only !== 'jwt' && values.only !== 'wallets') {
    console.error('bench: --only takes "warm", "jwt", "wallets" or "policy"');
    process.exit(2);
  }
  void (values.only === 'jwt' ? onlyJwt : onlyWallets)(values.quick ?? false).catch((err: unknown) => {
    console.error(`bench: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  });
} else {
  void main().catch((err: unknown) => {
    console.error(`bench: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  });
}
