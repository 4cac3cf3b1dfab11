/**
 * Pulls the enclave's log lines and counters (`enclave.logs`, docs/PROTOCOL.md) every `intervalMs` over the
 * pool's connections, and re-logs each line in the parent's log with `source: 'enclave'`, the enclave's level and
 * its address (docs/OPERATIONS.md, "Logs"). At most `maxLines` lines per pull: the rate is bounded here, and
 * what the enclave writes beyond it is overwritten in its ring and counted as dropped there.
 *
 * A pull, not a push: the parent is the RPC client, so the enclave never writes unasked and never holds more
 * than its ring; a parent that stops pulling costs the enclave nothing but lost lines.
 */
import type { EnclaveLogs } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import type { EnclavePool } from './pool';

export interface EnclaveLogPullerOptions {
  pool: Pick<EnclavePool, 'call' | 'up'>;
  /** The enclave's address, as the `enclave` field of each line and the metrics' label. */
  enclave: string;
  logger: Logger;
  intervalMs?: number;
  maxLines?: number;
  /** After every answered pull: lines by level, and the enclave's counters. */
  onPull?: (pulled: EnclaveLogs, levels: Record<string, number>) => void;
}

export const LEVEL_NAMES: Readonly<Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'>> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/** The parent logger's method for an enclave level (an unknown one is logged as a warning). */
export function levelName(level: unknown): 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' {
  return (typeof level === 'number' && LEVEL_NAMES[level]) || 'warn';
}

export class EnclaveLogPuller {
  private after = 0;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private unsupported = false;
  /** The enclave's dropped total at the last pull. */
  private lastDropped = 0;
  /** Lines re-logged since start. */
  relogged = 0;

  constructor(private readonly options: EnclaveLogPullerOptions) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.pullOnce(), this.options.intervalMs ?? 1000);
    this.timer.unref();
  }

  /** One pull (skipped while the enclave is down or a pull is still running); never throws. */
  pullOnce(): Promise<void> {
    if (this.running || !this.options.pool.up) return this.running ?? Promise.resolve();
    this.running = this.pull().finally(() => (this.running = null));
    return this.running;
  }

  private async pull(): Promise<void> {
    const { pool, enclave, logger } = this.options;
    let answer: EnclaveLogs;
    try {
      answer = await pool.call('enclave.logs', { after: this.after, max: this.options.maxLines ?? 200 }, 1000);
    } catch (err) {
      const code = err instanceof KeystoreError ? err.code : 'INTERNAL';
      // An enclave of an older release has no log channel: said once.
      if (code === 'METHOD_NOT_FOUND' && !this.unsupported) {
        this.unsupported = true;
        logger.info({ enclave }, 'the enclave has no log channel (enclave.logs): its lines are not relayed');
      } else if (code !== 'METHOD_NOT_FOUND') logger.debug({ enclave, code }, 'could not pull the enclave log lines');
      return;
    }
    this.unsupported = false;
    const levels: Record<string, number> = {};
    for (const line of Array.isArray(answer.lines) ? answer.lines : []) {
      const level = levelName(line.level);
      levels[level] = (levels[level] ?? 0) + 1;
      const fields = typeof line.fields === 'object' && line.fields !== null ? line.fields : {};
      // The enclave's fields first: source, enclave and its seq and time are the parent's to say.
      logger[level]({ ...fields, source: 'enclave', enclave, seq: line.seq, enclaveTime: line.time }, String(line.msg));
      this.relogged += 1;
    }
    // Lines lost in the enclave's ring since the last pull (a smaller total: the enclave restarted).
    const dropped = Number.isSafeInteger(answer.dropped) ? answer.dropped : 0;
    if (dropped > this.lastDropped)
      logger.warn(
        { enclave, dropped: dropped - this.lastDropped, total: dropped },
        'enclave log lines were dropped before the parent pulled them',
      );
    this.lastDropped = dropped;
    // Next time, after the last line relayed (an answer cut at maxLines continues there); with none, after the
    // enclave's newest (a restarted enclave counts from 1 again, and answers from its oldest line).
    const last = answer.lines.at(-1)?.seq;
    if (Number.isSafeInteger(last)) this.after = last as number;
    else this.after = Number.isSafeInteger(answer.nextSeq) && answer.nextSeq > 0 ? answer.nextSeq - 1 : 0;
    this.options.onPull?.(answer, levels);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
