/**
 * The simulated Nitro platform for multi-process tests: the NSM simulator and the KMS emulator as real
 * processes, an RSA KMS key, and the production key policy (`nks policy`'s generator): the parent role decrypts
 * only for the attested image, and ReEncrypt, CreateGrant and unattested Decrypt are denied to everyone.
 *
 * Principals by access key id: AKIDADMIN the key administrator, AKIDAPPROVER the image approver (the only one
 * allowed PutKeyPolicy; it creates the key, so the policy passes the lockout safety check), AKIDBREAKGLASS the
 * break-glass role; any other access key id is the parent role.
 *
 * Every platform has a keystore identity: at start, the real enclave bundle runs as a genesis image on the
 * platform's NSM and KMS key, and `identity.genesis` is called once (about a second). `enclaveConfigFor`
 * puts that identity into every enclave configuration unless told otherwise (`identity: undefined` makes a
 * genesis image). A platform restarted over the same KMS key (`reuse`) keeps its identity.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, DecryptCommand, GetPublicKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { generateKeyPolicy } from '../../client/src/policy';
import type { EnclaveApi, GenesisResult } from '@nks/shared/enclave-api';
import { silentLogger } from '@nks/shared/log';
import type { SignedRecord } from '@nks/shared/records';
import { RpcClient } from '@nks/shared/rpc';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS, SimulatedVsockTransport } from '@nks/shared/transport';
import { startProgram, type Running } from './process';

export const ACCOUNT = '111122223333';
export const PARENT_ROLE = `arn:aws:iam::${ACCOUNT}:role/nitro-keystore-parent`;
export const ADMIN_ROLE = `arn:aws:iam::${ACCOUNT}:role/keystore-admin`;
export const APPROVER_ROLE = `arn:aws:iam::${ACCOUNT}:role/keystore-image-approver`;
export const BREAK_GLASS_ROLE = `arn:aws:iam::${ACCOUNT}:role/keystore-break-glass`;
/** Access key id -> principal, as the emulator is started (`--access-key`); others are the parent role. */
export const ACCESS_KEYS = { AKIDADMIN: ADMIN_ROLE, AKIDAPPROVER: APPROVER_ROLE, AKIDBREAKGLASS: BREAK_GLASS_ROLE } as const;
export const TEST_PCR0 = '5e'.repeat(48);

/** The enclave configuration's `identity`: the output of a genesis image. */
export interface PlatformIdentity {
  publicKey: string;
  blob: string;
  genesisDocument: string;
  defaultProject: SignedRecord;
}

