#!/usr/bin/env bash
# '$VAULT', '$IDENTITY' and '$PID' stay literal until bench() fills them in.
# shellcheck disable=SC2016
# Signet under abuse: signed reads (closed loop, 16 reader machines) against
# a throw-away vault, first quiet, then while
#
#   1. an attacker floods it with unauthenticated requests (signet-bench
#      abuse --kind flood): 100,000 attempts on 64 connections as fast as
#      the vault answers, four kinds in turn (no signature headers, garbage
#      headers, an unknown key id, a real machine's id with a signature
#      forged by a random key); the flood's window lasts as long as the
#      flood. An attempt is a request answered, or one whose connection
#      the vault refused or closed before an answer, or one given up after
#      --flood-patience (the vault holds refusals of a source over its
#      budget, see SECURITY.md); each closed or given-up connection is
#      opened again. The audit log is read through the admin API before the flood
#      and after the denial rows are flushed (--denial-flush-seconds,
#      default 10 s).
#
#      The attacker (--attacker netns, the default; needs root) is another
#      host as far as this one machine can play it: the flood runs in a
#      process of its own (signet-bench flood, via --flood-via) inside a
#      network namespace of its own, joined to this one by a veth pair, so
#      it comes from a source address of its own (10.231.N.2; the vault
#      listens on 10.231.N.1, where the readers reach it too, in both
#      windows), and in a cgroup whose CPU is capped (--attacker-cpu,
#      default 50% of one core: cgroup v2 cpu.max, else v1
#      cpu.cfs_quota_us), so that it cannot take the vault's CPU as a
#      remote attacker could not. --attacker same runs the flood on
#      threads of the readers' process, on loopback, uncapped (the earlier
#      setup).
#   2. holds 500 slow connections (--kind slow): half send a request head a
#      byte a second, half send nothing; each one the vault closes is opened
#      again. The vault runs with --header-read-timeout-seconds 3 (default
#      10) so each connection is closed, and reopened, a few times a window.
#
# A fresh vault per case; then a Markdown table and every command run.
#
#   bash tests/bench/abuse.sh                 # both cases, 2 s + 10 s quiet (~2 min)
#   bash tests/bench/abuse.sh --only slow --header-timeout 10
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  cat <<'EOF'
usage: tests/bench/abuse.sh [--clients C] [--duration S] [--warmup S] [--flood-requests N]
                            [--flood-connections K] [--flood-patience S]
                            [--slow-connections K] [--slow-interval S]
                            [--header-timeout S] [--only flood,slow] [--out FILE] [--no-build]
                            [--attacker netns|same] [--attacker-cpu PCT]

  --clients C            signed readers, one machine each (default 16)
  --duration S           measured seconds of the quiet window and of the slow window (default 10)
  --warmup S             warm-up seconds before each window (default 2)
  --flood-requests N     unauthenticated attempts of the flood (default 100000)
  --flood-connections K  connections of the flood (default 64)
  --flood-patience S     seconds the flood waits for an answer before it gives up on the
                         connection and opens another (default 0.25)
  --slow-connections K   slow connections held at once (default 500)
  --slow-interval S      seconds between two bytes of a trickling connection (default 1)
  --header-timeout S     the vault's --header-read-timeout-seconds in the slow case (default 3)
  --only LIST            only these cases, comma-separated: flood, slow
  --out FILE             also write the Markdown report to FILE
  --no-build             use the release binaries already built
  --attacker MODE        netns: the flood from a network namespace and CPU-capped cgroup of
                         its own (default; root); same: on loopback, in the readers' process
  --attacker-cpu PCT     the attacker's CPU cap, percent of one core (default 50; 0: no cap)
EOF
}

clients=16 duration=10 warmup=2 flood_requests=100000 flood_connections=64 flood_patience=0.25
slow_connections=500 slow_interval=1 header_timeout=3 only="flood,slow" out="" build=1
attacker=netns attacker_cpu=50
original_args=("$@")
while (($#)); do
  case $1 in
    --clients) clients=$2; shift ;;
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --flood-requests) flood_requests=$2; shift ;;
    --flood-connections) flood_connections=$2; shift ;;
    --flood-patience) flood_patience=$2; shift ;;
    --slow-connections) slow_connections=$2; shift ;;
    --slow-interval) slow_interval=$2; shift ;;
    --header-timeout) header_timeout=$2; shift ;;
    --only) only=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    --attacker) attacker=$2; shift ;;
    --attacker-cpu) attacker_cpu=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
wants() { [[ ",$only," == *",$1,"* ]]; }

