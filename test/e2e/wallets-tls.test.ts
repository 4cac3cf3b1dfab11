/**
 * The wallet routes over TLS that ends inside the enclave (docs/TLS.md), over the real processes: the enclave
 * bundle serving HTTPS with a key it made (a test CA signed its CSR), the parent relaying TCP to it over simulated
 * vsock, the KMS emulator, the NSM simulator and a simulated IdP. The tests stand where the parent would:
 *
 * (a) the SDK's calls (fetch, as the TrueWallet JWT signer makes them) over the enclave's TLS;
 * (b) the served certificate's key is the key the enclave attests (`tlsUserData`), and `nks tls verify` says so;
 * (c) everything the parent handles — every byte through its relay (a recording proxy in front of it, and
 *     recording relays on every vsock link), its log, its database file and its /metrics — holds no JWT and no
 *     request body in plaintext (marker strings), while a plaintext control is found by the same scan;
 * (d) a parent that answers the public port with a TLS server of its own, or one relaying the enclave's
 *     attestation, gets no handshake or no verdict the client trusts;
 * (e) slowloris clients (no handshake, a handshake never finished, headers byte by byte) and a flood of 300
 *     connections are bounded by the enclave's limits, and a concurrent sign still succeeds.
 */
import { spawn } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import Database from 'better-sqlite3';
import { getBytes, hexlify, verifyMessage, verifyTypedData } from 'ethers';
import { Agent, fetch as undiciFetch } from 'undici';
import { tlsUserData } from '@nks/shared/attestation/user-data';
import { tempRunDir } from '@nks/shared-test/helpers';
import { fetchTlsEvidence, verifyTlsEvidence } from '../../client/src/tls';
import { VerificationError } from '../../client/src/verify';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { makeTestCa } from '../../sim/src/idp/tls';
import { dist } from '../support/process';
import { startRecordingProxy } from '../support/recording';
import { findLeaks } from '../support/secrets';
import { startStack, waitReady, type Stack } from '../support/stack';
import { call, createProject, jwtProject, jwtStackOptions, walletApi, type CreatedProject } from '../support/truewallet';

const MAX_CONNECTIONS = 64;
const FLOOD = 300;

