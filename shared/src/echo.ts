/**
 * How a caller's string (a typed-data type or field name, a primary type, an unknown field's name) is quoted in
 * an error message or a policy reason: bounded and inert, so that neither an answer nor a log line can be
 * flooded or forged with it.
 */

/** Characters of a caller's string quoted in a text. */
export const ECHO_MAX_CHARS = 64;

/**
 * Characters JSON.stringify leaves raw that a terminal or a log viewer should not be handed: DEL and the C1
 * controls, the line and paragraph separators, and the bidirectional marks, embeddings, overrides and isolates.
 */
const INVISIBLE = /[\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

const u = (ch: string) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** The first `max` code points of `s` (never half a surrogate pair), with `…` when any were cut. */
export function cut(s: string, max = ECHO_MAX_CHARS): string {
  if (s.length <= max) return s;
  let chars = 0;
  let end = 0;
  for (const ch of s) {
    if (chars === max) return `${s.slice(0, end)}…`;
    chars += 1;
    end += ch.length;
  }
  return s;
}

/**
 * A caller's string as a JSON string literal (`"Mail"`), cut to ECHO_MAX_CHARS code points: control
 * characters, quotes and lone surrogates escaped by JSON.stringify, the other invisible ones above as `\uXXXX`.
 */
export function quote(s: string): string {
  return JSON.stringify(cut(s)).replace(INVISIBLE, u);
}

/** `quote` without the quotes: for a caller's name that is one step of a field path (`body.typedData.message.x`). */
export function escapeName(s: string): string {
  const quoted = quote(s);
  return quoted.slice(1, -1);
}
