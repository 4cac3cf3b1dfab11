/**
 * The parent daemon (in this process) against a fake enclave (fake-enclave.ts): an RPC server on the simulated
 * vsock transport that the test controls. It holds sign requests until the test releases them, so the API's
 * in-flight cap is measured with exact counts rather than timing; and it can answer a sign with a valid
 * signature by another key, which the parent must refuse (KEY_INTEGRITY) instead of passing on.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { recoverMessageAddress, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { silentLogger } from '@nks/shared/log';
import type { SignResult } from '@nks/shared/enclave-api';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { tempRunDir } from '@nks/shared-test/helpers';
import { hashToken } from '../src/api/auth';
import { startParent, type RunningParent } from '../src/app';
import { parseParentConfig } from '../src/config';
import { FAKE_KMS_KEY_ARN, FakeEnclave } from './fake-enclave';

const ENCLAVE = 'vsock://16:5000';
const TOKEN = 'nks_test_token';

interface ApiAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  body: any;
}

describe('parent against a fake enclave', () => {
  let runDir: string;
  let enclave: FakeEnclave;
  let parent: RunningParent | undefined;

  /** One request on its own connection (no pooling: each request is exactly one in flight until answered). */
  const api = (pathname: string, body?: unknown): Promise<ApiAnswer> =>
    new Promise((resolve, reject) => {
      const url = new URL(`${(parent as RunningParent).url}${pathname}`);
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: data ? 'POST' : 'GET',
          agent: false,
          headers: {
            authorization: `Bearer ${TOKEN}`,
            ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              /* metrics */
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed });
          });
        },
      );
      req.on('error', reject);
      req.end(data);
    });

  async function start(maxInFlight: number): Promise<RunningParent> {
    const config = parseParentConfig({
      api: { listen: { host: '127.0.0.1', port: 0 }, maxInFlight, requestTimeoutMs: 30_000 },
      metrics: { listen: { host: '127.0.0.1', port: 0 } },
      tokens: [{ name: 'test', sha256: hashToken(TOKEN), scopes: ['keys:create', 'keys:sign', 'keys:read'] }],
      database: { path: path.join(runDir, 'keys.db') },
      transport: { kind: 'simulated', runDir },
      enclave: { address: ENCLAVE, poolSize: 2, deadlineMs: 25_000 },
      kmsProxy: {
        listen: 'vsock://3:8000',
        allowedKeyArns: [FAKE_KMS_KEY_ARN],
        region: 'us-east-1',
        endpoint: 'http://127.0.0.1:9',
      },
      wallets: { relay: { host: '127.0.0.1', port: 0 } },
      logLevel: 'silent',
    });
    const p = await startParent(config, silentLogger());
    parent = p;
    await p.pool.waitUp(5000);
    return p;
  }

  beforeEach(async () => {
    runDir = tempRunDir('nks-fake-enclave-');
    enclave = new FakeEnclave();
    await enclave.listen(new SimulatedVsockTransport(runDir), ENCLAVE);
  });

  afterEach(async () => {
    enclave?.releaseAll();
    await parent?.stop();
    parent = undefined;
    await enclave?.close();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const createKey = async () => {
    const res = await api('/v1/keys', {});
    expect(res.status).toBe(201);
    return res.body as { keyId: string; address: Hex };
  };
  const sign = (keyId: string, message: string) => api(`/v1/keys/${keyId}/sign`, { type: 'message', message });

  describe('in-flight cap', () => {
    const CAP = 3;

    /**
     * Sends one sign request and waits for whichever comes first: the fake enclave holding it, or an answer.
     * Nothing is timed: a request the cap lets through is held by the enclave until the test releases it.
     */
    const sendAndSee = async (keyId: string, message: string, heldBefore: number) => {
      const answer = sign(keyId, message);
      const first = await Promise.race([enclave.waitHeld(heldBefore + 1), answer]);
      return { first, answer };
    };

    /** Fills the API to exactly CAP requests in flight, checks that one more is refused, and releases them. */
    const round = async (p: RunningParent, keyId: string, address: Hex, tag: string) => {
      enclave.holding = true;
      const answers: Array<Promise<ApiAnswer>> = [];
      for (let i = 0; i < CAP; i++) {
        const { first, answer } = await sendAndSee(keyId, `${tag} ${i}`, i);
        // Each of the first CAP requests reaches the enclave (it is not answered 503 first).
        expect([i, first === 'held' ? 'held by the enclave' : `answered ${first.status} ${first.text}`]).toEqual([
          i,
          'held by the enclave',
        ]);
        answers.push(answer);
      }
      expect(enclave.held).toHaveLength(CAP);
      expect((await p.metrics.inFlight.get()).values[0]?.value).toBe(CAP);

      // One more: refused at once with 503 OVERLOADED and Retry-After, and never reaches the enclave.
      const before = enclave.signRequests.length;
      const { first: over } = await sendAndSee(keyId, `${tag} over`, CAP);
      expect(over).not.toBe('held');
      const refused = over as ApiAnswer;
      expect([refused.status, refused.body?.error?.code]).toEqual([503, 'OVERLOADED']);
      expect(refused.body.error.message).toBe(`more than ${CAP} requests in flight; retry shortly`);
      expect(refused.headers['retry-after']).toMatch(/^\d+$/);
      expect(enclave.signRequests.length).toBe(before);
      expect(enclave.held).toHaveLength(CAP);

      // Released, every held request completes with a signature by the key.
      enclave.releaseAll();
      const done = await Promise.all(answers);
      expect(done.map((a) => a.status)).toEqual(Array(CAP).fill(200));
      for (let i = 0; i < CAP; i++) {
        expect(await recoverMessageAddress({ message: `${tag} ${i}`, signature: (done[i] as ApiAnswer).body.signature })).toBe(address);
      }
    };

    it(`lets exactly ${CAP} requests in flight, answers the next 503 OVERLOADED, and serves again once they finish`, async () => {
      const p = await start(CAP);
      const key = await createKey();
      await round(p, key.keyId, key.address, 'first');
      expect((await p.metrics.overloaded.get()).values[0]?.value).toBe(1);
      // The counter went back to zero: the same exact counts hold a second time.
      await round(p, key.keyId, key.address, 'second');
      expect((await p.metrics.overloaded.get()).values[0]?.value).toBe(2);
      const after = await sign(key.keyId, 'after');
      expect(after.status).toBe(200);
      expect(await recoverMessageAddress({ message: 'after', signature: after.body.signature })).toBe(key.address);
    });
  });

  describe('the address the enclave signed with', () => {
    it('is checked against the record: a valid signature by another key is refused as KEY_INTEGRITY and not returned', async () => {
      await start(64);
      const key = await createKey();

      // Control: the enclave signs with the record's key, and the signature is returned.
      const good = await sign(key.keyId, 'pay 1 ETH');
      expect(good.status).toBe(200);
      expect(await recoverMessageAddress({ message: 'pay 1 ETH', signature: good.body.signature })).toBe(key.address);

      // The enclave (or whatever answers in its place) signs with another key, correctly, and says so.
      const other = privateKeyToAccount(generatePrivateKey());
      enclave.signAs = other;
      const bad = await sign(key.keyId, 'pay 1 ETH');
      const substituted = enclave.answered[enclave.answered.length - 1] as SignResult;
      expect(substituted.address).toBe(other.address);
      expect(await recoverMessageAddress({ message: 'pay 1 ETH', signature: substituted.signature })).toBe(other.address); // a valid signature, just not by this key
      expect([bad.status, bad.body?.error?.code]).toEqual([500, 'KEY_INTEGRITY']);
      expect(bad.body.error.message).toBe(`the enclave signed with ${other.address}, but key ${key.keyId} is ${key.address}`);
      expect(Object.keys(bad.body)).toEqual(['error']);
      for (const part of [substituted.signature, substituted.r.slice(2), substituted.s.slice(2)]) expect(bad.text).not.toContain(part);
    });
  });
});
