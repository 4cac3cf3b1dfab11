/**
 * The enclave's links to the parent's listeners (KMS proxy, wallet store) are retried when a parent says
 * `enclave.hello` (issue 22, item 8: readiness right after a parent restart), and a parent that owns both ends
 * cannot turn that hint into a flood: a hostile parent whose KMS-proxy listener accepts and closes every
 * connection, while it sends hellos as fast as it can, gets at most one connection attempt per 50 ms.
 *
 * The enclave is a real process on the simulated platform; the test is its parent (a KMS proxy backed by the
 * emulator, as test/support/platform's attestedDecrypt, and an RPC client).
 */
import fs from 'node:fs';
import { KmsDecryptParams, type EnclaveApi } from '@nks/shared/enclave-api';
import { silentLogger } from '@nks/shared/log';
import { RpcClient, RpcServer, rpcMethod } from '@nks/shared/rpc';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS, SimulatedVsockTransport, type Listener } from '@nks/shared/transport';
import { tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { attestedDecrypt, enclaveConfigFor, startPlatform, writeJson, type Platform } from '../../test/support/platform';
import { startProgram, type Running } from '../../test/support/process';

describe("the enclave's links to a parent that says hello", () => {
  let runDir: string;
  let platform: Platform;
  let transport: SimulatedVsockTransport;
  let enclave: Running;
  let client: RpcClient<EnclaveApi>;
  let proxy: RpcServer | undefined;
  let hostile: Listener | undefined;
  let kms: ReturnType<Platform['kms']>;

  const startProxy = async () => {
    proxy = new RpcServer({
      name: 'test-kms-proxy',
      logger: silentLogger(),
      methods: { 'kms.decrypt': rpcMethod(KmsDecryptParams, (p) => attestedDecrypt(kms, p)) },
    });
    await proxy.listen(transport, DEFAULT_KMS_PROXY_ADDRESS);
  };
  const entries = (from: number) =>
    enclave.lines.slice(from).flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  const kmsLink = async () => (await client.call('enclave.health', {})).kmsProxy;

  beforeAll(async () => {
    runDir = tempRunDir('nks-hints-');
    platform = await startPlatform(runDir);
    kms = platform.kms();
    transport = new SimulatedVsockTransport(runDir);
    await startProxy();
    const configFile = writeJson(`${runDir}/enclave.json`, enclaveConfigFor(platform, runDir, { logLevel: 'info' }));
    enclave = startProgram('enclave', ['--config', configFile]);
    await enclave.waitForLog((e) => e.msg === 'enclave ready');
    client = new RpcClient<EnclaveApi>({
      name: 'test-parent',
      transport,
      address: DEFAULT_ENCLAVE_ADDRESS,
      logger: silentLogger(),
      defaultDeadlineMs: 15_000,
    });
    await client.waitConnected(5000);
  }, 60_000);
  afterAll(async () => {
    await client?.close();
    await enclave?.stop();
    await hostile?.close();
    await proxy?.close(100);
    kms?.destroy();
    await platform?.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  it('a hello flood against a listener that accepts and closes gets at most one attempt per 50 ms', async () => {
    expect(await kmsLink()).toBe('connected');
    await proxy!.close(0);
    proxy = undefined;
    let accepted = 0;
    hostile = await transport.listen(DEFAULT_KMS_PROXY_ADDRESS, (conn) => {
      accepted += 1;
      conn.destroy();
    });
    const started = Date.now();
    let hellos = 0;
    // One hello at a time, each as soon as the last is answered: every gap in the enclave's attempts is hinted.
    while (Date.now() - started < 1500) {
      await client.call('enclave.hello', { protocolVersion: 3 });
      hellos += 1;
    }
    const elapsed = Date.now() - started;
    process.stdout.write(`hello flood: ${hellos} hellos, ${accepted} connection attempts in ${elapsed} ms\n`);
    expect(hellos).toBeGreaterThan(200);
    // One per 50 ms from the hints, plus the few of the backoff's own schedule.
    expect(accepted).toBeLessThanOrEqual(Math.ceil(elapsed / 50) + 10);
    expect(accepted).toBeLessThan(hellos / 4);
    await hostile.close();
    hostile = undefined;
  }, 30_000);

  it('connects to a KMS proxy that is back on the next hello, not at the end of its backoff', async () => {
    // The link has failed for a while (the last test): its backoff has grown to its ceiling (2 s).
    await waitFor(() => entries(0).some((e) => e.msg === 'kms-proxy connect failed'), 10_000, 'a failed connect');
    await new Promise((r) => setTimeout(r, 3500));
    expect(await kmsLink()).toBe('disconnected');
    const from = enclave.lines.length;
    await startProxy();
    await client.call('enclave.hello', { protocolVersion: 3 });
    await waitFor(() => entries(from).some((e) => e.msg === 'kms-proxy reconnected'), 10_000, 'the KMS-proxy link back');
    expect(entries(from).find((e) => e.msg === 'kms-proxy reconnected')).toMatchObject({ early: true });
    expect(await kmsLink()).toBe('connected');
  }, 30_000);
});
