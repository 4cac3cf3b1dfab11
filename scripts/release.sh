#!/usr/bin/env bash
# Builds the release archive a production host installs: no compiler, no npm install there.
#
#   scripts/release.sh [--out DIR] [--node-major N]
#
# On a build host (or CI) with the same Node major version and architecture as production (AL2023's
# nodejs22: --node-major 22, the default). Output: DIR/nitro-keystore-VERSION-linux-x64-node22.tar.gz and its
# .sha256 (default DIR: build/release). The archive unpacks into /opt/nitro-keystore:
#   dist/parent.js, dist/store-worker.js,          the bundles (npm run build; store-worker.js is the
#   dist/cli.js, dist/enclave.js                   SQLite engine's worker thread, beside parent.js)
#   dist/native/vsock.node                         the vsock addon (enclave/native), loaded beside the bundle
#   dist/redoc.standalone.js, dist/redoc.LICENSE   the API reference page's script (/docs) and its licence
#   node_modules/                                  production dependencies with native parts built here
#                                                  (better-sqlite3) for this Node ABI; nothing else
#   scripts/*.sh, parent/systemd/, deploy/, docs/, README.md, LICENSE, SECURITY.md, CHANGELOG.md,
#   package.json, package-lock.json
# The EIF is built separately (scripts/build-eif.sh) from the same commit. Entries are sorted, owned by 0:0
# and dated SOURCE_DATE_EPOCH (default: the commit's time), so the same inputs give the same archive.
# Beside it, the client package users install (client/README.md, "The package"; npm run build:client, packed):
# DIR/nitro-keystore-client-VERSION.tgz and its .sha256 (npm pack dates its entries 1985-10-26: reproducible).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { printf 'usage: %s [--out DIR] [--node-major N]\n' "${0##*/}" >&2; exit 2; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/build/release" node_major=22
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="${2:-}"; shift 2 ;;
    --node-major) node_major="${2:-}"; shift 2 ;;
    -h|--help) usage ;;
    *) printf 'unknown argument: %s\n' "$1" >&2; usage ;;
  esac
done
int_between "$node_major" 18 99 || die "--node-major must be a Node major version such as 22"

need node "Install Node.js $node_major (the version production runs)."
need npm "npm comes with Node.js."
need git "git gives the version's commit and SOURCE_DATE_EPOCH."
need tar "GNU tar writes the archive."
need gzip "gzip compresses it (without a timestamp: -n)."
have_major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$have_major" == "$node_major" ]] \
  || die "this is Node $have_major, production runs Node $node_major: native addons must be built for the Node that loads them"
[[ "$(uname -m)" == x86_64 ]] || die "build on x86_64 (the Nitro parent instances' architecture)"

cd "$root"
require_clean_tree "the release archive"
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
version="$(node -p 'require("./package.json").version')"
name="nitro-keystore-$version-linux-x64-node$node_major"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

info "building $name (commit $(git rev-parse --short HEAD), SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
npm ci --no-audit --no-fund
npm run build

mkdir -p "$stage/dist/native"
cp dist/parent.js dist/store-worker.js dist/cli.js dist/enclave.js dist/redoc.standalone.js dist/redoc.LICENSE "$stage/dist/"
cp enclave/native/build/Release/vsock.node "$stage/dist/native/vsock.node"
cp package.json package-lock.json README.md LICENSE SECURITY.md CHANGELOG.md "$stage/"
cp -r docs deploy "$stage/"
mkdir -p "$stage/scripts" "$stage/parent"
cp scripts/*.sh "$stage/scripts/"
cp -r parent/systemd "$stage/parent/"
# Production dependencies only, exactly as locked; install scripts run only for the packages the lockfile
# allows (package.json allowScripts), here better-sqlite3's native build.
(cd "$stage" && npm ci --omit=dev --no-audit --no-fund)
(cd "$stage" && node -e 'require("better-sqlite3")(":memory:").close()') \
  || die "better-sqlite3 does not load in the staged release"

mkdir -p "$out"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$stage" -cf - . | gzip -n -9 > "$out/$name.tar.gz"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
info "wrote $out/$name.tar.gz"
cat "$out/$name.tar.gz.sha256"

npm run build:client
out_dir="$(cd "$out" && pwd)"
client_tgz="$(cd dist/client-package && npm pack --silent --pack-destination "$out_dir")"
[[ "$client_tgz" == "nitro-keystore-client-$version.tgz" ]] || die "npm pack wrote $client_tgz, not nitro-keystore-client-$version.tgz"
(cd "$out_dir" && sha256sum "$client_tgz" > "$client_tgz.sha256")
info "wrote $out_dir/$client_tgz"
cat "$out_dir/$client_tgz.sha256"
