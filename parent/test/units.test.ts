import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { tempRunDir } from '../../shared/test/helpers';
import { IDENTIFIER_SAMPLES } from '../../shared/test/identifier-samples';
import { startProgram } from '../../test/support/process';
import { hashToken, TokenAuth } from '../src/api/auth';
import { PARENT_CONFIG_DEFAULTS, parseParentConfig } from '../src/config';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS } from '@nks/shared/transport';
import { KeyStore, SCHEMA_VERSION } from '../src/store/key-store';

describe('bearer tokens', () => {
  const auth = new TokenAuth([
    { name: 'signer', sha256: hashToken('tok-sign'), scopes: ['keys:sign'] },
    { name: 'root', sha256: hashToken('tok-admin'), scopes: ['admin'] },
  ]);

  it('authenticates by SHA-256 and authorizes by scope; admin has every scope', () => {
    const signer = auth.authenticate('Bearer tok-sign');
    expect(signer.name).toBe('signer');
    expect(() => TokenAuth.authorize(signer, 'keys:sign')).not.toThrow();
    expect(() => TokenAuth.authorize(signer, 'keys:create')).toThrow(expect.objectContaining({ code: 'FORBIDDEN' }));
    const root = auth.authenticate('Bearer tok-admin');
    for (const scope of ['keys:create', 'keys:sign', 'keys:read', 'admin'] as const)
      expect(() => TokenAuth.authorize(root, scope)).not.toThrow();
  });

  it.each([
    undefined,
    '',
    'tok-sign',
    'Bearer',
    'Bearer ',
    'bearer tok-sign',
    'Bearer tok-sign2',
    `Bearer ${'x'.repeat(600)}`,
    'Bearer tok sign',
  ])('refuses %p', (header) => {
    expect(() => auth.authenticate(header)).toThrow(expect.objectContaining({ code: 'UNAUTHORIZED' }));
  });
});

