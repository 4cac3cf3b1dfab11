/**
 * Found by an attacker's review (issue 22, enclave log channel): the ring is "bounded" by its line count and by clipping each message
 * to MAX_MESSAGE_CHARS and each field to MAX_FIELD_CHARS (log-channel.ts), about 1000 x (512 + 34 x 200) chars
 * = ~7 MB at most. But `clip` keeps `s.slice(0, n - 1)`: in V8 a slice of a long string is a view that keeps the
 * whole original alive. A line whose `err` message (or `reason`, or msg) is long keeps all of it in the ring.
 *
 * Who makes such lines: the wallet routes log a 500's error with `err: ke` (enclave/src/wallets/server.ts,
 * 'wallet request failed'), and a cold wallet sign's KMS error is the parent's own answer to kms.decrypt, code,
 * retryable flag and message (unseal.ts rethrows it; fromRpcError keeps the message, up to a 1 MiB frame). A
 * hostile parent answers the relayed users' cold signs with a non-retryable code and a 1 MiB one-line message:
 * each line pins ~1 MiB, the ring holds 1000 lines, so ~1 GB stays in the enclave (also the identity boot's
 * `reason`). The channel's own bound should hold whatever a line carries.
 *
 * Fixed: clipped text is a copy, and a line longer than MAX_RAW_LINE_CHARS is not parsed (enclave/src/log-channel.ts).
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import pino from 'pino';
import { KeystoreError } from '@nks/shared/errors';
import { ERROR_SERIALIZERS } from '@nks/shared/log';
import { LogChannel, MAX_FIELD_CHARS, MAX_MESSAGE_CHARS } from '../src/log-channel';

v8.setFlagsFromString('--expose_gc');
const gc = vm.runInNewContext('gc') as () => void;

const heapUsed = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};

describe('review: enclave log channel memory', () => {
  it('lines with long error messages keep no more than their clipped text in the ring', () => {
    const channel = new LogChannel();
    const logger = pino({ level: 'info', serializers: ERROR_SERIALIZERS }, channel.stream() as pino.DestinationStream);
    const lines = 60;
    const before = heapUsed();
    for (let i = 0; i < lines; i++) {
      // The parent's answer to a wallet cold sign's kms.decrypt: a refusal with a 1 MiB one-line message.
      const ke = new KeystoreError('KMS_ACCESS_DENIED', `${'x'.repeat(1 << 20)}${i}`);
      logger.error({ requestId: `w-${i}`, code: ke.code, err: ke }, 'wallet request failed');
    }
    const retained = heapUsed() - before;
    expect(channel.written).toBe(lines);
    // What the channel promises to keep for these lines, with a generous allowance for the objects themselves.
    const bound = lines * (MAX_MESSAGE_CHARS + 40 * MAX_FIELD_CHARS) * 2 + 4 * 1024 * 1024;
    expect(retained).toBeLessThan(bound); // before the fix: ~63 MB for 60 lines (~1 GB for a full ring)
  });
});
