/**
 * JWT projects on a test stack (docs/PROJECTS.md): the stack options that make the enclave trust the simulated
 * IdPs' CAs and the parent's egress relay reach them on loopback, a project created through the caller API,
 * and the TrueWallet routes as the SDK's JWT signer calls them (no bearer token; an Origin when asked).
 */
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

export interface WalletAnswer {
  status: number;
  body: any;
  headers: Headers;
}

/** The three TrueWallet routes of one project key, as `{origin}/v1/{projectKey}/wallets/…`. */
export function walletApi(s: Stack, projectKey: string, opts: { origin?: string } = {}) {
  const post = async (route: string, body: unknown): Promise<WalletAnswer> => {
    const res = await fetch(`${s.url}/v1/${projectKey}/wallets/${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(opts.origin ? { origin: opts.origin } : {}) },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON: kept as text for the assertion that fails */
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  return {
    getAddress: (jwt: string) => post('get-address', { jwt_token: jwt }),
    sign: (jwt: string, message: string, messageType: 'hash' | 'message') =>
      post('sign', { message, jwt_token: jwt, message_type: messageType, wallet_type: 'evm' }),
    signRequest: (jwt: string, request: unknown) => post('sign-request', { jwt_token: jwt, request }),
    post,
  };
}
