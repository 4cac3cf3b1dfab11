/**
 * The enclave as a real process on the simulated platform, with the test standing where the parent would:
 * an RPC client to the enclave, and a KMS proxy (backed by the KMS emulator through @aws-sdk/client-kms) that
 * records what the enclave asks and can be told to forge its answers. Every byte the enclave sends on both
 * links is recorded. The enclave runs with the platform's keystore identity (unsealed at start through this
 * proxy, so `proxyRequests` begins with the identity's Decrypt) unless the configuration leaves it out.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { KMSClient } from '@aws-sdk/client-kms';
import { KeystoreError } from '@nks/shared/errors';
import { KmsDecryptParams, type CreateResult, type EnclaveApi, type KmsDecryptResult, type SignResult } from '@nks/shared/enclave-api';
import type { SignedRecord } from '@nks/shared/records';
import { RpcClient, RpcServer, rpcMethod } from '@nks/shared/rpc';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS, SimulatedVsockTransport } from '@nks/shared/transport';
import { silentLogger } from '@nks/shared/log';
import { attestedDecrypt, enclaveConfigFor, startPlatform, writeJson, type Platform } from '../../test/support/platform';
import { startProgram, type Running } from '../../test/support/process';
import { RecordingTransport } from '../../test/support/recording';
import { recoverSecret } from '../../test/support/secrets';
import { KeystoreIdentity } from '../src/identity/keystore-identity';

export const ENCLAVE_ADDRESS = DEFAULT_ENCLAVE_ADDRESS;
export const PROXY_ADDRESS = DEFAULT_KMS_PROXY_ADDRESS;

export type DecryptParams = ReturnType<typeof KmsDecryptParams.parse>;

/** What the test waits for after starting the enclave: its identity unsealed (default), or only listening. */
export type LaunchWait = 'ready' | 'listening';

export interface EnclaveHarness {
  platform: Platform;
  client: RpcClient<EnclaveApi>;
  enclave: Running;
  configFile: string;
  /** Everything the enclave sent to the test (its answers and its KMS-proxy requests). */
  recorded: RecordingTransport;
  proxyRequests: DecryptParams[];
  runDir: string;
  /**
   * Replace the proxy's answer (forgeries), possibly later (a promise); resolve to undefined to answer
   * normally. This is the parent's whole power over an unseal: it sees the request and chooses the answer.
   */
  forge: ((p: DecryptParams) => KmsDecryptResult | undefined | Promise<KmsDecryptResult | undefined>) | null;
  /** A genuine attested Decrypt, as the parent (which holds the AWS credentials) can make at any time. */
  kmsDecrypt(p: DecryptParams): Promise<KmsDecryptResult>;
  decryptCalls(): Promise<number>;
  /** The `default` project's record (made at the platform's genesis). */
  defaultProject: SignedRecord;
  /** keys.create in the default project, for subject null unless given. */
  create(keyId: string, opts?: { attest?: boolean; project?: SignedRecord; subject?: string | null }): Promise<CreateResult>;
  /** keys.sign of a digest with the key's record and the default project (unless given). */
  signDigest(key: { keyId: string; blob: string; record: SignedRecord }, n?: number, project?: SignedRecord): Promise<SignResult>;
  /** `connect: false` for an enclave expected to exit by itself (the test client may never connect to it). */
  restartEnclave(extraConfig?: Record<string, unknown>, opts?: { wait?: LaunchWait; connect?: boolean }): Promise<void>;
  stop(): Promise<void>;
}

export const digestOf = (n: number) => `0x${n.toString(16).padStart(64, '0')}`;