export interface Platform {
  runDir: string;
  nsmSocket: string;
  rootPem: string;
  kmsUrl: string;
  kmsStateFile: string;
  keyArn: string;
  /** DER SPKI of the KMS key, base64: what the enclave configuration pins. */
  kmsPublicKey: string;
  pcr0: string;
  /** The keystore identity made for this platform's KMS key at start (see `genesisIdentity`). */
  identity: PlatformIdentity;
  /** The whole genesis output it came from, with the operator's nonce (hex, 0x-prefixed). */
  genesis: GenesisResult & { nonce: string };
  kms(accessKeyId?: string): KMSClient;
  stats(): Promise<Record<string, { ok: number; error: number; errors: Record<string, number> }>>;
  /**
   * Changes the emulator's faults. Rates (`throttleRate`, `errorRate`) are random: for benchmarks only.
   * Tests use the scripted ones: `throttleNext` / `errorNext` fail exactly the next N calls, `hold` keeps calls
   * waiting until `release()` (or `hold: false`); `ops` limits the scripted faults to those operations.
   */
  setFaults(f: Partial<EmulatorFaults>): Promise<EmulatorFaultState>;
  /** The emulator's faults now, with the number of calls held. */
  faults(): Promise<EmulatorFaultState>;
  /** Lets the oldest `count` held calls go on (all when absent). */
  release(count?: number): Promise<number>;
  /** Resolves once at least `n` calls are held (the event a test waits for instead of a sleep). */
  waitHeld(n: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface EmulatorFaults {
  latencyMs: number;
  throttleRate: number;
  errorRate: number;
  throttleNext: number;
  errorNext: number;
  /** The HTTP status (5xx) of errorNext's answers. */
  errorStatus: number;
  hold: boolean;
  /** "reset": each call's connection closed without an answer; "silent": no answer at all. */
  unreachable: 'none' | 'reset' | 'silent';
  ops: string[];
}
export type EmulatorFaultState = EmulatorFaults & { held: number };

/** The production key policy for one approved PCR0 and the platform's roles. */
export function attestedPolicy(pcr0: string, role = PARENT_ROLE): string {
  return generateKeyPolicy({
    images: [{ PCR0: pcr0 }],
    parentRoleArn: role,
    keyAdministrators: [ADMIN_ROLE],
    imageApproverRoleArn: APPROVER_ROLE,
    breakGlassRoleArn: BREAK_GLASS_ROLE,
  });
}

/** `--access-key AKID=ARN` arguments for the emulator. */
export function accessKeyArgs(): string[] {
  return Object.entries(ACCESS_KEYS).flatMap(([akid, arn]) => ['--access-key', `${akid}=${arn}`]);
}

/** Genesis outputs by KMS key ARN: a platform restarted over the same key keeps its identity. */
const identities = new Map<string, GenesisResult & { nonce: string }>();

/**
 * Runs the real enclave bundle as a genesis image on `platform` (its NSM and KMS key), in a run directory of its
 * own, and asks it for one identity with a fresh nonce. The genesis image makes no KMS call.
 */
export async function genesisIdentity(
  platform: Pick<Platform, 'keyArn' | 'kmsPublicKey' | 'nsmSocket'>,
  runDir: string,
): Promise<GenesisResult & { nonce: string }> {
  const dir = path.join(runDir, 'genesis');
  const configFile = writeJson(path.join(dir, 'enclave.json'), {
    kmsKeyArn: platform.keyArn,
    kmsPublicKey: platform.kmsPublicKey,
    listen: DEFAULT_ENCLAVE_ADDRESS,
    kmsProxy: DEFAULT_KMS_PROXY_ADDRESS,
    transport: { kind: 'simulated', runDir: dir },
    nsm: { kind: 'simulated', socket: platform.nsmSocket },
    signing: { workers: 0 },
    logLevel: 'info',
  });
  const enclave = startProgram('enclave', ['--config', configFile]);
  const client = new RpcClient<EnclaveApi>({
    name: 'genesis-operator',
    transport: new SimulatedVsockTransport(dir),
    address: DEFAULT_ENCLAVE_ADDRESS,
    logger: silentLogger(),
    defaultDeadlineMs: 15_000,
  });
  try {
    await enclave.waitForLog((e) => e.msg === 'enclave ready');
    await client.waitConnected(10_000);
    const nonce = `0x${randomBytes(16).toString('hex')}`;
    return { ...(await client.call('identity.genesis', { nonce })), nonce };
  } finally {
    await client.close();
    await enclave.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function startPlatform(
  runDir: string,
  opts: { pcr0?: string; kmsLatencyMs?: number; reuse?: { keyArn: string; kmsPublicKey: string } } = {},
): Promise<Platform> {
  const pcr0 = opts.pcr0 ?? TEST_PCR0;
  const nsmSocket = path.join(runDir, 'nsm.sock');
  const procs: Running[] = [];
  const stop = async () => {
    await Promise.all(procs.map((p) => p.stop()));
  };
  try {
    const nsm = startProgram('nsm-sim', [
      '--socket',
      nsmSocket,
      '--state-dir',
      path.join(runDir, 'nsm'),
      '--pcr0',
      pcr0,
      '--parent-role-arn',
      PARENT_ROLE,
    ]);
    procs.push(nsm);
    const ready = await nsm.waitForLog((e) => e.msg === 'NSM simulator ready');
    const rootPem = String(ready.rootPem);

    const kmsStateFile = path.join(runDir, 'kms-state.json');
    const kmsProc = startProgram('kms-emulator', [
      '--port',
      '0',
      '--state',
      kmsStateFile,
      '--trust-root',
      rootPem,
      ...accessKeyArgs(),
      '--principal',
      PARENT_ROLE,
      '--latency-ms',
      String(opts.kmsLatencyMs ?? 0),
    ]);
    procs.push(kmsProc);
    const kmsUrl = String((await kmsProc.waitForLog((e) => e.msg === 'KMS emulator listening')).url);

    const kms = (accessKeyId = 'AKIDPARENT') =>
      new KMSClient({ endpoint: kmsUrl, region: 'us-east-1', credentials: { accessKeyId, secretAccessKey: 'x' }, maxAttempts: 1 });
    let keyArn: string;
    let kmsPublicKey: string;
    if (opts.reuse) {
      ({ keyArn, kmsPublicKey } = opts.reuse);
    } else {
      // The image approver creates the key with its policy (the lockout safety check needs the creator to keep
      // PutKeyPolicy); the administrator reads the public key.
      const approver = kms('AKIDAPPROVER');
      const admin = kms('AKIDADMIN');
      try {
        const created = await approver.send(
          new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Policy: attestedPolicy(pcr0) }),
        );
        keyArn = created.KeyMetadata?.Arn as string;
        const pub = await admin.send(new GetPublicKeyCommand({ KeyId: keyArn }));
        kmsPublicKey = Buffer.from(pub.PublicKey as Uint8Array).toString('base64');
      } finally {
        approver.destroy();
        admin.destroy();
      }
    }

    const admin = async <T>(pathname: string, body?: object): Promise<T> => {
      const res = await fetch(`${kmsUrl}/__emulator/${pathname}`, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`KMS emulator ${pathname}: HTTP ${res.status} ${text}`);
      return JSON.parse(text) as T;
    };
    let genesis = identities.get(keyArn);
    if (!genesis) {
      genesis = await genesisIdentity({ keyArn, kmsPublicKey, nsmSocket }, runDir);
      identities.set(keyArn, genesis);
    }
    const platform: Platform = {
      runDir,
      nsmSocket,
      rootPem,
      kmsUrl,
      kmsStateFile,
      keyArn,
      kmsPublicKey,
      pcr0,
      identity: {
        publicKey: genesis.publicKey,
        blob: genesis.blob,
        genesisDocument: genesis.attestation,
        defaultProject: genesis.defaultProject,
      },
      genesis,
      kms,
      stats: () => admin('stats'),
      setFaults: (f) => admin('faults', f),
      faults: () => admin('faults'),
      release: async (count) => (await admin<{ released: number }>('release', count === undefined ? {} : { count })).released,
      async waitHeld(n, timeoutMs = 30_000) {
        const until = Date.now() + timeoutMs;
        for (;;) {
          const { held } = await platform.faults();
          if (held >= n) return;
          if (Date.now() > until) throw new Error(`timed out waiting for ${n} held KMS calls (${held} held)`);
          await new Promise((r) => setTimeout(r, 10));
        }
      },
      stop,
    };
    return platform;
  } catch (err) {
    // Nothing started here outlives a failed start.
    await stop();
    throw err;
  }
}

/**
 * A genuine attested Decrypt, as the parent (which holds the AWS credentials) can make at any time: what the
 * KMS proxy would relay for a `kms.decrypt` request.
 */
export async function attestedDecrypt(
  kms: KMSClient,
  p: { kmsKeyArn: string; ciphertextBlob: string; attestationDocument: string },
): Promise<{ ciphertextForRecipient: string; keyId: string }> {
  const res = await kms.send(
    new DecryptCommand({
      KeyId: p.kmsKeyArn,
      CiphertextBlob: Buffer.from(p.ciphertextBlob, 'base64'),
      EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
      Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: Buffer.from(p.attestationDocument, 'base64') },
    }),
  );
  return {
    ciphertextForRecipient: Buffer.from(res.CiphertextForRecipient as Uint8Array).toString('base64'),
    keyId: res.KeyId as string,
  };
}

/**
 * An enclave configuration for this platform (its KMS key, its identity, simulated NSM and vsock in `runDir`),
 * `over` on top. `{identity: undefined}` leaves the identity out (written as JSON, the key disappears): a
 * genesis image.
 */
export function enclaveConfigFor(platform: Platform, runDir: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    kmsKeyArn: platform.keyArn,
    kmsPublicKey: platform.kmsPublicKey,
    listen: DEFAULT_ENCLAVE_ADDRESS,
    kmsProxy: DEFAULT_KMS_PROXY_ADDRESS,
    transport: { kind: 'simulated', runDir },
    nsm: { kind: 'simulated', socket: platform.nsmSocket },
    identity: platform.identity,
    logLevel: 'debug',
    ...over,
  };
}

export function writeJson(file: string, value: unknown): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value, null, 2));
  return file;
}
