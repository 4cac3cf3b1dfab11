/**
 * The KMS emulator served in-process over HTTP for the tests that call it with the real @aws-sdk/client-kms: a
 * fresh state file in `dir`, a simulated Nitro CA whose root it trusts, no faults, and the given access keys.
 */
import path from 'node:path';
import { silentLogger } from '@nks/shared/log';
import { KmsEmulator } from '../src/kms/emulator';
import { KmsHttpServer } from '../src/kms/server';
import { KmsState } from '../src/kms/state';
import { SimulatedNitroCa } from '../src/nsm/ca';
import { ACCOUNT } from '../../test/support/platform';

export interface KmsTestServer {
  server: KmsHttpServer;
  /** Where it listens (loopback, a free port). */
  url: string;
  /** The CA that signs attestation documents the emulator accepts. */
  ca: SimulatedNitroCa;
}

/** `principals`: access key id -> role ARN; `defaultPrincipal`: the role of an access key not listed. */
export async function startKmsTestServer(
  dir: string,
  principals: Record<string, string>,
  defaultPrincipal: string,
): Promise<KmsTestServer> {
  const ca = await SimulatedNitroCa.open(null);
  const server = new KmsHttpServer({
    emulator: new KmsEmulator(new KmsState(path.join(dir, 'kms.json')), {
      region: 'us-east-1',
      account: ACCOUNT,
      trustRoots: [ca.rootPem],
      maxDocAgeMs: 300_000,
    }),
    logger: silentLogger(),
    faults: { latencyMs: 0, throttleRate: 0, errorRate: 0 },
    principals,
    defaultPrincipal,
  });
  return { server, url: await server.listen(0), ca };
}
