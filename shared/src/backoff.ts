/**
 * The one retry schedule: capped exponential backoff with jitter. The RPC client's reconnects, the parent's
 * KMS retries and the SDK's request retries all wait this long; each picks its own initial and maximum delay.
 */

export interface BackoffOptions {
  /** The ceiling of the first delay (attempt 0). */
  initialMs: number;
  /** No delay is longer than this. */
  maxMs: number;
}

/**
 * The delay before retry number `attempt` (0 for the first): the ceiling doubles each attempt up to `maxMs`;
 * half of it is fixed and half random, so the retries of many clients spread out instead of arriving together.
 */
export function backoffDelay(attempt: number, { initialMs, maxMs }: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
