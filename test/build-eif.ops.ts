/**
 * scripts/build-eif.sh end to end against stand-ins for docker and nitro-cli (neither exists here): what it
 * refuses before building, what it builds from, and what it records. A copy of the scripts, Dockerfile and
 * sources is committed to a scratch git repository for each case.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
const DIGEST = `sha256:${'a'.repeat(64)}`;
const PCR0 = 'b'.repeat(96);

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-build-eif-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A committed scratch repository; `baseImages` is deploy/base-images.env's content. */
function repository(
  baseImages = `BUILDER_TAG=node:x\nRUNTIME_TAG=distroless:y\nBUILDER_IMAGE=node@${DIGEST}\nRUNTIME_IMAGE=distroless@${DIGEST}\nRESOLVED_AT=2026-12-01T00:00:00Z\n`,
) {
  const repo = path.join(dir, 'repo');
  for (const p of ['scripts', 'deploy', 'enclave/src', 'shared/src/release.ts', 'Dockerfile.enclave'])
    fs.cpSync(path.join(ROOT, p), path.join(repo, p), { recursive: true });
  fs.writeFileSync(path.join(repo, 'deploy/base-images.env'), baseImages);
  fs.writeFileSync(path.join(repo, '.gitignore'), 'deploy/enclave.json\n');
  const git = (...a: string[]) =>
    spawnSync('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=t', ...a], { cwd: repo, encoding: 'utf8' });
  git('init', '-q');
  git('add', '-A');
  git('commit', '-qm', 'reviewed');
  return { repo, head: git('rev-parse', 'HEAD').stdout.trim() };
}

/** Runs build-eif.sh in `repo` with stand-in docker and nitro-cli that log their calls. */
function buildEif(repo: string) {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const calls = path.join(dir, 'calls.log');
  const image = path.join(dir, 'image');
  fs.mkdirSync(path.join(image, 'nodejs/bin'), { recursive: true });
  fs.writeFileSync(path.join(image, 'nodejs/bin/node'), '');
  fs.writeFileSync(
    path.join(bin, 'docker'),
    `#!/bin/bash
echo "docker $*" >> ${calls}
case "$1 $2" in
  "buildx imagetools") echo '{"digest": "${DIGEST}"}' ;;
  "image inspect") echo '[{"Config":{"Cmd":["/nodejs/bin/node","/app/enclave.js","--config","/app/enclave.json"],"Entrypoint":null}}]' ;;
  "create "*) echo container-id ;;
  "export "*) tar -cf - -C ${image} nodejs/bin/node ;;
  "version "*) echo 27.0.0 ;;
esac
exit 0
`,
    { mode: 0o755 },
  );
  fs.writeFileSync(
    path.join(bin, 'nitro-cli'),
    `#!/bin/bash\necho "nitro-cli $*" >> ${calls}\ncase "$1" in build-enclave) echo '{"Measurements":{"PCR0":"${PCR0}"}}';; --version) echo "Nitro CLI 1.4.2";; esac\n`,
    { mode: 0o755 },
  );
  const config = path.join(dir, 'enclave.json');
  fs.writeFileSync(config, '{}');
  const out = path.join(dir, 'out');
  const res = spawnSync('bash', [path.join(repo, 'scripts/build-eif.sh'), '--config', config, '--out', out], {
    cwd: repo,
    encoding: 'utf8',
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
  });
  const log = fs.existsSync(calls) ? fs.readFileSync(calls, 'utf8') : '';
  const info = fs.existsSync(path.join(out, 'build-info.json'))
    ? JSON.parse(fs.readFileSync(path.join(out, 'build-info.json'), 'utf8'))
    : null;
  return { res, log, info };
}

describe('scripts/build-eif.sh', () => {
  it('builds a clean commit from the recorded base images, checks the image argv, and records what PCR0 depends on', () => {
    const { repo, head } = repository();
    const { res, log, info } = buildEif(repo);
    expect([res.status, res.stderr]).toEqual([0, expect.stringContaining('wrote')]);
    // The step it is on, numbered, on stderr (docker's and nitro-cli's output between them).
    expect([...res.stderr.matchAll(/^\[(\d)\/6\] \S.*…$/gm)].map((m) => Number(m[1]))).toEqual([1, 2, 3, 4, 5, 6]);
    expect(res.stderr).toMatch(/^\[5\/6\] building the EIF and measuring it \(nitro-cli build-enclave\)…$/m);
    expect(log).toMatch(
      new RegExp(`docker buildx build .*--build-arg BUILDER_IMAGE=node@${DIGEST} --build-arg RUNTIME_IMAGE=distroless@${DIGEST}`),
    );
    expect(log).toMatch(/docker image inspect nitro-keystore-enclave:/);
    expect(log).toMatch(/nitro-cli build-enclave --docker-uri nitro-keystore-enclave:/);
    expect(info).toMatchObject({
      commit: head,
      builderImage: `node@${DIGEST}`,
      runtimeImage: `distroless@${DIGEST}`,
      debianSnapshot: expect.stringMatching(/^\d{8}T\d{6}Z$/),
      nitroCli: 'Nitro CLI 1.4.2',
    });
  });

  it('refuses a work tree with uncommitted changes before building anything (its PCR0 would be labelled with HEAD)', () => {
    const { repo } = repository();
    fs.appendFileSync(path.join(repo, 'enclave/src/main.ts'), '\n// not in the reviewed commit\n');
    const { res, log, info } = buildEif(repo);
    expect([res.status, res.stderr]).toEqual([1, expect.stringMatching(/not committed[\s\S]*M enclave\/src\/main.ts/)]);
    expect(log).not.toMatch(/buildx build/);
    expect(info).toBeNull();
  });

  it('refuses to build while no base image digest is recorded', () => {
    const { repo } = repository('BUILDER_TAG=node:x\nRUNTIME_TAG=distroless:y\nBUILDER_IMAGE=\nRUNTIME_IMAGE=\nRESOLVED_AT=never\n');
    const { res, log } = buildEif(repo);
    expect([res.status, res.stderr]).toEqual([1, expect.stringMatching(/no digests yet: run scripts\/pin-base-images.sh/)]);
    expect(log).not.toMatch(/buildx build/);
  });

  it('refuses an image whose command line nitro-cli could not start, before measuring it', () => {
    const { repo } = repository();
    const docker = () => path.join(dir, 'bin', 'docker');
    // Prepare the stand-ins, then make the image report the old, broken Cmd.
    buildEif(repo);
    fs.writeFileSync(
      docker(),
      fs.readFileSync(docker(), 'utf8').replace('"Cmd":["/nodejs/bin/node","/app/enclave.js"', '"Cmd":["/app/enclave.js"'),
    );
    fs.rmSync(path.join(dir, 'calls.log'));
    fs.rmSync(path.join(dir, 'out'), { recursive: true, force: true });
    const res = spawnSync(
      'bash',
      [path.join(repo, 'scripts/build-eif.sh'), '--config', path.join(dir, 'enclave.json'), '--out', path.join(dir, 'out')],
      { cwd: repo, encoding: 'utf8', env: { ...process.env, PATH: `${path.join(dir, 'bin')}:${process.env.PATH}` } },
    );
    expect([res.status, res.stderr]).toEqual([1, expect.stringMatching(/would not start under nitro-cli/)]);
    expect(fs.readFileSync(path.join(dir, 'calls.log'), 'utf8')).not.toMatch(/nitro-cli build-enclave/);
  });
});
