/**
 * What `npm run bench` judges (scripts/bench-targets.ts), from figures shaped like a measured run's: each
 * target met, NOT met or not measured, the failed ones named; the busy-machine warning from /proc/stat
 * samples and the load average, naming the busiest processes.
 */
import { busyVerdict, parseProcStat, targetVerdicts, verdictLines, type TargetFigures } from '../scripts/bench-targets';

const GOOD: TargetFigures = {
  rawSignPerSec: 4000,
  e2eSignPerSec: 5200, // 1.3x
  p99Ms: 7.5,
  batchedSignPerSec: 13_000, // 3.25x
  enclaveCpuUsPerSign: 140,
  parentCpuUsPerSign: 110,
  coldKmsCallsPerKey: 1,
  createKmsCalls: 0,
};

const verdictOf = (x: TargetFigures) => Object.fromEntries(targetVerdicts(x).map((v) => [v.name, v.verdict]));

describe('targetVerdicts', () => {
  it('a run that meets every target', () => {
    expect(verdictOf(GOOD)).toEqual({
      warmFloor: 'met',
      warmSingle: 'met',
      warmBatched: 'met',
      enclaveCpu: 'met',
      parentCpu: 'met',
      coldKms: 'met',
      createKms: 'met',
    });
    expect(verdictLines(targetVerdicts(GOOD)).at(-1)).toBe('every measured target met');
  });

  it('names each target that failed, at its bound', () => {
    const v = verdictOf({
      ...GOOD,
      e2eSignPerSec: 4400, // 1.1x: above the 0.8x floor, below 1.2x
      batchedSignPerSec: 11_999, // just under 3x
      enclaveCpuUsPerSign: 151,
      parentCpuUsPerSign: 121,
      coldKmsCallsPerKey: 1.002,
      createKmsCalls: 1,
    });
    expect(v).toEqual({
      warmFloor: 'met',
      warmSingle: 'NOT met',
      warmBatched: 'NOT met',
      enclaveCpu: 'NOT met',
      parentCpu: 'NOT met',
      coldKms: 'NOT met',
      createKms: 'NOT met',
    });
    const lines = verdictLines(targetVerdicts({ ...GOOD, parentCpuUsPerSign: 210 }));
    expect(lines.at(-1)).toBe('targets NOT met: parentCpu');
    expect(lines).toContain('  NOT met  parent CPU per warm sign <= 120 µs: 210 µs');
  });

  it('the bounds themselves are met (1.2x, 3x, 150 µs, 120 µs), and a p99 of 10 ms is not under 10 ms', () => {
    expect(
      verdictOf({ ...GOOD, e2eSignPerSec: 4800, batchedSignPerSec: 12_000, enclaveCpuUsPerSign: 150, parentCpuUsPerSign: 120 }),
    ).toMatchObject({
      warmSingle: 'met',
      warmBatched: 'met',
      enclaveCpu: 'met',
      parentCpu: 'met',
    });
    expect(verdictOf({ ...GOOD, p99Ms: 10 })).toMatchObject({ warmFloor: 'NOT met', warmSingle: 'NOT met' });
  });

  it('a figure the run did not produce is "not measured", never met, and is named as such', () => {
    const { batchedSignPerSec: _b, parentCpuUsPerSign: _p, ...rest } = GOOD;
    const v = targetVerdicts({ ...rest, enclaveCpuUsPerSign: NaN });
    expect(Object.fromEntries(v.map((x) => [x.name, x.verdict]))).toMatchObject({
      warmBatched: 'not measured',
      parentCpu: 'not measured',
      enclaveCpu: 'not measured',
      warmSingle: 'met',
    });
    expect(verdictLines(v).at(-1)).toBe('every measured target met (not measured: warmBatched, enclaveCpu, parentCpu)');
    expect(verdictOf({})).toEqual(Object.fromEntries(Object.keys(verdictOf(GOOD)).map((k) => [k, 'not measured'])));
  });
});

describe('busy machine', () => {
  const stat = (idle: number, busy: number) => `cpu  ${busy} 0 0 ${idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\nintr 5\n`;

  it('reads the aggregate cpu line of /proc/stat (idle and iowait count as idle)', () => {
    expect(parseProcStat('cpu  10 1 4 100 5 1 1 0 7 0\ncpu0 1 1 1 1\n')).toEqual({ idle: 105, total: 122 });
    expect(() => parseProcStat('cpu0 1 2 3 4\n')).toThrow(/no readable "cpu" line/);
    expect(() => parseProcStat('cpu  1 x 3 4\n')).toThrow(/no readable "cpu" line/);
  });

  it('a quiet machine gives no warning', () => {
    const v = busyVerdict({ cores: 2, before: parseProcStat(stat(1000, 0)), after: parseProcStat(stat(1195, 5)), loadAvg1: 0.3, top: [] });
    expect(v.busy).toBe(false);
    expect(v.warning).toBeUndefined();
    expect(v.idle).toBeCloseTo(0.975);
  });

  it('a machine with little CPU idle is busy, and the warning names the busiest processes', () => {
    const v = busyVerdict({
      cores: 2,
      before: parseProcStat(stat(1000, 0)),
      after: parseProcStat(stat(1020, 180)),
      loadAvg1: 0.4,
      top: [
        { pid: 41, name: 'jest (worker)', cores: 0.93 },
        { pid: 42, name: 'esbuild', cores: 0.6 },
        { pid: 43, name: 'idle-ish', cores: 0.01 },
      ],
    });
    expect(v.busy).toBe(true);
    expect(v.idle).toBeCloseTo(0.1);
    expect(v.warning).toContain('10% of 2 CPUs idle');
    expect(v.warning).toContain('jest (worker) (pid 41, 93% of a core), esbuild (pid 42, 60% of a core)');
    expect(v.warning).not.toContain('idle-ish');
  });

  it('a high load average alone is busy too (a burst that just ended), with nothing named when nothing stands out', () => {
    const v = busyVerdict({ cores: 2, before: parseProcStat(stat(1000, 0)), after: parseProcStat(stat(1200, 0)), loadAvg1: 3.5, top: [] });
    expect(v.busy).toBe(true);
    expect(v.warning).toContain('load average 3.50');
    expect(v.warning).toContain('no single process stands out');
  });
});
