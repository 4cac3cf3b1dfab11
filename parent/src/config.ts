/**
 * The parent daemon's configuration: a JSON file, with a few environment overrides for what differs between
 * hosts (listen port, database path, KMS endpoint and region, log level). Validated at start; an invalid one
 * stops the daemon with every problem named.
 */
import { z } from 'zod';
import { ConfigError, readJsonConfig } from '../../shared/src/config-file';
import { describeIssues, kmsKeyArn } from '../../shared/src/schema';
import { TransportConfigSchema } from '../../shared/src/transport';

export const SCOPES = ['keys:create', 'keys:sign', 'keys:read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

const vsockAddress = z.string().regex(/^vsock:\/\/\d+:\d+$/, 'expected vsock://CID:PORT');
const ms = (def: number, min = 1, max = 600_000) => z.number().int().min(min).max(max).default(def);

const ApiSchema = z.strictObject({
  /** Loopback TCP (`{host, port}`) or a Unix socket (`{socket}`). */
  listen: z.union([
    z.strictObject({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535) }),
    z.strictObject({ socket: z.string().min(1), mode: z.string().regex(/^0[0-7]{3}$/).default('0660') }),
  ]),
  tls: z.strictObject({ certFile: z.string(), keyFile: z.string() }).optional(),
  maxBodyBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(256 * 1024),
  /** Requests being served at once; beyond it, 503 OVERLOADED with Retry-After. */
  maxInFlight: z.number().int().min(1).max(100_000).default(1024),
  /** Whole-request deadline, including the enclave call. */
  requestTimeoutMs: ms(15_000),
  /** How long shutdown waits for in-flight requests. */
  drainMs: ms(10_000, 0),
});

export const ParentConfigSchema = z.strictObject({
  api: ApiSchema,
  /** Bearer tokens, stored only as SHA-256 hex of the token. */
  tokens: z
    .array(z.strictObject({ name: z.string().min(1).max(64), sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected SHA-256 as 64 lowercase hex'), scopes: z.array(z.enum(SCOPES)).min(1) }))
    .min(1),
  database: z.strictObject({ path: z.string().min(1) }),
  transport: TransportConfigSchema.default({ kind: 'vsock' }),
  enclave: z
    .strictObject({
      address: vsockAddress.default('vsock://16:5000'),
      poolSize: z.number().int().min(1).max(16).default(2),
      connectTimeoutMs: ms(2_000),
      /** Deadline of one enclave call (a cold sign includes a KMS Decrypt). */
      deadlineMs: ms(10_000),
      maxInFlightPerConnection: z.number().int().min(1).max(100_000).default(2048),
    })
    .default({ address: 'vsock://16:5000', poolSize: 2, connectTimeoutMs: 2000, deadlineMs: 10_000, maxInFlightPerConnection: 2048 }),
  kmsProxy: z.strictObject({
    listen: vsockAddress.default('vsock://3:8000'),
    allowedKeyArns: z.array(kmsKeyArn).min(1),
    region: z.string().min(1),
    /** Override for the KMS emulator (development); absent in production. */
    endpoint: z.string().url().optional(),
    deadlineMs: ms(8_000),
    maxConcurrent: z.number().int().min(1).max(10_000).default(256),
  }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type ParentConfig = z.output<typeof ParentConfigSchema>;

export { ConfigError };

/** Environment overrides, applied before validation. */
function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out = structuredClone(raw) as Record<string, Record<string, unknown>>;
  const section = (k: string) => (out[k] ??= {});
  if (env.NKS_API_PORT) {
    const port = Number(env.NKS_API_PORT);
    section('api').listen = { host: (section('api').listen as { host?: string } | undefined)?.host ?? '127.0.0.1', port };
  }
  if (env.NKS_DB_PATH) section('database').path = env.NKS_DB_PATH;
  if (env.NKS_KMS_ENDPOINT) section('kmsProxy').endpoint = env.NKS_KMS_ENDPOINT;
  if (env.NKS_KMS_REGION) section('kmsProxy').region = env.NKS_KMS_REGION;
  if (env.NKS_LOG_LEVEL) (out as Record<string, unknown>).logLevel = env.NKS_LOG_LEVEL;
  return out;
}

export function parseParentConfig(raw: unknown, env: NodeJS.ProcessEnv = {}, source = 'configuration'): ParentConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`invalid ${source}: not a JSON object`);
  const res = ParentConfigSchema.safeParse(applyEnv(raw as Record<string, unknown>, env));
  if (!res.success) throw new ConfigError(`invalid ${source}: ${describeIssues(res.error, 'config')}`);
  const names = res.data.tokens.map((t) => t.name);
  if (new Set(names).size !== names.length) throw new ConfigError(`invalid ${source}: token names must be unique`);
  const l = res.data.api.listen;
  if ('host' in l && !/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(l.host) && !res.data.api.tls) {
    throw new ConfigError(`invalid ${source}: config.api.listen.host ${l.host} is not loopback; serving beyond loopback requires config.api.tls`);
  }
  return res.data;
}

export function loadParentConfig(file: string, env: NodeJS.ProcessEnv = process.env): ParentConfig {
  return parseParentConfig(readJsonConfig(file), env, `configuration ${file}`);
}
