/** Jest runs TypeScript through esbuild and also transforms the ESM-only packages (@noble v2/v3, ...) to CJS. */
const esmOnly = ['@noble', '@scure', 'jose'].join('|');

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: [
    '<rootDir>/shared',
    '<rootDir>/enclave',
    '<rootDir>/parent',
    '<rootDir>/client',
    '<rootDir>/sim',
    '<rootDir>/test',
    '<rootDir>/scripts',
  ],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.(ts|js|mjs|cjs)$': '<rootDir>/scripts/jest-esbuild-transform.js',
  },
  transformIgnorePatterns: [`/node_modules/(?!(${esmOnly})/)`],
  // The project's own shared code and its test helpers, as the tsconfig `paths` aliases name them (esbuild reads that for the bundles).
  moduleNameMapper: { '^@nks/shared/(.*)$': '<rootDir>/shared/src/$1', '^@nks/shared-test/(.*)$': '<rootDir>/shared/test/$1' },
  moduleFileExtensions: ['ts', 'js', 'mjs', 'cjs', 'json', 'node'],
  testTimeout: 30000,
  // Two workers even on two cores (Jest's default there is one): the multi-process suites wait on their child
  // processes much of the time, and the suite takes about half as long. No test times speed (only generous bounds
  // in the safe direction), so a busier machine does not fail them.
  maxWorkers: Math.max(2, require('node:os').availableParallelism() - 1),
};
