/**
 * The egress relay (docs/PROJECTS.md, "JWKS"): the only way out of the enclave to the internet. The enclave
 * opens a connection to the parent's relay (vsock CID 3, port 8001), sends one frame (framing.ts) holding the
 * JSON `{host, port}`, and the relay either answers the one byte EGRESS_OK and from then on pipes raw bytes
 * both ways to an address it resolved and checked, or closes the connection: every refusal (a host or port
 * not allowed, an address that is private, loopback or the metadata service, a name that does not resolve,
 * a failed connect) is that same close. TLS runs inside the enclave over the piped bytes, so the relay sees
 * only ciphertext and the server's name.
 */
import { jsonFrameObject } from './json-frame';

export const DEFAULT_EGRESS_ADDRESS = 'vsock://3:8001';
/** The relay's answer that the connection is open. */
export const EGRESS_OK = 0x01;
/** The request frame is small: a host name and a port. */
export const EGRESS_MAX_REQUEST_BYTES = 1024;
/** A DNS name (letters, digits, hyphens, dots; 1-253 characters) or an IPv4 literal; no IPv6 literals. */
export const EGRESS_HOST_RE =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export interface EgressRequest {
  host: string;
  port: number;
}

/** Parses the relay's request frame payload: the host name and port, or null for anything else. */
export function parseEgressRequest(payload: Uint8Array): EgressRequest | null {
  const v = jsonFrameObject(payload, EGRESS_MAX_REQUEST_BYTES, ['host', 'port']);
  if (!v) return null;
  const { host, port } = v;
  if (typeof host !== 'string' || !EGRESS_HOST_RE.test(host)) return null;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return null;
  return { host: host.toLowerCase(), port };
}

export function encodeEgressRequest(req: EgressRequest): Buffer {
  return Buffer.from(JSON.stringify({ host: req.host, port: req.port }), 'utf8');
}
