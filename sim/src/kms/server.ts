/**
 * The KMS emulator's HTTP front: AWS JSON 1.1 (`POST /`, `X-Amz-Target: TrentService.<Op>`,
 * `application/x-amz-json-1.1`), as the real @aws-sdk/client-kms sends it with an endpoint override.
 * The SigV4 signature is not checked; the access key id in it names the caller (see `principals`).
 *
 * Fault injection (latency, throttling, internal errors) applies to every operation. Tests and benchmarks
 * read per-operation call counts and change faults at run time under `/__emulator/`.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Logger } from '../../../shared/src/log';
import { KmsEmulator, OPERATIONS, type Caller } from './emulator';
import { KmsError } from './errors';

export interface Faults {
  latencyMs: number;
  /** Probability in [0, 1] of answering ThrottlingException. */
  throttleRate: number;
  /** Probability in [0, 1] of answering KMSInternalException (HTTP 500). */
  errorRate: number;
}

export interface ServerOptions {
  emulator: KmsEmulator;
  logger: Logger;
  faults: Faults;
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

  constructor(private readonly options: ServerOptions) {
    this.faults = { ...options.faults };
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

  close(): Promise<void> {
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
    res.writeHead(status, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(text), 'x-amzn-requestid': randomUUID(), ...extra });
    res.end(text);
  }

  private sendError(res: http.ServerResponse, err: KmsError): void {
    this.send(res, err.status, { __type: err.type, message: err.message }, { 'x-amzn-errortype': err.type });
  }

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.url?.startsWith('/__emulator/')) return this.onAdmin(req, res);
    const target = String(req.headers['x-amz-target'] ?? '');
    const op = target.startsWith('TrentService.') ? target.slice('TrentService.'.length) : '';
    try {
      if (req.method !== 'POST' || req.url !== '/') throw new KmsError('UnknownOperationException', 'Only POST / is served.');
      if (!OPERATIONS.includes(op as never)) throw new KmsError('UnknownOperationException', `Unknown operation ${target || '(no X-Amz-Target)'}`);
      const raw = await this.readBody(req);
      let body: unknown;
      try {
        body = raw.length ? JSON.parse(raw.toString('utf8')) : {};
      } catch {
        throw new KmsError('SerializationException', 'The request body is not valid JSON.');
      }
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new KmsError('SerializationException', 'The request body is not a JSON object.');
      await this.injectFaults();
      const out = await this.options.emulator.handle(op, body, this.callerOf(req));
      this.record(op);
      this.send(res, 200, out);
      this.options.logger.debug({ op }, 'kms call');
    } catch (err) {
      const kmsErr = err instanceof KmsError ? err : new KmsError('KMSInternalException', 'An internal error occurred.');
      if (!(err instanceof KmsError)) this.options.logger.error({ err, op }, 'emulator failure');
      this.record(op || 'unknown', kmsErr.type);
      this.options.logger.info({ op, error: kmsErr.type }, 'kms call failed');
      this.sendError(res, kmsErr);
    }
  }

  private async injectFaults(): Promise<void> {
    const { latencyMs, throttleRate, errorRate } = this.faults;
    if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
    const random = this.options.random ?? Math.random;
    if (throttleRate > 0 && random() < throttleRate) {
      throw new KmsError('ThrottlingException', 'You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.');
    }
    if (errorRate > 0 && random() < errorRate) throw new KmsError('KMSInternalException', 'An internal error occurred (injected).');
  }

  /** GET stats, POST stats/reset, GET|POST faults. Never part of the KMS API. */
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
          const patch = JSON.parse((await this.readBody(req)).toString() || '{}') as Partial<Faults>;
          for (const k of ['latencyMs', 'throttleRate', 'errorRate'] as const) {
            const v = patch[k];
            if (v !== undefined) {
              if (typeof v !== 'number' || v < 0 || (k !== 'latencyMs' && v > 1)) return send(400, { error: `bad ${k}` });
              this.faults[k] = v;
            }
          }
        }
        return send(200, this.faults);
      }
      return send(404, { error: 'unknown emulator endpoint' });
    } catch {
      return send(400, { error: 'bad request' });
    }
  }
}