say() { printf '==> [%3ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'abuse.sh: %s\n' "$*" >&2; exit 2; }

bin=${CARGO_TARGET_DIR:-target}/release
if ((build)); then
  say "building signet-bench, signet-vault, signet (release)"
  cargo build --release --locked -p signet-bench -p signet-vault -p signet-client >&2
fi
for b in signet-bench signet-vault signet; do
  [ -x "$bin/$b" ] || die "$bin/$b missing (run without --no-build)"
done
command -v python3 >/dev/null || die "python3 is needed for the tables"
# 500 slow connections, 64 flooding and the readers, on both ends.
if [ "$(ulimit -n)" != unlimited ] && (($(ulimit -n) < 4096)); then
  ulimit -n 4096 2>/dev/null || die "needs 4096 open files (ulimit -n is $(ulimit -n))"
fi

# shellcheck source=tests/bench/signet-vault.sh
source tests/bench/signet-vault.sh
bench_work abuse

# The attacker's network namespace, veth pair and CPU-capped cgroup.
ns="" veth="" cg_cpu="" cg_acct="" attacker_note="" flood_via=()
attacker_down() {
  [ -z "$veth" ] || ip link del "$veth" 2>/dev/null || true
  [ -z "$ns" ] || ip netns del "$ns" 2>/dev/null || true
  local cg
  for cg in "$cg_cpu" "$cg_acct"; do
    if [ -z "$cg" ] || [ ! -d "$cg" ]; then continue; fi
    # Whatever is left in it goes back to the root group first.
    while read -r pid; do echo "$pid" >"${cg%/*}/cgroup.procs" 2>/dev/null || true; done <"$cg/cgroup.procs"
    rmdir "$cg" 2>/dev/null || true
  done
}
attacker_up() {
  local octet=$(($$ % 200 + 20)) host_ip ns_ip quota=$((attacker_cpu * 1000)) procs=()
  [ "$(id -u)" = 0 ] || die "--attacker netns needs root (or use --attacker same)"
  command -v ip >/dev/null || die "--attacker netns needs ip(8) (iproute2)"
  ns=signet-abuse-$$ veth=sga$$h
  host_ip=10.231.$octet.1 ns_ip=10.231.$octet.2
  ip netns add "$ns"
  ip link add "$veth" type veth peer name "sga$$n"
  ip link set "sga$$n" netns "$ns"
  ip addr add "$host_ip/30" dev "$veth"
  ip link set "$veth" up
  ip -n "$ns" addr add "$ns_ip/30" dev "sga$$n"
  ip -n "$ns" link set "sga$$n" up
  ip -n "$ns" link set lo up
  export SIGNET_BENCH_LISTEN=$host_ip:0
  attacker_note="the flood ran as its own process (\`signet-bench flood\`) in network namespace $ns, source $ns_ip over a veth pair; the vault listened on $host_ip, where the readers reached it too (both windows)"
  if ((attacker_cpu > 0)); then
    if grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
      grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
      cg_cpu=/sys/fs/cgroup/signet-abuse-$$
      mkdir "$cg_cpu"
      echo "$quota 100000" >"$cg_cpu/cpu.max"
      attacker_note+="; its CPU capped at $attacker_cpu% of one core by cgroup v2 (\`cpu.max\` = \`$quota 100000\`)"
    elif [ -d /sys/fs/cgroup/cpu ] && [ -e /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
      cg_cpu=/sys/fs/cgroup/cpu/signet-abuse-$$
      mkdir "$cg_cpu"
      echo 100000 >"$cg_cpu/cpu.cfs_period_us"
      echo "$quota" >"$cg_cpu/cpu.cfs_quota_us"
      attacker_note+="; its CPU capped at $attacker_cpu% of one core by cgroup v1 (\`cpu.cfs_quota_us\` = $quota per \`cpu.cfs_period_us\` = 100000)"
      if [ -d /sys/fs/cgroup/cpuacct ]; then
        cg_acct=/sys/fs/cgroup/cpuacct/signet-abuse-$$
        mkdir "$cg_acct"
      fi
    else
      die "no cgroup cpu controller to cap the attacker (use --attacker-cpu 0 or --attacker same)"
    fi
    procs+=("$cg_cpu/cgroup.procs")
    [ -z "$cg_acct" ] || procs+=("$cg_acct/cgroup.procs")
  else
    attacker_note+="; its CPU not capped"
  fi
  {
    echo '#!/bin/sh'
    echo '# Runs its arguments as the attacker: in its cgroup and network namespace.'
    for p in "${procs[@]}"; do echo "echo \$\$ >$p"; done
    echo "exec ip netns exec $ns \"\$@\""
  } >"$work/attacker.sh"
  chmod +x "$work/attacker.sh"
  flood_via=(--flood-via "$work/attacker.sh")
}
# What the attacker's cgroup counted: CPU seconds and throttling.
attacker_usage() {
  local used="" throttled=""
  if [ -n "$cg_acct" ] && [ -r "$cg_acct/cpuacct.usage" ]; then
    used=$(awk '{printf "%.1f", $1 / 1e9}' "$cg_acct/cpuacct.usage")
  elif [ -n "$cg_cpu" ] && [ -r "$cg_cpu/cpu.stat" ]; then
    used=$(awk '$1 == "usage_usec" {printf "%.1f", $2 / 1e6}' "$cg_cpu/cpu.stat")
  fi
  if [ -n "$cg_cpu" ] && [ -r "$cg_cpu/cpu.stat" ]; then
    throttled=$(awk '$1 == "nr_periods" {p = $2} $1 == "nr_throttled" {t = $2} END {if (p) printf "%d of %d periods throttled", t, p}' "$cg_cpu/cpu.stat")
  fi
  echo "the attacker used ${used:-?} CPU-seconds${throttled:+ ($throttled)}"
}
case $attacker in
  netns) wants flood && { trap 'status=$?; attacker_down; (exit $status); bench_cleanup' EXIT; attacker_up; } ;;
  same) attacker_note="the flood ran on threads of the readers' own process, on loopback, its CPU not capped" ;;
  *) die "--attacker is netns or same" ;;
