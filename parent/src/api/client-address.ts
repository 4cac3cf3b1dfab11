/**
 * A request's client address (`request.ip`): the socket peer's, unless the peer is a proxy listed in
 * `api.trustProxy`, when it is the address the proxy's X-Forwarded-For names (docs/DEPLOY.md). Fastify walks the
 * header from the right while the hop is trusted (`trustProxy` as a function); the matching is Node's
 * `net.BlockList`.
 */
import net from 'node:net';
import { TRUST_UNIX_PEER } from '../config';

/** Fastify's `trustProxy` for the configured entries; undefined (X-Forwarded-For ignored) when there are none. */
export function trustedProxies(entries: readonly string[]): ((address: string | undefined, hop: number) => boolean) | undefined {
  if (entries.length === 0) return undefined;
  const list = new net.BlockList();
  let unixPeer = false;
  for (const entry of entries) {
    if (entry === TRUST_UNIX_PEER) {
      unixPeer = true;
      continue;
    }
    const [ip = '', prefix] = entry.split('/');
    const type = net.isIPv6(ip) ? 'ipv6' : 'ipv4';
    if (prefix === undefined) list.addAddress(ip, type);
    else list.addSubnet(ip, Number(prefix), type);
  }
  return (address, hop) => {
    // A Unix socket's peer has no address: trusted only when `unix` is listed, and only as the first hop.
    if (address === undefined) return unixPeer && hop === 0;
    const family = net.isIP(address);
    if (family === 0) return false;
    try {
      return list.check(address, family === 6 ? 'ipv6' : 'ipv4');
    } catch {
      return false;
    }
  };
}
