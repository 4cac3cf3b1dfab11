/**
 * NSM simulator process (dist/nsm-sim.js): serves the NSM CBOR protocol on a Unix socket, one request and one
 * response per frame (the shared frame codec: u32 length, u32 CRC-32, then the raw CBOR bytes the ioctl would
 * carry). Requests on one connection are answered in order, like the serialized real device.
 *
 *   nsm-sim --socket PATH --state-dir DIR [--image FILE]... [--pcr0 HEX] [--pcr1 HEX] [--pcr2 HEX]
 *           [--pcr3 HEX | --parent-role-arn ARN] [--pcr4 HEX | --instance-id ID] [--region R] [--debug-mode]
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { createLogger } from '@nks/shared/log';
import { encodeFrame, FrameDecoder, FrameError } from '@nks/shared/framing';
import { SimulatedNitroCa } from './ca';
import { SimulatedNsm, NSM_RESPONSE_MAX_BYTES } from './device';
import { measureImageFiles } from '../measure';
import { measureString, PCR_BYTES, PCR_HEX_RE, pcr3ForRole, ZERO_PCR } from '@nks/shared/pcr';

const USAGE = `usage: nsm-sim --socket PATH --state-dir DIR [--image FILE]... [--pcr0..4 HEX] [--parent-role-arn ARN] [--instance-id ID] [--region R] [--debug-mode]`;

function pcrArg(value: string | undefined, name: string): Buffer | undefined {
  if (value === undefined) return undefined;
  const hex = value.replace(/^0x/i, '').toLowerCase();
  if (!PCR_HEX_RE.test(hex)) throw new Error(`--${name} must be ${PCR_BYTES} bytes of hex`);
  return Buffer.from(hex, 'hex');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string' },
      'state-dir': { type: 'string' },
      image: { type: 'string', multiple: true },
      pcr0: { type: 'string' },
      pcr1: { type: 'string' },
      pcr2: { type: 'string' },
      pcr3: { type: 'string' },
      pcr4: { type: 'string' },
      'parent-role-arn': { type: 'string' },
      'instance-id': { type: 'string' },
      region: { type: 'string' },
      'debug-mode': { type: 'boolean' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!values.socket || !values['state-dir']) throw new Error(`--socket and --state-dir are required\n${USAGE}`);
  const log = createLogger({ name: 'nsm-sim' });
  const stateDir = path.resolve(values['state-dir']);
  fs.mkdirSync(stateDir, { recursive: true });

  const instanceId = values['instance-id'] ?? 'i-0123456789abcdef0';
  const ca = await SimulatedNitroCa.open(path.join(stateDir, 'nsm-ca.json'), {
    instanceId,
    ...(values.region ? { region: values.region } : {}),
  });

  const image = values.image?.length ? measureImageFiles(values.image) : undefined;
  const pcrs = new Map<number, Buffer>();
  const set = (i: number, v: Buffer | undefined) => v && pcrs.set(i, v);
  set(0, pcrArg(values.pcr0, 'pcr0') ?? (image && Buffer.from(image.PCR0, 'hex')));
  set(1, pcrArg(values.pcr1, 'pcr1') ?? (image && Buffer.from(image.PCR1, 'hex')));
  set(2, pcrArg(values.pcr2, 'pcr2') ?? (image && Buffer.from(image.PCR2, 'hex')));
  set(
    3,
    pcrArg(values.pcr3, 'pcr3') ?? (values['parent-role-arn'] ? Buffer.from(pcr3ForRole(values['parent-role-arn']), 'hex') : undefined),
  );
  set(4, pcrArg(values.pcr4, 'pcr4') ?? Buffer.from(measureString(instanceId), 'hex'));
  if (values['debug-mode']) for (const i of [0, 1, 2]) pcrs.set(i, Buffer.from(ZERO_PCR)); // as real debug enclaves report

  const nsm = new SimulatedNsm({ ca, moduleId: `${instanceId}-enc${randomBytes(8).toString('hex')}`, pcrs });
  const socketPath = path.resolve(values.socket);
  fs.mkdirSync(path.dirname(socketPath), { recursive: true });
  fs.rmSync(socketPath, { force: true });

  const server = net.createServer((sock) => {
    const decoder = new FrameDecoder(NSM_RESPONSE_MAX_BYTES * 2);
    let chain = Promise.resolve();
    sock.on('error', () => undefined);
    sock.on('data', (chunk) => {
      let requests: Buffer[];
      try {
        requests = decoder.push(chunk);
      } catch (err) {
        log.warn({ err, code: err instanceof FrameError ? err.code : 'decode' }, 'closing NSM client connection');
        sock.destroy();
        return;
      }
      for (const req of requests) {
        chain = chain.then(async () => {
          const res = await nsm.handle(req);
          if (!sock.destroyed) sock.write(encodeFrame(res));
        });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  log.info(
    {
      socket: socketPath,
      rootPem: path.join(stateDir, 'root.pem'),
      pcrs: Object.fromEntries([...pcrs].map(([i, v]) => [`PCR${i}`, v.toString('hex')])),
    },
    'NSM simulator ready',
  );

  const stop = () => {
    server.close();
    fs.rmSync(socketPath, { force: true });
    log.info(nsm.counters, 'NSM simulator stopped');
    log.flush();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: unknown) => {
  console.error(`nsm-sim: ${(err as Error).message}`);
  process.exit(2);
});
