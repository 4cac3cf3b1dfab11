/**
 * Enclave program (dist/enclave.js). Reads its configuration from `--config FILE`, `$NKS_ENCLAVE_CONFIG`, or
 * `enclave.json` beside the bundle; refuses to start on an invalid one. `--check-config` only validates the
 * file (exit 0 valid, 2 invalid), so image builds can refuse a bad configuration before it is measured.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger } from '@nks/shared/log';
import { ConfigError, loadEnclaveConfig } from './config';
import { startEnclave } from './app';
import { isSignerWorker, runSignerWorker } from './signing/pool';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { config: { type: 'string' }, 'check-config': { type: 'boolean' } }, strict: true });
  const file = values.config ?? process.env.NKS_ENCLAVE_CONFIG ?? path.join(path.dirname(process.argv[1] ?? '.'), 'enclave.json');
  const config = loadEnclaveConfig(file);
  if (values['check-config']) {
    process.stdout.write(
      `enclave: configuration ${file} is valid (KMS key ${config.kmsKeyArn}, listen ${config.listen}, transport ${config.transport.kind}, NSM ${config.nsm.kind})\n`,
    );
    return;
  }
  const logger = createLogger({ name: 'enclave', level: process.env.LOG_LEVEL ?? config.logLevel });
  const enclave = await startEnclave(config, logger, path.resolve(process.argv[1] as string));
  logger.info(
    { listen: config.listen, kmsProxy: config.kmsProxy, kmsKeyArn: config.kmsKeyArn, transport: config.transport.kind },
    'enclave ready',
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'enclave stopping: draining requests');
    await enclave.stop(5000);
    logger.info('enclave stopped');
    logger.flush();
    // Exit even if a handle outlived the drain (a connection still closing): the service is stopped.
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

if (isSignerWorker()) runSignerWorker();
else
  main().catch((err: unknown) => {
    const message = err instanceof ConfigError ? err.message : `failed to start: ${(err as Error).message}`;
    process.stderr.write(`enclave: ${message}\n`);
    process.exit(2);
  });
