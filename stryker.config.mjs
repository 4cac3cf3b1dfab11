// Mutation testing of the security-critical modules (StrykerJS with its Jest runner): `npm run test:mutation`.
// docs/MUTATION.md has how to run it, the scores and every surviving mutant with its explanation.
//
// Only tests that run these modules in this process count. Stryker switches mutants inside the Jest process
// (global `__stryker__`, or the env variable `__STRYKER_ACTIVE_MUTANT__` it sets around each mutant run) and
// learns which tests reach which mutant from in-process coverage. The multi-process suites run the prebuilt
// bundles in dist/, which hold none of the instrumented code and report no coverage, so they are left out:
// their checks of these modules are repeated in-process by the tests listed here (and by *.mutation.test.ts).
import base from './jest.config.js';

/** The modules under mutation: sealing and unsealing, CMS, attestation verification, blobs, CBOR, framing, KMS proxy. */
export const MUTATED = [
  'enclave/src/kms/open-answer.ts',
  'enclave/src/kms/unseal.ts',
  'enclave/src/kms/recipient.ts',
  'enclave/src/kms/failed-opens.ts',
  'enclave/src/keys/seal.ts',
  'shared/src/cms.ts',
  'shared/src/attestation/verify.ts',
  'shared/src/attestation/user-data.ts',
  'shared/src/attestation/birth.ts',
  'shared/src/blob.ts',
  'shared/src/cbor.ts',
  'shared/src/framing.ts',
  'parent/src/kms/proxy.ts',
];

/** Test files that exercise those modules in-process (the multi-process suites are not listed: see above). */
export const IN_PROCESS_TESTS = [
  'shared/test/cms.test.ts',
  'shared/test/cbor.test.ts',
  'shared/test/attestation.test.ts',
  'shared/test/user-data.test.ts',
  'shared/test/framing.test.ts',
  'shared/test/rpc.test.ts',
  'shared/test/backpressure.test.ts',
  'shared/test/transport.test.ts',
  'enclave/test/units.test.ts',
  'parent/test/kms-proxy.test.ts',
  'sim/test/kms-emulator.test.ts',
  'sim/test/nsm.test.ts',
];

/**
 * Each module's mutation score as measured (docs/MUTATION.md), rounded down: the floor a run over that module
 * must keep (scripts/mutation-changed.mjs checks it per module). Raise a floor when a test kills survivors;
 * the goal for every module is at least 90.
 * @type {Record<string, number>}
 */
export const MODULE_FLOORS = {};

/** The full run's break threshold: the measured overall score, rounded down (goal: at least 90). */
export const BREAK = null;

export const REPORT_JSON = 'reports/mutation/mutation.json';

/** A run over some modules only (scripts/mutation-changed.mjs) has per-module floors instead of one threshold. */
const partial = process.env.NKS_MUTATION_PARTIAL === '1';

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: 'npm',
  testRunner: 'jest',
  jest: {
    projectType: 'custom',
    config: {
      ...base,
      testMatch: [...IN_PROCESS_TESTS.map((f) => `<rootDir>/${f}`), '<rootDir>/**/*.mutation.test.ts'],
      testSequencer: '<rootDir>/scripts/jest-mutation-sequencer.js',
    },
    enableFindRelatedTests: true,
  },
  mutate: MUTATED,
  coverageAnalysis: 'perTest',
  concurrency: 2,
  // Mutants are typed loosely on purpose (the sandbox's files get `// @ts-nocheck`); esbuild strips types.
  disableTypeChecks: true,
  timeoutMS: 20_000,
  timeoutFactor: 2,
  dryRunTimeoutMinutes: 10,
  tempDirName: '.stryker-tmp',
  // The sandbox is a copy of the working tree: it needs dist/ (the multi-process helpers of kms-proxy and
  // kms-emulator tests start the prebuilt simulators), not the local state or documentation.
  ignorePatterns: ['.dev', '.bench', 'reports', 'coverage', 'docs', 'deploy', '/tmp'],
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: REPORT_JSON },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0 },
  thresholds: { high: 90, low: 80, break: partial ? null : BREAK },
};
