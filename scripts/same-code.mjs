// Whether two versions of a TypeScript source compile to the same code: esbuild's output with whitespace and
// comments dropped, so a reformat or a comment edit is not a change (scripts/mutation-changed.mjs keeps a
// module's measured mutation score across such edits).
import { transformSync } from 'esbuild';

/** @param {string} source */
function compiled(source) {
  return transformSync(source, { loader: 'ts', minifyWhitespace: true, legalComments: 'none' }).code;
}

/**
 * @param {string} before
 * @param {string} after
 * @returns {boolean} false also when either does not compile
 */
export function sameCode(before, after) {
  try {
    return compiled(before) === compiled(after);
  } catch {
    return false;
  }
}
