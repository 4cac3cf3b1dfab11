/**
 * `npm run bench`'s report (scripts/bench-report.ts), written from a summary shaped like a measured one (the
 * benchmark itself is far too slow for a test): report.json, report.md and latency.svg, the chart valid XML
 * with its axes, labels and one point per measured concurrency and line.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { tempRunDir } from '@nks/shared-test/helpers';
import {
  benchMarkdown,
  defaultReportDir,
  latencyChartSvg,
  latencySeries,
  writeBenchReport,
  type BenchSummary,
} from '../scripts/bench-report';

const level = (perSec: number, p50Ms: number, p99Ms: number) => ({
  perSec,
  p50Ms,
  p99Ms,
  errors: 0,
  cpuUsPerRequest: { parent: 310, enclave: 420 },
});

/** As `npm run bench` printed it on a 2-core machine (figures rounded as it rounds them). */
const SUMMARY: BenchSummary = {
  machine: { cores: 2, cpu: 'Test CPU <fast> & "small"', node: 'v20.20.2' },
  mode: 'quick',
  topology: 'dedicated',
  rawSignPerSec: 5231,
  e2eSignPerSec: 2480,
  bestConcurrency: 16,
  ratio: 0.474,
  p50Ms: 5.912,
  p99Ms: 9.311,
  warm: {
    '1': level(402, 2.391, 3.822),
    '4': level(1402, 2.712, 4.913),
    '8': level(2101, 3.522, 6.101),
    '16': level(2480, 5.912, 9.311),
    '32': level(2502, 11.84, 19.27),
    '128': level(2466, 49.1, 81.3),
  },
  shared: { warm: { '1': level(380, 2.5, 4.1), '8': level(1800, 4.1, 7.7), '128': level(2001, 60.2, 99.9) } },
  coldKmsCallsPerKey: 1,
  createKmsCalls: 0,
  typedData: { worstMs: 12.3 },
  seconds: 312,
};

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  isArray: (name) => ['g', 'circle', 'line', 'text'].includes(name),
});

type Node = Record<string, unknown> & { g?: Node[]; circle?: Node[]; line?: Node[]; text?: Array<Node | string> };
const textOf = (t: Node | string) => (typeof t === 'string' ? t : String(t['#text'] ?? ''));

