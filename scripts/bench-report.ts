/**
 * The report `npm run bench` leaves in its report directory (`--report DIR`, default reports/bench-<timestamp>/):
 *
 *   report.json   the summary it prints as its last line;
 *   report.md     the same figures as Markdown tables (warm signing by concurrency, then the single figures);
 *   latency.svg   latency (p50 and p99) against concurrency for warm signing, one point per measured level, a
 *                 line per topology and percentile: a small chart of its own, no dependency.
 *
 * Only what the benchmark measured is written; nothing here measures anything.
 */
import fs from 'node:fs';
import path from 'node:path';

/** One measured concurrency level, as the summary's `warm` object holds it. */
export interface LevelFigures {
  perSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  cpuUsPerRequest?: Record<string, number>;
}

/** The parts of `npm run bench`'s summary the report reads; everything else is kept in report.json as it is. */
export interface BenchSummary {
  machine?: { cores?: number; cpu?: string; node?: string };
  /** The machine's state before the run (scripts/bench-targets.ts, busyVerdict). */
  busy?: { busy: boolean; idle: number; loadAvg1: number; warning?: string };
  mode?: string;
  topology?: string;
  /** Each target's verdict (scripts/bench-targets.ts). */
  targets?: Array<{ name: string; target: string; value: string; verdict: string }>;
  warm: Record<string, LevelFigures>;
  shared?: { warm: Record<string, LevelFigures> };
  [figure: string]: unknown;
}

export interface ChartSeries {
  name: string;
  points: Array<{ concurrency: number; ms: number }>;
}

/** reports/bench-YYYYMMDD-HHMMSS (UTC) under `root`. */
export function defaultReportDir(root: string, at = new Date()): string {
  const stamp = at
    .toISOString()
    .replace(/\.\d+Z$/, '')
    .replace(/[-:]/g, '')
    .replace('T', '-');
  return path.join(root, 'reports', `bench-${stamp}`);
}

/** The levels of a `warm` object, by concurrency, lowest first; a level that is not a number is an error. */
function levelsOf(warm: Record<string, LevelFigures>): Array<[number, LevelFigures]> {
  return Object.entries(warm)
    .map(([c, figures]) => {
      const n = Number(c);
      if (!Number.isInteger(n) || n < 1) throw new Error(`bench report: "${c}" is not a concurrency level`);
      return [n, figures] as [number, LevelFigures];
    })
    .sort((a, b) => a[0] - b[0]);
}

/** The chart's lines: p50 and p99 of the primary topology, and of the shared one if it was measured. */
export function latencySeries(summary: BenchSummary): ChartSeries[] {
  const of = (name: string, warm: Record<string, LevelFigures>) =>
    (['p50Ms', 'p99Ms'] as const).map((p) => ({
      name: `${name} ${p.slice(0, 3)}`,
      points: levelsOf(warm)
        .filter(([, f]) => Number.isFinite(f[p]))
        .map(([concurrency, f]) => ({ concurrency, ms: f[p] })),
    }));
  return [...of(summary.topology ?? 'warm', summary.warm), ...(summary.shared ? of('shared', summary.shared.warm) : [])];
}

const escapeXml = (s: string) => s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];

/** A "nice" step for about `count` ticks up to `max` (1, 2 or 5 times a power of ten). */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  return ([1, 2, 5, 10].find((m) => m * pow >= raw) ?? 10) * pow;
}

/**
 * An SVG line chart of latency (ms, linear from 0) against concurrency (logarithmic, a tick at each measured
 * level): axes with ticks and labels, a title, a legend, and a circle for each point.
 */
