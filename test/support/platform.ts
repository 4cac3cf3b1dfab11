/**
 * The simulated Nitro platform for multi-process tests: the NSM simulator and the KMS emulator as real
 * processes, an RSA KMS key, and a key policy that lets the parent role decrypt only for the attested image.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, GetPublicKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { startProgram, type Running } from './process';
import { measureString } from '../../sim/src/measure';

export const ACCOUNT = '111122223333';
export const PARENT_ROLE = `arn:aws:iam::${ACCOUNT}:role/nitro-keystore-parent`;
export const ADMIN_ROLE = `arn:aws:iam::${ACCOUNT}:role/keystore-admin`;
export const TEST_PCR0 = '5e'.repeat(48);

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
  kms(accessKeyId?: string): KMSClient;
  stats(): Promise<Record<string, { ok: number; error: number; errors: Record<string, number> }>>;
  setFaults(f: { latencyMs?: number; throttleRate?: number; errorRate?: number }): Promise<void>;
  stop(): Promise<void>;
}

export function attestedPolicy(pcr0: string, role = PARENT_ROLE): string {
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      { Sid: 'KeyAdministration', Effect: 'Allow', Principal: { AWS: ADMIN_ROLE }, Action: 'kms:*', Resource: '*' },
      { Sid: 'ParentReadsPublicKey', Effect: 'Allow', Principal: { AWS: role }, Action: ['kms:DescribeKey', 'kms:GetPublicKey'], Resource: '*' },
      {
        Sid: 'EnclaveDecryptOnly',
        Effect: 'Allow',
        Principal: { AWS: role },
        Action: 'kms:Decrypt',
        Resource: '*',
        Condition: { StringEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': pcr0, 'kms:RecipientAttestation:PCR3': measureString(role) } },
      },
    ],
  });
}

export async function startPlatform(runDir: string, opts: { pcr0?: string; kmsLatencyMs?: number; reuse?: { keyArn: string; kmsPublicKey: string } } = {}): Promise<Platform> {
  const pcr0 = opts.pcr0 ?? TEST_PCR0;
  const nsmSocket = path.join(runDir, 'nsm.sock');
  const procs: Running[] = [];
  const nsm = startProgram('nsm-sim', ['--socket', nsmSocket, '--state-dir', path.join(runDir, 'nsm'), '--pcr0', pcr0, '--parent-role-arn', PARENT_ROLE]);
  procs.push(nsm);
  const ready = await nsm.waitForLog((e) => e.msg === 'NSM simulator ready');
  const rootPem = String(ready.rootPem);

  const kmsStateFile = path.join(runDir, 'kms-state.json');
  const kmsProc = startProgram('kms-emulator', [
    '--port', '0',
    '--state', kmsStateFile,
    '--trust-root', rootPem,
    '--access-key', `AKIDADMIN=${ADMIN_ROLE}`,
    '--principal', PARENT_ROLE,
    '--latency-ms', String(opts.kmsLatencyMs ?? 0),
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
    const admin = kms('AKIDADMIN');
    const created = await admin.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Policy: attestedPolicy(pcr0) }));
    keyArn = created.KeyMetadata?.Arn as string;
    const pub = await admin.send(new GetPublicKeyCommand({ KeyId: keyArn }));
    kmsPublicKey = Buffer.from(pub.PublicKey as Uint8Array).toString('base64');
    admin.destroy();
  }

  return {
    runDir,
    nsmSocket,
    rootPem,
    kmsUrl,
    kmsStateFile,
    keyArn,
    kmsPublicKey,
    pcr0,
    kms,
    async stats() {
      return (await (await fetch(`${kmsUrl}/__emulator/stats`)).json()) as never;
    },
    async setFaults(f) {
      await fetch(`${kmsUrl}/__emulator/faults`, { method: 'POST', body: JSON.stringify(f) });
    },
    async stop() {
      await Promise.all(procs.map((p) => p.stop()));
    },
  };
}

export function writeJson(file: string, value: unknown): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value, null, 2));
  return file;
}
