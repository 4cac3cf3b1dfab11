/**
 * Found by an attacker's review (issue 22, enclave): the unseal canary runs in the async context of the request whose unseal failed,
 * so the canary's own KMS Decrypts (and its state-change log line) carry that caller's request id — and so do
 * the periodic canaries scheduled while unsealing is failing, every `minIntervalMs`, for as long as it fails.
 *
 * RpcClient.call sends `currentRequestId()` on every kms.decrypt (shared/src/rpc/client.ts, `sendRequestId`,
 * enabled for the enclave's KMS proxy link in enclave/src/app.ts), so what the probe sees here is exactly what
 * the parent's KMS proxy would log for the canary's Decrypt. The canary is the enclave's own work, not the
 * request's: it must run with no request id.
 *
 * Fixed: the canary runs outside any request (shared/src/log.ts `outsideRequest`).
 */
import { Writable } from 'node:stream';
import { KeystoreError } from '@nks/shared/errors';
import { createLogger, currentRequestId, withRequestId } from '@nks/shared/log';
import { UnsealCanary } from '../src/identity/canary';

const denied = () => new KeystoreError('KMS_ACCESS_DENIED', 'KMS AccessDeniedException: not approved');

describe('review: the unseal canary and the request id', () => {
  it("a canary started by one request's failed unseal, and the canaries scheduled after it, carry no request id", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    const logger = createLogger({ name: 'enclave', level: 'info', destination: sink });
    const seen: Array<string | undefined> = [];
    const canary = new UnsealCanary({
      minIntervalMs: 50,
      // As app.ts: a state change is logged with the enclave's logger.
      onChange: (state, code) =>
        state === 'failing'
          ? logger.warn({ unseal: state, code }, 'this enclave cannot unseal')
          : logger.info({ unseal: state }, 'unsealing works'),
      // The probe's Decrypt would be sent with currentRequestId() (RpcClient.call).
      probe: async () => {
        seen.push(currentRequestId());
        throw denied();
      },
    });
    try {
      // A user's cold sign (request id from the parent's envelope) fails with a KMS refusal: the observer tells the canary.
      // (A KEY_INTEGRITY answer starts no canary — enclave/test/unseal-canary.test.ts — so the refusal here is KMS's.)
      withRequestId('victim-request-1', () => canary.failed(denied()));
      // Wait for the first canary and two scheduled ones (every 50 ms while failing).
      const until = Date.now() + 5_000;
      while (seen.length < 3 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      expect(seen.length).toBeGreaterThanOrEqual(3);
      expect(seen).toEqual(seen.map(() => undefined));
      const stateLine = lines.find((l) => l.msg === 'this enclave cannot unseal');
      expect(stateLine).toBeDefined();
      expect(stateLine?.requestId).toBeUndefined();
    } finally {
      canary.close();
    }
  });
});
