/**
 * The emulator's persistent state: keys with their material, key policies and grants, in one JSON file written
 * atomically (temporary file, fsync, rename) after every change. The file holds key material in the clear:
 * it is an emulator's state, readable by tests that need to check what only KMS could decrypt.
 */
import fs from 'node:fs';
import path from 'node:path';

export type KeySpec = 'SYMMETRIC_DEFAULT' | 'RSA_2048' | 'RSA_3072' | 'RSA_4096';
export type KeyState = 'Enabled' | 'Disabled';

/** A grant (CreateGrant): what it allows, to whom. Grant tokens are accepted but grants are effective at once. */
export interface GrantRecord {
  grantId: string;
  grantToken: string;
  name?: string | undefined;
  granteePrincipal: string;
  retiringPrincipal?: string | undefined;
  /** `arn:aws:iam::ACCOUNT:root` of the caller that created the grant. */
  issuingAccount: string;
  /** Grant operations without the `kms:` prefix, e.g. `ReEncryptFrom`. */
  operations: string[];
  constraints?:
    | { EncryptionContextSubset?: Record<string, string> | undefined; EncryptionContextEquals?: Record<string, string> | undefined }
    | undefined;
  /** Seconds since the epoch. */
  createdAt: number;
}

export interface KmsKeyRecord {
  keyId: string;
  arn: string;
  keySpec: KeySpec;
  keyUsage: 'ENCRYPT_DECRYPT';
  keyState: KeyState;
  description: string;
  /** Seconds since the epoch, as KMS reports CreationDate. */
  createdAt: number;
  /** Symmetric: the 32-byte key (base64). RSA: the PKCS#8 private key (PEM). */
  material: string;
  policy: string;
  /** Absent in state files written before grants were modelled: no grants. */
  grants?: GrantRecord[];
}

interface StateFile {
  version: 1;
  keys: KmsKeyRecord[];
}

export class KmsState {
  readonly keys = new Map<string, KmsKeyRecord>();

  constructor(private readonly file: string | null) {
    if (file && fs.existsSync(file)) {
      const data = JSON.parse(fs.readFileSync(file, 'utf8')) as StateFile;
      if (data.version !== 1) throw new Error(`unsupported KMS emulator state version ${String(data.version)} in ${file}`);
      for (const k of data.keys) this.keys.set(k.keyId, k);
    }
  }

  save(): void {
    if (!this.file) return;
    const data: StateFile = { version: 1, keys: [...this.keys.values()] };
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeFileSync(fd, JSON.stringify(data, null, 1));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
  }
}
