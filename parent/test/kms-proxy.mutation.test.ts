/**
 * The KMS proxy's rules (proxy.ts) in-process, against a scripted KMS client: exactly what it asks KMS, what it
 * relays, what it refuses, when it retries and when it stops, the outcome it reports for each, and the error
 * mapping name by name. kms-proxy.test.ts runs the same rules against the KMS emulator over RPC; these are the
 * deterministic, fast version that mutation testing (npm run test:mutation) needs, with no timing bets: the
 * retry delays are the proxy's own (50 ms and up) and only their order and count are checked.
 */
import { DecryptCommand, type KMSClient } from '@aws-sdk/client-kms';
import fs from 'node:fs';
import net from 'node:net';
import { backoffDelay } from '@nks/shared/backoff';
import { KeystoreError, toRpcError } from '@nks/shared/errors';
import { silentLogger } from '@nks/shared/log';
import { RpcClient } from '@nks/shared/rpc';
import { SimulatedVsockTransport, simulatedSocketPath } from '@nks/shared/transport';
import { captureLogger, rejection, tempRunDir } from '@nks/shared-test/helpers';
import { KMSClient as RealKMSClient } from '@aws-sdk/client-kms';
import {
  KMS_MIN_ATTEMPT_MS,
  KMS_RETRY_BACKOFF,
  KMS_UNREADY_AFTER,
  KmsProxy,
  kmsBudgetMs,
  kmsErrorDetail,
  mapKmsError,
} from '../src/kms/proxy';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const OTHER = 'arn:aws:kms:us-east-1:111122223333:key/99999999-2222-3333-4444-555555555555';
const DOC = Buffer.from('attestation-document');
const BLOB = Buffer.from('wrapped-key');
const CMS = Buffer.from('cms-for-the-enclave');

type Step = (command: DecryptCommand, options: { abortSignal?: AbortSignal }) => Promise<unknown>;

/** A KMS client whose answers are the given steps, one per call (the last one repeats). */
function scripted(...steps: Step[]) {
  const calls: Array<{ command: DecryptCommand; options: { abortSignal?: AbortSignal } }> = [];
  const client = {
    send: (command: DecryptCommand, options: { abortSignal?: AbortSignal }) => {
      calls.push({ command, options });
      const step = steps[Math.min(calls.length, steps.length) - 1] as Step;
      return step(command, options);
    },
  } as unknown as KMSClient;
  return { client, calls };
}

const answer =
  (extra: object = {}): Step =>
  async () => ({ KeyId: ARN, CiphertextForRecipient: new Uint8Array(CMS), ...extra });
const fail =
  (err: object): Step =>
  async () => {
    throw Object.assign(new Error((err as { message?: string }).message ?? ''), err);
  };

function proxyWith(client: KMSClient, deadlineMs = 2_000, more: { attemptMs?: number } = {}) {
  const outcomes: string[] = [];
  const log = captureLogger('debug');
  const proxy = new KmsProxy({
    client,
    allowedKeyArns: [ARN],
    deadlineMs,
    ...more,
    maxConcurrent: 4,
    logger: log.logger,
    onCall: (o, s) => outcomes.push(`${o}${s >= 0 && s < 60 ? '' : ' (bad duration)'}`),
  });
  return { proxy, outcomes, log };
}

const params = (over: object = {}) => ({
  kmsKeyArn: ARN,
  ciphertextBlob: BLOB.toString('base64'),
  attestationDocument: DOC.toString('base64'),
  ...over,
});

