/**
 * What the wallet tests share: the real enclave bundle on the simulated platform (harness.ts), with the test
 * standing where the parent would on every link it owns:
 * - the wallet store (wallet-store.ts), which can lie;
 * - the ingress relay: TCP on 127.0.0.1 to the enclave's wallet listener, one preamble `{client}` then bytes
 *   both ways, as the parent's relay does (a test can make it send any preamble, or talk to the listener raw);
 * - the egress relay (test/support/open-relay.ts), for the JWKS of a simulated IdP (real jose-minted JWTs).
 * HTTPS is real: node:https with the test CA trusted, for the name `wallets.test`.
 *
 * The TLS key: the enclave makes it (`tls.create`) and the test CA certifies it (`tls.install`).
 */
import https from 'node:https';
import net from 'node:net';
import { randomBytes, webcrypto } from 'node:crypto';
import type { EnclaveHealth, ProjectResult } from '@nks/shared/enclave-api';
import { encodeFrame } from '@nks/shared/framing';
import { DEFAULT_WALLETS_ADDRESS, encodeIngressPreamble } from '@nks/shared/ingress';
import { simulatedSocketPath } from '@nks/shared/transport';
import { tempRunDir } from '@nks/shared-test/helpers';
import { x509 } from '../../sim/src/nsm/x509';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startOpenRelay, type OpenRelay } from '../../test/support/open-relay';
import { startEnclaveHarness, type EnclaveHarness } from './harness';
import { startWalletStore, type WalletStore } from './wallet-store';

export const NAME = 'wallets.test';
export const ORIGIN = 'https://wallet.example';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A test CA that certifies a given public key (the enclave's), for the names asked. */
export interface WalletsCa {
  caPem: string;
  issueFor(spkiDer: Buffer, names: string[], validity?: { notBefore: Date; notAfter: Date }): Promise<string>;
}

export async function makeWalletsCa(): Promise<WalletsCa> {
  const caKeys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const now = Date.now();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(8).toString('hex'),
    name: 'CN=nitro-keystore wallets test CA',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 30 * 24 * 3600_000),
    keys: caKeys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  return {
    caPem: ca.toString('pem'),
    async issueFor(spkiDer, names, validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 7 * 24 * 3600_000) }) {
      const publicKey = await webcrypto.subtle.importKey('spki', spkiDer, ALG, true, ['verify']);
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomBytes(8).toString('hex'),
        subject: `CN=${names[0]}`,
        issuer: ca.subject,
        ...validity,
        publicKey,
        signingKey: caKeys.privateKey,
        signingAlgorithm: ALG,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
          new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value }))),
          await x509.AuthorityKeyIdentifierExtension.create(ca),
        ],
      });
      return cert.toString('pem');
    },
  };
}

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
}

/** The ingress relay the test runs in the parent's seat. */
export interface IngressRelay {
  port: number;
  /** The preamble frame sent for a client address (default: the real one); a test may send anything. */
  preamble: (client: string) => Buffer;
  /** Every byte the relay carried, both ways (the parent's view of the wallet routes). */
  readonly seen: Buffer[];
  /** A raw connection to the enclave's wallet listener (no relay, no preamble). */
  raw(): Promise<net.Socket>;
  close(): Promise<void>;
}

export const preambleFor = (client: string) => encodeFrame(encodeIngressPreamble({ client }));

