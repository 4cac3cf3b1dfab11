/** `npm run test:browser`: the browser tests alone (`*.browser.ts`, which `npm test` does not match), with the root configuration. */
const base = require('../../jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  rootDir: '../..',
  roots: ['<rootDir>/test/browser'],
  testMatch: ['**/*.browser.ts'],
  testTimeout: 60000,
};
