#!/bin/bash
# A single-node Swift (tempauth) on loopback for the Swift store's tests and CI.
#
# usage: scripts/swift-backend.sh start|stop|status|env
#   start   installs the Debian packages when missing, writes the config and rings under
#           $SWIFT_BASE (default /tmp/swift-aio), starts memcached and the four servers, waits
#           until tempauth issues a token, then prints the test environment on stdout:
#               eval "$(scripts/swift-backend.sh start)"
#           Progress goes to stderr. Starting an already running backend only prints the env.
#   stop    stops what `start` started (by recorded PID).
#   status  exits 0 when the backend answers, 1 otherwise.
#   env     prints the test environment.
#
# Ports (all 127.0.0.1): proxy $SWIFT_PROXY_PORT (8080), object 6200, container 6201,
# account 6202, memcached $SWIFT_MEMCACHED_PORT (11211).
set -euo pipefail

B=${SWIFT_BASE:-/tmp/swift-aio}
PROXY_PORT=${SWIFT_PROXY_PORT:-8080}
MEMCACHED_PORT=${SWIFT_MEMCACHED_PORT:-11211}
AUTH_URL="http://127.0.0.1:$PROXY_PORT/auth/v1.0"
TEST_USER="test:tester"
TEST_KEY="testing"
SERVERS="account:6202 container:6201 object:6200"

log() { echo "swift-backend: $*" >&2; }
die() { log "$*"; exit 1; }

print_env() {
  echo "export GATEWAY_TEST_SWIFT_AUTH_URL=$AUTH_URL"
  echo "export GATEWAY_TEST_SWIFT_USER=$TEST_USER"
  echo "export GATEWAY_TEST_SWIFT_KEY=$TEST_KEY"
}

auth_ok() {
  curl -sf -o /dev/null --max-time 5 \
    -H "X-Auth-User: $TEST_USER" -H "X-Auth-Key: $TEST_KEY" "$AUTH_URL"
}

pid_alive() {
  local f=$B/run/$1.pid
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

stop() {
  local n f pid pids=""
  for n in proxy object container account memcached; do
    f=$B/run/$n.pid
    if [ -f "$f" ]; then
      pid=$(cat "$f")
      if kill "$pid" 2>/dev/null; then pids="$pids $pid"; fi
      rm -f "$f"
    fi
  done
  # Wait for the ports to be released so an immediate restart can bind them.
  for pid in $pids; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  log "stopped"
}

install_packages() {
  if command -v swift-proxy-server >/dev/null && command -v swift-object-server >/dev/null \
    && command -v swift-container-server >/dev/null && command -v swift-account-server >/dev/null \
    && command -v swift-ring-builder >/dev/null && command -v memcached >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || die "the Swift packages are missing and installing them needs root"
  log "installing swift-proxy swift-object swift-container swift-account memcached"
  # Keep the packages' maintainer scripts from starting services that would hold our ports.
  # Globals, since the EXIT trap may run outside this function.
  POLICY=/usr/sbin/policy-rc.d
  POLICY_SAVED=""
  if [ -e "$POLICY" ]; then POLICY_SAVED=$(mktemp); cp -p "$POLICY" "$POLICY_SAVED"; fi
  restore_policy() {
    if [ -n "$POLICY_SAVED" ]; then mv -f "$POLICY_SAVED" "$POLICY"; else rm -f "$POLICY"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' > "$POLICY"
  chmod 755 "$POLICY"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    swift-proxy swift-object swift-container swift-account memcached >&2
  restore_policy
  trap - EXIT
}

check_xattrs() {
  # The object server keeps metadata in user xattrs.
  local probe=$B/srv/d1/.xattr-probe
  : > "$probe"
  if ! python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.probe", b"1")' "$probe" 2>/dev/null; then
    rm -f "$probe"
    die "$B/srv does not support user xattrs ($(stat -f -c %T "$B/srv")); set SWIFT_BASE to a directory on ext4 or xfs"
  fi
  rm -f "$probe"
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_config() {
  mkdir -p "$B/etc" "$B/srv/d1" "$B/run" "$B/log"
  cat > "$B/etc/swift.conf" <<'EOF'
[swift-hash]
swift_hash_path_suffix = glance-ci-suffix
swift_hash_path_prefix = glance-ci-prefix

[storage-policy:0]
name = Policy-0
default = yes
EOF

  local s n p
  for s in $SERVERS; do
    n=${s%%:*}; p=${s##*:}
    cat > "$B/etc/$n-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $p
workers = 0
user = $(id -un)
swift_dir = $B/etc
devices = $B/srv
mount_check = false
disable_fallocate = true
log_name = $n-server
log_level = INFO

[pipeline:main]
pipeline = healthcheck $n-server

[app:$n-server]
use = egg:swift#$n

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
  done

  cat > "$B/etc/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PROXY_PORT
workers = 0
user = $(id -un)
swift_dir = $B/etc
log_name = proxy-server
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl slo dlo tempauth copy proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
user_test2_tester2 = testing2

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MEMCACHED_PORT

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:bulk]
use = egg:swift#bulk

[filter:tempurl]
use = egg:swift#tempurl

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo

[filter:copy]
use = egg:swift#copy
EOF

  # Rings: 2^10 partitions, one replica, one device each. Built once per $SWIFT_BASE.
  if [ ! -f "$B/etc/object.ring.gz" ]; then
    log "building rings"
    ( cd "$B/etc"
      for s in $SERVERS; do
        n=${s%%:*}; p=${s##*:}
        swift-ring-builder "$n.builder" create 10 1 1 >/dev/null
        swift-ring-builder "$n.builder" add "r1z1-127.0.0.1:$p/d1" 100 >/dev/null
        swift-ring-builder "$n.builder" rebalance >/dev/null
      done )
  fi
}

start() {
  if pid_alive proxy && auth_ok; then
    log "already running under $B"
    print_env
    return
  fi
  stop 2>/dev/null
  install_packages
  write_config
  check_xattrs
  local p s n
  for p in "$MEMCACHED_PORT" 6200 6201 6202 "$PROXY_PORT"; do
    port_free "$p" || die "127.0.0.1:$p is already in use by another process"
  done

  cd "$B"
  nohup memcached -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 64 -u "$(id -un)" \
    > log/memcached.log 2>&1 &
  echo $! > run/memcached.pid
  for n in account container object proxy; do
    nohup "swift-$n-server" "etc/$n-server.conf" -v > "log/$n.log" 2>&1 &
    echo $! > "run/$n.pid"
  done

  # Ready when every server answers /healthcheck and tempauth issues a token.
  local deadline=$((SECONDS + 90))
  for p in 6200 6201 6202 "$PROXY_PORT"; do
    until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$p/healthcheck"; do
      if [ $SECONDS -ge $deadline ]; then
        tail -n 20 "$B"/log/*.log >&2
        stop
        die "server on :$p did not become healthy"
      fi
      sleep 0.2
    done
  done
  until auth_ok; do
    if [ $SECONDS -ge $deadline ]; then stop; die "tempauth did not issue a token"; fi
    sleep 0.2
  done
  log "ready: auth $AUTH_URL user $TEST_USER (state under $B)"
  print_env
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) pid_alive proxy && auth_ok ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
