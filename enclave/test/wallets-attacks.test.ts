/**
 * The wallet routes' HTTPS server against a compromised parent and a hostile public (docs/TLS.md): the real
 * enclave bundle, the test in the parent's seat (wallets-setup.ts) with a wallet store that lies, and raw
 * connections to the enclave's wallet listener.
 *
 * What must hold: whatever the store answers (another user's key, another project's record, a forged or replayed
 * record, malformed answers, errors of its choosing, nothing at all), the caller gets a refusal, never a signature
 * or an address that is not their own, and never the parent's words; a bad or late preamble, a connection over
 * `maxConnections`, a handshake that never completes and headers or a body sent byte by byte are closed by the
 * enclave and do not stall a concurrent sign. Outcomes are asserted, never timings.
 */
import net from 'node:net';
import tls from 'node:tls';
import { KeystoreError } from '@nks/shared/errors';
import { encodeFrame } from '@nks/shared/framing';
import { jwtSubject } from '@nks/shared/project-auth';
import type { ProjectResult, StoredUserKey } from '@nks/shared/enclave-api';
import type { SignedRecord } from '@nks/shared/records';
import { UNAVAILABLE_DETAILS } from '../src/wallets/answers';
import { NEVER } from './wallet-store';
import { NAME, preambleFor, startWalletsRig, type Answer, type WalletsRig } from './wallets-setup';

/** Every byte a socket receives until it closes. */
function untilClosed(socket: net.Socket): Promise<Buffer> {
  const got: Buffer[] = [];
  socket.on('data', (d: Buffer) => got.push(d));
  socket.on('error', () => undefined);
  return new Promise((resolve) => socket.once('close', () => resolve(Buffer.concat(got))));
}

const signBody = (jwt: string, message = 'hello') => ({ message, jwt_token: jwt, message_type: 'message', wallet_type: 'evm' });

