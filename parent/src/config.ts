/**
 * The parent daemon's configuration: a JSON file, with a few environment overrides for what differs between
 * hosts (listen port, database path, KMS endpoint and region, log level). Validated at start; an invalid one
 * stops the daemon with every problem named.
 */
import net from 'node:net';
import { z } from 'zod';
import { ConfigError, readJsonConfig } from '@nks/shared/config-file';
import { DEADLINES, deadlineMarginMs, nests } from '@nks/shared/deadlines';
import { DEFAULT_LOG_LEVEL, LOG_LEVELS } from '@nks/shared/log';
import { describeIssues, identityPublicKey, kmsKeyArn } from '@nks/shared/schema';
import { PROJECT_ID_EXPECTED, PROJECT_ID_RE } from '@nks/shared/identifiers';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS, TransportConfigSchema, VsockAddressSchema } from '@nks/shared/transport';
import { DEFAULT_WALLET_STORE_ADDRESS, DEFAULT_WALLETS_ADDRESS } from '@nks/shared/ingress';
import { EgressConfigSchema } from './egress/config';

export const SCOPES = ['keys:create', 'keys:sign', 'keys:read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Every default of the configuration, once: the schema below fills these in, and tests compare with them. */
export const PARENT_CONFIG_DEFAULTS = {
  api: {
    /** For `listen: {port}` (and NKS_API_PORT): loopback only, unless TLS is configured. */
    host: '127.0.0.1',
    /** For `listen: {socket}`. */
    socketMode: '0660',
    maxBodyBytes: 256 * 1024,
    maxInFlight: 1024,
    requestTimeoutMs: DEADLINES.apiRequestMs,
    /**
     * After SIGTERM, how long the API keeps serving normally with `/readyz` at 503 before it stops accepting:
     * a load balancer polling `/readyz` every 2 s needs two failed polls to stop sending (docs/OPERATIONS.md).
     */
    preDrainMs: 5_000,
    /** Then how long the answers to requests already received may take: a request admitted just before gets its deadline. */
    drainMs: 20_000,
    /** Open connections at most; beyond it Node closes new ones at once (above maxInFlight, so overload is answered). */
    maxConnections: 4096,
    /** Time for a client to send its request headers (slow clients hold a connection no longer). */
    headersTimeoutMs: 10_000,
    /** No proxy is trusted: a request's client address is its socket peer's. */
    trustProxy: [] as string[],
  },
  transport: { kind: 'vsock' },
  enclave: {
    address: DEFAULT_ENCLAVE_ADDRESS,
    poolSize: 2,
    connectTimeoutMs: 2_000,
    deadlineMs: DEADLINES.enclaveCallMs,
    maxInFlightPerConnection: 2048,
    /**
     * Enclave calls in flight across the pool: twice api.maxInFlight, so the API's own cap is met first and the
     * parent's own calls (health for /readyz and /metrics, TLS installs) still fit while the API is at it; and
     * no more than one connection's maxInFlightPerConnection, so it all fits on one connection when the other is down.
     */
    maxQueued: 2048,
    /** Liveness probes (docs/OPERATIONS.md, "A frozen enclave"): a frozen enclave is noticed within about 3.5 s. */
    pingIntervalMs: 1_000,
    pingTimeoutMs: 500,
    pingMisses: 3,
    /** The enclave's key cache: none set here, so the image's own values (docs/OPERATIONS.md, "Sizing the key cache"). */
    cache: {},
  },
  kmsProxy: { listen: DEFAULT_KMS_PROXY_ADDRESS, deadlineMs: DEADLINES.kmsProxyMs, maxConcurrent: 256 },
  // The wallet routes are served by the enclave over TLS that ends there (docs/TLS.md): the parent relays raw
  // TCP from a public port to the enclave's wallet listener, and serves the enclave's wallet store.
  wallets: {
    relay: {
      host: '0.0.0.0',
      port: 8443,
      enclave: DEFAULT_WALLETS_ADDRESS,
      // No more than the enclave's wallets.maxConnections: beyond it the enclave would close them anyway.
      maxConnections: 1024,
      maxPerAddress: 32,
      connectTimeoutMs: 2_000,
      idleTimeoutMs: 120_000,
      maxBytesPerConnection: 64 * 1024 * 1024,
    },
    store: { listen: DEFAULT_WALLET_STORE_ADDRESS, maxConcurrent: 256 },
  },
  /** The operational listener: `/metrics`, `/healthz`, `/readyz`, no token (docs/OPERATIONS.md, "Metrics"). */
  metrics: { host: '127.0.0.1', port: 9464, socketMode: '0660' },
  logLevel: DEFAULT_LOG_LEVEL,
} as const;

const D = PARENT_CONFIG_DEFAULTS;
const ms = (def: number, min = 1, max = 600_000) => z.number().int().min(min).max(max).default(def);

/** The Unix socket listener's peer, in `api.trustProxy`. */
export const TRUST_UNIX_PEER = 'unix';

/** An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`): what `api.trustProxy` lists, besides `unix`. */
const proxyEntry = z.string().refine((s) => {
  if (s === TRUST_UNIX_PEER) return true;
  const [ip = '', prefix, ...rest] = s.split('/');
  const family = net.isIP(ip);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) >= 1 && Number(prefix) <= (family === 4 ? 32 : 128);
}, `expected an IP address, a CIDR block (address/prefix) or "${TRUST_UNIX_PEER}"`);

