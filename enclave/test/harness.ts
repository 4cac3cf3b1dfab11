/**
 * The enclave as a real process on the simulated platform, with the test standing where the parent would:
 * an RPC client to the enclave, and a KMS proxy (backed by the KMS emulator through @aws-sdk/client-kms) that
 * records what the enclave asks and can be told to forge its answers. Every byte the enclave sends on both
 * links is recorded.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { KMSClient } from '@aws-sdk/client-kms';
import { KeystoreError } from '@nks/shared/errors';
import { KmsDecryptParams, type EnclaveApi, type KmsDecryptResult } from '@nks/shared/enclave-api';
import { RpcClient, RpcServer, rpcMethod } from '@nks/shared/rpc';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS, SimulatedVsockTransport } from '@nks/shared/transport';
import { silentLogger } from '@nks/shared/log';
import { attestedDecrypt, enclaveConfigFor, startPlatform, writeJson, type Platform } from '../../test/support/platform';
import { startProgram, type Running } from '../../test/support/process';
import { RecordingTransport } from '../../test/support/recording';

export const ENCLAVE_ADDRESS = DEFAULT_ENCLAVE_ADDRESS;
export const PROXY_ADDRESS = DEFAULT_KMS_PROXY_ADDRESS;

export type DecryptParams = ReturnType<typeof KmsDecryptParams.parse>;

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
  restartEnclave(extraConfig?: Record<string, unknown>): Promise<void>;
  stop(): Promise<void>;
}

export async function startEnclaveHarness(runDir: string, config: Record<string, unknown> = {}): Promise<EnclaveHarness> {
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
  const launch = async () => {
    const proc = startProgram('enclave', ['--config', configFile]);
    await proc.waitForLog((e) => e.msg === 'enclave ready');
    return proc;
  };
  harness.enclave = await launch();
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
  harness.restartEnclave = async (extra = {}) => {
    await harness.enclave?.stop();
    for (let i = 0; i < 200 && client.connected; i++) await new Promise((r) => setTimeout(r, 10));
    writeJson(configFile, { ...baseConfig, ...extra });
    harness.enclave = await launch();
    await client.waitConnected(10_000);
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
