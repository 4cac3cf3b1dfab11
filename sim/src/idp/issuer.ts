/**
 * A simulated identity provider for development and tests (docs/PROJECTS.md): JWT signing keys (RS256 and
 * ES256, made with jose), an HTTPS server on loopback with its own CA serving the JWKS, and `mint` to make
 * tokens. Tests steer the JWKS server (down, slow, a body of their choosing) to exercise the enclave's fetches.
 * The dev stack (`npm run dev -- --idp`) keeps one across restarts (`state`) and lets anyone on loopback ask it
 * for a token (`tokenEndpoint`). Shipped nowhere.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK, type JWTPayload, type CryptoKey } from 'jose';
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

/**
 * What an IdP needs to come back as the same one (the dev stack keeps it in its state directory, so the CA the
 * enclave trusts, and so PCR0, and tokens already handed out, outlive a restart). Holds private keys.
 */
export interface SimulatedIdpState {
  caPem: string;
  certPem: string;
  keyPem: string;
  keys: Array<{ alg: IssuerAlg; kid: string; privateJwk: JWK }>;
}

export interface SimulatedIdpOptions {
  port?: number;
  audience?: string;
  /** Come back with this CA, server certificate and signing keys instead of making new ones. */
  state?: SimulatedIdpState;
  /**
   * Development only: also serve `GET /token?sub=USER[&alg=RS256|ES256][&lifetime=S]` → `{token}`, a token for
   * any user, to anyone who can reach the port (127.0.0.1). The dev stack's `--idp` turns it on.
   */
  tokenEndpoint?: boolean;
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
  /** The CA, certificate and signing keys, to start the same IdP again (`options.state`). */
  exportState(): Promise<SimulatedIdpState>;
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

/** A signing key from its exported private JWK; the public JWK is the private one without its private members. */
async function importedKey(k: SimulatedIdpState['keys'][number]): Promise<SigningKey> {
  const privateKey = (await importJWK(k.privateJwk, k.alg, { extractable: true })) as CryptoKey;
  const pub = Object.fromEntries(Object.entries(k.privateJwk).filter(([name]) => !['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth'].includes(name)));
  return { alg: k.alg, kid: k.kid, privateKey, jwk: { ...pub, kid: k.kid, alg: k.alg, use: 'sig' } };
}

const TOKEN_SUB_RE = /^[A-Za-z0-9_.@:+-]{1,128}$/;

/**
 * Starts the IdP on 127.0.0.1 (`port` 0: any free port). The issuer is `https://localhost:<port>`, the JWKS
 * at `/.well-known/jwks.json`; the certificate names `localhost` and 127.0.0.1.
 */
export async function startSimulatedIdp(options: SimulatedIdpOptions = {}): Promise<SimulatedIdp> {
  let caPem: string;
  let certPem: string;
  let keyPem: string;
  let keys: SigningKey[];
  if (options.state) {
    ({ caPem, certPem, keyPem } = options.state);
    keys = await Promise.all(options.state.keys.map(importedKey));
  } else {
    const ca = await makeTestCa('nitro-keystore simulated IdP CA');
    ({ certPem, keyPem } = await ca.issueServer(['localhost', '127.0.0.1']));
    caPem = ca.caPem;
    keys = [await signingKey('RS256', 'rs-1'), await signingKey('ES256', 'es-1')];
  }
  const control: JwksServerControl = {};
  let fetches = 0;
  // Assigned once the port is known (the issuer names it); the token endpoint uses it.
  let mint: SimulatedIdp['mint'] | undefined;

  const server = https.createServer({ cert: certPem, key: keyPem }, (req, res) => {
    if (options.tokenEndpoint && req.method === 'GET' && /^\/token(\?|$)/.test(req.url ?? '') && mint) {
      const q = new URL(req.url ?? '/', 'https://localhost').searchParams;
      const sub = q.get('sub') ?? '';
      const alg = q.get('alg') ?? 'RS256';
      const lifetimeS = Number(q.get('lifetime') ?? 300);
      const bad = !TOKEN_SUB_RE.test(sub)
        ? 'sub: expected 1-128 characters of [A-Za-z0-9_.@:+-]'
        : alg !== 'RS256' && alg !== 'ES256'
          ? 'alg: expected RS256 or ES256'
          : !Number.isInteger(lifetimeS) || lifetimeS < 1 || lifetimeS > 86_400
            ? 'lifetime: expected whole seconds, 1-86400'
            : null;
      if (bad) {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: bad }));
        return;
      }
      mint({ sub }, { alg: alg as IssuerAlg, lifetimeS }).then(
        (token) => res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify({ token })),
        () => res.writeHead(500).end(),
      );
      return;
    }
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

  const idp: SimulatedIdp = {
    issuer,
    audience,
    jwksUri: `${issuer}/.well-known/jwks.json`,
    caPem,
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
        .setProtectedHeader(header)
        .sign(key.privateKey);
    },
    jwks: () => ({ keys: keys.map((k) => k.jwk) }),
    stop,
    async start() {
      await listen(port);
    },
    close: stop,
    async exportState() {
      const privateJwks = await Promise.all(keys.map((k) => exportJWK(k.privateKey)));
      return { caPem, certPem, keyPem, keys: keys.map((k, i) => ({ alg: k.alg, kid: k.kid, privateJwk: privateJwks[i] as JWK })) };
    },
  };
  mint = (claims, o) => idp.mint(claims, o);
  return idp;
}
