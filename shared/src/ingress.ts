/**
 * The ingress relay (docs/TLS.md): how the public reaches the enclave's HTTPS server for the wallet routes.
 * The parent accepts TCP on a public port (production: an NLB with TCP pass-through in front), connects to the
 * enclave's wallet listener over vsock, sends one frame (framing.ts) holding the JSON `{client}` (the TCP
 * peer's address, for the enclave's per-address rate limits), then pipes raw bytes both ways. TLS ends in the
 * enclave, so the parent sees only ciphertext. The preamble is the parent's word: a lie about `client` only
 * moves which address a limit counts, which a parent that can drop every connection could do anyway.
 */
import { isIP } from 'node:net';
import { jsonFrameObject } from './json-frame';

/** Where the enclave's wallet listener is (its CID, port 8443), and where the parent's wallet store is. */
export const DEFAULT_WALLETS_ADDRESS = 'vsock://16:8443';
export const DEFAULT_WALLET_STORE_ADDRESS = 'vsock://3:8002';
/** The preamble frame is small: an IP address. */
export const INGRESS_PREAMBLE_MAX_BYTES = 256;

export interface IngressPreamble {
  /** The client's IP address (v4 or v6, as the parent's socket reported it), or "unknown". */
  client: string;
}

export function encodeIngressPreamble(p: IngressPreamble): Buffer {
  return Buffer.from(JSON.stringify({ client: p.client }), 'utf8');
}

/** Parses the preamble frame's payload: `{client}` with an IP address or "unknown", or null for anything else. */
export function parseIngressPreamble(payload: Uint8Array): IngressPreamble | null {
  const client = jsonFrameObject(payload, INGRESS_PREAMBLE_MAX_BYTES, ['client'])?.client;
  if (typeof client !== 'string' || (client !== 'unknown' && isIP(client) === 0)) return null;
  return { client };
}
