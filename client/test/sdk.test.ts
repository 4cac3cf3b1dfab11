import { ERROR_CODES, isRetryableCode } from '@nks/shared/errors';
import { KeystoreApiError, KeystoreClient } from '../src/sdk';

function fakeFetch(statuses: number[]) {
  const calls: Array<{ url: string; init?: RequestInit }> = [];
  const f = (async (url: string, init?: RequestInit) => {
    calls.push({ url, init });
    const status = statuses[Math.min(calls.length - 1, statuses.length - 1)] as number;
    const body =
      status < 300
        ? { keyId: 'k1', address: '0x1', signature: '0xsig' }
        : { error: { code: status === 503 ? 'UNAVAILABLE' : 'KEY_NOT_FOUND', message: 'nope', requestId: 'r1' } };
    return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
  }) as unknown as typeof fetch;
  return { f, calls };
}

/** Answers 429 RATE_LIMITED with `Retry-After: retryAfter` until `limited` calls were made, then 200. */
function rateLimitedFetch(limited: number, retryAfter: string) {
  const calls: number[] = [];
  const f = (async () => {
    calls.push(Date.now());
    if (calls.length > limited) return new Response(JSON.stringify({ keyId: 'k1', signature: '0xsig' }), { status: 200 });
    const body = { error: { code: 'RATE_LIMITED', message: 'slow down', requestId: 'r1' } };
    return new Response(JSON.stringify(body), { status: 429, headers: { 'content-type': 'application/json', 'retry-after': retryAfter } });
  }) as unknown as typeof fetch;
  return { f, calls };
}

describe('SDK', () => {
  it('waits out a rate limit as Retry-After says, and gives up at once when the window is longer than a backoff', async () => {
    const short = rateLimitedFetch(1, '1');
    await expect(new KeystoreClient({ url: 'http://x', token: 't', fetch: short.f }).signMessage('k1', 'm')).resolves.toMatchObject({
      signature: '0xsig',
    });
    expect(short.calls).toHaveLength(2);
    // Not before the second the server named (a backoff alone would be 50-100 ms).
    expect((short.calls[1] as number) - (short.calls[0] as number)).toBeGreaterThanOrEqual(990);
    const long = rateLimitedFetch(5, '60');
    const err = (await new KeystoreClient({ url: 'http://x', token: 't', fetch: long.f })
      .signMessage('k1', 'm')
      .catch((e: unknown) => e)) as KeystoreApiError;
    expect([err.status, err.code, err.retryable, err.retryAfterS]).toEqual([429, 'RATE_LIMITED', true, 60]);
    expect(long.calls).toHaveLength(1);
  });

  it('retries repeatable requests on retryable errors, then succeeds', async () => {
    const { f, calls } = fakeFetch([503, 503, 200]);
    const c = new KeystoreClient({ url: 'http://x/', token: 't', fetch: f });
    await expect(c.signMessage('k1', 'm')).resolves.toMatchObject({ signature: '0xsig' });
    expect(calls).toHaveLength(3);
    expect(calls[0]?.url).toBe('http://x/v1/keys/k1/sign');
    expect((calls[0]?.init?.headers as Record<string, string>).authorization).toBe('Bearer t');
  });

  it('retries a create without externalId with one Idempotency-Key (the server answers its retries the same key)', async () => {
    const { f, calls } = fakeFetch([503, 201]);
    await expect(new KeystoreClient({ url: 'http://x', token: 't', fetch: f }).createKey()).resolves.toMatchObject({ created: true });
    expect(calls).toHaveLength(2);
    const keys = calls.map((c) => (c.init?.headers as Record<string, string>)['idempotency-key']);
    expect(keys[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(keys[1]).toBe(keys[0]);
    const again = fakeFetch([503, 200]);
    await expect(new KeystoreClient({ url: 'http://x', token: 't', fetch: again.f }).createKey({ externalId: 'e' })).resolves.toMatchObject(
      { created: false },
    );
    expect(again.calls).toHaveLength(2);
  });

  it('raises errors with code, status, request id and retryability; does not retry the rest', async () => {
    const { f, calls } = fakeFetch([404]);
    const err = (await new KeystoreClient({ url: 'http://x', token: 't', fetch: f })
      .getKey('k9')
      .catch((e: unknown) => e)) as KeystoreApiError;
    expect([err.status, err.code, err.requestId, err.retryable]).toEqual([404, 'KEY_NOT_FOUND', 'r1', false]);
    expect(calls).toHaveLength(1);
  });

  it("takes retryability from the servers' error-code table, code by code", () => {
    const table = Object.entries(ERROR_CODES).map(([code, info]) => [code, info.retryable]);
    expect(table.map(([code]) => [code, new KeystoreApiError(500, code as string, 'm', undefined).retryable])).toEqual(table);
    expect(table.filter(([, retryable]) => retryable).map(([code]) => code)).toEqual([
      'IDENTITY_UNAVAILABLE',
      'JWKS_UNAVAILABLE',
      'KMS_THROTTLED',
      'KMS_UNAVAILABLE',
      'OVERLOADED',
      'TIMEOUT',
      'UNAVAILABLE',
      'STORAGE_UNAVAILABLE',
      'RATE_LIMITED',
    ]);
    // Codes the table does not have (an HTTP status without our envelope, a body that is not JSON): final.
    for (const code of ['HTTP_503', 'BAD_RESPONSE', 'toString', ''])
      expect([code, new KeystoreApiError(503, code, 'm', undefined).retryable, isRetryableCode(code)]).toEqual([code, false, false]);
  });
});
