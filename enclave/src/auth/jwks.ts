/**
 * The JWKS of JWT projects, fetched by the enclave itself (https-get.ts) and cached per exact URI
 * (docs/PROTOCOL.md; the rules are in one place here):
 *
 * - A set is refused whole when it is not `{keys: [...]}` JSON, has more than `maxKeys` keys, or holds a key
 *   that is symmetric (`kty: "oct"`), carries private parts, is of another type than RSA, EC or OKP, does not
 *   import as a public key, or is an RSA key under 2048 bits: such a set is a misconfiguration or an attack,
 *   and a half-used set would hide it.
 * - Fresh for the response's `Cache-Control: max-age`, clamped to [minTtlMs, maxTtlMs] (no max-age: minTtlMs).
 *   Once stale the set is still used, and refreshed in the background (one fetch), until `maxTtlMs` after it
 *   was fetched (the hard expiry); then it is dropped and the next check waits for a fetch.
 * - A JWT whose key is not in the set refetches it, at most once per `unknownKidRefetchMs` per URI (counting
 *   every fetch of the URI), so a stream of made-up key ids costs one fetch per interval.
 * - Concurrent fetches of one URI share one. A failed fetch is JWKS_UNAVAILABLE (retryable), never an auth
 *   failure, and is answered again without a new fetch for `failureRetryMs`.
 * - At most `maxUris` URIs are remembered, least recently used dropped first; of each key only the members
 *   key selection reads and the public key are kept (a set of at most 64 KiB holds far less once parsed).
 *
 * A fetch is asynchronous I/O on the main thread: other requests, signing included, go on meanwhile.
 */
import { createPublicKey } from 'node:crypto';
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { KeystoreError } from '@nks/shared/errors';
import { Lru } from '../records/lru';

export interface JwksLimits {
  maxBytes: number;
  maxKeys: number;
  minTtlMs: number;
  maxTtlMs: number;
  unknownKidRefetchMs: number;
  failureRetryMs: number;
  maxUris: number;
}

/** Fetches a URI's body and its Cache-Control header; throws an Error whose message says why not. */
export type JwksFetcher = (uri: string) => Promise<{ body: Buffer; cacheControl: string | undefined }>;

export interface JwksEntry {
  /** createLocalJWKSet over the set: the key resolver jwtVerify calls. */
  resolve: JWTVerifyGetKey;
  keys: number;
  fetchedAt: number;
  staleAt: number;
  expiresAt: number;
}

interface UriState {
  entry?: JwksEntry;
  inflight?: Promise<JwksEntry>;
  /** When the last fetch started (success or not): the unknown-kid rate limit. */
  lastFetchAt?: number;
  failure?: { at: number; reason: string };
}

/** Members only a private or symmetric JWK has. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const PUBLIC_KTYS = ['RSA', 'EC', 'OKP'];
/**
 * What is kept of each key: what jose's key selection reads and the public key itself. The rest (x5c chains,
 * names of the issuer's own) is dropped, so a cached set holds key material only, whatever padding it came with.
 */
const KEPT_MEMBERS = ['kty', 'kid', 'alg', 'use', 'key_ops', 'ext', 'crv', 'n', 'e', 'x', 'y'];

export class JwksError extends Error {
  override readonly name = 'JwksError';
}

/** The set, or a JwksError saying why it is refused. */
export function parseJwks(body: Buffer, maxKeys: number): JSONWebKeySet {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw new JwksError('the JWKS is not JSON');
  }
  const keys = typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(keys)) throw new JwksError('the JWKS has no "keys" list');
  if (keys.length > maxKeys) throw new JwksError(`the JWKS has more than ${maxKeys} keys`);
  for (const k of keys as unknown[]) {
    if (typeof k !== 'object' || k === null || Array.isArray(k)) throw new JwksError('a key of the JWKS is not an object');
    const jwk = k as Record<string, unknown>;
    if (jwk.kty === 'oct') throw new JwksError('the JWKS holds a symmetric key');
    if (PRIVATE_MEMBERS.some((m) => m in jwk)) throw new JwksError('the JWKS holds private key material');
    if (typeof jwk.kty !== 'string' || !PUBLIC_KTYS.includes(jwk.kty))
      throw new JwksError('the JWKS holds a key of another type than RSA, EC or OKP');
    if (jwk.kid !== undefined && typeof jwk.kid !== 'string') throw new JwksError('a key of the JWKS is malformed');
    let bits: number | undefined;
    try {
      bits = createPublicKey({ key: jwk as never, format: 'jwk' }).asymmetricKeyDetails?.modulusLength;
    } catch {
      throw new JwksError('a key of the JWKS is malformed');
    }
    if (jwk.kty === 'RSA' && (bits ?? 0) < 2048) throw new JwksError('the JWKS holds an RSA key under 2048 bits');
  }
  const kept = (keys as Array<Record<string, unknown>>).map((jwk) =>
    Object.fromEntries(KEPT_MEMBERS.filter((m) => jwk[m] !== undefined).map((m) => [m, jwk[m]])),
  );
  return { keys: kept };
}

