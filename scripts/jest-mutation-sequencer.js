// Jest test order for mutation testing (stryker.config.mjs): the fast in-process tests first, the suites that
// start simulator processes last. Stryker stops a mutant's run at its first failing test file, so a mutant
// that a fast test kills never waits for a slow suite. (Jest's default order puts the slowest files first.)
const SLOW_LAST = [
  'sim/test/kms-emulator.test.ts',
  'sim/test/nsm.test.ts',
  'shared/test/backpressure.test.ts',
  'shared/test/transport.test.ts',
  'shared/test/rpc.test.ts',
];

/** @param {string} file */
function rank(file) {
  const rel = file.split(/[\\/]/).slice(-3).join('/');
  if (rel.endsWith('.mutation.test.ts')) return 0;
  const slow = SLOW_LAST.indexOf(rel);
  return slow < 0 ? 1 : 2 + slow;
}

class MutationSequencer {
  /** @param {Array<{path: string}>} tests */
  sort(tests) {
    return [...tests].sort((a, b) => rank(a.path) - rank(b.path) || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /** @param {Array<{path: string}>} tests */
  shard(tests) {
    return tests;
  }

  cacheResults() {}
}

module.exports = MutationSequencer;
