/**
 * Bearer tokens with scopes (README.md, "Caller API"). The configuration holds only SHA-256 hashes; a
 * presented token is hashed and compared with every configured hash in constant time (no early exit), so
 * timing reveals neither which token nor how much of it matched. `admin` includes every other scope.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { KeystoreError } from '@nks/shared/errors';
import type { Scope } from '../config';

export interface Principal {
  name: string;
  scopes: ReadonlySet<Scope>;
}

interface Entry {
  name: string;
  hash: Buffer;
  scopes: Set<Scope>;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export class TokenAuth {
  private readonly entries: Entry[];

  constructor(tokens: Array<{ name: string; sha256: string; scopes: readonly Scope[] }>) {
    this.entries = tokens.map((t) => ({ name: t.name, hash: Buffer.from(t.sha256, 'hex'), scopes: new Set(t.scopes) }));
  }

  /** The principal for an `Authorization` header value; UNAUTHORIZED when missing or unknown. */
  authenticate(header: string | undefined): Principal {
    const m = /^Bearer ([\x21-\x7e]{1,512})$/.exec(header ?? '');
    if (!m) throw new KeystoreError('UNAUTHORIZED', header ? 'Authorization must be "Bearer <token>"' : 'missing bearer token');
    const presented = createHash('sha256')
      .update(m[1] as string, 'utf8')
      .digest();
    let found: Entry | undefined;
    for (const e of this.entries) {
      if (timingSafeEqual(presented, e.hash) && !found) found = e;
    }
    if (!found) throw new KeystoreError('UNAUTHORIZED', 'unknown bearer token');
    return { name: found.name, scopes: found.scopes };
  }

  static authorize(principal: Principal, scope: Scope): void {
    if (!principal.scopes.has(scope) && !principal.scopes.has('admin')) {
      throw new KeystoreError('FORBIDDEN', `token "${principal.name}" lacks scope ${scope}`);
    }
  }
}