describe('bench report', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('writes report.json, report.md and latency.svg into the report directory, made if missing', () => {
    const base = tempRunDir('nks-bench-report-');
    dirs.push(base);
    const dir = path.join(base, 'reports', 'bench-x');
    const files = writeBenchReport(dir, SUMMARY);
    expect(files.map((f) => path.basename(f)).sort()).toEqual(['latency.svg', 'report.json', 'report.md']);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'report.json'), 'utf8'))).toEqual(SUMMARY);
    const md = fs.readFileSync(path.join(dir, 'report.md'), 'utf8');
    expect(md).toContain('| 16 | 2480 | 5.91 | 9.31 | 0 | 310 / 420 / - |');
    expect(md).toContain('## Warm signing (dedicated topology)');
    expect(md).toContain('## Warm signing (shared topology)');
    expect(md).toContain('| 128 | 2001 | 60.20 | 99.90 | 0 | 310 / 420 / - |');
    expect(md).toContain('| ratio | 0.474 |');
    expect(md).toContain('![latency against concurrency](latency.svg)');
    expect(md).toContain('The other sections (typedData) are in report.json.');
    // Rows in order of concurrency, not of the object's keys as strings.
    expect([...md.matchAll(/^\| (\d+) \| \d+ \|/gm)].slice(0, 6).map((m) => Number(m[1]))).toEqual([1, 4, 8, 16, 32, 128]);
  });

  it('leads with the targets, naming the ones not met, and with the warning of a busy machine', () => {
    const md = benchMarkdown({
      ...SUMMARY,
      busy: { busy: true, idle: 0.1, loadAvg1: 7.5, warning: 'the machine is busy before the benchmark starts: jest' },
      targets: [
        { name: 'warmSingle', target: 'warm single >= 1.2x raw noble with p99 < 10 ms', value: '1.31x, p99 7.50 ms', verdict: 'met' },
        { name: 'parentCpu', target: 'parent CPU per warm sign <= 120 µs', value: '210 µs', verdict: 'NOT met' },
        { name: 'warmBatched', target: 'batched >= 3x raw noble', value: '-', verdict: 'not measured' },
      ],
    });
    expect(md).toContain('> **Warning:** the machine is busy before the benchmark starts: jest');
    expect(md).toContain('| parent CPU per warm sign <= 120 µs | 210 µs | **NOT met** |');
    expect(md).toContain('| batched >= 3x raw noble | - | not measured |');
    expect(md).toContain('Not met: parentCpu.');
    expect(md.indexOf('## Targets')).toBeLessThan(md.indexOf('## Warm signing'));
    expect(md).not.toContain('| busy |');
    expect(md).toContain('The other sections (typedData) are in report.json.');
    expect(benchMarkdown({ ...SUMMARY, targets: [{ name: 'coldKms', target: 't', value: '1', verdict: 'met' }] })).toContain(
      'Every measured target met.',
    );
    expect(benchMarkdown(SUMMARY)).not.toContain('## Targets');
  });

  it('draws valid XML with both axes, their labels and one point per measured concurrency and line', () => {
    const svg = latencyChartSvg(latencySeries(SUMMARY));
    expect(XMLValidator.validate(svg)).toBe(true);
    const doc = parser.parse(svg) as { svg: Node };
    const root = doc.svg;
    expect(root.xmlns).toBe('http://www.w3.org/2000/svg');
    const groups = root.g as Node[];
    const byClass = (c: string) => groups.filter((g) => g.class === c);
    expect(byClass('axes')[0]?.line).toHaveLength(2);
    // One x tick per measured level, labelled with it.
    expect((byClass('x-ticks')[0]?.text ?? []).map(textOf)).toEqual(['1', '4', '8', '16', '32', '128']);
    const yTicks = (byClass('y-ticks')[0]?.text ?? []).map((t) => Number(textOf(t)));
    expect(yTicks[0]).toBe(0);
    expect(Math.max(...yTicks)).toBeGreaterThanOrEqual(99.9); // the highest point is on the chart
    const labels = (root.text as Node[]).map(textOf);
    expect(labels).toEqual(expect.arrayContaining(['concurrency (requests in flight, log scale)', 'latency (ms)']));
    const series = byClass('series');
    expect(series.map((s) => s['data-name'])).toEqual(['dedicated p50', 'dedicated p99', 'shared p50', 'shared p99']);
    expect(series.map((s) => (s.circle ?? []).length)).toEqual([6, 6, 3, 3]);
    // Higher latency is higher on the chart (a smaller y), and more concurrency further right.
    const p99 = (series[1]?.circle ?? []).map((c) => ({ x: Number(c.cx), y: Number(c.cy) }));
    for (let i = 1; i < p99.length; i++) expect((p99[i] as { x: number }).x).toBeGreaterThan((p99[i - 1] as { x: number }).x);
    expect((p99[5] as { y: number }).y).toBeLessThan((p99[0] as { y: number }).y);
    expect(byClass('legend')).toHaveLength(4);
  });

  it('escapes what it writes as text', () => {
    const svg = latencyChartSvg([{ name: 'a <b> & "c"', points: [{ concurrency: 1, ms: 1 }] }], { title: '</svg><script>' });
    expect(XMLValidator.validate(svg)).toBe(true);
    expect(svg).not.toContain('<script>');
  });

  it('charts a single level, and latencies of 0 ms', () => {
    const svg = latencyChartSvg([{ name: 'one', points: [{ concurrency: 8, ms: 0 }] }]);
    expect(XMLValidator.validate(svg)).toBe(true);
    expect(svg).toMatch(/<circle cx="\d+(\.\d)?" cy="\d+(\.\d)?"/);
    expect(svg).not.toMatch(/NaN|Infinity/);
  });

  it('refuses a summary or points it cannot chart, with what is wrong', () => {
    expect(() => latencyChartSvg([])).toThrow('bench report: no measured point to chart');
    expect(() => latencyChartSvg([{ name: 'x', points: [{ concurrency: 0, ms: 1 }] }])).toThrow(/concurrency of at least 1/);
    expect(() => latencyChartSvg([{ name: 'x', points: [{ concurrency: 1, ms: NaN }] }])).toThrow(/latency of 0 ms or more/);
    expect(() => benchMarkdown({ warm: { eight: level(1, 1, 1) } })).toThrow('bench report: "eight" is not a concurrency level');
    const dir = path.join(tempRunDir('nks-bench-report-'), 'r');
    dirs.push(path.dirname(dir));
    expect(() => writeBenchReport(dir, { warm: {} })).toThrow('bench report: the summary has no warm signing levels');
  });

  it('names its default directory reports/bench-<UTC timestamp>', () => {
    expect(defaultReportDir('/repo', new Date('2026-12-03T14:05:09.123Z'))).toBe('/repo/reports/bench-20261203-140509');
  });
});

describe('npm run bench options', () => {
  it('--no-build runs what dist/ holds, without building, and passes the other options on', () => {
    const run = path.resolve(__dirname, '..', 'scripts', 'bench-run.mjs');
    const r = spawnSync(process.execPath, [run, '--no-build', '--only', 'nothing'], { encoding: 'utf8', timeout: 30_000 });
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 2, stdout: '' });
    expect(r.stderr).toContain('bench: --no-build: running dist/ as built at');
    expect(r.stderr).toContain('bench: --only takes "warm", "jwt", "wallets" or "policy"');
  });

  it('refuses --report and --json with a partial run, clearly', () => {
    const bench = path.resolve(__dirname, '..', 'dist', 'bench.js');
    for (const args of [
      ['--only', 'jwt', '--report', 'x'],
      ['--database', 'postgres', '--json'],
    ]) {
      const r = spawnSync(process.execPath, [bench, ...args], { encoding: 'utf8', timeout: 30_000 });
      expect({ args, status: r.status, stderr: r.stderr.trim() }).toEqual({
        args,
        status: 2,
        stderr: expect.stringContaining('bench: --report and --json go with the whole benchmark, not with --only or --database'),
      });
    }
  });
});