esac

results=$work/results.jsonl
: >"$results"
failed=0
runs=0

# bench CASE VAULT_FLAGS signet-bench-args...: one run against a fresh vault
# started with VAULT_FLAGS (a string of `--flag value` pairs, given to it
# as the environment variables clap reads them from).
bench() {
  local case=$1 vault_flags=$2 status=0 before after args=() a env=() flag i
  shift 2
  runs=$((runs + 1))
  vault_dir=$work/vault-$runs
  read -ra flag <<<"$vault_flags"
  for ((i = 0; i + 1 < ${#flag[@]}; i += 2)); do
    a=${flag[i]#--}
    a=${a//-/_}
    env+=("SIGNET_${a^^}=${flag[i + 1]}")
  done
  # Exported for the vault start_signet_vault starts, then taken back.
  for a in "${env[@]}"; do export "${a?}"; done
  start_signet_vault "$bin" "$vault_dir" || die "signet-vault did not start"
  for a in "${env[@]}"; do unset "${a%%=*}"; done
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
  if ((status != 0)); then
    echo "signet-bench exited $status: $*" >&2
    failed=1
  fi
  [ -s "$work/run.json" ] || return 0
  python3 - "$work/run.json" "$case" "$before" "$after" "$vault_flags" "$*" >>"$results" <<'EOF'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
r.update(case=sys.argv[2], load_before=sys.argv[3], load_after=sys.argv[4],
         vault_flags=sys.argv[5], command="signet-bench --json " + sys.argv[6])
print(json.dumps(r))
q, a = r["quiet"], r["abuse"]
print("    quiet %.0f/s p99 %.3f ms; %s %.0f/s p99 %.3f ms (%.2fx); reader errors %d" % (
    q["reads_per_s"], q["p99_ms"] or 0, r["kind"], a["reads_per_s"], a["p99_ms"] or 0,
    r["p99_ratio"] or 0, q["errors"] + q["warmup_errors"] + a["errors"] + a["warmup_errors"]),
    file=sys.stderr)
for e in q["error_samples"] + a["error_samples"]:
    print("      reader error:", e, file=sys.stderr)
EOF
}

common=(--clients "$clients" --duration "$duration" --warmup "$warmup" --server-pid '$PID')
target=(abuse --vault '$VAULT' --identity '$IDENTITY')
load_first="$(loadavg)$(busy)"
if wants flood; then
  say "flood: $flood_requests unauthenticated attempts on $flood_connections connections"
  bench flood "" "${common[@]}" "${target[@]}" --kind flood \
    --flood-requests "$flood_requests" --flood-connections "$flood_connections" \
    --flood-patience "$flood_patience" "${flood_via[@]}"
  [ "$attacker" != netns ] || attacker_note+="; $(attacker_usage) during the flood case"
fi
if wants slow; then
  say "slow: $slow_connections connections, header timeout $header_timeout s"
  bench slow "--header-read-timeout-seconds $header_timeout" "${common[@]}" "${target[@]}" \
    --kind slow --slow-connections "$slow_connections" --slow-interval "$slow_interval"
fi
load_last="$(loadavg)$(busy)"

command_line="bash tests/bench/abuse.sh"
for a in "${original_args[@]}"; do command_line+=" $(printf '%q' "$a")"; done
report=$(python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def f(v, fmt="%.2f"):
    return "-" if v is None else fmt % v
def errors(rep):
    return rep["errors"] + rep["warmup_errors"]
print("| case | window | s | reads/s | p50 ms | p99 ms | p99 vs quiet | reads/s vs quiet | reader errors | server cores | load 1 min |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for r in rows:
    for name, rep in (("quiet", r["quiet"]), (r["kind"], r["abuse"])):
        abuse = name != "quiet"
        print("| %s | %s | %.1f | %.0f | %s | %s | %s | %s | %d | %s | %s |" % (
            r["case"], name, rep["duration_s"], rep["reads_per_s"], f(rep["p50_ms"], "%.3f"),
            f(rep["p99_ms"], "%.3f"), f(r["p99_ratio"], "%.2fx") if abuse else "",
            f(r["reads_ratio"], "%.2fx") if abuse else "", errors(rep), f(rep["server_cores"]),
            "%s → %s" % (r["load_before"].split()[0], r["load_after"].split()[0]) if abuse else ""))
print()
for r in rows:
    a = r["audit"]
    if r["flood"]:
        fl = r["flood"]
        print("**Flood.** %d attempts on %d connections in %.1f s (%.0f/s; %d connections opened): "
              "%d answered (%.0f/s: %s), %d closed before an answer, %d given up after %.2f s, "
              "%d connections failed to open. Audit log: %d rows before the flood, %d after (+%d): "
              "**%d denial rows carrying %d requests and connections** (the flood saw %d refused "
              "or closed), %d other rows (the readers' reads and the admin's audit reads); rows "
              "read %.1f s after the flood." % (
                  fl["attempts"], fl["connections"], fl["seconds"], fl["attempts_per_s"],
                  fl["connects"], fl["answered"], fl["answered_per_s"],
                  ", ".join("%s × %d" % kv for kv in fl["statuses"].items()) or "none",
                  fl["closed"], fl["given_up"], fl["patience_s"], fl["connect_failed"],
                  a["rows_before"], a["rows_after"], a["rows_added"], a["denial_rows_added"],
                  a["denied_requests_carried"], a["refused_seen"], a["other_rows_added"],
                  a["flush_wait_s"]))
        print()
        for sample in fl["samples"]:
            print("- flood saw: %s" % sample.replace("\n", " "))
        print()
        print("| action | code | rows | requests (or connections) carried |")
        print("| --- | --- | ---: | ---: |")
        for key, g in sorted(a["groups"].items()):
            action, code = key.split(" ", 1)
            print("| %s | %s | %d | %d |" % (action, code, g["rows"], g["requests"]))
        print()
    if r["slow"]:
        s = r["slow"]
        print("**Slow connections** (vault: `%s`). %d held at once (half trickling a request head, "
              "a byte every %g s; half silent), %d opened in all (%d connect failures). Closed by "
              "the vault during the window: %d trickling (lived p50 %s s, max %s s), %d silent "
              "(p50 %s s, max %s s), %d answered before the close; %d still open when it stopped. "
              "Audit rows added: %d (%d denial rows)." % (
                  r["vault_flags"], s["connections"], s["byte_interval_s"], s["opened"],
                  s["connect_failures"], s["trickle_closed"], f(s["trickle_life_p50_s"], "%.1f"),
                  f(s["trickle_life_max_s"], "%.1f"), s["silent_closed"],
                  f(s["silent_life_p50_s"], "%.1f"), f(s["silent_life_max_s"], "%.1f"),
                  s["answered"], s["open_at_end"], a["rows_added"], a["denial_rows_added"]))
        print()
for r in rows:
    for rep in (r["quiet"], r["abuse"]):
        for e in rep["error_samples"]:
            print("- reader error (%s): %s" % (r["case"], e))
print("Commands (a fresh vault each, `signet-vault serve` on 127.0.0.1:0 with the flags shown; "
      "`$VAULT`, `$IDENTITY`, `$PID`: its address, admin file, pid):")
print()
for r in rows:
    print("    signet-vault serve %s" % (r["vault_flags"] or "(defaults)"))
    print("    " + r["command"])
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
  ! wants flood || echo "- attacker: $attacker_note"
  echo "- machine: $machine; load average at the start: $load_first; at the end: $load_last"
  echo "- versions: $("$bin/signet-vault" --version) at $build_of, $(rustc --version 2>/dev/null || echo 'rustc ?')"
} | tee ${out:+"$out"}

if ((failed)); then
  echo "abuse.sh: at least one run had reader errors (see above)" >&2
  exit 1
fi
