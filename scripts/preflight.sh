#!/usr/bin/env bash
# First-host preflight: checks a Nitro instance before it serves, and prints a checklist with PASS, FAIL or
# SKIP per line. Run it as the operator on the parent instance after installing (docs/DEPLOY.md, "Preflight").
#
#   scripts/preflight.sh --eif FILE --measurements FILE --key-arn ARN --api-url URL --token-file FILE
#                        [--identity 0xKEY|FILE] [--env FILE] [--admin-profile NAME] [--skip-debug] [--skip-start]
#
#   --eif, --measurements  the release's EIF and its measurements.json (scripts/build-eif.sh)
#   --key-arn              the KMS key the enclave seals to
#   --api-url, --token-file  the parent's caller API and a token with keys:create and keys:sign (canary)
#   --identity             the keystore identity from genesis (its public key, or identity.json): the enclave
#                          must attest it holds it, and the canary's record must be signed by it
#   --env                  enclave-run.env (default /etc/nitro-keystore/enclave-run.env): CPUs, memory, CID
#   --admin-profile        an AWS CLI profile of a key administrator: the negative checks run as it too
#   --skip-debug           no debug-mode start (it needs the enclave stopped and spare allocator memory)
#   --skip-start           do not (re)start the systemd units; check the running service only
#
# Checks: tool versions; allocator memory against the EIF (memory >= 4 x EIF size); one debug-mode start
# read through `nitro-cli console`; one production start and /readyz; the keystore identity; a canary create
# (its record and birth attestation checked) and sign; and the
# negative checks: plain `aws kms decrypt` and `aws kms re-encrypt` (no attestation) as the instance role and
# as an administrator must be denied, and `aws kms create-grant` as an administrator too. Exit 0 when no line
# failed, 1 otherwise, 2 on bad usage.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  printf 'usage: %s --eif FILE --measurements FILE --key-arn ARN --api-url URL --token-file FILE [--identity 0xKEY|FILE] [--env FILE] [--admin-profile NAME] [--skip-debug] [--skip-start]\n' "${0##*/}" >&2
  exit 2
}

eif="" measurements="" key_arn="" api_url="" token_file="" env_file="/etc/nitro-keystore/enclave-run.env"
admin_profile="" identity="" skip_debug=0 skip_start=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --eif) eif="${2:-}"; shift 2 ;;
    --measurements) measurements="${2:-}"; shift 2 ;;
    --key-arn) key_arn="${2:-}"; shift 2 ;;
    --api-url) api_url="${2:-}"; shift 2 ;;
    --token-file) token_file="${2:-}"; shift 2 ;;
    --identity) identity="${2:-}"; shift 2 ;;
    --env) env_file="${2:-}"; shift 2 ;;
    --admin-profile) admin_profile="${2:-}"; shift 2 ;;
    --skip-debug) skip_debug=1; shift ;;
    --skip-start) skip_start=1; shift ;;
    -h|--help) usage ;;
    *) printf 'unknown argument: %s\n' "$1" >&2; usage ;;
  esac
done
[[ -n "$eif" && -n "$measurements" && -n "$key_arn" && -n "$api_url" && -n "$token_file" ]] || usage

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results=()
failed=0
pass() { results+=("PASS  $1"); info "PASS  $1"; }
fail() { results+=("FAIL  $1"); info "FAIL  $1"; failed=$((failed + 1)); }
skip() { results+=("SKIP  $1"); info "SKIP  $1"; }

# version_at_least HAVE WANT: true when dotted version HAVE >= WANT.
version_at_least() {
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}
# first_version TEXT: the first dotted version number in TEXT.
first_version() { grep -oE '[0-9]+(\.[0-9]+)+' <<< "$1" | head -n1; }