const ApiSchema = z.strictObject({
  /** Loopback TCP (`{host, port}`) or a Unix socket (`{socket}`). */
  listen: z.union([
    z.strictObject({ host: z.string().default(D.api.host), port: z.number().int().min(0).max(65535) }),
    z.strictObject({
      socket: z.string().min(1),
      mode: z
        .string()
        .regex(/^0[0-7]{3}$/)
        .default(D.api.socketMode),
    }),
  ]),
  tls: z.strictObject({ certFile: z.string(), keyFile: z.string() }).optional(),
  maxBodyBytes: z
    .number()
    .int()
    .min(1024)
    .max(16 * 1024 * 1024)
    .default(D.api.maxBodyBytes),
  /** Requests being served at once; beyond it, 503 OVERLOADED with Retry-After. */
  maxInFlight: z.number().int().min(1).max(100_000).default(D.api.maxInFlight),
  /** Whole-request deadline, including the enclave call. */
  requestTimeoutMs: ms(D.api.requestTimeoutMs),
  /** After SIGTERM: `/readyz` 503 while everything else is served as before, for this long (SIGINT: none). */
  preDrainMs: ms(D.api.preDrainMs, 0),
  /** Then, no new connections: how long shutdown waits for the answers to every request already received. */
  drainMs: ms(D.api.drainMs, 0),
  /** Open connections at most (`server.maxConnections`): beyond it, new connections are closed at once. */
  maxConnections: z.number().int().min(1).max(1_000_000).default(D.api.maxConnections),
  /** How long a client may take to send its request headers (Node's `headersTimeout`). */
  headersTimeoutMs: ms(D.api.headersTimeoutMs, 1000, 120_000),
  /**
   * The proxies in front of the listener whose `X-Forwarded-For` names the client (docs/DEPLOY.md, "The
   * TrueWallet routes behind a load balancer or proxy"): IP addresses and CIDR blocks, and `unix` for the peer of a
   * Unix socket listener. A request's client address (what the access log records) is the socket peer's,
   * unless that peer is listed: then the address its X-Forwarded-For entry names, walking back past listed
   * proxies. None by default: X-Forwarded-For is then ignored.
   */
  trustProxy: z.array(proxyEntry).max(64).default(D.api.trustProxy),
});

