/**
 * Loading of native addons that are kept outside the esbuild bundles.
 *
 * In the enclave image the program runs from a bare directory holding the bundle and a `native/` folder with
 * the `.node` files; in development they come from node_modules. The first candidate that loads wins; when
 * none does, the error lists every place tried and why it failed.
 */
import path from 'node:path';

export interface AddonCandidate {
  /** Absolute path to a `.node` file, or a package name resolved through node_modules. */
  id: string;
}

export function nativeDirCandidates(fileName: string): string[] {
  const out: string[] = [];
  const main = process.argv[1];
  if (main) out.push(path.join(path.dirname(path.resolve(main)), 'native', fileName));
  return out;
}

/**
 * Loads the first of `candidates` that can be required. `what` names the addon in the error message.
 * `require` is taken from the caller's module so bundlers leave package names as run-time lookups.
 */
export function loadAddon<T>(what: string, candidates: readonly string[], req: NodeJS.Require = require): T {
  const failures: string[] = [];
  const errors: unknown[] = [];
  for (const id of candidates) {
    try {
      return req(id) as T;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      failures.push(`${id}: ${e.code ?? ''} ${firstLine(e.message)}`.trim());
      errors.push(err);
    }
  }
  throw new Error(`${what} could not be loaded (tried ${candidates.length}):\n  ${failures.join('\n  ')}`, {
    cause: new AggregateError(errors, `${errors.length} candidates failed`),
  });
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}
