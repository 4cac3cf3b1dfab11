#!/usr/bin/env bash
# Resolves the enclave image's base image tags to digests and records them, with the date, in
# deploy/base-images.env (run on a host with registry access; commit the file).
#
#   scripts/pin-base-images.sh [--builder-tag TAG] [--runtime-tag TAG] [--file FILE]
#
# Without --*-tag the tags already in the file are resolved again (to move to a newer base image on purpose).
# A new digest changes PCR0: approve the new measurements (docs/KEY-POLICY.md) before rolling it out.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { printf 'usage: %s [--builder-tag TAG] [--runtime-tag TAG] [--file FILE]\n' "${0##*/}" >&2; exit 2; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
file="$root/deploy/base-images.env" builder_tag="" runtime_tag=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --builder-tag) builder_tag="${2:-}"; shift 2 ;;
    --runtime-tag) runtime_tag="${2:-}"; shift 2 ;;
    --file) file="${2:-}"; shift 2 ;;
    -h|--help) usage ;;
    *) printf 'unknown argument: %s\n' "$1" >&2; usage ;;
  esac
done
[[ -f "$file" ]] || die "$file does not exist"
read_base_images "$file"
builder_tag="${builder_tag:-$BUILDER_TAG}"
runtime_tag="${runtime_tag:-$RUNTIME_TAG}"

need docker "Install Docker with buildx on a host with registry access."
need jq "Install jq (dnf install jq / apt-get install jq)."
docker buildx version >/dev/null 2>&1 || die "docker buildx is required (docker buildx imagetools resolves digests)."

builder_digest="$(resolve_digest "$builder_tag")" || die "cannot resolve $builder_tag"
runtime_digest="$(resolve_digest "$runtime_tag")" || die "cannot resolve $runtime_tag"
resolved_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

tmp="$(mktemp "$file.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
{
  printf '%s\n' "# The enclave image's base images (Dockerfile.enclave: BUILDER_IMAGE, RUNTIME_IMAGE), by digest. Part of PCR0." \
    '# Written by scripts/pin-base-images.sh; scripts/build-eif.sh builds from these digests and reports a tag' \
    '# that has moved since. Commit this file with the measurements it produced.'
  printf 'BUILDER_TAG=%s\nRUNTIME_TAG=%s\n' "$builder_tag" "$runtime_tag"
  printf '# Resolved with docker buildx imagetools on %s.\n' "$resolved_at"
  printf 'BUILDER_IMAGE=%s@%s\nRUNTIME_IMAGE=%s@%s\nRESOLVED_AT=%s\n' "${builder_tag%%@*}" "$builder_digest" "${runtime_tag%%@*}" "$runtime_digest" "$resolved_at"
} > "$tmp"
mv "$tmp" "$file"
trap - EXIT
info "recorded in $file:"
cat "$file" >&2
