// Whether two versions of a TypeScript source compile to the same code: esbuild's output with whitespace and
// comments dropped, so a reformat or a comment edit is not a change (scripts/mutation-changed.mjs keeps a
// module's measured mutation score across such edits). A relative import of the repository's shared code
// (`../../shared/src/x`) and its alias (`@nks/shared/x`, tsconfig.base.json) name the same module.
import { transformSync } from 'esbuild';

/** @param {string} source */
function compiled(source) {
  const { code } = transformSync(source, { loader: 'ts', minifyWhitespace: true, legalComments: 'none' });
  return code.replace(/(["'])(?:\.\.\/)+shared\/src\//g, '$1@nks/shared/');
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