check_tool() { # NAME MIN COMMAND...
  local name="$1" min="$2" out have
  shift 2
  if ! out="$("$@" 2>&1)"; then fail "$name >= $min: not available ($*)"; return; fi
  have="$(first_version "$out")"
  if [[ -n "$have" ]] && version_at_least "$have" "$min"; then pass "$name $have (>= $min)"; else fail "$name >= $min: found ${have:-no version} ($*)"; fi
}

# --- 1. tools ---------------------------------------------------------------------------------------------
check_tool "docker buildx" 0.13 docker buildx version
check_tool "nitro-cli" 1.2 nitro-cli --version
check_tool "node" 22.0 node --version
check_tool "aws cli" 2.0 aws --version
check_tool "jq" 1.6 jq --version
if command -v curl >/dev/null 2>&1; then pass "curl"; else fail "curl (needed for /readyz)"; fi

# --- 2. memory against the EIF ------------------------------------------------------------------------------
NKS_ENCLAVE_MEMORY_MIB="" NKS_ENCLAVE_CPUS=""
if [[ -f "$env_file" ]]; then
  # shellcheck source=/dev/null
  source "$env_file"
fi
if [[ ! -f "$eif" ]]; then
  fail "EIF $eif exists"
elif ! int_between "${NKS_ENCLAVE_MEMORY_MIB:-}" 64 1048576; then
  fail "enclave memory: NKS_ENCLAVE_MEMORY_MIB in $env_file must be a number of MiB, at least 64 (got '${NKS_ENCLAVE_MEMORY_MIB:-}')"
else
  eif_mib=$(( ($(stat -c %s "$eif") + 1048575) / 1048576 ))
  if (( NKS_ENCLAVE_MEMORY_MIB >= 4 * eif_mib )); then
    pass "enclave memory ${NKS_ENCLAVE_MEMORY_MIB} MiB >= 4 x EIF (${eif_mib} MiB)"
  else
    fail "enclave memory ${NKS_ENCLAVE_MEMORY_MIB} MiB < 4 x EIF (${eif_mib} MiB): raise NKS_ENCLAVE_MEMORY_MIB and memory_mib in /etc/nitro_enclaves/allocator.yaml"
  fi
fi
if [[ -f "$measurements" ]] && pcr0="$(jq -er '.Measurements.PCR0 // .PCR0' "$measurements" 2>/dev/null)"; then
  pass "measurements: PCR0 ${pcr0:0:16}..."
else
  pcr0=""
  fail "measurements $measurements hold a PCR0 (nitro-cli build-enclave output)"
fi

# --- 3. one debug-mode start, read through the console ------------------------------------------------------
if (( skip_debug )); then
  skip "debug-mode start (--skip-debug)"
elif [[ -f "$eif" ]] && int_between "${NKS_ENCLAVE_MEMORY_MIB:-}" 64 1048576; then
  debug_name="nitro-keystore-preflight"
  if nitro-cli run-enclave --eif-path "$eif" --cpu-count "${NKS_ENCLAVE_CPUS:-2}" --memory "$NKS_ENCLAVE_MEMORY_MIB" \
      --enclave-name "$debug_name" --debug-mode >/dev/null 2>&1; then
    console="$(timeout 60 nitro-cli console --enclave-name "$debug_name" --disconnect-timeout 30 2>&1 || true)"
    nitro-cli terminate-enclave --enclave-name "$debug_name" >/dev/null 2>&1 || true
    # The enclave logs JSON lines; its start line says it listens. An exit shows as the kernel's reboot. In
    # debug mode its PCRs are zero, so KMS refuses to unseal its identity: 'enclave listening' is as far as a
    # normal image gets ('enclave ready' only a genesis image).
    if grep -qE '"msg":"enclave (listening|ready)' <<< "$console"; then
      pass "debug-mode start: the enclave program started (nitro-cli console)"
    else
      fail "debug-mode start: no 'enclave ready' line on the console; its last lines: $(tail -n 5 <<< "$console" | tr '\n' ' ') (nor 'enclave listening': the program did not start)"
    fi
  else
    fail "debug-mode start: nitro-cli run-enclave --debug-mode failed (allocator memory/CPUs? a running enclave?)"
  fi
