/**
 * The dev stack's identity provider and JWT project (`npm run dev -- --idp`; docs/PROJECTS.md): the simulated
 * IdP (sim/src/idp/issuer.ts) with its development-only token endpoint, kept in `<dir>/idp/` so that its CA
 * (which the enclave configuration trusts, so it is part of PCR0), its port (which the project's `jwksUri`
 * names, and a project's auth never changes) and its signing keys (tokens already handed out) outlive a
 * restart; and one JWT project for it, created once through the caller API as an operator would.
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startSimulatedIdp, type SimulatedIdp, type SimulatedIdpState } from '../idp/issuer';

/** The audience of the dev IdP's tokens (and of its project). */
export const DEV_IDP_AUDIENCE = 'nitro-keystore-dev';
/** Browser origins the dev project allows: the usual local dev servers. Another origin needs a project of its own. */
export const DEV_IDP_ORIGINS = ['http://localhost:3000', 'http://127.0.0.1:3000', 'http://localhost:5173', 'http://127.0.0.1:5173'];
/** A certificate closer than this to its end is made again (with a new CA: the stack re-approves the image). */
const RENEW_BEFORE_MS = 24 * 3600_000;

export interface DevIdpPaths {
  dir: string;
  /** Port, audience, CA, server certificate and signing keys (private: mode 0600). */
  state: string;
  /** The CA certificate alone, for `curl --cacert` and for reading. */
  caPem: string;
  /** The project made for the IdP: `{projectId, projectKey, issuer}`. */
  project: string;
}

export const devIdpPaths = (stateDir: string): DevIdpPaths => {
  const dir = path.join(stateDir, 'idp');
  return { dir, state: path.join(dir, 'state.json'), caPem: path.join(dir, 'ca.pem'), project: path.join(dir, 'project.json') };
};

interface StoredState extends SimulatedIdpState {
  port: number;
  audience: string;
}

function loadState(file: string): StoredState | undefined {
  if (!fs.existsSync(file)) return undefined;
  const s = JSON.parse(fs.readFileSync(file, 'utf8')) as StoredState;
  const notAfter = Date.parse(new X509Certificate(s.certPem).validTo);
  return notAfter - Date.now() > RENEW_BEFORE_MS ? s : undefined;
}

/**
 * Starts the dev IdP from its kept state (or makes one: first start, or a certificate about to expire) on
 * 127.0.0.1: `port` if given, else the kept one, else any free port. The token endpoint is on.
 */
export async function startDevIdp(stateDir: string, opts: { port?: number } = {}): Promise<{ idp: SimulatedIdp; paths: DevIdpPaths }> {
  const p = devIdpPaths(stateDir);
  fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  const kept = loadState(p.state);
  const port = opts.port ?? kept?.port ?? 0;
  let idp: SimulatedIdp;
  try {
    idp = await startSimulatedIdp({
      port,
      audience: DEV_IDP_AUDIENCE,
      tokenEndpoint: true,
      ...(kept ? { state: kept } : {}),
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new Error(
        `the dev identity provider's port ${port} is in use (its project's jwksUri names it; kept in ${p.state}): free it, or pass --idp-port to use another (a new port gets a new project)`,
      );
    }
    throw err;
  }
  const state: StoredState = { port: idp.port, audience: idp.audience, ...(await idp.exportState()) };
  fs.writeFileSync(p.state, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  // Written as the enclave configuration holds it (one normalised PEM block), so the two compare equal.
  fs.writeFileSync(p.caPem, new X509Certificate(idp.caPem).toString(), { mode: 0o644 });
  return { idp, paths: p };
}

export interface DevProject {
  projectId: string;
  projectKey: string;
  issuer: string;
  /** true when this start created it. */
  created: boolean;
}

async function api(url: string, token: string, pathname: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${url}${pathname}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* kept as text for the error message */
  }
  return { status: res.status, body: parsed };
}

/**
 * The JWT project for the dev IdP: the one kept in `<dir>/idp/project.json` if the parent still has it and it
 * is for this issuer (same port), else a new one (`POST /v1/projects` with the admin token).
 */
export async function ensureDevProject(url: string, adminToken: string, idp: SimulatedIdp, paths: DevIdpPaths): Promise<DevProject> {
  if (fs.existsSync(paths.project)) {
    const kept = JSON.parse(fs.readFileSync(paths.project, 'utf8')) as Omit<DevProject, 'created'>;
    if (kept.issuer === idp.issuer) {
      const got = await api(url, adminToken, `/v1/projects/${encodeURIComponent(kept.projectId)}`);
      if (got.status === 200) return { ...kept, created: false };
      if (got.status !== 404) throw new Error(`GET /v1/projects/${kept.projectId}: HTTP ${got.status} ${JSON.stringify(got.body)}`);
    }
  }
  const res = await api(url, adminToken, '/v1/projects', {
    name: 'dev identity provider',
    auth: { type: 'jwt', issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri },
    allowedOrigins: DEV_IDP_ORIGINS,
  });
  if (res.status !== 201) throw new Error(`could not create the dev IdP's project: HTTP ${res.status} ${JSON.stringify(res.body)}`);
  const made = { projectId: String(res.body.projectId), projectKey: String(res.body.projectKey), issuer: idp.issuer };
  fs.writeFileSync(paths.project, `${JSON.stringify(made, null, 2)}\n`, { mode: 0o644 });
  return { ...made, created: true };
}