export function latencyChartSvg(series: ChartSeries[], opts: { title?: string; width?: number; height?: number } = {}): string {
  const width = opts.width ?? 720;
  const height = opts.height ?? 420;
  const m = { left: 64, right: 150, top: 40, bottom: 56 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const points = series.flatMap((s) => s.points);
  if (points.length === 0) throw new Error('bench report: no measured point to chart');
  for (const p of points) {
    if (!(p.concurrency >= 1) || !Number.isFinite(p.ms) || p.ms < 0) {
      throw new Error(
        `bench report: a point must have a concurrency of at least 1 and a latency of 0 ms or more, not ${JSON.stringify(p)}`,
      );
    }
  }
  const levels = [...new Set(points.map((p) => p.concurrency))].sort((a, b) => a - b);
  const lo = Math.log2(levels[0] as number);
  const hi = Math.log2(levels[levels.length - 1] as number);
  const x = (c: number) => m.left + (hi === lo ? plotW / 2 : ((Math.log2(c) - lo) / (hi - lo)) * plotW);
  const maxMs = Math.max(...points.map((p) => p.ms));
  const step = niceStep(maxMs > 0 ? maxMs : 1, 5);
  const top = Math.max(step, Math.ceil((maxMs * 1.05) / step) * step);
  const y = (ms: number) => m.top + plotH - (ms / top) * plotH;
  const r = (n: number) => Number(n.toFixed(1));

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(opts.title ?? 'Warm signing latency against concurrency')}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2 - m.right / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(opts.title ?? 'Warm signing latency against concurrency')}</text>`,
  ];
  // Axes.
  out.push(
    `<g class="axes" stroke="#333333">`,
    `<line x1="${m.left}" y1="${m.top + plotH}" x2="${m.left + plotW}" y2="${m.top + plotH}"/>`,
    `<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + plotH}"/>`,
    `</g>`,
  );
  // X ticks: each measured level.
  out.push(`<g class="x-ticks" text-anchor="middle">`);
  for (const c of levels) {
    const cx = r(x(c));
    out.push(
      `<line x1="${cx}" y1="${m.top + plotH}" x2="${cx}" y2="${m.top + plotH + 5}" stroke="#333333"/>`,
      `<text x="${cx}" y="${m.top + plotH + 18}">${c}</text>`,
    );
  }
  out.push(`</g>`);
  // Y ticks and grid.
  out.push(`<g class="y-ticks" text-anchor="end">`);
  for (let v = 0; v <= top + step / 2; v += step) {
    const cy = r(y(v));
    out.push(
      `<line x1="${m.left}" y1="${cy}" x2="${m.left + plotW}" y2="${cy}" stroke="#dddddd"/>`,
      `<text x="${m.left - 8}" y="${cy + 4}">${Number(v.toPrecision(6))}</text>`,
    );
  }
  out.push(`</g>`);
  out.push(
    `<text class="x-label" x="${m.left + plotW / 2}" y="${height - 14}" text-anchor="middle">concurrency (requests in flight, log scale)</text>`,
    `<text class="y-label" transform="translate(18 ${m.top + plotH / 2}) rotate(-90)" text-anchor="middle">latency (ms)</text>`,
  );
  // Series and legend.
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length] as string;
    const pts = [...s.points].sort((a, b) => a.concurrency - b.concurrency);
    out.push(`<g class="series" data-name="${escapeXml(s.name)}" stroke="${color}" fill="${color}">`);
    if (pts.length > 1)
      out.push(`<polyline fill="none" stroke-width="2" points="${pts.map((p) => `${r(x(p.concurrency))},${r(y(p.ms))}`).join(' ')}"/>`);
    for (const p of pts)
      out.push(
        `<circle cx="${r(x(p.concurrency))}" cy="${r(y(p.ms))}" r="3.5"><title>${escapeXml(s.name)} at concurrency ${p.concurrency}: ${p.ms} ms</title></circle>`,
      );
    out.push(`</g>`);
    const ly = m.top + 10 + i * 20;
    out.push(
      `<g class="legend"><line x1="${width - m.right + 16}" y1="${ly}" x2="${width - m.right + 40}" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
      `<text x="${width - m.right + 46}" y="${ly + 4}">${escapeXml(s.name)}</text></g>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

const num = (n: unknown, d = 0) => (typeof n === 'number' && Number.isFinite(n) ? n.toFixed(d) : '-');

const cpuOf = (f: LevelFigures) =>
  f.cpuUsPerRequest ? ['parent', 'enclave', 'loadgen'].map((k) => num(f.cpuUsPerRequest?.[k])).join(' / ') : '-';

function levelsTable(warm: Record<string, LevelFigures>): string[] {
  return [
    '| concurrency | signs/s | p50 ms | p99 ms | errors | CPU µs/request (parent / enclave / load generator) |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...levelsOf(warm).map(
      ([c, f]) => `| ${c} | ${num(f.perSec)} | ${num(f.p50Ms, 2)} | ${num(f.p99Ms, 2)} | ${num(f.errors)} | ${cpuOf(f)} |`,
    ),
  ];
}

