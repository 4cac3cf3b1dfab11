/**
 * The build's check of libsecp256k1's source (scripts/libsecp256k1-source.mjs, called by scripts/build.mjs
 * before node-gyp): every file the manifest lists must have its SHA-256, the package its version, and only
 * those files reach the directory the addon is compiled from. Against a package made here, and against the
 * real manifest and node_modules.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
// @ts-expect-error: a plain ES module script without type declarations
import * as source from '../scripts/libsecp256k1-source.mjs';

const { stageLibsecp256k1 } = source as {
  stageLibsecp256k1: (where: { manifest: string; nodeModules: string; dest: string }) => {
    package: string;
    version: string;
    files: string[];
  };
};
const ROOT = path.resolve(__dirname, '..');
const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

describe('libsecp256k1 source check', () => {
  let dir: string;
  let where: { manifest: string; nodeModules: string; dest: string };
  const files: Record<string, string> = { 'src/secp256k1.c': '#include "util.h"\n', 'src/util.h': '/* util */\n', COPYING: 'MIT\n' };
  const pkgSrc = () => path.join(where.nodeModules, 'fake-secp', 'src', 'lib');
  const writeManifest = (lines: string[]) => fs.writeFileSync(where.manifest, [`# comment`, ...lines, ''].join('\n'));
  const goodLines = () => ['package fake-secp 1.2.3 src/lib', ...Object.entries(files).map(([f, c]) => `${sha(c)}  ${f}`)];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-libsecp-'));
    where = {
      manifest: path.join(dir, 'libsecp256k1.sha256'),
      nodeModules: path.join(dir, 'node_modules'),
      dest: path.join(dir, 'native', 'libsecp256k1'),
    };
    fs.mkdirSync(pkgSrc(), { recursive: true });
    fs.writeFileSync(path.join(where.nodeModules, 'fake-secp', 'package.json'), JSON.stringify({ name: 'fake-secp', version: '1.2.3' }));
    for (const [f, c] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(pkgSrc(), f)), { recursive: true });
      fs.writeFileSync(path.join(pkgSrc(), f), c);
    }
    fs.writeFileSync(path.join(pkgSrc(), 'src', 'unlisted.h'), 'not listed\n');
    writeManifest(goodLines());
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const listed = (d: string): string[] =>
    fs.existsSync(d)
      ? fs
          .readdirSync(d, { withFileTypes: true })
          .flatMap((e) => (e.isDirectory() ? listed(path.join(d, e.name)).map((x) => `${e.name}/${x}`) : [e.name]))
          .sort()
      : [];

  it('copies exactly the listed files, and removes anything else from the directory', () => {
    fs.mkdirSync(where.dest, { recursive: true });
    fs.writeFileSync(path.join(where.dest, 'stale.h'), 'old');
    expect(stageLibsecp256k1(where)).toEqual({ package: 'fake-secp', version: '1.2.3', files: Object.keys(files) });
    expect(listed(where.dest)).toEqual(['COPYING', 'src/secp256k1.c', 'src/util.h']);
    expect(fs.readFileSync(path.join(where.dest, 'src/util.h'), 'utf8')).toBe(files['src/util.h']);
  });

  it('leaves an unchanged file untouched (make does not recompile), rewrites a changed one', () => {
    stageLibsecp256k1(where);
    const file = path.join(where.dest, 'src/secp256k1.c');
    const old = new Date('2001-01-01T00:00:00Z');
    fs.utimesSync(file, old, old);
    stageLibsecp256k1(where);
    expect(fs.statSync(file).mtimeMs).toBe(old.getTime());
    fs.writeFileSync(file, 'tampered in the build directory');
    stageLibsecp256k1(where);
    expect(fs.readFileSync(file, 'utf8')).toBe(files['src/secp256k1.c']);
  });

  it('refuses a file whose hash differs, naming it and both hashes, and stages nothing', () => {
    fs.writeFileSync(path.join(pkgSrc(), 'src/util.h'), '/* util, changed */\n');
    expect(() => stageLibsecp256k1(where)).toThrow(
      `libsecp256k1 source in node_modules/fake-secp/src/lib does not match libsecp256k1.sha256; refusing to compile it:\n  src/util.h: sha256 ${sha('/* util, changed */\n')}, expected ${sha(files['src/util.h'] as string)}`,
    );
    expect(listed(where.dest)).toEqual([]);
  });

  it('refuses a missing file', () => {
    fs.rmSync(path.join(pkgSrc(), 'COPYING'));
    expect(() => stageLibsecp256k1(where)).toThrow(/refusing to compile it:\n {2}COPYING: missing$/);
  });

  it('refuses another version of the package, or none installed', () => {
    writeManifest(goodLines().map((l, i) => (i === 0 ? 'package fake-secp 1.2.4 src/lib' : l)));
    expect(() => stageLibsecp256k1(where)).toThrow(
      'libsecp256k1 source: node_modules/fake-secp is version 1.2.3, libsecp256k1.sha256 pins 1.2.4 (run npm ci)',
    );
    writeManifest(goodLines().map((l, i) => (i === 0 ? 'package other-secp 1.2.3 src/lib' : l)));
    expect(() => stageLibsecp256k1(where)).toThrow('libsecp256k1 source: the npm package other-secp is not installed (run npm ci)');
  });

  it.each([
    ['no package line', (l: string[]) => l.slice(1), /the first line must be "package NAME VERSION SUBDIR"/],
    ['a path leaving the package', (l: string[]) => [...l, `${sha('x')}  ../../etc/passwd`], /not a "SHA256  PATH" line: .*etc\/passwd/],
    ['an absolute path', (l: string[]) => [...l, `${sha('x')}  /etc/passwd`], /not a "SHA256  PATH" line/],
    ['a short hash', (l: string[]) => [...l, `abc  src/util.h`], /not a "SHA256  PATH" line: abc/],
    ['no files', (l: string[]) => l.slice(0, 1), /lists no files/],
  ])('refuses a manifest with %s', (_, edit, message) => {
    writeManifest(edit(goodLines()));
    expect(() => stageLibsecp256k1(where)).toThrow(message);
  });

  it('the committed manifest matches the installed package (the addon compiles from these files alone, so one missing fails the build)', () => {
    const dest = path.join(dir, 'real');
    const staged = stageLibsecp256k1({
      manifest: path.join(ROOT, 'enclave/native/libsecp256k1.sha256'),
      nodeModules: path.join(ROOT, 'node_modules'),
      dest,
    });
    expect(staged.package).toBe('secp256k1');
    expect(staged.files).toEqual(
      expect.arrayContaining(['src/secp256k1.c', 'include/secp256k1_recovery.h', 'src/modules/recovery/main_impl.h', 'COPYING']),
    );
  });
});
