/**
 * The release this build is, as `enclave.hello` and `enclave.health` report it. Kept equal to package.json's
 * `version` by test/release.test.ts (the enclave bundle imports nothing outside enclave/ and shared/).
 */
export const RELEASE_VERSION = '0.3.0';
