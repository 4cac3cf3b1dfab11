/**
 * The KMS attestation proxy against the KMS emulator (real @aws-sdk/client-kms), with a key policy that
 * requires attestation: allowed ARNs only, never without a document, never plaintext, errors mapped.
 */
import { constants, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { KMSClient } from '@aws-sdk/client-kms';
import { openEnvelopedData } from '@nks/shared/cms';
import { silentLogger } from '@nks/shared/log';
import type { KmsProxyApi } from '@nks/shared/enclave-api';
import { RpcClient, type ParamsOf } from '@nks/shared/rpc';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { buildEnvelopedData } from '../../sim/src/kms/cms-writer';
import { SimulatedNitroCa } from '../../sim/src/nsm/ca';
import { signAttestationDocument } from '../../sim/src/nsm/document';
import { pcr3ForRole } from '@nks/shared/pcr';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { PARENT_ROLE, startPlatform, type Platform } from '../../test/support/platform';
import { KmsProxy, mapKmsError } from '../src/kms/proxy';

describe('KMS attestation proxy', () => {
  let platform: Platform;
  let proxy: KmsProxy;
  let client: RpcClient<KmsProxyApi>;
  let ca: SimulatedNitroCa;
  let kms: KMSClient;
  const outcomes: string[] = [];
  const enclaveKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dek = randomBytes(32);
  let wrapped: string;

  const document = async (pcr0 = platform.pcr0) => {
    const pcrs = new Map<number, Buffer>(Array.from({ length: 16 }, (_, i) => [i, Buffer.alloc(48)]));
    pcrs.set(0, Buffer.from(pcr0, 'hex'));
    pcrs.set(3, Buffer.from(pcr3ForRole(PARENT_ROLE), 'hex'));
    return signAttestationDocument(
      {
        moduleId: 'i-0123456789abcdef0-enc0000000000000000',
        timestamp: Date.now(),
        pcrs,
        publicKey: enclaveKey.publicKey.export({ type: 'spki', format: 'der' }),
      },
      await ca.signer(),
    ).toString('base64');
  };
  const call = (params: object) => client.call('kms.decrypt', params as ParamsOf<KmsProxyApi, 'kms.decrypt'>);
  const failure = rejection;
  const decryptCalls = async () => {
    const s = await platform.stats();
    return (s.Decrypt?.ok ?? 0) + (s.Decrypt?.error ?? 0);
  };

  let runDir: string;

  beforeAll(async () => {
    runDir = tempRunDir('nks-proxy-');
    platform = await startPlatform(runDir);
    ca = await SimulatedNitroCa.open(path.join(runDir, 'nsm', 'nsm-ca.json'));
    kms = platform.kms();
    proxy = new KmsProxy({
      client: kms,
      allowedKeyArns: [platform.keyArn],
      deadlineMs: 3000,
      maxConcurrent: 16,
      logger: silentLogger(),
      onCall: (o) => outcomes.push(o),
    });
    const transport = new SimulatedVsockTransport(runDir);
    await proxy.listen(transport, 'vsock://3:8000');
    client = new RpcClient<KmsProxyApi>({ name: 'test-enclave', transport, address: 'vsock://3:8000', logger: silentLogger() });
    await client.waitConnected(2000);
    const spki = createPublicKey({ key: Buffer.from(platform.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
    wrapped = publicEncrypt({ key: spki, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, dek).toString('base64');
  }, 60_000);

  afterAll(async () => {
    await client?.close();
    await proxy?.close(100);
    kms?.destroy();
    await platform?.stop();
    if (runDir) fs.rmSync(runDir, { recursive: true, force: true });
  });

  it('relays an attested Decrypt and returns only CMS for the enclave key', async () => {
    const res = await call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: await document() });
    expect(Object.keys(res).sort()).toEqual(['ciphertextForRecipient', 'keyId']);
    expect(res.keyId).toBe(platform.keyArn);
    expect(openEnvelopedData(Buffer.from(res.ciphertextForRecipient, 'base64'), enclaveKey.privateKey)).toEqual(dek);
    expect(JSON.stringify(res)).not.toContain(dek.toString('base64'));
    expect(JSON.stringify(res)).not.toContain(dek.toString('hex'));
    expect(outcomes).toContain('ok');
  });

  it('refuses a key ARN that is not allowed, without calling KMS', async () => {
    const before = await decryptCalls();
    const other = platform.keyArn.replace(/key\/.*/, 'key/99999999-9999-9999-9999-999999999999');
    const err = await failure(call({ kmsKeyArn: other, ciphertextBlob: wrapped, attestationDocument: await document() }));
    expect([err.code, err.message]).toEqual(['KMS_KEY_NOT_ALLOWED', `KMS key ${other} is not in this parent's allowedKeyArns`]);
    expect(await decryptCalls()).toBe(before);
  });

  it('refuses a request without an attestation document, without calling KMS', async () => {
    const before = await decryptCalls();
    expect((await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped }))).code).toBe('INVALID_PARAMS');
    const empty = await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: '' }));
    expect([empty.code, empty.message]).toEqual([
      'INVALID_PARAMS',
      'kms.decrypt needs an attestation document; the proxy never asks KMS for plaintext',
    ]);
    expect(
      (await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: await document(), plaintext: true })))
        .code,
    ).toBe('INVALID_PARAMS');
    expect(await decryptCalls()).toBe(before);
  });

  it('maps KMS refusals to the shared reasons', async () => {
    const denied = await failure(
      call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: await document('ab'.repeat(48)) }),
    );
    expect(denied.code).toBe('KMS_ACCESS_DENIED');
    expect(denied.message).toMatch(/is this enclave image approved in the key policy/);
    const forged = await failure(
      call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: Buffer.from('not a document').toString('base64') }),
    );
    expect(forged.code).toBe('ATTESTATION_FAILED');
    const badBlob = await failure(
      call({ kmsKeyArn: platform.keyArn, ciphertextBlob: randomBytes(256).toString('base64'), attestationDocument: await document() }),
    );
    expect(badBlob.code).toBe('KMS_INVALID_CIPHERTEXT');
  });

  it('retries throttling with backoff inside the deadline, then gives up retryably', async () => {
    await platform.setFaults({ throttleRate: 1 });
    try {
      const t0 = Date.now();
      const err = await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: await document() }));
      expect([err.code, err.retryable]).toEqual(['KMS_THROTTLED', true]);
      expect(Date.now() - t0).toBeLessThan(4000);
      expect((await platform.stats()).Decrypt?.errors.ThrottlingException).toBeGreaterThan(2);
    } finally {
      await platform.setFaults({ throttleRate: 0 });
    }
  });

  it('gives TIMEOUT when KMS is slower than the deadline', async () => {
    await platform.setFaults({ latencyMs: 3500 });
    try {
      const err = await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: await document() }));
      expect([err.code, err.retryable]).toEqual(['TIMEOUT', true]);
    } finally {
      await platform.setFaults({ latencyMs: 0 });
    }
  });
});

