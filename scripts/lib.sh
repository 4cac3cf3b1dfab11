# shellcheck shell=bash
# Helpers shared by the operations scripts: strict errors and prerequisite checks that say what is missing.

die() {
  printf '%s: error: %s\n' "${0##*/}" "$*" >&2
  exit 1
}

info() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# step N TOTAL TEXT: the step a long script is on, "[N/TOTAL] TEXT…" on stderr, as the Node tools show theirs
# (shared/src/progress.ts).
step() {
  printf '[%s/%s] %s…\n' "$1" "$2" "${*:3}" >&2
}

# need COMMAND HINT: fails with the hint when COMMAND is not on PATH.
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required but not found. $2"
}

# Writes the nks CLI invocation for this checkout (or an installed nks) to stdout.
nks_cmd() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [[ -f "$here/dist/cli.js" ]]; then
    printf '%s\n' "node $here/dist/cli.js"
  elif command -v nks >/dev/null 2>&1; then
    printf 'nks\n'
  else
    die "the nks CLI is not available: run 'npm ci && npm run build' in the repository, or install nks"
  fi
}

# int_between VALUE MIN MAX: true when VALUE is a decimal integer in [MIN, MAX].
int_between() {
  [[ "$1" =~ ^[0-9]+$ ]] || return 1
  (( $1 >= $2 && $1 <= $3 ))
}

# read_base_images FILE: sets BUILDER_TAG, RUNTIME_TAG, BUILDER_IMAGE, RUNTIME_IMAGE and RESOLVED_AT from
# deploy/base-images.env, reading only those KEY=VALUE lines (the file is data, not a script to source).
# shellcheck disable=SC2034 # the variables it sets are its output
read_base_images() {
  local key value
  BUILDER_TAG="" RUNTIME_TAG="" BUILDER_IMAGE="" RUNTIME_IMAGE="" RESOLVED_AT=""
  while IFS='=' read -r key value; do
    case "$key" in
      BUILDER_TAG) BUILDER_TAG="$value" ;;
      RUNTIME_TAG) RUNTIME_TAG="$value" ;;
      BUILDER_IMAGE) BUILDER_IMAGE="$value" ;;
      RUNTIME_IMAGE) RUNTIME_IMAGE="$value" ;;
      RESOLVED_AT) RESOLVED_AT="$value" ;;
    esac
  done < <(grep -E '^[A-Z_]+=' "$1")
  [[ -n "$BUILDER_TAG" && -n "$RUNTIME_TAG" ]] || die "$1 must name BUILDER_TAG and RUNTIME_TAG"
}

# resolve_digest TAG: the registry's current digest (sha256:...) of TAG's manifest (the multi-platform index).
resolve_digest() {
  docker buildx imagetools inspect "$1" --format '{{json .Manifest}}' | jq -er '.digest | select(test("^sha256:[0-9a-f]{64}$"))'
}

# enclave_state NAME: the State nitro-cli describe-enclaves reports for the enclave named NAME (RUNNING,
# TERMINATING, ...), or nothing when there is none. Parsed as JSON (jq), never by matching text. Call it as
# `state="$(enclave_state NAME)"` so that its failure stops the script (set -e).
enclave_state() {
  local described
  described="$(nitro-cli describe-enclaves)" || die "nitro-cli describe-enclaves failed"
  jq -er --arg name "$1" 'if type == "array" then . else error("not a list of enclaves") end
    | map(select(.EnclaveName == $name)) | (.[0].State // "")' <<< "$described" \
    || die "nitro-cli describe-enclaves gave output that is not a list of enclaves: ${described:0:200}"
}

# require_clean_tree WHAT: refuses to go on when the git work tree has changes (tracked or untracked, not
# ignored): WHAT is built from the work tree but labelled with the commit, so the two must be the same.
require_clean_tree() {
  local changes
  changes="$(git status --porcelain --untracked-files=normal)" || die "git status failed"
  [[ -z "$changes" ]] || die "the work tree has changes that are not committed; $1 would not match the commit it is labelled with:
$changes
(commit or stash them, then build again)"
}

# release_security_epoch ROOT: SECURITY_EPOCH of the checkout at ROOT (shared/src/release.ts): the epoch of an
# enclave configuration that names none, and the lowest one its enclave accepts.
release_security_epoch() {
  local value
  value="$(awk '/^export const SECURITY_EPOCH = [0-9]+;$/ { gsub(/[^0-9]/, ""); print }' "$1/shared/src/release.ts")"
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "cannot read SECURITY_EPOCH from $1/shared/src/release.ts"
  printf '%s\n' "$value"
}

# config_security_epoch CONFIG MINIMUM: the enclave configuration's securityEpoch (MINIMUM when it names none);
# dies when it is not an integer or is below MINIMUM (the enclave would refuse to start with it).
config_security_epoch() {
  local epoch
  epoch="$(jq -r 'if type != "object" then error("not an object") elif has("securityEpoch") then (.securityEpoch | tostring) else "" end' "$1")" \
    || die "$1 is not an enclave configuration (a JSON object)"
  [[ -n "$epoch" ]] || epoch="$2"
  int_between "$epoch" 1 999999999 || die "$1: securityEpoch must be a positive integer, got $epoch"
  (( epoch >= $2 )) || die "$1: securityEpoch $epoch is below this release's $2: the enclave refuses such a configuration"
  printf '%s\n' "$epoch"
}

# config_mode CONFIG: what the image built from CONFIG is: genesis (no identity), normal or migration.
config_mode() {
  local mode
  mode="$(jq -r 'if has("identity") then (.mode // "normal") elif (.mode // "normal") == "normal" then "genesis" else "no-identity" end' "$1")" \
    || die "$1 is not an enclave configuration (a JSON object)"
  case "$mode" in
    genesis|normal|migration) printf '%s\n' "$mode" ;;
    no-identity) die "$1: mode migration needs the identity section (the migration image signs records)" ;;
    *) die "$1: mode must be normal or migration, got $mode" ;;
  esac
}

# write_measurements NITRO_CLI_JSON EPOCH MODE OUT: nitro-cli's measurements with the image's SecurityEpoch and
# EnclaveMode beside them (nks policy reads both), written to OUT.
write_measurements() {
  jq -e --argjson epoch "$2" --arg mode "$3" 'if (.Measurements.PCR0 | type) == "string" then . + {SecurityEpoch: $epoch, EnclaveMode: $mode}
    else error("no Measurements.PCR0") end' "$1" > "$4" || die "nitro-cli's output in $1 has no Measurements.PCR0"
}
