/**
 * The wallet routes served by the enclave (docs/TLS.md): the ingress listener (listener.ts), the HTTPS server
 * (server.ts) with the wallet routes (routes.ts), and the user keys behind them (keys.ts), which ask the parent's
 * wallet store for records and verify every one. app.ts starts it in a normal image.
 */
import type { WalletStoreApi } from '@nks/shared/enclave-api';
import type { Logger } from '@nks/shared/log';
import type { RpcClient } from '@nks/shared/rpc';
import type { Transport } from '@nks/shared/transport';
import type { JwtVerifier } from '../auth/jwt';
import type { EnclaveConfig } from '../config';
import type { KeyVault } from '../keys/vault';
import type { NsmClient } from '../nsm/client';
import type { VerifiedRecords } from '../records/verified';
import { WalletKeys } from './keys';
import { WalletListener } from './listener';
import { WalletCounters, WalletsServer, type TlsSource, type WalletsStats } from './server';

export type { TlsCredentials, TlsSource, WalletsStats } from './server';

export interface WalletsDeps {
  config: EnclaveConfig['wallets'];
  transport: Transport;
  /** The parent's wallet store (`wallets.store`). */
  store: RpcClient<WalletStoreApi>;
  tls: TlsSource;
  nsm: Pick<NsmClient, 'attest'>;
  vault: Pick<KeyVault, 'create' | 'lookup' | 'sign' | 'successor' | 'activate' | 'cancel'>;
  records: VerifiedRecords;
  jwt: Pick<JwtVerifier, 'subjectOf'>;
  /** Whether the keystore identity is unsealed (the vault serves nothing before). */
  identityReady: () => boolean;
  logger: Logger;
}

export interface Wallets {
  /** Health's `wallets`. */
  stats(): WalletsStats;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Starts the HTTPS server and the listener; resolves once the listener takes connections. */
export async function startWallets(deps: WalletsDeps): Promise<Wallets> {
  const { config, logger } = deps;
  const counters = new WalletCounters();
  const keys = new WalletKeys({
    store: deps.store,
    records: deps.records,
    vault: deps.vault,
    jwt: deps.jwt,
    logger,
    deadlineMs: config.storeDeadlineMs,
    projectCacheMs: config.projectCacheMs,
  });
  const server = new WalletsServer({
    config,
    tls: deps.tls,
    nsm: deps.nsm,
    keys,
    ready: () => deps.identityReady() && deps.store.connected,
    counters,
    logger,
  });
  await server.start();
  const listener = new WalletListener({
    transport: deps.transport,
    address: config.listen,
    maxConnections: config.maxConnections,
    maxConnectionsPerAddress: config.maxConnectionsPerAddress,
    preambleTimeoutMs: config.preambleTimeoutMs,
    counters,
    accept: (stream, client) => server.accept(stream, client),
    takeIdlest: () => server.takeIdlest(),
    logger,
  });
  await listener.listen();
  return {
    stats: () => counters.snapshot(),
    async close() {
      await listener.close();
      await server.close();
    },
  };
}
