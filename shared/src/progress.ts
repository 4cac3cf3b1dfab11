/**
 * Progress of the long host commands (`npm run dev`'s start, `npm run bench`, `parent migrate`): what step they
 * are on, and where there is a count, how far along it is. Written to stderr, so stdout keeps the command's own
 * output (READY lines, JSON summaries). Three forms, chosen by where it goes:
 *
 * - `tty` (stderr is a terminal): step lines `[2/5] provisioning the keystore identity…`, and a count as a bar
 *   redrawn in place (`\r`) that ends in a plain line once done;
 * - `plain` (piped or redirected): the same step lines, and a count as a line at its start, at each tenth of
 *   the way and at its end, never a control character;
 * - `json` (a `--json` command): one JSON object a line, `{"progress":"step",…}` or `{"progress":"count",…}`.
 *
 * Only what the caller passes is written: labels and counts. Never pass a secret (a token, a key, a URL with a
 * password) in a label. Used by the host programs only; the enclave does not import it.
 */

export type ProgressMode = 'tty' | 'plain' | 'json';

/** Where progress goes: a stream with `write`, and `isTTY` when it is a terminal (process.stderr). */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** Default process.stderr. */
  stream?: ProgressStream;
  /** JSON lines (a command's `--json`), whatever the stream is. */
  json?: boolean;
  /** How many steps there are; 0 or absent for step lines without a number. */
  total?: number;
  /** Steps already done before this one started (a launcher that ran the first ones). */
  offset?: number;
  /** What the JSON lines name as their source (`"source":"dev"`); nothing if absent. */
  source?: string;
  /** The clock of the bar's redraw throttling (tests). */
  now?: () => number;
}

/** A count in progress: `tick` after each item, `done` once (idempotent) when it is over. */
export interface ProgressCount {
  tick(n?: number): void;
  /** Sets how many are done (for counts that come as totals, e.g. a summary's). */
  set(done: number): void;
  done(note?: string): void;
}

/** Width of the bar's `[####----]` part. */
const BAR_WIDTH = 24;
/** A terminal's bar is redrawn at most this often (and always on its last item). */
const REDRAW_MS = 100;

/** The mode of `stream` for a command with or without `--json`. */
export function progressMode(stream: ProgressStream, json = false): ProgressMode {
  if (json) return 'json';
  return stream.isTTY === true ? 'tty' : 'plain';
}

/** `[####------] 40/100` for `done` of `total`, `width` characters between the brackets. */
export function progressBar(done: number, total: number, width = BAR_WIDTH): string {
  const ratio = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
  const full = Math.round(ratio * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${done}/${total}`;
}

/** Labels are one line: a newline or control character in one would break the output (or a terminal). */
function oneLine(label: string): string {
  return label.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
}

export class Progress {
  readonly mode: ProgressMode;
  private readonly stream: ProgressStream;
  private readonly total: number;
  private readonly source: string | undefined;
  private readonly now: () => number;
  private current: number;
  /** A bar is on the terminal's current line (a step line first ends it). */
  private barShown = false;

  constructor(opts: ProgressOptions = {}) {
    this.stream = opts.stream ?? process.stderr;
    this.mode = progressMode(this.stream, opts.json);
    this.current = Math.max(0, Math.trunc(opts.offset ?? 0));
    this.total = Math.max(0, Math.trunc(opts.total ?? 0));
    this.source = opts.source;
    this.now = opts.now ?? Date.now;
  }

  /** The number of the step `step` last announced (0 before the first). */
  get step(): number {
    return this.current;
  }

  /** `[n/N] label…`: the next step begins. */
  next(label: string): void {
    this.current += 1;
    this.line(
      this.prefix(),
      oneLine(label),
      { ellipsis: true },
      { progress: 'step', step: this.current, ...(this.total ? { of: this.total } : {}) },
    );
  }

  /** A line about the current step (a skipped part, a result), without a new number. */
  note(label: string): void {
    this.line(
      this.total ? ' '.repeat(this.prefix().length) : '',
      oneLine(label),
      { ellipsis: false },
      { progress: 'note', step: this.current },
    );
  }

  /** A count of `total` items of the current step, labelled `label` ("keys migrated"). */
  count(label: string, total: number): ProgressCount {
    const what = oneLine(label);
    const of = Math.max(0, Math.trunc(total));
    let done = 0;
    let finished = false;
    let lastTenth = -1;
    let lastDraw = -Infinity;
    const emit = (final: boolean, note?: string) => {
      if (this.mode === 'json') {
        this.write(
          `${JSON.stringify({ ...(this.source ? { source: this.source } : {}), progress: 'count', step: this.current, label: what, done, total: of, ...(final ? { finished: true } : {}), ...(note ? { note: oneLine(note) } : {}) })}\n`,
        );
        return;
      }
      const text = `  ${what} ${progressBar(done, of)}${note ? ` (${oneLine(note)})` : ''}`;
      if (this.mode === 'tty') {
        this.write(`\r${text}\u001b[K${final ? '\n' : ''}`);
        this.barShown = !final;
      } else {
        this.write(`${text}\n`);
      }
    };
    const update = () => {
      if (finished) return;
      const tenth = of > 0 ? Math.floor((done * 10) / of) : 10;
      if (this.mode === 'tty') {
        const t = this.now();
        if (done < of && t - lastDraw < REDRAW_MS) return;
        lastDraw = t;
        emit(false);
      } else if (tenth !== lastTenth && done < of) {
        lastTenth = tenth;
        emit(false);
      }
    };
    update();
    return {
      tick: (n = 1) => {
        done = Math.min(of, done + n);
        update();
      },
      set: (value) => {
        done = Math.min(of, Math.max(0, Math.trunc(value)));
        update();
      },
      done: (note) => {
        if (finished) return;
        finished = true;
        emit(true, note);
      },
    };
  }

  private prefix(): string {
    return this.total ? `[${this.current}/${this.total}] ` : '';
  }

  private line(prefix: string, text: string, how: { ellipsis: boolean }, json: Record<string, unknown>): void {
    if (this.mode === 'json') {
      this.write(`${JSON.stringify({ ...(this.source ? { source: this.source } : {}), ...json, label: text })}\n`);
      return;
    }
    if (this.barShown) {
      this.write('\n');
      this.barShown = false;
    }
    this.write(`${prefix}${text}${how.ellipsis ? '…' : ''}\n`);
  }

  private write(s: string): void {
    try {
      this.stream.write(s);
    } catch {
      // Whoever reads progress may be gone (a closed pipe): the work goes on without it.
    }
  }
}