/** `max-age` of a Cache-Control value in ms; 0 for no-store / no-cache; undefined when it says nothing. */
export function maxAgeMs(cacheControl: string | undefined): number | undefined {
  if (!cacheControl) return undefined;
  if (/(?:^|[,\s])no-(?:store|cache)(?:$|[,\s=])/i.test(cacheControl)) return 0;
  const m = /(?:^|[,\s])max-age\s*=\s*"?(\d{1,10})"?/i.exec(cacheControl);
  return m ? Number(m[1]) * 1000 : undefined;
}

const unavailable = (reason: string, cause?: unknown) =>
  new KeystoreError('JWKS_UNAVAILABLE', `the JWKS could not be fetched: ${reason}`, cause === undefined ? undefined : { cause });

export class JwksCache {
  fetches = 0;
  fetchFailures = 0;
  private readonly uris: Lru<string, UriState>;

  constructor(
    private readonly fetcher: JwksFetcher,
    private readonly limits: JwksLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.uris = new Lru(limits.maxUris);
  }

  /** URIs with a set in the cache (fresh or stale). */
  get cached(): number {
    let n = 0;
    const now = this.now();
    for (const s of this.uris.values()) if (s.entry && s.entry.expiresAt > now) n += 1;
    return n;
  }

  /** The set of `uri`: from the cache (a stale one also starts a refresh), or fetched. */
  async get(uri: string): Promise<JwksEntry> {
    const state = this.state(uri);
    const now = this.now();
    const entry = state.entry;
    if (entry && entry.expiresAt > now) {
      if (entry.staleAt <= now && !state.inflight && !this.inBackoff(state, now)) {
        // A failed refresh keeps the stale set until its hard expiry (and is counted by fetch()).
        this.fetch(uri, state).catch(() => undefined);
      }
      return entry;
    }
    state.entry = undefined;
    if (state.inflight) return state.inflight;
    if (state.failure && this.inBackoff(state, now)) throw unavailable(state.failure.reason);
    return this.fetch(uri, state);
  }

  /**
   * After a JWT named a key the set does not hold: a fresh set when the URI was last fetched at least
   * `unknownKidRefetchMs` ago (or a fetch is under way: its result), otherwise null (the key is unknown).
   */
  async refetchForUnknownKid(uri: string): Promise<JwksEntry | null> {
    const state = this.state(uri);
    if (state.inflight) return state.inflight;
    if (state.lastFetchAt !== undefined && this.now() - state.lastFetchAt < this.limits.unknownKidRefetchMs) return null;
    return this.fetch(uri, state);
  }

  private state(uri: string): UriState {
    let s = this.uris.get(uri);
    if (!s) {
      s = {};
      this.uris.set(uri, s);
    }
    return s;
  }

  private inBackoff(state: UriState, now: number): boolean {
    return state.failure !== undefined && now - state.failure.at < this.limits.failureRetryMs;
  }

  private fetch(uri: string, state: UriState): Promise<JwksEntry> {
    if (state.inflight) return state.inflight;
    this.fetches += 1;
    state.lastFetchAt = this.now();
    const p = this.load(uri)
      .then(
        (entry) => {
          state.entry = entry;
          state.failure = undefined;
          return entry;
        },
        (err: unknown) => {
          this.fetchFailures += 1;
          const reason = err instanceof Error && (err.name === 'FetchError' || err.name === 'JwksError') ? err.message : 'the fetch failed';
          state.failure = { at: this.now(), reason };
          throw unavailable(reason, err);
        },
      )
      .finally(() => {
        state.inflight = undefined;
      });
    state.inflight = p;
    return p;
  }

  private async load(uri: string): Promise<JwksEntry> {
    const { body, cacheControl } = await this.fetcher(uri);
    const set = parseJwks(body, this.limits.maxKeys);
    const fetchedAt = this.now();
    const ttl = Math.min(Math.max(maxAgeMs(cacheControl) ?? this.limits.minTtlMs, this.limits.minTtlMs), this.limits.maxTtlMs);
    return {
      resolve: createLocalJWKSet(set),
      keys: set.keys.length,
      fetchedAt,
      staleAt: fetchedAt + ttl,
      expiresAt: fetchedAt + this.limits.maxTtlMs,
    };
  }
}
