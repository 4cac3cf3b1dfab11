/**
 * The adversarial-parent suite: the test stands where a fully compromised parent would, against the real
 * enclave bundle over (simulated) vsock. It owns the KMS proxy (sees every Decrypt the enclave asks for,
 * answers whatever it likes, and can ask KMS itself with the enclave's relayed attestation document), the
 * database (so every blob), and the enclave's RPC port, where it reads the raw bytes of every answer.
 *
 * What must hold: the parent learns nothing but "no" from a failed unseal (the same bytes whatever failed),
 * each recipient key opens at most one forged answer, a padding-oracle attack makes no progress, and no
 * method lets the parent choose the enclave's evidence (attestation user_data).
 */
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { recoverAddress } from 'viem';
import { decodeAttestationDocument, verifyAttestation } from '@nks/shared/attestation';
import { verifyBirthAttestation } from '@nks/shared/attestation/birth';
import { birthContent, birthUserData, USER_DATA_TAGS, taggedUserData } from '@nks/shared/attestation/user-data';
import { decodeBlobBase64 } from '@nks/shared/blob';
import { canonicalCbor, decodeCbor, encodeCbor } from '@nks/shared/cbor';
import { parseEnvelopedData } from '@nks/shared/cms';
import { encodeFrame, FrameDecoder } from '@nks/shared/framing';
import type { CreateResult, KmsDecryptResult } from '@nks/shared/enclave-api';
import { simulatedSocketPath } from '@nks/shared/transport';
import { buildEnvelopedData } from '../../sim/src/kms/cms-writer';
import { rejection, tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { RawPeer } from '../../test/support/raw-peer';
import { ENCLAVE_CONFIG_DEFAULTS } from '../src/config';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import { SocketNsmTransport } from '../src/nsm/socket';
import { ENCLAVE_ADDRESS, startEnclaveHarness, type DecryptParams, type EnclaveHarness } from './harness';

const digest = (n: number) => `0x${n.toString(16).padStart(64, '0')}`;

/** The recipient key a Decrypt request's attestation document carries (what KMS encrypts to). */
function recipientOf(p: DecryptParams): KeyObject {
  const { document } = decodeAttestationDocument(Buffer.from(p.attestationDocument, 'base64'));
  return createPublicKey({ key: document.publicKey as Buffer, format: 'der', type: 'spki' });
}
const recipientHex = (p: DecryptParams) => recipientOf(p).export({ type: 'spki', format: 'der' }).toString('hex');

/** Flips bits of `part` (a unique byte run inside `ber`) at `offset`, as a parent rewriting KMS's answer would. */
function tamper(
  answer: KmsDecryptResult,
  pick: (parts: ReturnType<typeof parseEnvelopedData>) => Buffer,
  offset: number,
  mask: number,
): KmsDecryptResult {
  const ber = Buffer.from(answer.ciphertextForRecipient, 'base64');
  const part = pick(parseEnvelopedData(ber));
  const at = ber.indexOf(part);
  if (at < 0) throw new Error('part not found in the answer');
  ber[at + offset] = (ber[at + offset] as number) ^ mask;
  return { ...answer, ciphertextForRecipient: ber.toString('base64') };
}

const cms = (p: DecryptParams, plaintext: Uint8Array, forgery?: Parameters<typeof buildEnvelopedData>[2]): KmsDecryptResult => ({
  ciphertextForRecipient: buildEnvelopedData(plaintext, recipientOf(p), forgery).toString('base64'),
  keyId: p.kmsKeyArn,
});

describe('adversarial parent', () => {
  let h: EnclaveHarness;
  let peer: RawPeer;

  beforeAll(async () => {
    // No failed-open limit here, so every forgery reaches the opening code; the limit has its own tests below.
    h = await startEnclaveHarness(tempRunDir('nks-adv-'), { failedOpens: { maxFailures: 10_000, windowMs: 60_000, cooldownMs: 60_000 } });
    peer = new RawPeer();
    await peer.connect(h.runDir, ENCLAVE_ADDRESS);
  }, 60_000);

  afterAll(async () => {
    peer?.close();
    await h?.stop();
  });

  afterEach(() => {
    h.forge = null;
  });

  const made = new Map<string, CreateResult>();
  const create = async (keyId: string, attest = false) => {
    const key = await h.create(keyId, { attest });
    made.set(keyId, key);
    return key;
  };
  const health = () => h.client.call('enclave.health', {});
  const signParams = (keyId: string, blob: string, n: number) => ({
    keyId,
    blob,
    record: (made.get(keyId) as CreateResult).record,
    project: h.defaultProject,
    request: { type: 'digest', digest: digest(n) },
  });
  const rawSign = (keyId: string, blob: string, n = 1) => peer.call('keys.sign', signParams(keyId, blob, n));
  const sign = (keyId: string, blob: string, n = 1) => h.signDigest({ keyId, blob, record: (made.get(keyId) as CreateResult).record }, n);

  const restart = async (failedOpens: object) => {
    peer.close();
    await h.restartEnclave({ failedOpens });
    peer = new RawPeer();
    await peer.connect(h.runDir, ENCLAVE_ADDRESS);
  };

  it('answers every forged or tampered KMS answer with the same bytes, and never opens two with one recipient key', async () => {
    const victim = await create('victim-1');
    const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const dek = () => randomBytes(32);
    type Forgery = [string, (p: DecryptParams) => Promise<KmsDecryptResult> | KmsDecryptResult];
    const forgeries: Forgery[] = [
      ['IV tampered', async (p) => tamper(await h.kmsDecrypt(p), (c) => c.iv, 15, 0x01)],
      ['first content block tampered', async (p) => tamper(await h.kmsDecrypt(p), (c) => c.ciphertext, 0, 0x80)],
      [
        'padding block tampered (valid padding 0x01 on the last byte)',
        async (p) => tamper(await h.kmsDecrypt(p), (c) => c.ciphertext, 31, 0x11),
      ],
      ['padding block tampered (invalid padding)', async (p) => tamper(await h.kmsDecrypt(p), (c) => c.ciphertext, 31, 0x42)],
      // Only the padding changes; the data key stays genuine: refused all the same (exact shape).
      ['last ciphertext block tampered', async (p) => tamper(await h.kmsDecrypt(p), (c) => c.ciphertext, 40, 0x04)],
      ['RSA-wrapped content key tampered', async (p) => tamper(await h.kmsDecrypt(p), (c) => c.encryptedKey, 100, 0x01)],
      ['a made-up data key with valid padding', (p) => cms(p, dek())],
      ['a data key with bad padding', (p) => cms(p, Buffer.concat([dek(), Buffer.alloc(16)]), { pad: false })],
      ['a 33-byte data key (48 bytes of content, wrong padding)', (p) => cms(p, randomBytes(33))],
      ['a 48-byte data key (64 bytes of content)', (p) => cms(p, randomBytes(48))],
      ['a 16-byte data key (32 bytes of content)', (p) => cms(p, randomBytes(16))],
      ['a 16-byte content key', (p) => cms(p, dek(), { contentKey: randomBytes(16) })],
      [
        'a content key wrapped to another RSA key',
        (p) => ({ ciphertextForRecipient: buildEnvelopedData(dek(), otherRsa).toString('base64'), keyId: p.kmsKeyArn }),
      ],
      ['not CMS', (p) => ({ ciphertextForRecipient: Buffer.from('not cms at all').toString('base64'), keyId: p.kmsKeyArn })],
      [
        'a genuine answer labelled with another key id',
        async (p) => ({ ...(await h.kmsDecrypt(p)), keyId: p.kmsKeyArn.replace(/key\/.*/, 'key/other') }),
      ],
      ['a genuine answer with an extra field', async (p) => ({ ...(await h.kmsDecrypt(p)), extra: 1 }) as KmsDecryptResult],
      // Blobs the parent makes itself (its own key under the victim's id and address) no longer reach KMS: the
      // key's signed record names the genuine blob (adversarial-records.test.ts). The opening code's checks for
      // such blobs (secret 0, the curve order, the stand-in address) are in unseal.mutation.test.ts.
    ];

    const before = await health();
    const answers = new Map<string, string[]>();
    const recipients = new Set<string>();
    for (const [name, forge] of forgeries) {
      const seen = h.proxyRequests.length;
      h.forge = forge;
      const answer = (await rawSign('victim-1', victim.blob)).toString('utf8');
      h.forge = null;
      answers.set(answer, [...(answers.get(answer) ?? []), name]);
      // Each forgery reached the enclave's opening code through exactly one Decrypt, for a key never used before.
      expect(h.proxyRequests.length).toBe(seen + 1);
      recipients.add(recipientHex(h.proxyRequests[seen] as DecryptParams));
    }
    expect([...answers.values()]).toEqual([forgeries.map(([name]) => name)]);
    const [only] = [...answers.keys()];
    expect(JSON.parse(only as string)).toEqual({
      jsonrpc: '2.0',
      id: 1,
      error: {
        code: -32001,
        message: 'the key could not be unsealed',
        data: { code: 'KEY_INTEGRITY', retryable: false, reason: 'KEY_INTEGRITY' },
      },
    });
    expect(recipients.size).toBe(forgeries.length);

    const after = await health();
    expect(after.counters.failedOpens - before.counters.failedOpens).toBe(forgeries.length);
    expect(after.counters.signs).toBe(before.counters.signs);
    // Nothing counts failures by step: the health counters are the fixed set, errors only by reason.
    expect(Object.keys(after.counters.errors)).toEqual(['KEY_INTEGRITY']);
    // A failed open is not a record or blob mismatch: those are counted apart (integrityFailures).
    expect(after.counters.integrityFailures).toBe(before.counters.integrityFailures);

    // The genuine answer still opens, with a fresh recipient key.
    const ok = await sign('victim-1', victim.blob, 7);
    expect(await recoverAddress({ hash: ok.hash, signature: ok.signature })).toBe(victim.address);
    expect(recipients.has(recipientHex(h.proxyRequests[h.proxyRequests.length - 1] as DecryptParams))).toBe(false);
  }, 60_000);

  it('does not open a late answer with a recipient key another call retired: that call asks again, transparently', async () => {
    const a = await create('inflight-a');
    const b = await create('inflight-b');
    const wrappedA = decodeBlobBase64(a.blob).wrappedKey.toString('base64');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let heldFirst = false;
    h.forge = async (p) => {
      if (p.ciphertextBlob === wrappedA && !heldFirst) {
        heldFirst = true;
        const genuine = await h.kmsDecrypt(p); // a real answer, for the key the request was made with
        await gate;
        return genuine;
      }
      if (p.ciphertextBlob !== wrappedA) return cms(p, randomBytes(32)); // b's unseal is forged
      return undefined;
    };
    const signA = sign('inflight-a', a.blob, 11);
    await waitFor(() => heldFirst, 10_000, "a's Decrypt to be held");
    const first = h.proxyRequests.length - 1;
    expect((await rejection(sign('inflight-b', b.blob))).message).toBe('the key could not be unsealed'); // retires the shared key
    release();
    const result = await signA;
    expect(result.address).toBe(a.address);
    const forA = h.proxyRequests.slice(first).filter((p) => p.ciphertextBlob === wrappedA);
    expect(forA).toHaveLength(2);
    expect(recipientHex(forA[1] as DecryptParams)).not.toBe(recipientHex(forA[0] as DecryptParams));
  }, 30_000);

  it('answers a forged KMS answer to a cold batch with the same "no" as to a single sign: no oracle through keys.signBatch', async () => {
    const victim = await create('victim-batch');
    const batch = () =>
      peer.call('keys.signBatch', {
        keyId: 'victim-batch',
        blob: victim.blob,
        record: victim.record,
        project: h.defaultProject,
        requests: [
          { type: 'digest', digest: digest(1) },
          { type: 'digest', digest: digest(2) },
        ],
      });
    const errorOf = (raw: Buffer) => (JSON.parse(raw.toString('utf8')) as { error: unknown }).error;
    const before = await health();
    const forgeries = [
      async (p: DecryptParams) => tamper(await h.kmsDecrypt(p), (c) => c.ciphertext, 31, 0x11),
      (p: DecryptParams) => cms(p, randomBytes(32)),
    ];
    const answers: unknown[] = [];
    for (const forge of forgeries) {
      h.forge = forge;
      answers.push(errorOf(await batch()), errorOf(await rawSign('victim-batch', victim.blob)));
      h.forge = null;
    }
    // The whole batch is refused with the single sign's error, byte for byte, whichever forgery it was.
    for (const a of answers) expect(a).toEqual(answers[0]);
    expect((answers[0] as { data: { code: string } }).data.code).toBe('KEY_INTEGRITY');
    const after = await health();
    expect(after.counters.signs).toBe(before.counters.signs);
    expect(after.counters.failedOpens - before.counters.failedOpens).toBe(2 * forgeries.length);
  });

  it('cannot make the enclave keep keys longer, or more of them, than its image says (cache.configure)', async () => {
    const { ttlMs, maxEntries } = ENCLAVE_CONFIG_DEFAULTS.cache;
    for (const params of [{ ttlMs: ttlMs + 1 }, { maxEntries: maxEntries + 1 }, { ttlMs: 24 * 3600_000 }, { ttlMs: 'forever' }]) {
      const answer = await peer.callJson('cache.configure', params);
      expect(answer.error?.data?.code).toBe('INVALID_PARAMS');
    }
    // Shortening is allowed (it only costs Decrypts: denial of service, which the parent has anyway).
    const ttlOf = async (params: object) =>
      ((await peer.callJson('cache.configure', params)).result as { ttlMs?: number } | undefined)?.ttlMs;
    expect(await ttlOf({ ttlMs: ttlMs - 1 })).toBe(ttlMs - 1);
    expect(await ttlOf({})).toBe(ttlMs);
  });

  it('gives the parent no way to choose attestation user_data', async () => {
    const roots = [fs.readFileSync(h.platform.rootPem, 'utf8')];
    const parentAddress = addressOf(publicKeyOf(randomBytes(32)));
    // attestation.get takes no user data any more.
    const withUserData = JSON.parse(
      (await peer.call('attestation.get', { userData: `0x${birthUserData('k', parentAddress).toString('hex')}` })).toString('utf8'),
    );
    expect(withUserData.error.data.code).toBe('INVALID_PARAMS');
    // A nonce of the parent's choosing lands in `nonce`, and user_data is tagged for attestation.get.
    const nonce = birthContent('victim-1', parentAddress);
    const res = await h.client.call('attestation.get', { nonce: `0x${nonce.toString('hex')}` });
    const doc = Buffer.from(res.document, 'base64');
    const v = verifyAttestation(doc, { trustedRoots: roots, expectedNonce: nonce, expectedPcrs: { 0: h.platform.pcr0 } });
    expect(v.document.userData).toEqual(taggedUserData(USER_DATA_TAGS.attestation, nonce));
    const pcr0 = { 0: h.platform.pcr0 };
    expect(() =>
      verifyBirthAttestation(doc, { keyId: 'victim-1', address: parentAddress }, { trustedRoots: roots, expectedPcrs: pcr0 }),
    ).toThrow(expect.objectContaining({ code: 'USER_DATA_MISMATCH' }));

    // A real birth attestation verifies, and only for its own key id and address.
    const born = await create('born-1', true);
    const birth = Buffer.from(born.attestation as string, 'base64');
    expect(verifyBirthAttestation(birth, born, { trustedRoots: roots, expectedPcrs: { 0: h.platform.pcr0 } }).document.userData).toEqual(
      birthUserData('born-1', born.address),
    );
    expect(() =>
      verifyBirthAttestation(birth, { keyId: 'born-1', address: parentAddress }, { trustedRoots: roots, expectedPcrs: pcr0 }),
    ).toThrow(expect.objectContaining({ code: 'USER_DATA_MISMATCH' }));
    // Any image can ask the NSM for any user_data, so a birth is evidence only with the approved PCR0.
    expect(() => verifyBirthAttestation(birth, born, { trustedRoots: roots, expectedPcrs: {} })).toThrow(
      expect.objectContaining({ code: 'PCR_REQUIRED' }),
    );
    expect(() => verifyBirthAttestation(birth, born, { trustedRoots: roots, expectedPcrs: { 0: 'ab'.repeat(48) } })).toThrow(
      expect.objectContaining({ code: 'PCR_MISMATCH' }),
    );

    // What version 0.1 let the parent mint (user_data = the untagged birth value, straight through
    // attestation.get) is refused as evidence, with the reason.
    const legacy = await nsmDocument(h.platform.nsmSocket, canonicalHash('victim-1', parentAddress));
    expect(() =>
      verifyBirthAttestation(legacy, { keyId: 'victim-1', address: parentAddress }, { trustedRoots: roots, expectedPcrs: pcr0 }),
    ).toThrow(expect.objectContaining({ code: 'LEGACY_BIRTH', message: expect.stringMatching(/not evidence/) }));
  });

  it("takes the envelope's request id as a log field only: a hostile one is refused before the method runs, an accepted one is in no evidence", async () => {
    // Hostile ids (too long, control characters, JSON that would forge a log line, not a string): refused at the
    // envelope, whatever the method, with the same answer; nothing is made.
    const hostile: unknown[] = ['a'.repeat(129), 'line\nbreak', '{"level":60,"msg":"forged"}', 'quote"d', '', 42, { id: 'x' }, null];
    const before = (await h.client.call('enclave.health', {})).counters;
    for (const requestId of hostile) {
      const answer = await peer.callJson('keys.create', { keyId: 'rid-hostile', project: h.defaultProject, subject: null }, { requestId });
      expect(answer.result).toBeUndefined();
      expect(answer.error?.data?.code).toBe('INVALID_REQUEST');
      expect(answer.error?.message).toMatch(/requestId/);
    }
    const after = (await h.client.call('enclave.health', {})).counters;
    expect(after.errors).toEqual(before.errors); // refused at the envelope: no method ran to count a failure

    // An accepted id of the parent's choosing reaches nothing the enclave attests or signs.
    const requestId = 'parent-chosen:0xdeadbeef';
    const made = await peer.callJson('keys.create', { keyId: 'rid-accepted', project: h.defaultProject, subject: null }, { requestId });
    expect(made.error).toBeUndefined();
    expect(JSON.stringify(made.result)).not.toContain('deadbeef');
    const nonce = randomBytes(16);
    const att = await peer.callJson('attestation.get', { nonce: `0x${nonce.toString('hex')}` }, { requestId });
    const { document: doc } = decodeAttestationDocument(Buffer.from((att.result as { document: string }).document, 'base64'));
    expect(doc.userData).toEqual(taggedUserData(USER_DATA_TAGS.attestation, nonce));
    expect(doc.nonce).toEqual(nonce);
  });

  it('bounds what one enclave.logs pull can ask: out-of-range params are INVALID_PARAMS, the largest answer holds 200 lines', async () => {
    for (const params of [
      {},
      { after: -1 },
      { after: 1.5 },
      { after: 0, max: 0 },
      { after: 0, max: 201 },
      { after: 0, max: 1e9 },
      { after: 'x' },
      { after: 0, extra: 1 },
    ]) {
      const answer = await peer.callJson('enclave.logs', params);
      expect([JSON.stringify(params), answer.error?.data?.code]).toEqual([JSON.stringify(params), 'INVALID_PARAMS']);
    }
    const pulled = (await peer.callJson('enclave.logs', { after: 0, max: 200 })).result as { lines: unknown[]; nextSeq: number };
    expect(pulled.lines.length).toBeLessThanOrEqual(200);
    expect(pulled.nextSeq).toBeGreaterThan(0);
  });

  it('stops reading from a parent that sends and never reads, serves other connections, and answers all once read', async () => {
    const flood = net.connect(simulatedSocketPath(h.runDir, ENCLAVE_ADDRESS));
    await new Promise<void>((resolve, reject) => flood.once('connect', resolve).once('error', reject));
    try {
      flood.pause(); // never reads
      const before = await health();
      const N = 40_000;
      const frame = (id: number) => encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id, method: 'enclave.health', params: {} })));
      for (let id = 1; id <= N; id++) flood.write(frame(id)); // queued in this process once the enclave stops reading
      // Wait for the event (the enclave pauses that connection); the bound is generous, for a loaded machine.
      let during = await health();
      const until = Date.now() + 60_000;
      while (during.counters.rpcPausedConnections === 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 25));
        during = await health();
      }
      // The enclave paused that connection with a bounded backlog, and still answers this one.
      expect(during.counters.rpcPausedConnections).toBe(1);
      expect(during.counters.rpcUnsentBytes).toBeLessThanOrEqual(16 * 1024 * 1024);
      expect(during.memory.rssBytes - before.memory.rssBytes).toBeLessThan(96 * 1024 * 1024);
      // Reading again drains it: every request is answered, none lost.
      const decoder = new FrameDecoder();
      let answered = 0;
      const done = new Promise<void>((resolve) =>
        flood.on('data', (chunk) => {
          answered += decoder.push(chunk).length;
          if (answered === N) resolve();
        }),
      );
      flood.resume();
      await done;
      expect(answered).toBe(N);
    } finally {
      flood.destroy();
    }
  }, 120_000);

  it('stops a padding-oracle attack: 255 guesses with fresh genuine answers yield one answer and a few KMS calls', async () => {
    await restart(ENCLAVE_CONFIG_DEFAULTS.failedOpens); // the production limit
    const victim = await create('oracle-victim');
    const before = h.proxyRequests.length;
    // The strongest parent: for every guess it asks KMS for a genuine answer to the enclave's current
    // recipient key, then rewrites the last byte of the second ciphertext block, which the enclave's CBC step
    // turns into the last byte of the padding block (the classic attack's probe of one byte).
    const distinct = new Map<string, number>();
    for (let guess = 1; guess < 256; guess++) {
      h.forge = async (p) => tamper(await h.kmsDecrypt(p), (c) => c.ciphertext, 31, guess);
      const answer = (await rawSign('oracle-victim', victim.blob, guess)).toString('utf8');
      distinct.set(answer, (distinct.get(answer) ?? 0) + 1);
    }
    h.forge = null;
    expect([...distinct.values()]).toEqual([255]);
    // The limit stops it after maxFailures failures + 1: every later guess was refused without a Decrypt.
    const asked = h.proxyRequests.slice(before);
    expect(asked).toHaveLength(ENCLAVE_CONFIG_DEFAULTS.failedOpens.maxFailures + 1);
    expect(new Set(asked.map(recipientHex)).size).toBe(ENCLAVE_CONFIG_DEFAULTS.failedOpens.maxFailures + 1);
  }, 60_000);

  it('refuses cold signs during the cool-down after too many failed opens, counted in the same total; warm signs go on', async () => {
    await restart({ maxFailures: 2, windowMs: 60_000, cooldownMs: 1_500 });
    const warm = await create('limit-warm');
    await sign('limit-warm', warm.blob); // cached
    const cold = await create('limit-cold');
    const base = (await health()).counters.failedOpens;
    h.forge = (p) => cms(p, randomBytes(32));
    const refusals = [];
    for (let i = 0; i < 3; i++) refusals.push((await rawSign('limit-cold', cold.blob)).toString('utf8'));
    h.forge = null;
    const asked = h.proxyRequests.length;
    // In the cool-down a genuine cold sign gets the very same answer, without asking KMS.
    refusals.push((await rawSign('limit-cold', cold.blob)).toString('utf8'));
    expect(new Set(refusals).size).toBe(1);
    expect(h.proxyRequests.length).toBe(asked);
    expect((await health()).counters.failedOpens - base).toBe(4);
    await expect(sign('limit-warm', warm.blob, 2)).resolves.toMatchObject({ address: warm.address });
    // After the cool-down, cold signs work again: the first that is not refused (no fixed sleep; until then each
    // attempt is refused without a Decrypt, and the cool-down does not grow with them).
    const until = Date.now() + 30_000; // generous: only a cool-down that never ends reaches it
    for (;;) {
      const res = await sign('limit-cold', cold.blob, 3).catch((e: unknown) => e as Error);
      if (!(res instanceof Error)) {
        expect(res).toMatchObject({ address: cold.address });
        break;
      }
      expect(res).toMatchObject({ code: 'KEY_INTEGRITY' });
      expect(h.proxyRequests.length).toBe(asked);
      if (Date.now() > until) throw new Error('cold signs were still refused 30 s after the cool-down began');
      await new Promise((r) => setTimeout(r, 50));
    }
  }, 60_000);
});

/** SHA-256 of canonical CBOR {keyId, address}: version 0.1's untagged birth value. */
function canonicalHash(keyId: string, address: string): Buffer {
  return createHash('sha256').update(canonicalCbor({ keyId, address })).digest();
}

/** A document with raw user_data, straight from the (simulated) NSM: what 0.1's attestation.get made. */
async function nsmDocument(socketPath: string, userData: Buffer): Promise<Buffer> {
  const t = new SocketNsmTransport(socketPath);
  try {
    const req = encodeCbor(
      new Map([
        [
          'Attestation',
          new Map([
            ['user_data', userData],
            ['nonce', null],
            ['public_key', null],
          ]),
        ],
      ]),
    );
    const res = decodeCbor(await t.request(req)) as Map<string, Map<string, Uint8Array>>;
    return Buffer.from(res.get('Attestation')?.get('document') as Uint8Array);
  } finally {
    t.close();
  }
}
