/**
 * A fake enclave for the parent's tests: an RPC server on the simulated vsock transport that speaks protocol
 * version 3 and signs records with a keystore identity of its own (Ed25519 over the record digest, as
 * docs/RECORDS.md says), so the parent's checks run against genuine signatures. It keeps its secp256k1 keys in
 * memory and signs messages for real; the test can hold sign requests, count calls, and change answers.
 * The real enclave's side of every check is tested against the bundle (enclave/test, test/e2e).
 */
import { generateKeyPairSync, randomBytes, sign as edSign, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { hashMessage, parseSignature } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { BLOB_ALG, encodeBlob } from '@nks/shared/blob';
import type { CreateResult, IdentityResult, SignResult } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import { silentLogger, type Logger } from '@nks/shared/log';
import {
  DEFAULT_PROJECT_ID,
  decodeKeyRecord,
  encodeRecord,
  hex,
  identityPublicKeyHex,
  recordDigest,
  type KeyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { RpcServer, rpcMethod } from '@nks/shared/rpc';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';
import type { Transport } from '@nks/shared/transport';
import { blobSha256 } from '../src/key-registry';

export const FAKE_KMS_KEY_ARN = 'arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000';

/** A keystore identity for tests: signs records as the enclave does. */
export class TestIdentity {
  readonly privateKey: KeyObject;
  readonly publicKeyObject: KeyObject;
  readonly publicKey: string;

  constructor() {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    this.privateKey = privateKey;
    this.publicKeyObject = publicKey;
    this.publicKey = identityPublicKeyHex(publicKey);
  }

  sign(record: KeyRecord | ProjectRecord): SignedRecord {
    const cbor = encodeRecord(record);
    return { record: cbor.toString('base64'), signature: edSign(null, recordDigest(cbor), this.privateKey).toString('base64') };
  }

  project(over: Partial<ProjectRecord> = {}): ProjectRecord {
    return {
      v: 1,
      kind: 'project',
      projectId: DEFAULT_PROJECT_ID,
      projectKey: 'default',
      auth: { type: 'token' },
      allowedRequestTypes: [...SIGN_REQUEST_TYPES],
      allowedOrigins: [],
      state: 'active',
      seq: 0,
      prev: null,
      createdAt: 1_700_000_000_000,
      ...over,
    };
  }
}

/** A version 2 key blob of the right shape (its sealed bytes are random: nobody opens it). */
export function fakeKeyBlob(k: { keyId: string; address: string; projectId: string; subject: string | null }): string {
  return encodeBlob({
    v: 2,
    kind: 'key',
    alg: BLOB_ALG,
    kmsKeyArn: FAKE_KMS_KEY_ARN,
    ...k,
    createdAt: Date.now(),
    wrappedKey: randomBytes(256),
    iv: randomBytes(12),
    ciphertext: randomBytes(48),
  }).toString('base64');
}

interface Held {
  keyId: string;
  release: () => void;
}

export class FakeEnclave {
  readonly server: RpcServer;
  readonly identity = new TestIdentity();
  readonly defaultProject: SignedRecord;
  private readonly keys = new Map<string, PrivateKeyAccount>();
  /** Calls by method. */
  readonly calls: Record<string, number> = {};
  /** Every `keys.sign` and `keys.setDisabled` request as received. */
  readonly signRequests: Array<{ keyId: string; record: SignedRecord; project: SignedRecord }> = [];
  /** Sign requests waiting for `release` (while `holding`), in arrival order. */
  readonly held: Held[] = [];
  private heldWaiters: Array<() => void> = [];
  holding = false;
  /** Sign with this account instead of the key's own (a substituted key). */
  signAs: PrivateKeyAccount | null = null;
  /** Every signature this enclave answered with. */
  readonly answered: SignResult[] = [];
  /** Changes an answer before it is sent (an enclave, or whatever answers in its place, that lies). */
  alter: { create?: (r: CreateResult) => CreateResult; setDisabled?: (r: KeyRecord) => KeyRecord } = {};
  /** identity.get answers IDENTITY_UNAVAILABLE while true (a genesis image, or one still unsealing). */
  identityUnavailable = false;
  protocolVersion = 3;

  constructor(logger: Logger = silentLogger()) {
    this.defaultProject = this.identity.sign(this.identity.project());
    const any = z.any();
    const count = <P, R>(method: string, fn: (p: P) => R) =>
      rpcMethod(any, (p: P) => {
        this.calls[method] = (this.calls[method] ?? 0) + 1;
        return fn(p);
      });
    this.server = new RpcServer({
      name: 'fake-enclave',
      logger,
      methods: {
        'enclave.hello': count('enclave.hello', () => ({
          protocolVersion: this.protocolVersion,
          supportedVersions: [this.protocolVersion],
          features: [],
          enclaveVersion: '0.4.0',
        })),
        'enclave.health': count('enclave.health', () => ({
          status: 'ok',
          kmsProxy: 'connected',
          mode: 'normal',
          counters: {},
          memory: {},
        })),
        'identity.get': count('identity.get', (p: { nonce?: string }) => this.identityGet(p)),
        'keys.create': count('keys.create', (p: { keyId: string; subject: string | null; attest?: boolean }) => this.create(p)),
        'keys.sign': count(
          'keys.sign',
          (p: { keyId: string; record: SignedRecord; project: SignedRecord; request: { type: string; message: string } }) => this.sign(p),
        ),
        'keys.setDisabled': count('keys.setDisabled', (p: { record: SignedRecord; project: SignedRecord; disabled: boolean }) =>
          this.setDisabled(p),
        ),
        'keys.forget': count('keys.forget', (p: { keyId: string }) => ({ keyId: p.keyId, forgotten: false })),
        'attestation.get': count('attestation.get', () => ({ document: Buffer.from('fake document').toString('base64') })),
      },
    });
  }

  async listen(transport: Transport, address: string): Promise<void> {
    await this.server.listen(transport, address);
  }

  private identityGet(p: { nonce?: string }): IdentityResult {
    if (this.identityUnavailable) throw new KeystoreError('IDENTITY_UNAVAILABLE', 'the keystore identity is not available');
    return {
      publicKey: this.identity.publicKey,
      genesisDocument: Buffer.from('fake genesis document').toString('base64'),
      attestation: Buffer.from(`fake document for ${p.nonce ?? 'no nonce'}`).toString('base64'),
      defaultProject: this.defaultProject,
    };
  }

  private create(p: { keyId: string; subject: string | null; attest?: boolean }): CreateResult {
    const account = privateKeyToAccount(generatePrivateKey());
    this.keys.set(p.keyId, account);
    const blob = fakeKeyBlob({ keyId: p.keyId, address: account.address, projectId: DEFAULT_PROJECT_ID, subject: p.subject });
    const record: KeyRecord = {
      v: 1,
      kind: 'key',
      keyId: p.keyId,
      address: account.address,
      blobSha256: blobSha256(blob),
      projectId: DEFAULT_PROJECT_ID,
      subject: p.subject,
      state: 'active',
      disabled: false,
      seq: 0,
      prev: null,
      origin: 'created',
      createdAt: Date.now(),
    };
    const result: CreateResult = {
      keyId: p.keyId,
      address: account.address,
      publicKey: account.publicKey,
      blob,
      record: this.identity.sign(record),
      ...(p.attest ? { attestation: Buffer.from(`birth of ${p.keyId}`).toString('base64') } : {}),
    };
    return this.alter.create ? this.alter.create(result) : result;
  }

  private async sign(p: {
    keyId: string;
    record: SignedRecord;
    project: SignedRecord;
    request: { type: string; message: string };
  }): Promise<SignResult> {
    this.signRequests.push({ keyId: p.keyId, record: p.record, project: p.project });
    if (this.holding) {
      await new Promise<void>((release) => {
        this.held.push({ keyId: p.keyId, release });
        for (const w of this.heldWaiters.splice(0)) w();
      });
    }
    const account = this.signAs ?? (this.keys.get(p.keyId) as PrivateKeyAccount);
    if (p.request.type !== 'message') throw new Error('this fake signs messages only');
    const signature = await account.signMessage({ message: p.request.message });
    const { r, s, v, yParity } = parseSignature(signature);
    const result = {
      signature,
      r,
      s,
      v: Number(v) as 27 | 28,
      yParity: yParity as 0 | 1,
      hash: hashMessage(p.request.message),
      address: account.address,
    };
    this.answered.push(result);
    return result;
  }

  private setDisabled(p: { record: SignedRecord; project: SignedRecord; disabled: boolean }): { record: SignedRecord } {
    const bytes = Buffer.from(p.record.record, 'base64');
    const old = decodeKeyRecord(bytes);
    let next: KeyRecord = { ...old, disabled: p.disabled, seq: old.seq + 1, prev: hex(recordDigest(bytes)), createdAt: Date.now() };
    if (this.alter.setDisabled) next = this.alter.setDisabled(next);
    return { record: this.identity.sign(next) };
  }

  /** Signs for `keyId` with `account` from now on (a key the test stored itself). */
  adopt(keyId: string, account: PrivateKeyAccount): void {
    this.keys.set(keyId, account);
  }

  /** Resolves once `n` sign requests are held. */
  async waitHeld(n: number): Promise<'held'> {
    while (this.held.length < n) await new Promise<void>((r) => this.heldWaiters.push(r));
    return 'held';
  }

  releaseAll(): void {
    this.holding = false;
    for (const h of this.held.splice(0)) h.release();
  }

  close(): Promise<void> {
    return this.server.close(100);
  }
}
