/**
 * The wallet routes (`/v1/{projectKey}/wallets/…`) are served by the enclave, over TLS that ends inside it
 * (docs/TLS.md): their bodies carry users' JWTs, which the parent must never see. The parent's API answers any
 * request there 421 Misdirected Request with where to go instead, from its first hook: no body is read.
 */
import { WALLETS_PREFIX } from '@nks/shared/tls-identity';

/** Any method, any path under a project key's `wallets` (and the prefix itself). */
export const WALLETS_PATH_RE = /^\/v1\/[^/]+\/wallets(?:\/|$)/;

/** The metrics and access-log label of those requests. */
export const WALLETS_MOVED_LABEL = `${WALLETS_PREFIX}/*`;

export interface WalletsMoved {
  detail: string;
  /** `wallets.publicUrl`, or null when it is not configured. */
  url: string | null;
}

export function walletsMoved(publicUrl: string | undefined): WalletsMoved {
  return {
    detail: `the wallet routes are served by the enclave over TLS at ${publicUrl ?? 'the wallets endpoint (config.wallets.publicUrl is not set)'}`,
    url: publicUrl ?? null,
  };
}
