/**
 * The enclave's log channel (log-channel.ts, `enclave.logs`): bounded and non-blocking, nothing secret or
 * oracle-like in it. In-process for the ring itself; against the real enclave bundle (the test standing where
 * the parent would, as in adversarial-parent.test.ts) for what the enclave writes into it: a failed unseal reads
 * the same whichever step failed, the parent's request id reaches the enclave's lines and its KMS call, and a
 * flood of lines drops (counted) without holding up a sign.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseEnvelopedData } from '@nks/shared/cms';
import type { CreateResult, EnclaveApi, EnclaveLogLine, KmsDecryptResult } from '@nks/shared/enclave-api';
import { currentRequestId, silentLogger, withRequestId } from '@nks/shared/log';
import { RpcClient } from '@nks/shared/rpc';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { buildEnvelopedData } from '../../sim/src/kms/cms-writer';
import { channelLine, LogChannel, MAX_FIELD_CHARS, MAX_MESSAGE_CHARS } from '../src/log-channel';
import { ENCLAVE_ADDRESS, digestOf, startEnclaveHarness, type DecryptParams, type EnclaveHarness } from './harness';

const pinoLine = (o: Record<string, unknown>) => JSON.stringify({ level: 30, time: 1, pid: 1, name: 'enclave', msg: 'm', ...o });

describe('the log channel ring (in-process)', () => {
  it('keeps only level, time, message and allow-listed scalar fields, bounded', () => {
    const secret = randomBytes(32).toString('hex');
    const line = channelLine(
      JSON.parse(
        pinoLine({
          msg: 'x'.repeat(5000),
          requestId: 'r-1',
          keyId: 'k'.repeat(1000),
          code: 'KEY_INTEGRITY',
          attempt: 2,
          secret,
          privateKey: secret,
          blob: secret,
          params: { secret },
          err: { type: 'KeystoreError', message: `first line\n${secret}`, stack: `at ${secret}` },
        }),
      ),
      7,
    );
    expect(line).toEqual({
      seq: 7,
      time: 1,
      level: 30,
      msg: expect.stringMatching(/^x+…$/),
      fields: {
        requestId: 'r-1',
        keyId: expect.stringMatching(/^k+…$/),
        code: 'KEY_INTEGRITY',
        attempt: 2,
        err: 'KeystoreError: first line',
      },
    });
    expect(line?.msg).toHaveLength(MAX_MESSAGE_CHARS);
    expect(String(line?.fields.keyId)).toHaveLength(MAX_FIELD_CHARS);
    expect(JSON.stringify(line)).not.toContain(secret);
    expect(channelLine('not an object', 1)).toBeNull();
  });

  it('overwrites the oldest line when full, counts what was never pulled as dropped, and never grows', () => {
    const ch = new LogChannel(10);
    for (let i = 1; i <= 25; i++) ch.write(pinoLine({ msg: `line ${i}` }));
    ch.write('not json'); // ignored, never thrown
    const first = ch.pull(0, 200);
    expect(first.lines.map((l) => l.msg)).toEqual(Array.from({ length: 10 }, (_, i) => `line ${i + 16}`));
    expect(first).toMatchObject({ nextSeq: 26, written: 25, dropped: 15 });
    // Pulled lines are not dropped when overwritten later.
    for (let i = 26; i <= 30; i++) ch.write(pinoLine({ msg: `line ${i}` }));
    const second = ch.pull(25, 3);
    expect(second.lines.map((l) => l.seq)).toEqual([26, 27, 28]);
    expect(second.dropped).toBe(15);
    for (let i = 31; i <= 40; i++) ch.write(pinoLine({ msg: `line ${i}` }));
    // 29 and 30 were never pulled and are now overwritten (21-28 were).
    expect(ch.pull(28, 200)).toMatchObject({ dropped: 17, nextSeq: 41 });
    // A parent that knew an earlier run of the enclave (its `after` is ahead): the lines held, from the oldest.
    expect(ch.pull(1000, 200).lines.map((l) => l.seq)).toEqual(Array.from({ length: 10 }, (_, i) => 31 + i));
  });
});

/** Flips bits of a part of the CMS answer, as a parent rewriting KMS's answer would. */
function tamper(answer: KmsDecryptResult, pick: (parts: ReturnType<typeof parseEnvelopedData>) => Buffer, offset: number, mask: number) {
  const ber = Buffer.from(answer.ciphertextForRecipient, 'base64');
  const part = pick(parseEnvelopedData(ber));
  const at = ber.indexOf(part);
  ber[at + offset] = (ber[at + offset] as number) ^ mask;
  return { ...answer, ciphertextForRecipient: ber.toString('base64') };
}

