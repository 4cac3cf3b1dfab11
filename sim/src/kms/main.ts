/**
 * KMS emulator process (dist/kms-emulator.js):
 *
 *   kms-emulator --port N --state FILE --trust-root PEM [--max-doc-age S] [--latency-ms N]
 *                [--throttle-rate R] [--error-rate R] [--host H] [--region R] [--account ID]
 *                [--principal ARN] [--access-key AKID=ARN]...
 *
 * Listens on loopback by default and prints one JSON log line with `url` once it serves.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { createLogger } from '@nks/shared/log';
import { KmsEmulator } from './emulator';
import { KmsHttpServer } from './server';
import { KmsState } from './state';

const USAGE =
  'usage: kms-emulator --port N --state FILE --trust-root PEM [--max-doc-age S] [--latency-ms N] [--throttle-rate R] [--error-rate R] [--host H] [--region R] [--account ID] [--principal ARN] [--access-key AKID=ARN]...';

function num(v: string | undefined, name: string, def: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > max) throw new Error(`--${name} must be a number in [0, ${max}]`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      state: { type: 'string' },
      'trust-root': { type: 'string', multiple: true },
      'max-doc-age': { type: 'string' },
      'latency-ms': { type: 'string' },
      'throttle-rate': { type: 'string' },
      'error-rate': { type: 'string' },
      region: { type: 'string' },
      account: { type: 'string' },
      principal: { type: 'string' },
      'access-key': { type: 'string', multiple: true },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values.port === undefined || !values.state || !values['trust-root']?.length)
    throw new Error(`--port, --state and --trust-root are required\n${USAGE}`);
  const account = values.account ?? '111122223333';
  if (!/^\d{12}$/.test(account)) throw new Error('--account must be 12 digits');
  const principals: Record<string, string> = {};
  for (const pair of values['access-key'] ?? []) {
    const [akid, arn] = pair.split('=');
    if (!akid || !arn) throw new Error('--access-key takes AKID=ARN');
    principals[akid] = arn;
  }
  const logger = createLogger({ name: 'kms-emulator' });
  const trustRoots = values['trust-root'].map((f) => fs.readFileSync(f, 'utf8'));
  const emulator = new KmsEmulator(new KmsState(values.state), {
    region: values.region ?? 'us-east-1',
    account,
    trustRoots,
    maxDocAgeMs: num(values['max-doc-age'], 'max-doc-age', 300) * 1000,
  });
  const server = new KmsHttpServer({
    emulator,
    logger,
    principals,
    defaultPrincipal: values.principal ?? `arn:aws:iam::${account}:role/nitro-keystore-parent`,
    faults: {
      latencyMs: num(values['latency-ms'], 'latency-ms', 0, 60_000),
      throttleRate: num(values['throttle-rate'], 'throttle-rate', 0, 1),
      errorRate: num(values['error-rate'], 'error-rate', 0, 1),
    },
  });
  const url = await server.listen(num(values.port, 'port', 0, 65535), values.host ?? '127.0.0.1');
  logger.info({ url, state: values.state }, 'KMS emulator listening');

  const stop = async () => {
    await server.close();
    logger.info({ stats: server.stats }, 'KMS emulator stopped');
    logger.flush();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

main().catch((err: unknown) => {
  console.error(`kms-emulator: ${(err as Error).message}`);
  process.exit(2);
});
