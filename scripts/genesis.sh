#!/usr/bin/env bash
# Genesis, the host part (docs/OPERATIONS.md, "Genesis"): runs the genesis image once, has it make the keystore
# identity, writes what it answers to a file, and terminates it.
#
#   scripts/genesis.sh --eif FILE --nonce 0xHEX --out FILE [--config FILE] [--env FILE] [--name NAME]
#                      [--parent-js FILE]
#
# --eif      the genesis image: built by scripts/build-eif.sh from a configuration without `identity`
#            (its measurements say "EnclaveMode": "genesis"); it is never approved in the key policy
# --nonce    1-512 bytes of 0x-prefixed hex that YOU chose, off this host: the genesis document must carry it,
#            which shows it was made for this run and not replayed
# --out      where the genesis output goes (it must not exist): {publicKey, blob, attestation, defaultProject,
#            nonce}; the blob opens only in an attested enclave, nothing in the file is secret
# --config   the parent configuration (default /etc/nitro-keystore/parent.json): its enclave address must dial
#            the CID below
# --env      CID, CPUs and memory as for scripts/run-enclave.sh (default /etc/nitro-keystore/enclave-run.env)
# --name     the enclave's name (default nitro-keystore-genesis)
#
# Nothing made here is trusted yet: verify the output OFF this host with
#   nks genesis verify OUT --pcr0 <the genesis image's PCR0, reproduced> --nonce 0xHEX --out identity.json
# and put the identity section it writes into the configuration of the normal image.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  printf 'usage: %s --eif FILE --nonce 0xHEX --out FILE [--config FILE] [--env FILE] [--name NAME] [--parent-js FILE]\n' "${0##*/}" >&2
  exit 2
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eif="" nonce="" out="" config="/etc/nitro-keystore/parent.json" env_file="/etc/nitro-keystore/enclave-run.env"
name="nitro-keystore-genesis" parent_js="$root/dist/parent.js"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --eif) [[ $# -ge 2 ]] || usage; eif="$2"; shift 2 ;;
    --nonce) [[ $# -ge 2 ]] || usage; nonce="$2"; shift 2 ;;
    --out) [[ $# -ge 2 ]] || usage; out="$2"; shift 2 ;;
    --config) [[ $# -ge 2 ]] || usage; config="$2"; shift 2 ;;
    --env) [[ $# -ge 2 ]] || usage; env_file="$2"; shift 2 ;;
    --name) [[ $# -ge 2 ]] || usage; name="$2"; shift 2 ;;
    --parent-js) [[ $# -ge 2 ]] || usage; parent_js="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) printf 'unknown argument: %s\n' "$1" >&2; usage ;;
  esac
done
[[ -n "$eif" && -n "$nonce" && -n "$out" ]] || usage
[[ "$nonce" =~ ^0x([0-9a-fA-F]{2}){1,512}$ ]] || die "--nonce must be 1-512 bytes of 0x-prefixed hex (choose it off this host: openssl rand -hex 32)"
[[ ! -e "$out" ]] || die "$out exists: genesis never replaces an earlier output (it may hold the identity in use)"
[[ -f "$eif" ]] || die "EIF $eif does not exist (scripts/build-eif.sh builds it from a configuration without identity)"
[[ -f "$config" ]] || die "parent configuration $config does not exist"
[[ -f "$parent_js" ]] || die "$parent_js does not exist (the release archive's dist/parent.js)"
if [[ -f "$env_file" ]]; then
  # shellcheck source=/dev/null
  source "$env_file"
fi
: "${NKS_ENCLAVE_CID:?NKS_ENCLAVE_CID is not set: the CID the parent configuration dials}"
: "${NKS_ENCLAVE_CPUS:=2}"
: "${NKS_ENCLAVE_MEMORY_MIB:=1024}"
int_between "$NKS_ENCLAVE_CID" 4 4294967294 || die "NKS_ENCLAVE_CID must be a number from 4 to 4294967294 (0-3 are reserved)"
int_between "$NKS_ENCLAVE_CPUS" 2 1024 || die "NKS_ENCLAVE_CPUS must be 2 or more (whole cores)"
int_between "$NKS_ENCLAVE_MEMORY_MIB" 64 1048576 || die "NKS_ENCLAVE_MEMORY_MIB must be at least 64"

steps=4
step 1 "$steps" "checking the tools and that CID $NKS_ENCLAVE_CID is free"
need nitro-cli "Install aws-nitro-enclaves-cli and enable the allocator (docs/DEPLOY.md)."
need jq "Install jq (dnf install jq): nitro-cli's JSON output is parsed with it."
need node "Node.js runs the parent program's genesis command."

# The CID must be free: a running keystore enclave there would have to be stopped first (genesis comes before
# the services are started).
described="$(nitro-cli describe-enclaves)" || die "nitro-cli describe-enclaves failed"
holder="$(jq -er --argjson cid "$NKS_ENCLAVE_CID" 'if type == "array" then . else error("not a list of enclaves") end
  | map(select(.EnclaveCID == $cid)) | (.[0].EnclaveName // "")' <<< "$described")" \
  || die "nitro-cli describe-enclaves gave output that is not a list of enclaves: ${described:0:200}"
[[ -z "$holder" ]] || die "enclave $holder runs with CID $NKS_ENCLAVE_CID: stop it first (scripts/stop-enclave.sh --name $holder)"

started=0
cleanup() {
  if (( started )); then
    step 4 "$steps" "terminating the genesis enclave $name"
    nitro-cli terminate-enclave --enclave-name "$name" >/dev/null || info "WARNING: could not terminate $name: run nitro-cli terminate-enclave --enclave-name $name"
  fi
}
trap cleanup EXIT

# Never --debug-mode: a debug enclave's document has all-zero PCRs, which no verifier accepts as the genesis image.
step 2 "$steps" "starting the genesis enclave"
info "starting the genesis enclave $name (CID $NKS_ENCLAVE_CID, $NKS_ENCLAVE_CPUS CPUs, $NKS_ENCLAVE_MEMORY_MIB MiB)"
started=1
nitro-cli run-enclave --eif-path "$eif" --enclave-cid "$NKS_ENCLAVE_CID" --cpu-count "$NKS_ENCLAVE_CPUS" \
  --memory "$NKS_ENCLAVE_MEMORY_MIB" --enclave-name "$name" >/dev/null

step 3 "$steps" "asking it for a new keystore identity (parent genesis)"
info "asking it for a new keystore identity (nonce $nonce)"
node "$parent_js" genesis --config "$config" --nonce "$nonce" --out "$out" >/dev/null \
  || die "the parent's genesis command failed (its reason is above); nothing was written to $out"
public_key="$(jq -er '.publicKey' "$out")" || die "$out holds no publicKey"

info "genesis done: keystore identity $public_key, output in $out"
info "next, OFF this host (copy $out and keep your nonce):"
info "  1. reproduce the genesis image's PCR0 from the same commit and configuration (docs/REPRODUCIBLE.md)"
info "  2. nks genesis verify $out --pcr0 <genesis PCR0> --nonce $nonce --out identity.json"
info "  3. merge identity.json into the enclave configuration, build the normal image, back up the configuration"
info "     and publish the genesis document with the PCR0s (docs/OPERATIONS.md)"
