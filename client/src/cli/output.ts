/** Output for people (aligned fields), scripts (`--json`, one JSON document) or shells (`-q`: the ids only). */
let quiet = false;

/** `-q`: `print` writes only the ids of the keys or projects shown (or a signature), one a line. */
export function setQuiet(on: boolean): void {
  quiet = on;
}

/** What `-q` prints of a value: its key or project id(s), a list's ids, or a signature; undefined when none. */
function idsOf(value: unknown): string[] | undefined {
  const v = value as { keyId?: unknown; projectId?: unknown; signature?: unknown; keys?: unknown; projects?: unknown } | null;
  if (!v || typeof v !== 'object') return undefined;
  if (Array.isArray(v.keys)) return (v.keys as Array<{ keyId: string }>).map((k) => k.keyId);
  if (Array.isArray(v.projects)) return (v.projects as Array<{ projectId: string }>).map((p) => p.projectId);
  for (const id of [v.keyId, v.projectId, v.signature]) if (typeof id === 'string') return [id];
  return undefined;
}

export function print(value: unknown, json: boolean, human: () => string): void {
  const ids = quiet ? idsOf(value) : undefined;
  if (ids) process.stdout.write(ids.map((id) => `${id}\n`).join(''));
  else process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

export function fields(rows: Array<[string, unknown]>): string {
  const shown = rows.filter(([, v]) => v !== undefined && v !== null && v !== '');
  const width = Math.max(...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${k.padEnd(width)}  ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join('\n');
}
