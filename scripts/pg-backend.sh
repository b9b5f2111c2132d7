#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL cluster on 127.0.0.1 for the PostgreSQL registry's tests
# and CI. The cluster runs as the unprivileged `postgres` user (initdb refuses root), in a fresh
# directory, with password authentication for the test role.
#
# usage: scripts/pg-backend.sh start     install Debian's postgresql if missing; unless already
#                                        running, initdb a FRESH cluster and start it; print the
#                                        exports
#        scripts/pg-backend.sh stop      stop the cluster (its directory stays)
#        scripts/pg-backend.sh env       print the exports only
#        scripts/pg-backend.sh status    exit 0 when the server answers
#
# Typical use: eval "$(scripts/pg-backend.sh start)" && GATEWAY_TEST_REGISTRY=postgres cargo test
#
# Knobs (environment): PG_DIR (default ${TMPDIR:-/tmp}/gateway-pg), PG_PORT (55432),
# PG_USER / PG_PASSWORD (fixed test role), PG_OS_USER (postgres). The exported URL carries no
# password: GATEWAY_TEST_PG_PASSWORD_FILE names the file holding it, as the gateway reads it.
# Every log line goes to stderr, so stdout carries only the exports.
set -euo pipefail

DIR=${PG_DIR:-${TMPDIR:-/tmp}/gateway-pg}
PORT=${PG_PORT:-55432}
PGUSER_NAME=${PG_USER:-gateway}
PASSWORD=${PG_PASSWORD:-gatewaytestpw}
OS_USER=${PG_OS_USER:-postgres}
DATA="$DIR/data"

log() { echo "pg-backend: $*" >&2; }

bindir() {
  # The newest installed major version's binaries.
  local v
  v=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
  [ -n "$v" ] && [ -x "/usr/lib/postgresql/$v/bin/initdb" ] && echo "/usr/lib/postgresql/$v/bin"
}

install() {
  if bindir >/dev/null; then
    return
  fi
  log "installing Debian's postgresql"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
}

as_os_user() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$OS_USER" -- "$@"
  else
    "$@"
  fi
}

ready() {
  local bin
  bin=$(bindir) || return 1
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2
}

print_env() {
  echo "export GATEWAY_TEST_PG_URL=postgres://$PGUSER_NAME@127.0.0.1:$PORT/postgres"
  echo "export GATEWAY_TEST_PG_PASSWORD_FILE=$DIR/password"
}

start() {
  install
  local bin
  bin=$(bindir)
  if ready; then
    if [ -f "$DIR/password" ]; then
      log "already running on port $PORT"
      print_env
      return
    fi
    log "port $PORT is taken by a server this script did not start"
    exit 1
  fi
  if [ "$(id -u)" = 0 ] && ! id "$OS_USER" >/dev/null 2>&1; then
    useradd --system --home-dir "$DIR" --shell /usr/sbin/nologin "$OS_USER"
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  printf '%s\n' "$PASSWORD" > "$DIR/password"
  # The server's own copy, readable by the OS user only while initdb reads it.
  local pwinit
  pwinit=$(mktemp "$DIR/pwinit.XXXXXX")
  printf '%s\n' "$PASSWORD" > "$pwinit"
  if [ "$(id -u)" = 0 ]; then chown -R "$OS_USER" "$DIR"; chmod 644 "$DIR/password"; fi
  # md5 rather than scram-sha-256: SCRAM's 4096 hash rounds make every connection of a debug
  # build's client slow, and the tests open many. The gateway speaks both.
  as_os_user "$bin/initdb" -D "$DATA" -U "$PGUSER_NAME" --pwfile="$pwinit" \
    --auth-host=md5 --auth-local=trust -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1 || {
    cat "$DIR/initdb.log" >&2
    exit 1
  }
  rm -f "$pwinit"
  cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 400
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
CONF
  as_os_user "$bin/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 30 start >&2
  for _ in $(seq 1 50); do
    ready && break
    sleep 0.2
  done
  ready || { log "the server did not start; see $DIR/server.log"; exit 1; }
  # Re-hash the password as md5 (initdb stored it as SCRAM), over the trusted local socket.
  as_os_user "$bin/psql" -q -h "$DIR" -p "$PORT" -U "$PGUSER_NAME" -d postgres -v ON_ERROR_STOP=1 \
    -c "SET password_encryption = 'md5'" \
    -c "ALTER ROLE \"$PGUSER_NAME\" PASSWORD '$PASSWORD'" >&2
  log "ready on 127.0.0.1:$PORT (data in $DATA)"
  print_env
}

stop() {
  local bin
  bin=$(bindir) || exit 0
  if [ -f "$DATA/postmaster.pid" ]; then
    as_os_user "$bin/pg_ctl" -D "$DATA" -m fast -w stop >&2 || true
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  status) ready ;;
  *) echo "usage: $0 start|stop|env|status" >&2; exit 2 ;;
esac
