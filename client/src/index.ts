/**
 * The `nitro-keystore-client` package's main entry (`import … from 'nitro-keystore-client'`): the typed client
 * for the caller API and the helpers that check what it answers (client/src/sdk.ts, client/src/verify.ts,
 * client/src/tls.ts). The package is built by `npm run build:client` (scripts/build.mjs); client/README.md
 * describes it.
 */
export * from './sdk';
