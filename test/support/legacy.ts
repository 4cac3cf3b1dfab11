/**
 * State as release 0.3 left it, for the migration tests: a parent database of schema version 1 (its `keys`
 * table exactly as 0.3 created it) holding keys whose blobs are version 1 (docs/SEALING.md, "The blob":
 * no kind, project or subject), sealed to a platform's KMS key as 0.3's enclave sealed them.
 */
import { constants, createCipheriv, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { privateKeyToAccount } from 'viem/accounts';
import { BLOB_ALG, blobAad, encodeBlob, type KeyBlobV1 } from '@nks/shared/blob';

/** Schema version 1 (0.3.0). */
export const SCHEMA_V1 = `CREATE TABLE keys (
     seq          INTEGER PRIMARY KEY AUTOINCREMENT,
     key_id       TEXT NOT NULL UNIQUE,
     external_id  TEXT UNIQUE,
     address      TEXT NOT NULL,
     public_key   TEXT NOT NULL,
     blob         TEXT NOT NULL,
     labels       TEXT NOT NULL DEFAULT '{}',
     attestation  TEXT,
     disabled     INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
     created_at   INTEGER NOT NULL,
     updated_at   INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX keys_address ON keys (address);`;

export interface LegacyKey {
  keyId: string;
  externalId: string | null;
  disabled: boolean;
  /** The secp256k1 secret, 0x-hex: the test keeps it to check signatures after the migration. */
  secret: `0x${string}`;
  address: `0x${string}`;
  publicKey: `0x${string}`;
  /** The version 1 blob, base64. */
  blob: string;
}

/** A secret sealed as 0.3 sealed it: AES-256-GCM under the v1 AAD, the data key wrapped to the KMS key. */
export function sealV1(secret: Uint8Array, header: { keyId: string; address: string; kmsKeyArn: string }, kmsPublicKeyDer: string): string {
  const dek = randomBytes(32);
  const iv = randomBytes(12);
  const blob: KeyBlobV1 = {
    v: 1,
    alg: BLOB_ALG,
    ...header,
    createdAt: Date.now(),
    wrappedKey: Buffer.alloc(0),
    iv,
    ciphertext: Buffer.alloc(0),
  };
  const cipher = createCipheriv('aes-256-gcm', dek, iv);
  cipher.setAAD(blobAad(blob));
  blob.ciphertext = Buffer.concat([cipher.update(secret), cipher.final(), cipher.getAuthTag()]);
  const kmsKey = createPublicKey({ key: Buffer.from(kmsPublicKeyDer, 'base64'), format: 'der', type: 'spki' });
  blob.wrappedKey = publicEncrypt({ key: kmsKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, dek);
  return encodeBlob(blob).toString('base64');
}

/** A key as 0.3 made it, for this KMS key. */
export function legacyKey(
  keyId: string,
  kms: { keyArn: string; kmsPublicKey: string },
  opts: { externalId?: string; disabled?: boolean } = {},
): LegacyKey {
  const secret = `0x${randomBytes(32).toString('hex')}` as const;
  const account = privateKeyToAccount(secret);
  return {
    keyId,
    externalId: opts.externalId ?? null,
    disabled: opts.disabled ?? false,
    secret,
    address: account.address,
    publicKey: account.publicKey,
    blob: sealV1(Buffer.from(secret.slice(2), 'hex'), { keyId, address: account.address, kmsKeyArn: kms.keyArn }, kms.kmsPublicKey),
  };
}

/** Adds keys to a database of schema version 1, creating it if it does not exist. */
export function writeLegacyDatabase(file: string, keys: LegacyKey[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  try {
    if ((db.pragma('user_version', { simple: true }) as number) === 0) {
      db.exec(SCHEMA_V1);
      db.pragma('user_version = 1');
    }
    const insert = db.prepare(
      `INSERT INTO keys (key_id, external_id, address, public_key, blob, labels, attestation, disabled, created_at, updated_at)
       VALUES (@keyId, @externalId, @address, @publicKey, @blob, '{}', NULL, @disabled, @now, @now)`,
    );
    for (const k of keys) insert.run({ ...k, disabled: k.disabled ? 1 : 0, now: Date.now() });
  } finally {
    db.close();
  }
}

/** Schema version 2 (0.4.0) over version 1, as 0.4 migrated it: frozen here, as 0.4 wrote it. */
export const SCHEMA_V2_STEP = `ALTER TABLE keys ADD COLUMN project_id TEXT;
   ALTER TABLE keys ADD COLUMN subject TEXT;
   ALTER TABLE keys ADD COLUMN state TEXT;
   ALTER TABLE keys ADD COLUMN record TEXT;
   ALTER TABLE keys ADD COLUMN record_signature TEXT;
   ALTER TABLE keys ADD COLUMN record_seq INTEGER CHECK (record_seq >= 0);
   ALTER TABLE keys ADD COLUMN disable_pending INTEGER NOT NULL DEFAULT 0 CHECK (disable_pending IN (0, 1));
   CREATE INDEX keys_without_record ON keys (seq) WHERE record IS NULL;
   CREATE TABLE projects (
     project_id   TEXT PRIMARY KEY,
     record       TEXT NOT NULL,
     signature    TEXT NOT NULL,
     seq          INTEGER NOT NULL CHECK (seq >= 0),
     updated_at   INTEGER NOT NULL
   ) STRICT;`;

/**
 * Schema version 3 (0.5) over version 2, as 0.5 migrated it: frozen here, as 0.5 wrote it (0.5 then filled the
 * new project columns from each row's record; a test writes the rows of a version 3 database itself).
 */
export const SCHEMA_V3_STEP = `ALTER TABLE projects ADD COLUMN project_key TEXT;
   ALTER TABLE projects ADD COLUMN name TEXT;
   ALTER TABLE projects ADD COLUMN state TEXT;
   ALTER TABLE projects ADD COLUMN auth_type TEXT;
   ALTER TABLE projects ADD COLUMN jwks_host TEXT;
   ALTER TABLE projects ADD COLUMN created_at INTEGER;
   CREATE UNIQUE INDEX projects_key ON projects (project_key);
   CREATE UNIQUE INDEX keys_active_subject ON keys (project_id, subject) WHERE subject IS NOT NULL AND state = 'active';`;

/** Schema version 4 (0.6) over version 3, as 0.6 migrated it: frozen here, as 0.6 wrote it. */
export const SCHEMA_V4_STEP = `CREATE TABLE tls_keys (
     public_key     TEXT PRIMARY KEY,
     blob           TEXT NOT NULL,
     blob_signature TEXT NOT NULL,
     names          TEXT NOT NULL,
     csr            TEXT NOT NULL,
     created_at     INTEGER NOT NULL,
     chain          TEXT,
     installed_at   INTEGER,
     current        INTEGER NOT NULL DEFAULT 0 CHECK (current IN (0, 1)),
     CHECK (current = 0 OR chain IS NOT NULL)
   ) STRICT;
   CREATE UNIQUE INDEX tls_keys_current ON tls_keys (current) WHERE current = 1;`;
