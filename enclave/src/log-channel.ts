/**
 * The enclave's log channel to the parent (docs/PROTOCOL.md, "Methods"; docs/OPERATIONS.md, "Logs"): on
 * Nitro the enclave's console exists only in debug mode, so its log lines also go into this ring, which the
 * parent pulls with `enclave.logs` over the RPC connection it already has.
 *
 * - Bounded and non-blocking: a write is an O(1) push into a ring of `capacity` lines (warnings and errors into a
 *   ring of their own, `warningCapacity`, so that a flood of ordinary lines cannot push them out); when a ring is
 *   full its oldest line is overwritten, and counted in `dropped` if the parent had not pulled it yet. A line longer
 *   than MAX_RAW_LINE_CHARS is counted as dropped without being parsed. Logging never waits for the parent, so a
 *   flood of lines (or a parent that never pulls) cannot slow signing.
 * - Only what an operator needs, never secrets: a line keeps its level, time, message (at most
 *   MAX_MESSAGE_CHARS) and the scalar values of the fields in CHANNEL_FIELDS (each at most MAX_FIELD_CHARS);
 *   everything else a line carries (nested objects, buffers, stacks, any other field) stays out of the channel.
 *   An error under `err` keeps only its type and first line of message.
 */
import type { Writable } from 'node:stream';

/** The fields of a log line that go into the channel (scalars only). */
export const CHANNEL_FIELDS: ReadonlySet<string> = new Set([
  'requestId',
  'method',
  'code',
  'outcome',
  'connection',
  'address',
  'listen',
  'transport',
  'keyId',
  'projectId',
  'predecessor',
  'retired',
  'attempt',
  'attempts',
  'maxAttempts',
  'reason',
  'why',
  'signal',
  'image',
  'mode',
  'identity',
  'securityEpoch',
  'nsm',
  'moduleId',
  'signerThreads',
  'clock',
  'driftMs',
  'open',
  'maxConnections',
  'unsentBytes',
  'totalUnsentBytes',
  'inFlight',
  'error',
]);

export const MAX_MESSAGE_CHARS = 512;
export const MAX_FIELD_CHARS = 200;
export const DEFAULT_CHANNEL_CAPACITY = 1000;
/** The most lines one `enclave.logs` answer carries. */
export const MAX_LINES_PER_PULL = 200;

export interface ChannelLine {
  seq: number;
  /** Milliseconds since the epoch (the enclave's clock). */
  time: number;
  /** pino's numeric level: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal. */
  level: number;
  msg: string;
  fields: Record<string, string | number | boolean>;
}

export interface ChannelPull {
  lines: ChannelLine[];
  /** The seq the next line will have: pull again with `after: nextSeq - 1`. */
  nextSeq: number;
  /** Lines written since the enclave started. */
  written: number;
  /** Lines overwritten before the parent pulled them, since the enclave started. */
  dropped: number;
}

/** A copy, never a view: a slice of a long string would keep all of it alive in the ring. */
const clip = (s: string, n: number) => (s.length > n ? Buffer.from(`${s.slice(0, n - 1)}…`, 'utf8').toString('utf8') : s);

/** The channel's view of one pino line (a JSON object), or null when it is not one. */
export function channelLine(raw: unknown, seq: number): ChannelLine | null {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return null;
  const o = raw as Record<string, unknown>;
  const fields: Record<string, string | number | boolean> = {};
  for (const key of Object.keys(o)) {
    if (!CHANNEL_FIELDS.has(key)) continue;
    const v = o[key];
    if (typeof v === 'string') fields[key] = clip(v, MAX_FIELD_CHARS);
    else if ((typeof v === 'number' && Number.isFinite(v)) || typeof v === 'boolean') fields[key] = v;
  }
  const err = o.err as { type?: unknown; message?: unknown } | undefined;
  if (err && typeof err === 'object') {
    const type = typeof err.type === 'string' ? err.type : 'Error';
    const message = typeof err.message === 'string' ? (err.message.split('\n')[0] ?? '') : '';
    fields.err = clip(`${type}: ${message}`, MAX_FIELD_CHARS);
  }
  return {
    seq,
    time: typeof o.time === 'number' ? o.time : Date.now(),
    level: typeof o.level === 'number' ? o.level : 30,
    msg: clip(typeof o.msg === 'string' ? o.msg : '', MAX_MESSAGE_CHARS),
    fields,
  };
}

