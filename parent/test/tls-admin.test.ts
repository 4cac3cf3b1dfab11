/**
 * The wallet routes' TLS keys through the parent (docs/TLS.md), in this process against the fake enclave
 * (fake-enclave.ts: a real P-256 key and CSR per `tls.create`, the identity's signature over the blob checked by
 * `tls.install`) and a test CA (tls-ca.ts): the admin routes and every 400, enclave answers the parent cannot
 * check, the install again after every enclave restart (once, and with back-off while the enclave says no), the
 * `nks_tls_*` metrics, and the wallet paths' 421 with the configured public URL.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { KeystoreError } from '@nks/shared/errors';
import { silentLogger } from '@nks/shared/log';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { captureLogger, tempRunDir, waitFor, type CapturedLogger } from '@nks/shared-test/helpers';
import { makeTestCa } from '../../sim/src/idp/tls';
import { x509 } from '../../sim/src/nsm/x509';
import { hashToken } from '../src/api/auth';
import { startParent, type RunningParent } from '../src/app';
import { parseParentConfig } from '../src/config';
import { FAKE_KMS_KEY_ARN, FakeEnclave, NO_TLS, TestIdentity } from './fake-enclave';
import { call, type Answer, type CallInit } from './http-client';
import { makeTlsCa, type TestTlsCa } from './tls-ca';

const ENCLAVE = 'vsock://16:5000';
const TOKENS = { admin: 'nks_test_admin', full: 'nks_test_full' };
const PUBLIC_URL = 'https://wallets.example.com';
const NAMES = ['wallets.example.com', 'w2.example.com'];

describe('TLS keys of the wallet routes, through the parent', () => {
  let runDir: string;
  let enclave: FakeEnclave;
  let parent: RunningParent;
  let log: CapturedLogger;
  let ca: TestTlsCa;

  beforeAll(async () => {
    ca = await makeTlsCa();
  });

  beforeEach(async () => {
    runDir = tempRunDir('nks-tls-');
    log = captureLogger('debug');
    enclave = new FakeEnclave();
    await enclave.listen(new SimulatedVsockTransport(runDir), ENCLAVE);
    const config = parseParentConfig({
      api: { listen: { host: '127.0.0.1', port: 0 } },
      metrics: { listen: { host: '127.0.0.1', port: 0 } },
      tokens: [
        { name: 'admin', sha256: hashToken(TOKENS.admin), scopes: ['admin'] },
        { name: 'full', sha256: hashToken(TOKENS.full), scopes: ['keys:create', 'keys:sign', 'keys:read'] },
      ],
      database: { path: path.join(runDir, 'keys.db') },
      transport: { kind: 'simulated', runDir },
      enclave: { address: ENCLAVE, poolSize: 2, connectTimeoutMs: 1000, deadlineMs: 5000 },
      kmsProxy: { listen: 'vsock://3:8000', allowedKeyArns: [FAKE_KMS_KEY_ARN], region: 'us-east-1', endpoint: 'http://127.0.0.1:9' },
      wallets: { publicUrl: PUBLIC_URL, relay: { host: '127.0.0.1', port: 0 } },
      logLevel: 'debug',
    });
    parent = await startParent(config, log.logger);
    await parent.pool.waitUp(5000);
  });
  afterEach(async () => {
    await parent?.stop();
    await enclave?.close();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const api = (pathname: string, init: CallInit = {}) => call(parent.url, pathname, { token: TOKENS.admin, ...init });
  const expectError = (res: Answer, status: number, code: string, message?: string | RegExp) => {
    expect({ status: res.status, code: res.body?.error?.code }).toEqual({ status, code });
    if (message !== undefined)
      expect(res.body.error.message).toEqual(typeof message === 'string' ? message : expect.stringMatching(message));
  };
  const createKey = async (names = NAMES) => {
    const res = await api('/v1/tls/keys', { body: { names } });
    expect([res.status, res.body?.error]).toEqual([201, undefined]);
    return res.body as { publicKey: string; csr: string; attestation: string; names: string[]; createdAt: string };
  };
  const metrics = async () => (await call(parent.metricsUrl as string, '/metrics')).body as string;

  it('makes a key in the enclave, installs its certificate, and says what is served', async () => {
    const before = Date.now();
    const key = await createKey();
    expect(key).toEqual({
      publicKey: expect.any(String),
      csr: expect.stringMatching(/^-----BEGIN CERTIFICATE REQUEST-----/),
      attestation: expect.any(String),
      names: NAMES,
      createdAt: expect.any(String),
    });
    expect(Date.parse(key.createdAt)).toBeGreaterThanOrEqual(before - 1000);
    // The CSR is for the key the answer names.
    const csr = new x509.Pkcs10CertificateRequest(key.csr);
    expect(Buffer.from(csr.publicKey.rawData).toString('base64')).toBe(key.publicKey);
    expect((await api('/v1/tls')).body).toEqual({
      status: NO_TLS,
      current: null,
      pending: [{ publicKey: key.publicKey, names: NAMES, createdAt: key.createdAt }],
    });
    expect(await metrics()).toMatch(/^nks_tls_installed 0$/m);

    const leaf = await ca.issue(key.csr);
    const installed = await api('/v1/tls/certificate', { method: 'PUT', body: { chain: ca.chain(leaf) } });
    const cert = new X509Certificate(leaf);
    const notAfter = new Date(cert.validTo).toISOString();
    expect([installed.status, installed.body]).toEqual([
      200,
      {
        state: 'installed',
        publicKey: key.publicKey,
        names: NAMES,
        notBefore: new Date(cert.validFrom).toISOString(),
        notAfter,
        fingerprint256: cert.fingerprint256.replace(/:/g, '').toLowerCase(),
      },
    ]);
    // The enclave got the stored blob and signature, and the chain as certificates only.
    const stored = await parent.store.tlsKey(key.publicKey);
    expect(enclave.tlsInstalls).toEqual([
      {
        blob: stored?.blob,
        blobSignature: stored?.blobSignature,
        chain: `${cert.toString()}${new X509Certificate(ca.intermediatePem).toString()}`,
      },
    ]);
    const status = (await api('/v1/tls')).body;
    expect(status).toEqual({
      status: installed.body,
      current: { publicKey: key.publicKey, names: NAMES, notAfter, installedAt: expect.any(String) },
      pending: [],
    });
    const text = await metrics();
    expect(text).toMatch(/^nks_tls_installed 1$/m);
    expect(text).toMatch(new RegExp(`^nks_tls_not_after_seconds ${Math.floor(Date.parse(notAfter) / 1000)}$`, 'm'));
    // The enclave's wallet routes, from its health.
    expect(text).toMatch(/^nks_enclave_counter\{counter="wallets_connections"\} 3$/m);
    expect(text).toMatch(/^nks_enclave_counter\{counter="wallets_handshakeFailures"\} 2$/m);
    expect(text).toMatch(/^nks_enclave_wallet_requests\{outcome="ok"\} 5$/m);
    expect(text).not.toMatch(/nks_wallet_requests_total|nks_wallet_rate_limited_total|nks_api_client_address_shared/);

    // A renewed certificate for the same key, then another key: the last installed is current.
    const renewed = await ca.issue(key.csr, { notAfter: new Date(Date.now() + 200 * 24 * 3600_000) });
    expect((await api('/v1/tls/certificate', { method: 'PUT', body: { chain: ca.chain(renewed) } })).status).toBe(200);
    const other = await createKey(['w3.example.com']);
    expect((await api('/v1/tls')).body.pending.map((p: { publicKey: string }) => p.publicKey)).toEqual([other.publicKey]);
    const otherLeaf = await ca.issue(other.csr);
    expect((await api('/v1/tls/certificate', { method: 'PUT', body: { chain: ca.chain(otherLeaf) } })).body.publicKey).toBe(
      other.publicKey,
    );
    expect((await parent.store.currentTlsKey())?.publicKey).toBe(other.publicKey);
    expect((await parent.store.tlsKey(key.publicKey))?.current).toBe(false);
    expect((await api('/v1/tls')).body).toMatchObject({ current: { publicKey: other.publicKey, names: ['w3.example.com'] }, pending: [] });
    expect(log.text()).not.toMatch(/PRIVATE KEY/);
  });

  it('takes a chain whose leaf the root issued, without the intermediate', async () => {
    const key = await createKey(['wallets.example.com']);
    const leaf = await ca.issue(key.csr, { byRoot: true });
    expect((await api('/v1/tls/certificate', { method: 'PUT', body: { chain: leaf } })).status).toBe(200);
  });

  it('is for admins only', async () => {
    for (const [token, status] of [
      [TOKENS.full, 403],
      ['nks_unknown', 401],
    ] as const) {
      expect((await api('/v1/tls/keys', { token, body: { names: NAMES } })).status).toBe(status);
      expect((await api('/v1/tls/certificate', { token, method: 'PUT', body: { chain: 'x' } })).status).toBe(status);
      expect((await api('/v1/tls', { token })).status).toBe(status);
    }
    expect(enclave.calls['tls.create']).toBeUndefined();
  });

  it.each<[string, unknown, RegExp]>([
    ['no body', undefined, /^body: the names are required$/],
    ['no names', { names: [] }, /^body\.names: expected at least one name$/],
    ['an upper-case name', { names: ['Wallets.example.com'] }, /^body\.names\[0\]: expected a lower-case DNS name/],
    ['a wildcard', { names: ['*.example.com'] }, /^body\.names\[0\]: expected a lower-case DNS name/],
    ['a name with a port', { names: ['wallets.example.com:443'] }, /^body\.names\[0\]: /],
    ['a name twice', { names: ['a.example.com', 'a.example.com'] }, /^body\.names: expected each name once$/],
    ['eleven names', { names: Array.from({ length: 11 }, (_, i) => `w${i}.example.com`) }, /^body\.names: expected at most 10 names$/],
    ['an unknown field', { names: NAMES, keyType: 'rsa' }, /^body: unknown field\(s\) "keyType"$/],
  ])('refuses a new key with %s: 400 naming why, and asks the enclave nothing', async (_name, body, message) => {
    const res = await api('/v1/tls/keys', body === undefined ? { method: 'POST' } : { body });
    expectError(res, 400, 'INVALID_PARAMS', message);
    expect(enclave.calls['tls.create']).toBeUndefined();
  });

  it('refuses chains it cannot install: 400 naming why, and asks the enclave nothing', async () => {
    const key = await createKey();
    const leaf = await ca.issue(key.csr);
    const put = (chain: unknown) => api('/v1/tls/certificate', { method: 'PUT', body: chain === undefined ? undefined : { chain } });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const stranger = (await (await makeTestCa()).issueServer(['wallets.example.com'])).certPem;
    const DAY = 24 * 3600_000;
    const cases: Array<[unknown, string | RegExp]> = [
      [undefined, 'body: a certificate chain is required'],
      ['', /^body\.chain: /],
      ['x'.repeat(64 * 1024 + 1), 'body.chain: expected a PEM chain of at most 65536 bytes'],
      ['not a certificate', 'body.chain: the certificate chain holds text that is not a PEM CERTIFICATE block'],
      [
        `${leaf}${keyPem}`,
        'body.chain: the certificate chain holds a private key: send only the certificates (the enclave made the key, which never leaves it)',
      ],
      [
        '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
        'body.chain: the certificate chain: certificate 1 is not an X.509 certificate',
      ],
      [`${ca.intermediatePem}${leaf}`, 'body.chain: the certificate chain has a leaf with no DNS name in its subjectAltName'],
      [
        `${leaf}${ca.rootPem}`,
        'body.chain: the certificate chain is out of order or incomplete: certificate 1 is not issued by certificate 2 (expected leaf first, then each issuer)',
      ],
      [`${leaf}${ca.intermediatePem.repeat(8)}`, 'body.chain: the certificate chain has 9 certificates, more than the 8 allowed'],
      [
        ca.chain(await ca.issue(key.csr, { notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) })),
        /^body\.chain: the certificate chain has a leaf that expired at /,
      ],
      [
        ca.chain(await ca.issue(key.csr, { notBefore: new Date(Date.now() + DAY) })),
        /^body\.chain: the certificate chain has a leaf that is not valid before /,
      ],
      [
        stranger,
        "body.chain: the leaf certificate's public key is not a TLS key of this keystore: get the certificate for a CSR from POST /v1/tls/keys",
      ],
    ];
    for (const [chain, message] of cases) expectError(await put(chain), 400, 'INVALID_PARAMS', message);
    expect(enclave.calls['tls.install']).toBeUndefined();
    expect(await parent.store.currentTlsKey()).toBeUndefined();
    expect(log.text()).not.toContain(keyPem.split('\n')[1]);
  });

  it("refuses an enclave's TLS answers it cannot check, and stores nothing", async () => {
    const other = new TestIdentity();
    const { publicKey: ed25519 } = generateKeyPairSync('ed25519');
    for (const alter of [
      // Signed by another identity: not a blob this keystore's enclave made.
      (r: { blob: string; blobSignature: string }) => ({ ...r, blobSignature: other.sign(other.project()).signature }),
      // The signature of another blob.
      (r: { blob: string; blobSignature: string }) => ({ ...r, blob: Buffer.from('another blob').toString('base64') }),
      // Not a P-256 key.
      (r: { publicKey: string }) => ({ ...r, publicKey: ed25519.export({ type: 'spki', format: 'der' }).toString('base64') }),
      (r: { publicKey: string }) => ({ ...r, publicKey: 'AAAA' }),
    ]) {
      enclave.alter.tlsCreate = alter as never;
      expectError(await api('/v1/tls/keys', { body: { names: NAMES } }), 500, 'KEY_INTEGRITY');
    }
    enclave.alter.tlsCreate = undefined;
    expect(await parent.store.pendingTlsKeys(10)).toEqual([]);

    // An install answered for another key, or refused: the key is not made current.
    const key = await createKey();
    const chain = ca.chain(await ca.issue(key.csr));
    enclave.alter.tlsInstall = (s) => ({ ...s, publicKey: other.publicKey });
    expectError(await api('/v1/tls/certificate', { method: 'PUT', body: { chain } }), 500, 'KEY_INTEGRITY');
    enclave.alter.tlsInstall = undefined;
    enclave.tlsInstallError = new KeystoreError('INVALID_PARAMS', 'no');
    expectError(await api('/v1/tls/certificate', { method: 'PUT', body: { chain } }), 400, 'INVALID_PARAMS', 'no');
    expect(await parent.store.currentTlsKey()).toBeUndefined();
    expect((await api('/v1/tls')).body.current).toBeNull();
  });

  it('installs the current key again after every enclave restart: once, and with back-off while the enclave says no', async () => {
    const transport = new SimulatedVsockTransport(runDir);
    const key = await createKey();
    await api('/v1/tls/certificate', { method: 'PUT', body: { chain: ca.chain(await ca.issue(key.csr)) } });
    expect(enclave.calls['tls.install']).toBe(1);

    // The enclave restarts (same identity, nothing installed): the parent installs the key again, once.
    await enclave.close();
    await waitFor(() => !parent.pool.up, 5000, 'the pool down');
    const down = await metrics();
    expect(down).toMatch(/^nks_tls_installed 0$/m);
    expect(down).toMatch(/^nks_enclave_up 0$/m);
    enclave = new FakeEnclave(silentLogger(), enclave.identity);
    await enclave.listen(transport, ENCLAVE);
    await waitFor(() => enclave.tls.state === 'installed', 10_000, 'the key installed again');
    expect(enclave.tls.publicKey).toBe(key.publicKey);
    // Both connections came up and checked what the enclave serves; only the first installed.
    await waitFor(
      () => parent.pool.connectedCount === 2 && (enclave.calls['enclave.health'] ?? 0) >= 2 && !parent.tls.reinstalling,
      10_000,
      'both connections checked',
    );
    expect(enclave.calls['tls.install']).toBe(1);
    expect(enclave.tlsInstalls[0]?.blob).toBe((await parent.store.tlsKey(key.publicKey))?.blob);
    expect(await metrics()).toMatch(/^nks_tls_installed 1$/m);
    expect(log.lines().filter((l) => l.msg === 'installed the wallet TLS key in the enclave again')).toHaveLength(1);

    // Restarted again, and unable to install at first (its KMS link down, say): retried until it can.
    await enclave.close();
    await waitFor(() => !parent.pool.up, 5000, 'the pool down');
    enclave = new FakeEnclave(silentLogger(), enclave.identity);
    enclave.tlsInstallError = new KeystoreError('KMS_UNAVAILABLE', 'no');
    await enclave.listen(transport, ENCLAVE);
    await waitFor(() => enclave.tlsInstalls.length >= 2, 10_000, 'a retry');
    expect(log.lines().some((l) => l.msg === 'could not install the wallet TLS key in the enclave; retrying' && l.reason === 'no')).toBe(
      true,
    );
    enclave.tlsInstallError = null;
    await waitFor(() => enclave.tls.state === 'installed', 20_000, 'installed after the retries');
  });

  it('answers 421 on the wallet paths with the configured public URL', async () => {
    const res = await call(parent.url, `/v1/pk_${'A'.repeat(22)}/wallets/get-address`, { body: { jwt_token: 'x.y.z' } });
    expect([res.status, res.body]).toEqual([
      421,
      { detail: `the wallet routes are served by the enclave over TLS at ${PUBLIC_URL}`, url: PUBLIC_URL },
    ]);
    expect(parent.walletsRelayPort).toBeGreaterThan(0);
  });
});
