#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests of the PostgreSQL backend.
#
#   eval "$(tests/postgres/start.sh start [DIR])"   # prints the exports
#   tests/postgres/start.sh stop DIR
#
# `start` installs Debian's postgresql package when no server binaries are
# found, creates a cluster in DIR (default: a new directory under /tmp)
# owned by an unprivileged user (PostgreSQL refuses to run as root), starts
# it on 127.0.0.1:${SIGNET_PG_PORT:-55432} (fsync ${SIGNET_PG_FSYNC:-off})
# with its socket in DIR only, and
# prints `export SIGNET_TEST_DATABASE_URL=...`, `SIGNET_PG_DIR` (the
# cluster's directory), `SIGNET_PG_BIN` (its binaries), `SIGNET_PG_OPTS`
# (its server options, for a test that restarts it) and `SIGNET_PG_CA` (the
# CA of its TLS certificate, for 127.0.0.1 and localhost).
# The URL is the cluster's maintenance database; each test makes a
# database of its own from it. Local connections are trusted: the cluster
# listens on the loopback address only and lives as long as the run.
set -euo pipefail

port=${SIGNET_PG_PORT:-55432}

say() { printf '%s\n' "$*" >&2; }

bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  return 1
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  local dir=${1:-}
  local bin
  if ! bin=$(bindir); then
    say "installing Debian's postgresql package"
    # Debian's package starts a default cluster of its own; this script uses
    # only the binaries and runs a private cluster beside it.
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    else
      sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    bin=$(bindir) || { say "no PostgreSQL server binaries after installing postgresql"; exit 1; }
  fi
  if [ -z "$dir" ]; then
    dir=$(mktemp -d /tmp/signet-pg.XXXXXX)
  fi
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres: "$dir"
  fi
  chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -U signet --auth=trust --locale=C --encoding=UTF8 >/dev/null
  fi
  # TLS too, with a throw-away CA, for the test that connects with
  # sslmode=require (plain connections stay allowed).
  if [ ! -f "$dir/tls/server.crt" ]; then
    mkdir -p "$dir/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
      -subj /CN=signet-test-ca -keyout "$dir/tls/ca.key" -out "$dir/tls/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
      -keyout "$dir/tls/server.key" -out "$dir/tls/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/tls/ext"
    openssl x509 -req -in "$dir/tls/server.csr" -CA "$dir/tls/ca.crt" -CAkey "$dir/tls/ca.key" \
      -CAcreateserial -days 7 -extfile "$dir/tls/ext" -out "$dir/tls/server.crt" 2>/dev/null
    rm -f "$dir/tls/ca.key" "$dir/tls/server.csr"
    chmod 600 "$dir/tls/server.key"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir/tls"
  fi
  # fsync off: a test cluster on a shared disk; a clean stop (as in the
  # restart test) still writes everything. SIGNET_PG_FSYNC=on for a
  # benchmark (tests/bench/replicas.sh): commits as durable as SQLite's.
  local fsync=${SIGNET_PG_FSYNC:-off}
  case $fsync in on|off) ;; *) say "SIGNET_PG_FSYNC must be on or off"; exit 2 ;; esac
  local opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=$fsync -c max_connections=300 -c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key"
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o "$opts" start >/dev/null
  echo "export SIGNET_TEST_DATABASE_URL='postgres://signet@127.0.0.1:$port/postgres?sslmode=disable'"
  echo "export SIGNET_PG_DIR='$dir'"
  echo "export SIGNET_PG_BIN='$bin'"
  echo "export SIGNET_PG_CA='$dir/tls/ca.crt'"
  # For a test that stops and starts the server again (tests/replicas.rs).
  echo "export SIGNET_PG_OPTS='$opts'"
}

stop() {
  local dir=${1:?stop needs the cluster directory}
  local bin
  bin=$(bindir) || exit 0
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) say "usage: $0 start [DIR] | stop DIR"; exit 2 ;;
esac
