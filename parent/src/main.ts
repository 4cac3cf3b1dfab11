/**
 * Parent daemon (dist/parent.js): `--config FILE` (or $NKS_PARENT_CONFIG), environment overrides
 * NKS_API_PORT, NKS_DB_PATH, NKS_KMS_ENDPOINT, NKS_KMS_REGION, NKS_LOG_LEVEL. SIGTERM/SIGINT drain and stop.
 */
import { parseArgs } from 'node:util';
import { createLogger } from '@nks/shared/log';
import { startParent } from './app';
import { ConfigError, loadParentConfig } from './config';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { config: { type: 'string' } }, strict: true });
  const file = values.config ?? process.env.NKS_PARENT_CONFIG;
  if (!file) throw new ConfigError('no configuration: pass --config FILE or set NKS_PARENT_CONFIG');
  const config = loadParentConfig(file);
  const logger = createLogger({ name: 'parent', level: config.logLevel });
  const parent = await startParent(config, logger);
  logger.info(
    { url: parent.url, enclave: config.enclave.address, kmsProxy: config.kmsProxy.listen, database: config.database.path },
    'parent ready',
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'parent stopping: draining requests');
    await parent.stop();
    logger.info('parent stopped');
    logger.flush();
    // Exit even if a handle outlived the drain (a connection still closing): the service is stopped.
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err: unknown) => {
  const message = err instanceof ConfigError ? err.message : `failed to start: ${(err as Error).message}`;
  process.stderr.write(`parent: ${message}\n`);
  process.exit(2);
});
