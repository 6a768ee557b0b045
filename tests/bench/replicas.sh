#!/usr/bin/env bash
# Signed reads from 1, 2 and 3 vault replicas on one PostgreSQL, beside
# OpenBao from the same run: the same closed-loop generator (signet-bench)
# spreads its clients round-robin over the replicas' addresses, then a
# Markdown table.
#
#   bash tests/bench/replicas.sh          # 1, 2, 3 replicas at 16 and 32 clients; 3 x 10 s each (~8 min)
#   bash tests/bench/replicas.sh --duration 3 --warmup 1 --repeat 1   # a quick check
#
# PostgreSQL: a private cluster from tests/postgres/start.sh (Debian's
# package, installed when missing) on a free loopback port. For each
# replica count a fresh database and root key, then that many
# `signet-vault serve --database-url` processes on it (the first one's
# bootstrap token enrolls the admin; the machines are enrolled once through
# it and read from all). OpenBao: tests/bench/openbao.sh, as run.sh runs it
# (raft storage in the same temporary directory). At each client count
# each Signet run is paired with an OpenBao run, their order alternating;
# the OpenBao row is the median of all its runs at that count. Everything
# started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  cat <<'EOF'
usage: tests/bench/replicas.sh [--duration S] [--warmup S] [--clients "16 32"] [--replicas "1 2 3"]
                               [--repeat R] [--threads T] [--pg-fsync on|off] [--out FILE] [--no-build]

  --duration S     measured seconds per run (default 10)
  --warmup S       warm-up seconds per run (default 2)
  --clients LIST   concurrencies (default "16 32")
  --replicas LIST  vault processes on the database (default "1 2 3")
  --repeat R       run each pair R times per replica count and concurrency; the table
                   shows medians (default 3)
  --threads T      generator worker threads (default 2)
  --pg-fsync on|off
                   PostgreSQL's fsync (default on: every commit durable, as the SQLite
                   store's synchronous=FULL; the tests' cluster runs with it off)
  --out FILE       also write the Markdown report to FILE
  --no-build       use the release binaries already built
EOF
}

duration=10 warmup=2 clients="16 32" replicas="1 2 3" repeat=3 threads=2 out="" build=1 pg_fsync=on
original_args=("$@")
while (($#)); do
  case $1 in
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --clients) clients=$2; shift ;;
    --replicas) replicas=$2; shift ;;
    --repeat) repeat=$2; shift ;;
    --threads) threads=$2; shift ;;
    --pg-fsync) pg_fsync=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ $pg_fsync =~ ^(on|off)$ ]] || { echo "--pg-fsync: on or off" >&2; exit 2; }
for n in $replicas; do
  [[ $n =~ ^[1-9][0-9]?$ ]] || { echo "--replicas: $n is not a count from 1 to 99" >&2; exit 2; }
done

say() { printf '==> [%3ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'replicas.sh: %s\n' "$*" >&2; exit 2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $*"
  fi
}

# --- Binaries ---------------------------------------------------------------
bin=${CARGO_TARGET_DIR:-target}/release
if ((build)); then
  say "building signet-bench, signet-vault, signet (release)"
  cargo build --release --locked -p signet-bench -p signet-vault -p signet-client >&2
fi
for b in signet-bench signet-vault signet; do
  [ -x "$bin/$b" ] || die "$bin/$b missing (run without --no-build)"
done

# loadavg, busy:
# shellcheck source=tests/bench/signet-vault.sh
. tests/bench/signet-vault.sh
# shellcheck source=tests/bench/openbao.sh
. tests/bench/openbao.sh
openbao_install

