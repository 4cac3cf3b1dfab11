// Mutation testing of the security-critical modules (StrykerJS with its Jest runner): `npm run test:mutation`.
// docs/MUTATION.md has how to run it, the scores and every surviving mutant with its explanation.
//
// Only tests that run these modules in this process count. Stryker switches mutants inside the Jest process
// (global `__stryker__`, or the env variable `__STRYKER_ACTIVE_MUTANT__` it sets around each mutant run) and
// learns which tests reach which mutant from in-process coverage. The multi-process suites run the prebuilt
// bundles in dist/, which hold none of the instrumented code and report no coverage, so they are left out:
// their checks of these modules are repeated in-process by the tests listed here (and by *.mutation.test.ts).
import base from './jest.config.js';

/**
 * The modules under mutation: sealing and unsealing, CMS, attestation verification, blobs, CBOR, signed
 * records, framing, KMS proxy.
 */
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
  'shared/src/records.ts',
  'shared/src/framing.ts',
  'parent/src/kms/proxy.ts',
];

/**
 * Test files that exercise those modules in-process (the multi-process suites are not listed: see above).
 * parent/test/kms-proxy.test.ts is left out too: it runs the proxy against the emulator process, with a
 * throttling test that depends on timing; parent/test/kms-proxy.mutation.test.ts tests the same rules
 * in-process with a scripted KMS client.
 */
export const IN_PROCESS_TESTS = [
  'shared/test/cms.test.ts',
  'shared/test/cbor.test.ts',
  'shared/test/attestation.test.ts',
  'shared/test/user-data.test.ts',
  'shared/test/framing.test.ts',
  'shared/test/rpc.test.ts',
  'shared/test/backpressure.test.ts',
  'shared/test/transport.test.ts',
  'shared/test/frame-memory.test.ts',
  'shared/test/records.test.ts',
  'enclave/test/units.test.ts',
  'enclave/test/identity.test.ts',
  'sim/test/kms-emulator.test.ts',
  'sim/test/nsm.test.ts',
];

/**
 * Each module's mutation score as measured (docs/MUTATION.md), rounded down: the floor a run over that module
 * must keep (scripts/mutation-changed.mjs checks it per module). Raise a floor when a test kills survivors;
 * the goal for every module is at least 90.
 * @type {Record<string, number>}
 */
export const MODULE_FLOORS = {
  'enclave/src/kms/open-answer.ts': 92,
  'enclave/src/kms/unseal.ts': 98,
  'enclave/src/kms/recipient.ts': 96,
  'enclave/src/kms/failed-opens.ts': 93,
  'enclave/src/keys/seal.ts': 92,
  'shared/src/cms.ts': 97,
  'shared/src/attestation/verify.ts': 96,
  'shared/src/attestation/user-data.ts': 100,
  'shared/src/attestation/birth.ts': 100,
  'shared/src/blob.ts': 95,
  'shared/src/cbor.ts': 94,
  'shared/src/records.ts': 93,
  'shared/src/framing.ts': 91,
  'parent/src/kms/proxy.ts': 97,
};

/** The commit the floors were measured at: CI (`--since-measured`) checks every module changed since. */
export const MEASURED_AT = '249a2e67ca521ab3941caff1a02c1d06f8a56d51';

/** The full run's break threshold: the measured overall score, rounded down (goal: at least 90). */
export const BREAK = 93;

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
  // The sandbox's TypeScript gets `// @ts-nocheck` (a mutant need not type-check; esbuild strips types).
  disableTypeChecks: true,
  // Static mutants (module-level constants) run every test for each one: 5% of the mutants, 44% of the time.
  // They are reported as Ignored; docs/MUTATION.md lists them and how they are covered instead.
  ignoreStatic: true,
  // A mutant's run may take 8 s plus twice its tests' own time before it counts as a "Timeout" (detected):
  // enough for a loaded 2-core machine, short enough that the decoder's loop mutants (dozens never end) do not
  // take most of a run.
  timeoutMS: 8_000,
  timeoutFactor: 2,
  dryRunTimeoutMinutes: 10,
  tempDirName: '.stryker-tmp',
  // The sandbox is a copy of the working tree. It needs dist/ (a few tests in the listed files start the
  // prebuilt programs: `npm run test:mutation` builds first), not local state or documentation.
  ignorePatterns: ['.dev', '.bench', 'reports', 'coverage', 'docs', 'deploy', '/tmp'],
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: REPORT_JSON },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0 },
  thresholds: { high: 90, low: 80, break: partial ? null : BREAK },
};