describe('the log channel of the real enclave', () => {
  let h: EnclaveHarness;
  let parent: RpcClient<EnclaveApi>;
  let after = 0;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-logch-'), { failedOpens: { maxFailures: 10_000, windowMs: 60_000, cooldownMs: 60_000 } });
    // A parent that sends request ids (as the parent does to an enclave serving enclave.logs).
    parent = new RpcClient<EnclaveApi>({
      name: 'test-parent',
      transport: new SimulatedVsockTransport(h.runDir),
      address: ENCLAVE_ADDRESS,
      logger: silentLogger(),
      defaultDeadlineMs: 15_000,
      sendRequestId: () => true,
    });
    await parent.waitConnected(5000);
  }, 60_000);

  afterAll(async () => {
    await parent?.close();
    await h?.stop();
  });

  afterEach(() => {
    h.forge = null;
  });

  /** The channel's lines since the last call. */
  const pullNew = async (): Promise<EnclaveLogLine[]> => {
    const out: EnclaveLogLine[] = [];
    for (;;) {
      const r = await parent.call('enclave.logs', { after });
      out.push(...r.lines);
      after = r.nextSeq - 1;
      if (r.lines.length === 0) return out;
    }
  };

  it('carries the identical lines for a failed unseal whichever step failed, with the request id sent on to KMS', async () => {
    const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const forgeries: Array<[string, (p: DecryptParams) => Promise<KmsDecryptResult> | KmsDecryptResult]> = [
      ['IV tampered', async (p) => tamper(await h.kmsDecrypt(p), (c) => c.iv, 15, 0x01)],
      ['first content block tampered', async (p) => tamper(await h.kmsDecrypt(p), (c) => c.ciphertext, 0, 0x80)],
      ['padding block tampered', async (p) => tamper(await h.kmsDecrypt(p), (c) => c.ciphertext, 31, 0x42)],
      ['RSA-wrapped content key tampered', async (p) => tamper(await h.kmsDecrypt(p), (c) => c.encryptedKey, 100, 0x01)],
      [
        'a content key wrapped to the wrong key',
        (p) => ({ ciphertextForRecipient: buildEnvelopedData(randomBytes(32), otherRsa).toString('base64'), keyId: p.kmsKeyArn }),
      ],
      ['not CMS', (p) => ({ ciphertextForRecipient: Buffer.from('not cms at all').toString('base64'), keyId: p.kmsKeyArn })],
      ['another key id', async (p) => ({ ...(await h.kmsDecrypt(p)), keyId: p.kmsKeyArn.replace(/key\/.*/, 'key/other') })],
    ];
    const seenByKms: Array<string | undefined> = [];
    const shapes: string[] = [];
    await pullNew();
    for (const [i, [, forge]] of forgeries.entries()) {
      const key: CreateResult = await h.create(`uniform-${i}`);
      await parent.call('keys.forget', { keyId: key.keyId }); // the next sign is cold
      // Only this request's Decrypts are forged: the unseal canary a refusal starts (identity/canary.ts) runs
      // outside any request (no request id) and gets honest answers, so it never retires the recipient key
      // under the next request.
      h.forge = (p) => {
        const id = currentRequestId();
        if (id !== 'same-request-id') return h.kmsDecrypt(p);
        seenByKms.push(id);
        return forge(p);
      };
      const refused = await rejection(
        withRequestId('same-request-id', () =>
          parent.call('keys.sign', {
            keyId: key.keyId,
            blob: key.blob,
            record: key.record,
            project: h.defaultProject,
            request: { type: 'digest', digest: digestOf(1) },
          }),
        ),
      );
      expect(refused).toMatchObject({ code: 'KEY_INTEGRITY' });
      h.forge = null;
      // The lines of this request only: seq and time are the only differences allowed.
      const lines = (await pullNew()).filter((l) => l.fields.requestId === 'same-request-id');
      shapes.push(JSON.stringify(lines.map(({ level, msg, fields }) => ({ level, msg, fields }))));
    }
    expect(seenByKms).toEqual(forgeries.map(() => 'same-request-id'));
    expect(JSON.parse(shapes[0] as string)).toEqual([
      { level: 30, msg: 'KMS proxy call', fields: { requestId: 'same-request-id', method: 'kms.decrypt', outcome: 'ok' } },
      { level: 40, msg: 'request refused', fields: { requestId: 'same-request-id', method: 'keys.sign', code: 'KEY_INTEGRITY' } },
    ]);
    expect(new Set(shapes).size).toBe(1);
  }, 60_000);

  it('drops lines beyond its ring when flooded (counted) and never holds up a sign', async () => {
    const key: CreateResult = await h.create('flood-1');
    const before = (await parent.call('enclave.health', {})).counters;
    // 3,000 refused requests, each one warning line: three times the ring, with nobody pulling.
    for (let batch = 0; batch < 6; batch++) {
      const flood = Array.from({ length: 500 }, () => rejection(parent.call('keys.forget', { keyId: 'not a key id!' })));
      // A sign in the middle of the flood is answered.
      const signed = batch === 3 ? await h.signDigest(key, 7) : null;
      for (const refused of await Promise.all(flood)) expect(refused).toMatchObject({ code: 'INVALID_PARAMS' });
      if (signed) expect(signed.address).toBe(key.address);
    }
    const health = await parent.call('enclave.health', {});
    expect(health.counters.logLines - before.logLines).toBeGreaterThanOrEqual(3000);
    expect(health.counters.logDropped - before.logDropped).toBeGreaterThanOrEqual(1000);
    const pulled = await parent.call('enclave.logs', { after });
    expect(pulled.lines.length).toBeLessThanOrEqual(200);
    expect(pulled.dropped).toBe(health.counters.logDropped);
    expect(pulled.counters.signs).toBeGreaterThanOrEqual(1);
    await pullNew();
    // Still signing, after the flood too.
    expect((await h.signDigest(key, 8)).address).toBe(key.address);
  }, 60_000);
});
