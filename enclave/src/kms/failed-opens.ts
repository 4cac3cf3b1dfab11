/**
 * Failed opens of KMS answers: one total count, and a limit. Above `maxFailures` within `windowMs`, cold signs
 * are refused for `cooldownMs` before any KMS call, with the same answer as a failed open, and each refusal
 * is counted in the same total. Only the total leaves the enclave (health, then the parent's metrics and
 * logs): a count per failing step would rebuild the oracle it exists to stop.
 */
export interface FailedOpenLimits {
  maxFailures: number;
  windowMs: number;
  cooldownMs: number;
}

export class FailedOpens {
  /** Failed opens plus cold signs refused during a cool-down. */
  total = 0;
  private recent: number[] = [];
  private coolUntil = 0;

  constructor(
    private readonly limits: FailedOpenLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** True (and counted) while cooling down: the caller refuses the cold sign without asking KMS. */
  refusing(): boolean {
    if (this.now() >= this.coolUntil) return false;
    this.total += 1;
    return true;
  }

  record(): void {
    const now = this.now();
    this.total += 1;
    this.recent = this.recent.filter((t) => now - t < this.limits.windowMs);
    this.recent.push(now);
    if (this.recent.length > this.limits.maxFailures) {
      this.coolUntil = now + this.limits.cooldownMs;
      this.recent = [];
    }
  }

  get coolingDown(): boolean {
    return this.now() < this.coolUntil;
  }
}
