/**
 * The OpenAPI document without a running keystore: the caller API server with every route the daemon registers
 * (app.ts: the token rate limits, the caller routes, the TLS admin routes), none of which is called. What
 * `npm run openapi` writes to docs/openapi.json, and what the drift test compares it with.
 */
import { randomBytes } from 'node:crypto';
import { createLogger } from '@nks/shared/log';
import { hashToken, TokenAuth } from './auth';
import { callerRoutes } from './routes';
import { ApiServer } from './server';
import { tlsRoutes } from './tls-routes';
import { tokenRateLimits } from './token-limits';
import { parseParentConfig } from '../config';
import type { KeyRegistry } from '../key-registry';
import { Metrics } from '../metrics';
import type { TlsKeys } from '../tls/tls-keys';

/** The caller API server as the daemon registers its routes, on a free loopback port, with nothing behind them. */
function documentServer(): ApiServer {
  const config = parseParentConfig({
    api: { listen: { host: '127.0.0.1', port: 0 } },
    // One token, which nobody holds: the routes behind it answer nothing.
    tokens: [{ name: 'openapi', sha256: hashToken(randomBytes(32).toString('hex')), scopes: ['admin'] }],
    database: { path: '/nonexistent/keys.db' },
    kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/openapi'], region: 'us-east-1' },
  });
  const logger = createLogger({ name: 'openapi', level: 'silent' });
  return new ApiServer({
    config: config.api,
    routes: (app) => {
      tokenRateLimits()(app);
      callerRoutes({} as KeyRegistry)(app);
      tlsRoutes({} as TlsKeys)(app);
    },
    auth: new TokenAuth(config.tokens),
    metrics: new Metrics({
      keyCounts: async () => ({ total: 0, disabled: 0, withoutRecord: 0, pending: 0 }),
      enclaveHealth: async () => null,
    }),
    logger,
    accessLog: logger,
    readiness: async () => ({ ready: false, checks: {} }),
  });
}

export async function generateOpenApi(): Promise<string> {
  const server = documentServer();
  try {
    return await server.openApiDocument();
  } finally {
    await server.close(0);
  }
}
