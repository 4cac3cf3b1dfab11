import { createHash, generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { decodeCbor, encodeCbor } from '@nks/shared/cbor';
import { encodeFrame, FrameDecoder } from '@nks/shared/framing';
import { verifyAttestation } from '@nks/shared/attestation';
import { SimulatedNitroCa } from '../src/nsm/ca';
import { SimulatedNsm } from '../src/nsm/device';
import { measureContents, measureImageFiles } from '../src/measure';
import { measureString, pcr3ForRole } from '@nks/shared/pcr';
import { startProgram, type Running } from '../../test/support/process';
import { tempRunDir } from '@nks/shared-test/helpers';

const req = (v: unknown) => encodeCbor(v);
const m = (entries: Array<[string, unknown]>) => new Map(entries);

describe('simulated NSM protocol', () => {
  let ca: SimulatedNitroCa;
  let nsm: SimulatedNsm;
  const pcr0 = Buffer.alloc(48, 0xaa);

  beforeAll(async () => {
    ca = await SimulatedNitroCa.open(null);
  });
  beforeEach(() => {
    nsm = new SimulatedNsm({ ca, moduleId: 'i-0123456789abcdef0-enc0000000000000001', pcrs: new Map([[0, pcr0]]) });
  });

  const call = async (request: Buffer) => decodeCbor(await nsm.handle(request));
  const errorOf = async (request: Buffer) => ((await call(request)) as Map<string, unknown>).get('Error');

  it('answers GetRandom to the exact bytes the kernel driver sends', async () => {
    const kernelBytes = Buffer.from('6947657452616e646f6d', 'hex');
    const res = (await call(kernelBytes)) as Map<string, Map<string, Buffer>>;
    expect(res.get('GetRandom')?.get('random')).toHaveLength(256);
  });

  it('describes itself', async () => {
    const d = ((await call(req('DescribeNSM'))) as Map<string, Map<string, unknown>>).get('DescribeNSM') as Map<string, unknown>;
    expect(d.get('max_pcrs')).toBe(32);
    expect(d.get('digest')).toBe('SHA384');
    expect(d.get('locked_pcrs')).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect(d.get('module_id')).toBe('i-0123456789abcdef0-enc0000000000000001');
  });

  it('describes, extends and locks PCRs with the NSM rules', async () => {
    const describe = async (index: number) =>
      ((await call(req(m([['DescribePCR', m([['index', index]])]])))) as Map<string, Map<string, unknown>>).get('DescribePCR');
    expect((await describe(0))?.get('data')).toEqual(pcr0);
    expect((await describe(0))?.get('lock')).toBe(true);
    expect((await describe(16))?.get('lock')).toBe(false);

    const data = Buffer.from('measurement');
    const extended = (await call(
      req(
        m([
          [
            'ExtendPCR',
            m([
              ['index', 16],
              ['data', data],
            ]),
          ],
        ]),
      ),
    )) as Map<string, Map<string, Buffer>>;
    const expected = createHash('sha384').update(Buffer.alloc(48)).update(data).digest();
    expect(extended.get('ExtendPCR')?.get('data')).toEqual(expected);

    expect(
      await errorOf(
        req(
          m([
            [
              'ExtendPCR',
              m([
                ['index', 3],
                ['data', data],
              ]),
            ],
          ]),
        ),
      ),
    ).toBe('ReadOnlyIndex');
    expect(await errorOf(req(m([['DescribePCR', m([['index', 32]])]])))).toBe('InvalidIndex');
    expect(await errorOf(req(m([['LockPCR', m([['index', 3]])]])))).toBe('ReadOnlyIndex');
    expect(await call(req(m([['LockPCR', m([['index', 16]])]])))).toBe('LockPCR');
    expect(
      await errorOf(
        req(
          m([
            [
              'ExtendPCR',
              m([
                ['index', 16],
                ['data', data],
              ]),
            ],
          ]),
        ),
      ),
    ).toBe('ReadOnlyIndex');
    expect(await errorOf(req(m([['LockPCRs', m([['range', 33]])]])))).toBe('InvalidIndex');
    expect(await call(req(m([['LockPCRs', m([['range', 20]])]])))).toBe('LockPCRs');
    expect((await describe(19))?.get('lock')).toBe(true);
    expect((await describe(20))?.get('lock')).toBe(false);
  });

  it('produces attestation documents that verify and carry the request fields and locked PCRs', async () => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    const res = (await call(
      req(
        m([
          [
            'Attestation',
            m([
              ['user_data', Buffer.from('u')],
              ['nonce', Buffer.from('n')],
              ['public_key', spki],
            ]),
          ],
        ]),
      ),
    )) as Map<string, Map<string, Buffer>>;
    const doc = res.get('Attestation')?.get('document') as Buffer;
    const v = verifyAttestation(doc, {
      trustedRoots: [ca.rootPem],
      at: new Date(),
      maxAgeMs: 10_000,
      allowUnpinned: true,
      expectedNonce: Buffer.from('n'),
      expectedUserData: Buffer.from('u'),
      expectedPcrs: { 0: pcr0 },
    });
    expect(v.document.publicKey).toEqual(spki);
    expect([...v.document.pcrs.keys()]).toEqual(Array.from({ length: 16 }, (_, i) => i));
    // Missing keys are accepted (as QEMU does), and absent fields come out as null -> absent.
    const bare = (await call(req(m([['Attestation', m([])]])))) as Map<string, Map<string, Buffer>>;
    expect(
      verifyAttestation(bare.get('Attestation')?.get('document') as Buffer, { trustedRoots: [ca.rootPem], allowUnpinned: true }).document
        .nonce,
    ).toBeUndefined();
  });

  it('answers errors for bad requests and keeps working', async () => {
    expect(await errorOf(req(m([['Attestation', m([['user_data', Buffer.alloc(1025)]])]])))).toBe('InvalidArgument');
    expect(await errorOf(req('Reboot'))).toBe('InvalidOperation');
    expect(await errorOf(req(m([['Frobnicate', m([])]])))).toBe('InvalidOperation');
    expect(await errorOf(Buffer.from([0xff, 0xff, 0x00]))).toBe('InvalidArgument');
    expect(await errorOf(Buffer.alloc(4097, 0x40))).toBe('InputTooLarge');
    expect(await errorOf(req(m([['DescribePCR', m([['index', 'one']])]])))).toBe('InvalidArgument');
    expect(nsm.counters.errors).toBe(6);
    expect(((await call(req('GetRandom'))) as Map<string, unknown>).has('GetRandom')).toBe(true);
  });
});

