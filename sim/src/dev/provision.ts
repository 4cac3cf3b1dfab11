/**
 * First-start provisioning of the local stack, done the way production is (docs/DEPLOY.md): create the RSA KMS
 * key and write the enclave configuration with its ARN and public key (a genesis image: no identity yet). The
 * keystore identity is then made by that image (identity.ts), written into the configuration, and the image
 * that results is measured (bundle + configuration) and approved in the key policy, from the same generator
 * operators use (`nks policy`). Later starts reuse it all and check whether the image still matches what the
 * policy approves.
 */
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, GetKeyPolicyCommand, GetPublicKeyCommand, KMSClient, PutKeyPolicyCommand } from '@aws-sdk/client-kms';
import { generateKeyPolicy } from '../../../client/src/policy';
import { DEFAULT_EGRESS_ADDRESS } from '@nks/shared/egress';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS } from '@nks/shared/transport';
import { asNitroCliJson, measureImageFiles, type Measurements } from '../measure';

export const DEV_ACCOUNT = '111122223333';
export const DEV_PARENT_ROLE = `arn:aws:iam::${DEV_ACCOUNT}:role/nitro-keystore-parent`;
/**
 * The dev stack's one operator identity (dev/main.ts maps DEV_ADMIN_ACCESS_KEY to it). It creates the key and
 * then installs and updates the key policy, so in the policy it is the image approver: the only principal that
 * may PutKeyPolicy (production keeps PutKeyPolicy on a dedicated role too). The name is kept so that dev
 * directories provisioned before the approver role existed keep working (their policy names this ARN).
 */
export const DEV_ADMIN_ROLE = `arn:aws:iam::${DEV_ACCOUNT}:role/nitro-keystore-admin`;
export const DEV_IMAGE_APPROVER_ROLE = DEV_ADMIN_ROLE;
/** Named in the dev key policy as production names them; no dev credential maps to them. */
export const DEV_KEY_ADMIN_ROLE = `arn:aws:iam::${DEV_ACCOUNT}:role/nitro-keystore-key-admin`;
export const DEV_BREAK_GLASS_ROLE = `arn:aws:iam::${DEV_ACCOUNT}:role/nitro-keystore-break-glass`;
export const DEV_ADMIN_ACCESS_KEY = 'AKIADEVADMIN';
export const DEV_PARENT_ACCESS_KEY = 'AKIADEVPARENT';

export interface DevPaths {
  dir: string;
  runDir: string;
  nsmStateDir: string;
  rootPem: string;
  kmsState: string;
  enclaveConfig: string;
  parentConfig: string;
  database: string;
  token: string;
  provision: string;
  measurements: string;
  policy: string;
  devJson: string;
  lock: string;
  /** The genesis output (`parent genesis --out`), kept as the operator would keep it. */
  genesis: string;
  /** The migration image's configuration, while a migration runs. */
  migrationConfig: string;
}

/** Unix socket paths are limited to 107 bytes: a deep state directory keeps its sockets under /tmp. */
export function devPaths(dir: string): DevPaths {
  const abs = path.resolve(dir);
  let runDir = path.join(abs, 'run');
  if (Buffer.byteLength(path.join(runDir, 'vsock', '4294967295.4294967295.sock')) > 107) {
    runDir = path.join('/tmp', `nks-dev-${createHash('sha256').update(abs).digest('hex').slice(0, 12)}`);
  }
  return {
    dir: abs,
    runDir,
    nsmStateDir: path.join(abs, 'nsm'),
    rootPem: path.join(abs, 'nsm', 'root.pem'),
    kmsState: path.join(abs, 'kms-state.json'),
    enclaveConfig: path.join(abs, 'enclave.json'),
    parentConfig: path.join(abs, 'parent.json'),
    database: path.join(abs, 'keys.db'),
    token: path.join(abs, 'token'),
    provision: path.join(abs, 'provision.json'),
    measurements: path.join(abs, 'measurements.json'),
    policy: path.join(abs, 'key-policy.json'),
    devJson: path.join(abs, 'dev.json'),
    lock: path.join(abs, 'dev.pid'),
    genesis: path.join(abs, 'genesis.json'),
    migrationConfig: path.join(abs, 'enclave-migration.json'),
  };
}