describe('the wallet routes against a lying store and a hostile public', () => {
  let w: WalletsRig;
  let n = 0;
  /** Each request from its own address: no limit is what a test measures here. */
  const from = () => ({ from: `127.1.${Math.floor(++n / 250)}.${(n % 250) + 1}` });

  beforeAll(async () => {
    // Started without a TLS key: the first test installs it.
    w = await startWalletsRig({ tls: false, wallets: { maxConnections: 4 } });
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });
  afterEach(() => {
    w.store.lie = {};
  });

  it('serves no TLS before a key is installed (every handshake fails, counted), then serves it', async () => {
    const before = (await w.health()).wallets.handshakeFailures;
    const socket = tls.connect({ host: '127.0.0.1', port: w.ingress.port, servername: NAME, ca: w.ca.caPem });
    await expect(new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))).rejects.toThrow(
      /handshake failure|alert/i,
    );
    // (The enclave counts the failure as it sends the alert: look until it shows, at most a few times.)
    let after = await w.health();
    for (let i = 0; i < 20 && after.wallets.handshakeFailures === before; i++) after = await w.health();
    expect([after.tls.state, after.wallets.handshakeFailures]).toEqual(['none', before + 1]);
    await w.installTls();
    const res = await w.call('/v1/health', from());
    expect([res.status, res.body]).toEqual([200, { status: 'ok', tls: 'installed' }]);
  });

  let users = 0;
  /** A project with a user who has a key, and another user without one yet. */
  async function scene(): Promise<{
    project: ProjectResult;
    alice: { name: string; jwt: string; address: string; key: StoredUserKey };
    bobJwt: string;
  }> {
    const project = await w.newProject();
    const name = `alice-${++users}`;
    const jwt = await w.mint(name);
    const res = await w.wallet(project.projectKey, 'get-address', { jwt_token: jwt }, from());
    expect(res.status).toBe(200);
    const key = w.store.userKey(project.projectId, jwtSubject(w.idp.issuer, name) as string);
    if (!key) throw new Error('the store kept no key');
    return { project, alice: { name, jwt, address: res.body.address, key }, bobJwt: await w.mint(`bob-${users}`) };
  }

  /** A refusal that carries no address and no signature, and made no signature. */
  async function refusedWithNothing(call: () => Promise<Answer>, status: number): Promise<Answer> {
    const signs = (await w.health()).counters.signs;
    const res = await call();
    expect(res.status).toBe(status);
    expect(Object.keys(res.body)).toEqual(['detail']);
    expect(JSON.stringify(res.body)).not.toMatch(/0x[0-9a-fA-F]{40}/);
    expect((await w.health()).counters.signs).toBe(signs);
    return res;
  }
  const internal = (res: Answer) => expect(res.body.detail).toMatch(/^the keystore could not answer this request \(request id [\w-]+\)$/);

  it("answers another user's key with a refusal: no address, no signature, for get-address and sign", async () => {
    const { project, alice, bobJwt } = await scene();
    w.store.lie['store.userKey'] = () => ({ key: alice.key });
    internal(await refusedWithNothing(() => w.wallet(project.projectKey, 'get-address', { jwt_token: bobJwt }, from()), 500));
    internal(await refusedWithNothing(() => w.wallet(project.projectKey, 'sign', signBody(bobJwt), from()), 500));
    // The store's insert says so too: "someone has a key", Alice's.
    w.store.lie['store.userKey'] = () => ({ key: null });
    w.store.lie['store.insertUserKey'] = () => ({ inserted: false, key: alice.key });
    internal(await refusedWithNothing(() => w.wallet(project.projectKey, 'get-address', { jwt_token: bobJwt }, from()), 500));
    // ... or "kept yours", with Alice's.
    w.store.lie['store.insertUserKey'] = () => ({ inserted: true, key: alice.key });
    internal(await refusedWithNothing(() => w.wallet(project.projectKey, 'sign', signBody(bobJwt), from()), 500));
    // Alice herself is served as before, with her address.
    w.store.lie = {};
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: alice.jwt }, from())).body).toEqual({ address: alice.address });
  });

  it('a lost race is no lie: "not inserted" with the user\'s own key answers that key', async () => {
    const { project, alice } = await scene();
    const again = await w.mint(alice.name);
    w.store.lie['store.userKey'] = () => ({ key: null });
    w.store.lie['store.insertUserKey'] = () => ({ inserted: false, key: alice.key });
    expect((await w.wallet(project.projectKey, 'get-address', { jwt_token: again }, from())).body).toEqual({ address: alice.address });
  });

  it("answers another project's record, a forged record and a replayed one with a refusal", async () => {
    const { project, alice } = await scene();
    const other = await w.newProject();
    w.store.lie['store.project'] = () => ({ project: other.record });
    internal(await refusedWithNothing(() => w.wallet(project.projectKey, 'sign', signBody(alice.jwt), from()), 500));

    const flip = (s: SignedRecord): SignedRecord => {
      const sig = Buffer.from(s.signature, 'base64');
      sig[0] = (sig[0] as number) ^ 1;
      return { ...s, signature: sig.toString('base64') };
    };
    w.store.lie['store.project'] = () => ({ project: flip(project.record) });
    internal(await refusedWithNothing(() => w.wallet(project.projectKey, 'get-address', { jwt_token: alice.jwt }, from()), 500));
    w.store.lie = { 'store.userKey': () => ({ key: { ...alice.key, record: flip(alice.key.record) } }) };
    internal(await refusedWithNothing(() => w.wallet(project.projectKey, 'sign', signBody(alice.jwt), from()), 500));
    // Alice's key answered for Alice, but in the other project (its key record says the first).
    w.store.lie = {};
    const otherAlice = await w.wallet(other.projectKey, 'get-address', { jwt_token: alice.jwt }, from());
    expect(otherAlice.body.address).not.toBe(alice.address);
    w.store.lie['store.userKey'] = () => ({ key: alice.key });
    internal(await refusedWithNothing(() => w.wallet(other.projectKey, 'sign', signBody(alice.jwt), from()), 500));

    // The project disabled (the enclave signed the newer record): its active record from before is a replay.
    const disabled = await w.h.client.call('projects.setState', { project: project.record, state: 'disabled' });
    w.store.lie = {};
    w.store.putProject(disabled);
    expect((await w.wallet(project.projectKey, 'sign', signBody(alice.jwt), from())).status).toBe(401);
    w.store.putProject(project);
    internal(await refusedWithNothing(() => w.wallet(project.projectKey, 'sign', signBody(alice.jwt), from()), 500));
  });

  it("answers malformed answers, the store's own errors and no answer at all with 503, Retry-After and a fixed text", async () => {
    const { project, alice, bobJwt } = await scene();
    const marker = 'parent-chosen-words-91c2';
    const cases: Array<[keyof typeof w.store.lie, unknown, string]> = [
      ['store.project', null, alice.jwt],
      ['store.project', { project: marker }, alice.jwt],
      ['store.project', { project: project.record, extra: marker }, alice.jwt],
      ['store.userKey', { key: { keyId: marker, blob: 'AA==' } }, alice.jwt],
      ['store.userKey', [marker], alice.jwt],
      ['store.insertUserKey', { inserted: 'yes', key: alice.key }, bobJwt],
      ['store.insertUserKey', { inserted: true }, bobJwt],
      ['store.project', new KeystoreError('INVALID_JWT', marker), alice.jwt],
      ['store.userKey', new KeystoreError('UNAUTHORIZED', marker), alice.jwt],
      ['store.insertUserKey', new KeystoreError('KEY_DISABLED', marker), bobJwt],
      ['store.project', NEVER, alice.jwt],
      ['store.userKey', NEVER, alice.jwt],
    ];
    for (const [method, said, jwt] of cases) {
      w.store.lie = {
        [method]: () => {
          if (said instanceof KeystoreError) throw said;
          return said;
        },
      };
      const res = await refusedWithNothing(() => w.wallet(project.projectKey, 'sign', signBody(jwt), from()), 503);
      expect([method, res.body.detail, res.headers['retry-after']]).toEqual([method, UNAVAILABLE_DETAILS.other, '1']);
    }
    // Logged for operators with the request id and a fixed reason, never the store's payload or words.
    expect(w.h.enclave.lines.filter((l) => l.includes('wallet request unavailable')).length).toBeGreaterThanOrEqual(cases.length);
    expect(w.h.enclave.lines.some((l) => l.includes(marker))).toBe(false);
    // The truth again, and the caller is served.
    w.store.lie = {};
    expect((await w.wallet(project.projectKey, 'sign', signBody(alice.jwt), from())).status).toBe(200);
  });

  it('closes a connection with a bad or late preamble without a byte answered, and counts it', async () => {
    const before = (await w.health()).wallets.connectionsRefused;
    const frame = (payload: string) => encodeFrame(Buffer.from(payload));
    const badCrc = frame(JSON.stringify({ client: '203.0.113.9' }));
    badCrc[4] = (badCrc[4] as number) ^ 0xff;
    const sends = [
      Buffer.from(`GET / HTTP/1.1\r\nHost: ${NAME}\r\n\r\n`), // no preamble: the length is "GET " (too large)
      frame('not json'),
      frame(JSON.stringify({ client: 'not-an-address' })),
      frame(JSON.stringify({ client: '203.0.113.9', extra: 1 })),
      frame(JSON.stringify({ client: 'x'.repeat(300) })),
      badCrc,
      Buffer.alloc(0), // nothing: the preamble never comes
    ];
    for (const bytes of sends) {
      const socket = await w.ingress.raw();
      const closed = untilClosed(socket);
      socket.write(bytes);
      expect(await closed).toEqual(Buffer.alloc(0));
    }
    expect((await w.health()).wallets.connectionsRefused).toBe(before + sends.length);
  });

  it('closes at once a connection beyond maxConnections, and takes new ones once below', async () => {
    const before = (await w.health()).wallets.connectionsRefused;
    // Four connections past their preamble, in their handshake: the limit.
    const held = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const s = await w.ingress.raw();
        s.write(preambleFor('203.0.113.10'));
        return s;
      }),
    );
    const closes = held.map(untilClosed);
    let health = await w.health();
    for (let i = 0; i < 50 && health.wallets.connections < 4; i++) health = await w.health();
    expect(health.wallets.connections).toBe(4);
    const fifth = await w.ingress.raw();
    const closed = untilClosed(fifth);
    fifth.write(preambleFor('203.0.113.11'));
    expect(await closed).toEqual(Buffer.alloc(0));
    expect((await w.health()).wallets.connectionsRefused).toBe(before + 1);
    for (const s of held) s.destroy();
    await Promise.all(closes);
    for (let i = 0; i < 100 && (await w.health()).wallets.connections > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect((await w.call('/v1/health', from())).status).toBe(200);
  });

  it('closes slowloris connections (no handshake; headers or a body byte by byte) and still signs meanwhile', async () => {
    const { project, alice } = await scene();
    const before = (await w.health()).wallets.handshakeFailures;
    // 1. Through the relay, never a ClientHello.
    const silent = net.connect({ host: '127.0.0.1', port: w.ingress.port });
    const silentClosed = untilClosed(silent);
    // 2 and 3. TLS, then a request that never finishes: its headers, or its body, a byte at a time.
    const trickle = async (head: string) => {
      const socket = tls.connect({ host: '127.0.0.1', port: w.ingress.port, servername: NAME, ca: w.ca.caPem });
      await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
      const closed = untilClosed(socket);
      socket.write(head);
      const timer = setInterval(() => {
        if (!socket.destroyed) socket.write('a');
      }, 100);
      return closed.finally(() => clearInterval(timer));
    };
    const path = `/v1/${project.projectKey}/wallets/sign`;
    const slowHeaders = trickle(`POST ${path} HTTP/1.1\r\nHost: ${NAME}\r\nX-Slow: `);
    const slowBody = trickle(`POST ${path} HTTP/1.1\r\nHost: ${NAME}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n`);

    // Meanwhile, a sign is served.
    const signed = await w.wallet(project.projectKey, 'sign', signBody(alice.jwt, 'still served'), from());
    expect(signed.status).toBe(200);

    expect(await silentClosed).toEqual(Buffer.alloc(0));
    // Closed by the server (Node answers 408 to a request it gives up on, or just closes).
    for (const got of [await slowHeaders, await slowBody]) expect(got.toString()).toMatch(/^(|HTTP\/1\.1 408 [\s\S]*)$/);
    expect((await w.health()).wallets.handshakeFailures).toBeGreaterThanOrEqual(before + 1);
  });
});
