/**
 * A request's client address (`request.ip`), which the TrueWallet rate limits count by: the socket peer's,
 * unless the peer is a proxy listed in `api.trustProxy`, when it is the address the proxy's X-Forwarded-For
 * names (docs/DEPLOY.md, "The TrueWallet routes behind a load balancer or proxy"). Fastify walks the header from
 * the right while the hop is trusted (`trustProxy` as a function); the matching is Node's `net.BlockList`.
 */
import net from 'node:net';
import { TRUST_UNIX_PEER, type ParentConfig } from '../config';

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

/**
 * Why every caller may share one client address: the listener is a Unix socket or loopback, so the callers of the
 * public routes come through something on this host (a proxy), and `api.trustProxy` does not name it. Null when
 * the listener is reached directly (beyond loopback, with TLS) or the proxy is trusted.
 */
export function sharedClientAddress(api: Pick<ParentConfig['api'], 'listen' | 'trustProxy'>): string | null {
  const l = api.listen;
  if ('socket' in l)
    return api.trustProxy.includes(TRUST_UNIX_PEER)
      ? null
      : `the API listens on the Unix socket ${l.socket} and api.trustProxy does not list "unix"`;
  if (/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(l.host) && api.trustProxy.length === 0)
    return `the API listens on loopback (${l.host}) and api.trustProxy is empty`;
  return null;
}
