// `npm run dev [-- --dir DIR] [--api-port PORT] [--wallets-port PORT] [--no-build] [--update-policy]
//  [--database sqlite|postgres [--database-url URL]] [--instances N]`: builds (unless --no-build),
// then runs the local stack (dist/dev.js) in the foreground: on a first start (or a state directory from before
// 0.4) it makes the keystore identity with the genesis image, and migrates keys made before 0.4 with the
// migration image (sim/src/dev/identity.ts). `--instances N --database postgres` runs N parent+enclave pairs on
// one PostgreSQL (sim/src/dev/instances.ts). Ctrl-C stops it, PostgreSQL included.
//
// Stopping: SIGINT, SIGTERM or SIGHUP to this launcher, to `npm run dev` (package.json runs it with `exec`, so npm's
// child is this process, and npm forwards those signals and waits), or to the pid in <dir>/dev.pid (dist/dev.js)
// stops every process of the stack; this launcher forwards the signal and exits only once dist/dev.js has, so
// whoever waits for either pid finds the stack gone and its ports free.
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
/** The steps dist/dev.js shows (DEV_STEPS in sim/src/dev/main.ts); the build is one more, before them. */
const DEV_STEPS = 7;
const building = !args.includes('--no-build');
if (building) {
  // The first of the start's step lines (shared/src/progress.ts's form, on stderr): dist/dev.js numbers its own
  // after it (NKS_DEV_STEP_OFFSET).
  process.stderr.write(`[1/${DEV_STEPS + 1}] building the bundles (scripts/build.mjs)…\n`);
  const built = spawnSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: 'inherit' });
  if (built.status !== 0) process.exit(built.status ?? 1);
}
const child = spawn(process.execPath, [path.join(root, 'dist', 'dev.js'), ...args], {
  stdio: 'inherit',
  env: { ...process.env, NKS_DEV_STEP_OFFSET: building ? '1' : '0' },
});
/** dist/dev.js stops the stack within about 2 s of a signal; one that has not exited by then is killed. */
const STOP_BOUND_MS = 10_000;
let killTimer;
const stop = (/** @type {NodeJS.Signals} */ sig) => {
  child.kill(sig);
  killTimer ??= setTimeout(() => child.kill('SIGKILL'), STOP_BOUND_MS).unref();
};
// A terminal's Ctrl-C reaches every process of the group (dist/dev.js too, which ignores repeats): forwarding it
// as well is what makes a signal to this pid alone, or to npm's, stop the stack.
for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) process.on(sig, () => stop(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
// If whatever started this launcher goes away without stopping it (a killed terminal or test runner), stop the
// stack rather than leave it running: its parent pid changes when it is orphaned.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) stop('SIGTERM');
}, 250).unref();
