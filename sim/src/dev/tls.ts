/**
 * The dev stack's wallet routes over TLS that ends in the enclave (docs/TLS.md): a development CA kept in
 * `<dir>/tls/` (ca.pem, and its key in ca-key.pem, mode 0600) that signs the certificate for the enclave's own key,
 * as an operator's CA would: the enclave makes the key and a CSR (`POST /v1/tls/keys`), the CA issues a
 * certificate for the CSR's public key (names `localhost` and the IP address 127.0.0.1), and the chain is installed
 * (`PUT /v1/tls/certificate`). The CA, and the certificate it issued while it is far from its end, survive a
 * restart: the parent installs its current key again after every enclave start.
 */
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { csrPublicKey, issueServerCertificate, makeCaCertificate } from '../idp/tls';
import { x509 } from '../nsm/x509';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 3600_000;
/** The CA lives a year; a leaf 90 days, like a public CA's; either is made again a day before its end. */
const CA_LIFETIME_MS = 365 * DAY_MS;
const LEAF_LIFETIME_MS = 90 * DAY_MS;
export const RENEW_BEFORE_MS = DAY_MS;

/** The names the dev certificate is for: the CSR's DNS name, and the loopback address the relay listens on. */
export const DEV_TLS_NAMES = ['localhost'];
export const DEV_TLS_IPS = ['127.0.0.1'];

export interface DevTlsPaths {
  dir: string;
  caPem: string;
  caKey: string;
  /** What this stack installed last: `{fingerprint256, caFingerprint256, notAfter}`. */
  installed: string;
}

export const devTlsPaths = (stateDir: string): DevTlsPaths => {
  const dir = path.join(stateDir, 'tls');
  return { dir, caPem: path.join(dir, 'ca.pem'), caKey: path.join(dir, 'ca-key.pem'), installed: path.join(dir, 'installed.json') };
};

export interface DevCa {
  paths: DevTlsPaths;
  caPem: string;
  /** SHA-256 of the CA certificate, lower-case hex. */
  fingerprint256: string;
  /** true when this call made the CA (first start, or the kept one was about to end). */
  created: boolean;
  /**
   * A server certificate (PEM) for the public key of `csrPem` (its self-signature checked first), CN = the first
   * DNS name, subjectAltName = the DNS names and IP addresses.
   */
  issue(csrPem: string, dnsNames: string[], ips: string[]): Promise<string>;
}

const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256.replace(/:/g, '').toLowerCase();

function keptCa(p: DevTlsPaths): { caPem: string; keyPem: string } | undefined {
  if (!fs.existsSync(p.caPem) || !fs.existsSync(p.caKey)) return undefined;
  const caPem = fs.readFileSync(p.caPem, 'utf8');
  const notAfter = Date.parse(new X509Certificate(caPem).validTo);
  return notAfter - Date.now() > RENEW_BEFORE_MS ? { caPem, keyPem: fs.readFileSync(p.caKey, 'utf8') } : undefined;
}

/** The dev CA of `<stateDir>/tls/`, made on first use (or when the kept one is about to end). */
export async function openDevCa(stateDir: string): Promise<DevCa> {
  const p = devTlsPaths(stateDir);
  fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  let kept = keptCa(p);
  const created = kept === undefined;
  if (!kept) {
    const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
    const ca = await makeCaCertificate(keys, 'nitro-keystore dev wallets CA', CA_LIFETIME_MS);
    const keyPem = createPrivateKey({
      key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
      format: 'der',
      type: 'pkcs8',
    })
      .export({ format: 'pem', type: 'pkcs8' })
      .toString();
    kept = { caPem: `${ca.toString('pem').trimEnd()}\n`, keyPem };
    // The key first, so a CA certificate on disk always has its key beside it.
    fs.writeFileSync(p.caKey, kept.keyPem, { mode: 0o600 });
    fs.writeFileSync(p.caPem, kept.caPem, { mode: 0o644 });
    fs.rmSync(p.installed, { force: true });
  }
  const { caPem, keyPem } = kept;
  const caCert = new x509.X509Certificate(caPem);
  const caKey = await webcrypto.subtle.importKey('pkcs8', createPrivateKey(keyPem).export({ format: 'der', type: 'pkcs8' }), ALG, false, [
    'sign',
  ]);
  return {
    paths: p,
    caPem,
    fingerprint256: fingerprint(caPem),
    created,
    async issue(csrPem, dnsNames, ips) {
      const now = Date.now();
      const cert = await issueServerCertificate({
        ca: caCert,
        caKey,
        publicKey: await csrPublicKey(csrPem),
        names: [...dnsNames, ...ips],
        notBefore: new Date(now - 60_000),
        notAfter: new Date(Math.min(now + LEAF_LIFETIME_MS, caCert.notAfter.getTime())),
      });
      return `${cert.toString('pem').trimEnd()}\n`;
    },
  };
}

