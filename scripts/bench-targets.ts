/**
 * What `npm run bench` judges, as pure logic (no measuring here; test/bench-targets.test.ts):
 *
 *   - `targetVerdicts`: each target of the benchmark (README.md, "Performance") against the figures of one run,
 *     met, NOT met, or not measured (a figure the run did not produce, e.g. batched signing before it exists);
 *   - `busyVerdict`: whether the machine is busy before the run starts, from two samples of /proc/stat (CPU idle)
 *     and the load average, naming the processes that used the most CPU between the samples.
 */

/** The figures a verdict reads; any may be missing (not measured in this run). */
export interface TargetFigures {
  rawSignPerSec?: number;
  /** Warm end to end, single requests: the best rate whose p99 is under 10 ms, and that p99. */
  e2eSignPerSec?: number;
  p99Ms?: number;
  /** Warm end to end, batched requests: signs per second. */
  batchedSignPerSec?: number;
  /** CPU microseconds per warm sign, by process, at the reference concurrency. */
  enclaveCpuUsPerSign?: number;
  parentCpuUsPerSign?: number;
  coldKmsCallsPerKey?: number;
  createKmsCalls?: number;
}

export type Verdict = 'met' | 'NOT met' | 'not measured';

export interface TargetVerdict {
  /** Short stable name (report.json's key). */
  name: string;
  /** The target in words. */
  target: string;
  /** The measured value in words ('-' when not measured). */
  value: string;
  verdict: Verdict;
}

const finite = (n: number | undefined): n is number => typeof n === 'number' && Number.isFinite(n);

/** The targets, in the order they are printed. The 0.8x floor of earlier releases stays visible beside 1.2x. */
export function targetVerdicts(x: TargetFigures): TargetVerdict[] {
  const ratio = finite(x.e2eSignPerSec) && finite(x.rawSignPerSec) && x.rawSignPerSec > 0 ? x.e2eSignPerSec / x.rawSignPerSec : undefined;
  const batchRatio =
    finite(x.batchedSignPerSec) && finite(x.rawSignPerSec) && x.rawSignPerSec > 0 ? x.batchedSignPerSec / x.rawSignPerSec : undefined;
  const judge = (ok: boolean | undefined): Verdict => (ok === undefined ? 'not measured' : ok ? 'met' : 'NOT met');
  const p99 = finite(x.p99Ms) ? `, p99 ${x.p99Ms.toFixed(2)} ms` : '';
  const warm = (min: number): boolean | undefined => (ratio === undefined || !finite(x.p99Ms) ? undefined : ratio >= min && x.p99Ms < 10);
  const atMost = (v: number | undefined, max: number) => (finite(v) ? v <= max : undefined);
  const exactly = (v: number | undefined, want: number) => (finite(v) ? v === want : undefined);
  const us = (v: number | undefined) => (finite(v) ? `${Math.round(v)} µs` : '-');
  return [
    {
      name: 'warmFloor',
      target: 'warm single >= 0.8x raw noble with p99 < 10 ms (the earlier floor)',
      value: ratio === undefined ? '-' : `${ratio.toFixed(2)}x${p99}`,
      verdict: judge(warm(0.8)),
    },
    {
      name: 'warmSingle',
      target: 'warm single >= 1.2x raw noble with p99 < 10 ms',
      value: ratio === undefined ? '-' : `${ratio.toFixed(2)}x${p99}`,
      verdict: judge(warm(1.2)),
    },
    {
      name: 'warmBatched',
      target: 'batched >= 3x raw noble',
      value: batchRatio === undefined ? '-' : `${batchRatio.toFixed(2)}x`,
      verdict: judge(batchRatio === undefined ? undefined : batchRatio >= 3),
    },
    {
      name: 'enclaveCpu',
      target: 'enclave CPU per warm sign <= 150 µs',
      value: us(x.enclaveCpuUsPerSign),
      verdict: judge(atMost(x.enclaveCpuUsPerSign, 150)),
    },
    {
      name: 'parentCpu',
      target: 'parent CPU per warm sign <= 120 µs',
      value: us(x.parentCpuUsPerSign),
      verdict: judge(atMost(x.parentCpuUsPerSign, 120)),
    },
    {
      name: 'coldKms',
      target: 'cold sign: exactly 1 KMS Decrypt per key',
      value: finite(x.coldKmsCallsPerKey) ? String(x.coldKmsCallsPerKey) : '-',
      verdict: judge(exactly(x.coldKmsCallsPerKey, 1)),
    },
    {
      name: 'createKms',
      target: 'create: 0 KMS calls',
      value: finite(x.createKmsCalls) ? String(x.createKmsCalls) : '-',
      verdict: judge(exactly(x.createKmsCalls, 0)),
    },
  ];
}

