#!/usr/bin/env bash
# Builds the enclave image (Dockerfile.enclave) and the EIF, and saves the measurements.
#
#   scripts/build-eif.sh --config enclave.json [--out DIR] [--tag TAG]
#
# Output: DIR/nitro-keystore.eif, DIR/measurements.json (nitro-cli's JSON: PCR0, PCR1, PCR2),
#         DIR/image-digests.txt (the base images used). Default DIR: build/eif.
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

need docker "Install Docker (with BuildKit/buildx) on the build host."
need nitro-cli "Install aws-nitro-enclaves-cli (sudo dnf install aws-nitro-enclaves-cli; see docs/DEPLOY.md)."
need git "git gives SOURCE_DATE_EPOCH from the last commit."
docker buildx version >/dev/null 2>&1 || die "docker buildx is required (BuildKit) to build with fixed timestamps."

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
export SOURCE_DATE_EPOCH
tag="${tag:-nitro-keystore-enclave:$(git rev-parse --short HEAD)}"

mkdir -p "$out"
cp "$config" deploy/enclave.json
trap 'rm -f "$root/deploy/enclave.json"' EXIT

info "building $tag (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
docker buildx build \
  --file Dockerfile.enclave \
  --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
  --output "type=docker,name=$tag,rewrite-timestamp=true" \
  --provenance=false \
  .
grep -E '^FROM ' Dockerfile.enclave | awk '{print $2}' > "$out/image-digests.txt"

info "building the EIF"
nitro-cli build-enclave --docker-uri "$tag" --output-file "$out/nitro-keystore.eif" > "$out/measurements.json"
info "wrote $out/nitro-keystore.eif and $out/measurements.json:"
cat "$out/measurements.json"
info "next: approve these measurements in the key policy (scripts/approve-image.sh --measurements $out/measurements.json ...)"
