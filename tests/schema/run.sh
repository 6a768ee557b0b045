#!/usr/bin/env bash
# Schemathesis against a throw-away signet-vault, driven by its own
# /v1/openapi.json, every request signed (tests/schema/signet_hooks.py) as
# an admin, then an agent, then a machine. Checks: no 5xx
# (not_a_server_error), and every answer conforms to the document: its
# status code is one the operation lists, its content type, headers and
# body schema are as documented.
#
#   bash tests/schema/run.sh                    # 20 cases per operation and identity (~2.5 min)
#   bash tests/schema/run.sh --quick            # the bounded CI run (~50 s): 2 cases per operation,
#                                               # the coverage phase only as the admin
#   bash tests/schema/run.sh --max-examples 200 --phases examples,coverage,fuzzing,stateful
#
# Schemathesis and cryptography come from PyPI only, by name and pinned
# version, into a venv under the cache directory (SIGNET_SCHEMA_CACHE,
# default ~/.cache/signet-schema), never into the checkout. The vault and
# the CLI are the debug binaries of this checkout (built unless --no-build,
# or taken from --vault-bin DIR). Reports (JUnit, NDJSON, the text output)
# go to --report-dir (default: a temporary directory, copied to
# CACHE/last-report on failure).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

SCHEMATHESIS_VERSION=4.32.5
CRYPTOGRAPHY_VERSION=50.0.2

usage() {
  cat <<'EOF'
usage: tests/schema/run.sh [--max-examples N] [--phases LIST] [--identities "admin agent machine"]
                           [--quick] [--vault-bin DIR] [--no-build] [--report-dir DIR] [--seed N]
EOF
}

max_examples=20 phases="examples,coverage,fuzzing" identities="admin agent machine"
vault_bin="" build=1 report_dir="" seed="" quick=0
while (($#)); do
  case $1 in
    --max-examples) max_examples=$2; shift ;;
    --phases) phases=$2; shift ;;
    --identities) identities=$2; shift ;;
    --vault-bin) vault_bin=$2; build=0; shift ;;
    --no-build) build=0 ;;
    --quick) quick=1 max_examples=2 ;;
    --report-dir) report_dir=$2; shift ;;
    --seed) seed=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