/** A PostgreSQL URL; its password is never logged (docs/STORAGE.md). Better passed as NKS_DATABASE_URL than written here. */
const postgresUrl = z
  .string()
  .max(4096)
  .refine((u) => /^postgres(ql)?:\/\/[^\s]+$/.test(u), 'expected a postgres:// or postgresql:// URL');

/**
 * The store (docs/STORAGE.md): SQLite, embedded, for one instance (the default), or PostgreSQL, shared by
 * several instances. The shape before 0.8, `{path}`, is read as SQLite (with a deprecation warning at start).
 */
const DatabaseSchema = z.preprocess(
  (v) => (typeof v === 'object' && v !== null && !('kind' in v) && 'path' in v ? { kind: 'sqlite', ...v } : v),
  z.discriminatedUnion('kind', [
    z.strictObject({
      kind: z.literal('sqlite'),
      path: z.string().min(1),
      /** Deadline of one database call (a write stuck in fsync fails as STORAGE_UNAVAILABLE after it). */
      timeoutMs: z.number().int().min(100).max(60_000).default(5000),
    }),
    z.strictObject({
      kind: z.literal('postgres'),
      url: postgresUrl,
      /** Connections of this instance (RDS: max_connections over the instances, with room for operators). */
      poolSize: z.number().int().min(1).max(200).default(10),
      /** TLS to the server: true verifies against the system CAs; `ca` names a PEM file (RDS: its CA bundle). */
      ssl: z
        .union([z.boolean(), z.strictObject({ ca: z.string().min(1).optional(), rejectUnauthorized: z.boolean().default(true) })])
        .default(false),
      statementTimeoutMs: z.number().int().min(100).max(60_000).default(5000),
      connectTimeoutMs: z.number().int().min(100).max(60_000).default(5000),
      /** Apply pending migrations at start (else refuse a database that is behind: run `nks store migrate`). */
      migrate: z.boolean().default(true),
    }),
  ]),
);
export type DatabaseConfig = z.output<typeof DatabaseSchema>;

/**
 * A token's rate limit (README.md, "Caller API"): at most `max` requests in each fixed window of `windowMs`,
 * counted per token; beyond it, 429 RATE_LIMITED with Retry-After.
 */
const TokenRateLimitSchema = z.strictObject({
  max: z.number().int().min(1).max(1_000_000_000),
  windowMs: z.number().int().min(1000).max(86_400_000),
});
export type TokenRateLimit = z.output<typeof TokenRateLimitSchema>;

/**
 * A bearer token, stored only as the SHA-256 hex of the token. `projects` binds it to those projects (docs/SECURITY.md,
 * "The reach of each token"); an `admin` token is never bound (it manages the projects themselves). `expiresAt`: from
 * then on it is refused (401). `rateLimit`: its own limit, instead of `tokenDefaults.rateLimit`.
 */
const TokenSchema = z
  .strictObject({
    name: z.string().min(1).max(64),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected SHA-256 as 64 lowercase hex'),
    scopes: z.array(z.enum(SCOPES)).min(1),
    projects: z
      .array(z.string().regex(PROJECT_ID_RE, PROJECT_ID_EXPECTED))
      .min(1)
      .max(256)
      .refine((l) => new Set(l).size === l.length, 'expected distinct project ids')
      .optional(),
    expiresAt: z.iso
      .datetime({ offset: true, error: 'expected an ISO 8601 date and time with a time zone (2027-01-31T00:00:00Z)' })
      .optional(),
    rateLimit: TokenRateLimitSchema.optional(),
  })
  .refine((t) => !(t.projects && t.scopes.includes('admin')), {
    path: ['projects'],
    message: 'an admin token cannot be bound to projects (it manages the projects themselves)',
  });
export type TokenConfig = z.output<typeof TokenSchema>;

/** What applies to every token that does not say otherwise: `rateLimit` (none: no limit). */
const TokenDefaultsSchema = z.strictObject({ rateLimit: TokenRateLimitSchema.optional() });
export type TokenDefaults = z.output<typeof TokenDefaultsSchema>;

