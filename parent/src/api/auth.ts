/**
 * Bearer tokens with scopes (README.md, "Caller API"). The configuration holds only SHA-256 hashes; a
 * presented token is hashed and compared with every configured hash in constant time (no early exit), so
 * timing reveals neither which token nor how much of it matched. `admin` includes every other scope.
 *
 * A token may be bound to projects (`projects`: what it can reach, docs/SECURITY.md, "The reach of each token"),
 * expire (`expiresAt`: then 401, saying so, to whoever holds it) and have a rate limit (`rateLimit`, else the
 * configured default). The set is replaced as a whole (`replace`, on SIGHUP: parent/README.md, "Reloading
 * tokens"): a request authenticates against one set, never a mix.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { KeystoreError } from '@nks/shared/errors';
import { DEFAULT_PROJECT_ID } from '@nks/shared/records';
import type { Scope, TokenConfig, TokenDefaults, TokenRateLimit } from '../config';

export interface Principal {
  name: string;
  scopes: ReadonlySet<Scope>;
  /** The projects whose keys the token reaches; null: every token project's (an unbound token). */
  projects: ReadonlySet<string> | null;
  /** Its rate limit (its own, else the default); null: none. */
  rateLimit: TokenRateLimit | null;
}

interface Entry {
  principal: Principal;
  hash: Buffer;
  /** Milliseconds since the epoch; undefined: never. */
  expiresAt: number | undefined;
}

export type TokenSpec = Pick<TokenConfig, 'name' | 'sha256' | 'scopes'> &
  Partial<Pick<TokenConfig, 'projects' | 'expiresAt' | 'rateLimit'>>;

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

function entriesOf(tokens: readonly TokenSpec[], defaults: TokenDefaults): Entry[] {
  return tokens.map((t) => ({
    principal: {
      name: t.name,
      scopes: new Set(t.scopes),
      projects: t.projects ? new Set(t.projects) : null,
      rateLimit: t.rateLimit ?? defaults.rateLimit ?? null,
    },
    hash: Buffer.from(t.sha256, 'hex'),
    expiresAt: t.expiresAt === undefined ? undefined : Date.parse(t.expiresAt),
  }));
}

export class TokenAuth {
  private entries: readonly Entry[];

  constructor(tokens: readonly TokenSpec[], defaults: TokenDefaults = {}) {
    this.entries = entriesOf(tokens, defaults);
  }

  /** Replaces every token at once (a reload): requests already authenticated keep the principal they had. */
  replace(tokens: readonly TokenSpec[], defaults: TokenDefaults = {}): void {
    this.entries = entriesOf(tokens, defaults);
  }

  /** The names of the tokens that have expired by `now` (for the log at start and after a reload). */
  expired(now = Date.now()): string[] {
    return this.entries.filter((e) => e.expiresAt !== undefined && e.expiresAt <= now).map((e) => e.principal.name);
  }

  /** The principal for an `Authorization` header value; UNAUTHORIZED when missing, unknown or expired. */
  authenticate(header: string | undefined, now = Date.now()): Principal {
    // The scheme name is case-insensitive (RFC 7235, 2.1), one or more spaces follow it; the token is compared as sent.
    const m = /^bearer +([\x21-\x7e]{1,512})$/i.exec(header ?? '');
    if (!m) throw new KeystoreError('UNAUTHORIZED', header ? 'Authorization must be "Bearer <token>"' : 'missing bearer token');
    const presented = createHash('sha256')
      .update(m[1] as string, 'utf8')
      .digest();
    // One set for the whole scan, even if a reload replaces it meanwhile; every hash compared, no early exit.
    const entries = this.entries;
    let found: Entry | undefined;
    for (const e of entries) {
      if (timingSafeEqual(presented, e.hash) && !found) found = e;
    }
    if (!found) throw new KeystoreError('UNAUTHORIZED', 'unknown bearer token');
    // Only the token's holder learns this: it is their token that expired.
    if (found.expiresAt !== undefined && found.expiresAt <= now)
      throw new KeystoreError('UNAUTHORIZED', `the bearer token expired at ${new Date(found.expiresAt).toISOString()}`);
    return found.principal;
  }

  static authorize(principal: Principal, scope: Scope): void {
    if (!principal.scopes.has(scope) && !principal.scopes.has('admin')) {
      throw new KeystoreError('FORBIDDEN', `token "${principal.name}" lacks scope ${scope}`);
    }
  }

  /**
   * Whether the token reaches the keys of `projectId` (a key made before 0.4, without a record, is the default
   * project's, as at creation). An unbound token reaches every project's.
   */
  static reaches(principal: Pick<Principal, 'projects'>, projectId: string | null): boolean {
    return principal.projects === null || principal.projects.has(projectId ?? DEFAULT_PROJECT_ID);
  }
}
