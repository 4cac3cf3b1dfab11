/**
 * HTTP requests to the parent's API as any client makes them (node:http, so a request can come from another
 * loopback address, `from`, carry any Origin, or any method and body on any path).
 */
import http from 'node:http';

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
    // Node's client sends no length for a DELETE's body unless told (the server would read it as the next request).
    ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}),
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