else
  skip "debug-mode start (no EIF or memory setting)"
fi

# --- 4. production start and /readyz ------------------------------------------------------------------------
if (( skip_start )); then
  skip "production start (--skip-start); checking the running service"
elif systemctl restart nitro-keystore-parent.service nitro-keystore-enclave.service; then
  pass "systemctl restart nitro-keystore-parent nitro-keystore-enclave"
else
  fail "systemctl restart of the units (journalctl -u nitro-keystore-enclave -u nitro-keystore-parent)"
fi
ready=0 waited=0 ready_limit="${NKS_PREFLIGHT_READY_SECONDS:-120}"
while :; do
  if curl -fsS --max-time 5 "$api_url/readyz" >/dev/null 2>&1; then ready=1; break; fi
  (( waited < ready_limit )) || break
  sleep 2
  waited=$((waited + 2))
done
if (( ready )); then pass "$api_url/readyz answers 200"; else fail "$api_url/readyz did not answer 200 within $ready_limit s"; fi

# --- 5. canary create and sign -------------------------------------------------------------------------------
read -r -a nks <<< "$(nks_cmd)"
if [[ ! -r "$token_file" ]]; then
  fail "canary: token file $token_file is not readable"
elif (( ready )); then
  token="$(tr -d '\n' < "$token_file")"
  if created="$(NKS_URL="$api_url" NKS_TOKEN="$token" "${nks[@]}" keys create --label purpose=preflight --attest --json 2>&1)" \
      && key_id="$(jq -er '.keyId' <<< "$created")" && address="$(jq -er '.address' <<< "$created")"; then
    pass "canary create: $key_id ($address)"
    # Born in the approved image: its birth attestation verifies against the Nitro root with this PCR0.
    jq -er '.attestation' <<< "$created" | base64 -d > "$work/birth.cbor" 2>/dev/null || true
    if [[ -n "$pcr0" ]] && "${nks[@]}" attestation verify "$work/birth.cbor" --key-id "$key_id" --address "$address" --pcr "0=$pcr0" >/dev/null 2>&1; then
      pass "canary key born in the approved image (birth attestation, PCR0)"
    else
      fail "canary birth attestation does not verify with PCR0 ${pcr0:0:16}... (nks attestation verify)"
    fi
    if [[ -n "$identity" && -n "$pcr0" ]]; then
      if verified="$("${nks[@]}" keys verify "$key_id" --identity "$identity" --pcr0 "$pcr0" --url "$api_url" --token "$token" 2>&1)"; then
        pass "canary record signed by the keystore identity and agreeing with the API (nks keys verify)"
      else
        fail "canary record: ${verified:0:300}"
      fi
    fi
    if signed="$(NKS_URL="$api_url" NKS_TOKEN="$token" "${nks[@]}" sign "$key_id" --message "nitro-keystore preflight" --json 2>&1)" \
        && jq -e '.signature | test("^0x[0-9a-f]{130}$")' <<< "$signed" >/dev/null; then
      pass "canary sign with $key_id"
    else
      fail "canary sign: ${signed:0:300}"
    fi
  else
    fail "canary create: ${created:0:300}"
  fi
else
  skip "canary create and sign (the API is not ready)"
fi

# --- 5b. the keystore identity ------------------------------------------------------------------------------
if [[ -z "$identity" ]]; then
  skip "keystore identity (give --identity with the public key from genesis, docs/OPERATIONS.md)"
elif (( ready )) && [[ -n "$pcr0" ]]; then
  if held="$("${nks[@]}" identity --pcr0 "$pcr0" --identity "$identity" --url "$api_url" 2>&1)"; then
    pass "the enclave attests it holds the keystore identity (fresh nonce, PCR0)"
  else
    fail "keystore identity: ${held:0:300}"
  fi
