/**
 * A simulated identity provider for development and tests (docs/PROJECTS.md): JWT signing keys (RS256 and
 * ES256, made with jose), an HTTPS server on loopback with its own CA serving the JWKS, and `mint` to make
 * tokens. Tests steer the JWKS server (down, slow, a body of their choosing) to exercise the enclave's fetches.
 * Shipped nowhere.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload, type CryptoKey } from 'jose';
import { makeTestCa } from './tls';

export type IssuerAlg = 'RS256' | 'ES256';

export interface MintOptions {
  alg?: IssuerAlg;
  /** The header's kid: the key's own unless given (null: no kid at all). */
  kid?: string | null;
  /** Seconds from now; `iat` is now unless `iat` is given in the claims. Default 300. */
  lifetimeS?: number;
  /** Extra protected-header fields (e.g. a `jku`), put after alg and kid. */
  header?: Record<string, unknown>;
}

export interface JwksServerControl {
  /** A JWKS body to serve instead of the real one (a string is sent as is). */
  body?: unknown;
  /** HTTP status to answer with (default 200). */
  status?: number;
  /** Cache-Control header value (default "max-age=300"). */
  cacheControl?: string;
  /** Delay before answering, in ms. */
  delayMs?: number;
  /** Answer with a 302 to this location instead. */
  redirectTo?: string;
}

export interface SimulatedIdp {
  issuer: string;
  audience: string;
  jwksUri: string;
  /** The CA the JWKS server's certificate chains to, PEM. */
  caPem: string;
  port: number;
  /** GET requests the JWKS server has answered. */
  readonly fetches: number;
  control: JwksServerControl;
  /** A compact JWT for `sub` (or any claims), signed by the IdP's key of `alg`. */
  mint(claims: JWTPayload, options?: MintOptions): Promise<string>;
  /** The public JWKS the server serves (both keys). */
  jwks(): { keys: JWK[] };
  /** Stops answering (connections refused) until `start()`; for "JWKS server down". */
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

interface SigningKey {
  alg: IssuerAlg;
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function signingKey(alg: IssuerAlg, kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { alg, kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

/**
 * Starts the IdP on 127.0.0.1 (`port` 0: any free port). The issuer is `https://localhost:<port>`, the JWKS
 * at `/.well-known/jwks.json`; the certificate names `localhost` and 127.0.0.1.
 */
export async function startSimulatedIdp(options: { port?: number; audience?: string } = {}): Promise<SimulatedIdp> {
  const ca = await makeTestCa('nitro-keystore simulated IdP CA');
  const { certPem, keyPem } = await ca.issueServer(['localhost', '127.0.0.1']);
  const keys = [await signingKey('RS256', 'rs-1'), await signingKey('ES256', 'es-1')];
  const control: JwksServerControl = {};
  let fetches = 0;

  const server = https.createServer({ cert: certPem, key: keyPem }, (req, res) => {
    if (req.method !== 'GET' || req.url !== '/.well-known/jwks.json') {
      res.writeHead(404).end();
      return;
    }
    fetches += 1;
    const answer = () => {
      if (control.redirectTo) {
        res.writeHead(302, { location: control.redirectTo }).end();
        return;
      }
      const body = control.body === undefined ? { keys: keys.map((k) => k.jwk) } : control.body;
      res.writeHead(control.status ?? 200, {
        'content-type': 'application/json',
        'cache-control': control.cacheControl ?? 'max-age=300',
      });
      res.end(typeof body === 'string' ? body : JSON.stringify(body));
    };
    if (control.delayMs) setTimeout(answer, control.delayMs);
    else answer();
  });
  server.keepAliveTimeout = 1_000;

  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
  const port = await listen(options.port ?? 0);
  const issuer = `https://localhost:${port}`;
  const audience = options.audience ?? 'nitro-keystore-test';
  const stop = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });

  return {
    issuer,
    audience,
    jwksUri: `${issuer}/.well-known/jwks.json`,
    caPem: ca.caPem,
    port,
    get fetches() {
      return fetches;
    },
    control,
    async mint(claims, o = {}) {
      const key = keys.find((k) => k.alg === (o.alg ?? 'RS256')) as SigningKey;
      const now = Math.floor(Date.now() / 1000);
      const header = { alg: key.alg, ...(o.kid === null ? {} : { kid: o.kid ?? key.kid }), typ: 'JWT', ...o.header };
      return new SignJWT({ iss: issuer, aud: audience, iat: now, exp: now + (o.lifetimeS ?? 300), ...claims })
        .setProtectedHeader(header as { alg: string })
        .sign(key.privateKey);
    },
    jwks: () => ({ keys: keys.map((k) => k.jwk) }),
    stop,
    async start() {
      await listen(port);
    },
    close: stop,
  };
}
