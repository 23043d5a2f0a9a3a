#!/usr/bin/env bash
# Installs (when missing) and starts the real services the tests use: PostgreSQL and Redis on private ports.
# Prints the environment variables the tests read. Safe to run again: running servers are reused.
set -euo pipefail

PG_PORT="${LORABAKE_TEST_PG_PORT:-55432}"
REDIS_PORT="${LORABAKE_TEST_REDIS_PORT:-56379}"
BASE="${LORABAKE_TEST_SERVICES_DIR:-/tmp/lorabake-services}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >"$BASE-apt.log" 2>&1 || { cat "$BASE-apt.log" >&2; exit 1; }
fi

mkdir -p "$BASE"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
PG_DATA="$BASE/pg"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" -eq 0 ]; then chown postgres "$BASE"; fi
if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U lorabake --auth=trust -E UTF8 >/dev/null
fi
if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$BASE/pg.log" -w \
        -o "-p $PG_PORT -k $BASE -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >&2
fi

if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
        --logfile "$BASE/redis.log" >&2
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

echo "LORABAKE_TEST_POSTGRES_URL=postgresql+psycopg://lorabake@127.0.0.1:$PG_PORT/postgres"
echo "LORABAKE_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