else
  skip "keystore identity (the API is not ready, or no PCR0)"
fi

# --- 6. negative checks: no Decrypt or ReEncrypt without attestation -----------------------------------------
# A ciphertext made with the key's public half (what anyone can make): KMS must refuse to open it for anyone
# who is not an attested enclave, whether asked by Decrypt or by ReEncrypt.
# expect_denied WHAT COMMAND...: runs COMMAND (an aws kms call with --dry-run, so nothing happens even if it is
# allowed). PASS when AWS answers AccessDeniedException; FAIL when it would have succeeded
# (DryRunOperationException) or on anything else.
expect_denied() {
  local what="$1" out
  shift
  if out="$("$@" 2>&1)" || grep -q 'DryRunOperationException' <<< "$out"; then
    fail "$what: KMS would allow it (the key policy must deny it; docs/KEY-POLICY.md)"
  elif grep -q 'AccessDeniedException' <<< "$out"; then
    pass "$what: denied"
  else
    fail "$what: expected AccessDeniedException, got: $(head -c 300 <<< "$out")"
  fi
}
if aws kms get-public-key --key-id "$key_arn" --query PublicKey --output text 2>/dev/null | base64 -d > "$work/pub.der" 2>/dev/null \
    && [[ -s "$work/pub.der" ]] \
    && head -c 32 /dev/urandom > "$work/secret" \
    && openssl pkeyutl -encrypt -pubin -keyform DER -inkey "$work/pub.der" -in "$work/secret" -out "$work/ct" \
         -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 2>/dev/null; then
  for who in instance-role ${admin_profile:+admin}; do
    profile=()
    [[ "$who" == admin ]] && profile=(--profile "$admin_profile")
    expect_denied "kms decrypt without attestation as $who" \
      aws "${profile[@]}" kms decrypt --dry-run --key-id "$key_arn" --ciphertext-blob "fileb://$work/ct" --encryption-algorithm RSAES_OAEP_SHA_256
    expect_denied "kms re-encrypt without attestation as $who" \
      aws "${profile[@]}" kms re-encrypt --dry-run --source-key-id "$key_arn" --ciphertext-blob "fileb://$work/ct" \
        --source-encryption-algorithm RSAES_OAEP_SHA_256 --destination-key-id "$key_arn" --destination-encryption-algorithm RSAES_OAEP_SHA_256
  done
  if [[ -n "$admin_profile" ]]; then
    expect_denied "kms create-grant as admin" \
      aws --profile "$admin_profile" kms create-grant --dry-run --key-id "$key_arn" --grantee-principal "$(aws --profile "$admin_profile" sts get-caller-identity --query Arn --output text 2>/dev/null || printf 'arn:aws:iam::000000000000:root')" --operations ReEncryptFrom Decrypt
    # A grant made before the Deny statements were installed would still be listed: there must be none.
    if grants="$(aws --profile "$admin_profile" kms list-grants --key-id "$key_arn" --output json 2>&1)" \
        && [[ "$(jq -r '.Grants | length' <<< "$grants" 2>/dev/null)" == 0 ]]; then
      pass "no grants on the key (aws kms list-grants)"
    else
      fail "grants on the key, or list-grants failed: ${grants:0:300} (revoke them: aws kms revoke-grant)"
    fi
  else
    skip "negative checks as a key administrator (--admin-profile)"
  fi
else
  fail "negative checks: could not make a test ciphertext (aws kms get-public-key as the instance role, openssl)"
fi

# --- checklist -----------------------------------------------------------------------------------------------
printf '\nnitro-keystore preflight on %s (%s)\n' "$(hostname)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf '%s\n' "${results[@]}"
if (( failed )); then
  printf '%d check(s) failed\n' "$failed"
  exit 1
fi
printf 'all checks passed\n'
