/**
 * The local stack (dist/dev.js, run by `npm run dev` and `nks dev`): the KMS emulator, the NSM simulator, the
 * parent and the enclave as separate processes over simulated vsock, provisioned like production on first
 * start: the KMS key, then the keystore identity made by the genesis image and written into the enclave
 * configuration, then the key policy approving that image (identity.ts). A state directory from before 0.4 gets
 * its identity the same way and its keys migrated with the migration image. Prints what it does, and
 * `READY <url>` once /readyz passes; Ctrl-C stops everything.
 *
 *   dev [--dir DIR] [--api-port PORT] [--wallets-port PORT] [--update-policy] [--enclave-bundle FILE]
 *       [--trust-ca PEM]... [--egress-port PORT]... [--idp [--idp-port PORT]]
 *       [--database sqlite|postgres [--database-url URL]] [--instances N]
 *
 * `--api-port 0` listens on any free port: the one chosen is on the READY line (and in <dir>/dev.json).
 *
 * Several instances (docs/STORAGE.md): `--instances N` (1-16; more than one needs `--database postgres`) runs N
 * parent+enclave pairs, each with its own simulated vsock and NSM simulator (instances.ts), on API ports
 * PORT … PORT+N−1 (free ones with `--api-port 0`) and wallets ports likewise, sharing one KMS emulator, one
 * database, the token, the keystore identity (made once, with instance 0's plumbing) and the enclave image. Each
 * pair is announced as `INSTANCE i URL parentPid=N enclavePid=M` before READY (whose URL is instance 0's), and
 * listed in <dir>/dev.json. With more than one instance a parent that dies is started again, on its port, as a
 * service manager would (`RESTARTED i URL parentPid=N enclavePid=M` once it is ready). `--database postgres`
 * starts an embedded PostgreSQL for the stack (database.ts; its data is gone when the stack stops), or uses
 * the server of `--database-url`; SQLite in <dir>/keys.db is the default.
 *
 * The wallet routes (docs/TLS.md) are served by the enclave over TLS that ends there: the parent's ingress relay
 * listens on 127.0.0.1:`--wallets-port` (default 0: a free port) and the dev CA (tls.ts, kept in <dir>/tls/)
 * signs the certificate of the enclave's own key. `WALLETS https://127.0.0.1:PORT` is printed just before READY
 * (and the URL and CA file are in <dir>/dev.json).
 * Orphaned (whatever started it is gone without stopping it), it stops everything as on Ctrl-C.
 *
 * Stopping: SIGINT, SIGTERM or SIGHUP (repeats ignored) stops every process of the stack at once, each killed if
 * it has not exited STOP_GRACE_MS after SIGTERM (a stopped one at once; supervisor.ts), the embedded PostgreSQL once the parents are
 * gone: all within about 2 s. Its pid is in <dir>/dev.pid from the start, and dev.json lists every process
 * (`processes`) once it is READY; both are removed when it stops.
 *
 * JWT projects (docs/PROJECTS.md): the parent's egress relay runs on vsock 3:8001 and, in development only,
 * allows loopback addresses (ports 443 and `--egress-port`). `--trust-ca` puts CAs into the enclave
 * configuration's `jwt.trustedCas` for JWKS servers of your own; `--idp` starts a development identity provider
 * (idp.ts) and trusts its CA. The CAs are what this start's options say: a change rewrites the configuration,
 * so PCR0 changes, and the stack approves the new image itself when the one it replaces was approved.
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { SimulatedIdp } from '../idp/issuer';
import { SimulatedNitroCa } from '../nsm/ca';
import { measureImageFiles } from '../measure';
import { identityOf, makeIdentity, migrateKeys, startNsm, type Phase } from './identity';
import { DEV_IDP_ORIGINS, ensureDevProject, startDevIdp, type DevIdpPaths } from './idp';
import {
  approvedByPolicy,
  DEV_ADMIN_ACCESS_KEY,
  DEV_ADMIN_ROLE,
  DEV_PARENT_ACCESS_KEY,
  DEV_PARENT_ROLE,
  devPaths,
  ensureTokenAndParentConfig,
  provision,
  readCaFile,
  setTrustedCas,
  updatePolicy,
  useRelativeRunDir,
  type Provisioned,
} from './provision';
import { startChild, stopChildren, type Child } from './supervisor';
import { DEV_TLS_IPS, DEV_TLS_NAMES, ensureDevTls, openDevCa } from './tls';
import { openDevDatabase, type DevDatabase } from './database';
import { DEV_INSTANCE_ID, instancePaths, MAX_INSTANCES, prepareInstance, type InstancePaths } from './instances';
import { freePort } from '../free-port';
import { Progress } from '@nks/shared/progress';

const USAGE =
  'usage: dev [--dir DIR] [--api-port PORT] [--wallets-port PORT] [--update-policy] [--no-build] [--trust-ca PEM]... [--egress-port PORT]... [--idp [--idp-port PORT]] [--database sqlite|postgres [--database-url URL]] [--instances N]';

/**
 * The steps of a start, shown on stderr as `[n/N] …` (shared/src/progress.ts): the same on every start, those
 * with nothing to do saying so. The launcher (scripts/dev.mjs) counts its build as one more step before these
 * and says so in NKS_DEV_STEP_OFFSET.
 */
