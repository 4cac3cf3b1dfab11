/**
 * How fast the caller API refuses requests beyond `api.maxInFlight` under 512 connections (parent/README.md,
 * "Overload"): a server process (the real ApiServer with its access log, and a sign route whose answers never
 * come, so the cap of 64 stays full) and this load process: 512 keep-alive connections, opened first, each
 * sending POST /v1/keys/{id}/sign (a 300-byte body) at its share of RATE requests per second (open loop) for
 * DURATION ms. Prints the answers' latency (request's first byte, a reconnect included, to the whole answer),
 * p50/p99/max, the reconnects, and the server's CPU time per refusal.
 *
 *   npx esbuild scripts/overload-latency.ts --bundle --platform=node --tsconfig=tsconfig.base.json \
 *     --outfile=/tmp/overload-latency.js && RATE=1000 DURATION=8000 node /tmp/overload-latency.js
 */
import fs from 'node:fs';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { createLogger } from '@nks/shared/log';
import { hashToken, TokenAuth } from '../parent/src/api/auth';
import { ApiServer } from '../parent/src/api/server';
import { parseParentConfig } from '../parent/src/config';
import { Metrics } from '../parent/src/metrics';

const TOKEN = 'nks_bench_sign';
const CONNECTIONS = 512;
const CAP = 64;
const DURATION = Number(process.env.DURATION ?? 10_000);

async function server(): Promise<void> {
  const config = parseParentConfig({
    api: { listen: { host: '127.0.0.1', port: 0 }, maxInFlight: CAP },
    tokens: [{ name: 'sign', sha256: hashToken(TOKEN), scopes: ['keys:sign'] }],
    database: { path: '/nonexistent/keys.db' },
    kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
  });
  const metrics = new Metrics({
    keyCounts: async () => ({ total: 0, disabled: 0, withoutRecord: 0, pending: 0 }),
    enclaveHealth: async () => null,
  });
  const logger = createLogger({ name: 'parent', level: 'info', redact: false, bufferBytes: 8192 });
  const api = new ApiServer({
    config: config.api,
    routes: (app) => {
      app.post(
        '/v1/keys/:keyId/sign',
        { config: { name: '/v1/keys/{keyId}/sign', scope: 'keys:sign' } },
        () => new Promise(() => undefined),
      );
    },
    auth: new TokenAuth(config.tokens),
    metrics,
    logger,
    accessLog: logger.child({ component: 'access' }),
    readiness: async () => ({ ready: true, checks: {} }),
  });
  const url = await api.listen();
  process.stderr.write(`${url}\n`);
  const before = process.cpuUsage();
  process.on('SIGTERM', () => {
    const u = process.cpuUsage(before);
    process.stderr.write(`${JSON.stringify({ cpuMs: Math.round((u.user + u.system) / 1000) })}\n`);
    process.exit(0);
  });
}

async function load(): Promise<void> {
  const child = spawn(process.execPath, [__filename, 'server'], { stdio: ['ignore', fs.openSync('/dev/null', 'w'), 'pipe'] });
  const stderr = child.stderr;
  if (!stderr) throw new Error('the server process has no stderr');
  const url = await new Promise<string>((resolve) => stderr.once('data', (d: Buffer) => resolve(d.toString().trim())));
  const port = Number(new URL(url).port);
  const body = JSON.stringify({ type: 'message', message: 'x'.repeat(260) });
  const request = `POST /v1/keys/k_AAAAAAAAAAAAAAAAAAAAAA/sign HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
  const held: net.Socket[] = [];
  for (let i = 0; i < CAP; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.write(request);
    held.push(s);
  }
  await new Promise((r) => setTimeout(r, 500));
  const latencies: number[] = [];
  const statuses = new Map<string, number>();
  let stop = false;
  // Open loop: each connection sends at its share of RATE requests per second, whatever the answers' latency.
  const RATE = Number(process.env.RATE ?? 1000);
  const gap = (CONNECTIONS / RATE) * 1000;
  let connected = 0;
  let reconnects = 0;
  const worker = async (_: unknown, i: number) => {
    let socket: net.Socket | undefined = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => socket!.once('connect', resolve).once('error', reject));
    connected += 1;
    while (connected < CONNECTIONS) await new Promise((r) => setTimeout(r, 20));
    let next = Date.now() + (i * gap) / CONNECTIONS;
    while (!stop) {
      const wait = next - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      next += gap;
      const started = process.hrtime.bigint();
      if (!socket || socket.destroyed) {
        reconnects += 1;
        socket = net.connect(port, '127.0.0.1');
        socket.setNoDelay(true);
        await new Promise<void>((resolve, reject) => socket!.once('connect', resolve).once('error', reject));
      }
      const s = socket;
      const answer = await new Promise<string>((resolve) => {
        let buf = '';
        const onData = (d: Buffer) => {
          buf += d.toString();
          const end = buf.indexOf('\r\n\r\n');
          const len = Number(/content-length: (\d+)/i.exec(buf)?.[1] ?? -1);
          if (end !== -1 && len >= 0 && buf.length >= end + 4 + len) {
            s.off('data', onData);
            resolve(buf);
          }
        };
        const onClose = () => resolve(buf || 'closed');
        s.on('data', onData);
        s.once('close', onClose);
        s.write(request);
      }).finally(() => {
        s.removeAllListeners('data');
        s.removeAllListeners('close');
      });
      latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
      const status = answer.slice(9, 12);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (/connection: close/i.test(answer)) s.destroy();
    }
    socket?.destroy();
  };
  const workers = Array.from({ length: CONNECTIONS }, worker);
  await new Promise((r) => setTimeout(r, DURATION));
  stop = true;
  await Promise.all(workers);
  const cpuLine = new Promise<string>((resolve) => stderr.once('data', (d: Buffer) => resolve(d.toString().trim())));
  child.kill('SIGTERM');
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!.toFixed(2);
  console.log(
    JSON.stringify({
      reconnects,
      rate: RATE,
      connections: CONNECTIONS,
      cap: CAP,
      requests: latencies.length,
      perSecond: Math.round(latencies.length / (DURATION / 1000)),
      statuses: Object.fromEntries(statuses),
      p50ms: q(0.5),
      p99ms: q(0.99),
      maxms: q(1),
    }),
  );
  for (const s of held) s.destroy();
  const cpu = await cpuLine;
  child.kill();
  const { cpuMs } = JSON.parse(cpu) as { cpuMs: number };
  console.log(JSON.stringify({ serverCpuMs: cpuMs, serverCpuUsPerRequest: Math.round((cpuMs * 1000) / latencies.length) }));
}

void (process.argv[2] === 'server' ? server() : load());
