/**
 * The chaos suite's load generator: a fixed number of workers on one keep-alive HTTP agent (loopback), each
 * sending one request after another until told to stop, every request bounded by a client-side timeout (a
 * request that reaches it is HUNG: the server neither answered nor closed). Every acknowledged create
 * (201/200 with a key id) is recorded, so the suite can check afterwards that each still exists and signs.
 */
import http from 'node:http';

export interface Outcome {
  kind: string;
  /** HTTP status; -1: no answer (refused, reset), 0: hung (the client's timeout). */
  status: number;
  /** The API's error code, the socket error's, or HUNG. */
  code?: string;
  ms: number;
  /** When it was sent and answered (ms since the epoch). */
  at: number;
  end: number;
}

export interface Ack {
  keyId: string;
  address: string;
}

export interface Request {
  kind: string;
  method: 'GET' | 'POST';
  path: string;
  body?: unknown;
  token?: boolean;
}

export interface Target {
  url: string;
  token: string;
}

export interface LoadOptions {
  target: () => Target;
  concurrency: number;
  /** The next request of a worker (`n`: how many it sent before). */
  next: (worker: number, n: number) => Request;
  /** A request without an answer by then is hung. */
  clientTimeoutMs: number;
}

export interface Load {
  outcomes: Outcome[];
  acks: Ack[];
  /** Stops sending; resolves once every request under way is settled. */
  stop(): Promise<void>;
}

export async function send(agent: http.Agent, target: Target, req: Request, clientTimeoutMs: number): Promise<Outcome & { body?: any }> {
  const at = Date.now();
  const url = new URL(req.path, target.url);
  const payload = req.body === undefined ? undefined : JSON.stringify(req.body);
  return new Promise((resolve) => {
    let settled = false;
    const done = (o: { status: number; code?: string; body?: any }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const end = Date.now();
      resolve({ kind: req.kind, ...o, ms: end - at, at, end });
    };
    const r = http.request(
      url,
      {
        method: req.method,
        agent,
        headers: {
          ...(req.token === false ? {} : { authorization: `Bearer ${target.token}` }),
          ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e: NodeJS.ErrnoException) => done({ status: -1, code: e.code ?? 'ERROR' }));
        res.on('end', () => {
          let body: any;
          try {
            body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            body = undefined;
          }
          const status = res.statusCode ?? -1;
          done({ status, ...(status >= 400 ? { code: String(body?.error?.code ?? status) } : {}), body });
        });
      },
    );
    const timer = setTimeout(() => {
      done({ status: 0, code: 'HUNG' });
      r.destroy();
    }, clientTimeoutMs);
    r.on('error', (e: NodeJS.ErrnoException) => done({ status: -1, code: e.code ?? 'ERROR' }));
    r.end(payload);
  });
}

export function startLoad(opts: LoadOptions): Load {
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency });
  const outcomes: Outcome[] = [];
  const acks: Ack[] = [];
  let running = true;
  const worker = async (w: number) => {
    for (let n = 0; running; n++) {
      const req = opts.next(w, n);
      const o = await send(agent, opts.target(), req, opts.clientTimeoutMs);
      const { body, ...outcome } = o;
      outcomes.push(outcome);
      if (req.kind === 'create' && (o.status === 201 || o.status === 200) && typeof body?.keyId === 'string')
        acks.push({ keyId: body.keyId, address: body.address });
      // Nothing listening (a restart): do not spin.
      if (o.status === -1) await new Promise((r) => setTimeout(r, 50));
    }
  };
  const workers = Array.from({ length: opts.concurrency }, (_, w) => worker(w));
  return {
    outcomes,
    acks,
    async stop() {
      running = false;
      await Promise.all(workers);
      agent.destroy();
    },
  };
}
