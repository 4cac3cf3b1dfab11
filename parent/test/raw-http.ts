/**
 * One HTTP/1.1 connection driven by hand: requests written as bytes (so several can be pipelined, or a body
 * left unsent), answers parsed in order as they arrive (Content-Length bodies), and how the connection ended.
 */
import net from 'node:net';

export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export class RawConnection {
  readonly socket: net.Socket;
  readonly answers: RawAnswer[] = [];
  /** Set once the peer closed the connection or it failed ('end', or the error code). */
  ended: string | undefined;
  private buffer = Buffer.alloc(0);
  private readonly waiters: Array<() => void> = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.parse();
      this.wake();
    });
    socket.on('end', () => this.finish('end'));
    socket.on('close', () => this.finish('end'));
    socket.on('error', (err: NodeJS.ErrnoException) => this.finish(err.code ?? 'error'));
  }

  /** Connects to an http://host:port URL; rejects with the error code (ECONNREFUSED) when that fails. */
  static open(url: string): Promise<RawConnection> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), hostname, () => {
        socket.off('error', reject);
        resolve(new RawConnection(socket));
      });
      socket.once('error', reject);
    });
  }

  /** Writes one request (a JSON body when given); `bodyBytes` overrides what is sent of the body. */
  send(method: string, path: string, opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): void {
    const body = opts.body === undefined ? '' : JSON.stringify(opts.body);
    const head = [
      `${method} ${path} HTTP/1.1`,
      'host: localhost',
      ...(opts.token ? [`authorization: Bearer ${opts.token}`] : []),
      ...(body ? ['content-type: application/json', `content-length: ${Buffer.byteLength(body)}`] : []),
      ...Object.entries(opts.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
    ];
    this.socket.write(`${head.join('\r\n')}\r\n\r\n${body}`);
  }

  /** Resolves once `n` answers arrived in all, or rejects when the connection ends first. */
  async answered(n: number, timeoutMs = 30_000): Promise<RawAnswer[]> {
    const until = Date.now() + timeoutMs;
    while (this.answers.length < n) {
      if (this.ended !== undefined) throw new Error(`the connection ended (${this.ended}) after ${this.answers.length} of ${n} answers`);
      if (Date.now() > until) throw new Error(`${this.answers.length} of ${n} answers within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.answers.slice(0, n);
  }

  /** Resolves with how the connection ended (waits for it). */
  async closed(timeoutMs = 30_000): Promise<string> {
    const until = Date.now() + timeoutMs;
    while (this.ended === undefined) {
      if (Date.now() > until) throw new Error(`the connection stayed open for ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return this.ended;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private finish(how: string): void {
    this.ended ??= how;
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private parse(): void {
    for (;;) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end === -1) return;
      const lines = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? '')?.[1]);
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const length = Number(headers['content-length'] ?? 0);
      if (this.buffer.length < end + 4 + length) return;
      const body = this.buffer.subarray(end + 4, end + 4 + length).toString();
      this.buffer = this.buffer.subarray(end + 4 + length);
      this.answers.push({ status, headers, body });
    }
  }
}

/** Whether a new connection to `url` is accepted now: 'connected' or the error code. */
export function tryConnect(url: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname, () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}
