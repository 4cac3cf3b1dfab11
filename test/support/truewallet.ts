/**
 * JWT projects on a test stack (docs/PROJECTS.md): the stack options that make the enclave trust the simulated
 * IdPs' CAs and the parent's egress relay reach them on loopback, a project created through the caller API, and
 * the wallet routes as the SDK's JWT signer calls them: over HTTPS to the enclave (docs/TLS.md), through the
 * parent's ingress relay, trusting the CA the stack installed (no bearer token; an Origin when asked; from another
 * loopback address when asked, which the relay passes on as the client address).
 */
import https from 'node:https';
import { DEFAULT_EGRESS_ADDRESS } from '@nks/shared/egress';
import type { SimulatedIdp } from '../../sim/src/idp/issuer';
import type { Stack, StackOptions } from './stack';

/**
 * Enclave and parent settings for JWT projects served by `trusted` (their CAs in the enclave's image, their
 * ports allowed by the relay), loopback allowed as in development. `extraCas` are trusted without their ports
 * being allowed (a JWKS server the relay must refuse).
 */
export function jwtStackOptions(trusted: SimulatedIdp[], extraCas: string[] = []): Pick<StackOptions, 'enclave' | 'parent'> {
  return {
    enclave: { jwt: { trustedCas: [...trusted.map((i) => i.caPem), ...extraCas] } },
    parent: {
      egress: { listen: DEFAULT_EGRESS_ADDRESS, allowLoopback: true, allowedPorts: [443, ...trusted.map((i) => i.port)] },
    },
  };
}

export interface CreatedProject {
  projectId: string;
  projectKey: string;
  [field: string]: unknown;
}

/** `POST /v1/projects` with the admin token; fails the test unless 201. */
export async function createProject(s: Stack, body: Record<string, unknown>): Promise<CreatedProject> {
  const res = await s.api('/v1/projects', { token: 'admin', body });
  if (res.status !== 201) throw new Error(`POST /v1/projects: HTTP ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as CreatedProject;
}

/** A JWT project for `idp` (its issuer, audience and JWKS), with `over` on top. */
export const jwtProject = (idp: SimulatedIdp, over: Record<string, unknown> = {}) => ({
  name: 'test project',
  auth: { type: 'jwt', issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri },
  allowedOrigins: [],
  ...over,
});

export interface Answer {
  status: number;
  body: any;
  headers: Record<string, string | string[] | undefined>;
}

export interface CallInit {
  method?: string;
  /** A value is sent as JSON; a string as it is. */
  body?: unknown;
  headers?: Record<string, string>;
  /** The local address to send from (another loopback address: another client). */
  from?: string;
  /** The CA to trust (PEM); default the stack's. */
  ca?: string;
  /** An agent (keep-alive); default none: one connection per request. */
  agent?: https.Agent;
}

/** Where the wallet routes are: the relay's URL and the CA their certificate chains to. */
export interface WalletsTarget {
  walletsUrl: string;
  walletsCa: string | undefined;
}

/** One HTTPS request to `target`'s wallet server, trusting only its CA. */
export function call(target: WalletsTarget, pathname: string, init: CallInit = {}): Promise<Answer> {
  const ca = init.ca ?? target.walletsCa;
  if (!ca) throw new Error('the stack has no wallet certificate installed (startStack with walletsTls, or installWalletsTls)');
  const url = new URL(`${target.walletsUrl}${pathname}`);
  const body = init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
  const headers: Record<string, string> = {
    ...(body !== undefined && typeof init.body !== 'string' ? { 'content-type': 'application/json' } : {}),
    ...init.headers,
  };
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: url.hostname,
        port: url.port,
        path: `${url.pathname}${url.search}`,
        method: init.method ?? (body === undefined ? 'GET' : 'POST'),
        headers,
        ca,
        agent: init.agent ?? false,
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
            /* not JSON: kept as text for the assertion that fails */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The three TrueWallet routes of one project key, as `{origin}/v1/{projectKey}/wallets/…` on the enclave's server. */
export function walletApi(target: WalletsTarget, projectKey: string, opts: Omit<CallInit, 'body' | 'method'> = {}) {
  const post = (route: string, body: unknown, init: CallInit = {}): Promise<Answer> =>
    call(target, `/v1/${projectKey}/wallets/${route}`, {
      ...opts,
      ...init,
      body,
      headers: { ...(opts.headers ?? {}), ...(init.headers ?? {}) },
    });
  return {
    getAddress: (jwt: string, init?: CallInit) => post('get-address', { jwt_token: jwt }, init),
    sign: (jwt: string, message: string, messageType: 'hash' | 'message', init?: CallInit) =>
      post('sign', { message, jwt_token: jwt, message_type: messageType, wallet_type: 'evm' }, init),
    signRequest: (jwt: string, request: unknown, init?: CallInit) => post('sign-request', { jwt_token: jwt, request }, init),
    post,
  };
}