/**
 * A fake KMS on loopback that speaks the JSON protocol @aws-sdk/client-kms uses (POST /, x-amz-target
 * TrentService.Decrypt, application/x-amz-json-1.1, blobs as base64) and answers an attested Decrypt the way
 * KMS never should: with the Plaintext beside a valid CiphertextForRecipient (a misbehaving or impersonated
 * endpoint). The proxy must refuse to relay it.
 */
describe('KMS proxy against a KMS that answers with Plaintext', () => {
  const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
  const enclaveKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dek = randomBytes(32);
  const requests: Array<{ target: string; body: Record<string, any> }> = [];
  let withPlaintext = true;
  let runDir: string;
  let server: http.Server;
  let kms: KMSClient;
  let proxy: KmsProxy;
  let client: RpcClient<KmsProxyApi>;
  let attestationDocument: string;
  const outcomes: string[] = [];

  beforeAll(async () => {
    runDir = tempRunDir('nks-fakekms-');
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const target = String(req.headers['x-amz-target']);
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, any>;
        requests.push({ target, body });
        const answer = {
          KeyId: body.KeyId,
          EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
          CiphertextForRecipient: buildEnvelopedData(dek, enclaveKey.publicKey).toString('base64'),
          ...(withPlaintext ? { Plaintext: dek.toString('base64') } : {}),
        };
        const text = JSON.stringify(target === 'TrentService.Decrypt' ? answer : { __type: 'UnknownOperationException' });
        res.writeHead(target === 'TrentService.Decrypt' ? 200 : 400, {
          'content-type': 'application/x-amz-json-1.1',
          'content-length': Buffer.byteLength(text),
          'x-amzn-requestid': 'fake',
        });
        res.end(text);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    kms = new KMSClient({
      endpoint: `http://127.0.0.1:${port}`,
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDPARENT', secretAccessKey: 'x' },
      maxAttempts: 1,
    });
    proxy = new KmsProxy({
      client: kms,
      allowedKeyArns: [ARN],
      deadlineMs: 3000,
      maxConcurrent: 4,
      logger: silentLogger(),
      onCall: (o) => outcomes.push(o),
    });
    const transport = new SimulatedVsockTransport(runDir);
    await proxy.listen(transport, 'vsock://3:8000');
    client = new RpcClient<KmsProxyApi>({ name: 'test-enclave', transport, address: 'vsock://3:8000', logger: silentLogger() });
    await client.waitConnected(2000);
    const pcrs = new Map<number, Buffer>(Array.from({ length: 16 }, (_, i) => [i, Buffer.alloc(48, i)]));
    const signer = await (await SimulatedNitroCa.open(null)).signer();
    attestationDocument = signAttestationDocument(
      {
        moduleId: 'i-0123456789abcdef0-enc0000000000000000',
        timestamp: Date.now(),
        pcrs,
        publicKey: enclaveKey.publicKey.export({ type: 'spki', format: 'der' }),
      },
      signer,
    ).toString('base64');
  });

  afterAll(async () => {
    await client?.close();
    await proxy?.close(100);
    kms?.destroy();
    await new Promise((r) => server?.close(r));
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const call = () =>
    client.call('kms.decrypt', { kmsKeyArn: ARN, ciphertextBlob: randomBytes(256).toString('base64'), attestationDocument });

  it('relays the answer without Plaintext (the fake speaks the protocol the SDK expects)', async () => {
    withPlaintext = false;
    requests.length = 0;
    const res = await call();
    expect(openEnvelopedData(Buffer.from(res.ciphertextForRecipient, 'base64'), enclaveKey.privateKey)).toEqual(dek);
    expect(requests.map((r) => [r.target, r.body.Recipient])).toEqual([
      ['TrentService.Decrypt', { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: attestationDocument }],
    ]);
  });

  it('refuses to relay an answer that carries Plaintext, and asks KMS only once', async () => {
    withPlaintext = true;
    requests.length = 0;
    outcomes.length = 0;
    const err = await rejection(call());
    expect([err.code, err.retryable, err.message]).toEqual([
      'INTERNAL',
      false,
      'KMS returned plaintext to an attested request; refusing to relay it',
    ]);
    expect(JSON.stringify(err)).not.toContain(dek.toString('base64'));
    expect(requests).toHaveLength(1);
    expect(outcomes).toEqual(['plaintext']);
  });

  it('zeroes the Plaintext it was given', async () => {
    const plaintext = Uint8Array.from(dek);
    const stub = {
      send: async () => ({ KeyId: ARN, Plaintext: plaintext, CiphertextForRecipient: buildEnvelopedData(dek, enclaveKey.publicKey) }),
    } as unknown as KMSClient;
    const direct = new KmsProxy({ client: stub, allowedKeyArns: [ARN], deadlineMs: 1000, maxConcurrent: 1, logger: silentLogger() });
    const err = await rejection(direct.decrypt({ kmsKeyArn: ARN, ciphertextBlob: 'AAAA', attestationDocument }));
    expect(err.code).toBe('INTERNAL');
    expect(Buffer.from(plaintext).equals(Buffer.alloc(32))).toBe(true);
  });
});

describe('KMS error mapping', () => {
  it.each<[unknown, string, boolean]>([
    [{ name: 'AccessDeniedException', message: 'no' }, 'KMS_ACCESS_DENIED', false],
    [{ name: 'ThrottlingException', message: 'slow down' }, 'KMS_THROTTLED', true],
    [{ name: 'InvalidCiphertextException' }, 'KMS_INVALID_CIPHERTEXT', false],
    [{ name: 'IncorrectKeyException' }, 'KMS_INVALID_CIPHERTEXT', false],
    [{ name: 'DisabledException' }, 'KMS_ACCESS_DENIED', false],
    [{ name: 'NotFoundException' }, 'KMS_ACCESS_DENIED', false],
    [{ name: 'ValidationException', message: 'The attestation document is not valid (STALE: ...)' }, 'ATTESTATION_FAILED', false],
    [{ name: 'KMSInternalException', $fault: 'server' }, 'KMS_UNAVAILABLE', true],
    [{ name: 'Error', $metadata: { httpStatusCode: 502 } }, 'KMS_UNAVAILABLE', true],
    [new Error('socket hang up'), 'KMS_UNAVAILABLE', true],
    [{ name: 'ValidationException', message: '1 validation error detected' }, 'KMS_REJECTED', false],
    [{ name: 'UnsupportedOperationException', $fault: 'client', $metadata: { httpStatusCode: 400 } }, 'KMS_REJECTED', false],
  ])('maps %# to %s', (err, reason, retryable) => {
    const mapped = mapKmsError(err);
    expect([mapped.code, mapped.retryable]).toEqual([reason, retryable]);
  });
});
