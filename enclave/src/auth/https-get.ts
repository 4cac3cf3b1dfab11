/**
 * One HTTPS GET from inside the enclave, through the parent's egress relay (egress.ts), for the JWKS of a JWT
 * project (docs/PROTOCOL.md). TLS ends here: the server must present a certificate for the URI's host that
 * chains to Node's CA store or to a CA of the enclave's configuration (measured into PCR0 with it), so the
 * relay, which can connect anywhere and change any byte, can deny the fetch but not forge its answer.
 *
 * node:http speaks HTTP over the TLS socket (no agent: one request per connection). No redirects (a 3xx is a
 * failure like any status but 200), the body is capped (refused as soon as it passes the cap), and one
 * deadline covers everything from the relay's handshake to the last byte.
 */
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { EGRESS_HOST_RE } from '@nks/shared/egress';
import type { Transport } from '@nks/shared/transport';
import { EgressError, openEgress } from './egress';

export interface HttpsGetOptions {
  transport: Transport;
  /** The egress relay's address (vsock://3:8001). */
  egress: string;
  /** Trust anchors: Node's CA store plus the configuration's CAs (PEM). */
  ca: readonly string[];
  timeoutMs: number;
  maxBytes: number;
}

/** Why a fetch failed, in a few words for the caller (the parent sees the fetch anyway). */
export class FetchError extends Error {
  override readonly name = 'FetchError';
}

/** The URI's host and port as the relay is asked for them, or a FetchError. */
export function egressTarget(u: URL): { host: string; port: number } {
  const host = u.hostname;
  if (!EGRESS_HOST_RE.test(host)) throw new FetchError('the JWKS host is not a DNS name or an IPv4 address');
  return { host, port: u.port === '' ? 443 : Number(u.port) };
}

export interface HttpsAnswer {
  body: Buffer;
  cacheControl: string | undefined;
}

export async function httpsGet(uri: string, o: HttpsGetOptions): Promise<HttpsAnswer> {
  const u = new URL(uri);
  if (u.protocol !== 'https:') throw new FetchError('the JWKS URI is not https');
  const target = egressTarget(u);
  const deadline = Date.now() + o.timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());

  let raw: Duplex;
  try {
    raw = await openEgress(o.transport, o.egress, target, o.timeoutMs);
  } catch (err) {
    throw new FetchError(err instanceof EgressError ? err.message : 'the egress relay failed', { cause: err });
  }

  let socket: tls.TLSSocket | undefined;
  let request: http.ClientRequest | undefined;
  return new Promise<HttpsAnswer>((resolve, reject) => {
    let settled = false;
    const finish = (err: Error | null, answer?: HttpsAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      request?.destroy();
      socket?.destroy();
      raw.destroy();
      if (err) reject(err);
      else resolve(answer as HttpsAnswer);
    };
    const timer = setTimeout(() => finish(new FetchError('the JWKS server did not answer in time')), left());
    raw.on('error', () => finish(new FetchError('the egress connection failed')));

    let secured = false;
    const secure = tls.connect({
      socket: raw,
      // SNI only for names; an IPv4 host is checked against the certificate's IP addresses.
      ...(net.isIP(target.host) ? {} : { servername: target.host }),
      host: target.host,
      ca: [...o.ca],
      minVersion: 'TLSv1.2',
    });
    socket = secure;
    // `on`, not `once`: a stream may emit another error while it is destroyed, and an unheard one would crash.
    secure.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? 'unknown';
      finish(new FetchError(secured ? `the connection to the JWKS server failed (${code})` : `TLS with the JWKS server failed (${code})`));
    });
    secure.once('secureConnect', () => {
      secured = true;
      request = http.request(
        {
          method: 'GET',
          path: `${u.pathname}${u.search}`,
          setHost: false,
          headers: { host: u.host, accept: 'application/json', 'accept-encoding': 'identity', connection: 'close' },
          // No `agent`: with createConnection and no agent, node:http uses this socket for this one request
          // (`agent: false` would make a fresh Agent, which dials its own connection instead).
          createConnection: () => secure,
        },
        (res) => {
          if (res.statusCode !== 200) {
            const redirect = res.statusCode !== undefined && res.statusCode >= 300 && res.statusCode < 400;
            finish(
              new FetchError(`the JWKS server answered HTTP ${res.statusCode ?? '?'}${redirect ? ' (redirects are not followed)' : ''}`),
            );
            return;
          }
          const announced = Number(res.headers['content-length']);
          if (Number.isFinite(announced) && announced > o.maxBytes) {
            finish(new FetchError(`the JWKS is larger than ${o.maxBytes} bytes`));
            return;
          }
          const chunks: Buffer[] = [];
          let total = 0;
          res.on('data', (chunk: Buffer) => {
            total += chunk.length;
            if (total > o.maxBytes) finish(new FetchError(`the JWKS is larger than ${o.maxBytes} bytes`));
            else chunks.push(chunk);
          });
          res.once('end', () => finish(null, { body: Buffer.concat(chunks), cacheControl: res.headers['cache-control'] }));
          res.on('error', () => finish(new FetchError('the JWKS answer was cut off')));
        },
      );
      request.on('error', () => finish(new FetchError('the JWKS request failed')));
      request.end();
    });
  });
}
