/**
 * The wallet routes' TLS identity, from the caller's side (docs/TLS.md): the enclave serves the wallet routes over
 * TLS with a P-256 key it made itself, and anyone can check that the key a server presents lives in an approved
 * enclave. `fetchTlsEvidence` connects to the server, takes the leaf certificate's SubjectPublicKeyInfo from the
 * handshake and, over the same connection, `GET /v1/tls/attestation?nonce=…` with a fresh random nonce;
 * `verifyTlsEvidence` checks the document (chain to the Nitro root, PCR0 of an approved image, the nonce, and
 * user_data = tlsUserData(SPKI) of the served key). A server that presents another key (a parent relaying to a
 * server of its own, with a certificate it got for the name) cannot show a document binding that key.
 *
 *   const evidence = await fetchTlsEvidence('https://wallets.example.com');
 *   verifyTlsEvidence(evidence, { expectedPcrs: { 0: APPROVED_PCR0S } });
 */
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import https from 'node:https';
import { isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { AttestationError, verifyAttestation, type VerifiedAttestation } from '@nks/shared/attestation';
import { tlsUserData } from '@nks/shared/attestation/user-data';
import { TLS_ATTESTATION_PATH } from '@nks/shared/tls-identity';
import { VerificationError, checkedAtText, resolvePcrs, type ExpectedPcrs } from './verify';

/** The nonce `fetchTlsEvidence` sends: 32 random bytes. */
export const TLS_EVIDENCE_NONCE_BYTES = 32;

export interface TlsEvidence {
  /** The origin connected to, `https://host[:port]`. */
  url: string;
  /** The served leaf certificate. */
  certificate: X509Certificate;
  /** Its SubjectPublicKeyInfo, DER. */
  spki: Buffer;
  /** The nonce sent with the request (hex, no 0x). */
  nonce: string;
  /** The attestation document the server answered (COSE_Sign1). */
  document: Buffer;
}

export interface FetchTlsEvidenceOptions {
  /** CA certificates (PEM) to trust instead of Node's store, e.g. a dev or internal CA. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Default 15 s. */
  timeoutMs?: number;
  /** The nonce to send, hex (8-64 bytes); default 32 random bytes. */
  nonce?: string;
}

/** `https://host[:port]` and nothing else: the evidence is of a server, not of a path on it. */
export function parseTlsOrigin(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new VerificationError('MALFORMED', `not a URL: ${JSON.stringify(url)} (expected https://HOST[:PORT])`);
  }
  if (u.protocol !== 'https:') throw new VerificationError('MALFORMED', `expected an https:// URL, not ${u.protocol}//`);
  if (u.username || u.password || (u.pathname !== '/' && u.pathname !== '') || u.search || u.hash) {
    throw new VerificationError('MALFORMED', `expected https://HOST[:PORT] without credentials, path or query, not ${url}`);
  }
  return u;
}

/**
 * Connects to `url` with TLS (the certificate must chain to `options.ca` or Node's store and name the host), takes
 * the served leaf's SPKI, and asks the same connection for a TLS attestation with a fresh nonce. Throws
 * VerificationError: TLS_HANDSHAKE when no trusted handshake is possible, BAD_RESPONSE for an answer that is not a
 * document.
 */
export async function fetchTlsEvidence(url: string, options: FetchTlsEvidenceOptions = {}): Promise<TlsEvidence> {
  const origin = parseTlsOrigin(url);
  const nonce = options.nonce ?? randomBytes(TLS_EVIDENCE_NONCE_BYTES).toString('hex');
  const host = origin.hostname.replace(/^\[(.*)\]$/, '$1');
  return new Promise<TlsEvidence>((resolve, reject) => {
    const req = https.request(
      {
        host,
        port: origin.port || 443,
        // SNI carries names only (RFC 6066); the certificate is still checked against an IP address.
        ...(isIP(host) ? {} : { servername: host }),
        path: `${TLS_ATTESTATION_PATH}?nonce=${nonce}`,
        method: 'GET',
        headers: { accept: 'application/json' },
        agent: false,
        rejectUnauthorized: true,
        ...(options.ca !== undefined ? { ca: options.ca } : {}),
        timeout: options.timeoutMs ?? 15_000,
      },
      (res) => {
        const certificate = (res.socket as TLSSocket).getPeerX509Certificate();
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > 256 * 1024) req.destroy(new VerificationError('BAD_RESPONSE', `${origin.origin} answered more than 256 KiB`));
          else chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (!certificate) return reject(new VerificationError('TLS_HANDSHAKE', `${origin.origin} presented no certificate`));
          if (res.statusCode !== 200) {
            return reject(
              new VerificationError(
                'BAD_RESPONSE',
                `GET ${TLS_ATTESTATION_PATH} answered HTTP ${res.statusCode}: ${text.slice(0, 200) || '(no body)'}`,
              ),
            );
          }
          let document: unknown;
          try {
            document = (JSON.parse(text) as { document?: unknown }).document;
          } catch {
            /* reported below */
          }
          if (typeof document !== 'string' || document === '') {
            return reject(
              new VerificationError('BAD_RESPONSE', `GET ${TLS_ATTESTATION_PATH} answered no {document} (base64): ${text.slice(0, 200)}`),
            );
          }
          resolve({
            url: origin.origin,
            certificate,
            spki: certificate.publicKey.export({ type: 'spki', format: 'der' }),
            nonce,
            document: Buffer.from(document, 'base64'),
          });
        });
      },
    );
    req.on('timeout', () =>
      req.destroy(new VerificationError('TLS_HANDSHAKE', `${origin.origin} did not answer within ${options.timeoutMs ?? 15_000} ms`)),
    );
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof VerificationError) return reject(err);
      reject(
        new VerificationError(
          'TLS_HANDSHAKE',
          `no trusted TLS connection to ${origin.origin}: ${err.code ? `${err.code}: ` : ''}${err.message}` +
            (/CERT|SELF_SIGNED|UNABLE_TO|ALTNAME/.test(err.code ?? '')
              ? ' (the certificate does not chain to a trusted CA for this name; --ca names a CA of your own)'
              : ''),
          { cause: err },
        ),
      );
    });
    req.end();
  });
}

