/**
 * The one table of default deadlines (docs/OPERATIONS.md, "Deadlines"). Each layer gives up strictly before the
 * layer that called it, by at least `deadlineMarginMs(outer)`, so the innermost fault is the one the caller is
 * told: a throttled KMS is 503 KMS_THROTTLED, never a 504 TIMEOUT of an outer layer that gave up at the same time.
 *
 *   API request (parent)  >  parent -> enclave call  >  enclave's KMS deadline  >  KMS proxy budget  >  one KMS attempt
 *
 * The parent's configuration takes `api.requestTimeoutMs`, `enclave.deadlineMs` and `kmsProxy.deadlineMs` from
 * here and refuses values out of this order; the enclave's `limits.kmsDeadlineMs` comes from here, and each
 * `kms.decrypt` carries the enclave's time left, which the proxy never outlives (`min(own, enclave's - margin)`).
 */
export const DEADLINES = {
  /** The whole HTTP request, enclave call included (`api.requestTimeoutMs`). */
  apiRequestMs: 15_000,
  /** One parent -> enclave call; a cold sign includes a KMS Decrypt (`enclave.deadlineMs`). */
  enclaveCallMs: 10_000,
  /** The enclave's time for one unseal, every KMS request of it included (enclave `limits.kmsDeadlineMs`). */
  enclaveKmsMs: 8_000,
  /** The KMS proxy's time for one `kms.decrypt`, retries included (`kmsProxy.deadlineMs`). */
  kmsProxyMs: 6_000,
  /** One KMS request of the proxy: a KMS that says nothing for this long is asked again while time is left. */
  kmsAttemptMs: 2_000,
} as const;

/** The layers of DEADLINES, outermost first. */
export const DEADLINE_ORDER = ['apiRequestMs', 'enclaveCallMs', 'enclaveKmsMs', 'kmsProxyMs', 'kmsAttemptMs'] as const;

/**
 * How much sooner an inner layer must give up than the layer around it (`outerMs`): time for its answer's way
 * back. A fifth of the outer deadline, at most 500 ms.
 */
export function deadlineMarginMs(outerMs: number): number {
  return Math.min(500, Math.floor(outerMs / 5));
}

/** True when `innerMs` ends at least a margin before `outerMs`. */
export function nests(innerMs: number, outerMs: number): boolean {
  return innerMs + deadlineMarginMs(outerMs) <= outerMs;
}

/** An inner layer's time given its own deadline and, when known, the time its caller has left. */
export function innerDeadlineMs(ownMs: number, callerMs: number | undefined): number {
  if (callerMs === undefined) return ownMs;
  return Math.max(1, Math.min(ownMs, callerMs - deadlineMarginMs(callerMs)));
}
