#!/bin/bash
# Bench: uploads and downloads through the gateway against direct Swift PUT/GET of the same file,
# in the same run, on a single-node Swift started by scripts/swift-backend.sh.
#
# usage: benches/swift.sh
#   BENCH_SIZE_MIB           size of the test file (default 1024)
#   BENCH_RUNS               runs of the four transfers (default 3)
#   BENCH_LARGE_OBJECT_SIZE  the gateway store's large_object_size (default 5 GiB: one plain PUT)
#   BENCH_SEGMENT_SIZE       the gateway store's segment_size (default 200 MiB)
#   BENCH_GATEWAY_PORT       where the gateway listens (default 9393)
#   BENCH_DIR                where the test file and the gateway's data go (default /tmp)
#   BENCH_HASHING            the gateway's hashing_algorithm (default sha512, the gateway's
#                            default; none gives MD5 only)
#
# Each run: direct Swift PUT (curl -T), gateway upload (POST /v1/images, curl -T), direct Swift
# GET, gateway GET. Prints the medians, the gateway/direct ratios (targets: up <= 1.10x,
# down <= 1.05x), md5sum's throughput over the file (the gateway hashes every upload) and the
# gateway's peak RSS. Swift is stopped at the end if this script started it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
LARGE=${BENCH_LARGE_OBJECT_SIZE:-5368709120}
SEGMENT=${BENCH_SEGMENT_SIZE:-209715200}
PORT=${BENCH_GATEWAY_PORT:-9393}
GW="http://127.0.0.1:$PORT"

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/gateway-bench.XXXXXX")
GW_PID=""
STARTED_SWIFT=""
finish() {
  if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
    kill "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
  fi
  if [ -n "$STARTED_SWIFT" ]; then "$ROOT/scripts/swift-backend.sh" stop || true; fi
  rm -rf "$WORK"
}
trap finish EXIT

log "release build"
(cd "$ROOT" && cargo build --release --quiet --bin glance-gateway)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/glance-gateway

FILE=$WORK/image.bin
BYTES=$((SIZE_MIB * 1024 * 1024))
log "writing a test file of $SIZE_MIB MiB"
head -c "$BYTES" /dev/urandom > "$FILE"

if ! "$ROOT/scripts/swift-backend.sh" status 2>/dev/null; then STARTED_SWIFT=1; fi
eval "$("$ROOT/scripts/swift-backend.sh" start)"

# Auth v1 for the direct transfers.
AUTH_HEADERS=$(curl -sSf -D - -o /dev/null \
  -H "X-Auth-User: $GATEWAY_TEST_SWIFT_USER" -H "X-Auth-Key: $GATEWAY_TEST_SWIFT_KEY" \
  "$GATEWAY_TEST_SWIFT_AUTH_URL" | tr -d '\r')
STORAGE_URL=$(awk -F': ' 'tolower($1)=="x-storage-url" {print $2}' <<< "$AUTH_HEADERS")
TOKEN=$(awk -F': ' 'tolower($1)=="x-auth-token" {print $2}' <<< "$AUTH_HEADERS")
[ -n "$STORAGE_URL" ] && [ -n "$TOKEN" ] || die "Swift auth gave no storage URL or token"

RUN_ID=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
DIRECT=bench-direct-$RUN_ID
GW_CONTAINER=bench-gateway-$RUN_ID
curl -sSf -o /dev/null -X PUT -H "X-Auth-Token: $TOKEN" "$STORAGE_URL/$DIRECT"

# The admin listener on a free port: its default may be taken by another gateway.
ADMIN_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
cat > "$WORK/gateway.toml" <<EOF
default_store = "swift"
hashing_algorithm = "${BENCH_HASHING:-sha512}"
admin_bind = "127.0.0.1:$ADMIN_PORT"

[stores.swift]
kind = "swift"
auth_url = "$GATEWAY_TEST_SWIFT_AUTH_URL"
user = "$GATEWAY_TEST_SWIFT_USER"
key = "$GATEWAY_TEST_SWIFT_KEY"
container = "$GW_CONTAINER"
create_container = true
large_object_size = $LARGE
segment_size = $SEGMENT
EOF

(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "127.0.0.1:$PORT is in use (set BENCH_GATEWAY_PORT)"
RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$WORK/gateway.toml" --bind "127.0.0.1:$PORT" \
  --data-dir "$WORK/data" > "$WORK/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$GW/v1/images" || true)" = 200 ] && break
  kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/gateway.log" >&2; die "the gateway exited"; }
  sleep 0.1
done

