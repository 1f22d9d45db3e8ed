# A throw-away PostgreSQL server for the registry tests (SPEC §5), sourced by .ci/run.
#
#   . .ci/postgres.sh && pg_start     # exports QML_TEST_POSTGRES_URL; pg_stop removes everything
#
# Debian's `postgresql` package is installed when its binaries are missing. The cluster lives in a
# fresh temporary folder, is run by a non-root user (`postgres` when we are root, else the caller),
# listens on 127.0.0.1 on a free port (and on a unix socket in that folder), trusts local users
# (nothing else can reach it) and runs with fsync off: it only ever holds test data.
# Any failure returns non-zero with the reason and the server log on stderr.

pg_start() {
    PG_BIN=${PG_BIN:-}
    if [ -z "$PG_BIN" ]; then
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
    if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
        echo "postgres: binaries missing, installing Debian's postgresql" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "postgres: cannot install postgresql without root; install it or set PG_BIN" >&2
            return 1
        fi
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || {
            echo "postgres: apt-get install postgresql failed" >&2; return 1; }
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/qml-pg.XXXXXX") || return 1
    PG_RUN=()
    if [ "$(id -u)" -eq 0 ]; then                 # PostgreSQL refuses to run as root
        id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres || return 1
        chown postgres "$PG_DIR"
        PG_RUN=(runuser -u postgres --)
    fi
    PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if ! "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U qml -A trust -E UTF8 --no-sync \
            >"$PG_DIR/initdb.log" 2>&1; then
        echo "postgres: initdb failed:" >&2; cat "$PG_DIR/initdb.log" >&2; return 1
    fi
    if ! "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
            -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR -F -c max_connections=200" start >/dev/null; then
        echo "postgres: the server did not start:" >&2; cat "$PG_DIR/server.log" >&2; return 1
    fi
    if ! "${PG_RUN[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U qml qml_test; then
        echo "postgres: createdb failed:" >&2; cat "$PG_DIR/server.log" >&2; return 1
    fi
    export QML_TEST_POSTGRES_URL="postgresql://qml@127.0.0.1:$PG_PORT/qml_test"
    echo "postgres: test server at $QML_TEST_POSTGRES_URL (data in $PG_DIR)" >&2
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] || return 0
    if [ -f "$PG_DIR/data/postmaster.pid" ]; then
        "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    PG_DIR=
}
