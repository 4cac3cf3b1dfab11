/**
 * `npm run test:differential`: the enclave's curve (libsecp256k1 in the native addon) against @noble/secp256k1
 * over 1,000,000 random keys and digests (enclave/test/secp256k1.differential.ts; `npm test` runs 10,000).
 * One CPU-bound test file: 15-20 minutes on one free core of the development machine, longer when it is busy
 * (45 minutes in the first run, sharing two cores with other work; docs/SIGNING-CURVE.md).
 */
const base = require('../../jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  rootDir: '../..',
  testMatch: ['**/*.differential.ts'],
  maxWorkers: 1,
  testTimeout: 60 * 60 * 1000,
};