/** The sections a SIGHUP reloads (parent/README.md, "Reloading tokens"); any other change needs a restart. */
export const RELOADABLE_SECTIONS = ['tokens', 'tokenDefaults'] as const;

/**
 * The operational listener (`/metrics`, `/healthz`, `/readyz`; no token): loopback TCP or a Unix socket, on its own
 * so that the caller API serves no unauthenticated metrics. `enabled: false`: no such listener.
 */
const MetricsSchema = z.strictObject({
  enabled: z.boolean().default(true),
  listen: z
    .union([
      z.strictObject({ host: z.string().default(D.metrics.host), port: z.number().int().min(0).max(65535) }),
      z.strictObject({
        socket: z.string().min(1),
        mode: z
          .string()
          .regex(/^0[0-7]{3}$/)
          .default(D.metrics.socketMode),
      }),
    ])
    .default({ host: D.metrics.host, port: D.metrics.port }),
});
export type MetricsConfig = z.output<typeof MetricsSchema>;

export const ParentConfigSchema = z.strictObject({
  api: ApiSchema,
  tokens: z.array(TokenSchema).min(1),
  tokenDefaults: TokenDefaultsSchema.prefault({}),
  database: DatabaseSchema,
  transport: TransportConfigSchema.default(D.transport),
  // An absent section is parsed as an empty one (`prefault`), so it gets the fields' own defaults.
  enclave: z
    .strictObject({
      address: VsockAddressSchema.default(D.enclave.address),
      poolSize: z.number().int().min(1).max(16).default(D.enclave.poolSize),
      connectTimeoutMs: ms(D.enclave.connectTimeoutMs),
      /** Deadline of one enclave call (a cold sign includes a KMS Decrypt). */
      deadlineMs: ms(D.enclave.deadlineMs),
      maxInFlightPerConnection: z.number().int().min(1).max(100_000).default(D.enclave.maxInFlightPerConnection),
      /** Enclave calls in flight across the pool; beyond it 503 OVERLOADED at once, nothing sent. */
      maxQueued: z.number().int().min(1).max(1_000_000).default(D.enclave.maxQueued),
      /** Each connection is probed this often; after pingMisses probes in a row unanswered within pingTimeoutMs it is down. */
      pingIntervalMs: ms(D.enclave.pingIntervalMs, 50, 60_000),
      pingTimeoutMs: ms(D.enclave.pingTimeoutMs, 10, 60_000),
      pingMisses: z.number().int().min(1).max(100).default(D.enclave.pingMisses),
      /**
       * The enclave's key cache (docs/OPERATIONS.md, "Sizing the key cache"): how long a decrypted key stays
       * cached after its unsealing, and how many keys at most. Sent to the enclave on every connection's start-up
       * (cache.configure); each must lie within the bounds its image fixes, else the enclave is not used and the
       * error names the bound. An absent field is the image's own value.
       */
      cache: z
        .strictObject({
          ttlMs: z
            .number()
            .int()
            .min(1_000)
            .max(24 * 3600_000)
            .optional(),
          maxEntries: z.number().int().min(1).max(1_000_000).optional(),
        })
        .prefault({}),
    })
    .prefault({})
    .refine((e) => e.pingTimeoutMs <= e.pingIntervalMs, {
      message: 'enclave.pingTimeoutMs must not exceed enclave.pingIntervalMs (one probe at a time per connection)',
      path: ['pingTimeoutMs'],
    }),
  kmsProxy: z.strictObject({
    listen: VsockAddressSchema.default(D.kmsProxy.listen),
    allowedKeyArns: z.array(kmsKeyArn).min(1),
    region: z.string().min(1),
    /** Override for the KMS emulator (development); absent in production. */
    endpoint: z.string().url().optional(),
    /** The proxy's time for one decrypt, retries included (never more than the enclave's time left, less a margin). */
    deadlineMs: ms(D.kmsProxy.deadlineMs),
    maxConcurrent: z.number().int().min(1).max(10_000).default(D.kmsProxy.maxConcurrent),
  }),
  /**
   * The keystore identity this parent works with (docs/RECORDS.md): its Ed25519 public key, 0x-hex, from the
   * genesis output. An enclave with another identity is not used. Absent: the first identity the enclave
   * reports is used for the life of the process.
   */
  identity: z.strictObject({ publicKey: identityPublicKey.optional() }).prefault({}),
  /**
   * The wallet routes (`/v1/{projectKey}/wallets/…`, docs/TLS.md), served by the enclave. `publicUrl` is where
   * callers reach them (the parent's API answers 421 with it on those paths). `relay`: the raw TCP relay from
   * `host:port` to the enclave's wallet listener — a byte pipe that never sees plaintext, with at most
   * `maxConnections` connections (`maxPerAddress` per client address), `idleTimeoutMs` without a byte either way,
   * and `maxBytesPerConnection` per direction. `store`: the listener the enclave asks for records.
   */
  wallets: z
    .strictObject({
      publicUrl: z.url({ protocol: /^https$/, error: 'expected an https:// URL' }).optional(),
      relay: z
        .strictObject({
          host: z.string().min(1).default(D.wallets.relay.host),
          port: z.number().int().min(0).max(65535).default(D.wallets.relay.port),
          enclave: VsockAddressSchema.default(D.wallets.relay.enclave),
          maxConnections: z.number().int().min(1).max(1_000_000).default(D.wallets.relay.maxConnections),
          maxPerAddress: z.number().int().min(1).max(1_000_000).default(D.wallets.relay.maxPerAddress),
          connectTimeoutMs: ms(D.wallets.relay.connectTimeoutMs),
          idleTimeoutMs: ms(D.wallets.relay.idleTimeoutMs),
          maxBytesPerConnection: z
            .number()
            .int()
            .min(64 * 1024)
            .max(2 ** 40)
            .default(D.wallets.relay.maxBytesPerConnection),
        })
        .prefault({}),
      store: z
        .strictObject({
          listen: VsockAddressSchema.default(D.wallets.store.listen),
          maxConcurrent: z.number().int().min(1).max(10_000).default(D.wallets.store.maxConcurrent),
        })
        .prefault({}),
    })
    .prefault({}),
  /** The egress relay through which the enclave fetches JWKS (docs/PROJECTS.md, "The egress relay"). */
  egress: EgressConfigSchema.prefault({}),
  metrics: MetricsSchema.prefault({}),
  logLevel: z.enum(LOG_LEVELS).default(D.logLevel),
});