const DEV_STEPS = 7; // scripts/dev.mjs counts them too

/** The steps the launcher did before this program started: 1 (its build) or none. */
function stepOffset(): number {
  return process.env.NKS_DEV_STEP_OFFSET === '1' ? 1 : 0;
}

/** How often a dead parent of a multi-instance stack is started again before the stack gives up. */
const MAX_RESTARTS = 5;

/** The flags of the database and the instances, checked before anything starts. */
function instanceOptions(values: { instances?: string; database?: string; 'database-url'?: string }): {
  count: number;
  database: 'sqlite' | 'postgres';
  databaseUrl: string | undefined;
} {
  const count = Number(values.instances ?? '1');
  if (!/^\d+$/.test(values.instances ?? '1') || count < 1 || count > MAX_INSTANCES)
    throw new Error(`--instances must be a whole number from 1 to ${MAX_INSTANCES}, not "${values.instances}"\n${USAGE}`);
  const database = values.database ?? 'sqlite';
  if (database !== 'sqlite' && database !== 'postgres')
    throw new Error(`--database must be sqlite or postgres, not "${database}"\n${USAGE}`);
  if (count > 1 && database !== 'postgres')
    throw new Error(
      `--instances ${count} needs --database postgres: several instances share one PostgreSQL database, SQLite serves one\n${USAGE}`,
    );
  const databaseUrl = values['database-url'];
  if (databaseUrl !== undefined && database !== 'postgres') throw new Error(`--database-url goes with --database postgres\n${USAGE}`);
  // The value is not repeated: it may hold a password.
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\/\S+$/.test(databaseUrl))
    throw new Error(`--database-url must be a postgres:// or postgresql:// URL\n${USAGE}`);
  return { count, database, databaseUrl };
}

/** A port option's value: a whole number in [min, 65535]. */
function portOption(name: string, value: string, min: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > 65535)
    throw new Error(`${name} must be a port number (${min}-65535), not "${value}"\n${USAGE}`);
  return n;
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

// Whoever reads our output may be gone (a killed terminal or test runner): a write error must not stop us half
// way through stopping the stack.
for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);

/** How long the IdP's server and then the embedded PostgreSQL each get to stop before they are dropped or killed. */
const DB_STOP_GRACE_MS = 500;