export async function startEnclaveHarness(
  runDir: string,
  config: Record<string, unknown> = {},
  opts: { wait?: LaunchWait } = {},
): Promise<EnclaveHarness> {
  const platform = await startPlatform(runDir);
  const recorded = new RecordingTransport(new SimulatedVsockTransport(runDir));
  const kms: KMSClient = platform.kms();
  const harness: Partial<EnclaveHarness> & { proxyRequests: DecryptParams[] } = {
    platform,
    recorded,
    runDir,
    proxyRequests: [],
    forge: null,
  };
  const kmsDecrypt = async (p: DecryptParams): Promise<KmsDecryptResult> => {
    try {
      return await attestedDecrypt(kms, p);
    } catch (err) {
      const name = (err as Error).name;
      throw new KeystoreError(
        name === 'AccessDeniedException' ? 'KMS_ACCESS_DENIED' : 'KMS_UNAVAILABLE',
        `KMS ${name}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  };
  harness.kmsDecrypt = kmsDecrypt;

  const proxy = new RpcServer({
    name: 'test-kms-proxy',
    logger: silentLogger(),
    // Forgeries may pick a request by its id (currentRequestId()), as the envelope carries it.
    requestContext: true,
    methods: {
      'kms.decrypt': rpcMethod(KmsDecryptParams, async (p) => {
        harness.proxyRequests.push(p);
        const forged = await harness.forge?.(p);
        return forged ?? kmsDecrypt(p);
      }),
    },
  });
  await proxy.listen(recorded, PROXY_ADDRESS);

  const configFile = path.join(runDir, 'enclave.json');
  const baseConfig = enclaveConfigFor(platform, runDir, config); // listens on ENCLAVE_ADDRESS, dials PROXY_ADDRESS
  writeJson(configFile, baseConfig);
  const launch = async (wait: LaunchWait = 'ready') => {
    const proc = startProgram('enclave', ['--config', configFile]);
    await proc.waitForLog((e) => e.msg === (wait === 'ready' ? 'enclave ready' : 'enclave listening'));
    return proc;
  };
  harness.enclave = await launch(opts.wait);
  harness.configFile = configFile;

  const client = new RpcClient<EnclaveApi>({
    name: 'test-parent',
    transport: recorded,
    address: ENCLAVE_ADDRESS,
    logger: silentLogger(),
    defaultDeadlineMs: 15_000,
  });
  await client.waitConnected(5000);
  harness.client = client;

  harness.decryptCalls = async () => {
    const s = await platform.stats();
    return (s.Decrypt?.ok ?? 0) + (s.Decrypt?.error ?? 0);
  };
  harness.defaultProject = platform.identity.defaultProject;
  harness.create = (keyId, o = {}) =>
    client.call('keys.create', {
      keyId,
      project: o.project ?? platform.identity.defaultProject,
      subject: o.subject ?? null,
      ...(o.attest === undefined ? {} : { attest: o.attest }),
    });
  harness.signDigest = (key, n = 1, project = platform.identity.defaultProject) =>
    client.call('keys.sign', {
      keyId: key.keyId,
      blob: key.blob,
      record: key.record,
      project,
      request: { type: 'digest', digest: digestOf(n) },
    });
  harness.restartEnclave = async (extra = {}, o = {}) => {
    await harness.enclave?.stop();
    for (let i = 0; i < 200 && client.connected; i++) await new Promise((r) => setTimeout(r, 10));
    writeJson(configFile, { ...baseConfig, ...extra });
    harness.enclave = await launch(o.wait);
    if (o.connect !== false) await client.waitConnected(10_000);
  };
  harness.stop = async () => {
    await client.close();
    await harness.enclave?.stop();
    await proxy.close(100);
    kms.destroy();
    await platform.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
  };
  return harness as EnclaveHarness;
}

/**
 * The platform's keystore identity as a signer, its seed recovered with the KMS emulator's key material (as
 * only a test can): for records the enclave has no method to make yet (other projects, other states), and to
 * check the enclave's own.
 */
export function platformIdentity(platform: Platform): KeystoreIdentity {
  const seed = recoverSecret(platform.identity.blob, platform.kmsStateFile);
  try {
    return KeystoreIdentity.fromSeed(seed);
  } finally {
    seed.fill(0);
  }
}