const cell = (v: unknown) => String(v).replace(/\|/g, '\\|');

/** The targets' table, and a line naming the ones not met (or saying every measured one was). */
function targetsSection(targets: NonNullable<BenchSummary['targets']>): string[] {
  const failed = targets.filter((t) => t.verdict === 'NOT met').map((t) => t.name);
  return [
    '## Targets',
    '',
    '| target | measured | verdict |',
    '| --- | ---: | --- |',
    ...targets.map((t) => `| ${cell(t.target)} | ${cell(t.value)} | ${t.verdict === 'NOT met' ? '**NOT met**' : cell(t.verdict)} |`),
    '',
    failed.length ? `Not met: ${failed.join(', ')}.` : 'Every measured target met.',
    '',
  ];
}

/** The summary as Markdown: warm signing by concurrency (per topology), then every other single figure. */
export function benchMarkdown(summary: BenchSummary): string {
  const m = summary.machine ?? {};
  const lines = [
    '# nitro-keystore benchmark',
    '',
    `${summary.mode ?? ''} run: ${m.cores ?? '?'} cores (${m.cpu ?? 'unknown CPU'}), Node ${m.node ?? '?'}`.trim(),
    '',
    ...(summary.busy?.warning ? [`> **Warning:** ${summary.busy.warning}`, ''] : []),
    ...(summary.targets?.length ? targetsSection(summary.targets) : []),
    `## Warm signing (${summary.topology ?? 'primary'} topology)`,
    '',
    ...levelsTable(summary.warm),
    '',
    '![latency against concurrency](latency.svg)',
    '',
  ];
  if (summary.shared) lines.push('## Warm signing (shared topology)', '', ...levelsTable(summary.shared.warm), '');
  const singles = Object.entries(summary).filter(
    ([k, v]) => !['machine', 'warm', 'shared', 'busy', 'targets'].includes(k) && (typeof v !== 'object' || v === null),
  );
  if (singles.length) {
    lines.push('## Figures', '', '| figure | value |', '| --- | ---: |');
    for (const [k, v] of singles) lines.push(`| ${k} | ${cell(v)} |`);
    lines.push('');
  }
  const nested = Object.keys(summary).filter(
    (k) => !['machine', 'warm', 'shared', 'busy', 'targets'].includes(k) && typeof summary[k] === 'object' && summary[k] !== null,
  );
  if (nested.length) lines.push(`The other sections (${nested.join(', ')}) are in report.json.`, '');
  return lines.join('\n');
}

/** Writes report.json, report.md and latency.svg into `dir` (made if missing); returns the files written. */
export function writeBenchReport(dir: string, summary: BenchSummary): string[] {
  if (!summary.warm || typeof summary.warm !== 'object' || Object.keys(summary.warm).length === 0) {
    throw new Error('bench report: the summary has no warm signing levels');
  }
  fs.mkdirSync(dir, { recursive: true });
  const files = {
    'report.json': `${JSON.stringify(summary, null, 2)}\n`,
    'report.md': benchMarkdown(summary),
    'latency.svg': latencyChartSvg(latencySeries(summary)),
  };
  return Object.entries(files).map(([name, text]) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  });
}
