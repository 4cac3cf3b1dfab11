/**
 * The parent program (dist/parent.js):
 *
 *   parent [--config FILE]                                        the daemon
 *   parent genesis --config FILE --nonce HEX --out FILE [--trusted-root PEM]
 *   parent migrate --config FILE [--concurrency N] [--pending] [--json]
 *
 * The configuration is `--config FILE` or $NKS_PARENT_CONFIG, with the environment overrides NKS_API_PORT,
 * NKS_DB_PATH, NKS_KMS_ENDPOINT, NKS_KMS_REGION, NKS_LOG_LEVEL. The daemon drains and stops on SIGTERM/SIGINT:
 * on SIGTERM (systemd, a load balancer's host) `/readyz` first answers 503 for `api.preDrainMs` while requests are
 * still served; SIGINT (Ctrl-C) skips that wait. Either way every request already received is answered.
 * It reloads its tokens from the configuration file on SIGHUP (api/token-reload.ts).
 * `genesis` makes the keystore identity with the genesis image (genesis.ts); `migrate` re-seals the keys made
 * before 0.4 with the migration image while the daemon is stopped (migrate.ts); with `--pending` it only prints
 * how many keys are left to migrate, as `{"keysWithoutRecord": N}`; its steps and the keys done go to stderr
 * (shared/src/progress.ts: a bar on a terminal, plain lines when piped, JSON lines with `--json`). Exit codes: 0 done, 1 the
 * command failed (its reason on stderr and in the log), 2 bad usage or configuration.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger, drainLogs, type Logger } from '@nks/shared/log';
import { startParent, type RunningParent } from './app';
import { ConfigError, loadParentConfig, type ParentConfig } from './config';
import { GENESIS_NONCE_RE, runGenesis, writeGenesisOutput } from './genesis';
import { keysToMigrate, MIGRATION_STEPS, runMigration } from './migrate';
import { Progress } from '@nks/shared/progress';
import { openEngine, storeStatus } from './store/open';
import { redactUrl } from '@nks/shared/redact';

const USAGE = `usage: parent [--config FILE]
       parent genesis --config FILE --nonce HEX --out FILE [--trusted-root PEM]
       parent migrate --config FILE [--concurrency N] [--pending] [--json]
           its steps and a bar of the keys done on stderr (plain lines when piped; JSON lines with --json)
       parent store status|migrate --config FILE
           the database's schema version (docs/STORAGE.md, "Migrations"); migrate applies pending steps
           (NKS_DATABASE_URL in the environment: a PostgreSQL URL to use instead, e.g. the owner role's; never
           on the command line, where every local user can read it)`;

class UsageError extends Error {}

function configFileOf(file: string | undefined): string {
  const chosen = file ?? process.env.NKS_PARENT_CONFIG;
  if (!chosen) throw new ConfigError('no configuration: pass --config FILE or set NKS_PARENT_CONFIG');
  return path.resolve(chosen);
}

function configOf(file: string | undefined): ParentConfig {
  return loadParentConfig(configFileOf(file));
}

async function daemon(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: 'string' } }, strict: true });
  const file = configFileOf(values.config);
  const config = loadParentConfig(file);
  const logger = createLogger({ name: 'parent', level: config.logLevel });
  // SIGHUP reloads the tokens (parent/README.md, "Reloading tokens"). Handled from the start, where its default
  // would end the process: one that comes while the parent starts is done once it has started.
  let running: RunningParent | undefined;
  let reloadAsked = false;
  const reload = () => {
    if (running) running.reloadTokens(file);
    else reloadAsked = true;
  };
  process.on('SIGHUP', reload);
  const parent = await startParent(config, logger);
  running = parent;
  logger.info(
    {
      url: parent.url,
      metricsUrl: parent.metricsUrl,
      enclave: config.enclave.address,
      kmsProxy: config.kmsProxy.listen,
      database: config.database.kind === 'sqlite' ? config.database.path : redactUrl(config.database.url),
      walletsRelayPort: parent.walletsRelayPort,
      walletStore: config.wallets.store.listen,
    },
    'parent ready',
  );
  if (reloadAsked) reload();

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, preDrainMs: signal === 'SIGTERM' ? config.api.preDrainMs : 0 }, 'parent stopping: draining requests');
    await parent.stop({ preDrain: signal === 'SIGTERM' });
    logger.info('parent stopped');
    // Every line written before exit, audit lines included, unless stdout's reader is stuck (2 s at most).
    await drainLogs();
    // Exit even if a handle outlived the drain (a connection still closing): the service is stopped.
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

/** Runs a one-shot command and exits: 0 when it succeeded, 1 when it failed. */
async function oneShot(logger: Logger, run: () => Promise<boolean>): Promise<never> {
  let ok = false;
  try {
    ok = await run();
  } catch (err) {
    logger.error({ err }, 'command failed');
    process.stderr.write(`parent: ${(err as Error).message}\n`);
  }
  await drainLogs();
  process.exit(ok ? 0 : 1);
}

