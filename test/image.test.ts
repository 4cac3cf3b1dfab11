/**
 * The enclave image's init argv, worked out as nitro-cli works it out (scripts/image-argv.mjs): from the
 * Dockerfile here, and from `docker image inspect` of the built image where Docker exists (scripts/build-eif.sh
 * runs that check before nitro-cli). An argv nitro-cli's init cannot exec makes the enclave exit at start.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
// @ts-expect-error: a plain ES module script without type declarations
import * as argv from '../scripts/image-argv.mjs';

interface Check {
  argv: string[] | null;
  problems: string[];
}
const { checkDockerfile, checkImageInspect, finalStageConfig, NODE_BIN } = argv as {
  checkDockerfile: (text: string) => Check;
  checkImageInspect: (inspect: unknown) => Check;
  finalStageConfig: (text: string) => { Cmd: unknown; Entrypoint: unknown };
  NODE_BIN: string;
};

const ROOT = path.resolve(__dirname, '..');
const DOCKERFILE = fs.readFileSync(path.join(ROOT, 'Dockerfile.enclave'), 'utf8');
const GOOD = [NODE_BIN, '/app/enclave.js', '--config', '/app/enclave.json'];

/** Dockerfile.enclave with its final stage's ENTRYPOINT/CMD lines replaced by `tail`. */
function withFinalCommand(tail: string): string {
  const kept = DOCKERFILE.split('\n').filter((l) => !/^(ENTRYPOINT|CMD)\b/.test(l));
  return `${kept.join('\n')}\n${tail}\n`;
}