export interface Provisioned {
  keyArn: string;
  /** PCR0 values the installed key policy approves. */
  approvedPcr0: string[];
}

function writeFile(file: string, content: string, mode = 0o600): void {
  fs.writeFileSync(file, content, { mode });
}

export function adminKms(url: string): KMSClient {
  return new KMSClient({
    endpoint: url,
    region: 'us-east-1',
    credentials: { accessKeyId: DEV_ADMIN_ACCESS_KEY, secretAccessKey: 'dev' },
    maxAttempts: 2,
  });
}

/** The dev key policy: the production generator, with the dev roles, approving `images`. */
export function devKeyPolicy(...images: Measurements[]): string {
  return generateKeyPolicy({
    images,
    parentRoleArn: DEV_PARENT_ROLE,
    keyAdministrators: [DEV_KEY_ADMIN_ROLE],
    imageApproverRoleArn: DEV_IMAGE_APPROVER_ROLE,
    breakGlassRoleArn: DEV_BREAK_GLASS_ROLE,
  });
}

async function installPolicy(kms: KMSClient, keyArn: string, m: Measurements, p: DevPaths): Promise<string[]> {
  const policy = devKeyPolicy(m);
  // As the image approver, without bypassing the lockout safety check: the emulator refuses a policy that would
  // stop this identity from updating it again, as KMS does.
  await kms.send(new PutKeyPolicyCommand({ KeyId: keyArn, Policy: policy }));
  writeFile(p.policy, `${policy}\n`, 0o644);
  writeFile(p.measurements, `${JSON.stringify(asNitroCliJson(m), null, 2)}\n`, 0o644);
  return [m.PCR0];
}

/**
 * Approves `extra` next to `current` for a while (the migration image), in KMS only: the policy and
 * measurement files keep the normal image, and `updatePolicy` afterwards approves that one alone again.
 */
export async function approveAlso(kmsUrl: string, keyArn: string, current: Measurements, extra: Measurements): Promise<void> {
  const kms = adminKms(kmsUrl);
  try {
    await kms.send(new PutKeyPolicyCommand({ KeyId: keyArn, Policy: devKeyPolicy(current, extra) }));
  } finally {
    kms.destroy();
  }
}

/**
 * Where an enclave finds its simulated vsock and NSM: in the enclave configuration, so measured. The absolute
 * form names the stack's one run directory. The relative form names the enclave's working directory, so one
 * configuration (one image, one PCR0) serves every instance of a multi-instance stack: each enclave runs in the
 * run directory of its own pair (instances.ts), as each enclave of a fleet has a host of its own.
 */
const RELATIVE_PLUMBING = { transport: { kind: 'simulated', runDir: '.' }, nsm: { kind: 'simulated', socket: 'nsm.sock' } } as const;
const absolutePlumbing = (p: DevPaths) => ({
  transport: { kind: 'simulated', runDir: p.runDir },
  nsm: { kind: 'simulated', socket: path.join(p.runDir, 'nsm.sock') },
});

/**
 * Gives the enclave configuration the relative form (above) if it has the absolute one: what a stack of several
 * instances needs. Returns whether the file changed: then PCR0 did. The relative form also serves one instance,
 * so it is kept once made.
 */
export function useRelativeRunDir(p: DevPaths): boolean {
  const before = fs.readFileSync(p.enclaveConfig, 'utf8');
  const config = JSON.parse(before) as Record<string, unknown>;
  const after = `${JSON.stringify({ ...config, ...RELATIVE_PLUMBING }, null, 2)}\n`;
  if (after === before) return false;
  writeFile(p.enclaveConfig, after, 0o644);
  return true;
}

/**
 * Creates the KMS key and the enclave configuration of the genesis image (first start). No image is approved
 * yet: the genesis image makes no KMS call, and the image to approve is the one with the identity.
 */
