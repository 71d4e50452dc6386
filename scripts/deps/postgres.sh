#!/usr/bin/env bash
# Installs PostgreSQL (Debian package) and starts a throwaway test server for the
# ingress store tests: 127.0.0.1:55432, trust auth on loopback only, superuser `postgres`.
# Tests read DAYSHIFT_TEST_PG_URL (default postgres://postgres@127.0.0.1:55432/postgres)
# and create one fresh database per test. Idempotent: quick when it already runs.
# `postgres.sh stop` stops it (scripts/test.sh does so at its end when it started it).
set -euo pipefail
PORT="${DAYSHIFT_TEST_PG_PORT:-55432}"
DATA="${DAYSHIFT_TEST_PG_DIR:-/var/tmp/dayshift-test-pg}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends postgresql
fi
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
# Run the server as the `postgres` user (it refuses root).
as_pg() {
  if [ "$(id -un)" = postgres ]; then "$@"; else $SUDO runuser -u postgres -- "$@"; fi
}
if [ "${1:-}" = stop ]; then
  # Stops the test server (scripts/test.sh does when it started it).
  if [ -f "$DATA/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null && echo "test PostgreSQL on 127.0.0.1:$PORT stopped"
  fi
  exit 0
fi
if as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  echo "test PostgreSQL already running on 127.0.0.1:$PORT"
  exit 0
fi
$SUDO mkdir -p "$DATA"
$SUDO chown postgres:postgres "$DATA"
$SUDO chmod 700 "$DATA"
if [ ! -f "$DATA/PG_VERSION" ]; then
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --no-sync >/dev/null
fi
as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$DATA -c fsync=off -c max_connections=300" start
as_pg "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT"
echo "test PostgreSQL running on 127.0.0.1:$PORT (data $DATA)"