describe('the enclave image command line (nitro-cli takes Cmd and ignores Entrypoint)', () => {
  it('Dockerfile.enclave makes init exec the node binary on the enclave bundle', () => {
    expect(checkDockerfile(DOCKERFILE)).toEqual({ argv: GOOD, problems: [] });
    expect(finalStageConfig(DOCKERFILE)).toEqual({ Cmd: GOOD, Entrypoint: null });
  });

  it('refuses the shape that made the enclave exit at start: a Cmd starting with the .js over the base Entrypoint', () => {
    const res = checkDockerfile(withFinalCommand('CMD ["/app/enclave.js", "--config", "/app/enclave.json"]'));
    expect(res.argv).toEqual(['/app/enclave.js', '--config', '/app/enclave.json']);
    expect(res.problems).toEqual([
      expect.stringMatching(/is a script/),
      expect.stringMatching(/node must run \/app\/enclave.js/),
      expect.stringMatching(/must clear the Entrypoint/),
    ]);
  });

  it.each([
    ['a relative executable', 'ENTRYPOINT []\nCMD ["node", "/app/enclave.js"]', /absolute path/],
    [
      'shell form (no shell in the image)',
      'ENTRYPOINT []\nCMD node /app/enclave.js',
      /must be the runtime image's node binary \/nodejs\/bin\/node, got \/bin\/sh/,
    ],
    ['another binary', 'ENTRYPOINT []\nCMD ["/usr/bin/node", "/app/enclave.js"]', /must be the runtime image's node binary/],
    [
      'node running something else',
      'ENTRYPOINT []\nCMD ["/nodejs/bin/node", "/app/other.js"]',
      /node must run \/app\/enclave.js, got "\/app\/other.js"/,
    ],
    ['no command at all', 'ENTRYPOINT []', /neither Cmd nor Entrypoint/],
    ['the base image deciding', '', /must set CMD itself/],
    ['ENTRYPOINT alone, which clears the inherited Cmd', 'ENTRYPOINT ["/nodejs/bin/node", "/app/enclave.js"]', /must clear the Entrypoint/],
  ])('refuses %s', (_what, tail, problem) => {
    expect(checkDockerfile(withFinalCommand(tail)).problems).toContainEqual(expect.stringMatching(problem));
  });

  it('applies the same rule to docker image inspect output', () => {
    expect(checkImageInspect([{ Config: { Entrypoint: null, Cmd: GOOD } }])).toEqual({ argv: GOOD, problems: [] });
    // The broken image: Docker would run node /app/enclave.js, nitro-cli runs /app/enclave.js.
    const broken = checkImageInspect([{ Config: { Entrypoint: [NODE_BIN], Cmd: ['/app/enclave.js', '--config', '/app/enclave.json'] } }]);
    expect(broken.argv).toEqual(['/app/enclave.js', '--config', '/app/enclave.json']);
    expect(broken.problems).toContainEqual(expect.stringMatching(/is a script/));
    // Without Cmd, nitro-cli falls back to the Entrypoint; that is refused too (it must be cleared).
    expect(checkImageInspect([{ Config: { Entrypoint: GOOD, Cmd: null } }]).problems).toEqual([
      expect.stringMatching(/still has an Entrypoint/),
    ]);
    expect(checkImageInspect([{}]).problems).toEqual(['docker image inspect gave no Config']);
  });

  it('the command-line tool exits 1 with the problems on a bad Dockerfile and 0 with the argv on ours', () => {
    const tool = path.join(ROOT, 'scripts', 'image-argv.mjs');
    const ok = spawnSync(process.execPath, [tool, '--dockerfile', path.join(ROOT, 'Dockerfile.enclave')], { encoding: 'utf8' });
    expect([ok.status, JSON.parse(ok.stdout)]).toEqual([0, GOOD]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-image-'));
    try {
      const bad = path.join(dir, 'Dockerfile');
      fs.writeFileSync(bad, withFinalCommand('CMD ["/app/enclave.js"]'));
      const res = spawnSync(process.execPath, [tool, '--dockerfile', bad], { encoding: 'utf8' });
      expect([res.status, res.stderr]).toEqual([1, expect.stringMatching(/would not start under nitro-cli[\s\S]*is a script/)]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  // On a build host: NKS_ENCLAVE_IMAGE=<tag printed by scripts/build-eif.sh> npx jest test/image.test.ts
  const image = process.env.NKS_ENCLAVE_IMAGE;
  (image ? it : it.skip)('a built image (NKS_ENCLAVE_IMAGE, via docker image inspect) has that argv', () => {
    const docker = spawnSync('docker', ['image', 'inspect', String(image)], { encoding: 'utf8' });
    expect(docker.status).toBe(0);
    expect(checkImageInspect(JSON.parse(docker.stdout))).toEqual({ argv: GOOD, problems: [] });
  });
});

/** The Node majors deploy/base-images.env names: the builder (`node:N-…`) and the distroless runtime (`nodejsN-…`). */
function baseImageNodeMajors(text: string): { builder: number | null; runtime: number | null } {
  const value = (key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(text)?.[1] ?? '';
  const major = (re: RegExp, tag: string) => {
    const m = re.exec(tag);
    return m ? Number(m[1]) : null;
  };
  return {
    builder: major(/^(?:docker\.io\/)?(?:library\/)?node:(\d+)-/, value('BUILDER_TAG')),
    runtime: major(/^gcr\.io\/distroless\/nodejs(\d+)-debian\d+$/, value('RUNTIME_TAG')),
  };
}

describe('the Node the enclave image is built and run on (deploy/base-images.env)', () => {
  const text = fs.readFileSync(path.join(ROOT, 'deploy', 'base-images.env'), 'utf8');
  const nvmrc = fs.readFileSync(path.join(ROOT, '.nvmrc'), 'utf8').trim();
  const engines = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;

  it('is Node 24 LTS in both stages, the major .nvmrc names and package.json engines accepts', () => {
    expect(baseImageNodeMajors(text)).toEqual({ builder: 24, runtime: 24 });
    expect(nvmrc).toBe('24');
    expect(engines.split('||').map((r) => r.trim())).toContain('>=24.11 <25');
  });

  it('reads the majors from the tags, so a stage left on another Node shows', () => {
    const older = text.replace('nodejs24-debian12', 'nodejs20-debian12');
    expect(baseImageNodeMajors(older)).toEqual({ builder: 24, runtime: 20 });
    expect(baseImageNodeMajors(text.replace('node:24-bookworm-slim', 'node:22-bookworm-slim'))).toEqual({ builder: 22, runtime: 24 });
    expect(baseImageNodeMajors(text.replace(/^RUNTIME_TAG=.*$/m, 'RUNTIME_TAG=gcr.io/distroless/nodejs-debian12'))).toEqual({
      builder: 24,
      runtime: null,
    });
  });

  it('records no digest that was not looked up: either none, or a tag and its digest side by side', () => {
    const image = (key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(text)?.[1] ?? '';
    if (/^RESOLVED_AT=never$/m.test(text)) {
      expect([image('BUILDER_IMAGE'), image('RUNTIME_IMAGE')]).toEqual(['', '']);
    } else {
      expect(image('BUILDER_IMAGE')).toMatch(
        new RegExp(`^${image('BUILDER_TAG').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}@sha256:[0-9a-f]{64}$`),
      );
      expect(image('RUNTIME_IMAGE')).toMatch(
        new RegExp(`^${image('RUNTIME_TAG').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}@sha256:[0-9a-f]{64}$`),
      );
    }
  });
});

describe('what Dockerfile.enclave builds and ships', () => {
  /** The Dockerfile's instructions, continuation lines joined, with the index of the stage each is in. */
  const instructions = DOCKERFILE.replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => /^[A-Z]+\s/.test(l));
  const stages = instructions.reduce<string[][]>(
    (acc, l) => (l.startsWith('FROM ') ? [...acc, [l]] : (acc[acc.length - 1]?.push(l), acc)),
    [],
  );
  const copiedSources = (stage: string[]): string[] =>
    stage
      .filter((l) => l.startsWith('COPY ') && !l.includes('--from='))
      .flatMap((l) => {
        const parts = l.split(/\s+/).slice(1);
        return parts.slice(0, -1);
      });

  it('the final stage holds exactly the bundle, the three addons and the configuration', () => {
    const final = stages[stages.length - 1] ?? [];
    const copies = final.filter((l) => l.startsWith('COPY ')).map((l) => l.split(/\s+/).slice(1).join(' '));
    expect(copies).toEqual([
      '--from=builder /build/app/enclave.js /app/enclave.js',
      '--from=builder /build/app/native/nsm.node /app/native/nsm.node',
      '--from=builder /build/app/native/vsock.node /app/native/vsock.node',
      '--from=builder /build/app/native/secp256k1.node /app/native/secp256k1.node',
      '--from=builder /build/app/enclave.json /app/enclave.json',
    ]);
  });

  it('the builder gets every local module scripts/build.mjs imports, every addon source binding.gyp compiles, and the libsecp256k1 manifest', () => {
    const copied = new Set(copiedSources(stages[0] ?? []));
    const localImports = (file: string): string[] => {
      const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
      const own = [...text.matchAll(/^import [^;]*? from '(\.\/[^']+)';$/gm)].map((m) =>
        path.posix.join(path.posix.dirname(file), m[1] as string),
      );
      return [file, ...own.flatMap(localImports)];
    };
    const scripts = [...new Set(localImports('scripts/build.mjs'))];
    expect(scripts).toEqual(expect.arrayContaining(['scripts/build.mjs', 'scripts/client-package.mjs', 'scripts/libsecp256k1-source.mjs']));
    const gyp = fs.readFileSync(path.join(ROOT, 'enclave/native/binding.gyp'), 'utf8');
    const sources = [...gyp.matchAll(/"sources": \[([^\]]*)\]/g)]
      .flatMap((m) => [...(m[1] as string).matchAll(/"([^"]+)"/g)].map((s) => s[1] as string))
      // Staged by the build from node_modules (checked against the manifest), not copied from the checkout.
      .filter((s) => !s.startsWith('libsecp256k1/'))
      .map((s) => `enclave/native/${s}`);
    expect(sources).toEqual([
      'enclave/native/nsm.c',
      'enclave/native/vsock.c',
      'enclave/native/secp256k1.c',
      'enclave/native/secp256k1_core.c',
    ]);
    for (const f of [
      ...scripts,
      ...sources,
      'enclave/native/secp256k1_core.h',
      'enclave/native/binding.gyp',
      'enclave/native/libsecp256k1.sha256',
      'package-lock.json',
    ])
      expect([f, copied.has(f)]).toEqual([f, true]);
  });

  it('compiles libsecp256k1 from the exact package version package.json and the lockfile pin, with its integrity hash', () => {
    const manifest = fs.readFileSync(path.join(ROOT, 'enclave/native/libsecp256k1.sha256'), 'utf8');
    const [, name, version] = /^package (\S+) (\S+) \S+$/m.exec(manifest) ?? [];
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { version?: string; integrity?: string }>;
    };
    expect(pkg.devDependencies[name as string]).toBe(version);
    expect(lock.packages[`node_modules/${name}`]?.version).toBe(version);
    expect(lock.packages[`node_modules/${name}`]?.integrity).toMatch(/^sha512-/);
    expect(manifest.split('\n').filter((l) => /^[0-9a-f]{64} {2}\S+$/.test(l)).length).toBeGreaterThan(30);
  });
});
