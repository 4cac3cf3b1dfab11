/**
 * `npm run check:ops`: the tests that need system tools beyond what `npm ci` installs (`*.ops.ts`, which
 * `npm test` does not match): shellcheck on the operations scripts, the scripts against stand-in nitro-cli,
 * docker and aws (they parse JSON with jq), `systemd-analyze verify` on the units, and openssl against the KMS
 * emulator's CMS. The global setup names any missing tool and its Debian package before a test runs; `.ci/run`
 * installs them.
 */
const base = require('../../jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  rootDir: '../..',
  testMatch: ['**/*.ops.ts'],
  globalSetup: '<rootDir>/test/ops/tools-present.js',
  testTimeout: 120000,
};
