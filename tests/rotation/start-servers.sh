#!/usr/bin/env bash
# Starts the real database servers the rotation tests (rotator/tests/)
# rotate credentials in: PostgreSQL, Redis and MariaDB, each on a private
# loopback port with its data under one directory, unless one already
# answers on that port. Installs the Debian packages that are missing when
# run as root. Idempotent: run it again and it only checks.
#
#   tests/rotation/start-servers.sh [dir]      (default /tmp/signet-rotation)
#   tests/rotation/start-servers.sh --stop [dir]
#
# Ports and the admin password come from the environment the tests read
# (defaults in rotator/tests/kit/mod.rs):
#   SIGNET_ROTATION_PG_PORT=54329 SIGNET_ROTATION_REDIS_PORT=63799
#   SIGNET_ROTATION_MYSQL_PORT=33069 SIGNET_ROTATION_ADMIN_PASSWORD=signet-admin-pw
# The admin user is `signet_admin` (PostgreSQL, MariaDB) and `default` (Redis).
set -euo pipefail

stop=0
if [[ "${1:-}" == "--stop" ]]; then stop=1; shift; fi
dir="${1:-/tmp/signet-rotation}"
pg_port="${SIGNET_ROTATION_PG_PORT:-54329}"
redis_port="${SIGNET_ROTATION_REDIS_PORT:-63799}"
mysql_port="${SIGNET_ROTATION_MYSQL_PORT:-33069}"
password="${SIGNET_ROTATION_ADMIN_PASSWORD:-signet-admin-pw}"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"

log() { echo "start-servers: $*" >&2; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_user() { # user, command...
    local user="$1"; shift
    if [[ "$(id -u)" == 0 ]]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

if [[ "$stop" == 1 ]]; then
    [[ -n "$pg_bin" && -d "$dir/pg/data" ]] && as_user postgres "$pg_bin/pg_ctl" -D "$dir/pg/data" -m fast stop || true
    [[ -f "$dir/redis/redis.pid" ]] && kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
    [[ -f "$dir/mysql/mysqld.pid" ]] && kill "$(cat "$dir/mysql/mysqld.pid")" 2>/dev/null || true
    exit 0
fi

missing=()
[[ -n "$pg_bin" ]] || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v mariadbd >/dev/null || missing+=(mariadb-server)
if (( ${#missing[@]} )); then
    if [[ "$(id -u)" != 0 ]]; then log "missing ${missing[*]}; install them (apt-get install ${missing[*]})"; exit 1; fi
    log "installing ${missing[*]}"
    # Debian's maintainer scripts must not start the system-wide services.
    # (an existing policy is left as it is).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
fi

mkdir -p "$dir"
chmod 755 "$dir"

# PostgreSQL refuses to run as root: its own user owns its directory.
if answers "$pg_port"; then
    log "postgresql already answers on $pg_port"
else
    mkdir -p "$dir/pg"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$dir/pg"
    if [[ ! -f "$dir/pg/data/PG_VERSION" ]]; then
        printf '%s\n' "$password" > "$dir/pg/pwfile"
        [[ "$(id -u)" == 0 ]] && chown postgres: "$dir/pg/pwfile"
        as_user postgres "$pg_bin/initdb" -D "$dir/pg/data" -U signet_admin \
            --pwfile="$dir/pg/pwfile" --auth=scram-sha-256 -E UTF8 >/dev/null
        rm -f "$dir/pg/pwfile"
    fi
    as_user postgres "$pg_bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w \
        -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $dir/pg -c max_connections=200" start >/dev/null
    log "postgresql on 127.0.0.1:$pg_port"
fi

if answers "$redis_port"; then
    log "redis already answers on $redis_port"
else
    mkdir -p "$dir/redis"
    redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes \
        --dir "$dir/redis" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/log" \
        --save "" --appendonly no --requirepass "$password" >/dev/null
    for _ in $(seq 50); do answers "$redis_port" && break; sleep 0.1; done
    log "redis on 127.0.0.1:$redis_port"
fi

if answers "$mysql_port"; then
    log "mariadb already answers on $mysql_port"
else
    mkdir -p "$dir/mysql"
    mysql_user=()
    if [[ "$(id -u)" == 0 ]]; then chown mysql: "$dir/mysql"; mysql_user=(--user=mysql); fi
    if [[ ! -d "$dir/mysql/data/mysql" ]]; then
        mariadb-install-db "${mysql_user[@]}" --datadir="$dir/mysql/data" \
            --auth-root-authentication-method=normal --skip-test-db >/dev/null
    fi
    nohup mariadbd "${mysql_user[@]}" --datadir="$dir/mysql/data" --port="$mysql_port" \
        --bind-address=127.0.0.1 --socket="$dir/mysql/sock" --pid-file="$dir/mysql/mysqld.pid" \
        --log-error="$dir/mysql/log" --skip-name-resolve >/dev/null 2>&1 &
    for _ in $(seq 100); do
        mariadb-admin --socket="$dir/mysql/sock" -uroot ping >/dev/null 2>&1 && break; sleep 0.2
    done
    mariadb --socket="$dir/mysql/sock" -uroot -e "
        CREATE USER IF NOT EXISTS 'signet_admin'@'%' IDENTIFIED BY '$password';
        GRANT ALL ON *.* TO 'signet_admin'@'%' WITH GRANT OPTION;"
    log "mariadb on 127.0.0.1:$mysql_port"
fi