describe('key store', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempRunDir();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const rec = (keyId: string, externalId: string | null = null) => ({
    keyId,
    externalId,
    address: '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266',
    publicKey: '0x04',
    blob: 'AAAA',
    labels: { a: 'b' },
    attestation: null,
    createdAt: 1,
  });

  it('opens with WAL and synchronous=FULL at the current schema version', () => {
    const store = new KeyStore(path.join(dir, 'k.db'));
    expect(store.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(store.db.pragma('synchronous', { simple: true })).toBe(2); // FULL
    expect(store.db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    store.close();
  });

  it('returns the existing record for a known external id, and never inserts twice', () => {
    const store = new KeyStore(path.join(dir, 'k.db'));
    expect(store.insert(rec('k1', 'ext')).created).toBe(true);
    const second = store.insert(rec('k2', 'ext'));
    expect([second.created, second.record.keyId]).toEqual([false, 'k1']);
    expect(store.get('k2')).toBeUndefined();
    expect(() => store.insert(rec('k1'))).toThrow(/UNIQUE/);
    store.close();
  });

  it('pages with an opaque cursor and rejects foreign cursors', () => {
    const store = new KeyStore(path.join(dir, 'k.db'));
    for (let i = 0; i < 7; i++) store.insert(rec(`k${i}`));
    const ids: string[] = [];
    let cursor: string | undefined;
    do {
      const page = store.list(3, cursor);
      ids.push(...page.keys.map((k) => k.keyId));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(ids).toEqual(['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6']);
    expect(() => store.list(3, 'garbage')).toThrow(expect.objectContaining({ code: 'INVALID_PARAMS' }));
    store.close();
  });

  it('refuses a database from a newer build', () => {
    const file = path.join(dir, 'k.db');
    const db = new Database(file);
    db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    expect(() => new KeyStore(file)).toThrow(/newer than this build/);
  });

  it('disables and enables, durably, and counts', () => {
    const file = path.join(dir, 'k.db');
    let store = new KeyStore(file);
    store.insert(rec('k1'));
    store.insert(rec('k2'));
    expect(store.get('k1')?.disabled).toBe(false); // now in the store's read cache too

    expect(store.setDisabled('k1', true)?.disabled).toBe(true);
    expect([store.get('k1')?.disabled, store.get('k2')?.disabled]).toEqual([true, false]);
    expect(store.counts()).toEqual({ total: 2, disabled: 1 });
    expect(store.setDisabled('nope', true)).toBeUndefined();
    store.close();
    store = new KeyStore(file); // what was committed, not what a cache remembers
    expect([store.get('k1')?.disabled, store.get('k2')?.disabled]).toEqual([true, false]);

    expect(store.setDisabled('k1', false)?.disabled).toBe(false);
    expect(store.get('k1')?.disabled).toBe(false);
    expect(store.counts()).toEqual({ total: 2, disabled: 0 });
    expect(store.setDisabled('k1', false)?.disabled).toBe(false); // enabling an enabled key changes nothing
    expect(store.setDisabled('nope', false)).toBeUndefined();
    store.close();
    store = new KeyStore(file);
    expect([store.get('k1')?.disabled, store.get('k2')?.disabled]).toEqual([false, false]);
    expect(store.counts()).toEqual({ total: 2, disabled: 0 });
    // Nothing else of the record changes.
    expect(store.get('k1')).toMatchObject({ keyId: 'k1', address: rec('k1').address, blob: 'AAAA', labels: { a: 'b' }, disabled: false });
    store.close();
  });
});

describe('parent configuration', () => {
  const base = {
    api: { listen: { port: 7070 } },
    tokens: [{ name: 't', sha256: hashToken('x'), scopes: ['admin'] }],
    database: { path: '/tmp/x.db' },
    kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/abc'], region: 'us-east-1' },
  };

  it('fills defaults and applies environment overrides', () => {
    const c = parseParentConfig(base, {
      NKS_API_PORT: '9000',
      NKS_DB_PATH: '/var/lib/nks/keys.db',
      NKS_KMS_REGION: 'eu-west-1',
      NKS_LOG_LEVEL: 'warn',
    });
    expect(c.database.path).toBe('/var/lib/nks/keys.db');
    expect(c.kmsProxy.region).toBe('eu-west-1');
    expect(c.logLevel).toBe('warn');
    const { host, socketMode, ...api } = PARENT_CONFIG_DEFAULTS.api;
    expect(c).toMatchObject({
      api: { ...api, listen: { host, port: 9000 } },
      transport: PARENT_CONFIG_DEFAULTS.transport,
      enclave: PARENT_CONFIG_DEFAULTS.enclave,
      kmsProxy: PARENT_CONFIG_DEFAULTS.kmsProxy,
    });
    expect(parseParentConfig(base).logLevel).toBe(PARENT_CONFIG_DEFAULTS.logLevel);
    expect(parseParentConfig({ ...base, api: { listen: { socket: '/run/x.sock' } } }).api.listen).toEqual({
      socket: '/run/x.sock',
      mode: socketMode,
    });
    // The enclave's defaults listen where these dial (enclave/test/units.test.ts checks its side).
    expect([c.enclave.address, c.kmsProxy.listen]).toEqual([DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS]);
  });

  it('allows exactly the KMS key ARNs the shared definition does', () => {
    const { good, bad } = IDENTIFIER_SAMPLES.kmsKeyArn;
    expect(parseParentConfig({ ...base, kmsProxy: { ...base.kmsProxy, allowedKeyArns: good } }).kmsProxy.allowedKeyArns).toEqual(good);
    for (const arn of bad)
      expect(() => parseParentConfig({ ...base, kmsProxy: { ...base.kmsProxy, allowedKeyArns: [arn] } })).toThrow(
        /config.kmsProxy.allowedKeyArns\[0\]: expected a KMS key ARN/,
      );
  });

  it.each<[string, object, RegExp]>([
    [
      'a non-loopback listener without TLS',
      { ...base, api: { listen: { host: '0.0.0.0', port: 7070 } } },
      /not loopback; serving beyond loopback requires config.api.tls/,
    ],
    [
      'a token stored in clear',
      { ...base, tokens: [{ name: 't', sha256: 'plaintext-token', scopes: ['admin'] }] },
      /config.tokens\[0\].sha256/,
    ],
    ['an unknown scope', { ...base, tokens: [{ name: 't', sha256: hashToken('x'), scopes: ['root'] }] }, /config.tokens\[0\].scopes/],
    ['duplicate token names', { ...base, tokens: [base.tokens[0], base.tokens[0]] }, /token names must be unique/],
    ['no allowed key', { ...base, kmsProxy: { allowedKeyArns: [], region: 'us-east-1' } }, /config.kmsProxy.allowedKeyArns/],
    ['an unknown field', { ...base, debug: true }, /unknown field\(s\) "debug"/],
  ])('refuses %s', (_name, raw, message) => {
    expect(() => parseParentConfig(raw)).toThrow(message);
  });

  it('stops the daemon with exit code 2 and the reason', async () => {
    const dir = tempRunDir();
    try {
      const file = path.join(dir, 'parent.json');
      fs.writeFileSync(file, JSON.stringify({ ...base, api: { listen: { host: '0.0.0.0', port: 1 } } }));
      const p = startProgram('parent', ['--config', file]);
      expect(await p.exited).toBe(2);
      expect(p.lines.join('\n')).toMatch(/parent: invalid configuration .* requires config.api.tls/);
      const none = startProgram('parent', [], { NKS_PARENT_CONFIG: '' });
      expect(await none.exited).toBe(2);
      expect(none.lines.join('\n')).toMatch(/no configuration: pass --config FILE or set NKS_PARENT_CONFIG/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
