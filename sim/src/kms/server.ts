/**
 * The KMS emulator's HTTP front: AWS JSON 1.1 (`POST /`, `X-Amz-Target: TrentService.<Op>`,
 * `application/x-amz-json-1.1`), as the real @aws-sdk/client-kms sends it with an endpoint override.
 * The SigV4 signature is not checked; the access key id in it names the caller (see `principals`).
 *
 * Fault injection (latency, throttling, internal errors) applies to every operation. Tests and benchmarks
 * read per-operation call counts and change faults at run time under `/__emulator/`.
 *
 * Two kinds of faults:
 * - rates (`throttleRate`, `errorRate`, and `latencyMs`): random, for benchmarks and soak runs;
 * - scripted, for tests that must not depend on chance or timing: `throttleNext` / `errorNext` fail exactly
 *   the next N calls, and `hold` keeps calls waiting (their body read, nothing answered) until the test
 *   releases them (`POST /__emulator/release`, or `hold: false`), while `GET /__emulator/faults` reports how
 *   many are held. `ops` limits the scripted faults to those operations (default: every operation).
 *   `errorStatus` is the HTTP status of `errorNext`'s answers (500 by default; any 5xx).
 * - an unreachable KMS (`unreachable`): "reset" closes each call's connection without an answer (the SDK sees
 *   ECONNRESET), "silent" answers nothing at all (a black hole: the caller's own timeout ends the call; such
 *   calls are dropped when `unreachable` goes back to "none"). A refused connection needs no control: point the
 *   client at a closed port. The `/__emulator/` controls keep working meanwhile.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Logger } from '@nks/shared/log';
import { KmsEmulator, OPERATIONS, type Caller } from './emulator';
import { KmsError } from './errors';

export interface Faults {
  latencyMs: number;
  /** Probability in [0, 1] of answering ThrottlingException. */
  throttleRate: number;
  /** Probability in [0, 1] of answering KMSInternalException (HTTP 500). */
  errorRate: number;
}

/** Deterministic faults: counted, never random. */
export interface ScriptedFaults {
  /** The next N calls (of `ops`) answer ThrottlingException. */
  throttleNext: number;
  /** The next N calls (of `ops`) answer KMSInternalException (HTTP 500), after any `throttleNext`. */
  errorNext: number;
  /** The HTTP status (5xx) of errorNext's answers. */
  errorStatus: number;
  /** While true, calls (of `ops`) wait after their body is read until released. */
  hold: boolean;
  /** "reset": calls (of `ops`) get their connection closed, no answer; "silent": no answer ever. */
  unreachable: Unreachable;
  /** Operations the scripted faults apply to; empty: every operation. */
  ops: string[];
}

export const UNREACHABLE_MODES = ['none', 'reset', 'silent'] as const;
export type Unreachable = (typeof UNREACHABLE_MODES)[number];

export const NO_SCRIPTED_FAULTS: ScriptedFaults = {
  throttleNext: 0,
  errorNext: 0,
  errorStatus: 500,
  hold: false,
  unreachable: 'none',
  ops: [],
};

export interface ServerOptions {
  emulator: KmsEmulator;
  logger: Logger;
  faults: Faults;
  scripted?: Partial<ScriptedFaults>;
  /** Access key id -> principal ARN; unknown keys map to `defaultPrincipal`. */
  principals: Record<string, string>;
  defaultPrincipal: string;
  maxBodyBytes?: number;
  random?: () => number;
}

export interface CallStats {
  ok: number;
  error: number;
  /** Errors by KMS error type. */
  errors: Record<string, number>;
}

const JSON_TYPE = 'application/x-amz-json-1.1';

export class KmsHttpServer {
  readonly server: http.Server;
  readonly stats: Record<string, CallStats> = {};
  private readonly faults: Faults;
  private readonly scripted: ScriptedFaults;
  /** Calls waiting on `hold`, oldest first. */
  private readonly held: Array<() => void> = [];

  constructor(private readonly options: ServerOptions) {
    this.faults = { ...options.faults };
    this.scripted = { ...NO_SCRIPTED_FAULTS, ...options.scripted };
    this.server = http.createServer((req, res) => void this.onRequest(req, res));
    this.server.keepAliveTimeout = 30_000;
  }

