/** Jest runs TypeScript through SWC and also transforms the ESM-only packages (@noble v2/v3, viem's deps) to CJS. */
const esmOnly = ['@noble', '@scure', 'viem', 'ox', 'abitype', 'cbor-x'].join('|');

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/shared', '<rootDir>/enclave', '<rootDir>/parent', '<rootDir>/client', '<rootDir>/sim', '<rootDir>/test', '<rootDir>/scripts'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.(ts|js|mjs|cjs)$': [
      '@swc/jest',
      { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } },
    ],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${esmOnly})/)`],
  moduleFileExtensions: ['ts', 'js', 'mjs', 'cjs', 'json', 'node'],
  testTimeout: 30000,
};