async function genesis(args: string[]): Promise<never> {
  const { values } = parseArgs({
    args,
    options: { config: { type: 'string' }, nonce: { type: 'string' }, out: { type: 'string' }, 'trusted-root': { type: 'string' } },
    strict: true,
  });
  if (!values.nonce || !values.out) throw new UsageError('genesis needs --nonce HEX and --out FILE');
  if (!GENESIS_NONCE_RE.test(values.nonce)) throw new UsageError('--nonce must be 1-512 bytes of 0x-prefixed hex');
  if (fs.existsSync(values.out)) throw new UsageError(`${values.out} exists: genesis does not replace an earlier identity's output`);
  const config = configOf(values.config);
  const logger = createLogger({ name: 'parent', level: config.logLevel });
  const trustedRoots = values['trusted-root'] ? [fs.readFileSync(values['trusted-root'], 'utf8')] : undefined;
  return oneShot(logger, async () => {
    const { output, verified } = await runGenesis(
      config,
      { nonce: values.nonce as string, ...(trustedRoots ? { trustedRoots } : {}) },
      logger,
    );
    writeGenesisOutput(values.out as string, output);
    const pcr0 = verified.document.pcrs.get(0)?.toString('hex');
    logger.info({ publicKey: output.publicKey, pcr0, out: values.out }, 'genesis done');
    process.stdout.write(`${JSON.stringify({ publicKey: output.publicKey, pcr0, out: values.out })}\n`);
    return true;
  });
}

async function migrate(args: string[]): Promise<never> {
  const { values } = parseArgs({
    args,
    options: { config: { type: 'string' }, concurrency: { type: 'string' }, pending: { type: 'boolean' }, json: { type: 'boolean' } },
    strict: true,
  });
  const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
  if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64))
    throw new UsageError('--concurrency must be an integer from 1 to 64');
  const config = configOf(values.config);
  const logger = createLogger({ name: 'parent', level: config.logLevel });
  if (values.pending) {
    return oneShot(logger, async () => {
      process.stdout.write(`${JSON.stringify({ keysWithoutRecord: await keysToMigrate(config) })}\n`);
      return true;
    });
  }
  return oneShot(logger, async () => {
    const progress = new Progress({ total: MIGRATION_STEPS, source: 'migrate', json: values.json ?? false });
    const summary = await runMigration(config, logger, { progress, ...(concurrency ? { concurrency } : {}) });
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return summary.failed === 0 && summary.remaining === 0;
  });
}

async function store(args: string[]): Promise<never> {
  const [action, ...rest] = args;
  if (action !== 'status' && action !== 'migrate') throw new UsageError('store needs status or migrate');
  const { values } = parseArgs({ args: rest, options: { config: { type: 'string' } }, strict: true });
  const config = configOf(values.config);
  const logger = createLogger({ name: 'parent', level: config.logLevel });
  return oneShot(logger, async () => {
    if (action === 'migrate') await (await openEngine(config.database, logger, { migrate: true })).close();
    const status = await storeStatus(config.database);
    process.stdout.write(`${JSON.stringify(status)}\n`);
    return action === 'migrate' || status.pending === 0;
  });
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  // --help anywhere (parent genesis --help too): the usage, exit 0.
  if (process.argv.slice(2).some((a) => a === '--help' || a === '-h')) process.stdout.write(`${USAGE}\n`);
  else if (command === 'genesis') await genesis(rest);
  else if (command === 'migrate') await migrate(rest);
  else if (command === 'store') await store(rest);
  else if (command === 'help') process.stdout.write(`${USAGE}\n`);
  else await daemon(process.argv.slice(2));
}

main().catch((err: unknown) => {
  const message =
    err instanceof ConfigError
      ? err.message
      : err instanceof UsageError || String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')
        ? `${(err as Error).message}\n${USAGE}`
        : `failed to start: ${(err as Error).message}`;
  process.stderr.write(`parent: ${message}\n`);
  process.exit(2);
});
