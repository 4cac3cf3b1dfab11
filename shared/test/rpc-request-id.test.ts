/**
 * The request id on the RPC envelope (docs/PROTOCOL.md, "Envelopes"): carried by a client whose peer takes it,
 * handed to the handler and made the current request id of its log lines, and refused at the boundary when it
 * is not 1-128 characters of [A-Za-z0-9_.:-] (the peer chose those bytes).
 */
import fs from 'node:fs';
import net from 'node:net';
import { z } from 'zod';
import { KeystoreError } from '../src/errors';
import { encodeFrame, FrameDecoder } from '../src/framing';
import { currentRequestId, REQUEST_ID_RE, withRequestId } from '../src/log';
import { RpcClient, RpcServer, defineMethod, serveApi, type RpcCallContext } from '../src/rpc';
import { SimulatedVsockTransport, simulatedSocketPath } from '../src/transport';
import { captureLogger, tempRunDir, waitFor } from './helpers';

const ADDRESS = 'vsock://16:5100';
const Api = {
  seen: defineMethod<{ ctx: string | null; current: string | null }>()(z.strictObject({})),
  refuse: defineMethod<never>()(z.strictObject({})),
};

describe('request id on the RPC envelope', () => {
  let runDir: string;
  let transport: SimulatedVsockTransport;
  let server: RpcServer;
  const serverLog = captureLogger();
  const calls: RpcCallContext[] = [];

  beforeAll(async () => {
    runDir = tempRunDir();
    transport = new SimulatedVsockTransport(runDir);
    server = new RpcServer({
      name: 'test-server',
      logger: serverLog.logger,
      logRefusals: (code) => (code === 'KEY_INTEGRITY' ? 'warn' : null),
      requestContext: true,
      methods: serveApi(Api, {
        seen: (_p, ctx) => {
          calls.push(ctx);
          serverLog.logger.info('handling seen');
          return { ctx: ctx.requestId ?? null, current: currentRequestId() ?? null };
        },
        refuse: () => {
          throw new KeystoreError('KEY_INTEGRITY', 'detail that must stay out of the log line');
        },
      }),
    });
    await server.listen(transport, ADDRESS);
  });
  afterAll(async () => {
    await server.close(100);
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const client = (sendRequestId?: () => boolean) =>
    new RpcClient<typeof Api>({
      name: 'test-client',
      transport,
      address: ADDRESS,
      logger: captureLogger().logger,
      ...(sendRequestId ? { sendRequestId } : {}),
    });

  it("carries the current request id to the handler, which runs with it as its log lines' requestId", async () => {
    const c = client(() => true);
    try {
      await c.waitConnected(5000);
      const answer = await withRequestId('req-1:a.b_C-9', () => c.call('seen', {}));
      expect(answer).toEqual({ ctx: 'req-1:a.b_C-9', current: 'req-1:a.b_C-9' });
      const line = serverLog.lines().find((l) => l.msg === 'handling seen');
      expect(line?.requestId).toBe('req-1:a.b_C-9');
      // Outside a request: none sent, none current.
      expect(await c.call('seen', {})).toEqual({ ctx: null, current: null });
    } finally {
      await c.close();
    }
  });

  it('sends the id the caller passes (CallOptions.requestId) over the current one; without requestContext the handler has it in ctx only', async () => {
    const plain = new RpcServer({
      name: 'plain-server',
      logger: captureLogger().logger,
      methods: serveApi(Api, {
        seen: (_p, ctx) => ({ ctx: ctx.requestId ?? null, current: currentRequestId() ?? null }),
        refuse: () => {
          throw new KeystoreError('KEY_INTEGRITY', 'no');
        },
      }),
    });
    const address = 'vsock://16:5101';
    await plain.listen(transport, address);
    const c = new RpcClient<typeof Api>({ name: 'c', transport, address, logger: captureLogger().logger, sendRequestId: () => true });
    try {
      await c.waitConnected(5000);
      // Passed explicitly, with no async context at all (the parent's hot path).
      expect(await c.call('seen', {}, { requestId: 'passed-1' })).toEqual({ ctx: 'passed-1', current: null });
      // Passed explicitly inside another request's context: the passed one wins.
      expect(await withRequestId('ambient-1', () => c.call('seen', {}, { requestId: 'passed-2' }))).toEqual({
        ctx: 'passed-2',
        current: null,
      });
      // Not passed: the current one is sent.
      expect(await withRequestId('ambient-2', () => c.call('seen', {}))).toEqual({ ctx: 'ambient-2', current: null });
    } finally {
      await c.close();
      await plain.close(100);
    }
  });

  it('sends no request id to a peer not known to take it (an older release refuses the field)', async () => {
    const c = client();
    try {
      await c.waitConnected(5000);
      expect(await withRequestId('req-2', () => c.call('seen', {}))).toEqual({ ctx: null, current: null });
      const gated = client(() => false);
      await gated.waitConnected(5000);
      expect(await withRequestId('req-2', () => gated.call('seen', {}))).toEqual({ ctx: null, current: null });
      await gated.close();
    } finally {
      await c.close();
    }
  });

  it('logs a refused request with its method, code and request id, never its message', async () => {
    const c = client(() => true);
    try {
      await c.waitConnected(5000);
      await expect(withRequestId('req-3', () => c.call('refuse', {}))).rejects.toMatchObject({ code: 'KEY_INTEGRITY' });
      await waitFor(() => serverLog.lines().some((l) => l.msg === 'request refused'), 5000, 'the refusal line');
      const line = serverLog.lines().find((l) => l.msg === 'request refused');
      expect(line).toMatchObject({ level: 40, method: 'refuse', code: 'KEY_INTEGRITY', requestId: 'req-3' });
      expect(serverLog.text()).not.toContain('detail that must stay out');
    } finally {
      await c.close();
    }
  });

  it('withRequestId ignores an id that is not valid (it never becomes a log field)', () => {
    for (const bad of ['', 'a'.repeat(129), 'a\nb', 'a b', '{"x":1}', 'é']) {
      expect(REQUEST_ID_RE.test(bad)).toBe(false);
      expect(withRequestId(bad, () => currentRequestId())).toBeUndefined();
    }
    expect(withRequestId('a'.repeat(128), () => currentRequestId())).toBe('a'.repeat(128));
  });

  it('refuses a hostile request id at the boundary: INVALID_REQUEST, the handler never runs', async () => {
    const sock = net.connect(simulatedSocketPath(runDir, ADDRESS));
    const decoder = new FrameDecoder();
    const answers: Array<{ id: unknown; error?: { message: string; data?: { code?: string } } }> = [];
    sock.on('data', (chunk) => {
      for (const payload of decoder.push(chunk)) answers.push(JSON.parse(payload.toString('utf8')));
    });
    await new Promise<void>((r) => sock.once('connect', () => r()));
    const hostile: unknown[] = [
      'a'.repeat(129),
      'line\nbreak',
      'tab\there',
      '\u0000',
      '{"level":60,"msg":"forged"}',
      'quote"d',
      '',
      42,
      { nested: 'object' },
      ['array'],
      null,
    ];
    const before = calls.length;
    try {
      hostile.forEach((requestId, i) =>
        sock.write(encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: i + 1, method: 'seen', params: {}, requestId })))),
      );
      await waitFor(() => answers.length === hostile.length, 10_000, 'every answer');
      for (const a of answers) {
        expect(a.error?.data?.code).toBe('INVALID_REQUEST');
        expect(a.error?.message).toMatch(/requestId/);
      }
      expect(calls.length).toBe(before);
      expect(serverLog.text()).not.toContain('forged');
    } finally {
      sock.destroy();
    }
  });
});
