# shellcheck shell=bash
# Helpers shared by the operations scripts: strict errors and prerequisite checks that say what is missing.

die() {
  printf '%s: error: %s\n' "${0##*/}" "$*" >&2
  exit 1
}

info() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
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
