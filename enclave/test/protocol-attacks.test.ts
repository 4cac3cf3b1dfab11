/**
 * A compromised parent against the real enclave bundle, aimed at the typed protocol: error objects with
 * data.code/data.reason, enclave.hello, the serveApi method tables, the typed KMS-proxy client. The KMS proxy
 * here is a raw frame peer, so the parent can answer kms.decrypt with any envelope at all (not only what
 * RpcServer would produce). Written by an independent attacker's review of the change.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { KMSClient } from '@aws-sdk/client-kms';
import type { CreateResult, EnclaveHealth } from '@nks/shared/enclave-api';
import { FramedConnection } from '@nks/shared/rpc';
import { SimulatedVsockTransport, type Listener } from '@nks/shared/transport';
import { tempRunDir } from '@nks/shared-test/helpers';
import { attestedDecrypt, enclaveConfigFor, startPlatform, writeJson, type Platform } from '../../test/support/platform';
import { startProgram, type Running } from '../../test/support/process';
import { RawPeer } from '../../test/support/raw-peer';

const ENCLAVE = 'vsock://16:5000';
const PROXY = 'vsock://3:8000';
const digest = (n: number) => `0x${n.toString(16).padStart(64, '0')}`;

type Req = { id: number; method: string; params: { kmsKeyArn: string; ciphertextBlob: string; attestationDocument: string } };
/** What the raw proxy sends for one kms.decrypt request: raw envelopes (any JSON), or nothing. */
type Responder = (req: Req, genuine: () => Promise<{ ciphertextForRecipient: string; keyId: string }>) => Promise<unknown[]> | unknown[];

