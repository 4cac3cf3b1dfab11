/**
 * The PostgreSQL engine's change feed: one connection of its own (outside the pool) that LISTENs on
 * `nks_changes`, where every write of a key or project row notifies `key:<id>` or `project:<id>` in its
 * transaction (so at commit, to every instance, this one included).
 *
 * A notification sent while the connection is down is lost, so a lost connection is reported at once
 * (`onCoherence(false)`: cached rows may be stale) and the connection remade with backoff (at once, then
 * 100 ms doubling to 2 s); `onCoherence(true)` follows each LISTEN that succeeds, the first one included.
 *
 * A heartbeat query (`SELECT 1`, every `heartbeatMs`, one at a time) makes liveness positive: the server sends a
 * listening session every notification committed before a query ahead of that query's answer, so when the answer
 * to a heartbeat sent at S has arrived, every change committed before S has been delivered (`deliveredThrough`).
 * A connection that goes silent without closing stops it advancing at once; the heartbeat's query timeout then
 * finds the connection lost.
 */
import pg from 'pg';
import type { Logger } from '@nks/shared/log';
import { describeError } from './postgres-errors';
import type { StoreChange } from './types';

export const CHANGES_CHANNEL = 'nks_changes';
const FIRST_DELAY_MS = 100;
const MAX_DELAY_MS = 2_000;

export function parseChange(payload: string | undefined): StoreChange | undefined {
  const m = /^(key|project|tls):(.+)$/.exec(payload ?? '');
  return m ? { kind: m[1] as StoreChange['kind'], id: m[2] as string } : undefined;
}

export interface ListenerOptions {
  /** How the connection is made (the pool's settings: URL, TLS, timeouts). */
  client: pg.ClientConfig;
  onChange: (change: StoreChange) => void;
  onCoherence: (live: boolean) => void;
  heartbeatMs: number;
  logger?: Logger;
}

export class ChangeListener {
  private client: pg.Client | undefined;
  private failures = 0;
  private retry: NodeJS.Timeout | undefined;
  private live: boolean | undefined;
  private closed = false;
  private delivered = 0;

  constructor(private readonly options: ListenerOptions) {
    this.connect();
  }

  /** The send time (ms since the epoch) of the last heartbeat answered: see the file's comment. 0 before the first. */
  get deliveredThrough(): number {
    return this.delivered;
  }

  private report(live: boolean): void {
    if (this.live === live) return;
    this.live = live;
    this.options.onCoherence(live);
  }

  private connect(): void {
    this.retry = undefined;
    if (this.closed) return;
    const client = new pg.Client(this.options.client);
    this.client = client;
    let heartbeat: NodeJS.Timeout | undefined;
    let down = false;
    const lost = (err?: unknown) => {
      if (down) return;
      down = true;
      clearInterval(heartbeat);
      client.removeAllListeners('notification');
      client.end().catch(() => undefined);
      if (this.closed) return;
      this.options.logger?.warn({ err: describeError(err ?? new Error('connection ended')) }, 'store change feed lost; reconnecting');
      this.report(false);
      const delay = this.failures === 0 ? 0 : Math.min(FIRST_DELAY_MS * 2 ** (this.failures - 1), MAX_DELAY_MS);
      this.failures++;
      this.retry = setTimeout(() => this.connect(), delay);
    };
    client.on('error', lost);
    client.on('end', () => lost());
    client.on('notification', (msg) => {
      const change = msg.channel === CHANGES_CHANNEL ? parseChange(msg.payload) : undefined;
      if (change) this.options.onChange(change);
    });
    client
      .connect()
      .then(() => client.query(`LISTEN ${CHANGES_CHANNEL}`))
      .then(() => {
        if (down) return;
        if (this.closed) return void client.end().catch(() => undefined);
        this.failures = 0;
        this.report(true);
        let waiting = false;
        const beat = () => {
          if (waiting || down) return;
          waiting = true;
          const sent = Date.now();
          client.query('SELECT 1').then(() => {
            waiting = false;
            // Notifications arriving before the answer were handed to onChange as they were read.
            if (!down && sent > this.delivered) this.delivered = sent;
          }, lost);
        };
        beat();
        heartbeat = setInterval(beat, this.options.heartbeatMs);
        heartbeat.unref();
      }, lost);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }
}
