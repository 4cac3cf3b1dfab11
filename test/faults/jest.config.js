/**
 * `npm run test:faults`: tests that need a C compiler (the disk-fault shim, test/chaos/disk-faults.c), alone
 * (`*.faults.ts`, which `npm test` does not match), with the root configuration. `.ci/run` installs the compiler.
 */
const base = require('../../jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  rootDir: '../..',
  roots: ['<rootDir>/test/faults'],
  testMatch: ['**/*.faults.ts'],
  testTimeout: 120000,
};
