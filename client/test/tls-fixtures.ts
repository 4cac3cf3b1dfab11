/**
 * A stand-in for the enclave's HTTPS server as `nks tls verify` sees it: real TLS on loopback with a certificate
 * from a test CA, answering `GET /v1/tls/attestation?nonce=` with a document from a simulated Nitro CA. `answer`
 * decides each document (or the whole response), so a test can play a server that tells the truth or one that lies.
 */
import { createPublicKey, X509Certificate } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tlsUserData } from '@nks/shared/attestation/user-data';
import { makeTestCa, type TestCa } from '../../sim/src/idp/tls';
import { x509 } from '../../sim/src/nsm/x509';
import type { Documents } from './keystore-fixtures';

export interface TlsServer {
  url: string;
  port: number;
  /** The served key's DER SPKI. */
  spki: Buffer;
  caPem: string;
  /** The nonces the server was asked for (hex). */
  nonces: string[];
  close(): Promise<void>;
}

export interface ServedRequest {
  nonce: string;
  spki: Buffer;
}

export type Answer = (r: ServedRequest) => Promise<{ status?: number; body: unknown } | { document: Buffer }>;

/** The truthful answer: a document of `pcr0`'s image binding the served key, carrying the caller's nonce. */
export const truthful =
  (docs: Documents, pcr0?: string): Answer =>
  async ({ nonce, spki }) => ({
    document: await docs.document({ ...(pcr0 ? { pcr0 } : {}), userData: tlsUserData(spki), nonce: Buffer.from(nonce, 'hex') }),
  });

export async function startTlsServer(answer: Answer, opts: { ca?: TestCa; names?: string[] } = {}): Promise<TlsServer> {
  const ca = opts.ca ?? (await makeTestCa('nks tls verify test CA'));
  const { certPem, keyPem } = await ca.issueServer(opts.names ?? ['localhost', '127.0.0.1']);
  const spki = createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
  const nonces: string[] = [];
  const server = https.createServer({ key: keyPem, cert: certPem }, (req, res) => {
    const u = new URL(req.url ?? '/', 'https://x');
    if (u.pathname !== '/v1/tls/attestation') return void res.writeHead(404).end('{}');
    const nonce = u.searchParams.get('nonce') ?? '';
    nonces.push(nonce);
    answer({ nonce, spki }).then(
      (a) => {
        if ('document' in a) {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ document: a.document.toString('base64') }));
        } else {
          res
            .writeHead(a.status ?? 200, { 'content-type': 'application/json' })
            .end(typeof a.body === 'string' ? a.body : JSON.stringify(a.body));
        }
      },
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    spki,
    caPem: ca.caPem,
    nonces,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A PKCS#10 request for `names` with a fresh P-256 key, as the enclave makes one: its PEM and the key's SPKI. */
export async function makeCsr(names: string[]): Promise<{ csr: string; spki: Buffer }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = await crypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${names[0]}`,
    keys,
    signingAlgorithm: alg,
    extensions: [new x509.SubjectAlternativeNameExtension(names.map((n) => ({ type: 'dns' as const, value: n })))],
  });
  return { csr: csr.toString('pem'), spki: Buffer.from(await crypto.subtle.exportKey('spki', keys.publicKey)) };
}

/** The SPKI of a certificate (PEM). */
export const spkiOf = (pem: string) => new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
