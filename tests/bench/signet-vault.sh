# shellcheck shell=bash
# Sourced by the bench scripts: start a throw-away `signet-vault serve` and
# enroll its first admin.
#
#   start_signet_vault BIN_DIR WORK_DIR   # sets vault_addr, vault_pid; writes WORK_DIR/admin.json
#                                         # (listens on $SIGNET_BENCH_LISTEN, default 127.0.0.1:0)
#   stop_signet_vault                     # SIGTERM, then SIGKILL after 5 s
#   bench_work NAME; loadavg; busy         # work dir + cleanup trap; machine load notes
#
# The vault gets a fresh data directory (WORK_DIR/data) and root key and an
# ephemeral port. Its address comes from its first lines (standard output,
# or the "vault listening" log line on stderr). The one-time admin bootstrap
# token comes from standard output (`admin enroll --token T`) or, once the
# vault writes it there instead, from the 0600 file `bootstrap-token` in the
# data directory.

start_signet_vault() { # bin_dir work_dir
  local bin_dir=$1 dir=$2 token="" addr=""
  mkdir -p "$dir"
  "$bin_dir/signet-vault" root-key >"$dir/root.key"
  chmod 600 "$dir/root.key"
  "$bin_dir/signet-vault" serve --data-dir "$dir/data" --root-key-file "$dir/root.key" \
    --listen "${SIGNET_BENCH_LISTEN:-127.0.0.1:0}" >"$dir/vault.out" 2>"$dir/vault.log" &
  vault_pid=$!
  for _ in $(seq 300); do
    addr=$(grep -ho 'https\?://[0-9]*\.[0-9]*\.[0-9]*\.[0-9]*:[0-9]*' "$dir/vault.out" "$dir/vault.log" 2>/dev/null | head -n1 || true)
    token=$(sed -n 's/.*admin enroll --token \([^ ]*\).*/\1/p' "$dir/vault.out" 2>/dev/null | head -n1)
    if [ -z "$token" ] && [ -s "$dir/data/bootstrap-token" ]; then
      token=$(tr -d '[:space:]' <"$dir/data/bootstrap-token")
    fi
    [ -n "$addr" ] && [ -n "$token" ] && break
    if ! kill -0 "$vault_pid" 2>/dev/null; then
      echo "signet-vault exited at start; its log:" >&2
      tail -n 20 "$dir/vault.log" >&2
      return 1
    fi
    sleep 0.1
  done
  if [ -z "$addr" ] || [ -z "$token" ]; then
    echo "signet-vault gave no address or bootstrap token within 30 s (see $dir/vault.out, $dir/vault.log)" >&2
    return 1
  fi
  vault_addr=$addr
  "$bin_dir/signet" --vault "$vault_addr" admin enroll --token "$token" \
    --out "$dir/admin.json" >/dev/null
}

stop_signet_vault() {
  [ -n "${vault_pid:-}" ] || return 0
  kill -TERM "$vault_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$vault_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$vault_pid" 2>/dev/null || true
  wait "$vault_pid" 2>/dev/null || true
  vault_pid=""
}

# bench_work NAME: a temporary work directory in $work, removed on exit
# with the vault stopped (its log's tail printed when the script failed).
bench_work() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/signet-$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

bench_cleanup() {
  local status=$?
  stop_signet_vault
  if ((status != 0)) && [ -n "${vault_dir:-}" ] && [ -s "$vault_dir/vault.log" ]; then
    echo "--- tail of the vault's log" >&2
    tail -n 20 "$vault_dir/vault.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '? ? ?'; }

# What else loads the shared machine, for the report.
busy() {
  local note="" builds
  pgrep -f cargo-mutants >/dev/null 2>&1 && note="; cargo-mutants was running"
  builds=$(pgrep -xc rustc 2>/dev/null || true)
  [ "${builds:-0}" -gt 0 ] && note="$note; $builds rustc process(es) of other builds were running"
  echo "$note"
}
