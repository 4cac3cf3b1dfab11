/**
 * Can this enclave unseal? (docs/OPERATIONS.md, "Readiness"). A key policy that no longer approves the running
 * image makes every cold sign fail while everything else looks healthy; `enclave.health` reports `unseal` so the
 * parent's /readyz can say so.
 *
 * The state comes from unseals this enclave made itself: the identity's unseal at start, every unseal of a user
 * key (a success proves KMS approves this image), and a canary: an unseal of the keystore identity's own blob,
 * run after a KMS refusal and, while failing, every `minIntervalMs`. Only a refusal (an error that is not
 * retryable, from KMS: access denied, attestation refused) starts a canary, and a canary refused makes it "failing"
 * (an answer that does not open, KEY_INTEGRITY, starts none: that is the parent's doing, failed-opens.ts); throttling,
 * an unreachable KMS or a timeout change nothing (the parent's `kms` check reports those; warm keys still sign).
 *
 * Security: the canary is rate-limited (at most one every `minIntervalMs`, whatever the parent does), so a parent
 * cannot make the enclave spend KMS calls without bound; its Decrypts are counted as identity Decrypts, apart
 * from the one-per-cold-key `kmsCalls`; and health reports only the error code the parent already saw from its
 * own KMS proxy (or KEY_INTEGRITY, the one answer of every failed open of its own probe), never detail.
 */
import { asKeystoreError, type ErrorCode } from '@nks/shared/errors';
import { outsideRequest } from '@nks/shared/log';

export type UnsealState = 'unknown' | 'ok' | 'failing';

export interface UnsealCanaryOptions {
  /** One canary unseal; throws what the unseal threw. Absent (a genesis image): no canary. */
  probe?: () => Promise<void>;
  /** The least time between two canaries. */
  minIntervalMs: number;
  onChange?: (state: UnsealState, code: ErrorCode | null) => void;
  now?: () => number;
}

export class UnsealCanary {
  private current: UnsealState = 'unknown';
  private lastCode: ErrorCode | null = null;
  private lastRun = -Infinity;
  private running: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Canary unseals started (each one Decrypt at most). */
  runs = 0;

  /** Set once the unsealer it watches exists (a genesis image has none). */
  probe: (() => Promise<void>) | undefined;

  constructor(private readonly options: UnsealCanaryOptions) {
    this.probe = options.probe;
  }

  get state(): UnsealState {
    return this.current;
  }

  /** The code of the refusal that made the state "failing" (null otherwise). */
  get code(): ErrorCode | null {
    return this.current === 'failing' ? this.lastCode : null;
  }

  /** An unseal this enclave made (the identity at start, a user key) succeeded. */
  succeeded(): void {
    this.set('ok', null);
  }

  /**
   * An unseal failed with `err`. A refusal starts a canary (rate-limited); a retryable fault (throttled,
   * unreachable, timeout) says nothing about this image and changes nothing.
   */
  failed(err: unknown): void {
    const e = asKeystoreError(err);
    // An answer that does not open (KEY_INTEGRITY) is the parent's doing or corruption, not KMS refusing this
    // image: failed-opens.ts answers it, and a canary would only give a forging parent more Decrypts to spend.
    if (e.retryable || e.code === 'KEY_INTEGRITY') return;
    void this.trigger();
  }

  /** The identity's own unseal failed at start with `err` (no canary: start is retrying it already). */
  bootFailed(err: unknown): void {
    const e = asKeystoreError(err);
    if (!e.retryable) this.set('failing', e.code);
  }

  /** Runs a canary now unless one ran within minIntervalMs or one is running; resolves when it is done. */
  trigger(): Promise<void> {
    return outsideRequest(() => this.triggerHere());
  }

  private triggerHere(): Promise<void> {
    const probe = this.probe;
    if (!probe || this.closed) return Promise.resolve();
    if (this.running) return this.running;
    const now = this.now();
    if (now - this.lastRun < this.options.minIntervalMs) {
      // Too soon. While failing, a canary must stay due: Node can fire the timer a little before this clock says
      // minIntervalMs has passed (its timers run on the loop's cached clock), and without this the loop of
      // canaries would end there, leaving "failing" for good.
      this.schedule();
      return Promise.resolve();
    }
    this.lastRun = now;
    this.runs += 1;
    this.running = probe()
      .then(
        () => this.set('ok', null),
        (err: unknown) => {
          const e = asKeystoreError(err);
          if (!e.retryable) this.set('failing', e.code);
        },
      )
      .finally(() => {
        this.running = null;
        this.schedule();
      });
    return this.running;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private now(): number {
    // Monotonic: the rate limit and the schedule must not follow the wall clock (a step back would hold the
    // canary off for as long as the step, or, past a timer's 24.8-day range, spin its timer every millisecond).
    return this.options.now ? this.options.now() : performance.now();
  }

  private set(state: UnsealState, code: ErrorCode | null): void {
    const changed = state !== this.current || code !== this.lastCode;
    this.current = state;
    this.lastCode = code;
    if (changed) this.options.onChange?.(state, code);
    this.schedule();
  }

  /** While failing, one canary every minIntervalMs, so that a policy that approves the image again is seen. */
  private schedule(): void {
    if (this.closed || this.current !== 'failing' || this.timer || this.running || !this.probe) return;
    // Never longer than the interval, whatever the clock says.
    const wait = Math.min(this.options.minIntervalMs, Math.max(0, this.lastRun + this.options.minIntervalMs - this.now()));
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.trigger();
    }, wait);
    this.timer.unref();
  }
}
