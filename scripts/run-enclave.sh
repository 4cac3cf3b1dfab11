#!/usr/bin/env bash
# Starts the nitro-keystore enclave with a pinned CID, CPUs and memory, then (with --monitor) watches it and
# exits non-zero when it is gone, so systemd restarts it.
#
#   scripts/run-enclave.sh [--env FILE] [--monitor] [--debug-mode]
#
# Settings (environment, or FILE, default /etc/nitro-keystore/enclave-run.env):
#   NKS_EIF, NKS_ENCLAVE_CID, NKS_ENCLAVE_CPUS, NKS_ENCLAVE_MEMORY_MIB, NKS_ENCLAVE_NAME, NKS_MONITOR_INTERVAL
# --debug-mode exposes the enclave console and makes its PCRs all zero: KMS will refuse it under the
# production key policy. Never use it in production.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { printf 'usage: %s [--env FILE] [--monitor] [--debug-mode]\n' "${0##*/}" >&2; exit 2; }

env_file="/etc/nitro-keystore/enclave-run.env" monitor=0 debug=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --env) env_file="${2:-}"; shift 2 ;;
    --monitor) monitor=1; shift ;;
    --debug-mode) debug=1; shift ;;
    -h|--help) usage ;;
    *) printf 'unknown argument: %s\n' "$1" >&2; usage ;;
  esac
done
if [[ -f "$env_file" ]]; then
  # shellcheck source=/dev/null
  source "$env_file"
fi

: "${NKS_EIF:?NKS_EIF (the EIF path) is not set}"
: "${NKS_ENCLAVE_CID:?NKS_ENCLAVE_CID is not set: pin the CID (the parent dials vsock://CID:5000)}"
: "${NKS_ENCLAVE_CPUS:=2}"
: "${NKS_ENCLAVE_MEMORY_MIB:=1024}"
: "${NKS_ENCLAVE_NAME:=nitro-keystore}"
: "${NKS_MONITOR_INTERVAL:=10}"

need nitro-cli "Install aws-nitro-enclaves-cli and enable the allocator (docs/DEPLOY.md)."
need jq "Install jq (dnf install jq): nitro-cli's JSON output is parsed with it."
[[ -f "$NKS_EIF" ]] || die "EIF $NKS_EIF does not exist (scripts/build-eif.sh builds it)"
int_between "$NKS_ENCLAVE_CID" 4 4294967294 || die "NKS_ENCLAVE_CID must be a number from 4 to 4294967294 (0-3 are reserved)"
int_between "$NKS_ENCLAVE_CPUS" 2 1024 || die "NKS_ENCLAVE_CPUS must be 2 or more (whole cores)"
int_between "$NKS_ENCLAVE_MEMORY_MIB" 64 1048576 || die "NKS_ENCLAVE_MEMORY_MIB must be at least 64"
int_between "$NKS_MONITOR_INTERVAL" 1 3600 || die "NKS_MONITOR_INTERVAL must be 1 to 3600 seconds"

# One enclave of this name at a time: a leftover from a crash is terminated first.
state="$(enclave_state "$NKS_ENCLAVE_NAME")"
if [[ -n "$state" ]]; then
  info "terminating the existing enclave $NKS_ENCLAVE_NAME"
  nitro-cli terminate-enclave --enclave-name "$NKS_ENCLAVE_NAME" >/dev/null
fi

args=(run-enclave --eif-path "$NKS_EIF" --enclave-cid "$NKS_ENCLAVE_CID" --cpu-count "$NKS_ENCLAVE_CPUS" --memory "$NKS_ENCLAVE_MEMORY_MIB" --enclave-name "$NKS_ENCLAVE_NAME")
if (( debug )); then
  info "WARNING: debug mode: console exposed, PCRs zero; KMS will refuse this enclave under the production policy"
  args+=(--debug-mode)
fi
info "starting enclave $NKS_ENCLAVE_NAME (CID $NKS_ENCLAVE_CID, $NKS_ENCLAVE_CPUS CPUs, $NKS_ENCLAVE_MEMORY_MIB MiB)"
nitro-cli "${args[@]}"

(( monitor )) || exit 0
info "monitoring every ${NKS_MONITOR_INTERVAL}s"
while sleep "$NKS_MONITOR_INTERVAL"; do
  state="$(enclave_state "$NKS_ENCLAVE_NAME")"
  [[ "$state" == RUNNING ]] || die "enclave $NKS_ENCLAVE_NAME is not running any more (state: ${state:-gone})"
done
