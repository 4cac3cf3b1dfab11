/**
 * The dev stack's database (docs/STORAGE.md): SQLite in `<dir>/keys.db` (the default: one instance), or
 * PostgreSQL (`--database postgres`: what several instances share). PostgreSQL is an embedded server
 * (sim/src/postgres.ts) that lives as long as the stack, its data in a temporary directory removed when the
 * stack stops, so keys made in it do not outlive the stack; `--database-url URL` uses a server of your own
 * instead (and keeps them). The parents get the URL in NKS_DATABASE_URL, never in a file, and it is never
 * printed with its password.
 */
import pg from 'pg';
import { redactText, redactUrl } from '@nks/shared/redact';
import { startPostgres, type PostgresServer } from '../postgres';
import { poolSizeFor } from './instances';

export interface DevDatabase {
  kind: 'sqlite' | 'postgres';
  /** The parents' `database` section; undefined: the default (SQLite in the state directory). */
  section: Record<string, unknown> | undefined;
  /** What every parent process runs with (NKS_DATABASE_URL). */
  env: Record<string, string>;
  /** For dev.json and the output: the URL without its password, whether the server is the stack's own. */
  describe: { kind: 'sqlite' } | { kind: 'postgres'; url: string; embedded: boolean };
  /**
   * Stops the embedded server (its data goes with it), killing it if it has not stopped within `graceMs`
   * (default: as long as it takes); nothing otherwise.
   */
  stop(graceMs?: number): Promise<void>;
  /** The embedded server's postmaster pid, while it runs. */
  readonly pid: number | undefined;
}

const SQLITE: DevDatabase = {
  kind: 'sqlite',
  section: undefined,
  env: {},
  describe: { kind: 'sqlite' },
  stop: async () => undefined,
  pid: undefined,
};

/** Fails with a clear message (no password) when the server at `url` does not answer within 10 s. */
async function probe(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (err) {
    throw new Error(`cannot use the PostgreSQL server at ${redactUrl(url)}: ${redactText((err as Error).message)}`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function openDevDatabase(
  kind: 'sqlite' | 'postgres',
  options: { url?: string; instances: number; say: (line: string) => void },
): Promise<DevDatabase> {
  if (kind === 'sqlite') return SQLITE;
  let server: PostgresServer | undefined;
  let url = options.url;
  if (url === undefined) {
    options.say('dev: starting PostgreSQL (embedded; its data lives in a temporary directory until the stack stops)');
    server = await startPostgres();
    url = server.url;
    options.say(`dev: PostgreSQL ${redactUrl(url)} (pid ${server.pid}); each parent gets its URL in NKS_DATABASE_URL`);
  } else {
    await probe(url);
    options.say(`dev: PostgreSQL ${redactUrl(url)} (--database-url; each parent gets it in NKS_DATABASE_URL)`);
  }
  const embedded = server;
  return {
    kind,
    // The URL (with its password) comes from the environment, as production passes it (docs/STORAGE.md).
    section: { kind: 'postgres', poolSize: poolSizeFor(options.instances) },
    env: { NKS_DATABASE_URL: url },
    describe: { kind: 'postgres', url: redactUrl(url), embedded: embedded !== undefined },
    stop: async (graceMs?: number) => {
      if (!embedded) return;
      const pid = embedded.pid;
      // A fast shutdown (SIGINT) normally takes a fraction of a second; its data is thrown away either way.
      const timer =
        graceMs === undefined || pid === undefined
          ? undefined
          : setTimeout(() => {
              try {
                process.kill(pid, 'SIGKILL');
              } catch {
                /* gone already */
              }
            }, graceMs);
      try {
        await embedded.stop();
      } finally {
        clearTimeout(timer);
      }
    },
    get pid() {
      return embedded?.pid;
    },
  };
}
