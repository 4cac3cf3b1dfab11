// The enclave's init argv, worked out the way nitro-cli works it out, and checked.
//
//   node scripts/image-argv.mjs --dockerfile Dockerfile.enclave     (from the Dockerfile's final stage)
//   node scripts/image-argv.mjs --image TAG                          (from `docker image inspect TAG`)
//
// nitro-cli (aws-nitro-enclaves-cli, enclave_build/src/docker.rs, `extract_image`) takes the image's `Cmd`
// when it has one and ignores `Entrypoint` entirely; only an image without `Cmd` runs its `Entrypoint`. The
// enclave's init then execs that argv directly: there is no shell, no PATH search worth relying on, and a
// `.js` file cannot be exec'd (its shebang needs /usr/bin/env, which distroless does not have). An image whose
// `Cmd` is `["/app/enclave.js", ...]` on top of a base `Entrypoint` of node starts under Docker and exits at
// once under nitro-cli. docs/DEPLOY.md ("The enclave's command line") explains the rule.
//
// Exit 0 and the argv as JSON on stdout when it is fine; exit 1 with every problem otherwise; 2 on bad usage.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** The node binary in the distroless nodejs runtime image (its own Entrypoint). */
export const NODE_BIN = '/nodejs/bin/node';
/** What the node binary must run: the enclave bundle, from its absolute path. */
export const ENCLAVE_SCRIPT = '/app/enclave.js';

/**
 * An argv as nitro-cli's init would exec it -> the problems with it (none: it starts the enclave program).
 * @param {string[] | null | undefined} argv
 * @returns {string[]}
 */
export function argvProblems(argv) {
  if (!argv || argv.length === 0) return ['the image has neither Cmd nor Entrypoint: nitro-cli refuses it (UnsupportedEntryPoint)'];
  const out = [];
  const [exe, script] = argv;
  if (!exe?.startsWith('/')) out.push(`the first element must be an absolute path to an executable, got ${JSON.stringify(exe)}`);
  else if (/\.(js|mjs|cjs|sh)$/.test(exe))
    out.push(`the first element ${exe} is a script: init cannot exec it in an image without a shell or /usr/bin/env`);
  else if (exe !== NODE_BIN) out.push(`the first element must be the runtime image's node binary ${NODE_BIN}, got ${exe}`);
  if (script !== ENCLAVE_SCRIPT) out.push(`node must run ${ENCLAVE_SCRIPT}, got ${JSON.stringify(script)}`);
  return out;
}

/**
 * nitro-cli's rule on an image configuration (`docker image inspect`'s Config): Cmd if set, else Entrypoint.
 * @param {{ Cmd?: string[] | null, Entrypoint?: string[] | null }} config
 */
export function argvFromImageConfig(config) {
  if (config.Cmd) return config.Cmd;
  return config.Entrypoint ?? null;
}

/**
 * JSON (exec) form -> its array; shell form -> what Docker makes of it (`/bin/sh -c TEXT`).
 * @param {string} text the instruction's argument
 */
function instructionArgv(text) {
  const t = text.trim();
  if (t.startsWith('[')) {
    try {
      const parsed = JSON.parse(t);
      if (Array.isArray(parsed) && parsed.every((x) => typeof x === 'string')) return parsed;
    } catch {
      // Docker treats invalid JSON as shell form
    }
  }
  return ['/bin/sh', '-c', t];
}

/**
 * The final stage's image configuration as far as the Dockerfile decides it. Docker's rules: a stage starts
 * with its base image's Cmd and Entrypoint (not visible here: `inherited`); ENTRYPOINT sets Entrypoint and
 * clears an inherited Cmd; CMD sets Cmd; the last instruction of each kind wins.
 * @param {string} dockerfile
 * @returns {{ Cmd: string[] | null | 'inherited', Entrypoint: string[] | null | 'inherited' }}
 */
export function finalStageConfig(dockerfile) {
  const instructions = dockerfile
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  /** @type {{ Cmd: string[] | null | 'inherited', Entrypoint: string[] | null | 'inherited' }} */
  let config = { Cmd: 'inherited', Entrypoint: 'inherited' };
  for (const line of instructions) {
    const [, op = '', rest = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    switch (op.toUpperCase()) {
      case 'FROM':
        config = { Cmd: 'inherited', Entrypoint: 'inherited' };
        break;
      case 'ENTRYPOINT': {
        const argv = instructionArgv(rest);
        config = { Entrypoint: argv.length ? argv : null, Cmd: config.Cmd === 'inherited' ? null : config.Cmd };
        break;
      }
      case 'CMD': {
        const argv = instructionArgv(rest);
        config = { ...config, Cmd: argv.length ? argv : null };
        break;
      }
    }
  }
  return config;
}

/**
 * The Dockerfile's final stage -> the init argv and its problems.
 * @param {string} dockerfile
 */
export function checkDockerfile(dockerfile) {
  const config = finalStageConfig(dockerfile);
  if (config.Cmd === 'inherited' || (config.Cmd === null && config.Entrypoint === 'inherited')) {
    return {
      argv: null,
      problems: [
        "the final stage must set CMD itself: the base image's Cmd/Entrypoint decide the enclave's argv otherwise, and they are not in this file",
      ],
    };
  }
  const argv = argvFromImageConfig({ Cmd: config.Cmd, Entrypoint: config.Entrypoint === 'inherited' ? null : config.Entrypoint });
  const problems = argvProblems(argv);
  if (config.Entrypoint !== null)
    problems.push(
      'the final stage must clear the Entrypoint (ENTRYPOINT []): nitro-cli ignores it when Cmd is set, Docker does not, and the two must start the same program',
    );
  return { argv, problems };
}

/**
 * `docker image inspect` output (an array of one image) -> the init argv and its problems.
 * @param {unknown} inspect
 */
export function checkImageInspect(inspect) {
  const image = Array.isArray(inspect) ? inspect[0] : inspect;
  const config = /** @type {{ Config?: { Cmd?: string[] | null, Entrypoint?: string[] | null } }} */ (image)?.Config;
  if (!config) return { argv: null, problems: ['docker image inspect gave no Config'] };
  const argv = argvFromImageConfig(config);
  const problems = argvProblems(argv);
  if (config.Entrypoint && config.Entrypoint.length)
    problems.push(`the image still has an Entrypoint (${JSON.stringify(config.Entrypoint)}): clear it with ENTRYPOINT []`);
  return { argv, problems };
}

// Run as a program (not when imported; under Jest's CommonJS transform import.meta.url is not set).
if (import.meta.url && process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { dockerfile: { type: 'string' }, image: { type: 'string' } }, strict: true });
  if (Boolean(values.dockerfile) === Boolean(values.image)) {
    console.error('usage: node scripts/image-argv.mjs (--dockerfile FILE | --image TAG)');
    process.exit(2);
  }
  let result;
  if (values.dockerfile) {
    result = checkDockerfile(readFileSync(values.dockerfile, 'utf8'));
  } else {
    const res = spawnSync('docker', ['image', 'inspect', String(values.image)], { encoding: 'utf8' });
    if (res.status !== 0) {
      console.error(`docker image inspect ${values.image} failed: ${(res.stderr || res.error?.message || '').trim()}`);
      process.exit(1);
    }
    result = checkImageInspect(JSON.parse(res.stdout));
  }
  if (result.problems.length) {
    console.error(
      `the enclave would not start under nitro-cli (init argv ${JSON.stringify(result.argv)}):\n  ${result.problems.join('\n  ')}`,
    );
    process.exit(1);
  }
  console.log(JSON.stringify(result.argv));
}
