/**
 * The KMS attestation proxy against the KMS emulator (real @aws-sdk/client-kms), with a key policy that
 * requires attestation: allowed ARNs only, never without a document, never plaintext, errors mapped.
 */
import { constants, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import path from 'node:path';
import { KMSClient } from '@aws-sdk/client-kms';
import { openEnvelopedData } from '../../shared/src/cms';
import { silentLogger } from '../../shared/src/log';
import { RpcClient } from '../../shared/src/rpc';
import { SimulatedVsockTransport } from '../../shared/src/transport';
import { SimulatedNitroCa } from '../../sim/src/nsm/ca';
import { signAttestationDocument } from '../../sim/src/nsm/document';
import { measureString } from '../../sim/src/measure';
import { rejection, tempRunDir } from '../../shared/test/helpers';
import { PARENT_ROLE, startPlatform, type Platform } from '../../test/support/platform';
import { KmsProxy, mapKmsError } from '../src/kms/proxy';

describe('KMS attestation proxy', () => {
  let platform: Platform;
  let proxy: KmsProxy;
  let client: RpcClient;
  let ca: SimulatedNitroCa;
  let kms: KMSClient;
  const outcomes: string[] = [];
  const enclaveKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dek = randomBytes(32);
  let wrapped: string;

  const document = async (pcr0 = platform.pcr0) => {
    const pcrs = new Map<number, Buffer>(Array.from({ length: 16 }, (_, i) => [i, Buffer.alloc(48)]));
    pcrs.set(0, Buffer.from(pcr0, 'hex'));
    pcrs.set(3, Buffer.from(measureString(PARENT_ROLE), 'hex'));
    return signAttestationDocument({ moduleId: 'i-0123456789abcdef0-enc0000000000000000', timestamp: Date.now(), pcrs, publicKey: enclaveKey.publicKey.export({ type: 'spki', format: 'der' }) }, await ca.signer()).toString('base64');
  };
  const call = (params: object) => client.call<{ ciphertextForRecipient: string; keyId: string }>('kms.decrypt', params);
  const failure = rejection;
  const decryptCalls = async () => {
    const s = await platform.stats();
    return (s.Decrypt?.ok ?? 0) + (s.Decrypt?.error ?? 0);
  };

  beforeAll(async () => {
    const runDir = tempRunDir('nks-proxy-');
    platform = await startPlatform(runDir);
    ca = await SimulatedNitroCa.open(path.join(runDir, 'nsm', 'nsm-ca.json'));
    kms = platform.kms();
    proxy = new KmsProxy({ client: kms, allowedKeyArns: [platform.keyArn], deadlineMs: 3000, maxConcurrent: 16, logger: silentLogger(), onCall: (o) => outcomes.push(o) });
    const transport = new SimulatedVsockTransport(runDir);
    await proxy.listen(transport, 'vsock://3:8000');
    client = new RpcClient({ name: 'test-enclave', transport, address: 'vsock://3:8000', logger: silentLogger() });
    await client.waitConnected(2000);
    const spki = createPublicKey({ key: Buffer.from(platform.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
    wrapped = publicEncrypt({ key: spki, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, dek).toString('base64');
  }, 60_000);

  afterAll(async () => {
    await client?.close();
    await proxy?.close(100);
    kms?.destroy();
    await platform?.stop();
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
    expect([err.reason, err.message]).toEqual(['KMS_KEY_NOT_ALLOWED', `KMS key ${other} is not in this parent's allowedKeyArns`]);
    expect(await decryptCalls()).toBe(before);
  });

  it('refuses a request without an attestation document, without calling KMS', async () => {
    const before = await decryptCalls();
    expect((await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped }))).reason).toBe('INVALID_PARAMS');
    const empty = await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: '' }));
    expect([empty.reason, empty.message]).toEqual(['INVALID_PARAMS', 'kms.decrypt needs an attestation document; the proxy never asks KMS for plaintext']);
    expect((await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: await document(), plaintext: true }))).reason).toBe('INVALID_PARAMS');
    expect(await decryptCalls()).toBe(before);
  });

  it('maps KMS refusals to the shared reasons', async () => {
    const denied = await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: await document('ab'.repeat(48)) }));
    expect(denied.reason).toBe('KMS_ACCESS_DENIED');
    expect(denied.message).toMatch(/is this enclave image approved in the key policy/);
    const forged = await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: Buffer.from('not a document').toString('base64') }));
    expect(forged.reason).toBe('ATTESTATION_FAILED');
    const badBlob = await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: randomBytes(256).toString('base64'), attestationDocument: await document() }));
    expect(badBlob.reason).toBe('KMS_INVALID_CIPHERTEXT');
  });

  it('retries throttling with backoff inside the deadline, then gives up retryably', async () => {
    await platform.setFaults({ throttleRate: 1 });
    try {
      const t0 = Date.now();
      const err = await failure(call({ kmsKeyArn: platform.keyArn, ciphertextBlob: wrapped, attestationDocument: await document() }));
      expect([err.reason, err.retryable]).toEqual(['KMS_THROTTLED', true]);
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
      expect([err.reason, err.retryable]).toEqual(['TIMEOUT', true]);
    } finally {
      await platform.setFaults({ latencyMs: 0 });
    }
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
  ])('maps %# to %s', (err, reason, retryable) => {
    const mapped = mapKmsError(err);
    expect([mapped.reason, mapped.retryable]).toEqual([reason, retryable]);
  });
});
