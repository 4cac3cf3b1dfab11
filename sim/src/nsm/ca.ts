/**
 * A test certificate authority with the AWS Nitro certificate profile (docs/NITRO-KMS.md, "Attestation
 * documents"): root (30 y) → regional (20 d, pathLen 2) → zonal (6 d, pathLen 1) → instance (1 d, pathLen 0) →
 * leaf (3 h), all P-384 with ecdsa-with-SHA384. The root and intermediates persist in a state file so verifiers
 * can pin the root across restarts; expiring certificates below the root are re-issued on demand.
 */
import { randomBytes, webcrypto, KeyObject, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { x509 } from './x509';

const ALG = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' } as const;
const HOUR = 3600_000;
const DAY = 24 * HOUR;

export type Level = 'root' | 'regional' | 'zonal' | 'instance' | 'leaf';
const LEVELS: Level[] = ['root', 'regional', 'zonal', 'instance', 'leaf'];

export interface Profile {
  validityMs: number;
  pathLen?: number;
  ca: boolean;
  keyUsage: number;
  critical: boolean;
}

const F = x509.KeyUsageFlags;
export const PROFILE: Record<Level, Profile> = {
  root: { validityMs: 30 * 365 * DAY, ca: true, keyUsage: F.digitalSignature | F.keyCertSign | F.cRLSign, critical: true },
  regional: { validityMs: 20 * DAY, pathLen: 2, ca: true, keyUsage: F.digitalSignature | F.keyCertSign | F.cRLSign, critical: true },
  zonal: { validityMs: 6 * DAY, pathLen: 1, ca: true, keyUsage: F.digitalSignature | F.keyCertSign | F.cRLSign, critical: true },
  instance: { validityMs: DAY, pathLen: 0, ca: true, keyUsage: F.keyCertSign, critical: true },
  leaf: { validityMs: 3 * HOUR, ca: false, keyUsage: F.digitalSignature | F.nonRepudiation, critical: false },
};

export interface Issued {
  cert: x509.X509Certificate;
  keys: webcrypto.CryptoKeyPair;
}

interface StoredLevel {
  certDer: string;
  keyPkcs8: string;
}

export interface CaOptions {
  region?: string;
  instanceId?: string;
  enclaveId?: string;
}

export interface DocumentSigner {
  certificate: Buffer;
  cabundle: Buffer[];
  privateKey: KeyObject;
}

function subjectFor(level: Level, o: Required<CaOptions>, tag: string): string {
  const base = 'C=US, O=Simulated, OU=nitro-keystore';
  switch (level) {
    case 'root':
      return `${base}, CN=sim.nitro-enclaves`;
    case 'regional':
      return `${base}, CN=${tag}.${o.region}.sim.nitro-enclaves`;
    case 'zonal':
      return `${base}, CN=${tag}.zonal.${o.region}.sim.nitro-enclaves`;
    case 'instance':
      return `${base}, CN=${o.instanceId}.${o.region}.sim.nitro-enclaves`;
    case 'leaf':
      return `${base}, CN=${o.instanceId}-enc${o.enclaveId}.${o.region}.sim`;
  }
}

export class SimulatedNitroCa {
  private constructor(
    private readonly levels: Map<Level, Issued>,
    readonly options: Required<CaOptions>,
    private readonly stateFile: string | null,
  ) {}

  /** Loads the CA from `stateFile` (creating it when absent) and renews what expires within `minLifeMs`. */
  static async open(stateFile: string | null, options: CaOptions = {}, now = new Date()): Promise<SimulatedNitroCa> {
    const opts: Required<CaOptions> = {
      region: options.region ?? 'us-east-1',
      instanceId: options.instanceId ?? `i-${randomBytes(8).toString('hex').slice(0, 17)}`,
      enclaveId: options.enclaveId ?? randomBytes(8).toString('hex'),
    };
    const levels = new Map<Level, Issued>();
    if (stateFile && fs.existsSync(stateFile)) {
      const stored = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as {
        options: Required<CaOptions>;
        levels: Partial<Record<Level, StoredLevel>>;
      };
      Object.assign(opts, stored.options, options);
      for (const level of LEVELS) {
        const s = stored.levels[level];
        if (s) levels.set(level, await importLevel(s));
      }
    }
    const ca = new SimulatedNitroCa(levels, opts, stateFile);
    await ca.renew(now);
    return ca;
  }

  get rootPem(): string {
    return (this.levels.get('root') as Issued).cert.toString('pem');
  }

  get rootDer(): Buffer {
    return Buffer.from((this.levels.get('root') as Issued).cert.rawData);
  }

  /** Re-issues every certificate (below a still-valid root) that expires within `minLifeMs` of `now`. */
  async renew(now = new Date(), minLifeMs = 10 * 60_000): Promise<void> {
    let changed = false;
    let parentRenewed = false;
    for (const level of LEVELS) {
      const cur = this.levels.get(level);
      const expiring = !cur || cur.cert.notAfter.getTime() - now.getTime() < minLifeMs;
      if (expiring || parentRenewed) {
        this.levels.set(level, await this.issue(level, now));
        changed = true;
        parentRenewed = true;
      }
    }
    if (changed) await this.persist();
  }

  /**
   * Issues a certificate at `level` under the current parent. Tests pass an explicit validity window or a
   * profile override to make certificates that break the rules.
   */
  async issue(level: Level, notBefore: Date, notAfter?: Date, override: Partial<Profile> = {}): Promise<Issued> {
    const profile = { ...PROFILE[level], ...override };
    const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
    const start = new Date(notBefore.getTime() - 60_000);
    const end = notAfter ?? new Date(notBefore.getTime() + profile.validityMs);
    const name = subjectFor(level, this.options, randomBytes(8).toString('hex'));
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(profile.ca, profile.pathLen, true),
      new x509.KeyUsagesExtension(profile.keyUsage, profile.critical),
    ];
    const serialNumber = randomBytes(16)
      .toString('hex')
      .replace(/^[89a-f]/, '1');
    if (level === 'root') {
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber,
        name,
        notBefore: start,
        notAfter: end,
        keys,
        signingAlgorithm: ALG,
        extensions,
      });
      return { cert, keys };
    }
    const parent = this.levels.get(LEVELS[LEVELS.indexOf(level) - 1] as Level) as Issued;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber,
      subject: name,
      issuer: parent.cert.subject,
      notBefore: start,
      notAfter: end,
      publicKey: keys.publicKey,
      signingKey: parent.keys.privateKey,
      signingAlgorithm: ALG,
      extensions,
    });
    return { cert, keys };
  }

  /** The current leaf and bundle, ready to sign documents. */
  async signer(now = new Date()): Promise<DocumentSigner> {
    await this.renew(now);
    return this.signerUsing(this.levels.get('leaf') as Issued);
  }

  /** A signer whose leaf has an arbitrary validity window (tests of expired or not-yet-valid leaves). */
  async signerWithLeaf(notBefore: Date, notAfter: Date): Promise<DocumentSigner> {
    return this.signerUsing(await this.issue('leaf', new Date(notBefore.getTime() + 60_000), notAfter));
  }

  /** A signer for any issued certificate, placed under the current chain (tests). */
  async signerUsing(leaf: Issued): Promise<DocumentSigner> {
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leaf.keys.privateKey));
    return {
      certificate: Buffer.from(leaf.cert.rawData),
      cabundle: (['root', 'regional', 'zonal', 'instance'] as Level[]).map((l) => Buffer.from((this.levels.get(l) as Issued).cert.rawData)),
      privateKey: createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }),
    };
  }

  private async persist(): Promise<void> {
    if (!this.stateFile) return;
    const levels: Partial<Record<Level, StoredLevel>> = {};
    for (const [level, issued] of this.levels) {
      levels[level] = {
        certDer: Buffer.from(issued.cert.rawData).toString('base64'),
        keyPkcs8: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', issued.keys.privateKey)).toString('base64'),
      };
    }
    fs.mkdirSync(path.dirname(this.stateFile), { recursive: true });
    const tmp = `${this.stateFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ options: this.options, levels }, null, 1), { mode: 0o600 });
    fs.renameSync(tmp, this.stateFile);
    fs.writeFileSync(path.join(path.dirname(this.stateFile), 'root.pem'), this.rootPem);
  }
}

async function importLevel(s: StoredLevel): Promise<Issued> {
  const cert = new x509.X509Certificate(Buffer.from(s.certDer, 'base64'));
  const privateKey = await webcrypto.subtle.importKey('pkcs8', Buffer.from(s.keyPkcs8, 'base64'), ALG, true, ['sign']);
  const publicKey = await cert.publicKey.export(ALG, ['verify']);
  return { cert, keys: { privateKey, publicKey } };
}
