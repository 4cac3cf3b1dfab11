/**
 * The enclave's clock, checked against the NSM's. JWT times (exp, nbf, iat) are judged by the enclave's own
 * clock, never by a time the parent sends; but the parent runs the host, so the enclave cross-checks its clock
 * against the `timestamp` of a fresh attestation document from the NSM (the Nitro hypervisor's time, out of
 * the parent's reach) at start and every `intervalMs`. While the last check found more than `maxDriftMs`
 * between them, or could not be made, JWT checks are refused with JWKS_UNAVAILABLE (retryable: nothing is wrong
 * with the JWT). An untrusted clock is checked again sooner (every UNTRUSTED_RECHECK_MS at most).
 *
 * The document never leaves the enclave: it is asked with the `attestation` user-data tag and no nonce, and
 * only its timestamp is read (the NSM is the enclave's own device, so the document needs no verification).
 */
import { decodeAttestationDocument } from '@nks/shared/attestation/document';
import { KeystoreError } from '@nks/shared/errors';

export type ClockState = 'unchecked' | 'trusted' | 'untrusted';

export const CLOCK_NOT_TRUSTED_MESSAGE = 'the enclave clock is not trusted';
/** An untrusted (or unchecked because the NSM failed) clock is checked again at least this often. */
export const UNTRUSTED_RECHECK_MS = 60_000;

export interface ClockCheckOptions {
  intervalMs: number;
  maxDriftMs: number;
  /** The enclave's clock (ms since the epoch). */
  now?: () => number;
  /** Told of each check's outcome (for the log). */
  onCheck?: (r: { state: ClockState; driftMs: number | null; error?: unknown }) => void;
}

export class ClockCheck {
  state: ClockState = 'unchecked';
  /** The enclave clock minus the last document's timestamp, in ms; null before a check succeeded. */
  driftMs: number | null = null;
  private running: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    /** A fresh attestation document (COSE_Sign1 bytes) from the NSM. */
    private readonly document: () => Promise<Buffer>,
    private readonly options: ClockCheckOptions,
  ) {}

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /** One check now (shared with one under way). Never throws: a failure leaves the clock untrusted. */
  check(): Promise<void> {
    this.running ??= this.run().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** Checks now, then on a timer that does not keep the process alive. */
  start(): void {
    if (this.timer) return;
    const loop = () => {
      void this.check().then(() => {
        if (!this.timer) return;
        const next = this.state === 'trusted' ? this.options.intervalMs : Math.min(this.options.intervalMs, UNTRUSTED_RECHECK_MS);
        this.timer = setTimeout(loop, next);
        this.timer.unref();
      });
    };
    this.timer = setTimeout(loop, 0);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Resolves when JWT times may be judged by this clock; JWKS_UNAVAILABLE otherwise. Waits for the first check. */
  async assertTrusted(): Promise<void> {
    if (this.state === 'unchecked') await this.check();
    if (this.state !== 'trusted') throw new KeystoreError('JWKS_UNAVAILABLE', CLOCK_NOT_TRUSTED_MESSAGE);
  }

  private async run(): Promise<void> {
    try {
      const { document } = decodeAttestationDocument(await this.document());
      const drift = this.now() - document.timestamp;
      this.driftMs = drift;
      this.state = Math.abs(drift) <= this.options.maxDriftMs ? 'trusted' : 'untrusted';
      this.options.onCheck?.({ state: this.state, driftMs: drift });
    } catch (error) {
      this.state = 'untrusted';
      this.options.onCheck?.({ state: this.state, driftMs: this.driftMs, error });
    }
  }
}
