/**
 * Enclave program (dist/enclave.js). Reads its configuration from `--config FILE`, `$NKS_ENCLAVE_CONFIG`, or
 * `enclave.json` beside the bundle; refuses to start on an invalid one. `--check-config` only validates the
 * file (exit 0 valid, 2 invalid), so image builds can refuse a bad configuration before it is measured.
 *
 * Exit codes: 0 stopped by SIGTERM/SIGINT; 2 the configuration is invalid or the start failed (no NSM, cannot
 * listen); 3 the keystore identity could not be unsealed in `identityBoot.maxAttempts` attempts.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { createLogger } from '@nks/shared/log';
import { ConfigError, loadEnclaveConfig } from './config';
import { startEnclave } from './app';
import { IdentityBootError } from './identity/boot';
import { isSignerWorker, runSignerWorker } from './signing/pool';
import { LogChannel } from './log-channel';

const USAGE = `usage: enclave [--config FILE] [--check-config]
    FILE: the enclave configuration (default $NKS_ENCLAVE_CONFIG, else enclave.json beside this program);
    --check-config only validates it (exit 0 valid, 2 invalid)`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { config: { type: 'string' }, 'check-config': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const file = values.config ?? process.env.NKS_ENCLAVE_CONFIG ?? path.join(path.dirname(process.argv[1] ?? '.'), 'enclave.json');
  const config = loadEnclaveConfig(file);
  if (values['check-config']) {
    const image = config.identity ? `${config.mode} image, identity ${config.identity.publicKey}` : 'genesis image';
    process.stdout.write(
      `enclave: configuration ${file} is valid (${image}, security epoch ${config.securityEpoch}, KMS key ${config.kmsKeyArn}, listen ${config.listen}, transport ${config.transport.kind}, NSM ${config.nsm.kind})\n`,
    );
    return;
  }
  // Every line goes to stdout (the console: debug mode only on Nitro) and into the channel the parent pulls
  // (enclave.logs, log-channel.ts): bounded, and never waits for the parent.
  const channel = new LogChannel();
  const stdout = pino.destination({ fd: 1, sync: false });
  const flush = () => {
    try {
      stdout.flushSync();
    } catch {
      // not ready yet, or stdout closed: nothing more can be written
    }
  };
  const destination = pino.multistream([
    { level: 'trace', stream: stdout },
    { level: 'trace', stream: channel.stream() },
  ]);
  const logger = createLogger({ name: 'enclave', level: process.env.LOG_LEVEL ?? config.logLevel, destination });
  const enclave = await startEnclave(config, logger, path.resolve(process.argv[1] as string), channel);
  // 'enclave listening' and 'enclave ready' are logged by startEnclave.
  enclave.identityReady.catch(async (err: unknown) => {
    const message = err instanceof IdentityBootError ? err.message : `identity start failed: ${(err as Error).message}`;
    logger.fatal({ err }, `enclave cannot serve: ${message}; exiting`);
    await enclave.stop(1000).catch(() => undefined);
    flush();
    process.exit(3);
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'enclave stopping: draining requests');
    await enclave.stop(5000);
    logger.info('enclave stopped');
    flush();
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
