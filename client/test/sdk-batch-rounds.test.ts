/**
 * The SDK's `signBatch` when a retry round is refused as a whole (a rate limit's 429 with a long Retry-After, the
 * key disabled between rounds): the signatures earlier rounds answered are kept (they were made, counted against
 * policy limits and audited; a caller re-sending them would have them signed and counted twice), the requests
 * still pending carry that round's error; only a first round refused as a whole throws. Retry-After between
 * rounds is waited as a single call waits it. A test server answers the batch route as a parent would (genuine
 * signatures of a local key, viem's).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { hashMessage, parseSignature } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { KeystoreApiError, KeystoreClient } from '../src/sdk';

const local = privateKeyToAccount(generatePrivateKey());
type Answer = { status: number; headers: Record<string, string>; body: unknown };

describe('signBatch keeps the answers of earlier rounds when a later round is refused as a whole', () => {
  let server: http.Server;
  let url: string;
  /** The batches received: each one's size and when it arrived. */
  const received: Array<{ size: number; at: number }> = [];
  /** The first round's answer for its last request (the others are signed). */
  let lastOfFirst: unknown;
  /** By round (1 the first): the HTTP answer refusing it as a whole, or undefined to answer it. */
  let refuse: (round: number) => Answer | undefined;

  const sign = async (message: string) => {
    const signature = await local.signMessage({ message });
    const { r, s, v, yParity } = parseSignature(signature);
    return { result: { signature, r, s, v: Number(v), yParity, hash: hashMessage(message), address: local.address } };
  };
  const keyDisabled = { error: { code: 'KEY_DISABLED', message: 'key k-1 is disabled', requestId: 'r' } };
  const unavailable = { error: { code: 'UNAVAILABLE', message: 'signer replaced; retry', retryable: true } };

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const messages = (JSON.parse(body) as { requests: Array<{ message: string }> }).requests.map((r) => r.message);
        received.push({ size: messages.length, at: Date.now() });
        const round = received.length;
        const a = refuse(round);
        if (a) {
          res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers }).end(JSON.stringify(a.body));
          return;
        }
        // Round 1: every request signed but the last (lastOfFirst); later rounds: all signed.
        void Promise.all(messages.map(sign)).then((items) => {
          const results = items.map((it, i) => (round === 1 && i === messages.length - 1 ? lastOfFirst : it));
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ results }));
        });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });
  beforeEach(() => {
    received.length = 0;
    lastOfFirst = unavailable;
    refuse = () => undefined;
  });

  const messages = Array.from({ length: 10 }, (_, i) => `pay ${i}`);
  const batch = () =>
    new KeystoreClient({ url, token: 't', retries: 2 }).signBatch(
      'k-1',
      messages.map((message) => ({ type: 'message' as const, message })),
    );
  const firstNineSigned = (outcomes: Awaited<ReturnType<typeof batch>>) =>
    outcomes.slice(0, 9).every((o, i) => o.result?.hash === hashMessage(messages[i] as string));

  // A token with a rate limit of N per window sends a batch of N: its retry round is 429 with a Retry-After
  // beyond the SDK's backoff, which the SDK does not wait out.
  it('a retry round refused for the rate limit keeps the signatures of the first round', async () => {
    refuse = (round) =>
      round === 1
        ? undefined
        : {
            status: 429,
            headers: { 'retry-after': '60' },
            body: { error: { code: 'RATE_LIMITED', message: 'token "t" used its limit of 10 requests per 60 s', requestId: 'r' } },
          };
    const out = await batch();
    expect(received.map((r) => r.size)).toEqual([10, 1]);
    expect(firstNineSigned(out)).toBe(true);
    const error = out[9]!.error!;
    expect(error).toBeInstanceOf(KeystoreApiError);
    expect([error.code, error.status, error.retryAfterS, error.retryable, error.batchIndex, error.requestId]).toEqual([
      'RATE_LIMITED',
      429,
      60,
      true,
      9,
      'r',
    ]);
  });

  // The key disabled between the rounds: the retry round is 409 KEY_DISABLED for the whole batch.
  it('a retry round refused as a whole (KEY_DISABLED) keeps the signatures of the first round', async () => {
    refuse = (round) => (round === 1 ? undefined : { status: 409, headers: {}, body: keyDisabled });
    const out = await batch();
    expect(received.map((r) => r.size)).toEqual([10, 1]);
    expect(firstNineSigned(out)).toBe(true);
    const error = out[9]!.error!;
    expect([error.code, error.message, error.status, error.retryable, error.batchIndex]).toEqual([
      'KEY_DISABLED',
      'key k-1 is disabled',
      409,
      false,
      9,
    ]);
  });

  it('a first round refused as a whole throws (nothing was signed)', async () => {
    refuse = () => ({ status: 409, headers: {}, body: keyDisabled });
    await expect(batch()).rejects.toMatchObject({ code: 'KEY_DISABLED', status: 409, batchIndex: undefined });
    expect(received.map((r) => r.size)).toEqual([10]);
  });

  it('a retry round refused for the rate limit with a short Retry-After is sent again after it', async () => {
    refuse = (round) =>
      round === 2
        ? { status: 429, headers: { 'retry-after': '1' }, body: { error: { code: 'RATE_LIMITED', message: 'limit', requestId: 'r' } } }
        : undefined;
    const out = await batch();
    expect(received.map((r) => r.size)).toEqual([10, 1, 1]);
    expect(out.every((o, i) => o.result?.hash === hashMessage(messages[i] as string))).toBe(true);
    // Not before the window ends (a lower bound only).
    expect(received[2]!.at - received[1]!.at).toBeGreaterThanOrEqual(950);
  });

  it('an item refused for the rate limit is sent again no sooner than a single call would (1 s without Retry-After)', async () => {
    lastOfFirst = { error: { code: 'RATE_LIMITED', message: 'limit', retryable: true } };
    const out = await batch();
    expect(received.map((r) => r.size)).toEqual([10, 1]);
    expect(out.every((o) => o.result !== undefined)).toBe(true);
    expect(received[1]!.at - received[0]!.at).toBeGreaterThanOrEqual(950);
  });
});