describe('KMS proxy (scripted KMS client)', () => {
  it('asks KMS for exactly an attested RSAES_OAEP_SHA_256 Decrypt, and relays only the recipient ciphertext', async () => {
    const kms = scripted(answer());
    const { proxy, outcomes } = proxyWith(kms.client);
    const res = await proxy.decrypt(params());
    expect(res).toEqual({ ciphertextForRecipient: CMS.toString('base64'), keyId: ARN });
    expect(kms.calls).toHaveLength(1);
    const { command, options } = kms.calls[0] as (typeof kms.calls)[number];
    expect(command).toBeInstanceOf(DecryptCommand);
    expect(command.input).toEqual({
      KeyId: ARN,
      CiphertextBlob: BLOB,
      EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
      Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: DOC },
    });
    expect(options.abortSignal).toBeInstanceOf(AbortSignal);
    expect(options.abortSignal?.aborted).toBe(false);
    expect(outcomes).toEqual(['ok']);
  });

  it('reports the key ARN KMS names, or the requested one when KMS names none', async () => {
    const other = scripted(answer({ KeyId: `${ARN}-as-kms-says` }));
    expect((await proxyWith(other.client).proxy.decrypt(params())).keyId).toBe(`${ARN}-as-kms-says`);
    const none = scripted(answer({ KeyId: undefined }));
    expect((await proxyWith(none.client).proxy.decrypt(params())).keyId).toBe(ARN);
  });

  it('refuses a key ARN it was not configured with, and an empty document, without asking KMS', async () => {
    const kms = scripted(answer());
    const { proxy, outcomes } = proxyWith(kms.client);
    const notAllowed = await rejection(proxy.decrypt(params({ kmsKeyArn: OTHER })));
    expect([notAllowed.code, notAllowed.message]).toEqual([
      'KMS_KEY_NOT_ALLOWED',
      `KMS key ${OTHER} is not in this parent's allowedKeyArns`,
    ]);
    const noDoc = await rejection(proxy.decrypt(params({ attestationDocument: '' })));
    expect([noDoc.code, noDoc.message]).toEqual([
      'INVALID_PARAMS',
      'kms.decrypt needs an attestation document; the proxy never asks KMS for plaintext',
    ]);
    expect([kms.calls.length, outcomes]).toEqual([0, []]);
  });

  it('refuses an answer carrying Plaintext (and wipes it), but relays one whose Plaintext is empty', async () => {
    const plaintext = new Uint8Array(32).fill(7);
    const kms = scripted(answer({ Plaintext: plaintext }));
    const { proxy, outcomes, log } = proxyWith(kms.client);
    const err = await rejection(proxy.decrypt(params()));
    expect([err.code, err.retryable, err.message]).toEqual([
      'INTERNAL',
      false,
      'KMS returned plaintext to an attested request; refusing to relay it',
    ]);
    expect(plaintext.every((b) => b === 0)).toBe(true);
    expect([kms.calls.length, outcomes]).toEqual([1, ['plaintext']]);
    expect(
      log
        .lines()
        .filter((l) => l.level === 40)
        .map((l) => [l.code, l.outcome, l.msg]),
    ).toEqual([['INTERNAL', 'plaintext', 'KMS decrypt refused: KMS returned plaintext to an attested request; refusing to relay it']]);
    const empty = scripted(answer({ Plaintext: new Uint8Array(0) }));
    expect((await proxyWith(empty.client).proxy.decrypt(params())).ciphertextForRecipient).toBe(CMS.toString('base64'));
  });

  it('refuses an answer without a recipient ciphertext, missing or empty', async () => {
    for (const CiphertextForRecipient of [undefined, new Uint8Array(0)]) {
      const kms = scripted(answer({ CiphertextForRecipient }));
      const { proxy, outcomes } = proxyWith(kms.client);
      const err = await rejection(proxy.decrypt(params()));
      expect([err.code, err.message, outcomes, kms.calls.length]).toEqual([
        'KMS_UNAVAILABLE',
        'KMS returned no CiphertextForRecipient',
        ['no_recipient_ciphertext'],
        1,
      ]);
    }
  });

  it('retries what is retryable, logging each retry, and relays the answer that follows', async () => {
    const kms = scripted(
      fail({ name: 'ThrottlingException', message: 'Rate exceeded' }),
      fail({ name: 'KMSInternalException', $fault: 'server' }),
      answer(),
    );
    const { proxy, outcomes, log } = proxyWith(kms.client);
    expect((await proxy.decrypt(params())).keyId).toBe(ARN);
    expect([kms.calls.length, outcomes]).toEqual([3, ['ok']]);
    const retries = log.lines().filter((l) => l.msg === 'KMS call failed; retrying');
    expect(retries.map((l) => [l.level, l.attempt, l.code])).toEqual([
      [40, 1, 'KMS_THROTTLED'],
      [40, 2, 'KMS_UNAVAILABLE'],
    ]);
    // Each retry waited its backoff: 25-50 ms after the first failure, 50-100 ms after the second.
    const within = (delay: unknown, attempt: number) =>
      (delay as number) >= backoffDelay(attempt, KMS_RETRY_BACKOFF, () => 0) &&
      (delay as number) <= backoffDelay(attempt, KMS_RETRY_BACKOFF, () => 1);
    expect([within(retries[0]?.delayMs, 0), within(retries[1]?.delayMs, 1)]).toEqual([true, true]);
    expect([backoffDelay(0, KMS_RETRY_BACKOFF, () => 0), backoffDelay(1, KMS_RETRY_BACKOFF, () => 1)]).toEqual([25, 100]);
  });

  it("logs one line per answered Decrypt, and its retries, with the caller's request id", async () => {
    const kms = scripted(fail({ name: 'ThrottlingException', message: 'Rate exceeded' }), answer());
    const { proxy, log } = proxyWith(kms.client);
    // Passed by the RPC server from the envelope (ctx.requestId), with no async context.
    await proxy.decrypt(params(), 'req-7');
    const lines = log
      .lines()
      .map(({ level, msg, requestId, outcome, attempts, attempt }) => ({ level, msg, requestId, outcome, attempts, attempt }));
    expect(lines).toEqual([
      { level: 40, msg: 'KMS call failed; retrying', requestId: 'req-7', outcome: undefined, attempts: undefined, attempt: 1 },
      { level: 30, msg: 'KMS decrypt', requestId: 'req-7', outcome: 'ok', attempts: 2, attempt: undefined },
    ]);
    const ms = log.lines()[1]?.ms as number;
    expect(ms >= 0 && ms < 60_000).toBe(true);
  });

  it('puts the request id on its refusal line too, and none on the lines of a Decrypt that came without one', async () => {
    const kms = scripted(
      fail({ name: 'AccessDeniedException', message: 'denied' }),
      fail({ name: 'AccessDeniedException', message: 'denied' }),
    );
    const { proxy, log } = proxyWith(kms.client);
    await expect(proxy.decrypt(params(), 'req-8')).rejects.toMatchObject({ code: 'KMS_ACCESS_DENIED' });
    await expect(proxy.decrypt(params())).rejects.toMatchObject({ code: 'KMS_ACCESS_DENIED' });
    expect(log.lines().map(({ msg, requestId }) => ({ refused: String(msg).startsWith('KMS decrypt refused'), requestId }))).toEqual([
      { refused: true, requestId: 'req-8' },
      { refused: true, requestId: undefined },
    ]);
    expect(log.lines()[1]).not.toHaveProperty('requestId');
  });

  it('does not retry what is not retryable', async () => {
    const kms = scripted(fail({ name: 'AccessDeniedException', message: 'denied' }));
    const { proxy, outcomes } = proxyWith(kms.client);
    const err = await rejection(proxy.decrypt(params()));
    expect([err.code, kms.calls.length, outcomes]).toEqual(['KMS_ACCESS_DENIED', 1, ['KMS_ACCESS_DENIED']]);
  });

  it("keeps the KMS SDK's error as the cause and logs it, but sends the enclave only code and message", async () => {
    const kms = scripted(
      fail({ name: 'ThrottlingException', message: 'Rate exceeded' }),
      fail({ name: 'AccessDeniedException', message: 'User is not authorized\nrequest id 1234' }),
    );
    const { proxy, log } = proxyWith(kms.client);
    const err = await rejection(proxy.decrypt(params()));
    expect(kms.calls.length).toBe(2);
    expect([(err.cause as Error).name, (err.cause as Error).message]).toEqual([
      'AccessDeniedException',
      'User is not authorized\nrequest id 1234',
    ]);
    const [retry, refused] = log.lines().filter((l) => l.err !== undefined) as Array<{
      msg: string;
      err: { message: string; stack: string; code: string };
    }>;
    expect([retry?.msg, retry?.err.code, retry?.err.message]).toEqual([
      'KMS call failed; retrying',
      'KMS_THROTTLED',
      'KMS ThrottlingException: Rate exceeded: Rate exceeded',
    ]);
    expect(refused?.msg).toMatch(/^KMS decrypt refused: /);
    expect(refused?.err.message).toContain('User is not authorized\nrequest id 1234'); // the whole SDK message, second line included
    expect(refused?.err.stack).toContain('caused by: AccessDeniedException: User is not authorized');
    // The wire form: no cause, and nothing of the SDK error beyond the mapped message's first line.
    const wire = JSON.stringify(toRpcError(err));
    expect(JSON.parse(wire)).toEqual({
      code: -32010,
      message: err.message,
      data: { code: 'KMS_ACCESS_DENIED', retryable: false, reason: 'KMS_ACCESS_DENIED' },
    });
    expect(wire).not.toContain('request id 1234');
  });

  it('keeps the abort as the cause of a TIMEOUT', async () => {
    const kms = scripted(fail({ name: 'AbortError', message: 'This operation was aborted' }));
    const err = await rejection(proxyWith(kms.client).proxy.decrypt(params()));
    expect([err.code, (err.cause as Error)?.name]).toEqual(['TIMEOUT', 'AbortError']);
  });

  it('gives TIMEOUT, without retrying, when the call is aborted at the deadline', async () => {
    const kms = scripted(
      (_c, { abortSignal }) =>
        new Promise((_resolve, reject) => {
          abortSignal?.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' })));
        }),
    );
    const { proxy, outcomes } = proxyWith(kms.client, 150);
    const err = await rejection(proxy.decrypt(params()));
    expect([err.code, err.retryable, err.message]).toEqual(['TIMEOUT', true, 'KMS did not answer within 150 ms']);
    expect([kms.calls.length, outcomes]).toEqual([1, ['TIMEOUT']]);
  });

  it('stops retrying when the backoff would end past the deadline, with the reason it has', async () => {
    // KMS answers "throttled" after at least 20 ms; the first backoff is 25-50 ms: 20 + 25 >= 40, always past
    // the 40 ms deadline, so the proxy gives up at once instead of starting a retry it cannot finish.
    const slow: Step = async () => {
      await new Promise((r) => setTimeout(r, 20));
      throw Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
    };
    const kms = scripted(slow);
    const { proxy, outcomes } = proxyWith(kms.client, 40);
    const err = await rejection(proxy.decrypt(params()));
    expect([err.code, err.retryable, err.message]).toEqual(['KMS_THROTTLED', true, 'KMS ThrottlingException: Rate exceeded']);
    expect([kms.calls.length, outcomes]).toEqual([1, ['KMS_THROTTLED']]);
  });

  it('passes its own refusals on as they are, without retrying', async () => {
    const own = new KeystoreError('KMS_UNAVAILABLE', 'from a nested proxy');
    const kms = scripted(async () => {
      throw own;
    });
    const err = await rejection(proxyWith(kms.client).proxy.decrypt(params()));
    expect(err).toBe(own);
    expect(kms.calls.length).toBe(1);
  });
});

