/**
 * The SDK's `signBatch` and the adapters' batch helpers against a test server that answers the batch route as a
 * parent would (genuine signatures of a local key, viem's), but fails some requests with retryable errors, or
 * lies: only the failed retryable requests are sent again and their answers land in their places; an answer
 * swapped with another's is SIGNATURE_MISMATCH in the viem and ethers helpers.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { hashMessage, parseSignature, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { KeystoreClient, KeystoreApiError } from '../src/sdk';
import { KeystoreSigner } from '../src/adapters/ethers';
import { KeystoreAdapterError, toKeystoreAccount } from '../src/adapters/viem';

const local = privateKeyToAccount(generatePrivateKey());
type Item = { result: Record<string, unknown> } | { error: { code: string; message: string; retryable: boolean } };

describe('signBatch: retries of the failed retryable requests only; checked answers in the adapters', () => {
  let server: http.Server;
  let url: string;
  /** Each batch the server received (the messages, in order). */
  const received: string[][] = [];
  /** How the server answers: by default, every message signed. */
  let answer: (messages: string[], round: number) => Promise<Item[]>;

  const sign = async (message: string | { raw: Hex }): Promise<Item> => {
    const signature = await local.signMessage({ message });
    const { r, s, v, yParity } = parseSignature(signature);
    return { result: { signature, r, s, v: Number(v), yParity, hash: hashMessage(message), address: local.address } };
  };
  const signAll = (messages: string[]) => Promise.all(messages.map(sign));
  const unavailable = { error: { code: 'UNAVAILABLE', message: 'a signer thread was replaced; retry', retryable: true } };
  const denied = { error: { code: 'POLICY_DENIED', message: 'no rule allows it', retryable: false } };

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const messages = (JSON.parse(body) as { requests: Array<{ message: string }> }).requests.map((r) => r.message);
        // (A raw message arrives as {raw}: signed as such.)
        received.push(messages);
        void answer(messages, received.length).then((results) => {
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
    answer = signAll;
  });

  const client = (retries = 2) => new KeystoreClient({ url, token: 't', retries });
  const messages = ['m0', 'm1', 'm2', 'm3', 'm4'];
  const batch = (c = client()) =>
    c.signBatch(
      'k-1',
      messages.map((message) => ({ type: 'message', message })),
    );

  it('sends again only the requests that failed with a retryable error, and puts their answers in place', async () => {
    // First round: m1 and m3 unavailable, m2 refused by a policy (final); second: m3 unavailable again; third: all signed.
    answer = async (ms, round) => {
      const items = await signAll(ms);
      if (round === 1) return items.map((it, i) => ([1, 3].includes(i) ? unavailable : i === 2 ? denied : it));
      if (round === 2) return items.map((it, i) => (ms[i] === 'm3' ? unavailable : it));
      return items;
    };
    const out = await batch();
    expect(received).toEqual([messages, ['m1', 'm3'], ['m3']]);
    expect(out.map((o) => (o.error ? o.error.code : hashMessage(messages[out.indexOf(o)] as string) === o.result.hash))).toEqual([
      true,
      true,
      'POLICY_DENIED',
      true,
      true,
    ]);
    const refused = out[2]!.error!;
    expect(refused).toBeInstanceOf(KeystoreApiError);
    expect([refused.batchIndex, refused.retryable, refused.message]).toEqual([2, false, 'no rule allows it']);
  });

  it('stops after the client’s retries: the last retryable error stays in its place', async () => {
    answer = async (ms) => (await signAll(ms)).map((it, i) => (ms[i] === 'm4' ? unavailable : it));
    const out = await batch(client(1));
    expect(received).toEqual([messages, ['m4']]);
    expect(out[4]!.error?.code).toBe('UNAVAILABLE');
    expect(out.slice(0, 4).every((o) => o.result)).toBe(true);
  });

  it('refuses a batch it cannot send (0 or 101 requests) before sending, and an answer of the wrong length', async () => {
    await expect(client().signBatch('k-1', [])).rejects.toThrow(TypeError);
    const many = Array.from({ length: 101 }, () => ({ type: 'message' as const, message: 'x' }));
    await expect(client().signBatch('k-1', many)).rejects.toThrow(TypeError);
    expect(received).toEqual([]);
    answer = async (ms) => (await signAll(ms)).slice(1);
    await expect(batch()).rejects.toMatchObject({ code: 'BAD_RESPONSE' });
  });

  it('viem signMessages: checked answers in place; a swapped answer is SIGNATURE_MISMATCH', async () => {
    const account = await toKeystoreAccount({ client: client(), keyId: 'k-1', address: local.address });
    answer = async (ms) => (await signAll(ms)).map((it, i) => (i === 1 ? denied : it));
    const out = await account.signMessages(['a', 'b', 'c']);
    expect(out[0]!.value).toBe(await local.signMessage({ message: 'a' }));
    expect(out[1]!.error?.code).toBe('POLICY_DENIED');
    expect(out[2]!.value).toBe(await local.signMessage({ message: 'c' }));
    // A lying parent swaps two answers: each is a genuine signature of the key, over the other message.
    answer = async (ms) => {
      const items = await signAll(ms);
      return [items[1]!, items[0]!, items[2]!];
    };
    await expect(account.signMessages(['a', 'b', 'c'])).rejects.toMatchObject({ code: 'SIGNATURE_MISMATCH' });
    // Another key's signature over the right digest.
    const other = privateKeyToAccount(generatePrivateKey());
    answer = async (ms) => {
      const items = (await signAll(ms)) as Array<{ result: Record<string, unknown> }>;
      const forged = await other.signMessage({ message: ms[0] as string });
      return [{ result: { ...items[0]!.result, signature: forged } }, ...items.slice(1)];
    };
    const err = await account.signMessages(['a', 'b']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeystoreAdapterError);
    expect((err as KeystoreAdapterError).message).toContain('request 0 of a batch recovers to');
  });

  it('ethers signMessages: the same checks', async () => {
    const signer = new KeystoreSigner({ client: client(), keyId: 'k-1', address: local.address });
    const out = await signer.signMessages(['x', new Uint8Array([1, 2, 3])]);
    expect(out.map((o) => o.value)).toEqual([
      await local.signMessage({ message: 'x' }),
      await local.signMessage({ message: { raw: new Uint8Array([1, 2, 3]) } }),
    ]);
    answer = async (ms) => {
      const items = await signAll(ms);
      return [items[1]!, items[0]!];
    };
    await expect(signer.signMessages(['x', 'y'])).rejects.toMatchObject({ code: 'SIGNATURE_MISMATCH' });
  });
});