export interface VerifyTlsEvidenceOptions {
  /** PCRs the document must show (PCR0 required: an image you approve, or the list of them). */
  expectedPcrs: ExpectedPcrs;
  /** Trust anchor for attestation documents (PEM or DER); default the AWS Nitro root G1. */
  rootCertificate?: string | Uint8Array;
  /** Refuse a document older than this. */
  maxAgeMs?: number;
}

export interface VerifiedTlsKey {
  /** SHA-256 of the served key's SPKI, hex. */
  spkiSha256: string;
  /** SHA-256 of the served leaf certificate, hex. */
  fingerprint256: string;
  attestation: VerifiedAttestation;
  checks: string[];
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/**
 * Checks evidence from `fetchTlsEvidence`: the document verifies (chain to the root, signature, the expected PCRs,
 * freshness when asked), carries the nonce sent, and its user_data is tlsUserData(served SPKI). Throws
 * VerificationError: ATTESTATION (with the document's own code), TLS_KEY_MISMATCH when the document is genuine but
 * binds another key than the one served.
 */
export function verifyTlsEvidence(evidence: TlsEvidence, options: VerifyTlsEvidenceOptions): VerifiedTlsKey {
  if (options?.expectedPcrs?.[0] === undefined) {
    throw new VerificationError(
      'MALFORMED',
      'PCR0 is required: the PCR0 of each image you approve (without it the document proves nothing about the code)',
    );
  }
  if (!/^(?:[0-9a-fA-F]{2}){8,64}$/.test(evidence.nonce)) throw new VerificationError('MALFORMED', 'the nonce must be 8-64 bytes of hex');
  const checks: string[] = [`TLS handshake with ${evidence.url}: the certificate chains to a trusted CA and names the host`];
  let attestation: VerifiedAttestation;
  try {
    attestation = verifyAttestation(evidence.document, {
      expectedPcrs: resolvePcrs(evidence.document, options.expectedPcrs),
      expectedNonce: Buffer.from(evidence.nonce, 'hex'),
      ...(options.rootCertificate !== undefined ? { trustedRoots: [options.rootCertificate] } : {}),
      ...(options.maxAgeMs !== undefined ? { maxAgeMs: options.maxAgeMs } : {}),
      at: 'now', // a document just asked for, with our nonce
    });
  } catch (err) {
    if (err instanceof AttestationError) {
      throw new VerificationError('ATTESTATION', `TLS attestation of ${evidence.url}: ${err.code}: ${err.message}`, {
        cause: err,
        attestationCode: err.code,
      });
    }
    throw err;
  }
  checks.push(
    `attestation verifies (chain at ${checkedAtText(attestation)}, PCR0 ${attestation.document.pcrs.get(0)?.toString('hex')}) and carries your nonce`,
  );
  const spkiSha256 = sha256(evidence.spki);
  if (!attestation.document.userData?.equals(tlsUserData(evidence.spki))) {
    throw new VerificationError(
      'TLS_KEY_MISMATCH',
      `${evidence.url} serves a key (SPKI sha256 ${spkiSha256}) that the attestation does not bind: the TLS connection does not end in the attested enclave`,
    );
  }
  checks.push(`the attestation binds the served key (user_data = SHA-256("nks-tls-v1" ‖ SPKI), SPKI sha256 ${spkiSha256})`);
  return { spkiSha256, fingerprint256: sha256(evidence.certificate.raw), attestation, checks };
}
