/**
 * The progress lines of the long host commands (shared/src/progress.ts): a bar redrawn in place on a terminal,
 * plain lines without a control character when piped, JSON lines with `--json`.
 */
import { Progress, progressBar, progressMode, type ProgressStream } from '@nks/shared/progress';

/** A stream that keeps what is written, a terminal or not. */
function fakeStream(isTTY: boolean): ProgressStream & { text: () => string } {
  const chunks: string[] = [];
  return { isTTY, write: (s: string) => chunks.push(s), text: () => chunks.join('') };
}

const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f]/;

describe('progress', () => {
  it('chooses its form by the stream and --json', () => {
    expect(progressMode(fakeStream(true))).toBe('tty');
    expect(progressMode(fakeStream(false))).toBe('plain');
    expect(progressMode({ write: () => true })).toBe('plain');
    expect(progressMode(fakeStream(true), true)).toBe('json');
    expect(progressMode(fakeStream(false), true)).toBe('json');
  });

  it('draws a bar of the fraction done, clamped', () => {
    expect(progressBar(0, 4, 8)).toBe('[--------] 0/4');
    expect(progressBar(1, 4, 8)).toBe('[##------] 1/4');
    expect(progressBar(4, 4, 8)).toBe('[########] 4/4');
    expect(progressBar(9, 4, 8)).toBe('[########] 9/4');
    expect(progressBar(0, 0, 8)).toBe('[########] 0/0');
  });

  it('piped: numbered step lines and a count at its start, each tenth and its end, no control character', () => {
    const s = fakeStream(false);
    const p = new Progress({ stream: s, total: 3 });
    expect(p.mode).toBe('plain');
    p.next('starting the KMS emulator');
    p.next('migrating keys');
    const c = p.count('keys migrated', 20);
    for (let i = 0; i < 20; i++) c.tick();
    c.done('0 failed');
    c.done(); // once only
    p.note('nothing else to do');
    p.next('ready');
    const lines = s.text().split('\n').slice(0, -1);
    expect(lines[0]).toBe('[1/3] starting the KMS emulator…');
    expect(lines[1]).toBe('[2/3] migrating keys…');
    const counts = lines.filter((l) => l.startsWith('  keys migrated'));
    // 0, 2, 4, ... 18 of 20 (each tenth), then the end line with its note.
    expect(counts.map((l) => /(\d+)\/20/.exec(l)?.[1])).toEqual(['0', '2', '4', '6', '8', '10', '12', '14', '16', '18', '20']);
    expect(counts[counts.length - 1]).toBe(`  keys migrated ${progressBar(20, 20)} (0 failed)`);
    expect(lines).toContain('      nothing else to do');
    expect(lines[lines.length - 1]).toBe('[3/3] ready…');
    expect(s.text()).not.toMatch(CONTROL);
  });

  it('on a terminal: the bar is redrawn in place, at most every 100 ms and always at its end', () => {
    const s = fakeStream(true);
    let t = 0;
    const p = new Progress({ stream: s, total: 2, now: () => t });
    p.next('cold signs');
    const c = p.count('signs', 1000);
    for (let i = 0; i < 1000; i++) {
      t += 1; // 1 ms an item: one redraw per 100 items
      c.tick();
    }
    c.done();
    p.next('done');
    const text = s.text();
    expect(text.startsWith('[1/2] cold signs…\n')).toBe(true);
    const draws = text.split('\r').slice(1);
    // The first draw (0/1000), one each 100 ms, and the last (1000/1000); far fewer than the 1000 items.
    expect(draws.length).toBeGreaterThanOrEqual(10);
    expect(draws.length).toBeLessThanOrEqual(13);
    expect(draws[0]).toBe(`  signs ${progressBar(0, 1000)}\u001b[K`);
    expect(draws[draws.length - 1]).toBe(`  signs ${progressBar(1000, 1000)}\u001b[K\n[2/2] done…\n`);
  });

  it('on a terminal: a step line during a count starts on a line of its own', () => {
    const s = fakeStream(true);
    const p = new Progress({ stream: s, total: 2 });
    p.next('a');
    p.count('items', 10).tick(3);
    p.next('b');
    expect(s.text()).toMatch(/\/10\u001b\[K\n\[2\/2\] b…\n$/);
  });

  it('--json: one JSON object a line, for steps, notes and counts', () => {
    const s = fakeStream(true);
    const p = new Progress({ stream: s, json: true, total: 2, offset: 1, source: 'dev' });
    p.next('parent');
    p.note('kept');
    const c = p.count('keys', 2);
    c.tick();
    c.tick();
    c.done();
    const objects = s
      .text()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(objects[0]).toEqual({ source: 'dev', progress: 'step', step: 2, of: 2, label: 'parent' });
    expect(objects[1]).toEqual({ source: 'dev', progress: 'note', step: 2, label: 'kept' });
    expect(objects.filter((o) => o.progress === 'count').map((o) => o.done)).toEqual([0, 1, 2]);
    expect(objects[objects.length - 1]).toEqual({
      source: 'dev',
      progress: 'count',
      step: 2,
      label: 'keys',
      done: 2,
      total: 2,
      finished: true,
    });
    expect(s.text()).not.toMatch(CONTROL);
  });

  it('starts its numbering after the steps a launcher did (offset)', () => {
    const s = fakeStream(false);
    const p = new Progress({ stream: s, total: 8, offset: 1 });
    p.next('KMS emulator');
    expect(s.text()).toBe('[2/8] KMS emulator…\n');
    expect(p.step).toBe(2);
  });

  it('keeps a label on one line, whatever it holds', () => {
    const s = fakeStream(false);
    new Progress({ stream: s }).next('evil\nlabel\u001b[2J\r');
    // The escape character is gone, so what is left of a sequence is text a terminal prints as it is.
    expect(s.text()).toBe('evil label [2J…\n');
  });

  it('goes on when its reader is gone', () => {
    const p = new Progress({
      stream: {
        write: () => {
          throw new Error('EPIPE');
        },
      },
      total: 1,
    });
    expect(() => {
      p.next('x');
      p.count('y', 3).done();
    }).not.toThrow();
  });
});
