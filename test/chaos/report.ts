/** The chaos suite's one table (text), and its rows as JSON. */
import type { Row } from './runner';

const errorsOf = (e: Record<string, number>) =>
  Object.entries(e)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k}:${v}`)
    .join(' ') || '-';

export function table(rows: Row[]): string {
  const head = [
    'scenario',
    'requests',
    'ok',
    'errors by code',
    'p50 ms',
    'p99 ms',
    'acked',
    'lost',
    'hung',
    'recover ms',
    'result',
    'notes',
  ];
  const body = rows.map((r) => [
    r.scenario,
    String(r.requests),
    String(r.ok),
    errorsOf(r.errors),
    String(r.p50),
    String(r.p99),
    String(r.acked),
    String(r.lost),
    String(r.hung),
    r.recoverMs === null ? 'never' : String(r.recoverMs),
    r.pass ? 'PASS' : 'FAIL',
    [...r.expectations.map((e) => `${e.holds ? 'ok' : e.enforced ? 'FAILED' : 'not yet'}: ${e.what}`), ...r.notes].join('; ') || '-',
  ]);
  const cells = [head, ...body];
  const widths = head.map((_, i) => Math.max(...cells.map((c) => (i === head.length - 1 ? 3 : (c[i] as string).length))));
  const line = (c: string[]) => `| ${c.map((v, i) => (i === c.length - 1 ? v : v.padEnd(widths[i] as number))).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}