export type ParentConfig = z.output<typeof ParentConfigSchema> & {
  /** What the configuration says in a shape this release still reads but will not (logged at start). */
  deprecations?: readonly string[];
};

export { ConfigError };

/** Environment overrides, applied before validation. */
function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out = structuredClone(raw) as Record<string, Record<string, unknown>>;
  const section = (k: string) => (out[k] ??= {});
  if (env.NKS_API_PORT) {
    const port = Number(env.NKS_API_PORT);
    section('api').listen = { host: (section('api').listen as { host?: string } | undefined)?.host ?? D.api.host, port };
  }
  if (env.NKS_DB_PATH) section('database').path = env.NKS_DB_PATH;
  // The URL with its password comes from the environment (a secret manager), not the configuration file.
  // A PostgreSQL section keeps its other settings; any other is replaced.
  if (env.NKS_DATABASE_URL) {
    const db = section('database');
    out.database = db.kind === 'postgres' ? { ...db, url: env.NKS_DATABASE_URL } : { kind: 'postgres', url: env.NKS_DATABASE_URL };
  }
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
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) throw new ConfigError(`invalid ${source}: token names must be unique ("${twice}" is given more than once)`);
  const hashes = res.data.tokens.map((t) => t.sha256);
  const shared = res.data.tokens.find((t, i) => hashes.indexOf(t.sha256) !== i);
  if (shared)
    throw new ConfigError(`invalid ${source}: token "${shared.name}" has the sha256 of an earlier token (each token must be distinct)`);
  const l = res.data.api.listen;
  if ('host' in l && res.data.api.trustProxy.includes(TRUST_UNIX_PEER))
    throw new ConfigError(
      `invalid ${source}: config.api.trustProxy lists "${TRUST_UNIX_PEER}", but config.api.listen is not a Unix socket`,
    );
  if ('host' in l && !/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(l.host) && !res.data.api.tls) {
    throw new ConfigError(
      `invalid ${source}: config.api.listen.host ${l.host} is not loopback; serving beyond loopback requires config.api.tls`,
    );
  }
  const m = res.data.metrics.listen;
  if (res.data.metrics.enabled && 'host' in m && !/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(m.host))
    throw new ConfigError(
      `invalid ${source}: config.metrics.listen.host ${m.host} is not loopback; the metrics listener has no token: keep it on loopback or a Unix socket`,
    );
  deriveDeadlines(res.data, applyEnv(raw as Record<string, unknown>, env));
  checkDeadlines(res.data, source);
  const db = (raw as { database?: unknown }).database;
  const deprecations =
    typeof db === 'object' && db !== null && !('kind' in db) && !env.NKS_DATABASE_URL
      ? ['config.database {path} is read as {"kind": "sqlite", "path": ...}: write it so; the old shape goes in a later release']
      : [];
  return { ...res.data, deprecations };
}

