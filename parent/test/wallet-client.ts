/**
 * What the parent's TrueWallet tests share: HTTP requests as a browser or the SDK makes them (node:http, so a
 * request can come from another loopback address, `from`, and carry any Origin), and the checks of a
 * signature the SDK relies on (ethers `verifyMessage`, v 27/28, low s).
 */
import http from 'node:http';
import { getBytes, Signature, verifyMessage } from 'ethers';

export interface Answer {
  status: number;
  body: any;
  headers: http.IncomingHttpHeaders;
}

export interface CallInit {
  method?: string;
  /** A value is sent as JSON; a string as it is. */
  body?: unknown;
  headers?: Record<string, string>;
  /** A bearer token. */
  token?: string;
  /** The local address to send from (another loopback address: another client). */
  from?: string;
}

/** `base` is an http URL, or `unix:<socket path>` for a Unix socket listener. */
export function call(base: string, pathname: string, init: CallInit = {}): Promise<Answer> {
  const socketPath = base.startsWith('unix:') ? base.slice('unix:'.length) : undefined;
  const url = new URL(socketPath === undefined ? `${base}${pathname}` : `http://localhost${pathname}`);
  const body = init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
  const headers: Record<string, string> = {
    ...(body !== undefined && typeof init.body !== 'string' ? { 'content-type': 'application/json' } : {}),
    ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
    ...init.headers,
  };
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        ...(socketPath === undefined ? { host: url.hostname, port: url.port } : { socketPath }),
        path: `${url.pathname}${url.search}`,
        method: init.method ?? (body === undefined ? 'GET' : 'POST'),
        headers,
        ...(init.from ? { localAddress: init.from } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            /* not JSON */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** secp256k1's order: a low-s signature has s ≤ n/2. */
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

/**
 * Checks a TrueWallet signature as the SDK uses it: 65 bytes hex (r ‖ s ‖ v), v 27 or 28, low s, and EIP-191
 * over `message` (the 32 raw bytes of a hash, or the text) recovering to `address`.
 */
export function expectWalletSignature(signature: string, message: { hash: string } | { text: string }, address: string): void {
  expect(signature).toMatch(/^0x[0-9a-f]{130}$/);
  const v = parseInt(signature.slice(130), 16);
  expect([27, 28]).toContain(v);
  const sig = Signature.from(signature);
  expect(BigInt(sig.s) <= N / 2n).toBe(true);
  const recovered = 'hash' in message ? verifyMessage(getBytes(message.hash), signature) : verifyMessage(message.text, signature);
  expect(recovered).toBe(address);
}
