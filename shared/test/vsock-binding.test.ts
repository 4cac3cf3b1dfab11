/**
 * The real AF_VSOCK binding: it loads, and a socket can be created and bound. Never connected here: on
 * development machines CID 2 is this machine's own host. The check runs in a child process because the
 * binding's accept thread keeps a process alive after close (DESIGN §12), which would hang a Jest worker.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { loadVsockBinding, RealVsockTransport } from '../src/transport';
import { tempRunDir } from './helpers';

const script = `
import { RealVsockTransport } from ${JSON.stringify(path.resolve(__dirname, '../src/transport/vsock'))};
(async () => {
  const transport = new RealVsockTransport();
  const port = 40000 + (process.pid % 20000);
  const out = { kind: transport.kind, port };
  const listener = await transport.listen('vsock://16:' + port, () => {});
  out.bound = listener.address;
  try {
    await transport.listen('vsock://16:' + port, () => {});
    out.second = 'bound twice';
  } catch (e) {
    out.second = String(e.message);
  }
  await listener.close();
  console.log(JSON.stringify(out));
  process.exit(0); // the binding's listener thread would keep the process alive
})().catch((e) => { console.log(JSON.stringify({ error: String(e && e.message) })); process.exit(1); });
`;

describe('real vsock binding', () => {
  it('loads, creates and binds an AF_VSOCK socket (bind is exclusive per port)', () => {
    const dir = tempRunDir();
    try {
      const entry = path.join(dir, 'probe.ts');
      fs.writeFileSync(entry, script);
      const outfile = path.join(dir, 'probe.js');
      buildSync({ entryPoints: [entry], outfile, bundle: true, platform: 'node', format: 'cjs', external: ['node-vsock-linux-x64-gnu'], logLevel: 'silent' });
      const nodeModules = path.resolve(__dirname, '../../node_modules');
      const res = spawnSync(process.execPath, [outfile], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, NODE_PATH: nodeModules } });
      expect({ status: res.status, stderr: res.stderr, stdout: res.stdout }).toEqual({ status: 0, stderr: '', stdout: expect.stringContaining('"bound"') });
      const out = JSON.parse(res.stdout.trim().split('\n').pop() as string);
      expect(out.kind).toBe('vsock');
      expect(out.bound).toBe(`vsock://16:${out.port}`);
      // The second bind of the same port fails: the first socket really was bound.
      expect(out.second).toMatch(/Bind socket address failed.*(EADDRINUSE|AddrInUse)/i);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says clearly why it cannot load, and what to use instead', () => {
    expect(() => loadVsockBinding(['/nonexistent/node-vsock.linux-x64-gnu.node'])).toThrow(
      /AF_VSOCK binding .* could not be loaded[\s\S]*nonexistent[\s\S]*use the simulated transport/,
    );
  });

  it('refuses to dial CIDs that are never a Nitro peer (0, 1, 2), before creating a socket', async () => {
    const fakeBinding = {
      VsockSocket: class {
        constructor() {
          throw new Error('a socket must not be created');
        }
      },
    } as never;
    const transport = new RealVsockTransport(fakeBinding);
    for (const cid of [0, 1, 2]) {
      await expect(transport.connect(`vsock://${cid}:5000`)).rejects.toThrow(`CID ${cid} is never a Nitro parent or enclave`);
    }
  });
});
