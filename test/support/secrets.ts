/**
 * What a test needs to look for leaked private keys: the secret behind a blob, recovered the only way it can
 * be outside the enclave — with the KMS emulator's own key material from its state file — and the forms in
 * which it could leak (raw bytes, hex, base64 at every alignment).
 */
import { constants, createDecipheriv, createPrivateKey, privateDecrypt } from 'node:crypto';
import fs from 'node:fs';
import { blobAad, decodeBlobBase64 } from '@nks/shared/blob';

interface EmulatorState {
  keys: Array<{ arn: string; material: string }>;
}

export function recoverSecret(blobB64: string, kmsStateFile: string): Buffer {
  const blob = decodeBlobBase64(blobB64);
  const state = JSON.parse(fs.readFileSync(kmsStateFile, 'utf8')) as EmulatorState;
  const key = state.keys.find((k) => k.arn === blob.kmsKeyArn);
  if (!key) throw new Error(`the emulator state has no key ${blob.kmsKeyArn}`);
  const dek = privateDecrypt(
    { key: createPrivateKey(key.material), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
    blob.wrappedKey,
  );
  const decipher = createDecipheriv('aes-256-gcm', dek, blob.iv);
  decipher.setAAD(blobAad(blob));
  decipher.setAuthTag(blob.ciphertext.subarray(32));
  return Buffer.concat([decipher.update(blob.ciphertext.subarray(0, 32)), decipher.final()]);
}

/** Byte patterns whose presence in a haystack means the secret leaked. */
export function leakPatterns(secret: Buffer): Buffer[] {
  const out = [secret, Buffer.from(secret.toString('hex')), Buffer.from(secret.toString('hex').toUpperCase())];
  for (const shift of [0, 1, 2]) {
    for (const enc of ['base64', 'base64url'] as const) {
      // Encode at each alignment and keep only the characters fully determined by the secret's bytes.
      const text = Buffer.concat([Buffer.alloc(shift), secret]).toString(enc);
      const start = Math.ceil((shift * 4) / 3);
      const end = Math.floor(((shift + secret.length) * 4) / 3);
      out.push(Buffer.from(text.slice(start, end)));
    }
  }
  return out;
}

/** Names the places (by label) where any of the secrets appears in any form. */
export function findLeaks(secrets: Buffer[], haystacks: Record<string, Buffer | string>): string[] {
  const found: string[] = [];
  for (const [label, hay] of Object.entries(haystacks)) {
    const buf = typeof hay === 'string' ? Buffer.from(hay) : hay;
    secrets.forEach((secret, i) => {
      if (leakPatterns(secret).some((p) => buf.includes(p))) found.push(`secret #${i} in ${label}`);
    });
  }
  return found;
}