describe('compromised parent vs. the typed protocol (real enclave bundle)', () => {
  let runDir: string;
  let platform: Platform;
  let kms: KMSClient;
  let enclave: Running;
  let listener: Listener;
  let responder: Responder | null = null;
  const asked: Req[] = [];

  beforeAll(async () => {
    runDir = tempRunDir('nks-pattack-');
    platform = await startPlatform(runDir);
    kms = platform.kms();
    const transport = new SimulatedVsockTransport(runDir);
    const genuineFor = (p: Req['params']) => () => attestedDecrypt(kms, p);
    listener = await transport.listen(PROXY, (raw) => {
      const framed: FramedConnection = new FramedConnection(raw, {
        message: (msg) => {
          const req = msg as Req;
          asked.push(req);
          void (async () => {
            const out = responder
              ? await responder(req, genuineFor(req.params))
              : [{ jsonrpc: '2.0', id: req.id, result: await genuineFor(req.params)() }];
            for (const m of out) framed.send(m);
          })();
        },
        close: () => undefined,
      });
    });
    const configFile = path.join(runDir, 'enclave.json');
    writeJson(
      configFile,
      enclaveConfigFor(platform, runDir, {
        listen: ENCLAVE,
        kmsProxy: PROXY,
        failedOpens: { maxFailures: 10_000, windowMs: 60_000, cooldownMs: 60_000 },
        // At most one unseal canary an hour (identity/canary.ts): tests that count Decrypts spend it first.
        limits: { unsealCanaryMs: 3_600_000 },
      }),
    );
    enclave = startProgram('enclave', ['--config', configFile]);
    await enclave.waitForLog((e) => e.msg === 'enclave ready');
  }, 90_000);

  afterAll(async () => {
    await enclave?.stop();
    await listener?.close();
    kms?.destroy();
    await platform?.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  afterEach(() => {
    responder = null;
  });

  const peer = async () => {
    const p = new RawPeer();
    await p.connect(runDir, ENCLAVE);
    return p;
  };
  const health = async (p: RawPeer) => (await p.callJson('enclave.health', {})).result as EnclaveHealth;
  const createParams = (keyId: string) => ({ keyId, project: platform.identity.defaultProject, subject: null });
  const signParams = (made: CreateResult, n: number) => ({
    keyId: made.keyId,
    blob: made.blob,
    record: made.record,
    project: platform.identity.defaultProject,
    request: { type: 'digest', digest: digest(n) },
  });

  it('answers every Object.prototype name as an unknown method, and stays whole', async () => {
    const p = await peer();
    try {
      const names = [
        '__proto__',
        'constructor',
        'toString',
        'valueOf',
        'hasOwnProperty',
        'isPrototypeOf',
        'propertyIsEnumerable',
        'toLocaleString',
        '__defineGetter__',
        '__lookupGetter__',
        '__defineSetter__',
        '__lookupSetter__',
      ];
      for (const name of names) {
        const res = await p.callJson(name, {});
        expect(res.error?.data).toEqual({ code: 'METHOD_NOT_FOUND', retryable: false, reason: 'METHOD_NOT_FOUND' });
        expect(res.error?.message).toBe(`unknown method "${name}"`);
      }
      expect((await health(p)).status).toBe('ok');
    } finally {
      p.close();
    }
  });

  it('refuses __proto__/constructor in params: no pollution, required fields still required', async () => {
    const p = await peer();
    try {
      const polluted = await p.callJson('keys.create', JSON.parse('{"__proto__": {"keyId": "polluted", "attest": true}}'));
      expect(polluted.error?.data?.code).toBe('INVALID_PARAMS');
      const hello = await p.callJson('enclave.hello', JSON.parse('{"__proto__": {"protocolVersion": 2}}'));
      expect(hello.error?.data?.code).toBe('INVALID_PARAMS');
      const ctor = await p.callJson('keys.create', { ...createParams('ctor-1'), constructor: { prototype: { attest: true } } });
      expect(ctor.error?.data?.code).toBe('INVALID_PARAMS');
      // Had Object.prototype been polluted with keyId, `{}` would now validate.
      expect((await p.callJson('keys.create', {})).error?.data?.code).toBe('INVALID_PARAMS');
      expect((await p.callJson('enclave.hello', {})).error?.data?.code).toBe('INVALID_PARAMS');
      expect(Object.keys((await health(p)).counters.errors).every((k) => /^[A-Z_]+$/.test(k))).toBe(true);
      // A "__proto__" params field is an unknown field like any other: refused.
      const extra = await p.callJson('keys.forget', JSON.parse('{"keyId": "nobody", "__proto__": {"x": 1}}'));
      expect(extra.error?.data?.code).toBe('INVALID_PARAMS');
      expect((await p.callJson('keys.forget', { keyId: 'nobody', x: 1 })).error?.data?.code).toBe('INVALID_PARAMS');
    } finally {
      p.close();
    }
  });

  it('the agreed version changes nothing: same bytes for a forged KMS answer and a parent KMS error, one failed open each', async () => {
    const made = (await (await peer()).callJson('keys.create', createParams('pa-victim'))).result as CreateResult;
    const conns = await Promise.all([peer(), peer(), peer(), peer()]);
    try {
      await conns[1].callJson('enclave.hello', { protocolVersion: 2 }); // refused: nothing agreed
      await conns[2].callJson('enclave.hello', { protocolVersion: 3 });
      await conns[3].callJson('enclave.hello', { protocolVersion: 1_000_000 });
      const forged = new Set<string>();
      const kmsErr = new Set<string>();
      const denied: Responder = (req) => [
        {
          jsonrpc: '2.0',
          id: req.id,
          error: {
            code: -32010,
            message: 'KMS AccessDeniedException: no',
            data: { code: 'KMS_ACCESS_DENIED', retryable: false, reason: 'KMS_ACCESS_DENIED' },
          },
        },
      ];
      // A refusal from KMS starts the unseal canary, one Decrypt at most once an hour here: spend it before
      // counting, so that the loop counts only its signs' own Decrypts.
      const base = (await health(conns[0])).counters;
      responder = denied;
      await conns[0].call('keys.sign', signParams(made, 99));
      for (let t = 0; ; t++) {
        const c = (await health(conns[0])).counters;
        if (c.unsealCanaries > base.unsealCanaries && c.kmsErrors - base.kmsErrors >= 2) break;
        if (t > 200) throw new Error('the unseal canary did not run');
        await new Promise((r) => setTimeout(r, 25));
      }
      for (const [i, c] of conns.entries()) {
        const before = (await health(c)).counters;
        responder = (req) => [{ jsonrpc: '2.0', id: req.id, result: { ciphertextForRecipient: 'AAAA', keyId: req.params.kmsKeyArn } }];
        forged.add((await c.call('keys.sign', signParams(made, i))).toString());
        responder = denied;
        kmsErr.add((await c.call('keys.sign', signParams(made, i))).toString());
        const after = (await health(c)).counters;
        expect(after.failedOpens - before.failedOpens).toBe(1);
        expect(after.kmsErrors - before.kmsErrors).toBe(1);
      }
      expect(forged.size).toBe(1);
      expect(kmsErr.size).toBe(1);
      expect(JSON.parse([...forged][0]!).error.message).toBe('the key could not be unsealed');
    } finally {
      for (const c of conns) c.close();
    }
  }, 60_000);

  it('takes no typed KMS result on trust: every malformed envelope/result is the one fixed "no" and one failed open', async () => {
    const p = await peer();
    try {
      const made = (await p.callJson('keys.create', createParams('pa-shape'))).result as CreateResult;
      const shapes: Array<[string, (id: number, arn: string) => unknown]> = [
        ['result null', (id) => ({ jsonrpc: '2.0', id, result: null })],
        ['result a string', (id) => ({ jsonrpc: '2.0', id, result: 'MIIB' })],
        ['result an array', (id) => ({ jsonrpc: '2.0', id, result: ['x'] })],
        ['result with a numeric ciphertext', (id, arn) => ({ jsonrpc: '2.0', id, result: { ciphertextForRecipient: 5, keyId: arn } })],
        [
          'result with __proto__ fields',
          (id, arn) => JSON.parse(`{"jsonrpc":"2.0","id":${id},"result":{"__proto__":{"ciphertextForRecipient":"AAAA"},"keyId":"${arn}"}}`),
        ],
      ];
      const answers = new Set<string>();
      const before = (await health(p)).counters;
      for (const [, shape] of shapes) {
        responder = (req) => [shape(req.id, req.params.kmsKeyArn)];
        answers.add((await p.call('keys.sign', signParams(made, 1))).toString());
      }
      const after = (await health(p)).counters;
      expect(answers.size).toBe(1);
      expect(JSON.parse([...answers][0]!).error).toEqual({
        code: -32001,
        message: 'the key could not be unsealed',
        data: { code: 'KEY_INTEGRITY', retryable: false, reason: 'KEY_INTEGRITY' },
      });
      expect(after.failedOpens - before.failedOpens).toBe(shapes.length);
      expect(after.signs).toBe(before.signs);
      // An envelope with neither result nor error is not an answer at all (the client ignores it): TIMEOUT, no open.
      responder = (req) => [{ jsonrpc: '2.0', id: req.id }];
      const none = await p.callJson('keys.sign', signParams(made, 1));
      expect(none.error?.data?.code).toBe('TIMEOUT');
      expect((await health(p)).counters.failedOpens).toBe(after.failedOpens);
    } finally {
      p.close();
    }
  }, 60_000);

  it('reads a parent error object as data.code, else data.reason, else INTERNAL; never a prototype name', async () => {
    const p = await peer();
    try {
      const made = (await p.callJson('keys.create', createParams('pa-errs'))).result as CreateResult;
      const cases: Array<[unknown, string]> = [
        [{ code: 'KEY_INTEGRITY', reason: 'OVERLOADED', retryable: false }, 'KEY_INTEGRITY'],
        [{ code: 'NOPE', reason: 'KMS_THROTTLED' }, 'KMS_THROTTLED'],
        [{ code: '__proto__', reason: 'constructor' }, 'INTERNAL'],
        [{ code: 'toString', reason: 'hasOwnProperty' }, 'INTERNAL'],
        ['KEY_INTEGRITY', 'INTERNAL'],
        [null, 'INTERNAL'],
        [JSON.parse('{"__proto__":{"code":"KEY_INTEGRITY"}}'), 'INTERNAL'],
      ];
      const before = (await health(p)).counters;
      for (const [data, code] of cases) {
        responder = (req) => [{ jsonrpc: '2.0', id: req.id, error: { code: -1, message: 'parent text', data } }];
        const res = await p.callJson('keys.sign', signParams(made, 2));
        expect(res.error?.data?.code).toBe(code);
      }
      const after = await health(p);
      // Errors from the proxy are the parent's own words: no failed open, no recipient retirement.
      expect(after.counters.failedOpens).toBe(before.failedOpens);
      expect(Object.keys(after.counters.errors).every((k) => /^[A-Z_]+$/.test(k))).toBe(true);
    } finally {
      p.close();
    }
  }, 60_000);

  it('ignores answers for ids it has not asked and duplicate answers: one opening per Decrypt', async () => {
    const p = await peer();
    try {
      const made = (await p.callJson('keys.create', createParams('pa-dup'))).result as CreateResult;
      const before = (await health(p)).counters;
      responder = async (req, genuine) => {
        const g = await genuine();
        const bogus = { ciphertextForRecipient: 'AAAA', keyId: req.params.kmsKeyArn };
        // A forged answer for the *next* id first, then the genuine answer, then a forged duplicate.
        return [
          { jsonrpc: '2.0', id: req.id + 1, result: bogus },
          { jsonrpc: '2.0', id: req.id, result: g },
          { jsonrpc: '2.0', id: req.id, result: bogus },
        ];
      };
      const ok = await p.callJson('keys.sign', signParams(made, 3));
      expect((ok.result as { address: string }).address).toBe(made.address);
      await p.callJson('keys.forget', { keyId: 'pa-dup' });
      responder = null; // genuine
      const n = asked.length;
      const ok2 = await p.callJson('keys.sign', signParams(made, 4));
      expect((ok2.result as { address: string }).address).toBe(made.address);
      expect(asked.length).toBe(n + 1);
      const after = (await health(p)).counters;
      expect(after.failedOpens).toBe(before.failedOpens);
    } finally {
      p.close();
    }
  }, 60_000);

  it('hello holds no per-connection state: 50 connections x 20 hellos leave nothing behind', async () => {
    const p = await peer();
    const before = await health(p);
    const conns = await Promise.all(Array.from({ length: 50 }, () => peer()));
    for (const c of conns) for (let i = 0; i < 20; i++) await c.callJson('enclave.hello', { protocolVersion: (i % 3) + 3 });
    for (const c of conns) c.close();
    let after = await health(p);
    const until = Date.now() + 5000;
    while (after.counters.rpcConnections > before.counters.rpcConnections && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 20));
      after = await health(p);
    }
    expect(after.counters.rpcConnections).toBe(before.counters.rpcConnections);
    expect(after.counters.errors).toEqual(before.counters.errors);
    p.close();
  }, 60_000);
});
