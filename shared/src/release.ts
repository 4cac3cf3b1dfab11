/**
 * The release this build is, as `enclave.hello` and `enclave.health` report it. Kept equal to package.json's
 * `version` by test/release.test.ts (the enclave bundle imports nothing outside enclave/ and shared/).
 */
export const RELEASE_VERSION = '0.4.0';

/**
 * The enforcement level of this release (docs/OPERATIONS.md, "Security epochs"). Raised by a release whose
 * enclave refuses something an older one accepted (0.4.0: signed records, blob v2, so 2); the image tooling
 * refuses to approve an image of a lower epoch than one already approved, so such a release is a cutover
 * (older measurements removed), never a roll. The enclave configuration's `securityEpoch` may not be lower.
 */
export const SECURITY_EPOCH = 2;