describe('the wallet routes over the enclave’s TLS', () => {
  let idp: SimulatedIdp;
  let s: Stack;
  let project: CreatedProject;
  let dir: string;
  let caFile: string;
  let relayPort: number;

  beforeAll(async () => {
    idp = await startSimulatedIdp({ audience: 'wallets-tls' });
    const j = jwtStackOptions([idp]);
    s = await startStack(tempRunDir('nks-wallets-tls-'), {
      ...j,
      enclave: {
        ...j.enclave,
        // The enclave's bounds, small enough to reach here; its timeouts long enough that a flood arrives whole.
        wallets: { maxConnections: MAX_CONNECTIONS, handshakeTimeoutMs: 10_000, headersTimeoutMs: 10_000, requestTimeoutMs: 20_000 },
      },
      // The parent's own bounds far above the enclave's: what is tested is what the enclave does.
      walletsRelay: { maxConnections: 100_000, maxPerAddress: 100_000 },
      capture: true,
      walletsTls: true,
    });
    await waitReady(s);
    project = await createProject(s, jwtProject(idp, { allowedOrigins: ['https://app.example'] }));
    dir = tempRunDir('nks-wallets-tls-files-');
    caFile = path.join(dir, 'ca.pem');
    fs.writeFileSync(caFile, s.walletsCa as string);
    relayPort = Number(new URL(s.walletsUrl).port);
  }, 180_000);

  afterAll(async () => {
    await s?.stop();
    await idp?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** fetch as the SDK's JWT signer calls the routes, trusting only the stack's CA. */
  const sdkFetch = (url: string, body: unknown, dispatcher: Agent) =>
    undiciFetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), dispatcher });

  it('(a) serves the SDK’s calls over its own TLS: get-address, sign (hash, text) and sign-request, checked with ethers', async () => {
    const agent = new Agent({ connect: { ca: s.walletsCa } });
    try {
      const base = `${s.walletsUrl}/v1/${project.projectKey}/wallets`;
      const jwt = await idp.mint({ sub: 'sdk-user' });
      const got = await sdkFetch(`${base}/get-address`, { jwt_token: jwt }, agent);
      expect(got.status).toBe(200);
      const { address } = (await got.json()) as { address: string };
      expect(address).toMatch(/^0x[0-9a-fA-F]{40}$/);
      const hash = hexlify(randomBytes(32));
      const byHash = (await (
        await sdkFetch(`${base}/sign`, { message: hash, jwt_token: jwt, message_type: 'hash', wallet_type: 'evm' }, agent)
      ).json()) as {
        signature: string;
      };
      expect(verifyMessage(getBytes(hash), byHash.signature)).toBe(address);
      const byText = (await (
        await sdkFetch(
          `${base}/sign`,
          { message: 'over the enclave’s TLS', jwt_token: jwt, message_type: 'message', wallet_type: 'evm' },
          agent,
        )
      ).json()) as { signature: string };
      expect(verifyMessage('over the enclave’s TLS', byText.signature)).toBe(address);
      const typedData = {
        domain: { name: 'Wallet app', version: '1', chainId: 1, verifyingContract: '0x000000000000000000000000000000000000dEaD' },
        types: { Mail: [{ name: 'contents', type: 'string' }] },
        primaryType: 'Mail',
        message: { contents: 'hello' },
      };
      const full = (await (
        await sdkFetch(`${base}/sign-request`, { jwt_token: jwt, request: { type: 'typedData', typedData } }, agent)
      ).json()) as {
        signature: string;
        address: string;
      };
      expect(full.address).toBe(address);
      expect(verifyTypedData(typedData.domain, typedData.types, typedData.message, full.signature)).toBe(address);
      // The health route answers on the same server; the parent's own API does not serve the wallet routes (421).
      expect((await undiciFetch(`${s.walletsUrl}/v1/health`, { dispatcher: agent })).status).toBe(200);
      const misdirected = await s.api(`/v1/${project.projectKey}/wallets/get-address`, { token: null, body: { jwt_token: jwt } });
      expect([misdirected.status, misdirected.body.url]).toEqual([421, s.walletsUrl]);
      // A client that trusts only Node's CA store (not the test CA) gets no answer at all.
      await expect(undiciFetch(`${base}/get-address`, { method: 'POST', body: '{}' })).rejects.toThrow();
    } finally {
      await agent.close();
    }
  });

  it('(b) serves the key the enclave made and attests, and `nks tls verify` says the connection ends in the attested enclave', async () => {
    const spki = await servedSpki(relayPort, s.walletsCa as string);
    const view = await s.api('/v1/tls', { token: 'admin' });
    expect(view.status).toBe(200);
    expect(view.body.status).toMatchObject({ state: 'installed', publicKey: spki.toString('base64'), names: ['localhost'] });
    // A fresh attestation with our nonce binds exactly the served key.
    const nonce = randomBytes(32).toString('hex');
    const answer = await call(s, `/v1/tls/attestation?nonce=${nonce}`);
    expect(answer.status).toBe(200);
    const evidence = await fetchTlsEvidence(s.walletsUrl, { ca: s.walletsCa as string });
    expect(evidence.spki).toEqual(spki);
    const verified = verifyTlsEvidence(evidence, {
      expectedPcrs: { 0: s.platform.pcr0 },
      rootCertificate: fs.readFileSync(s.platform.rootPem, 'utf8'),
    });
    expect(verified.attestation.document.userData).toEqual(tlsUserData(spki));

    // (Not spawnSync: the capture relays on the way to the enclave run in this process.)
    const nks = (args: string[]) =>
      run([dist('cli'), 'tls', 'verify', '--url', s.walletsUrl, '--ca', caFile, '--root', s.platform.rootPem, ...args]);
    const ok = await nks(['--pcr0', s.platform.pcr0]);
    expect({ status: ok.status, stderr: ok.stderr }).toEqual({ status: 0, stderr: '' });
    expect(ok.stdout).toMatch(new RegExp(`^VALID TLS key of ${s.walletsUrl}: the connection ends in an attested enclave`));
    expect(ok.stdout).toContain(`spki sha256`);
    const otherImage = await nks(['--pcr0', 'ab'.repeat(48)]);
    expect([otherImage.status, otherImage.stdout]).toEqual([1, expect.stringMatching(/INVALID TLS key .*PCR_MISMATCH/)]);
  });

  it('(c) leaves no JWT and no request body in plaintext in what the parent handles: relay bytes, vsock, log, database, metrics', async () => {
    const jwtMarker = `JWTMARK${randomBytes(12).toString('hex')}`;
    const bodyMarker = `BODYMARK${randomBytes(12).toString('hex')}`;
    const controlMarker = `CTRLMARK${randomBytes(12).toString('hex')}`;
    const proxy = await startRecordingProxy(relayPort);
    const apiProxy = await startRecordingProxy(Number(new URL(s.url).port));
    const via = { walletsUrl: `https://127.0.0.1:${proxy.port}`, walletsCa: s.walletsCa };
    let jwt: string;
    try {
      jwt = await idp.mint({ sub: 'quiet-user', marker: jwtMarker });
      const w = walletApi(via, project.projectKey);
      const { address } = (await w.getAddress(jwt)).body as { address: string };
      const signed = await w.sign(jwt, `${bodyMarker} text`, 'message');
      expect(signed.status).toBe(200);
      expect(verifyMessage(`${bodyMarker} text`, signed.body.signature)).toBe(address);
      const typed = await w.signRequest(jwt, {
        type: 'typedData',
        typedData: {
          domain: { name: 'Wallet app', version: '1', chainId: 1 },
          types: { Mail: [{ name: 'contents', type: 'string' }] },
          primaryType: 'Mail',
          message: { contents: bodyMarker },
        },
      });
      expect(typed.status).toBe(200);
      // A refused token and a bad body too (their answers come from the enclave).
      expect((await w.sign(`${jwt.slice(0, -4)}AAAA`, `${bodyMarker} again`, 'message')).status).toBe(400);
      expect((await w.post('sign', { jwt_token: jwt, message: bodyMarker, message_type: 'nope', wallet_type: 'evm' })).status).toBe(400);
      // The positive control: a marker in a plaintext request to the parent's own API is found by the same scan.
      await fetch(`http://127.0.0.1:${apiProxy.port}/v1/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${s.tokens.full}`, 'content-type': 'application/json' },
        body: JSON.stringify({ labels: { note: controlMarker } }),
      });
    } finally {
      await proxy.close();
      await apiProxy.close();
    }
    const [, payload, signature] = jwt.split('.') as [string, string, string];
    const needles = [jwt, payload, signature, jwtMarker, bodyMarker].map((n) => Buffer.from(n));
    expect(findLeaks([Buffer.from(controlMarker)], { 'the plaintext control': apiProxy.bytes() })).toEqual([
      'secret #0 in the plaintext control',
    ]);

    const db = new Database(s.dbPath, { readonly: true });
    let rows: string;
    try {
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as Array<{ name: string }>;
      rows = tables
        .map(({ name }) =>
          (db.prepare(`SELECT * FROM "${name}"`).all() as Array<Record<string, unknown>>)
            .map((r) =>
              JSON.stringify(r, (_k, v: unknown) =>
                Buffer.isBuffer(v) ? `${v.toString('hex')} ${v.toString('base64')} ${v.toString('latin1')}` : v,
              ),
            )
            .join('\n'),
        )
        .join('\n');
      expect(rows).toContain(project.projectKey); // the scan reads the rows
    } finally {
      db.close();
    }
    const metrics = await s.metrics();
    const relayed = proxy.bytes();
    const vsock = s.capturedTraffic();
    expect(relayed.length).toBeGreaterThan(4096);
    expect(vsock.includes(Buffer.from(project.projectKey))).toBe(true); // the wallet store's requests were recorded
    expect(
      findLeaks(needles, {
        'the bytes between client and relay': relayed,
        'every byte on vsock (RPC, KMS, ingress, wallet store)': vsock,
        'the parent log': s.parentLogs(),
        'the database': rows,
        '/metrics': metrics,
      }),
    ).toEqual([]);
  });

  it('(d) a parent answering the public port itself, or relaying the enclave’s attestation, gets no verdict a client trusts', async () => {
    const rogueCa = await makeTestCa('a CA the parent controls');
    const rogue = await rogueCa.issueServer(['localhost', '127.0.0.1']);
    const selfSigned = await makeTestCa('self-signed');
    const self = await selfSigned.issueServer(['localhost', '127.0.0.1']);
    // The parent cannot serve the enclave's certificate (public): it does not hold its key, so TLS would not even start.
    const served = await servedCertificate(relayPort, s.walletsCa as string);
    expect(() => tls.createSecureContext({ cert: served, key: rogue.keyPem })).toThrow(/key values mismatch/);

    // The parent stops relaying and answers the port with TLS servers of its own.
    await s.stopParent();
    try {
      for (const served of [rogue, { certPem: `${self.certPem}`, keyPem: self.keyPem }]) {
        const server = https.createServer({ cert: served.certPem, key: served.keyPem }, (_req, res) => res.end('{"address":"0x0"}'));
        await new Promise<void>((r) => server.listen(relayPort, '127.0.0.1', r));
        try {
          const w = walletApi(s, project.projectKey);
          const err = await w.getAddress(await idp.mint({ sub: 'victim' })).then(
            () => undefined,
            (e: NodeJS.ErrnoException) => e,
          );
          expect(err?.code).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|DEPTH_ZERO/);
          const verdict = await fetchTlsEvidence(s.walletsUrl, { ca: s.walletsCa as string }).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(verdict).toBeInstanceOf(VerificationError);
          expect((verdict as VerificationError).code).toBe('TLS_HANDSHAKE');
        } finally {
          server.closeAllConnections();
          await new Promise((r) => server.close(r));
        }
      }
    } finally {
      await s.startParent();
      await waitReady(s);
    }

    // Worst case: the parent got a certificate clients trust (here: they trust its CA too) and relays the attestation
    // request to the enclave. The document is genuine, fresh, with the client's nonce — and binds the enclave's key.
    const relaying = https.createServer({ cert: rogue.certPem, key: rogue.keyPem }, (req, res) => {
      call(s, req.url ?? '/').then(
        (a) => res.writeHead(a.status, { 'content-type': 'application/json' }).end(JSON.stringify(a.body)),
        () => res.writeHead(502).end(),
      );
    });
    await new Promise<void>((r) => relaying.listen(0, '127.0.0.1', r));
    try {
      const url = `https://127.0.0.1:${(relaying.address() as net.AddressInfo).port}`;
      const evidence = await fetchTlsEvidence(url, { ca: [s.walletsCa as string, rogueCa.caPem] });
      const err = (() => {
        try {
          verifyTlsEvidence(evidence, {
            expectedPcrs: { 0: s.platform.pcr0 },
            rootCertificate: fs.readFileSync(s.platform.rootPem, 'utf8'),
          });
          return undefined;
        } catch (e) {
          return e as VerificationError;
        }
      })();
      expect(err?.code).toBe('TLS_KEY_MISMATCH');
    } finally {
      relaying.closeAllConnections();
      await new Promise((r) => relaying.close(r));
    }
    // And the enclave serves again through the restarted parent.
    expect((await walletApi(s, project.projectKey).getAddress(await idp.mint({ sub: 'after-rogue' }))).status).toBe(200);
  });

  it('(e) slowloris clients and a flood of connections are bounded by the enclave; a concurrent sign still succeeds', async () => {
    const jwt = await idp.mint({ sub: 'steady-user' });
    const keepAlive = new https.Agent({ keepAlive: true, maxSockets: 1, ca: s.walletsCa });
    try {
      const w = walletApi(s, project.projectKey, { agent: keepAlive });
      expect((await w.getAddress(jwt)).status).toBe(200); // the connection the signer keeps

      // Slowloris: connections that never start the handshake, one that stops half way through its ClientHello,
      // and TLS connections that send their headers a byte at a time and never finish.
      const silent = await Promise.all(Array.from({ length: 8 }, () => rawConnection(relayPort)));
      const halfHello = await rawConnection(relayPort);
      halfHello.socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]));
      const dribblers = await Promise.all(Array.from({ length: 4 }, () => dribble(relayPort, s.walletsCa as string, project.projectKey)));

      // A flood of TLS handshakes, all at once, kept open without a request.
      let open = 0;
      let maxOpen = 0;
      let established = 0;
      let refused = 0;
      const flood: tls.TLSSocket[] = [];
      await Promise.all(
        Array.from(
          { length: FLOOD },
          () =>
            new Promise<void>((resolve) => {
              const socket = tls.connect({ host: '127.0.0.1', port: relayPort, ca: s.walletsCa, servername: 'localhost' });
              flood.push(socket);
              let counted = false;
              socket.once('secureConnect', () => {
                counted = true;
                established += 1;
                open += 1;
                maxOpen = Math.max(maxOpen, open);
                resolve();
              });
              socket.on('error', () => undefined);
              socket.once('close', () => {
                if (counted) open -= 1;
                else {
                  refused += 1;
                  resolve();
                }
              });
            }),
        ),
      );
      // During all of it the signer's connection is served.
      const during = await w.sign(jwt, 'signed during the flood', 'message');
      expect(during.status).toBe(200);
      expect(established + refused).toBe(FLOOD);
      expect(refused).toBeGreaterThan(0);
      expect(maxOpen).toBeLessThanOrEqual(MAX_CONNECTIONS);
      for (const socket of flood) socket.destroy();

      // The slow clients are closed by the enclave: no handshake, or 408 for headers that never end.
      await Promise.all([...silent, halfHello].map((c) => c.closed));
      const slow = await Promise.all(dribblers.map((d) => d.closed));
      for (const answer of slow) expect(answer).toMatch(/^$|^HTTP\/1\.1 408 /);
      // It was the enclave that refused (its counters), not the parent's relay (none of its limits was reached).
      const counters = await walletCounters(s);
      expect(counters.handshakeFailures).toBeGreaterThanOrEqual(silent.length + 1);
      expect(counters.connectionsRefused).toBeGreaterThanOrEqual(refused);
      const metrics = await s.metrics();
      expect(metrics).not.toMatch(/^nks_ingress_refusals_total\{reason="[^"]+"\} [1-9]/m);

      // And a new client is served once they are gone.
      expect((await walletApi(s, project.projectKey).sign(jwt, 'signed after', 'message')).status).toBe(200);
    } finally {
      keepAlive.destroy();
    }
  }, 120_000);
});

