/**
 * Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol through
 * `--remote-debugging-pipe`: the browser reads JSON messages, each ended by a NUL byte, on its file descriptor 3
 * and writes its answers and events on 4. No port, no WebSocket, no library: a page is opened, navigated, and
 * read with `Runtime.evaluate`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';

/** The browser binary: $CHROMIUM, else Debian's (the real binary behind the /usr/bin/chromium wrapper). */
export function chromiumBinary(): string | undefined {
  const candidates = [process.env.CHROMIUM, '/usr/lib/chromium/chromium', '/usr/bin/chromium', '/usr/bin/chromium-browser'];
  return candidates.find((c): c is string => typeof c === 'string' && c !== '' && fs.existsSync(c));
}

interface Message {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { message: string };
  sessionId?: string;
}

export interface Page {
  /** Navigates and resolves once the page's load event fired. */
  goto(url: string, timeoutMs?: number): Promise<void>;
  /** The value of a JavaScript expression in the page (awaited if it is a promise). */
  evaluate<T>(expression: string): Promise<T>;
  /** Polls `expression` until it is neither undefined nor null. */
  waitFor<T>(expression: string, timeoutMs?: number): Promise<T>;
  /** The page's console output and uncaught exceptions so far, for failure messages. */
  console: string[];
}

export interface Browser {
  newPage(): Promise<Page>;
  close(): Promise<void>;
}

/**
 * `trustSpkis`: SHA-256 hashes (base64) of server keys whose certificates the browser accepts although they chain to
 * no CA it knows (`--ignore-certificate-errors-spki-list`): a test CA's server, as a user's browser would trust a
 * public CA's.
 */
export async function launchChromium(binary: string, opts: { trustSpkis?: string[] } = {}): Promise<Browser> {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-chromium-'));
  const child: ChildProcess = spawn(
    binary,
    [
      '--headless',
      '--no-sandbox', // runs as root in CI
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--no-first-run',
      '--no-default-browser-check',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-extensions',
      '--remote-debugging-pipe',
      `--user-data-dir=${profile}`,
      ...(opts.trustSpkis?.length ? [`--ignore-certificate-errors-spki-list=${opts.trustSpkis.join(',')}`] : []),
      'about:blank',
    ],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] },
  );
  const stderr: string[] = [];
  child.stderr?.on('data', (d: Buffer) => stderr.push(d.toString()));
  const toBrowser = child.stdio[3] as Writable;
  const fromBrowser = child.stdio[4] as Readable;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  let nextId = 1;
  const pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  const listeners = new Set<(m: Message) => void>();
  let buffered = '';
  fromBrowser.on('data', (d: Buffer) => {
    buffered += d.toString('utf8');
    let end: number;
    while ((end = buffered.indexOf('\0')) >= 0) {
      const msg = JSON.parse(buffered.slice(0, end)) as Message;
      buffered = buffered.slice(end + 1);
      if (msg.id !== undefined) {
        const p = pending.get(msg.id);
        pending.delete(msg.id);
        if (msg.error) p?.reject(new Error(`${msg.error.message}`));
        else p?.resolve(msg.result ?? {});
      } else {
        for (const l of listeners) l(msg);
      }
    }
  });
  void exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`chromium exited: ${stderr.join('').slice(-2000)}`));
    pending.clear();
  });

  const send = (method: string, params: Record<string, unknown> = {}, sessionId?: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      toBrowser.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });

  // The browser answers once it is up; a binary that cannot start fails here with its own words.
  await Promise.race([
    send('Browser.getVersion'),
    exited.then(() => {
      throw new Error(`chromium did not start: ${stderr.join('').slice(-2000)}`);
    }),
  ]);

  return {
    async newPage() {
      const { targetId } = (await send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
      const { sessionId } = (await send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
      const consoleLines: string[] = [];
      listeners.add((m) => {
        if (m.sessionId !== sessionId) return;
        if (m.method === 'Runtime.consoleAPICalled') {
          const args = (m.params?.args as Array<{ value?: unknown; description?: string }>) ?? [];
          consoleLines.push(`console.${String(m.params?.type)}: ${args.map((a) => String(a.value ?? a.description)).join(' ')}`);
        } else if (m.method === 'Runtime.exceptionThrown') {
          consoleLines.push(`exception: ${JSON.stringify(m.params?.exceptionDetails)}`);
        } else if (m.method === 'Log.entryAdded') {
          const e = m.params?.entry as { level?: string; text?: string; url?: string };
          consoleLines.push(`log.${e.level}: ${e.text} ${e.url ?? ''}`);
        }
      });
      await send('Page.enable', {}, sessionId);
      await send('Runtime.enable', {}, sessionId);
      await send('Log.enable', {}, sessionId);
      const evaluate = async <T>(expression: string): Promise<T> => {
        const r = (await send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true }, sessionId)) as {
          result: { value?: T };
          exceptionDetails?: unknown;
        };
        if (r.exceptionDetails) throw new Error(`evaluating ${expression}: ${JSON.stringify(r.exceptionDetails)}`);
        return r.result.value as T;
      };
      return {
        console: consoleLines,
        async goto(url, timeoutMs = 15_000) {
          let onLoad: (m: Message) => void = () => undefined;
          const loaded = new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => {
              listeners.delete(onLoad);
              reject(new Error(`${url} did not load within ${timeoutMs} ms`));
            }, timeoutMs);
            onLoad = (m) => {
              if (m.sessionId === sessionId && m.method === 'Page.loadEventFired') {
                clearTimeout(timer);
                listeners.delete(onLoad);
                resolve();
              }
            };
            listeners.add(onLoad);
          });
          const nav = (await send('Page.navigate', { url }, sessionId)) as { errorText?: string };
          if (nav.errorText) throw new Error(`navigating to ${url}: ${nav.errorText}`);
          await loaded;
        },
        evaluate,
        async waitFor<T>(expression: string, timeoutMs = 20_000): Promise<T> {
          const until = Date.now() + timeoutMs;
          for (;;) {
            const v = await evaluate<T | null | undefined>(expression);
            if (v !== undefined && v !== null) return v;
            if (Date.now() > until)
              throw new Error(`${expression} stayed empty for ${timeoutMs} ms; page console:\n${consoleLines.join('\n')}`);
            await new Promise((r) => setTimeout(r, 50));
          }
        },
      };
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        await send('Browser.close').catch(() => undefined);
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}
