#!/usr/bin/env bash
# Builds the enclave image (Dockerfile.enclave) and the EIF, and saves the measurements.
#
#   scripts/build-eif.sh --config enclave.json [--out DIR] [--tag TAG]
#
# Output: DIR/nitro-keystore.eif, DIR/measurements.json (nitro-cli's JSON: PCR0, PCR1, PCR2, and beside them
#         SecurityEpoch, the configuration's securityEpoch, and EnclaveMode: genesis without an identity, else
#         normal or migration; nks policy reads both, docs/OPERATIONS.md, "Security epochs") and
#         DIR/build-info.json (what else PCR0 depends on: commit, SOURCE_DATE_EPOCH, base image digests,
#         nitro-cli and nitro-cli-devel versions and the digests of its kernel and init blobs). Default DIR:
#         build/eif. docs/REPRODUCIBLE.md says how a third party rebuilds and compares.
# SOURCE_DATE_EPOCH defaults to the last commit's time, so rebuilding a commit gives the same PCR0.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { printf 'usage: %s --config enclave.json [--out DIR] [--tag TAG]\n' "${0##*/}" >&2; exit 2; }

config="" out="build/eif" tag=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config="${2:-}"; shift 2 ;;
    --out) out="${2:-}"; shift 2 ;;
    --tag) tag="${2:-}"; shift 2 ;;
    -h|--help) usage ;;
    *) printf 'unknown argument: %s\n' "$1" >&2; usage ;;
  esac
done
[[ -n "$config" ]] || usage
[[ -f "$config" ]] || die "configuration $config does not exist (start from deploy/enclave.example.json)"

steps=6
step 1 "$steps" "checking the configuration and the build host's tools"
need jq "Install jq (dnf install jq)."
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
minimum_epoch="$(release_security_epoch "$root")"
epoch="$(config_security_epoch "$config" "$minimum_epoch")"
mode="$(config_mode "$config")"
info "image: $mode, security epoch $epoch"

need docker "Install Docker (with BuildKit/buildx) on the build host."
need nitro-cli "Install aws-nitro-enclaves-cli (sudo dnf install aws-nitro-enclaves-cli; see docs/DEPLOY.md)."
need git "git gives SOURCE_DATE_EPOCH from the last commit."
need node "Node.js runs the image checks (scripts/image-argv.mjs)."
docker buildx version >/dev/null 2>&1 || die "docker buildx is required (BuildKit) to build with fixed timestamps."

cd "$root"
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
export SOURCE_DATE_EPOCH
tag="${tag:-nitro-keystore-enclave:$(git rev-parse --short HEAD)}"

step 2 "$steps" "checking the work tree and the pinned base images"
require_clean_tree "the EIF (and its PCR0)"
read_base_images deploy/base-images.env
[[ "$RESOLVED_AT" != never && -n "$BUILDER_IMAGE" && -n "$RUNTIME_IMAGE" ]] \
  || die "deploy/base-images.env has no digests yet: run scripts/pin-base-images.sh (on a host with registry access) and commit it"
for pair in "$BUILDER_TAG=$BUILDER_IMAGE" "$RUNTIME_TAG=$RUNTIME_IMAGE"; do
  tag_name="${pair%%=*}" pinned="${pair#*=}"
  current="$(resolve_digest "$tag_name" 2>/dev/null || true)"
  if [[ -z "$current" ]]; then
    info "could not look up $tag_name now; building the recorded ${pinned##*@}"
  elif [[ "$current" != "${pinned##*@}" ]]; then
    info "note: $tag_name has moved to $current since $RESOLVED_AT; building the recorded ${pinned##*@} (scripts/pin-base-images.sh moves it on purpose)"
  fi
done

mkdir -p "$out"
cp "$config" deploy/enclave.json
trap 'rm -f "$root/deploy/enclave.json"' EXIT

