/**
 * Reloading the tokens on SIGHUP (parent/README.md, "Reloading tokens"): the configuration file is read and
 * validated as at start (the same environment overrides); if it is valid, its `tokens` and `tokenDefaults` replace
 * the running ones in one step, and a change to any other section is named in the log as needing a restart
 * (it is not applied). If it is not (unreadable, not JSON, a schema error, two tokens with one name), nothing
 * changes and the log (error level) says why: names of fields and tokens, never a hash or another value.
 */
import type { Logger } from '@nks/shared/log';
import { ConfigError, loadParentConfig, RELOADABLE_SECTIONS, type ParentConfig } from '../config';
import type { TokenAuth } from './auth';

export type ReloadOutcome = { ok: true; tokens: string[]; expired: string[]; ignored: string[] } | { ok: false; reason: string };

/** The top-level sections whose value differs between two configurations, but for the reloadable ones. */
export function changedSections(running: ParentConfig, next: ParentConfig): string[] {
  const skip = new Set<string>([...RELOADABLE_SECTIONS, 'deprecations']);
  const keys = new Set([...Object.keys(running), ...Object.keys(next)].filter((k) => !skip.has(k)));
  const of = (c: ParentConfig, k: string) => JSON.stringify((c as Record<string, unknown>)[k]);
  return [...keys].filter((k) => of(running, k) !== of(next, k)).sort();
}

/**
 * Reads `file` and replaces `auth`'s tokens with its own, or keeps them (see above). `running` is the
 * configuration the daemon started with: what the other sections are compared with.
 */
export function reloadTokens(options: {
  file: string;
  env: NodeJS.ProcessEnv;
  running: ParentConfig;
  auth: TokenAuth;
  logger: Logger;
  now?: number;
}): ReloadOutcome {
  const { file, env, running, auth, logger } = options;
  let next: ParentConfig;
  try {
    next = loadParentConfig(file, env);
  } catch (err) {
    // A ConfigError names the file and the fields; anything else is not described (it could quote the file).
    const reason = err instanceof ConfigError ? err.message : `cannot read configuration ${file}`;
    logger.error({ file, reason }, 'tokens not reloaded: the configuration is invalid; the tokens in use are kept');
    return { ok: false, reason };
  }
  auth.replace(next.tokens, next.tokenDefaults);
  const tokens = next.tokens.map((t) => t.name);
  const expired = auth.expired(options.now);
  const ignored = changedSections(running, next);
  if (ignored.length > 0)
    logger.warn(
      { file, sections: ignored },
      'configuration changes outside tokens and tokenDefaults are ignored until the parent restarts',
    );
  logger.info({ file, tokens, ...(expired.length > 0 ? { expired } : {}) }, 'tokens reloaded');
  return { ok: true, tokens, expired, ignored };
}