log "md5sum of the file"
t0=$(date +%s.%N)
MD5=$(md5sum "$FILE" | cut -d' ' -f1)
t1=$(date +%s.%N)
MD5_SECS=$(echo "$t1 - $t0" | bc -l)

# curl's own timing of a transfer; fails unless the status is $1.
timed() {
  local want=$1; shift
  local out code secs
  out=$(curl -sS -w '%{http_code} %{time_total}' "$@")
  read -r code secs <<< "$out"
  [ "$code" = "$want" ] || die "expected HTTP $want, got $code: curl $*"
  echo "$secs"
}

declare -a D_UP G_UP D_DOWN G_DOWN
for run in $(seq "$RUNS"); do
  log "run $run/$RUNS"
  # Each timed transfer starts with no dirty pages left by the one before (writing them back
  # would slow whichever came second), and the direct path goes first only on odd runs.
  direct_up() { sync; D_UP+=("$(timed 201 -o /dev/null -H "X-Auth-Token: $TOKEN" -T "$FILE" "$STORAGE_URL/$DIRECT/image")"); }
  if [ $((run % 2)) = 1 ]; then direct_up; fi
  sync
  G_UP+=("$(timed 201 -o "$WORK/created.json" -X POST \
    -H 'Content-Type: application/octet-stream' -H "x-image-meta-name: bench-$run" \
    -H 'x-image-meta-disk_format: raw' -H 'x-image-meta-container_format: bare' \
    -T "$FILE" "$GW/v1/images")")
  if [ $((run % 2)) = 0 ]; then direct_up; fi
  ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["id"])' < "$WORK/created.json")
  SUM=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["checksum"])' < "$WORK/created.json")
  [ "$SUM" = "$MD5" ] || die "the gateway's checksum $SUM is not the file's $MD5"
  sync
  if [ $((run % 2)) = 1 ]; then
    D_DOWN+=("$(timed 200 -o /dev/null -H "X-Auth-Token: $TOKEN" "$STORAGE_URL/$DIRECT/image")")
    G_DOWN+=("$(timed 200 -o /dev/null "$GW/v1/images/$ID")")
  else
    G_DOWN+=("$(timed 200 -o /dev/null "$GW/v1/images/$ID")")
    D_DOWN+=("$(timed 200 -o /dev/null -H "X-Auth-Token: $TOKEN" "$STORAGE_URL/$DIRECT/image")")
  fi
  curl -sSf -o /dev/null -X DELETE "$GW/v1/images/$ID"
done
curl -sS -o /dev/null -X DELETE -H "X-Auth-Token: $TOKEN" "$STORAGE_URL/$DIRECT/image" || true
curl -sS -o /dev/null -X DELETE -H "X-Auth-Token: $TOKEN" "$STORAGE_URL/$DIRECT" || true

PEAK_RSS=$(awk '/^VmHWM/ {print $2, $3}' "/proc/$GW_PID/status")

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rate() { echo "scale=1; $SIZE_MIB / $1" | bc -l; }
ratio() { echo "scale=3; $1 / $2" | bc -l; }

du=$(median "${D_UP[@]}"); gu=$(median "${G_UP[@]}")
dd=$(median "${D_DOWN[@]}"); gd=$(median "${G_DOWN[@]}")
if [ "$LARGE" -le "$BYTES" ]; then
  SHAPE="segments of $SEGMENT bytes + manifest"
else
  SHAPE="one plain PUT"
fi
cat <<EOF

Swift bench: $SIZE_MIB MiB, $RUNS runs, gateway store: $SHAPE, hashing_algorithm ${BENCH_HASHING:-sha512}
                   median s   MiB/s   all runs (s)
direct Swift PUT   $(printf '%8.3f %7s' "$du" "$(rate "$du")")   ${D_UP[*]}
gateway upload     $(printf '%8.3f %7s' "$gu" "$(rate "$gu")")   ${G_UP[*]}
direct Swift GET   $(printf '%8.3f %7s' "$dd" "$(rate "$dd")")   ${D_DOWN[*]}
gateway GET        $(printf '%8.3f %7s' "$gd" "$(rate "$gd")")   ${G_DOWN[*]}

ratio up   (gateway/direct): $(ratio "$gu" "$du")  (target <= 1.10)
ratio down (gateway/direct): $(ratio "$gd" "$dd")  (target <= 1.05)
md5sum of the file: $(printf '%.3f' "$MD5_SECS") s, $(rate "$MD5_SECS") MiB/s
gateway peak RSS (VmHWM): $PEAK_RSS
EOF