/** Waits for `work`, but no longer than `ms` (whatever it does afterwards no longer holds the stop up). */
async function boundedWait(work: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (!work) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string' },
      'api-port': { type: 'string' },
      'wallets-port': { type: 'string' },
      'update-policy': { type: 'boolean' },
      'enclave-bundle': { type: 'string' },
      'no-build': { type: 'boolean' }, // handled by the launcher (scripts/dev.mjs); accepted here too
      'trust-ca': { type: 'string', multiple: true },
      'egress-port': { type: 'string', multiple: true },
      idp: { type: 'boolean' },
      'idp-port': { type: 'string' },
      instances: { type: 'string' },
      database: { type: 'string' },
      'database-url': { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    say(USAGE);
    return 0;
  }
  const apiPort = Number(values['api-port'] ?? 7070);
  if (!Number.isInteger(apiPort) || apiPort < 0 || apiPort > 65535) throw new Error(`--api-port must be a port number\n${USAGE}`);
  const egressPorts = (values['egress-port'] ?? []).map((v) => portOption('--egress-port', v, 1));
  const walletsPortOption = values['wallets-port'] === undefined ? 0 : portOption('--wallets-port', values['wallets-port'], 0);
  if (values['idp-port'] !== undefined && !values.idp) throw new Error(`--idp-port goes with --idp\n${USAGE}`);
  const idpPort = values['idp-port'] === undefined ? undefined : portOption('--idp-port', values['idp-port'], 1);
  const { count, database, databaseUrl } = instanceOptions(values);
  for (const [name, first] of [
    ['--api-port', apiPort],
    ['--wallets-port', walletsPortOption],
  ] as const) {
    if (first > 0 && first + count - 1 > 65535)
      throw new Error(`${name} ${first} with --instances ${count} needs ports up to ${first + count - 1}, beyond 65535\n${USAGE}`);
  }
  // Read and checked before anything starts: a bad file is a clear error, not a stack that cannot fetch.
  const fileCas = (values['trust-ca'] ?? []).flatMap((f) => readCaFile(path.resolve(f)));
  const distDir = __dirname;
  const bundle = path.resolve(values['enclave-bundle'] ?? path.join(distDir, 'enclave.js'));
  for (const f of [bundle, path.join(distDir, 'parent.js'), path.join(distDir, 'kms-emulator.js'), path.join(distDir, 'nsm-sim.js')]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: build first (npm run build), or run npm run dev without --no-build`);
  }

  const p = devPaths(values.dir ?? '.dev');
  fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  fs.mkdirSync(p.runDir, { recursive: true, mode: 0o700 });
  if (fs.existsSync(p.lock)) {
    const pid = Number(fs.readFileSync(p.lock, 'utf8'));
    if (pid && pid !== process.pid && alive(pid))
      throw new Error(`another local stack (pid ${pid}) is using ${p.dir}; stop it first or choose another --dir`);
  }
  fs.writeFileSync(p.lock, String(process.pid));

  const color = process.stdout.isTTY === true;
  const offset = stepOffset();
  const progress = new Progress({ total: offset + DEV_STEPS, offset, source: 'dev' });
  const children: Child[] = [];
  let stopping = false;
  let idp: { idp: SimulatedIdp; paths: DevIdpPaths } | undefined;
  let db: DevDatabase | undefined;
  let stopped: Promise<void> | undefined;
  /**
   * Stops every process of the stack, within about STOP_GRACE_MS + DB_STOP_GRACE_MS of the call however they
   * behave (each is killed at its bound: under 2 s), and removes dev.pid and dev.json. Once: later calls wait
   * for the first.
   */
  const stopAll = () =>
    (stopped ??= (async () => {
      stopping = true;
      // All at once: the parents drain briefly (their api.drainMs, provision.ts), and a terminal's Ctrl-C has
      // already signalled every one of them anyway. The database once the parents are gone, without waiting
      // for the others.
      const parents = children.filter((c) => /^parent\d*$/.test(c.label));
      await Promise.all([
        stopChildren(children.filter((c) => !parents.includes(c))),
        stopChildren(parents).then(() => db?.stop(DB_STOP_GRACE_MS)),
        boundedWait(idp?.idp.close(), DB_STOP_GRACE_MS),
      ]);
      fs.rmSync(p.lock, { force: true });
      fs.rmSync(p.devJson, { force: true });
    })());
  /** An exit from here on stops the stack. */
  const fatalExit = (c: Child) => {
    void c.exited.then((code) => {
      if (stopping) return;
      say(`dev: ${c.label} exited unexpectedly (code ${code}); stopping the stack`);
      void stopAll().then(() => process.exit(1));
    });
  };
  const start = (label: string, script: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string) => {
    const c = startChild(label, path.isAbsolute(script) ? script : path.join(distDir, script), args, { env, print: say, color, cwd });
    children.push(c);
    fatalExit(c);
    return c;
  };
  /** A program of a setup phase (genesis, migration): stopped with the stack, but its exit is expected. */
  const run = (label: string, script: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string) => {
    const c = startChild(label, script, args, { env, print: say, color, cwd });
    children.push(c);
    void c.exited.then(() => {
      const i = children.indexOf(c);
      if (i >= 0) children.splice(i, 1);
    });
    return c;
  };
  let stopRequested = false;
  const stopOn = (why: string) => {
    if (stopRequested) return;
    stopRequested = true;
    say(`dev: ${why}: stopping every process`);
    void stopAll().then(() => {
      say('dev: stopped');
      process.exit(0);
    });
  };
  // `on`, not `once`: a terminal's Ctrl-C reaches this process twice (from the terminal, to the whole process group,
  // and forwarded by scripts/dev.mjs), and a second signal without a listener would kill it half way through.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => stopOn(sig));
  const parentPid = process.ppid;
  setInterval(() => {
    if (process.ppid !== parentPid) stopOn('orphaned (the process that started dev is gone)');
  }, 250).unref();

  try {
    progress.next(`starting the KMS emulator${database === 'postgres' ? ' and PostgreSQL' : ''}`);
    // The simulated Nitro CA comes first: the KMS emulator trusts its root.
    const nsmCaFile = path.join(p.nsmStateDir, 'nsm-ca.json');
    await SimulatedNitroCa.open(nsmCaFile, { instanceId: DEV_INSTANCE_ID });
    db = await openDevDatabase(database, { ...(databaseUrl === undefined ? {} : { url: databaseUrl }), instances: count, say });
    const dbSection = db.section;

    const kms = start('kms', 'kms-emulator.js', [
      '--port',
      '0',
      '--state',
      p.kmsState,
      '--trust-root',
      p.rootPem,
      '--principal',
      DEV_PARENT_ROLE,
      '--access-key',
      `${DEV_ADMIN_ACCESS_KEY}=${DEV_ADMIN_ROLE}`,
    ]);
    const kmsUrl = String((await kms.waitFor('KMS emulator listening')).url);

    let prov: Provisioned;
    progress.next('the KMS key, the enclave configuration and the key policy');
    if (fs.existsSync(p.provision) && fs.existsSync(p.enclaveConfig)) {
      prov = JSON.parse(fs.readFileSync(p.provision, 'utf8')) as Provisioned;
      progress.note(`kept from an earlier start (${p.dir})`);
    } else {
      say(`dev: first start: provisioning ${p.dir} (KMS key, enclave configuration, keystore identity, measurements, key policy)`);
      prov = await provision(kmsUrl, p, { relativeRunDir: count > 1 });
    }
    const parentEnv = {
      NKS_KMS_ENDPOINT: kmsUrl,
      AWS_ACCESS_KEY_ID: DEV_PARENT_ACCESS_KEY,
      AWS_SECRET_ACCESS_KEY: 'dev',
      AWS_REGION: 'us-east-1',
      ...db.env,
    };
    const phase: Phase = { run, say, distDir, bundle, paths: p, parentEnv, kmsUrl };

    let identity = identityOf(p);
    progress.next('the keystore identity');
    if (identity !== undefined) progress.note(`kept: ${identity}`);
    if (identity === undefined) {
      // A genesis image until now (first start, or a state directory from before 0.4).
      ensureTokenAndParentConfig(p, prov.keyArn, apiPort, undefined, [], undefined, { database: dbSection });
      identity = (await makeIdentity(phase)).publicKey;
      prov = await updatePolicy(kmsUrl, bundle, p, prov);
      say(`dev: key policy now approves PCR0 ${prov.approvedPcr0.join(', ')} (the image with the identity)`);
    } else if (values['update-policy']) {
      prov = await updatePolicy(kmsUrl, bundle, p, prov);
      say(`dev: key policy now approves PCR0 ${prov.approvedPcr0.join(', ')}`);
    }

    if (values.idp) {
      idp = await startDevIdp(p.dir, idpPort === undefined ? {} : { port: idpPort });
      say(`dev: identity provider ${idp.idp.issuer} (JWKS ${idp.idp.jwksUri}; its CA in ${idp.paths.caPem})`);
    }
    // The CAs the enclave trusts for JWKS servers are part of its image: a change is a new PCR0, approved here
    // as an operator would approve it, unless the image it replaces was not approved either (then KMS refuses it,
    // and --update-policy approves it, as for any changed image).
    // So is where the enclave finds its vsock: several instances need the relative form (provision.ts), which
    // is kept once made.
    const cas = [...fileCas, ...(idp ? [new X509Certificate(idp.idp.caPem).toString()] : [])];
    const replaced = measureImageFiles([bundle, p.enclaveConfig]);
    const relativized = count > 1 && useRelativeRunDir(p);
    const casChanged = setTrustedCas(p, cas);
    if (relativized || casChanged) {
      const what = [
        ...(relativized ? ['finds its simulated vsock in its working directory (one image for every instance)'] : []),
        ...(casChanged
          ? [cas.length ? `trusts ${cas.length} CA(s) for JWKS servers (jwt.trustedCas)` : 'trusts no CA of its own for JWKS servers']
          : []),
      ].join(' and ');
      if ((await approvedByPolicy(kmsUrl, prov.keyArn)).includes(replaced.PCR0)) {
        prov = await updatePolicy(kmsUrl, bundle, p, prov);
        say(`dev: the enclave configuration now ${what}; its new image is approved (key policy: PCR0 ${prov.approvedPcr0.join(', ')})`);
      } else {
        say(`dev: the enclave configuration now ${what}; the image it replaces was not approved, so neither is this one`);
      }
    }
    const ca = await openDevCa(p.dir);
    if (ca.created) say(`dev: made the dev CA for the wallet routes' TLS (${ca.paths.caPem}; its key beside it, mode 0600)`);
    const instances = Array.from({ length: count }, (_, i) => instancePaths(p, i));
    /** The single-instance stack's labels as before; `parent1`, `enclave1`, `nsm1` for instance 1 of several. */
    const labelOf = (kind: string, ip: InstancePaths) => (count === 1 ? kind : `${kind}${ip.index}`);
    const parentConfigFor = (ip: InstancePaths, port: number, walletsPort?: number) =>
      ensureTokenAndParentConfig(
        p,
        prov.keyArn,
        port,
        identity,
        [...egressPorts, ...(idp ? [idp.idp.port] : [])],
        walletsPort === undefined ? undefined : { port: walletsPort, publicUrl: `https://127.0.0.1:${walletsPort}` },
        { file: ip.parentConfig, runDir: ip.runDir, database: dbSection },
      );
    const first = instances[0] as InstancePaths;
    parentConfigFor(first, apiPort); // what `parent migrate` reads; the daemon's, with the relay's port, is written below
    const current = measureImageFiles([bundle, p.enclaveConfig]);
    const approved = await approvedByPolicy(kmsUrl, prov.keyArn);
    const unapproved = !approved.includes(current.PCR0);
    progress.next('keys made before 0.4');
    if (unapproved) {
      progress.note('left as they are: this image is not approved');
      say(
        `dev: WARNING: the enclave image changed since provisioning. Its PCR0 ${current.PCR0} is not approved by the key policy (approved: ${approved.join(', ') || 'none'}).`,
      );
      say('dev: starting it anyway to show what KMS does with it, as it would in AWS (keys made before 0.4 are not migrated meanwhile)');
    } else {
      const migrated = await migrateKeys(phase, prov);
      if (!migrated) progress.note('none without a signed record');
      if (migrated && (migrated.failed > 0 || migrated.remaining > 0)) {
        say(
          `dev: ${migrated.remaining} key(s) could not be migrated (see the log above); they cannot sign until a later start migrates them`,
        );
      }
    }

    interface Pair {
      ip: InstancePaths;
      url: string;
      /** The parent's metrics listener (`/metrics`, `/healthz`, `/readyz`): a free loopback port, new at each start. */
      metricsUrl: string;
      walletsPort: number;
      parent: Child;
      enclave: Child;
      restarts: number;
    }
    /**
     * The pair's parent, its configuration written with `port` and the relay's port: with a wallets port of 0
     * a free port is chosen here, and another one if something took it before the parent bound it.
     */
    const launchParent = async (ip: InstancePaths, port: number, walletsWanted: number) => {
      let walletsPort = walletsWanted;
      for (let attempt = 1; ; attempt++) {
        if (walletsWanted === 0) walletsPort = await freePort();
        parentConfigFor(ip, port, walletsPort);
        const parent = run(labelOf('parent', ip), path.join(distDir, 'parent.js'), ['--config', ip.parentConfig], parentEnv);
        try {
          const ready = await parent.waitFor('parent ready');
          return { parent, walletsPort, url: String(ready.url), metricsUrl: String(ready.metricsUrl ?? '') };
        } catch (err) {
          await parent.stop(); // one that did not report ready in time is not left running
          const taken = parent.lines().some((l) => l.includes('EADDRINUSE') && l.includes(String(walletsPort)));
          if (walletsWanted === 0 && taken && attempt < 3) continue;
          if (taken) throw new Error(`the wallets port ${walletsPort} is in use: free it, or pass another --wallets-port`);
          throw err;
        }
      }
    };
    const readyz = async (url: string, withinMs = 30_000) => {
      const until = Date.now() + withinMs;
      for (;;) {
        const res = await fetch(`${url}/readyz`).catch(() => null);
        if (res?.status === 200) return;
        if (Date.now() > until) throw new Error(`${url}/readyz did not pass within ${withinMs / 1000} s`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const pairs: Pair[] = [];
    const instanceLine = (pair: Pair) =>
      `${pair.ip.index} ${pair.url} parentPid=${pair.parent.process.pid} enclavePid=${pair.enclave.process.pid}`;
    let writeDevJson = () => undefined as void;
    /**
     * A parent's exit stops the stack of one instance, as before. Of several, the parent is started again on its
     * ports, as a service manager would, while the other instances keep serving: after 0.5 s, then backing off
     * to 8 s while it does not get as far as listening (a parent refuses to start while the database does not
     * answer), and the stack stops after MAX_RESTARTS such attempts in a row. `RESTARTED` is printed once its
     * /readyz passes.
     */
    const supervise = (pair: Pair) => {
      const { parent } = pair;
      void parent.exited.then(async (code) => {
        if (stopping) return;
        const how = parent.process.signalCode ?? `code ${code}`;
        if (count === 1) {
          say(`dev: ${parent.label} exited unexpectedly (${how}); stopping the stack`);
          void stopAll().then(() => process.exit(1));
          return;
        }
        say(`dev: ${parent.label} exited unexpectedly (${how})`);
        for (let attempt = 1; ; attempt++) {
          if (attempt > MAX_RESTARTS) {
            say(`dev: ${parent.label} did not start again in ${MAX_RESTARTS} attempts; stopping the stack`);
            void stopAll().then(() => process.exit(1));
            return;
          }
          const delay = Math.min(8_000, 500 * 2 ** (attempt - 1));
          say(`dev: starting ${parent.label} again in ${delay} ms (attempt ${attempt} of ${MAX_RESTARTS})`);
          await new Promise((r) => setTimeout(r, delay));
          if (stopping) return;
          try {
            const again = await launchParent(pair.ip, Number(new URL(pair.url).port), pair.walletsPort);
            pair.parent = again.parent;
            pair.metricsUrl = again.metricsUrl;
            pair.restarts++;
            break;
          } catch (err) {
            if (stopping) return;
            say(`dev: ${parent.label} could not be started again: ${(err as Error).message}`);
          }
        }
        const current = pair.parent;
        supervise(pair);
        // Ready when its enclave and database are: however long that takes, unless it exits meanwhile.
        while (!stopping && current.process.exitCode === null && current.process.signalCode === null) {
          try {
            await readyz(pair.url, 5_000);
            writeDevJson();
            say(`RESTARTED ${instanceLine(pair)}`);
            return;
          } catch {
            /* not yet */
          }
        }
      });
    };
    /** One parent+enclave pair on its own simulated vsock and NSM simulator; resolves once its /readyz passes. */
    const startPair = async (ip: InstancePaths): Promise<Pair | undefined> => {
      prepareInstance(p, ip);
      if (ip.index === 0) progress.next('starting the NSM simulator and the parent');
      const nsm = await startNsm(phase, [bundle, p.enclaveConfig], ip, labelOf('nsm', ip));
      // From here on, an exit of the NSM simulator is not expected.
      fatalExit(nsm);
      const portOf = (first: number) => (first === 0 ? 0 : first + ip.index);
      const launched = await launchParent(ip, portOf(apiPort), portOf(walletsPortOption));
      if (ip.index === 0) progress.next('starting the enclave: unsealing the keystore identity, then /readyz');
      // A bundle given with --enclave-bundle runs from elsewhere, without the image's native/ beside it: it signs
      // with the addon this checkout built (enclave/crypto/secp256k1.ts takes NKS_SECP256K1_ADDON first).
      const addon = values['enclave-bundle']
        ? { NKS_SECP256K1_ADDON: path.join(distDir, '..', 'enclave', 'native', 'build', 'Release', 'secp256k1.node') }
        : {};
      const enclave = start(labelOf('enclave', ip), bundle, ['--config', p.enclaveConfig], addon, ip.runDir);
      const pair: Pair = {
        ip,
        url: launched.url,
        metricsUrl: launched.metricsUrl,
        walletsPort: launched.walletsPort,
        parent: launched.parent,
        enclave,
        restarts: 0,
      };
      supervise(pair);
      const started = await enclave.waitFor(
        (e) => e.msg === 'enclave ready' || (unapproved && String(e.msg).startsWith('could not unseal the keystore identity')),
        60_000,
      );
      if (started.msg !== 'enclave ready') {
        say(
          `dev: the enclave could not unseal the keystore identity: ${String(started.code)}: ${String(started.reason)}. To approve the new measurements: npm run dev -- --update-policy`,
        );
        return undefined;
      }
      await readyz(pair.url);
      return pair;
    };

    // Instance 0 first, whole: the JWT project and the wallet routes' TLS key it stores are there for the others.
    const pair0 = await startPair(first);
    if (!pair0) {
      await stopAll();
      return 1;
    }
    pairs.push(pair0);
    progress.next(`getting ready: the wallet routes' TLS certificate${count > 1 ? `, ${count - 1} more instance(s)` : ''}`);
    const url = pair0.url;
    const walletsUrl = `https://127.0.0.1:${pair0.walletsPort}`;
    const token = fs.readFileSync(p.token, 'utf8').trim();
    let idpInfo: Record<string, unknown> | undefined;
    if (idp) {
      const project = await ensureDevProject(url, token, idp.idp, idp.paths);
      const tokenUrl = `${idp.idp.issuer}/token?sub=alice`;
      idpInfo = {
        issuer: idp.idp.issuer,
        audience: idp.idp.audience,
        jwksUri: idp.idp.jwksUri,
        caPem: idp.paths.caPem,
        tokenUrl,
        projectId: project.projectId,
        projectKey: project.projectKey,
        signerUrl: `${walletsUrl}/v1/${project.projectKey}`,
        allowedOrigins: DEV_IDP_ORIGINS,
      };
      say(
        `dev: JWT project ${project.projectId} (${project.created ? 'created now' : 'kept'}), project key ${project.projectKey}, issuer ${idp.idp.issuer}, audience ${idp.idp.audience}, origins ${DEV_IDP_ORIGINS.join(' ')}`,
      );
      say(`dev: TrueWallet JWT signer URL ${walletsUrl}/v1/${project.projectKey} (trust the dev CA ${ca.paths.caPem})`);
      say(`dev: a user's JWT (development only): curl -s --cacert ${idp.paths.caPem} '${tokenUrl}'`);
    }
    // The wallet routes' TLS: the enclave's own key, a certificate of the dev CA (made once, kept across restarts).
    const tls = await ensureDevTls(url, token, ca);
    say(
      `dev: wallet routes served by the enclave at ${walletsUrl} over TLS with its own key (${tls.outcome === 'made' ? 'made now' : 'kept'}; certificate for ${[...DEV_TLS_NAMES, ...DEV_TLS_IPS].join(', ')} from the dev CA ${ca.paths.caPem}, until ${tls.notAfter}); check it with: nks tls verify`,
    );
    // The other instances: the same TLS key (stored in the shared database), which each parent installs in its
    // enclave once connected.
    const others = await Promise.all(
      instances.slice(1).map(async (ip) => {
        const pair = await startPair(ip);
        if (pair) await ensureDevTls(pair.url, token, ca);
        return pair;
      }),
    );
    if (others.some((o) => o === undefined)) {
      await stopAll();
      return 1;
    }
    pairs.push(...(others as Pair[]));
    if (count > 1) {
      const ports = pairs.map((x) => `https://127.0.0.1:${x.walletsPort}`).join(' ');
      say(`dev: ${count} instances share ${db.describe.kind === 'postgres' ? db.describe.url : 'the database'}; wallet routes at ${ports}`);
    }
    const wallets = { url: walletsUrl, port: pair0.walletsPort, caPem: ca.paths.caPem, fingerprint256: tls.fingerprint256 };
    writeDevJson = () => {
      if (stopping) return;
      const listed = pairs.map((x) => ({
        index: x.ip.index,
        url: x.url,
        metricsUrl: x.metricsUrl,
        parentPid: x.parent.process.pid,
        enclavePid: x.enclave.process.pid,
        walletsUrl: `https://127.0.0.1:${x.walletsPort}`,
        runDir: x.ip.runDir,
        parentConfig: x.ip.parentConfig,
      }));
      fs.writeFileSync(
        p.devJson,
        `${JSON.stringify(
          {
            url,
            dir: p.dir,
            kmsUrl,
            keyArn: prov.keyArn,
            pcr0: current.PCR0,
            identity,
            rootPem: p.rootPem,
            pid: process.pid,
            wallets,
            ...(idpInfo ? { idp: idpInfo } : {}),
            database: db?.describe,
            instances: listed,
            // Every process of the stack besides this one (whose pid is also in dev.pid): what Ctrl-C stops.
            processes: [
              ...children.map((c) => ({ label: c.label, pid: c.process.pid })),
              ...(db?.pid === undefined ? [] : [{ label: 'postgres', pid: db.pid }]),
            ],
          },
          null,
          2,
        )}\n`,
      );
    };
    writeDevJson();
    say(`dev: caller token in ${p.token}; nks reads it (and the URL) from ${p.dir}`);
    for (const pair of pairs) say(`INSTANCE ${instanceLine(pair)}`);
    say(`WALLETS ${walletsUrl}`);
    say(`READY ${url}`);
    return -1; // keep running until a signal
  } catch (err) {
    say(`dev: ${(err as Error).message}`);
    await stopAll();
    return 1;
  }
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`dev: ${(err as Error).message}\n`);
    process.exit(2);
  },
);
