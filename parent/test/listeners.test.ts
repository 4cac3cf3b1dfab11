/** The caller API over TLS and over a Unix socket (the parent alone: health needs no enclave). */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { tempRunDir } from '@nks/shared-test/helpers';
import { makeTestCa } from '../../sim/src/idp/tls';
import { startProgram, type Running } from '../../test/support/process';
import { hashToken } from '../src/api/auth';

function config(dir: string, api: object) {
  const file = path.join(dir, 'parent.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      api,
      tokens: [{ name: 't', sha256: hashToken('tok'), scopes: ['keys:read'] }],
      database: { path: path.join(dir, 'keys.db') },
      transport: { kind: 'simulated', runDir: dir },
      kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/k'], region: 'us-east-1', endpoint: 'http://127.0.0.1:9' },
      // Any free port for the wallet relay: tests run side by side.
      wallets: { relay: { host: '127.0.0.1', port: 0 } },
    }),
  );
  return file;
}

function get(options: https.RequestOptions, secure = false): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = (secure ? https : http).request({ method: 'GET', ...options }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('API listeners', () => {
  let dir: string;
  let parent: Running | undefined;
  beforeEach(() => {
    dir = tempRunDir();
  });
  afterEach(async () => {
    // Whatever the test's outcome, its parent process is stopped (killed if it does not stop in time).
    await parent?.stop();
    parent = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves HTTPS with the configured certificate', async () => {
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    // A certificate from a test CA (no openssl binary needed: npm test runs with only what npm ci installs).
    const ca = await makeTestCa();
    const issued = await ca.issueServer(['localhost', '127.0.0.1']);
    fs.writeFileSync(cert, issued.certPem);
    fs.writeFileSync(key, issued.keyPem, { mode: 0o600 });
    parent = startProgram('parent', [
      '--config',
      config(dir, { listen: { host: '127.0.0.1', port: 0 }, tls: { certFile: cert, keyFile: key } }),
    ]);
    const url = new URL(String((await parent.waitForLog((e) => e.msg === 'parent ready')).url));
    expect(url.protocol).toBe('https:');
    const res = await get({ host: url.hostname, port: url.port, path: '/healthz', ca: ca.caPem }, true);
    expect(res).toEqual({ status: 200, body: '{"status":"ok"}' });
    const noToken = await get({ host: url.hostname, port: url.port, path: '/v1/keys', ca: ca.caPem }, true);
    expect(noToken.status).toBe(401);
  });

  it('serves on a Unix socket with the configured mode', async () => {
    const socket = path.join(dir, 'api.sock');
    parent = startProgram('parent', ['--config', config(dir, { listen: { socket, mode: '0600' } })]);
    expect((await parent.waitForLog((e) => e.msg === 'parent ready')).url).toBe(`unix:${socket}`);
    expect(fs.statSync(socket).mode & 0o777).toBe(0o600);
    const res = await get({ socketPath: socket, path: '/v1/keys', headers: { authorization: 'Bearer tok' } });
    expect(res).toEqual({ status: 200, body: '{"keys":[],"nextCursor":null}' });
  });
});