  listen(port: number, host = '127.0.0.1'): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        const addr = this.server.address() as { port: number };
        resolve(`http://${host}:${addr.port}`);
      });
    });
  }

  /** Connections of calls left unanswered by `unreachable: "silent"`. */
  private readonly silenced = new Set<import('node:net').Socket>();

  /** Calls held now (scripted `hold`). */
  get heldCount(): number {
    return this.held.length;
  }

  /** Lets the oldest `count` held calls go on (all when absent); returns how many were released. */
  release(count = this.held.length): number {
    const go = this.held.splice(0, Math.max(0, Math.min(count, this.held.length)));
    for (const r of go) r();
    return go.length;
  }

  close(): Promise<void> {
    this.scripted.hold = false;
    this.release();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private record(op: string, error?: string): void {
    const s = (this.stats[op] ??= { ok: 0, error: 0, errors: {} });
    if (error) {
      s.error += 1;
      s.errors[error] = (s.errors[error] ?? 0) + 1;
    } else s.ok += 1;
  }

  private callerOf(req: http.IncomingMessage): Caller {
    const m = /Credential=([A-Z0-9]+)\//.exec(String(req.headers.authorization ?? ''));
    const principalArn = (m && this.options.principals[m[1] as string]) || this.options.defaultPrincipal;
    return { principalArn, account: principalArn.split(':')[4] ?? '000000000000' };
  }

  private async readBody(req: http.IncomingMessage): Promise<Buffer> {
    const max = this.options.maxBodyBytes ?? 1024 * 1024;
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > max) throw new KmsError('ValidationException', `Request body exceeds ${max} bytes.`);
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  private send(res: http.ServerResponse, status: number, body: object, extra: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': JSON_TYPE,
      'content-length': Buffer.byteLength(text),
      'x-amzn-requestid': randomUUID(),
      ...extra,
    });
    res.end(text);
  }

  private sendError(res: http.ServerResponse, err: KmsError): void {
    this.send(res, err.status, { __type: err.code, message: err.message }, { 'x-amzn-errortype': err.code });
  }

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.url?.startsWith('/__emulator/')) return this.onAdmin(req, res);
    const target = String(req.headers['x-amz-target'] ?? '');
    const op = target.startsWith('TrentService.') ? target.slice('TrentService.'.length) : '';
    try {
      if (req.method !== 'POST' || req.url !== '/') throw new KmsError('UnknownOperationException', 'Only POST / is served.');
      if (!OPERATIONS.includes(op as never))
        throw new KmsError('UnknownOperationException', `Unknown operation ${target || '(no X-Amz-Target)'}`);
      const raw = await this.readBody(req);
      let body: unknown;
      try {
        body = raw.length ? JSON.parse(raw.toString('utf8')) : {};
      } catch (err) {
        throw new KmsError('SerializationException', 'The request body is not valid JSON.', { cause: err });
      }
      if (typeof body !== 'object' || body === null || Array.isArray(body))
        throw new KmsError('SerializationException', 'The request body is not a JSON object.');
      if (this.unreachable(op, req)) return;
      await this.injectFaults(op);
      const out = await this.options.emulator.handle(op, body, this.callerOf(req));
      this.record(op);
      this.send(res, 200, out);
      this.options.logger.debug({ op }, 'kms call');
    } catch (err) {
      const kmsErr = err instanceof KmsError ? err : new KmsError('KMSInternalException', 'An internal error occurred.', { cause: err });
      if (!(err instanceof KmsError)) this.options.logger.error({ err, op }, 'emulator failure');
      this.record(op || 'unknown', kmsErr.code);
      this.options.logger.info({ op, error: kmsErr.code }, 'kms call failed');
      this.sendError(res, kmsErr);
    }
  }

  /** Applies `unreachable` to a call of `op`: true when the call gets no answer. */
  private unreachable(op: string, req: http.IncomingMessage): boolean {
    const mode = this.scripted.unreachable;
    if (mode === 'none' || !(this.scripted.ops.length === 0 || this.scripted.ops.includes(op))) return false;
    this.record(op, mode === 'reset' ? 'ConnectionReset' : 'NoAnswer');
    if (mode === 'reset') req.socket.destroy();
    else {
      this.silenced.add(req.socket);
      req.socket.once('close', () => this.silenced.delete(req.socket));
    }
    return true;
  }

  private async injectFaults(op: string): Promise<void> {
    const scripted = this.scripted.ops.length === 0 || this.scripted.ops.includes(op);
    if (scripted && this.scripted.hold) {
      await new Promise<void>((resolve) => this.held.push(resolve));
      this.options.logger.debug({ op }, 'held call released');
    }
    const { latencyMs, throttleRate, errorRate } = this.faults;
    if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
    if (scripted && this.scripted.throttleNext > 0) {
      this.scripted.throttleNext -= 1;
      throw new KmsError(
        'ThrottlingException',
        'You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.',
      );
    }
    if (scripted && this.scripted.errorNext > 0) {
      this.scripted.errorNext -= 1;
      throw Object.assign(new KmsError('KMSInternalException', 'An internal error occurred (injected).'), {
        status: this.scripted.errorStatus,
      });
    }
    const random = this.options.random ?? Math.random;
    if (throttleRate > 0 && random() < throttleRate) {
      throw new KmsError(
        'ThrottlingException',
        'You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.',
      );
    }
    if (errorRate > 0 && random() < errorRate) throw new KmsError('KMSInternalException', 'An internal error occurred (injected).');
  }

  /** What GET|POST faults answers: the rates, the scripted faults and how many calls are held. */
  private faultState(): object {
    return { ...this.faults, ...this.scripted, ops: [...this.scripted.ops], held: this.held.length };
  }

  /** GET stats, POST stats/reset, GET|POST faults, POST release. Never part of the KMS API. */
  private async onAdmin(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, body: object) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(text);
    };
    try {
      if (req.url === '/__emulator/stats' && req.method === 'GET') return send(200, this.stats);
      if (req.url === '/__emulator/stats/reset' && req.method === 'POST') {
        for (const k of Object.keys(this.stats)) delete this.stats[k];
        return send(200, {});
      }
      if (req.url === '/__emulator/faults') {
        if (req.method === 'POST') {
          const patch = JSON.parse((await this.readBody(req)).toString() || '{}') as Partial<Faults & ScriptedFaults>;
          // Validate everything first, so a bad request changes nothing.
          for (const k of ['latencyMs', 'throttleRate', 'errorRate'] as const) {
            const v = patch[k];
            if (v !== undefined && (typeof v !== 'number' || !(v >= 0) || (k !== 'latencyMs' && v > 1)))
              return send(400, { error: `bad ${k}` });
          }
          for (const k of ['throttleNext', 'errorNext'] as const) {
            const v = patch[k];
            if (v !== undefined && !(Number.isInteger(v) && v >= 0)) return send(400, { error: `bad ${k}` });
          }
          if (patch.hold !== undefined && typeof patch.hold !== 'boolean') return send(400, { error: 'bad hold' });
          if (
            patch.errorStatus !== undefined &&
            !(Number.isInteger(patch.errorStatus) && patch.errorStatus >= 500 && patch.errorStatus <= 599)
          )
            return send(400, { error: 'bad errorStatus' });
          if (patch.unreachable !== undefined && !UNREACHABLE_MODES.includes(patch.unreachable))
            return send(400, { error: 'bad unreachable' });
          if (patch.ops !== undefined && !(Array.isArray(patch.ops) && patch.ops.every((o) => OPERATIONS.includes(o as never))))
            return send(400, { error: 'bad ops' });
          for (const k of ['latencyMs', 'throttleRate', 'errorRate'] as const) if (patch[k] !== undefined) this.faults[k] = patch[k];
          for (const k of ['throttleNext', 'errorNext', 'errorStatus'] as const) if (patch[k] !== undefined) this.scripted[k] = patch[k];
          if (patch.unreachable !== undefined) {
            this.scripted.unreachable = patch.unreachable;
            if (patch.unreachable === 'none') for (const sock of this.silenced) sock.destroy();
          }
          if (patch.ops !== undefined) this.scripted.ops = [...patch.ops];
          if (patch.hold !== undefined) {
            this.scripted.hold = patch.hold;
            if (!patch.hold) this.release();
          }
        }
        return send(200, this.faultState());
      }
      if (req.url === '/__emulator/release' && req.method === 'POST') {
        const body = JSON.parse((await this.readBody(req)).toString() || '{}') as { count?: unknown };
        if (body.count !== undefined && !(Number.isInteger(body.count) && (body.count as number) >= 0))
          return send(400, { error: 'bad count' });
        const released = this.release(body.count as number | undefined);
        return send(200, { released, held: this.held.length });
      }
      return send(404, { error: 'unknown emulator endpoint' });
    } catch {
      return send(400, { error: 'bad request' });
    }
  }
}