# --- Throw-away servers -------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/signet-replicas.XXXXXX")
pids=()
pg_dir=""
stop_pids() { # pid...
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
cleanup() {
  local status=$?
  stop_pids "${pids[@]}"
  if ((status != 0)); then
    for log in "$work"/*.log "$work"/r*/v*/vault.log; do
      [ -s "$log" ] && { echo "--- tail of $log" >&2; tail -n 20 "$log" >&2; }
    done
  fi
  if [ -n "$pg_dir" ]; then tests/postgres/start.sh stop "$pg_dir" || true; fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# PostgreSQL on a free port (not the tests' default, which a test run may hold).
say "starting PostgreSQL (tests/postgres/start.sh)"
pg_exports=$(SIGNET_PG_PORT=${SIGNET_PG_PORT:-$(free_port)} SIGNET_PG_FSYNC=$pg_fsync tests/postgres/start.sh start) \
  || die "tests/postgres/start.sh failed"
eval "$pg_exports"
pg_dir=$SIGNET_PG_DIR
pg_url=$SIGNET_TEST_DATABASE_URL
pg_version=$("$SIGNET_PG_BIN/postgres" --version)
say "$pg_version at ${pg_url%%\?*}"

openbao_start "$work"

# start_replicas N: a fresh database and root key, then N vaults on them, one
# after the other (the first creates the schema and the bootstrap token);
# sets replica_pids and replica_urls, writes $work/rN/admin.json.
start_replicas() {
  local n=$1 dir=$work/r$1 db=bench_r$1 url addr i
  mkdir -p "$dir"
  "$SIGNET_PG_BIN/psql" -q -X -v ON_ERROR_STOP=1 "$pg_url" -c "CREATE DATABASE $db" >/dev/null
  url=${pg_url/\/postgres\?//$db?}
  "$bin/signet-vault" root-key >"$dir/root.key"
  chmod 600 "$dir/root.key"
  replica_pids=() replica_urls=()
  for i in $(seq "$n"); do
    mkdir -p "$dir/v$i/data"
    SIGNET_DATABASE_URL=$url "$bin/signet-vault" serve --data-dir "$dir/v$i/data" \
      --root-key-file "$dir/root.key" --listen 127.0.0.1:0 \
      >"$dir/v$i/vault.out" 2>"$dir/v$i/vault.log" &
    pids+=("$!")
    replica_pids+=("$!")
    listening() { # pid log
      grep -q 'vault listening' "$2" || { kill -0 "$1" 2>/dev/null || die "replica exited at start"; false; }
    }
    wait_for 60 listening "$!" "$dir/v$i/vault.log" || die "replica $i of $n did not start"
    addr=$(grep -m1 'vault listening' "$dir/v$i/vault.log" | grep -o 'http://[0-9.]*:[0-9]*' | head -n1)
    [ -n "$addr" ] || die "replica $i of $n logged no address"
    replica_urls+=("$addr")
  done
  [ -s "$dir/v1/data/bootstrap-token" ] || die "the first replica wrote no bootstrap token"
  "$bin/signet" --vault "${replica_urls[0]}" admin enroll --token-file "$dir/v1/data/bootstrap-token" \
    --out "$dir/admin.json" >/dev/null
  say "$n replica(s) on database $db: ${replica_urls[*]} (pids ${replica_pids[*]})"
}

# --- Runs -----------------------------------------------------------------------
results=$work/results.tsv
: >"$results"
failed=0
run_one() { # replicas (0: OpenBao) clients
  local n=$1 c=$2 status=0 line
  local common=(--json --clients "$c" --duration "$duration" --warmup "$warmup" --threads "$threads")
  if ((n == 0)); then
    line=$(BAO_TOKEN=$root_token "$bin/signet-bench" "${common[@]}" openbao --addr "$BAO_ADDR" \
      --path "bench/c$c-$RANDOM") || status=$?
  else
    local more=() u
    for u in "${replica_urls[@]:1}"; do more+=(--replica "$u"); done
    line=$("$bin/signet-bench" "${common[@]}" signet --vault "${replica_urls[0]}" "${more[@]}" \
      --identity "$work/r$n/admin.json" --project "bench-r$n-c$c-$RANDOM") || status=$?
  fi
  # The generator prints its JSON line even when some request failed (1).
  if ((status != 0)); then
    echo "signet-bench at $n replica(s) (0: OpenBao), $c clients exited $status" >&2
    failed=1
  fi
  [ -n "$line" ] || return 0
  printf '%s\t%s\n' "$n" "$line" >>"$results"
  python3 -c '
import json, sys
n, r = int(sys.argv[1]), json.loads(sys.argv[2])
who = "openbao" if n == 0 else "signet x%d" % n
print("    %-10s %3d clients: %9.1f reads/s  p50 %.3f ms  p99 %.3f ms  errors %d" % (
    who, r["clients"], r["reads_per_s"], r["p50_ms"] or 0, r["p99_ms"] or 0,
    r["errors"] + r["warmup_errors"]))
for e in r["error_samples"]:
    print("      error:", e)' "$n" "$line" >&2 || true
}

load_before="load average $(loadavg)$(busy)"
first_openbao=0
for n in $replicas; do
  start_replicas "$n"
  for c in $clients; do
    for _ in $(seq "$repeat"); do
      # Alternate which goes first, so neither always runs on a warmer
      # (or more loaded) machine.
      if ((first_openbao)); then
        say "$c clients: OpenBao, then $n replica(s)"
        run_one 0 "$c"; run_one "$n" "$c"
      else
        say "$c clients: $n replica(s), then OpenBao"
        run_one "$n" "$c"; run_one 0 "$c"
      fi
      first_openbao=$((1 - first_openbao))
    done
  done
  stop_pids "${replica_pids[@]}"
done
load_after="load average $(loadavg)$(busy)"

# --- Report ---------------------------------------------------------------------
command_line="bash tests/bench/replicas.sh"
for a in "${original_args[@]}"; do command_line+=" $(printf '%q' "$a")"; done
report=$(python3 - "$results" <<'EOF'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    n, text = line.split("\t", 1)
    r = json.loads(text)
    runs.setdefault((int(n), r["clients"]), []).append(r)
most = max((len(v) for (n, _), v in runs.items() if n), default=0)

def med(rs, key):
    values = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(values) if values else None

def f(v, fmt="%.2f"):
    return "-" if v is None else fmt % v

def rate(rs):
    text = f(med(rs, "reads_per_s"), "%.0f")
    if len(rs) > 1:
        values = [r["reads_per_s"] for r in rs]
        text += " (%.0f–%.0f)" % (min(values), max(values))
    return text

if most > 1:
    print("Medians of %d runs per replica count (OpenBao: of all its runs at that concurrency); reads/s ranges in parentheses." % most)
    print()
print("| server | clients | reads/s | p50 ms | p99 ms | / OpenBao | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for c in sorted({c for _, c in runs}):
    bao = runs.get((0, c))
    bao_rate = med(bao, "reads_per_s") if bao else None
    for n in sorted(n for n, cc in runs if cc == c):
        rs = runs[(n, c)]
        who = "OpenBao (raft)" if n == 0 else "Signet, %d replica%s on PostgreSQL" % (n, "" if n == 1 else "s")
        ratio = "-"
        if bao_rate:
            ratio = "%.2f" % (med(rs, "reads_per_s") / bao_rate)
        errors = sum(r["errors"] + r["warmup_errors"] for r in rs)
        print("| %s | %d | %s | %s | %s | %s | %d |" % (who, c, rate(rs), f(med(rs, "p50_ms")),
              f(med(rs, "p99_ms")), ratio, errors))
EOF
)
machine="$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1), $(uname -sr)"
dirty=""
[ -z "$(git status --porcelain 2>/dev/null)" ] || dirty=" with uncommitted changes"
vault_build="this checkout, $(git rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
((build)) || vault_build="$vault_build (--no-build: as last built)"
{
  echo
  echo "$report"
  echo
  echo "- command: \`$command_line\` (warm-up ${warmup} s, ${duration} s measured per run, generator threads $threads; one machine per client, its clients spread round-robin over the replicas; OpenBao read tokens: service tokens holding only a read policy on the one secret, file audit off)"
  echo "- machine: $machine; before: $load_before; after: $load_after"
  echo "- versions: $("$bin/signet-vault" --version) from $vault_build, $(rustc --version 2>/dev/null || echo 'rustc ?'); $pg_version (private cluster on loopback, fsync $pg_fsync, tests/postgres/start.sh); $("$bao" version | head -n1) from PyPI $OPENBAO_PACKAGE==$OPENBAO_VERSION"
  echo "- data: PostgreSQL and OpenBao on the $(df -PT "$work" | awk 'NR==2 {print $2}') file system under ${TMPDIR:-/tmp}"
} | tee ${out:+"$out"}

if ((failed)); then
  echo "replicas.sh: at least one run had errors (see above)" >&2
  exit 1
fi
