#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the database tests (tests/store) and print the
# line that points them at it:
#
#   eval "$(.ci/postgres.sh)"          # start (or reuse) the server, export LESIONQ_TEST_POSTGRES_URL
#   .ci/postgres.sh stop               # stop it and delete the cluster
#
# Idempotent: a server already running in $LESIONQ_PG_DIR is reused. Installs the Debian
# package `postgresql` when no initdb is found under /usr/lib/postgresql/*/bin. The cluster
# lives in a temporary folder owned by user `postgres` (initdb refuses to run as root),
# listens on 127.0.0.1 only, on a free port, with fsync off (test data only). Role and
# database: lesionq_test (password lesionq_test). Everything but the export line goes to stderr.
set -euo pipefail

PGDIR="${LESIONQ_PG_DIR:-${TMPDIR:-/tmp}/lesionq-postgres}"
ROLE=lesionq_test
DB=lesionq_test
PASSWORD=lesionq_test

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; fi
}

BIN=$(find_bin)
if [[ -z "$BIN" ]]; then
    if [[ "$(id -u)" != 0 ]]; then
        log "no initdb under /usr/lib/postgresql/*/bin and not root: install the 'postgresql' package"
        exit 1
    fi
    log "installing the Debian package postgresql"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends postgresql >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends postgresql >&2
    fi
    BIN=$(find_bin)
    if [[ -z "$BIN" ]]; then
        log "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
        exit 1
    fi
fi

# Run a command as the cluster owner: user postgres when we are root, ourselves otherwise.
if [[ "$(id -u)" == 0 ]]; then
    OWNER=postgres
    as_owner() { runuser -u postgres -- "$@"; }
else
    OWNER=$(id -un)
    as_owner() { "$@"; }
fi

DATA="$PGDIR/data"
SOCK="$PGDIR/socket"

running() {
    [[ -f "$PGDIR/port" && -f "$DATA/PG_VERSION" ]] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

if [[ "${1:-}" == "stop" ]]; then
    if running; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2; fi
    rm -rf "$PGDIR"
    log "stopped, removed $PGDIR"
    exit 0
fi

if running; then
    PORT=$(cat "$PGDIR/port")
    log "reusing the server in $PGDIR (port $PORT)"
else
    if [[ -d "$PGDIR" ]]; then
        # a stale folder (server stopped, machine rebooted): start from scratch
        if [[ -f "$DATA/PG_VERSION" ]]; then as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true; fi
        rm -rf "$PGDIR"
    fi
    mkdir -p "$PGDIR" "$SOCK"
    chown -R "$OWNER" "$PGDIR"
    chmod 700 "$PGDIR"
    PWFILE="$PGDIR/superuser.pw"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PWFILE"
    chown "$OWNER" "$PWFILE"
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$PWFILE" -E UTF8 --no-locale --no-sync >&2
    # a free TCP port on 127.0.0.1
    PORT=""
    for p in $(seq 54329 54429); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORT=$p; break; fi
    done
    if [[ -z "$PORT" ]]; then log "no free port in 54329-54429"; exit 1; fi
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$PGDIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $SOCK -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >&2
    echo "$PORT" >"$PGDIR/port"
    PSQL=("$BIN/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q)
    as_owner "${PSQL[@]}" -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'" >&2
    as_owner "${PSQL[@]}" -c "CREATE DATABASE $DB OWNER $ROLE" >&2
    log "started $("$BIN/postgres" --version) in $PGDIR on 127.0.0.1:$PORT"
fi

echo "export LESIONQ_TEST_POSTGRES_URL=postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
