/**
 * For the wallet tests' bundle until the TLS helper's methods.ts lands (wallets-setup.ts): the real methods,
 * with health's `tls` and `wallets` (shared/src/enclave-api.ts, EnclaveHealth) filled from the parts app.ts
 * passes, as the contract says methods.ts will. Never in dist/enclave.js.
 */
import type { RpcMethod } from '@nks/shared/rpc';
import { enclaveMethods as realMethods, type EnclaveParts } from '../src/methods';
import type { WalletsStats } from '../src/wallets';
import type { TlsHolder } from './tls-holder-stand-in';

export * from '../src/methods';

export function enclaveMethods(
  parts: EnclaveParts & { tls?: TlsHolder; walletStats?: () => WalletsStats },
): ReturnType<typeof realMethods> {
  const made = realMethods(parts);
  const health = made.methods['enclave.health'] as RpcMethod;
  made.methods['enclave.health'] = {
    ...health,
    handler: async (params, ctx) => ({
      ...((await health.handler(params, ctx)) as object),
      tls: parts.tls?.status(),
      wallets: parts.walletStats?.(),
    }),
  };
  return made;
}