export async function provision(kmsUrl: string, p: DevPaths, options: { relativeRunDir?: boolean } = {}): Promise<Provisioned> {
  const kms = adminKms(kmsUrl);
  try {
    const created = await kms.send(
      new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Description: 'nitro-keystore local development' }),
    );
    const keyArn = created.KeyMetadata?.Arn as string;
    const pub = await kms.send(new GetPublicKeyCommand({ KeyId: keyArn }));
    const enclaveConfig = {
      kmsKeyArn: keyArn,
      kmsPublicKey: Buffer.from(pub.PublicKey as Uint8Array).toString('base64'),
      listen: DEFAULT_ENCLAVE_ADDRESS,
      kmsProxy: DEFAULT_KMS_PROXY_ADDRESS,
      ...(options.relativeRunDir ? RELATIVE_PLUMBING : absolutePlumbing(p)),
      logLevel: 'info',
    };
    writeFile(p.enclaveConfig, `${JSON.stringify(enclaveConfig, null, 2)}\n`, 0o644);
    const result: Provisioned = { keyArn, approvedPcr0: [] };
    writeFile(p.provision, `${JSON.stringify({ ...result, provisionedAt: new Date().toISOString() }, null, 2)}\n`);
    return result;
  } finally {
    kms.destroy();
  }
}

/** Re-approves the current image (replacing the approved measurements). */
export async function updatePolicy(kmsUrl: string, bundle: string, p: DevPaths, prov: Provisioned): Promise<Provisioned> {
  const kms = adminKms(kmsUrl);
  try {
    const approvedPcr0 = await installPolicy(kms, prov.keyArn, measureImageFiles([bundle, p.enclaveConfig]), p);
    const next = { ...prov, approvedPcr0 };
    writeFile(p.provision, `${JSON.stringify({ ...next, policyUpdatedAt: new Date().toISOString() }, null, 2)}\n`);
    return next;
  } finally {
    kms.destroy();
  }
}

/** The PCR0 values the key policy in KMS approves right now (read back, not trusted from local files). */
export async function approvedByPolicy(kmsUrl: string, keyArn: string): Promise<string[]> {
  const kms = adminKms(kmsUrl);
  try {
    const res = await kms.send(new GetKeyPolicyCommand({ KeyId: keyArn }));
    const policy = JSON.parse(res.Policy as string) as {
      Statement: Array<{ Effect: string; Condition?: Record<string, Record<string, string | string[]>> }>;
    };
    const values = policy.Statement.filter((s) => s.Effect === 'Allow').flatMap((s) =>
      Object.values(s.Condition ?? {}).flatMap((c) => c['kms:RecipientAttestation:ImageSha384'] ?? []),
    );
    return values.map((v) => v.toLowerCase());
  } finally {
    kms.destroy();
  }
}

/** What differs between the parent configurations of a multi-instance stack (instances.ts); none: instance 0's. */
export interface InstanceConfig {
  /** Where the configuration is written (default `<dir>/parent.json`). */
  file?: string;
  /** The pair's simulated vsock (default the stack's run directory). */
  runDir?: string;
  /** The `database` section (default SQLite in `<dir>/keys.db`). */
  database?: Record<string, unknown>;
}

/**
 * The caller token (created once, mode 0600) and the parent configuration holding only its hash (and those of
 * the tokens `nks dev token create` added, kept), a short drain (DEV_DRAIN_MS), and the
 * keystore identity's public key once there is one (the parent then uses no enclave of another identity).
 * The egress relay (docs/PROJECTS.md, "The egress relay") allows loopback addresses, which only development
 * may do (JWKS servers on this machine), and port 443 plus `egressPorts`. `wallets`: the ingress relay's port on
 * 127.0.0.1 and the URL the wallet routes are reached at (docs/TLS.md). `instance`: another instance's file, run
 * directory and database (every instance has the same token and identity).
 */
