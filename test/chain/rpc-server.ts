/**
 * The test chain over HTTP JSON-RPC on loopback, for code that takes an RPC URL as a user's would (viem's
 * `http()`, ethers' `JsonRpcProvider`): each request, or batch, is passed to `chain.request` and answered as a
 * node answers (an error as `{error: {code, message, data}}`).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ChainRpcError, type Chain } from './harness';

type RpcCall = { id?: unknown; method?: unknown; params?: unknown };

export async function serveRpc(chain: Chain): Promise<{ url: string; close(): Promise<void> }> {
  const answer = async ({ id = null, method, params }: RpcCall) => {
    try {
      if (typeof method !== 'string') throw new ChainRpcError(-32600, 'invalid request: no method');
      const result = await chain.request(method, Array.isArray(params) ? params : []);
      return { jsonrpc: '2.0', id, result: result ?? null };
    } catch (e) {
      const { code = -32603, message = String(e), data } = e as Partial<ChainRpcError>;
      return { jsonrpc: '2.0', id, error: { code, message, ...(data !== undefined ? { data } : {}) } };
    }
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        let body: unknown;
        try {
          const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as RpcCall | RpcCall[];
          body = Array.isArray(parsed) ? await Promise.all(parsed.map(answer)) : await answer(parsed);
        } catch {
          body = { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } };
        }
        res.writeHead(200, { 'content-type': 'application/json', connection: 'close' }).end(JSON.stringify(body));
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolve()));
      }),
  };
}
