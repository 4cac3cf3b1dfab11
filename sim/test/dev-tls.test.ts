/**
 * The dev stack's CA for the wallet routes (sim/src/dev/tls.ts): kept in <dir>/tls/ with its key private, reused
 * on the next start, made again without its key; and what it issues for a CSR is a certificate for the CSR's key,
 * for localhost and 127.0.0.1, that a TLS client trusting ca.pem accepts (and one trusting another CA refuses).
 */
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { tempRunDir } from '@nks/shared-test/helpers';
import { DEV_TLS_IPS, DEV_TLS_NAMES, openDevCa } from '../src/dev/tls';
import { makeTestCa } from '../src/idp/tls';
import { x509 } from '../src/nsm/x509';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A P-256 key and a CSR for it, as the enclave makes them. */
async function keyAndCsr(names: string[]) {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${names[0]}`, keys, signingAlgorithm: ALG });
  const keyPem = createPrivateKey({
    key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
    format: 'der',
    type: 'pkcs8',
  })
    .export({ format: 'pem', type: 'pkcs8' })
    .toString();
  return { csr: csr.toString('pem'), keyPem, spki: Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey)) };
}

/**
 * An HTTPS server with this key and chain on 127.0.0.1; a GET trusting `ca` (checking the certificate against the
 * address, or `name`) answers its status or the error code.
 */
async function handshake(keyPem: string, chain: string, ca: string, name?: string): Promise<string> {
  const server = https.createServer({ key: keyPem, cert: chain }, (_req, res) => res.end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    return await new Promise<string>((resolve) => {
      const req = https.get(
        { host: '127.0.0.1', port: (server.address() as AddressInfo).port, ca, agent: false, path: '/', servername: name },
        (res) => {
          res.resume();
          resolve(String(res.statusCode));
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

describe('the dev CA for the wallet routes', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

  it('is made once in <dir>/tls (its key mode 0600) and reused on the next start; made again when its key is gone', async () => {
    const dir = tempRunDir('nks-dev-tls-');
    dirs.push(dir);
    const first = await openDevCa(dir);
    expect(first.created).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'tls', 'ca.pem'), 'utf8')).toBe(first.caPem);
    expect(fs.statSync(path.join(dir, 'tls', 'ca-key.pem')).mode & 0o777).toBe(0o600);
    expect(new X509Certificate(first.caPem).ca).toBe(true);
    const again = await openDevCa(dir);
    expect([again.created, again.fingerprint256]).toEqual([false, first.fingerprint256]);
    fs.rmSync(path.join(dir, 'tls', 'ca-key.pem'));
    const fresh = await openDevCa(dir);
    expect(fresh.created).toBe(true);
    expect(fresh.fingerprint256).not.toBe(first.fingerprint256);
  });

  it('issues for the CSR’s key a certificate for localhost and 127.0.0.1 that TLS clients trusting ca.pem accept', async () => {
    const dir = tempRunDir('nks-dev-tls-');
    dirs.push(dir);
    const ca = await openDevCa(dir);
    const { csr, keyPem, spki } = await keyAndCsr(DEV_TLS_NAMES);
    const leaf = await ca.issue(csr, DEV_TLS_NAMES, DEV_TLS_IPS);
    const cert = new X509Certificate(leaf);
    expect(cert.publicKey.export({ type: 'spki', format: 'der' })).toEqual(spki);
    expect(cert.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1');
    expect(cert.verify(new X509Certificate(ca.caPem).publicKey)).toBe(true);
    expect(cert.ca).toBe(false);
    const chain = `${leaf}${ca.caPem}`;
    expect(await handshake(keyPem, chain, ca.caPem)).toBe('200');
    expect(await handshake(keyPem, chain, ca.caPem, 'localhost')).toBe('200');
    expect(await handshake(keyPem, chain, ca.caPem, 'wallets.example.com')).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(await handshake(keyPem, chain, (await makeTestCa()).caPem)).toMatch(/UNABLE_TO_VERIFY|SELF_SIGNED/);
  });

  it('refuses a CSR whose signature is not its own key’s', async () => {
    const dir = tempRunDir('nks-dev-tls-');
    dirs.push(dir);
    const ca = await openDevCa(dir);
    const { csr } = await keyAndCsr(['localhost']);
    const der = Buffer.from(csr.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 5] = (der[der.length - 5] as number) ^ 0xff; // inside the signature
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(ca.issue(tampered, ['localhost'], [])).rejects.toThrow();
  });
});