interface Installed {
  /** The key's DER SPKI, base64 (what `GET /v1/tls` names the current key by). */
  publicKey: string;
  fingerprint256: string;
  caFingerprint256: string;
  notAfter: string;
}

async function api(url: string, token: string, method: string, pathname: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${url}${pathname}`, {
    method,
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

export interface DevTlsOutcome {
  /** `made`: a new key and certificate this start; `kept`: the ones installed before. */
  outcome: 'made' | 'kept';
  fingerprint256: string;
  notAfter: string;
  /** The served key's DER SPKI, base64. */
  publicKey: string;
}

/**
 * Makes sure the enclave serves the wallet routes with a certificate of the dev CA: keeps what this stack installed
 * before when the parent still has its key as current, it is from this CA and far from its end; else has the enclave
 * make a key and installs a certificate for it. Then waits until the enclave reports it installed (after a
 * restart the parent installs its current key again once the enclave is up).
 */
export async function ensureDevTls(url: string, adminToken: string, ca: DevCa, timeoutMs = 30_000): Promise<DevTlsOutcome> {
  const view = await api(url, adminToken, 'GET', '/v1/tls');
  if (view.status !== 200) throw new Error(`GET /v1/tls: HTTP ${view.status} ${JSON.stringify(view.body)}`);
  let kept: Installed | undefined;
  try {
    kept = JSON.parse(fs.readFileSync(ca.paths.installed, 'utf8')) as Installed;
  } catch {
    kept = undefined;
  }
  const current = view.body.current as { publicKey?: unknown } | null;
  const reuse =
    kept !== undefined &&
    current?.publicKey === kept.publicKey &&
    kept.caFingerprint256 === ca.fingerprint256 &&
    Date.parse(kept.notAfter) - Date.now() > RENEW_BEFORE_MS;
  if (!reuse) {
    const made = await api(url, adminToken, 'POST', '/v1/tls/keys', { names: DEV_TLS_NAMES });
    if (made.status !== 201) throw new Error(`POST /v1/tls/keys: HTTP ${made.status} ${JSON.stringify(made.body)}`);
    const leaf = await ca.issue(String(made.body.csr), DEV_TLS_NAMES, DEV_TLS_IPS);
    const chain = `${leaf.trimEnd()}\n${ca.caPem.trimEnd()}\n`;
    const installed = await api(url, adminToken, 'PUT', '/v1/tls/certificate', { chain });
    if (installed.status !== 200) throw new Error(`PUT /v1/tls/certificate: HTTP ${installed.status} ${JSON.stringify(installed.body)}`);
    const record: Installed = {
      publicKey: String(made.body.publicKey),
      fingerprint256: fingerprint(leaf),
      caFingerprint256: ca.fingerprint256,
      notAfter: new Date(new X509Certificate(leaf).validTo).toISOString(),
    };
    fs.writeFileSync(ca.paths.installed, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o644 });
    kept = record;
  }
  const want = kept as Installed;
  // The enclave serves it once installed: at once after the PUT, or once the parent re-installed it after a start.
  const until = Date.now() + timeoutMs;
  for (;;) {
    const now = await api(url, adminToken, 'GET', '/v1/tls');
    const status = now.body?.status as { state?: string; fingerprint256?: string | null; publicKey?: string | null } | undefined;
    if (now.status === 200 && status?.state === 'installed' && status.fingerprint256 === want.fingerprint256) {
      return {
        outcome: reuse ? 'kept' : 'made',
        fingerprint256: want.fingerprint256,
        notAfter: want.notAfter,
        publicKey: String(status.publicKey),
      };
    }
    if (Date.now() > until)
      throw new Error(`the enclave did not report the dev TLS certificate installed within ${timeoutMs} ms: ${JSON.stringify(now.body)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