describe('KMS proxy edge cases', () => {
  afterEach(() => {
    jest.useRealTimers();
    jest.restoreAllMocks();
  });

  it('works without an onCall hook, on success and on failure', async () => {
    const proxy = new KmsProxy({
      client: scripted(answer()).client,
      allowedKeyArns: [ARN],
      deadlineMs: 1000,
      maxConcurrent: 1,
      logger: silentLogger(),
    });
    expect((await proxy.decrypt(params())).keyId).toBe(ARN);
    const failing = new KmsProxy({
      client: scripted(fail({ name: 'AccessDeniedException' })).client,
      allowedKeyArns: [ARN],
      deadlineMs: 1000,
      maxConcurrent: 1,
      logger: silentLogger(),
    });
    expect((await rejection(failing.decrypt(params()))).code).toBe('KMS_ACCESS_DENIED');
  });

  it('copes with a client that throws nothing at all (an unknown, retryable failure)', async () => {
    const kms = scripted(async () => {
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- the case under test
      throw undefined;
    }, answer());
    const { proxy, log } = proxyWith(kms.client);
    expect((await proxy.decrypt(params())).keyId).toBe(ARN);
    expect(kms.calls.length).toBe(2);
    expect(
      log
        .lines()
        .filter((l) => l.msg === 'KMS call failed; retrying')
        .map((l) => l.code),
    ).toEqual(['KMS_UNAVAILABLE']);
    expect(mapKmsError(undefined).message).toBe('KMS could not be reached: Error');
  });

  it('does not retry an aborted call even with time left', async () => {
    const kms = scripted(fail({ name: 'AbortError', message: 'This operation was aborted' }), answer());
    const { proxy, outcomes } = proxyWith(kms.client, 5_000);
    const err = await rejection(proxy.decrypt(params()));
    expect([err.code, err.message, kms.calls.length, outcomes]).toEqual(['TIMEOUT', 'KMS did not answer within 5000 ms', 1, ['TIMEOUT']]);
  });

  it('treats a 4xx it does not know as final: one call, KMS_REJECTED with the name and message KMS gave', async () => {
    const kms = scripted(
      fail({ name: 'LimitExceededException', message: 'quota', $fault: 'client', $metadata: { httpStatusCode: 400 } }),
      answer(),
    );
    const { proxy, outcomes } = proxyWith(kms.client, 5_000);
    const err = await rejection(proxy.decrypt(params()));
    expect([err.code, err.retryable, err.message, kms.calls.length, outcomes]).toEqual([
      'KMS_REJECTED',
      false,
      'KMS LimitExceededException: quota',
      1,
      ['KMS_REJECTED'],
    ]);
  });

  it.each([
    [8_000, undefined, 8_000],
    [8_000, 10_000, 8_000],
    [8_000, 8_000, 7_500],
    [8_000, 1_000, 800],
    [8_000, 2_500, 2_000],
    [8_000, 2_501, 2_001],
    [8_000, 1, 1],
  ])('its budget with its own deadline %i ms and the enclave waiting %s ms is %i ms', (own, enclave, budget) => {
    expect(kmsBudgetMs(own, enclave)).toBe(budget);
  });

  it('ends within the budget the enclave gives it, not its own longer deadline', async () => {
    const kms = scripted(
      (_c, { abortSignal }) =>
        new Promise((_resolve, reject) => {
          abortSignal?.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' })));
        }),
    );
    const { proxy } = proxyWith(kms.client, 60_000);
    const err = await rejection(proxy.decrypt(params({ deadlineMs: 250 })));
    expect([err.code, err.message]).toEqual(['TIMEOUT', 'KMS did not answer within 200 ms']);
  });

  // A fake clock and a fixed jitter (Math.random = 0: backoffs of exactly 25 ms, then 50 ms).
  const fakeClock = () => {
    jest.useFakeTimers({ now: 1_000_000, doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    jest.spyOn(Math, 'random').mockReturnValue(0);
  };

  // A throttling answer at once, then a success: a retry needs the 25 ms backoff plus KMS_MIN_ATTEMPT_MS.
  it.each([
    [KMS_MIN_ATTEMPT_MS + 24, 'KMS_THROTTLED', 1, ['KMS_THROTTLED']],
    [KMS_MIN_ATTEMPT_MS + 25, 'relayed', 2, ['ok']],
  ])(
    'with a %i ms deadline, retries only if the backoff and a whole attempt fit before it (%s)',
    async (deadlineMs, result, calls, outcomes) => {
      fakeClock();
      const kms = scripted(fail({ name: 'ThrottlingException', message: 'Rate exceeded' }), answer());
      const run = proxyWith(kms.client, deadlineMs);
      const settled = run.proxy.decrypt(params()).then(
        () => 'relayed',
        (e: KeystoreError) => e.code,
      );
      await jest.advanceTimersByTimeAsync(1_000);
      expect([await settled, kms.calls.length, run.outcomes]).toEqual([result, calls, outcomes]);
    },
  );

  it('budgets a retry as long as the failed attempt took, when that is longer than the minimum', async () => {
    fakeClock();
    // Each throttling answer takes 300 ms: after the first, a retry needs 25 + 300 ms.
    const slow: Step = async () => {
      await new Promise((r) => setTimeout(r, 300));
      throw Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
    };
    const tight = scripted(slow, answer());
    const short = proxyWith(tight.client, 624);
    const refused = short.proxy.decrypt(params()).catch((e: KeystoreError) => e.code);
    await jest.advanceTimersByTimeAsync(1_000);
    expect([await refused, tight.calls.length]).toEqual(['KMS_THROTTLED', 1]);

    const roomy = scripted(slow, answer());
    const enough = proxyWith(roomy.client, 625);
    const relayed = enough.proxy.decrypt(params()).then((r) => r.keyId);
    await jest.advanceTimersByTimeAsync(1_000);
    expect([await relayed, roomy.calls.length, enough.outcomes]).toEqual([ARN, 2, ['ok']]);
  });

  it('answers with the failure it was retrying, not TIMEOUT, when the deadline cuts the retry short', async () => {
    fakeClock();
    const aborted = fail({ name: 'AbortError', message: 'This operation was aborted' });
    const kms = scripted(fail({ name: 'ThrottlingException', message: 'Rate exceeded' }), aborted);
    const { proxy, outcomes } = proxyWith(kms.client, 1_000);
    const result = proxy.decrypt(params()).then(
      () => 'relayed',
      (e: KeystoreError) => `${e.code} ${e.retryable}: ${e.message}`,
    );
    await jest.advanceTimersByTimeAsync(1_000);
    expect([await result, kms.calls.length, outcomes]).toEqual([
      'KMS_THROTTLED true: KMS ThrottlingException: Rate exceeded',
      2,
      ['KMS_THROTTLED'],
    ]);
  });

  it('does not ask again when its backoff timer fired late, past the deadline, and answers with the failure it had', async () => {
    fakeClock();
    const kms = scripted(fail({ name: 'ThrottlingException', message: 'Rate exceeded' }), answer());
    const { proxy, outcomes } = proxyWith(kms.client, 200);
    const result = proxy.decrypt(params()).then(
      () => 'relayed',
      (e: KeystoreError) => `${e.code}: ${e.message}`,
    );
    await jest.advanceTimersByTimeAsync(0); // the first answer arrives; the 25 ms backoff starts
    expect(kms.calls.length).toBe(1);
    jest.advanceTimersByTime(200); // the backoff's timer fires only when the clock is already at the deadline
    expect([await result, kms.calls.length, outcomes]).toEqual([
      'KMS_THROTTLED: KMS ThrottlingException: Rate exceeded',
      1,
      ['KMS_THROTTLED'],
    ]);
  });
});

describe('KMS proxy over RPC (in-process, scripted KMS client)', () => {
  it('serves kms.decrypt on its address, as "kms-proxy", until closed', async () => {
    const runDir = tempRunDir('nks-proxy-mut-');
    const transport = new SimulatedVsockTransport(runDir);
    const kms = scripted(answer());
    const log = captureLogger('debug');
    const proxy = new KmsProxy({ client: kms.client, allowedKeyArns: [ARN], deadlineMs: 2000, maxConcurrent: 4, logger: log.logger });
    const client = new RpcClient({ name: 'test-enclave', transport, address: 'vsock://3:8123', logger: silentLogger() });
    try {
      await proxy.listen(transport, 'vsock://3:8123');
      await client.waitConnected(5000);
      expect(await client.call('kms.decrypt', params())).toEqual({ ciphertextForRecipient: CMS.toString('base64'), keyId: ARN });
      const refused = await rejection(client.call('kms.decrypt', params({ kmsKeyArn: OTHER })));
      expect(refused.code).toBe('KMS_KEY_NOT_ALLOWED');
      expect(
        log
          .lines()
          .filter((l) => l.msg === 'kms-proxy listening')
          .map((l) => l.address),
      ).toEqual(['vsock://3:8123']);
      await client.close();
      await proxy.close(100);
      const connects = await new Promise<boolean>((resolve) => {
        const socket = net.connect(simulatedSocketPath(runDir, 'vsock://3:8123'));
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
      expect(connects).toBe(false);
    } finally {
      await client.close();
      await proxy.close(100);
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  });
});

describe('KMS error mapping, name by name', () => {
  it.each<[object, string, string]>([
    [
      { name: 'AccessDeniedException', message: 'User is not authorized\nsecond line' },
      'KMS_ACCESS_DENIED',
      'KMS AccessDeniedException: User is not authorized (is this enclave image approved in the key policy?)',
    ],
    [{ name: 'ThrottlingException', message: 'Rate exceeded' }, 'KMS_THROTTLED', 'KMS ThrottlingException: Rate exceeded'],
    [{ name: 'ThrottlingException' }, 'KMS_THROTTLED', 'KMS ThrottlingException: rate exceeded'],
    [{ name: 'InvalidCiphertextException', message: 'bad' }, 'KMS_INVALID_CIPHERTEXT', 'KMS InvalidCiphertextException: bad'],
    [
      { name: 'IncorrectKeyException' },
      'KMS_INVALID_CIPHERTEXT',
      'KMS IncorrectKeyException: the wrapped key does not decrypt under this KMS key',
    ],
    [{ name: 'NotFoundException' }, 'KMS_ACCESS_DENIED', 'KMS NotFoundException: the KMS key cannot be used'],
    [{ name: 'DisabledException', message: 'disabled' }, 'KMS_ACCESS_DENIED', 'KMS DisabledException: disabled'],
    [{ name: 'KMSInvalidStateException' }, 'KMS_ACCESS_DENIED', 'KMS KMSInvalidStateException: the KMS key cannot be used'],
    [{ name: 'InvalidKeyUsageException' }, 'KMS_ACCESS_DENIED', 'KMS InvalidKeyUsageException: the KMS key cannot be used'],
    [
      { name: 'ValidationException', message: 'The Attestation document is not valid' },
      'ATTESTATION_FAILED',
      'KMS ValidationException: The Attestation document is not valid',
    ],
    [
      { name: 'ValidationException', message: '1 validation error detected' },
      'KMS_REJECTED',
      'KMS ValidationException: 1 validation error detected',
    ],
    [{ name: 'ValidationException' }, 'KMS_REJECTED', 'KMS ValidationException: the request is not valid'],
    [{ name: 'SomethingNew', $fault: 'server' }, 'KMS_UNAVAILABLE', 'KMS SomethingNew: service error'],
    [{ name: 'SomethingNew', $fault: 'server', message: 'oops' }, 'KMS_UNAVAILABLE', 'KMS SomethingNew: oops'],
    [{ name: 'Unknown', $metadata: { httpStatusCode: 500 } }, 'KMS_UNAVAILABLE', 'KMS Unknown: service error'],
    [{ name: 'Unknown', $metadata: { httpStatusCode: 499 } }, 'KMS_REJECTED', 'KMS Unknown: refused the request (HTTP 499)'],
    [{ name: 'Unknown', $metadata: { httpStatusCode: 400 } }, 'KMS_REJECTED', 'KMS Unknown: refused the request (HTTP 400)'],
    [
      { name: 'LimitExceededException', message: 'too many grants', $metadata: { httpStatusCode: 400 } },
      'KMS_REJECTED',
      'KMS LimitExceededException: too many grants',
    ],
    [{ name: 'Unknown', $metadata: { httpStatusCode: 399 } }, 'KMS_UNAVAILABLE', 'KMS could not be reached: Unknown'],
    [{ name: 'Unknown', $fault: 'client' }, 'KMS_REJECTED', 'KMS Unknown: refused the request (HTTP 4xx)'],
    [
      { name: 'Error', message: 'connect ECONNREFUSED 127.0.0.1:443' },
      'KMS_UNAVAILABLE',
      'KMS could not be reached: Error: connect ECONNREFUSED 127.0.0.1:443',
    ],
    [{ name: 'KMSInternalException' }, 'KMS_UNAVAILABLE', 'KMS KMSInternalException: service error'],
    [{ name: 'DependencyTimeoutException' }, 'KMS_UNAVAILABLE', 'KMS DependencyTimeoutException: service error'],
    [{ name: 'KeyUnavailableException' }, 'KMS_UNAVAILABLE', 'KMS KeyUnavailableException: service error'],
    [{ name: 'ServiceUnavailableException' }, 'KMS_UNAVAILABLE', 'KMS ServiceUnavailableException: service error'],
    [{ name: 'RequestTimeout' }, 'KMS_UNAVAILABLE', 'KMS RequestTimeout: service error'],
    [{ name: 'TimeoutError' }, 'KMS_UNAVAILABLE', 'KMS TimeoutError: service error'],
    [{}, 'KMS_UNAVAILABLE', 'KMS could not be reached: Error'],
  ])('%j', (err, reason, message) => {
    const mapped = mapKmsError(err);
    expect([mapped.code, mapped.message, mapped.cause]).toEqual([reason, message, err]);
  });

  it('maps null and undefined as unknown errors, and keeps only the first 300 characters of the first line', () => {
    expect(mapKmsError(null).message).toBe('KMS could not be reached: Error');
    expect(mapKmsError(undefined).message).toBe('KMS could not be reached: Error');
    const long = mapKmsError({ name: 'InvalidCiphertextException', message: `${'x'.repeat(400)}\nmore` });
    expect(long.message).toBe(`KMS InvalidCiphertextException: ${'x'.repeat(300)}`);
  });
});

/** A step that answers nothing until its abort signal fires (a KMS that says nothing). */
const silent: Step = (_command, options) =>
  new Promise((_resolve, reject) => {
    options.abortSignal?.addEventListener('abort', () => reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' })));
  });

describe('KMS proxy: one attempt at most attemptMs', () => {
  const withAttempt = (client: KMSClient, deadlineMs: number, attemptMs: number) => proxyWith(client, deadlineMs, { attemptMs });

  it('asks again a KMS that said nothing within attemptMs, and relays the answer that follows', async () => {
    const kms = scripted(silent, answer());
    const { proxy, outcomes, log } = withAttempt(kms.client, 5_000, 200);
    const res = await proxy.decrypt(params());
    expect(res.ciphertextForRecipient).toBe(CMS.toString('base64'));
    expect([kms.calls.length, outcomes]).toEqual([2, ['ok']]);
    expect(
      log
        .lines()
        .filter((l) => l.msg === 'KMS call failed; retrying')
        .map((l) => [l.code, l.attemptMs, l.attempt]),
    ).toEqual([['TIMEOUT', 200, 1]]);
  });

  it('gives the last attempt all the time left, and TIMEOUT when KMS stays silent', async () => {
    const kms = scripted(silent);
    const { proxy, outcomes } = withAttempt(kms.client, 700, 300);
    const err = await rejection(proxy.decrypt(params()));
    expect([err.code, err.message, outcomes]).toEqual(['TIMEOUT', 'KMS did not answer within 700 ms', ['TIMEOUT']]);
    // 300 ms twice; then too little is left for a third (backoff plus 300 ms).
    expect(kms.calls.length).toBe(2);
  });

  it('answers the failure it was retrying when a silent attempt ends the budget', async () => {
    const kms = scripted(fail({ name: 'ThrottlingException', message: 'Rate exceeded' }), silent);
    const { proxy } = withAttempt(kms.client, 600, 5_000);
    const err = await rejection(proxy.decrypt(params()));
    expect([err.code, kms.calls.length]).toEqual(['KMS_THROTTLED', 2]);
  });

  it('defaults attemptMs to the table (a silent KMS with a long budget is asked more than once)', async () => {
    const kms = scripted(silent, answer());
    const { proxy } = proxyWith(kms.client, 30_000);
    const started = Date.now();
    await proxy.decrypt(params());
    expect(kms.calls.length).toBe(2);
    expect(Date.now() - started).toBeLessThan(29_000);
  }, 40_000);
});

describe('KMS proxy: consecutive failures', () => {
  it('counts decrypts KMS did not answer, reports not ready from KMS_UNREADY_AFTER, and resets on any answer', async () => {
    const streaks: number[] = [];
    const steps: Step[] = [];
    const kms = {
      client: { send: (c: DecryptCommand, o: { abortSignal?: AbortSignal }) => (steps.shift() as Step)(c, o) } as unknown as KMSClient,
    };
    const proxy = new KmsProxy({
      client: kms.client,
      allowedKeyArns: [ARN],
      deadlineMs: 50,
      maxConcurrent: 4,
      logger: silentLogger(),
      onFailureStreak: (n) => streaks.push(n),
    });
    const outage: Step[] = [
      fail({ name: 'ThrottlingException', message: 'x' }),
      fail({ name: 'KMSInternalException', $fault: 'server', $metadata: { httpStatusCode: 500 } }),
      fail({ name: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' }),
    ];
    expect([proxy.consecutiveFailures, proxy.kmsReady]).toEqual([0, true]);
    for (let i = 0; i < KMS_UNREADY_AFTER; i++) {
      expect(proxy.kmsReady).toBe(true);
      steps.push(...Array(20).fill(outage[i % outage.length]));
      await rejection(proxy.decrypt(params()));
      steps.length = 0;
    }
    expect([proxy.consecutiveFailures, proxy.kmsReady]).toEqual([KMS_UNREADY_AFTER, false]);
    // Refusals the proxy makes itself never reach KMS: they change nothing.
    await rejection(proxy.decrypt(params({ kmsKeyArn: OTHER })));
    expect(proxy.consecutiveFailures).toBe(KMS_UNREADY_AFTER);
    // A refusal is an answer: KMS is reachable.
    steps.push(fail({ name: 'AccessDeniedException', message: 'no', $fault: 'client' }));
    await rejection(proxy.decrypt(params()));
    expect([proxy.consecutiveFailures, proxy.kmsReady]).toEqual([0, true]);
    steps.push(...Array(20).fill(silent));
    await rejection(proxy.decrypt(params()));
    steps.length = 0;
    expect(proxy.consecutiveFailures).toBe(1);
    steps.push(answer());
    await proxy.decrypt(params());
    expect(proxy.consecutiveFailures).toBe(0);
    // A success with none to reset reports nothing.
    steps.push(answer());
    await proxy.decrypt(params());
    expect(streaks).toEqual([1, 2, 3, 0, 1, 0]);
  });

  it('counts an answer without CiphertextForRecipient as a failure, and plaintext as an answer', async () => {
    const steps: Step[] = [answer({ CiphertextForRecipient: undefined }), answer({ Plaintext: new Uint8Array([1]) })];
    const client = { send: (c: DecryptCommand, o: { abortSignal?: AbortSignal }) => (steps.shift() as Step)(c, o) } as unknown as KMSClient;
    const proxy = new KmsProxy({ client, allowedKeyArns: [ARN], deadlineMs: 1000, maxConcurrent: 4, logger: silentLogger() });
    await rejection(proxy.decrypt(params()));
    expect(proxy.consecutiveFailures).toBe(1);
    await rejection(proxy.decrypt(params()));
    expect(proxy.consecutiveFailures).toBe(0);
  });
});

describe('KMS proxy: the real cause in the log', () => {
  it('logs the network error code of an unreachable KMS (the real SDK, a closed port)', async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    const client = new RealKMSClient({
      endpoint: `http://127.0.0.1:${port}`,
      region: 'us-east-1',
      maxAttempts: 1,
      credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
    });
    try {
      const { proxy, log } = proxyWith(client, 3_000);
      const err = await rejection(proxy.decrypt(params()));
      expect(err.code).toBe('KMS_UNAVAILABLE');
      expect(err.message).toContain('ECONNREFUSED');
      const final = log.lines().find((l) => String(l.msg).startsWith('KMS decrypt refused'));
      expect(final).toMatchObject({ code: 'KMS_UNAVAILABLE', consecutiveFailures: 1, kms: { name: 'Error', networkCode: 'ECONNREFUSED' } });
      expect(final?.ms).toBeGreaterThanOrEqual(0);
      expect(final?.ms).toBeLessThan(60_000);
      const retry = log.lines().find((l) => l.msg === 'KMS call failed; retrying');
      expect(retry).toMatchObject({ kms: { networkCode: 'ECONNREFUSED' } });
    } finally {
      client.destroy();
    }
  });

  it.each([
    [
      { name: 'ThrottlingException', $metadata: { httpStatusCode: 400, requestId: 'r-1' } },
      { name: 'ThrottlingException', httpStatus: 400, requestId: 'r-1' },
    ],
    [
      { name: 'TimeoutError', code: 'ECONNRESET', $metadata: {} },
      { name: 'TimeoutError', networkCode: 'ECONNRESET' },
    ],
    [
      { name: 'Error', cause: { code: 'ETIMEDOUT' } },
      { name: 'Error', networkCode: 'ETIMEDOUT' },
    ],
    [{ name: 'X', code: 'NotANetworkCode' }, { name: 'X' }],
    [
      { name: 'Error', message: 'AWS SDK error wrapper for Error: connect ECONNREFUSED 127.0.0.1:1' },
      { name: 'Error', networkCode: 'ECONNREFUSED' },
    ],
    [
      { name: 'Error', cause: { cause: { cause: { code: 'EPIPE' } } } },
      { name: 'Error', networkCode: 'EPIPE' },
    ],
    [{ name: 'Error', cause: { cause: { cause: { cause: { code: 'EPIPE' } } } } }, { name: 'Error' }],
    [{ name: 'Error', message: 'not a code: ECONN' }, { name: 'Error' }],
    [{ $metadata: { httpStatusCode: 0 } }, { name: 'Error', httpStatus: 0 }],
    [null, { name: 'Error' }],
    // Only strings are codes and messages: an array (whose text would match) is neither.
    [{ name: 'Error', code: ['ECONNREFUSED'] }, { name: 'Error' }],
    [{ name: 'Error', message: ['connect ECONNRESET'] }, { name: 'Error' }],
  ])('kmsErrorDetail(%j)', (err, detail) => {
    expect(kmsErrorDetail(err)).toEqual(detail);
  });
});
