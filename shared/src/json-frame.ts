/**
 * The one-frame JSON handshakes on the relays (egress.ts, ingress.ts): a frame's payload read as a JSON object
 * with exactly the expected keys, or null for anything else (too long, not UTF-8 JSON, not an object, a key
 * more or less). The caller checks each value.
 */
export function jsonFrameObject(payload: Uint8Array, maxBytes: number, keys: readonly string[]): Record<string, unknown> | null {
  if (payload.length > maxBytes) return null;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const names = Object.keys(v);
  if (names.length !== keys.length || !keys.every((k) => names.includes(k))) return null;
  return v as Record<string, unknown>;
}
