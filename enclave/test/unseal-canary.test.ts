/**
 * The unseal canary (identity/canary.ts) in-process, on a fake clock: what makes it "failing" and "ok", and the
 * rate limit that keeps a parent (which can make any unseal fail) from making the enclave spend KMS calls
 * without bound.
 */
import { KeystoreError } from '@nks/shared/errors';
import { DEADLINES } from '@nks/shared/deadlines';
import { ENCLAVE_CONFIG_DEFAULTS } from '../src/config';
import { UnsealCanary, type UnsealState } from '../src/identity/canary';

const denied = () => new KeystoreError('KMS_ACCESS_DENIED', 'KMS AccessDeniedException: not approved');
const throttled = () => new KeystoreError('KMS_THROTTLED', 'KMS ThrottlingException: rate exceeded');

function setup(result: () => KeystoreError | null = () => denied(), minIntervalMs = 30_000) {
  let now = 1_000_000;
  const changes: Array<[UnsealState, string | null]> = [];
  let probes = 0;
  const canary = new UnsealCanary({
    minIntervalMs,
    now: () => now,
    onChange: (state, code) => changes.push([state, code]),
    probe: async () => {
      probes += 1;
      const err = result();
      if (err) throw err;
    },
  });
  return {
    canary,
    changes,
    probes: () => probes,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe('unseal canary', () => {
  afterEach(() => jest.useRealTimers());

  it('starts unknown, and a success of any unseal makes it ok without a canary', () => {
    const s = setup();
    expect([s.canary.state, s.canary.code]).toEqual(['unknown', null]);
    s.canary.succeeded();
    expect([s.canary.state, s.canary.code, s.probes(), s.changes]).toEqual(['ok', null, 0, [['ok', null]]]);
    s.canary.succeeded();
    expect(s.changes).toHaveLength(1);
  });

  it('answers a refusal with a canary, and reports failing with the code only', async () => {
    const s = setup();
    s.canary.failed(denied());
    await s.canary.trigger();
    expect([s.canary.state, s.canary.code, s.probes(), s.canary.runs]).toEqual(['failing', 'KMS_ACCESS_DENIED', 1, 1]);
    s.canary.close();
  });

  it('changes nothing on a retryable fault (throttled, unreachable, timeout), and runs no canary for one', async () => {
    const s = setup();
    s.canary.succeeded();
    for (const code of ['KMS_THROTTLED', 'KMS_UNAVAILABLE', 'TIMEOUT', 'UNAVAILABLE'] as const)
      s.canary.failed(new KeystoreError(code, 'x'));
    expect([s.canary.state, s.probes()]).toEqual(['ok', 0]);
    // Nor for an answer that does not open (the parent's forgery, failed-opens.ts): no Decrypt for it to spend.
    s.canary.failed(new KeystoreError('KEY_INTEGRITY', 'the key could not be unsealed'));
    expect([s.canary.state, s.probes()]).toEqual(['ok', 0]);
    // A canary that meets throttling leaves the state as it was.
    const t = setup(() => throttled());
    t.canary.succeeded();
    await t.canary.trigger();
    expect([t.canary.state, t.probes()]).toEqual(['ok', 1]);
  });

  it('runs at most one canary per minIntervalMs, however many refusals come', async () => {
    const s = setup(() => denied(), 30_000);
    for (let i = 0; i < 1000; i++) s.canary.failed(denied());
    await s.canary.trigger();
    expect(s.probes()).toBe(1);
    s.advance(29_999);
    for (let i = 0; i < 1000; i++) s.canary.failed(denied());
    await s.canary.trigger();
    expect(s.probes()).toBe(1);
    s.advance(1);
    await s.canary.trigger();
    expect(s.probes()).toBe(2);
    s.canary.close();
  });

  it('shares a running canary with whoever asks meanwhile', async () => {
    let release: () => void = () => undefined;
    let probes = 0;
    const canary = new UnsealCanary({
      minIntervalMs: 1,
      probe: () => {
        probes += 1;
        return new Promise<void>((r) => (release = r));
      },
    });
    const a = canary.trigger();
    const b = canary.trigger();
    release();
    await Promise.all([a, b]);
    expect([probes, canary.state]).toEqual([1, 'ok']);
  });

  it('while failing, runs a canary every minIntervalMs and turns ok when KMS approves again', async () => {
    jest.useFakeTimers();
    let approved = false;
    const s = setup(() => (approved ? null : denied()), 5_000);
    await s.canary.trigger();
    expect(s.canary.state).toBe('failing');
    s.advance(5_000);
    await jest.advanceTimersByTimeAsync(5_000);
    expect([s.probes(), s.canary.state]).toEqual([2, 'failing']);
    approved = true;
    s.advance(5_000);
    await jest.advanceTimersByTimeAsync(5_000);
    expect([s.probes(), s.canary.state, s.canary.code]).toEqual([3, 'ok', null]);
    // Ok: no more canaries.
    s.advance(60_000);
    await jest.advanceTimersByTimeAsync(60_000);
    expect(s.probes()).toBe(3);
    expect(s.changes).toEqual([
      ['failing', 'KMS_ACCESS_DENIED'],
      ['ok', null],
    ]);
  });

  it('keeps a canary due while failing when its timer fires before the clock says minIntervalMs has passed', async () => {
    // Node's timers run on the loop's cached clock, so a timer can fire a few ms early by Date.now(): under load, by
    // more. A canary that finds itself too soon must schedule the next one, or "failing" would stay for good.
    jest.useFakeTimers();
    let approved = false;
    const s = setup(() => (approved ? null : denied()), 5_000);
    await s.canary.trigger();
    expect(s.canary.state).toBe('failing');
    approved = true;
    s.advance(4_990); // the clock the canary reads lags the timer by 10 ms
    await jest.advanceTimersByTimeAsync(5_000);
    expect(s.probes()).toBe(1); // too soon: no canary yet
    s.advance(60_000);
    await jest.advanceTimersByTimeAsync(60_000);
    expect([s.probes(), s.canary.state]).toEqual([2, 'ok']);
  });

  it('keeps one timer, never shorter than needed nor longer than minIntervalMs, whatever its clock does', async () => {
    jest.useFakeTimers();
    let reads = 0;
    let now = 1_000_000_000_000;
    const canary = new UnsealCanary({
      minIntervalMs: 5_000,
      now: () => {
        reads += 1;
        return now;
      },
      probe: () => Promise.reject(denied()),
    });
    await canary.trigger();
    expect(canary.state).toBe('failing');
    // Refusals while failing add no timer.
    for (let i = 0; i < 1_000; i++) canary.failed(denied());
    expect(jest.getTimerCount()).toBe(1);
    // The clock steps back 30 days (an injected clock; the default is monotonic): the timer still fires within
    // minIntervalMs each time, not every millisecond.
    now -= 30 * 24 * 3600_000;
    reads = 0;
    await jest.advanceTimersByTimeAsync(50_000);
    expect(jest.getTimerCount()).toBe(1);
    expect(reads).toBeLessThanOrEqual(25);
    canary.close();
  });

  it('a boot failure that is a refusal makes it failing at once; a retryable one does not', () => {
    const s = setup();
    s.canary.bootFailed(throttled());
    expect(s.canary.state).toBe('unknown');
    s.canary.bootFailed(denied());
    expect([s.canary.state, s.canary.code, s.probes()]).toEqual(['failing', 'KMS_ACCESS_DENIED', 0]);
    s.canary.close();
  });

  it('runs no canary without a probe (a genesis image) or once closed', async () => {
    const none = new UnsealCanary({ minIntervalMs: 1 });
    none.failed(denied());
    await none.trigger();
    expect([none.state, none.runs]).toEqual(['unknown', 0]);
    const s = setup();
    s.canary.close();
    await s.canary.trigger();
    expect(s.probes()).toBe(0);
  });
});

it('takes its KMS deadline default from the one table (shared/src/deadlines.ts), inside the parent call', () => {
  expect(ENCLAVE_CONFIG_DEFAULTS.limits.kmsDeadlineMs).toBe(DEADLINES.enclaveKmsMs);
  expect(DEADLINES.enclaveKmsMs).toBeLessThan(DEADLINES.enclaveCallMs);
});
