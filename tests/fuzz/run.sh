#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 20), from
# the committed seeds (fuzz/corpus/<target>/) plus what earlier runs found
# (kept under the cache directory), and fails if any target crashes. A table
# of targets, seconds, executions and crashes ends the output.
#
#   bash tests/fuzz/run.sh            # 20 s per target (what .ci/run does, with 10)
#   bash tests/fuzz/run.sh 600        # a longer hunt; run it before a release
#   SIGNET_FUZZ_TARGETS="enroll_body" bash tests/fuzz/run.sh 3600
#   SIGNET_FUZZ_SANITIZER=address bash tests/fuzz/run.sh 300
#
# cargo-fuzz is installed from crates.io at a pinned version when missing.
# The toolchain is stable Rust: cargo-fuzz passes -Z flags (sanitizer
# coverage, and -Zsanitizer for ASan), which stable rustc accepts with
# RUSTC_BOOTSTRAP=1; no nightly toolchain is needed. The default sanitizer
# is none: Signet's crates deny unsafe code, so the targets hunt panics and
# broken rules, and ASan would double the time per execution
# (SIGNET_FUZZ_SANITIZER=address turns it on).
#
# A crash leaves its input in fuzz/artifacts/<target>/; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>
# and, once fixed, copy the input into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_FUZZ_VERSION=0.13.2

seconds=${1:-20}
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds > 0)) || {
  echo "usage: tests/fuzz/run.sh [SECONDS]" >&2
  exit 2
}
sanitizer=${SIGNET_FUZZ_SANITIZER:-none}
say() { printf '==> [%3ss] %s\n' "$SECONDS" "$*" >&2; }

if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export RUSTC_BOOTSTRAP=1

targets=${SIGNET_FUZZ_TARGETS:-$(cargo fuzz list)}
cache=${SIGNET_FUZZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signet-fuzz}
# The vault targets keep a SQLite directory here; tmpfs when there is one.
tmp=${TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
SIGNET_FUZZ_TMP=$(mktemp -d "$tmp/signet-fuzz.XXXXXX")
export SIGNET_FUZZ_TMP
trap 'rm -rf "$SIGNET_FUZZ_TMP"' EXIT

# Builds go to the cache too, shared by every checkout: a cold build of
# fuzz/ takes about 20 to 30 minutes on 2 cores, a warm one in a fresh
# clone only rebuilds the workspace's own crates.
export CARGO_TARGET_DIR=${SIGNET_FUZZ_TARGET_DIR:-$cache/target}

build=(-s "$sanitizer" --codegen-units 16)
say "cargo fuzz build (sanitizer $sanitizer)"
cargo fuzz build "${build[@]}"

declare -A execs speed crashed found
failed=0
for target in $targets; do
  seeds=fuzz/corpus/$target
  [ -d "$seeds" ] || { echo "no seed corpus $seeds" >&2; exit 2; }
  # New inputs go to the first directory: the cache, never the checkout.
  work=$cache/corpus/$target
  mkdir -p "$work" "fuzz/artifacts/$target"
  log=$SIGNET_FUZZ_TMP/$target.log
  say "fuzzing $target for $seconds s"
  status=0
  cargo fuzz run "${build[@]}" "$target" "$work" "$seeds" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  execs[$target]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  speed[$target]=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  found[$target]=$(find "$work" -type f | wc -l)
  if ((status != 0)); then
    crashed[$target]=1
    failed=1
    echo "--- $target failed (status $status); the end of its log:" >&2
    grep -v '^#[0-9]' "$log" | tail -n 40 >&2
  else
    crashed[$target]=0
  fi
done

printf '\n| target | seconds | executions | exec/s | crashes | corpus |\n|---|---|---|---|---|---|\n'
for target in $targets; do
  printf '| %s | %s | %s | %s | %s | %s |\n' "$target" "$seconds" "${execs[$target]:-?}" \
    "${speed[$target]:-?}" "${crashed[$target]}" "${found[$target]}"
done
exit "$failed"