describe('image measurement', () => {
  it('changes PCR0 and PCR2 when any byte of the image changes, never PCR1', () => {
    const a = measureContents([Buffer.from('bundle'), Buffer.from('{"config":1}')]);
    const b = measureContents([Buffer.from('bundle'), Buffer.from('{"config":2}')]);
    const c = measureContents([Buffer.from('bundlf'), Buffer.from('{"config":1}')]);
    // Moving bytes between files is a different image too.
    const d = measureContents([Buffer.from('bundle{'), Buffer.from('"config":1}')]);
    expect(new Set([a.PCR0, b.PCR0, c.PCR0, d.PCR0]).size).toBe(4);
    expect(new Set([a.PCR2, b.PCR2, c.PCR2, d.PCR2]).size).toBe(4);
    expect(new Set([a.PCR1, b.PCR1, c.PCR1, d.PCR1]).size).toBe(1);
    expect(a.PCR0).toMatch(/^[0-9a-f]{96}$/);
  });

  it('computes PCR4 from the instance id as Nitro does', () => {
    // The real document's PCR4 (docs/NITRO-KMS.md, "PCRs") for instance i-0f73a4b4cb74cc9f2.
    expect(measureString('i-0f73a4b4cb74cc9f2')).toBe(
      '9ab5a1aba055ee41ee254b9b251a58259b29fa1096859762744e9ac73b5869b25e51223854d9f86adbb37fe69f3e5d1c',
    );
  });
});

describe('nsm-sim process', () => {
  let dir: string;
  let proc: Running | undefined;

  beforeEach(() => {
    dir = tempRunDir();
  });
  afterEach(async () => {
    await proc?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function request(socketPath: string, body: Buffer): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(socketPath);
      const decoder = new FrameDecoder();
      sock.on('error', reject);
      sock.on('data', (d) => {
        const [frame] = decoder.push(d);
        if (frame) {
          sock.destroy();
          resolve(decodeCbor(frame));
        }
      });
      sock.write(encodeFrame(body));
    });
  }

  async function startSim(image: string[]): Promise<{ socket: string; rootPem: string }> {
    const socket = path.join(dir, 'nsm.sock');
    proc = startProgram('nsm-sim', [
      '--socket',
      socket,
      '--state-dir',
      path.join(dir, 'state'),
      ...image.flatMap((f) => ['--image', f]),
      '--parent-role-arn',
      'arn:aws:iam::111122223333:role/parent',
    ]);
    const ready = await proc.waitForLog((e) => e.msg === 'NSM simulator ready');
    return { socket, rootPem: String(ready.rootPem) };
  }

  it('serves attestation over its socket, measures the image, and keeps its root across restarts', async () => {
    const bundle = path.join(dir, 'enclave.js');
    const config = path.join(dir, 'enclave.json');
    fs.writeFileSync(bundle, 'console.log(1)');
    fs.writeFileSync(config, '{"a":1}');

    const first = await startSim([bundle, config]);
    const root1 = fs.readFileSync(first.rootPem, 'utf8');
    const attest = async (socket: string) => {
      const res = (await request(socket, encodeCbor(m([['Attestation', m([])]])))) as Map<string, Map<string, Buffer>>;
      return res.get('Attestation')?.get('document') as Buffer;
    };
    const expected = measureImageFiles([bundle, config]);
    const v1 = verifyAttestation(await attest(first.socket), {
      trustedRoots: [root1],
      at: new Date(),
      expectedPcrs: { 0: expected.PCR0, 1: expected.PCR1, 2: expected.PCR2, 3: pcr3ForRole('arn:aws:iam::111122223333:role/parent') },
    });
    expect(v1.document.pcrs.get(0)?.toString('hex')).toBe(expected.PCR0);
    await proc?.stop();

    fs.writeFileSync(config, '{"a":2}'); // a changed image
    const second = await startSim([bundle, config]);
    expect(fs.readFileSync(second.rootPem, 'utf8')).toBe(root1);
    const v2 = verifyAttestation(await attest(second.socket), { trustedRoots: [root1], at: new Date(), allowUnpinned: true });
    expect(v2.document.pcrs.get(0)?.toString('hex')).not.toBe(expected.PCR0);
    expect(v2.document.pcrs.get(0)?.toString('hex')).toBe(measureImageFiles([bundle, config]).PCR0);
  });

  it('refuses bad arguments with a usage message', async () => {
    proc = startProgram('nsm-sim', ['--socket', path.join(dir, 's'), '--state-dir', dir, '--pcr0', 'abc']);
    expect(await proc.exited).toBe(2);
    expect(proc.lines.join('\n')).toMatch(/--pcr0 must be 48 bytes of hex/);
    proc = startProgram('nsm-sim', ['--bogus']);
    expect(await proc.exited).toBe(2);
    expect(proc.lines.join('\n')).toMatch(/Unknown option '--bogus'/);
  });
});
