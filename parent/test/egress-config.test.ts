/** The `egress` configuration section (parent/src/egress/config.ts): defaults, and what it refuses. */
import { DEFAULT_EGRESS_ADDRESS } from '@nks/shared/egress';
import { describeIssues } from '@nks/shared/schema';
import { EGRESS_CONFIG_DEFAULTS, EgressConfigSchema } from '../src/egress/config';

const problem = (raw: unknown): string => {
  const res = EgressConfigSchema.safeParse(raw);
  if (res.success) throw new Error(`expected ${JSON.stringify(raw)} to be refused`);
  return describeIssues(res.error, 'config.egress');
};

describe('egress configuration', () => {
  it('fills every default from EGRESS_CONFIG_DEFAULTS', () => {
    expect(EgressConfigSchema.parse({})).toEqual(EGRESS_CONFIG_DEFAULTS);
    expect(EGRESS_CONFIG_DEFAULTS).toEqual({
      listen: DEFAULT_EGRESS_ADDRESS,
      allowedHosts: [],
      allowedPorts: [443],
      allowLoopback: false,
      deniedCidrs: [],
      connectTimeoutMs: 5000,
      idleTimeoutMs: 30_000,
      maxBytesPerConnection: 1024 * 1024,
      maxConnections: 64,
      handshakeTimeoutMs: 5000,
    });
  });

  it('does not share the default arrays between parses', () => {
    const a = EgressConfigSchema.parse({});
    a.allowedPorts.push(8443);
    a.allowedHosts.push('x.example');
    expect(EgressConfigSchema.parse({}).allowedPorts).toEqual([443]);
    expect(EgressConfigSchema.parse({}).allowedHosts).toEqual([]);
  });

  it('keeps what is set, host names in lower case', () => {
    const c = EgressConfigSchema.parse({
      listen: 'vsock://3:9001',
      allowedHosts: ['Login.Example.COM', '203.0.113.7'],
      allowedPorts: [443, 8443],
      allowLoopback: true,
      deniedCidrs: ['2600:1f18:aaaa::/48', '198.51.100.7', '::ffff:203.0.113.0/120'],
      connectTimeoutMs: 100,
      idleTimeoutMs: 200,
      maxBytesPerConnection: 4096,
      maxConnections: 2,
      handshakeTimeoutMs: 300,
    });
    expect(c).toEqual({
      listen: 'vsock://3:9001',
      allowedHosts: ['login.example.com', '203.0.113.7'],
      allowedPorts: [443, 8443],
      allowLoopback: true,
      deniedCidrs: ['2600:1f18:aaaa::/48', '198.51.100.7', '::ffff:203.0.113.0/120'],
      connectTimeoutMs: 100,
      idleTimeoutMs: 200,
      maxBytesPerConnection: 4096,
      maxConnections: 2,
      handshakeTimeoutMs: 300,
    });
  });

  it.each([
    [{ listen: 'tcp://3:8001' }, 'config.egress.listen'],
    [{ allowedHosts: ['*.example.com'] }, 'config.egress.allowedHosts[0]'],
    [{ allowedHosts: ['https://login.example.com'] }, 'config.egress.allowedHosts[0]'],
    [{ allowedHosts: ['::1'] }, 'config.egress.allowedHosts[0]'],
    [{ allowedHosts: 'login.example.com' }, 'config.egress.allowedHosts'],
    [{ allowedPorts: [] }, 'config.egress.allowedPorts'],
    [{ allowedPorts: [0] }, 'config.egress.allowedPorts[0]'],
    [{ allowedPorts: [65536] }, 'config.egress.allowedPorts[0]'],
    [{ allowedPorts: ['443'] }, 'config.egress.allowedPorts[0]'],
    [{ allowLoopback: 'yes' }, 'config.egress.allowLoopback'],
    [{ deniedCidrs: ['203.0.113.0/33'] }, 'config.egress.deniedCidrs[0]'],
    [{ deniedCidrs: ['2600::/129'] }, 'config.egress.deniedCidrs[0]'],
    [{ deniedCidrs: ['203.0.113.0/24/1'] }, 'config.egress.deniedCidrs[0]'],
    [{ deniedCidrs: ['203.0.113.0/x'] }, 'config.egress.deniedCidrs[0]'],
    [{ deniedCidrs: ['203.0.113.0/-1'] }, 'config.egress.deniedCidrs[0]'],
    [{ deniedCidrs: ['vpc.internal/16'] }, 'config.egress.deniedCidrs[0]'],
    [{ deniedCidrs: '10.0.0.0/8' }, 'config.egress.deniedCidrs'],
    [{ connectTimeoutMs: 0 }, 'config.egress.connectTimeoutMs'],
    [{ idleTimeoutMs: 1.5 }, 'config.egress.idleTimeoutMs'],
    [{ maxBytesPerConnection: 100 }, 'config.egress.maxBytesPerConnection'],
    [{ maxConnections: 0 }, 'config.egress.maxConnections'],
    [{ handshakeTimeoutMs: -1 }, 'config.egress.handshakeTimeoutMs'],
    [{ allowedHost: ['x.example'] }, 'allowedHost'],
  ])('refuses %j, naming %s', (raw, field) => {
    expect(problem(raw)).toContain(field);
  });
});
