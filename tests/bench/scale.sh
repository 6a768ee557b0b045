#!/usr/bin/env bash
# '$VAULT', '$IDENTITY' and '$PID' stay literal until bench() fills them in.
# shellcheck disable=SC2016
# Signet at scale, three measurements with signet-bench against throw-away
# vaults on loopback, then Markdown tables:
#
#   1. reads vs data size: signed reads (closed loop) after adding extra
#      secrets (--extra-secrets) or extra enrolled machines (--extra-machines)
#      to the measured project; a baseline with neither first. A fresh vault
#      per row, so each row has only its own data.
#   2. enrollment throughput: each client enrolls a fresh key with one
#      unlimited enrollment token, again and again (signet --enroll); a fresh
#      vault per concurrency.
#   3. signet-init cold start: the real binary, started R times in init mode,
#      from spawn to exit 0 with ten files written (signet-bench init-start).
#
#   bash tests/bench/scale.sh            # 1k/10k/100k secrets, 100/1k/10k machines, 16 clients,
#                                        # 2 s + 10 s per row; enrollment at 1, 16, 64 clients;
#                                        # 50 init starts (~6 min on 2 cores, most of it setup)
#   bash tests/bench/scale.sh --small    # 1k secrets, 100 machines, 1 s + 5 s per row;
#                                        # enrollment at 1 and 16 clients; 20 init starts (~1 min)
#
# Every command run is printed under its table. Everything started here is
# stopped on exit; tests/bench/run.sh is the comparison with OpenBao.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  cat <<'EOF'
usage: tests/bench/scale.sh [--small] [--secrets "1000 10000 100000"] [--machines "100 1000 10000"]
                            [--clients C] [--duration S] [--warmup S] [--enroll-clients "1 16 64"]
                            [--init-runs R] [--init-bin FILE] [--setup-concurrency K] [--only reads,enroll,init]
                            [--out FILE] [--no-build]

  --small               1k secrets, 100 machines, 5 s measured after 1 s, enrollment at 1 and
                        16 clients, 20 init starts (a quick check of the whole script)
  --secrets LIST        extra secrets per read row (default "1000 10000 100000")
  --machines LIST       extra enrolled machines per read row (default "100 1000 10000")
  --clients C           read clients, one reader machine each (default 16)
  --duration S          measured seconds per read or enrollment run (default 10)
  --warmup S            warm-up seconds per run (default 2)
  --enroll-clients LIST concurrencies of the enrollment runs (default "1 16 64")
  --init-runs R         signet-init starts (default 50)
  --init-bin FILE       the signet-init to start (default: the release build, built alone;
                        the kind image ships target/release-small/signet-init)
  --setup-concurrency K requests in flight while adding the extra data (default 32)
  --only LIST           only these measurements, comma-separated: reads, enroll, init
  --out FILE            also write the Markdown report to FILE
  --no-build            use the release binaries already built
EOF
}

secrets="1000 10000 100000" machines="100 1000 10000" clients=16 duration=10 warmup=2
enroll_clients="1 16 64" init_runs=50 init_bin="" setup_concurrency=32 only="reads,enroll,init" out="" build=1
original_args=("$@")
while (($#)); do
  case $1 in
    --small) secrets=1000 machines=100 duration=5 warmup=1 enroll_clients="1 16" init_runs=20 ;;
    --secrets) secrets=$2; shift ;;
    --machines) machines=$2; shift ;;
    --clients) clients=$2; shift ;;
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --enroll-clients) enroll_clients=$2; shift ;;
    --init-runs) init_runs=$2; shift ;;
    --init-bin) init_bin=$2; shift ;;
    --setup-concurrency) setup_concurrency=$2; shift ;;
    --only) only=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
wants() { [[ ",$only," == *",$1,"* ]]; }

