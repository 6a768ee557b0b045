#!/usr/bin/env bash
# Mutation testing of Signet's security core with cargo-mutants: every
# mutant of the files in .cargo/mutants.toml (examine_globs) must be caught
# by the tests of its own package, or be listed there as equivalent with a
# reason.
#
#   bash tests/mutants/run.sh                 # the whole security core (hours on 2 cores)
#   bash tests/mutants/run.sh -p signet-vault --test-package signet-vault --re '^vault/src/vault.rs'
#                                             # one file (arguments go to cargo mutants as they are)
#   bash tests/mutants/run.sh --in-diff FILE  # only code a diff touches (what .ci/run does)
#
# Installs cargo-mutants (crates.io) when missing. Results land in
# mutants.out/ (outcomes.json, missed.txt, caught.txt, ...). Exit status:
# 0 all caught, 2 missed mutants, 3 timeouts, 4 the tree does not build or
# pass its tests unmutated (cargo-mutants' own codes).
set -euo pipefail
cd "$(dirname "$0")/../.."

MUTANTS_VERSION=27.1.0
if ! cargo mutants --version 2>/dev/null | grep -q "$MUTANTS_VERSION"; then
  echo "==> installing cargo-mutants $MUTANTS_VERSION" >&2
  cargo install --locked --quiet cargo-mutants --version "$MUTANTS_VERSION"
fi

# cargo-mutants builds a copy of the tree in a target folder of its own,
# kept between runs so dependencies compile once. Never the checkout's own
# target: a run interrupted mid-mutant would leave a mutated library there
# that a later `cargo test` could take as fresh.
export CARGO_TARGET_DIR=${SIGNET_MUTANTS_TARGET_DIR:-$PWD/target/mutants}
# No debug info in mutant builds: a mutant of signet-vault then rebuilds in
# about 6 s instead of 11 (measured), and nothing here reads a backtrace.
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-0}

# The client's CLI tests run the real `signet-vault` from beside `signet`;
# testing signet-client's mutants alone does not build it (and no client
# mutant touches it), so it is built here once, unmutated.
vault_for_client_tests() {
  echo "==> building signet-vault for the client's CLI tests" >&2
  cargo build --locked --quiet -p signet-vault --bin signet-vault
}

started=$(date +%s)
status=0
if [[ $# -eq 0 ]]; then
  # The whole core, one package at a time, each tested by its own tests
  # only (the baseline then builds just that package).
  rm -rf mutants.out.all && mkdir -p mutants.out.all
  for package in signet-vault signet-client signet-operator signet-init; do
    package_status=0
    if [[ $package == signet-client ]]; then vault_for_client_tests; fi
    cargo mutants --no-shuffle --timeout-multiplier 3 --minimum-test-timeout 60 \
      -p "$package" --test-package "$package" || package_status=$?
    cp -r mutants.out "mutants.out.all/$package"
    if (( package_status > status )); then status=$package_status; fi
  done
  cat mutants.out.all/*/missed.txt > mutants.out/missed.txt 2>/dev/null || true
else
  # A package (-p signet-client) or a diff (--in-diff FILE) that reaches
  # the client.
  reaches_client=0 previous=""
  for arg in "$@"; do
    if [[ $previous == -p && $arg == signet-client ]]; then reaches_client=1; fi
    if [[ $previous == --in-diff ]] && grep -q '^+++ b/client/' "$arg" 2>/dev/null; then
      reaches_client=1
    fi
    previous=$arg
  done
  if ((reaches_client)); then vault_for_client_tests; fi
  cargo mutants --no-shuffle --timeout-multiplier 3 --minimum-test-timeout 60 "$@" || status=$?
fi
echo "==> cargo mutants finished in $(( $(date +%s) - started )) s with status $status" >&2
if [[ -f mutants.out/missed.txt && -s mutants.out/missed.txt ]]; then
  echo "==> missed mutants (add a test that fails on each, or a reviewed exclusion):" >&2
  cat mutants.out/missed.txt >&2
fi
exit "$status"