step 3 "$steps" "building the Docker image $tag"
info "building $tag (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
docker buildx build \
  --file Dockerfile.enclave \
  --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
  --build-arg "BUILDER_IMAGE=$BUILDER_IMAGE" \
  --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" \
  --output "type=docker,name=$tag,rewrite-timestamp=true" \
  --provenance=false \
  .

step 4 "$steps" "checking the image's command line"
# nitro-cli execs the image's Cmd (ignoring Entrypoint): check the built image's argv, and that its first
# element exists in the image, before measuring something that would exit at start.
node scripts/image-argv.mjs --image "$tag" >/dev/null || die "the image's command line would not start under nitro-cli"
container="$(docker create "$tag")"
node_bin="$(docker image inspect "$tag" | jq -r '.[0].Config.Cmd[0]')"
if ! docker export "$container" | tar -tf - | grep -qx "${node_bin#/}"; then
  docker rm "$container" >/dev/null
  die "$node_bin, the first element of the image's Cmd, is not in the image"
fi
docker rm "$container" >/dev/null

step 5 "$steps" "building the EIF and measuring it (nitro-cli build-enclave)"
info "building the EIF"
nitro-cli build-enclave --docker-uri "$tag" --output-file "$out/nitro-keystore.eif" > "$out/nitro-cli-build.json"
write_measurements "$out/nitro-cli-build.json" "$epoch" "$mode" "$out/measurements.json"
rm -f "$out/nitro-cli-build.json"

# What PCR0 depends on besides this repository: nitro-cli's kernel and init blobs (from aws-nitro-enclaves-cli
# and -devel) and the base images. A third party rebuilding needs the same versions.
step 6 "$steps" "recording what PCR0 depends on (build-info.json)"
blobs=/usr/share/nitro_enclaves/blobs
rpm_version() { rpm -q --qf '%{VERSION}-%{RELEASE}' "$1" 2>/dev/null || printf 'unknown'; }
jq -n \
  --arg commit "$(git rev-parse HEAD)" \
  --arg sourceDateEpoch "$SOURCE_DATE_EPOCH" \
  --arg builderImage "$BUILDER_IMAGE" \
  --arg runtimeImage "$RUNTIME_IMAGE" \
  --arg debianSnapshot "$(sed -n 's/^ARG DEBIAN_SNAPSHOT=//p' Dockerfile.enclave)" \
  --arg nitroCli "$(nitro-cli --version 2>&1 | head -n1)" \
  --arg nitroCliRpm "$(rpm_version aws-nitro-enclaves-cli)" \
  --arg nitroCliDevelRpm "$(rpm_version aws-nitro-enclaves-cli-devel)" \
  --arg docker "$(docker version --format '{{.Server.Version}}' 2>/dev/null || printf unknown)" \
  --arg blobs "$( (cd "$blobs" 2>/dev/null && sha256sum -- * ) || printf 'not found in %s' "$blobs")" \
  '{commit: $commit, sourceDateEpoch: $sourceDateEpoch, builderImage: $builderImage, runtimeImage: $runtimeImage,
    debianSnapshot: $debianSnapshot, nitroCli: $nitroCli, nitroCliRpm: $nitroCliRpm, nitroCliDevelRpm: $nitroCliDevelRpm,
    docker: $docker, nitroCliBlobs: ($blobs | split("\n"))}' > "$out/build-info.json"
info "wrote $out/nitro-keystore.eif, $out/measurements.json and $out/build-info.json:"
cat "$out/measurements.json"
case "$mode" in
  genesis) info "next: this is the genesis image: never approve it in the key policy; run it once with scripts/genesis.sh --eif $out/nitro-keystore.eif (see docs/OPERATIONS.md)" ;;
  migration) info "next: a migration image; approve it only for the migration window (scripts/approve-image.sh --migration-window --measurements $out/measurements.json ...)" ;;
  *) info "next: approve these measurements in the key policy (scripts/approve-image.sh --measurements $out/measurements.json ...)" ;;
esac