/**
 * A deadline the configuration leaves unset is its table default, shortened when needed to nest inside the one
 * that calls it (set shorter): `enclave.deadlineMs` inside `api.requestTimeoutMs`, `kmsProxy.deadlineMs` inside
 * `enclave.deadlineMs`. Only deadlines that are set can be refused for not nesting.
 */
function deriveDeadlines(c: z.output<typeof ParentConfigSchema>, raw: Record<string, unknown>): void {
  const set = (section: string, key: string) => {
    const v = raw[section];
    return typeof v === 'object' && v !== null && key in v;
  };
  const within = (outer: number) => outer - deadlineMarginMs(outer);
  if (!set('enclave', 'deadlineMs')) c.enclave.deadlineMs = Math.max(1, Math.min(c.enclave.deadlineMs, within(c.api.requestTimeoutMs)));
  if (!set('kmsProxy', 'deadlineMs')) c.kmsProxy.deadlineMs = Math.max(1, Math.min(c.kmsProxy.deadlineMs, within(c.enclave.deadlineMs)));
}

/**
 * The deadlines of one configuration must nest (shared/src/deadlines.ts): the API request outlives the enclave
 * call, which outlives the KMS proxy's budget, each by a margin, so the innermost fault is what the caller is told.
 */
function checkDeadlines(c: z.output<typeof ParentConfigSchema>, source: string): void {
  const pairs: Array<[string, number, string, number]> = [
    ['config.enclave.deadlineMs', c.enclave.deadlineMs, 'config.api.requestTimeoutMs', c.api.requestTimeoutMs],
    ['config.kmsProxy.deadlineMs', c.kmsProxy.deadlineMs, 'config.enclave.deadlineMs', c.enclave.deadlineMs],
  ];
  for (const [innerName, inner, outerName, outer] of pairs) {
    if (!nests(inner, outer))
      throw new ConfigError(
        `invalid ${source}: ${innerName} (${inner} ms) must end at least ${deadlineMarginMs(outer)} ms before ${outerName} (${outer} ms), ` +
          'so that the inner fault, not the outer timeout, is what the caller is told (docs/OPERATIONS.md, "Deadlines")',
      );
  }
}

export function loadParentConfig(file: string, env: NodeJS.ProcessEnv = process.env): ParentConfig {
  return parseParentConfig(readJsonConfig(file), env, `configuration ${file}`);
}