/** One ring of lines, oldest overwritten first. */
class Ring {
  private readonly lines: Array<ChannelLine | undefined>;
  private at = 0;

  constructor(readonly capacity: number) {
    this.lines = new Array<ChannelLine | undefined>(capacity);
  }

  /** Stores `line`; the line it overwrote, if any. */
  push(line: ChannelLine): ChannelLine | undefined {
    const old = this.lines[this.at];
    this.lines[this.at] = line;
    this.at = (this.at + 1) % this.capacity;
    return old;
  }

  /** Its lines with a seq above `after`. */
  after(after: number): ChannelLine[] {
    return this.lines.filter((l): l is ChannelLine => l !== undefined && l.seq > after);
  }
}

/** pino's warn level: lines at it and above have a ring of their own. */
const WARN = 40;
/** The longest pino line the channel reads (a longer one is counted as dropped, not parsed). */
export const MAX_RAW_LINE_CHARS = 64 * 1024;
export const DEFAULT_WARNING_CAPACITY = 200;

export class LogChannel {
  /** Lines below warn. */
  private readonly ring: Ring;
  /**
   * Warnings and errors, apart: a flood of ordinary lines (a caller's refused requests, one info line each) must
   * not push out the lines an operator needs (an enclave that cannot unseal, a record refused as tampered).
   */
  private readonly warnings: Ring;
  private next = 1;
  /** The highest seq the parent has asked past (its lines were delivered). */
  private delivered = 0;
  written = 0;
  dropped = 0;

  constructor(
    readonly capacity = DEFAULT_CHANNEL_CAPACITY,
    readonly warningCapacity = DEFAULT_WARNING_CAPACITY,
  ) {
    for (const [name, n] of [
      ['capacity', capacity],
      ['warningCapacity', warningCapacity],
    ] as const)
      if (!Number.isSafeInteger(n) || n < 1) throw new TypeError(`LogChannel ${name} must be a positive integer, got ${n}`);
    this.ring = new Ring(capacity);
    this.warnings = new Ring(warningCapacity);
  }

  /** Adds one pino line (its JSON text); never throws, never waits. */
  write(text: string): void {
    if (text.length > MAX_RAW_LINE_CHARS) {
      this.written += 1;
      this.dropped += 1;
      return;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      return;
    }
    const line = channelLine(raw, this.next);
    if (!line) return;
    const old = (line.level >= WARN ? this.warnings : this.ring).push(line);
    if (old && old.seq > this.delivered) this.dropped += 1;
    this.next += 1;
    this.written += 1;
  }

  /**
   * The lines after `after`, oldest first, at most `max`. An `after` beyond the newest line is a parent that
   * knew an earlier run of this enclave: it gets the lines from the oldest held.
   */
  pull(after: number, max = MAX_LINES_PER_PULL): ChannelPull {
    const newest = this.next - 1;
    const from = after >= this.next ? 0 : after;
    const lines = [...this.ring.after(from), ...this.warnings.after(from)].sort((a, b) => a.seq - b.seq).slice(0, Math.max(0, max));
    if (after < this.next) this.delivered = Math.max(this.delivered, Math.min(after, newest));
    const last = lines.at(-1);
    if (last) this.delivered = Math.max(this.delivered, last.seq);
    return { lines, nextSeq: this.next, written: this.written, dropped: this.dropped };
  }

  /** A pino destination that writes into this channel. */
  stream(): Pick<Writable, 'write'> {
    return {
      write: (chunk: string | Buffer) => {
        this.write(typeof chunk === 'string' ? chunk : chunk.toString('utf8'));
        return true;
      },
    };
  }
}