/** One line per target, and a last line naming the targets that failed (or saying all measured ones were met). */
export function verdictLines(verdicts: TargetVerdict[]): string[] {
  const failed = verdicts.filter((v) => v.verdict === 'NOT met');
  const missing = verdicts.filter((v) => v.verdict === 'not measured');
  return [
    ...verdicts.map(
      (v) => `  ${v.verdict === 'met' ? 'met    ' : v.verdict === 'NOT met' ? 'NOT met' : 'n/a    '}  ${v.target}: ${v.value}`,
    ),
    failed.length
      ? `targets NOT met: ${failed.map((v) => v.name).join(', ')}${missing.length ? ` (not measured: ${missing.map((v) => v.name).join(', ')})` : ''}`
      : `every measured target met${missing.length ? ` (not measured: ${missing.map((v) => v.name).join(', ')})` : ''}`,
  ];
}

/** The aggregate "cpu" line of /proc/stat: jiffies per state. */
export interface CpuTimes {
  idle: number;
  total: number;
}

/** Parses the first ("cpu ") line of /proc/stat; idle counts idle and iowait. Throws on anything else. */
export function parseProcStat(text: string): CpuTimes {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  const fields = line
    ?.trim()
    .split(/\s+/)
    .slice(1)
    .map((v) => Number(v));
  if (!fields || fields.length < 4 || fields.some((v) => !Number.isFinite(v) || v < 0))
    throw new Error('bench: /proc/stat has no readable "cpu" line');
  // user nice system idle iowait irq softirq steal (guest and guest_nice are already in user and nice).
  const used = fields.slice(0, 8);
  return { idle: (fields[3] as number) + (fields[4] ?? 0), total: used.reduce((a, b) => a + b, 0) };
}

export interface BusySample {
  cores: number;
  /** /proc/stat before and after the sampling window. */
  before: CpuTimes;
  after: CpuTimes;
  /** The 1-minute load average at the end of the window. */
  loadAvg1: number;
  /** The processes that used the most CPU in the window (not this one), busiest first: cores' worth each. */
  top: Array<{ pid: number; name: string; cores: number }>;
}

export interface BusyVerdict {
  busy: boolean;
  /** The share of all CPUs idle in the window, 0..1. */
  idle: number;
  loadAvg1: number;
  /** A warning naming what is busy; undefined when the machine is quiet. */
  warning?: string;
}

/**
 * Busy: less than `minIdle` (default 0.9) of all CPUs idle over the window, or a 1-minute load average above
 * `maxLoadPerCore` (default 0.5) per core (the load average trails: it also catches a burst that just ended).
 */
export function busyVerdict(s: BusySample, opts: { minIdle?: number; maxLoadPerCore?: number } = {}): BusyVerdict {
  const minIdle = opts.minIdle ?? 0.9;
  const maxLoad = (opts.maxLoadPerCore ?? 0.5) * s.cores;
  const total = s.after.total - s.before.total;
  const idle = total > 0 ? Math.min(1, Math.max(0, (s.after.idle - s.before.idle) / total)) : 1;
  const busy = idle < minIdle || s.loadAvg1 > maxLoad;
  if (!busy) return { busy, idle, loadAvg1: s.loadAvg1 };
  const who = s.top
    .filter((p) => p.cores >= 0.05)
    .slice(0, 5)
    .map((p) => `${p.name} (pid ${p.pid}, ${Math.round(p.cores * 100)}% of a core)`);
  const warning =
    `the machine is busy before the benchmark starts: ${Math.round(idle * 100)}% of ${s.cores} CPUs idle, ` +
    `load average ${s.loadAvg1.toFixed(2)}; ${who.length ? `busiest: ${who.join(', ')}` : 'no single process stands out'}. ` +
    'Throughput figures will be low and noisy; CPU per request is less affected.';
  return { busy, idle, loadAvg1: s.loadAvg1, warning };
}