say() { printf '==> [%3ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'scale.sh: %s\n' "$*" >&2; exit 2; }

bin=${CARGO_TARGET_DIR:-target}/release
if ((build)); then
  say "building signet-bench, signet-vault, signet, then signet-init (release)"
  cargo build --release --locked -p signet-bench -p signet-vault -p signet-client >&2
  # On its own, as it ships: built with the others, it would get the
  # features they turn on in shared dependencies (about 1.5 MB more).
  cargo build --release --locked -p signet-init >&2
fi
for b in signet-bench signet-vault signet signet-init; do
  [ -x "$bin/$b" ] || die "$bin/$b missing (run without --no-build)"
done
init_bin=${init_bin:-$bin/signet-init}
[ -x "$init_bin" ] || die "$init_bin is not an executable"

command -v python3 >/dev/null || die "python3 is needed for the tables"

# shellcheck source=tests/bench/signet-vault.sh
source tests/bench/signet-vault.sh
bench_work scale

results=$work/results.jsonl
: >"$results"
failed=0
runs=0

# bench SECTION signet-bench-args...: one run against a fresh vault ($VAULT
# and $IDENTITY in the arguments stand for its address and admin file).
bench() {
  local section=$1 status=0 before after args=() a
  shift
  runs=$((runs + 1))
  vault_dir=$work/vault-$runs
  start_signet_vault "$bin" "$vault_dir" || die "signet-vault did not start"
  for a in "$@"; do
    a=${a//\$VAULT/$vault_addr}
    a=${a//\$IDENTITY/$vault_dir\/admin.json}
    a=${a//\$PID/$vault_pid}
    args+=("$a")
  done
  before=$(loadavg)
  "$bin/signet-bench" --json "${args[@]}" >"$work/run.json" || status=$?
  after=$(loadavg)
  stop_signet_vault
  # Exit 1 still printed its JSON line (some request failed); 2 printed none.
  if ((status != 0)); then
    echo "signet-bench exited $status: $*" >&2
    failed=1
  fi
  [ -s "$work/run.json" ] || return 0
  python3 - "$work/run.json" "$section" "$before" "$after" "$*" >>"$results" <<'EOF'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
r.update(section=sys.argv[2], load_before=sys.argv[3], load_after=sys.argv[4],
         command="signet-bench --json " + sys.argv[5])
print(json.dumps(r))
if r.get("target") == "signet-init":
    print("    %d starts: p50 %.1f ms  p99 %.1f ms  failures %d" % (
        r["runs"], r["p50_ms"] or 0, r["p99_ms"] or 0, r["failures"]), file=sys.stderr)
else:
    print("    %s %d clients, +%d secrets +%d machines (setup %.1f s): %.1f/s  p50 %.3f ms  p99 %.3f ms  errors %d" % (
        r["operation"], r["clients"], r["extra_secrets"], r["extra_machines"], r["setup_s"] or 0,
        r["reads_per_s"], r["p50_ms"] or 0, r["p99_ms"] or 0, r["errors"] + r["warmup_errors"]),
        file=sys.stderr)
for e in r.get("error_samples", []) + r.get("failure_samples", []):
    print("      error:", e, file=sys.stderr)
EOF
}

load_first="$(loadavg)$(busy)"
common=(--duration "$duration" --warmup "$warmup" --server-pid '$PID')
target=(signet --vault '$VAULT' --identity '$IDENTITY' --setup-concurrency "$setup_concurrency")
if wants reads; then
  say "reads, baseline"
  bench reads "${common[@]}" --clients "$clients" "${target[@]}"
  for n in $secrets; do
    say "reads with $n extra secrets"
    bench reads "${common[@]}" --clients "$clients" "${target[@]}" --extra-secrets "$n"
  done
  for m in $machines; do
    say "reads with $m extra machines"
    bench reads "${common[@]}" --clients "$clients" "${target[@]}" --extra-machines "$m"
  done
fi
if wants enroll; then
  for c in $enroll_clients; do
    say "enrollments at $c clients"
    bench enroll "${common[@]}" --clients "$c" "${target[@]}" --enroll
  done
fi
if wants init; then
  say "signet-init, $init_runs starts"
  bench init init-start --vault '$VAULT' --identity '$IDENTITY' --runs "$init_runs" \
    --init-bin "$init_bin"
fi
load_last="$(loadavg)$(busy)"

command_line="bash tests/bench/scale.sh"
for a in "${original_args[@]}"; do command_line+=" $(printf '%q' "$a")"; done
report=$(python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def f(v, fmt="%.2f"):
    return "-" if v is None else fmt % v
def load(r):
    return "%s → %s" % (r["load_before"].split()[0], r["load_after"].split()[0])
def errors(r):
    return str(r["errors"] + r["warmup_errors"])
def commands(section):
    print()
    print("Commands (a fresh vault each; `$VAULT`, `$IDENTITY`, `$PID`: its address, admin file, pid):")
    print()
    for r in rows:
        if r["section"] == section:
            print("    " + r["command"])
    print()

reads = [r for r in rows if r["section"] == "reads"]
if reads:
    r0 = reads[0]
    print("### Signed reads vs data size")
    print()
    print("%d clients (one reader machine each), %g s warm-up + %g s measured per row. Extra "
          "secrets are in the measured project; extra machines are enrolled with a token granting "
          "the read secret." % (r0["clients"], r0["warmup_s"], r0["duration_s"]))
    print()
    print("| extra secrets | extra machines | setup s | reads/s | p50 ms | p99 ms | server cores | µs CPU / read | errors | load 1 min |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in reads:
        print("| %d | %d | %s | %.0f | %s | %s | %s | %s | %s | %s |" % (
            r["extra_secrets"], r["extra_machines"], f(r["setup_s"], "%.1f"), r["reads_per_s"],
            f(r["p50_ms"]), f(r["p99_ms"]), f(r["server_cores"]), f(r["server_cpu_us_per_read"], "%.0f"),
            errors(r), load(r)))
    commands("reads")

enroll = [r for r in rows if r["section"] == "enroll"]
if enroll:
    r0 = enroll[0]
    print("### Enrollment throughput")
    print()
    print("Each client enrolls a fresh Ed25519 key with one enrollment token (unlimited uses, "
          "one grant) on its own kept-alive connection, %g s warm-up + %g s measured. Latency is "
          "from sending the signed request to the whole 201 answer; the key is generated and the "
          "request signed before the clock starts." % (r0["warmup_s"], r0["duration_s"]))
    print()
    print("| clients | enrollments/s | p50 ms | p99 ms | server cores | µs CPU / enrollment | errors | load 1 min |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in enroll:
        print("| %d | %.0f | %s | %s | %s | %s | %s | %s |" % (
            r["clients"], r["reads_per_s"], f(r["p50_ms"]), f(r["p99_ms"]), f(r["server_cores"]),
            f(r["server_cpu_us_per_read"], "%.0f"), errors(r), load(r)))
    commands("enroll")

init = [r for r in rows if r["section"] == "init"]
if init:
    print("### signet-init cold start")
    print()
    print("The real binary (`init` mode, raw enrollment token), one start at a time, from just "
          "before the spawn to exit 0; each start enrolls, reads %d secrets, writes %d files and "
          "the ready marker, and revokes its machine. Nearest-rank percentiles." % (
              init[0]["files"], init[0]["files"]))
    print()
    print("| starts | p50 ms | p90 ms | p99 ms | min ms | max ms | first start ms | failures | binary | load 1 min |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in init:
        print("| %d | %s | %s | %s | %s | %s | %s | %d | %s B | %s |" % (
            r["runs"], f(r["p50_ms"], "%.1f"), f(r["p90_ms"], "%.1f"), f(r["p99_ms"], "%.1f"),
            f(r["min_ms"], "%.1f"), f(r["max_ms"], "%.1f"), f(r["first_ms"], "%.1f"), r["failures"],
            "{:,}".format(r["binary_bytes"] or 0), load(r)))
    for r in init:
        for s in r["failure_samples"]:
            print("- failure: " + s)
    commands("init")
EOF
)
machine="$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1), $(uname -sr)"
dirty=""
[ -z "$(git status --porcelain 2>/dev/null)" ] || dirty=" with uncommitted changes"
build_of="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
{
  echo
  echo "$report"
  echo
  echo "- command: \`$command_line\`"
  echo "- machine: $machine; load average at the start: $load_first; at the end: $load_last"
  echo "- versions: $("$bin/signet-vault" --version) at $build_of, $(rustc --version 2>/dev/null || echo 'rustc ?')"
  echo "- data: $(df -PT "$work" | awk 'NR==2 {print $2}') file system under ${TMPDIR:-/tmp}"
} | tee ${out:+"$out"}

if ((failed)); then
  echo "scale.sh: at least one run had errors (see above)" >&2
  exit 1
fi
