#!/usr/bin/env bash
# Interop test: python-glanceclient's image API v1 (CLI and Python API) against the gateway.
#
#   GATEWAY_BIN   gateway binary to test (default target/debug/glance-gateway; built elsewhere)
#   INTEROP_VENV  virtualenv to create or reuse (default ${TMPDIR:-/tmp}/glance-interop-venv)
#   GLANCECLIENT_VERSION  client version to install (default 4.13.0, the last one we checked
#                 still ships glanceclient.v1)
#
# Needs only python3 (with pip or the venv module). Starts the gateway on a free loopback port
# with a fresh data directory, runs tests/interop/glanceclient_v1.py, stops the gateway and
# exits non-zero on any failure. The last line is "N passed, M failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

GATEWAY_BIN="${GATEWAY_BIN:-target/debug/glance-gateway}"
INTEROP_VENV="${INTEROP_VENV:-${TMPDIR:-/tmp}/glance-interop-venv}"
GLANCECLIENT_VERSION="${GLANCECLIENT_VERSION:-4.13.0}"
PYTHON="${PYTHON:-python3}"

fail() {
    echo "interop: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

[ -x "$GATEWAY_BIN" ] || fail "gateway binary $GATEWAY_BIN not found (build it first: cargo build --bin glance-gateway)"
command -v "$PYTHON" >/dev/null || fail "$PYTHON not found"

# --- the client virtualenv, reused when it already holds the right client ---
venv_ok() {
    [ -x "$INTEROP_VENV/bin/python" ] && [ -x "$INTEROP_VENV/bin/glance" ] &&
        "$INTEROP_VENV/bin/python" - "$GLANCECLIENT_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import glanceclient.v1.client  # noqa: F401 - the v1 API must be there
sys.exit(0 if version("python-glanceclient") == sys.argv[1] else 1)
EOF
}

make_venv() {
    rm -rf "$INTEROP_VENV"
    if "$PYTHON" -m venv "$INTEROP_VENV" >/dev/null 2>&1 && [ -x "$INTEROP_VENV/bin/pip" ]; then
        return 0
    fi
    # No venv module or no ensurepip (a Debian python3 without python3-venv): bootstrap
    # virtualenv into a private directory with the system pip and let it make the venv.
    rm -rf "$INTEROP_VENV"
    local boot
    boot="$(mktemp -d)"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --target "$boot" virtualenv ||
        fail "cannot create a virtualenv: neither 'python3 -m venv' nor pip is usable"
    PYTHONPATH="$boot" "$PYTHON" -m virtualenv --quiet "$INTEROP_VENV" ||
        fail "virtualenv could not create $INTEROP_VENV"
    rm -rf "$boot"
}

if venv_ok; then
    echo "interop: reusing $INTEROP_VENV (python-glanceclient $GLANCECLIENT_VERSION)"
else
    echo "interop: creating $INTEROP_VENV with python-glanceclient==$GLANCECLIENT_VERSION"
    make_venv
    "$INTEROP_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "python-glanceclient==$GLANCECLIENT_VERSION" ||
        fail "pip could not install python-glanceclient==$GLANCECLIENT_VERSION"
    venv_ok || fail "python-glanceclient $GLANCECLIENT_VERSION installed but glanceclient.v1 does not import"
fi

# --- the gateway, on a free loopback port with a fresh data directory ---
data_dir="$(mktemp -d "${TMPDIR:-/tmp}/glance-interop-data.XXXXXX")"
log="$data_dir.log"
gateway_pid=""
cleanup() {
    if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    rm -rf "$data_dir" "$log"
}
trap cleanup EXIT

port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
endpoint="http://127.0.0.1:$port/"
# The admin listener on a free port too, so runs side by side do not collide on 9293.
RUST_LOG="${RUST_LOG:-warn}" "$GATEWAY_BIN" serve --bind "127.0.0.1:$port" \
    --admin-bind 127.0.0.1:0 --data-dir "$data_dir/data" --auth noauth >"$log" 2>&1 &
gateway_pid=$!

ready=""
for _ in $(seq 1 100); do
    if ! kill -0 "$gateway_pid" 2>/dev/null; then
        cat "$log" >&2
        fail "the gateway exited before it was ready"
    fi
    if "$PYTHON" - "$endpoint" <<'EOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "versions", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
        ready=1
        break
    fi
    sleep 0.2
done
[ -n "$ready" ] || { cat "$log" >&2; fail "the gateway did not answer on $endpoint within 20 s"; }
echo "interop: gateway $GATEWAY_BIN on $endpoint (pid $gateway_pid)"

status=0
"$INTEROP_VENV/bin/python" -u "$here/glanceclient_v1.py" --endpoint "$endpoint" | tee "$data_dir/driver.out" ||
    status=$?
summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$data_dir/driver.out" | tail -n 1 || true)"
if ! kill -0 "$gateway_pid" 2>/dev/null; then
    echo "interop: the gateway died during the run; its log:" >&2
    cat "$log" >&2
    status=1
elif [ "$status" -ne 0 ]; then
    echo "interop: gateway log (last 40 lines):" >&2
    tail -n 40 "$log" >&2
fi
if [ "$status" -ne 0 ]; then
    # Keep the count as the closing line, after the log.
    echo "${summary:-0 passed, 1 failed}"
fi
exit "$status"