export function ensureTokenAndParentConfig(
  p: DevPaths,
  keyArn: string,
  apiPort: number,
  identityPublicKey?: string,
  egressPorts: number[] = [],
  wallets?: { port: number; publicUrl: string },
  instance: InstanceConfig = {},
): string {
  let token: string;
  if (fs.existsSync(p.token)) token = fs.readFileSync(p.token, 'utf8').trim();
  else {
    token = `nks_dev_${randomBytes(24).toString('base64url')}`;
    writeFile(p.token, `${token}\n`);
  }
  const file = instance.file ?? p.parentConfig;
  const config = {
    // A short drain: Ctrl-C stops the whole stack within about 2 s (main.ts), and no load balancer to wait for
    // on SIGTERM (the launcher stops its children with it); production keeps the defaults.
    api: { listen: { host: '127.0.0.1', port: apiPort }, drainMs: DEV_DRAIN_MS, preDrainMs: 0 },
    tokens: [
      { name: 'dev', sha256: createHash('sha256').update(token).digest('hex'), scopes: ['keys:create', 'keys:sign', 'keys:read', 'admin'] },
      ...addedTokens(file),
    ],
    database: instance.database ?? { kind: 'sqlite', path: p.database },
    transport: { kind: 'simulated', runDir: instance.runDir ?? p.runDir },
    enclave: { address: DEFAULT_ENCLAVE_ADDRESS },
    kmsProxy: { listen: DEFAULT_KMS_PROXY_ADDRESS, allowedKeyArns: [keyArn], region: 'us-east-1' },
    egress: { listen: DEFAULT_EGRESS_ADDRESS, allowLoopback: true, allowedPorts: [...new Set([443, ...egressPorts])] },
    ...(identityPublicKey ? { identity: { publicKey: identityPublicKey } } : {}),
    // The wallet routes (docs/TLS.md): the relay on loopback, to the enclave's HTTPS server.
    ...(wallets ? { wallets: { publicUrl: wallets.publicUrl, relay: { host: '127.0.0.1', port: wallets.port } } } : {}),
    // The operational listener (`/metrics`) on a free loopback port: its address is in the parent's "parent ready" line.
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
    logLevel: 'info',
  };
  writeFile(file, `${JSON.stringify(config, null, 2)}\n`);
  return token;
}

/** The dev parent's `api.drainMs`: how long its shutdown waits for requests in flight. */
export const DEV_DRAIN_MS = 500;

/**
 * The tokens `nks dev token create` added to a parent configuration (every one but `dev`), kept when the
 * configuration is written again at the next start. None when the file is missing or not a configuration.
 */
function addedTokens(file: string): unknown[] {
  let tokens: unknown;
  try {
    tokens = (JSON.parse(fs.readFileSync(file, 'utf8')) as { tokens?: unknown }).tokens;
  } catch {
    return [];
  }
  if (!Array.isArray(tokens)) return [];
  return tokens.filter((t: unknown) => typeof t === 'object' && t !== null && (t as { name?: unknown }).name !== 'dev');
}

/**
 * The certificates of a PEM file (`--trust-ca`; a bundle may hold several), each normalised to one PEM block.
 * Refuses a file without a certificate, one that does not parse, and one outside its validity period.
 */
export function readCaFile(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`--trust-ca ${file}: ${(err as Error).message}`);
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`--trust-ca ${file}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it`);
  return blocks.map((pem, i) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(pem);
    } catch (err) {
      throw new Error(`--trust-ca ${file}: certificate ${i + 1} does not parse: ${(err as Error).message}`);
    }
    const now = Date.now();
    if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) {
      throw new Error(`--trust-ca ${file}: certificate ${i + 1} (${cert.subject}) is not valid now (${cert.validFrom} to ${cert.validTo})`);
    }
    return cert.toString();
  });
}

/**
 * Makes the enclave configuration's `jwt.trustedCas` exactly `cas` (the CAs the enclave trusts for JWKS
 * servers beside Node's store; none: no `trustedCas`, and no `jwt` section left empty, so a stack started
 * without `--trust-ca` or `--idp` keeps the image it had). Returns whether the file changed: then PCR0 did.
 */
export function setTrustedCas(p: DevPaths, cas: string[]): boolean {
  const before = fs.readFileSync(p.enclaveConfig, 'utf8');
  const config = JSON.parse(before) as Record<string, unknown>;
  const jwt = { ...(config.jwt as Record<string, unknown> | undefined) };
  delete jwt.trustedCas;
  const unique = [...new Set(cas)];
  if (unique.length > 0) jwt.trustedCas = unique;
  if (Object.keys(jwt).length > 0) config.jwt = jwt;
  else delete config.jwt;
  const after = `${JSON.stringify(config, null, 2)}\n`;
  if (after === before) return false;
  writeFile(p.enclaveConfig, after, 0o644);
  return true;
}