/** Runs a node program to its end without blocking this process: its exit code and output. */
function run(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, NKS_DEV_DIR: '/nonexistent' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The leaf certificate the server at 127.0.0.1:port presents, trusting `ca`. */
function servedLeaf(port: number, ca: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const cert = socket.getPeerX509Certificate() as X509Certificate;
      socket.destroy();
      resolve(cert);
    });
    socket.on('error', reject);
  });
}
const servedSpki = async (port: number, ca: string) => (await servedLeaf(port, ca)).publicKey.export({ type: 'spki', format: 'der' });
const servedCertificate = async (port: number, ca: string) => (await servedLeaf(port, ca)).toString();

/** A TCP connection that sends nothing unless told: `closed` resolves when the other side closes it. */
async function rawConnection(port: number): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  return { socket, closed: new Promise<void>((resolve) => socket.once('close', () => resolve())) };
}

/**
 * A TLS client that sends a request's headers a byte every 200 ms and never ends them: `closed` resolves with
 * whatever the server answered before it closed the connection.
 */
async function dribble(port: number, ca: string, projectKey: string): Promise<{ closed: Promise<string> }> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  let answer = '';
  socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
  const head = `POST /v1/${projectKey}/wallets/sign HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Slow: `;
  let i = 0;
  const timer = setInterval(() => {
    if (socket.destroyed) return clearInterval(timer);
    socket.write(head[i] ?? 'a');
    i += 1;
  }, 200);
  return {
    closed: new Promise<string>((resolve) =>
      socket.once('close', () => {
        clearInterval(timer);
        resolve(answer);
      }),
    ),
  };
}

/** The enclave's wallet-server counters (enclave.health's `wallets`), as the parent exports them in /metrics. */
async function walletCounters(s: Stack): Promise<{ handshakeFailures: number; connectionsRefused: number }> {
  const text = await s.metrics();
  const read = (name: string) =>
    Number(new RegExp(`^nks_enclave_counter\\{counter="wallets_${name}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  return { handshakeFailures: read('handshakeFailures'), connectionsRefused: read('connectionsRefused') };
}
