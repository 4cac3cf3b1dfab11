/**
 * The egress relay carrying what it exists for: TLS that ends at the enclave's side. The simulated IdP serves
 * its JWKS over HTTPS on loopback (its own CA, certificate for `localhost`); the test, standing where the
 * enclave would, asks the relay for `localhost:<port>` (the real system resolver answers), waits for
 * EGRESS_OK, then runs TLS over the relayed bytes with the IdP's CA and server name and reads the JWKS.
 */
import net from 'node:net';
import tls from 'node:tls';
import client from 'prom-client';
import { EGRESS_OK, encodeEgressRequest } from '@nks/shared/egress';
import { encodeFrame } from '@nks/shared/framing';
import { SimulatedVsockTransport, simulatedSocketPath } from '@nks/shared/transport';
import { captureLogger, tempRunDir } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { EgressConfigSchema, startEgressRelay, type EgressRelay } from '../src/egress/relay';

describe('egress relay: HTTPS to the simulated IdP', () => {
  const runDir = tempRunDir('nks-egress-tls-');
  let idp: SimulatedIdp;
  let relay: EgressRelay;
  const logs = captureLogger('debug');
  const projectHosts = new Set<string>();

  beforeAll(async () => {
    idp = await startSimulatedIdp();
    projectHosts.add(new URL(idp.jwksUri).hostname);
    relay = await startEgressRelay({
      config: EgressConfigSchema.parse({ listen: 'vsock://3:8001', allowedPorts: [idp.port], allowLoopback: true }),
      transport: new SimulatedVsockTransport(runDir),
      allowedHosts: () => projectHosts,
      log: logs.logger,
      metrics: new client.Registry(),
    });
  }, 60_000);

  afterAll(async () => {
    await relay?.close();
    await idp?.close();
  });

  /** Opens a relayed connection and returns the socket after EGRESS_OK, or null if the relay closed it. */
  async function openRelayed(host: string, port: number): Promise<net.Socket | null> {
    const sock = net.connect(simulatedSocketPath(runDir, relay.address));
    sock.on('error', () => undefined);
    sock.write(encodeFrame(encodeEgressRequest({ host, port })));
    const first = await new Promise<Buffer | null>((resolve) => {
      sock.once('data', (d: Buffer) => {
        sock.pause(); // the TLS socket reads from here on
        resolve(d);
      });
      sock.once('close', () => resolve(null));
    });
    if (!first) return null;
    expect(first[0]).toBe(EGRESS_OK);
    if (first.length > 1) sock.unshift(first.subarray(1));
    return sock;
  }

  function httpsGet(sock: net.Socket, url: URL, ca: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const secure = tls.connect({ socket: sock, servername: url.hostname, ca });
      const chunks: Buffer[] = [];
      // HTTP/1.0: the body comes whole (no chunked encoding) and the server closes after it.
      secure.on('secureConnect', () => secure.write(`GET ${url.pathname} HTTP/1.0\r\nHost: ${url.host}\r\n\r\n`));
      secure.on('data', (d: Buffer) => chunks.push(d));
      secure.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      secure.on('error', reject);
    });
  }

  it('fetches the JWKS over TLS through the relay, and none of it reaches the relay’s log', async () => {
    const url = new URL(idp.jwksUri);
    const sock = await openRelayed(url.hostname, idp.port);
    expect(sock).not.toBeNull();
    const fetchesBefore = idp.fetches;
    const response = await httpsGet(sock as net.Socket, url, idp.caPem);
    expect(response.startsWith('HTTP/1.1 200')).toBe(true);
    const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as { keys: Array<{ kid: string }> };
    expect(body.keys.map((k) => k.kid).sort()).toEqual(
      idp
        .jwks()
        .keys.map((k) => k.kid)
        .sort(),
    );
    expect(idp.fetches).toBe(fetchesBefore + 1);
    const { bytes } = relay.stats();
    expect(bytes.outbound).toBeGreaterThan(0);
    expect(bytes.inbound).toBeGreaterThan(response.length);
    expect(logs.text()).not.toContain('"keys"');
  });

  it('refuses the IdP once its project is gone (the host is read per connection)', async () => {
    const url = new URL(idp.jwksUri);
    projectHosts.clear();
    try {
      expect(await openRelayed(url.hostname, idp.port)).toBeNull();
      expect(relay.stats().refusals.host_not_allowed).toBe(1);
    } finally {
      projectHosts.add(url.hostname);
    }
  });
});