async function startIngressRelay(runDir: string): Promise<IngressRelay> {
  const target = simulatedSocketPath(runDir, DEFAULT_WALLETS_ADDRESS);
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    return s;
  };
  const relay: IngressRelay = {
    port: 0,
    seen: [],
    preamble: preambleFor,
    raw: () =>
      new Promise((resolve, reject) => {
        const s = track(net.connect(target));
        s.once('connect', () => resolve(s)).once('error', reject);
      }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((client) => {
    track(client);
    const enclave = track(net.connect(target));
    client.on('close', () => enclave.destroy());
    enclave.on('close', () => client.destroy());
    enclave.write(relay.preamble(client.remoteAddress ?? 'unknown'));
    for (const [from, to] of [
      [client, enclave],
      [enclave, client],
    ] as const) {
      from.on('data', (d: Buffer) => {
        relay.seen.push(Buffer.from(d));
        to.write(d);
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  relay.port = (server.address() as net.AddressInfo).port;
  return relay;
}

export interface WalletsRig {
  h: EnclaveHarness;
  store: WalletStore;
  idp: SimulatedIdp;
  ca: WalletsCa;
  ingress: IngressRelay;
  egress: OpenRelay;
  /** An HTTPS request to the enclave through the ingress relay (a fresh connection each time). */
  call(pathname: string, init?: CallInit): Promise<Answer>;
  wallet(projectKey: string, route: string, body: unknown, init?: CallInit): Promise<Answer>;
  /** A JWT project on the IdP (projects.create), kept by the store. */
  newProject(settings?: Record<string, unknown>): Promise<ProjectResult>;
  mint(sub: unknown, claims?: Record<string, unknown>, options?: Parameters<SimulatedIdp['mint']>[1]): Promise<string>;
  health(): Promise<EnclaveHealth>;
  /** Installs a certificate for the enclave's TLS key (see the file comment). */
  installTls(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts everything; the TLS key is installed unless `tls: false`. `wallets` is the enclave configuration's
 * `wallets` section (on top of short test timeouts, and no project cache: the tests change the store's answers
 * between requests and count its calls; a test of the cache turns it on).
 */
export async function startWalletsRig(opts: { wallets?: Record<string, unknown>; tls?: boolean } = {}): Promise<WalletsRig> {
  const runDir = tempRunDir('nks-w-');
  const idp = await startSimulatedIdp();
  const ca = await makeWalletsCa();
  const h = await startEnclaveHarness(runDir, {
    jwt: { trustedCas: [idp.caPem], jwks: { fetchTimeoutMs: 2_000, failureRetryMs: 0 } },
    wallets: {
      preambleTimeoutMs: 500,
      handshakeTimeoutMs: 1_000,
      headersTimeoutMs: 1_000,
      requestTimeoutMs: 2_000,
      keepAliveTimeoutMs: 1_000,
      storeDeadlineMs: 1_000,
      projectCacheMs: 0,
      ...opts.wallets,
    },
  });
  const store = await startWalletStore(h.recorded);
  const egress = await startOpenRelay(runDir);
  const ingress = await startIngressRelay(runDir);

  const call = (pathname: string, init: CallInit = {}): Promise<Answer> => {
    const body = init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
    const headers: Record<string, string> = {
      ...(body !== undefined && typeof init.body !== 'string' ? { 'content-type': 'application/json' } : {}),
      ...init.headers,
    };
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: ingress.port,
          servername: NAME,
          ca: ca.caPem,
          agent: false,
          path: pathname,
          method: init.method ?? (body === undefined ? 'GET' : 'POST'),
          headers: { host: NAME, ...headers },
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
              /* not JSON */
            }
            resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  };

  const names = [NAME];
  let looks = 0;
  const rig: WalletsRig = {
    h,
    store,
    idp,
    ca,
    ingress,
    egress,
    call,
    wallet: (projectKey, route, body, init = {}) => call(`/v1/${projectKey}/wallets/${route}`, { body, ...init }),
    async newProject(settings = {}) {
      const made = await h.client.call('projects.create', {
        settings: {
          auth: { type: 'jwt', issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri },
          allowedOrigins: [ORIGIN],
          ...settings,
        } as never,
      });
      store.putProject(made);
      return made;
    },
    mint: (sub, claims = {}, options = {}) => idp.mint({ sub: sub as string, ...claims }, options),
    health: () => h.client.call('enclave.health', {}),
    async installTls() {
      const created = await h.client.call('tls.create', { names });
      const chain = await ca.issueFor(Buffer.from(created.publicKey, 'base64'), names);
      await h.client.call('tls.install', { blob: created.blob, blobSignature: created.blobSignature, chain });
      // The enclave dials the wallet store, started after it, with back-off: the routes answer once it is linked.
      // Each look from an address of its own (health counts against the per-address limit).
      const until = Date.now() + 15_000;
      while ((await call('/v1/health', { from: `127.254.${Math.floor(++looks / 250) % 250}.${(looks % 250) + 1}` })).status !== 200) {
        if (Date.now() > until) throw new Error('the wallet routes did not become available (is the wallet store linked?)');
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      await ingress.close();
      await egress.close();
      await store.close();
      await h.stop();
      await idp.close();
    },
  };
  if (opts.tls !== false) await rig.installTls();
  return rig;
}
