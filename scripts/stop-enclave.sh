#!/usr/bin/env bash
# Terminates the nitro-keystore enclave (no error when it is not running).
#
#   scripts/stop-enclave.sh [--name NAME]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

name="${NKS_ENCLAVE_NAME:-nitro-keystore}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="${2:-}"; shift 2 ;;
    *) printf 'usage: %s [--name NAME]\n' "${0##*/}" >&2; exit 2 ;;
  esac
done
need nitro-cli "Install aws-nitro-enclaves-cli (docs/DEPLOY.md)."
need jq "Install jq (dnf install jq): nitro-cli's JSON output is parsed with it."
state="$(enclave_state "$name")"
if [[ -n "$state" ]]; then
  nitro-cli terminate-enclave --enclave-name "$name"
else
  info "no enclave named $name is running"
fi
