#!/usr/bin/env bash
# Where the CPU goes on the S3 path (a script, not a timed test): for each transfer of the same
# file, directly (benches/s3_direct.rs) and through the gateway, prints the wall time and the
# CPU-seconds spent by the S3 server, by the gateway and by everything else (the client and the
# kernel's softirq work), and the machine's idle CPU-seconds, from /proc/<pid>/stat and
# /proc/stat. On a machine the transfers saturate, wall time is about total CPU / cores, so
# this shows what any gap to the direct path is made of.
#
# usage: benches/s3_cpu.sh
# knobs: BENCH_SIZE_MIB (1024), BENCH_RUNS (3), BENCH_DIR (${TMPDIR:-/tmp}/gateway-s3-cpu),
#        BENCH_PORT (19392), BENCH_HASHING (sha512), BENCH_BUILD (1: build first; 0: use the
#        binaries in the target dir as they are)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/gateway-s3-cpu}
PORT=${BENCH_PORT:-19392}
HASHING=${BENCH_HASHING:-sha512}
GATEWAY="http://127.0.0.1:$PORT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/glance-gateway
DIRECT=$TARGET/release/examples/s3_direct

log() { echo "bench: $*" >&2; }
if [ "${BENCH_BUILD:-1}" = 1 ]; then
  log "release build"
  cargo build --release --quiet --bin glance-gateway --example s3_direct
fi

mkdir -p "$DIR"
# The store as benches/s3.sh configures it by default.
PART_MIB=16 IN_FLIGHT=4 PART_MEMORY_MIB=1024 PART_CHECKSUM=auto
# shellcheck source=benches/s3_gateway.sh
. "$ROOT/benches/s3_gateway.sh"
s3_backend_start
gateway_pid=""
cleanup() {
  s3_stop
  rm -rf "$DIR"
}
trap cleanup EXIT
s3_gateway_start
head -c $((SIZE_MIB * 1048576)) /dev/urandom > "$DIR/image.bin"

hz=$(getconf CLK_TCK)
server_pids() { pgrep -f "${S3_VENV:-/opt/seaweedfs}" || true; }
# Clock ticks (user + system) of the given processes, all their threads included.
ticks() { local sum=0 pid; for pid in "$@"; do [ -r "/proc/$pid/stat" ] && sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$sum"; }
# Busy and idle clock ticks of the whole machine.
machine() { awk '/^cpu / {print $2 + $3 + $4 + $6 + $7 + $8, $5}' /proc/stat; }

# measure LABEL COMMAND...: runs the command once, prints its line of the table.
measure() {
  local label=$1 s0 g0 m0 i0 t0 s1 g1 m1 i1 t1
  shift
  sync
  # shellcheck disable=SC2046
  s0=$(ticks $(server_pids)); g0=$(ticks "$gateway_pid"); read -r m0 i0 < <(machine); t0=$(date +%s.%N)
  "$@" > /dev/null
  # shellcheck disable=SC2046
  t1=$(date +%s.%N); s1=$(ticks $(server_pids)); g1=$(ticks "$gateway_pid"); read -r m1 i1 < <(machine)
  awk -v l="$label" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v s=$((s1 - s0)) -v g=$((g1 - g0)) \
    -v m=$((m1 - m0)) -v i=$((i1 - i0)) 'BEGIN {
      printf "  %-30s %7.2f %9.2f %9.2f %17.2f %7.2f\n", l, t1 - t0, s / hz, g / hz, (m - s - g) / hz, i / hz }'
}

echo "S3 CPU accounting: $SIZE_MIB MiB, $(nproc) cores, hashing_algorithm $HASHING (CPU-seconds per transfer)"
printf '  %-30s %7s %9s %9s %17s %7s\n' transfer "wall s" "S3 server" gateway "client, kernel" idle
for run in $(seq 1 "$RUNS"); do
  key="bench/direct/cpu-$run"
  measure "direct upload" "$DIRECT" put "$DIR/image.bin" "$key" 16 4
  measure "upload through the gateway" curl -sS --fail -X POST -T "$DIR/image.bin" -o "$DIR/created.json" \
    -H 'Content-Type: application/octet-stream' -H "x-image-meta-name: cpu-$run" \
    -H 'x-image-meta-disk_format: raw' -H 'x-image-meta-container_format: bare' "$GATEWAY/v1/images"
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["id"])' "$DIR/created.json")
  measure "direct download" "$DIRECT" get "$key"
  measure "download through the gateway" curl -sS --fail -o /dev/null "$GATEWAY/v1/images/$id"
  "$DIRECT" delete "$key" > /dev/null
  curl -sS -o /dev/null -X DELETE "$GATEWAY/v1/images/$id"
done
