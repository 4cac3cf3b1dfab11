/** Global setup of `npm run check:ops`: every system tool its tests run is on PATH, or the run stops naming them. */
const { spawnSync } = require('node:child_process');

/** Each tool, and the Debian package that has it. */
const TOOLS = {
  shellcheck: 'shellcheck',
  'systemd-analyze': 'systemd',
  jq: 'jq',
  openssl: 'openssl',
  git: 'git',
  bash: 'bash',
};

/** Throws naming the tools missing from `env.PATH` and their packages. */
function checkTools(env = process.env) {
  const missing = Object.keys(TOOLS).filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status !== 0);
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((t) => TOOLS[t]))].join(' ');
  throw new Error(`npm run check:ops needs ${missing.join(', ')}, not found on PATH. On Debian or Ubuntu: apt-get install ${packages}`);
}

module.exports = async function toolsPresent() {
  checkTools();
};
module.exports.checkTools = checkTools;
