// Preloaded (NODE_OPTIONS=--require) into every Node process of `npm run test:node24` (scripts/test-node.mjs):
// the test runner, the programs the tests spawn from dist/ and their worker threads (a --require preload runs
// in each worker too). It makes `require('better-sqlite3')` load the copy built for this Node's ABI in
// NKS_TEST_NODE_ADDONS, so node_modules keeps the system Node's build untouched. Jest's own module registry
// does not go through these hooks: scripts/test-node.mjs maps the name there with moduleNameMapper.
'use strict';
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { registerHooks } = require('node:module');

const dir = process.env.NKS_TEST_NODE_ADDONS;
if (!dir) throw new Error('test-node-preload.cjs: NKS_TEST_NODE_ADDONS is not set (run it through scripts/test-node.mjs)');
const entry = pathToFileURL(path.join(dir, 'better-sqlite3', 'lib', 'index.js')).href;

registerHooks({
  resolve(specifier, context, nextResolve) {
    if (specifier === 'better-sqlite3') return { url: entry, format: 'commonjs', shortCircuit: true };
    return nextResolve(specifier, context);
  },
});