say() { printf '==> [%3ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'schema/run.sh: %s\n' "$*" >&2; exit 2; }

if ((build)); then
  say "building signet-vault and signet (debug)"
  cargo build --locked -q -p signet-vault -p signet-client --bins
fi
vault_bin=${vault_bin:-${CARGO_TARGET_DIR:-target}/debug}
for b in signet-vault signet; do
  [ -x "$vault_bin/$b" ] || die "$vault_bin/$b missing"
done

# --- Schemathesis from PyPI ---------------------------------------------------
cache=${SIGNET_SCHEMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signet-schema}
venv=$cache/schemathesis-$SCHEMATHESIS_VERSION
mkdir -p "$cache"
install_schemathesis() {
  if [ -x "$venv/bin/st" ] && "$venv/bin/python" -c 'import cryptography' 2>/dev/null \
    && "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    return
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  say "installing schemathesis==$SCHEMATHESIS_VERSION cryptography==$CRYPTOGRAPHY_VERSION from PyPI (into $venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
    "schemathesis==$SCHEMATHESIS_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION" >&2
}
if command -v flock >/dev/null; then
  exec 9>"$cache/.lock"
  flock 9
  install_schemathesis
  flock -u 9
else
  install_schemathesis
fi
# The hook's signing must reproduce docs/protocol-vectors.json first.
"$venv/bin/python" tests/schema/signet_hooks.py >&2

# --- A throw-away vault and its identities -----------------------------------
# On tmpfs when there is one: the vault syncs every commit, and a slow disk
# would make this a test of the disk.
tmp=${TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
work=$(mktemp -d "$tmp/signet-schema.XXXXXX")
vault_pid=""
cleanup() {
  local status=$?
  if [ -n "$vault_pid" ]; then
    kill -TERM "$vault_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$vault_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$vault_pid" 2>/dev/null || true
    wait "$vault_pid" 2>/dev/null || true
  fi
  if ((status != 0)) && [ -s "$work/vault.log" ]; then
    echo "--- tail of the vault's log" >&2
    tail -n 30 "$work/vault.log" >&2
  fi
  if ((status != 0)) && [ -z "$report_dir" ] && [ -d "$work/report" ]; then
    rm -rf "$cache/last-report" && cp -r "$work/report" "$cache/last-report"
    echo "reports kept in $cache/last-report" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Copies: a concurrent cargo build must not swap the binaries mid-run.
cp "$vault_bin/signet-vault" "$vault_bin/signet" "$work/"
"$work/signet-vault" root-key >"$work/root.key"
chmod 600 "$work/root.key"
"$work/signet-vault" serve --data-dir "$work/data" --root-key-file "$work/root.key" \
  --listen 127.0.0.1:0 >"$work/vault.out" 2>"$work/vault.log" &
vault_pid=$!
enroll_line() { grep -m1 'admin enroll --token-file' "$work/vault.log"; }
for _ in $(seq 300); do enroll_line >/dev/null 2>&1 && break; sleep 0.1; done
enroll_line >/dev/null || die "signet-vault did not start"
vault_addr=$(enroll_line | sed -n 's/.*--vault \([^ ]*\) admin enroll.*/\1/p')
signet() { "$work/signet" --vault "$vault_addr" "$@" >/dev/null; }
signet admin enroll --token-file "$work/data/bootstrap-token" --out "$work/admin.json"
export SIGNET_IDENTITY=$work/admin.json
# Something for every identity to find: a project, a plain and a structured
# secret, a machine granted both, an agent with every scope.
signet project create demo
printf 'plain-value' | signet secret set demo/api-key --stdin
signet secret set demo/db --field user=app --field password=pw-value
token=$("$work/signet" --vault "$vault_addr" --json token create --project demo --ttl 1h \
  --grant api-key --grant db | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])')
(unset SIGNET_IDENTITY; signet enroll --token "$token" --hostname schema-machine --out "$work/machine.json")
"$work/signet" keygen --out "$work/agent.json" >/dev/null
signet agent create --name schema-agent --key-file "$work/agent.json" \
  --scope metadata --scope tokens --scope grants --scope machines
unset SIGNET_IDENTITY
say "signet-vault at $vault_addr (pid $vault_pid); admin, agent and machine enrolled"

# --- Schemathesis, once per identity -----------------------------------------
report=${report_dir:-$work/report}
mkdir -p "$report"
report=$(cd "$report" && pwd)
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
status=0
for who in $identities; do
  # The coverage phase (boundary values of every parameter) takes most of
  # the time and hardly depends on who signs: --quick runs it once.
  who_phases=$phases
  ((quick)) && [ "$who" != admin ] && who_phases=fuzzing
  say "schemathesis as the $who: $who_phases, up to $max_examples cases per operation"
  exclude=()
  # A machine that revokes itself cannot sign the rest of the run.
  [ "$who" = machine ] && exclude=(--exclude-path /v1/machine/self)
  # From the work directory: Schemathesis keeps its example database in
  # ./.schemathesis, which must not land in the checkout.
  (cd "$work" && SIGNET_SCHEMA_IDENTITY=$work/$who.json SCHEMATHESIS_HOOKS=signet_hooks \
    PYTHONPATH=$repo/tests/schema "$venv/bin/st" run "$vault_addr/v1/openapi.json" --url "$vault_addr" \
    --checks "$checks" --phases "$who_phases" --max-examples "$max_examples" \
    --workers 1 --no-color --warnings off ${seed:+--seed "$seed"} "${exclude[@]}" \
    --report junit,ndjson --report-junit-path "$report/$who.xml" \
    --report-ndjson-path "$report/$who.ndjson") \
    >"$report/$who.txt" 2>&1 || true
  # The cases run and the outcome; the failures in full when there are any.
  grep -A1 '^Test cases:' "$report/$who.txt" | tail -n1 >&2
  sed -n '/^=* FAILURES =*$/,/^Failures:$/p' "$report/$who.txt" >&2
  if ! grep -q "No issues found" "$report/$who.txt"; then
    echo "schemathesis as the $who found failures: $report/$who.txt" >&2
    status=1
  fi
done
exit "$status"
