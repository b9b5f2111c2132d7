#!/usr/bin/env bash
# File-store benchmark (a script, not a timed test): uploads and downloads one large image through
# the gateway and prints its throughput next to what the machine itself manages on the same file.
#
#   BENCH_SIZE_GIB  size of the test image in GiB (default 4)
#   BENCH_RUNS      upload/download rounds; medians are reported (default 3)
#   BENCH_DIR       scratch directory for the test file, the copies and the gateway's data dir,
#                   all on one filesystem (default ${TMPDIR:-/tmp}/glance-bench.XXXXXX, removed
#                   at the end)
#   GATEWAY_BIN     binary to run (default ${CARGO_TARGET_DIR:-target}/release/glance-gateway)
#   BENCH_BUILD     1 (default) builds it first with `cargo build --release`; 0 uses it as is
#   BENCH_HASHING   the gateway's hashing_algorithm (default sha512, as the gateway's default;
#                   none gives MD5 only)
#   BENCH_DIRECT_IO the file store's direct_io, true or false (default: unset, the gateway's
#                   default store as it comes)
#   BENCH_PARALLEL  uploads (then downloads) run at once in the concurrent phase (default 8;
#                   0 skips it)
#   BENCH_PARALLEL_MIB  size of each of those images in MiB (default 256)
#
# Limits measured on the same file: `md5sum` (the gateway hashes every byte it stores; with the
# default `hashing_algorithm` it also computes SHA-512, on another thread, so `sha512sum` is shown
# too, though the upload target stays the MD5 limit), a cached
# read (`cat > /dev/null`), and a disk copy with fsync (`dd conv=fsync`, as the file store syncs
# before it renames). Gateway runs: POST /v1/images with the file as an octet-stream body (curl
# -T, streamed, never buffered), the returned checksum checked against md5sum; GET to /dev/null
# and GET to a file on the same disk (plus fsync). The gateway's peak RSS is VmHWM from
# /proc/<pid>/status after the single transfers; it is reset (clear_refs) before the concurrent
# phase, which reports its own. Every gateway figure is also printed as a time ratio against its
# limit measured in the same round (lower is better; targets from the performance goals): the
# upload against the slower of md5sum and dd, downloads against md5sum and the cached read.
#
# Concurrent phase: BENCH_PARALLEL uploads of BENCH_PARALLEL_MIB MiB at once, then as many
# downloads at once, aggregate MiB/s; the limit is the same work done by the tools at once
# (md5sum, plus sha512sum unless BENCH_HASHING=none, of every file; cat of every file).
#
# The test file fits in the page cache on most machines, so
# reads are cache reads for every contender alike.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

BENCH_SIZE_GIB="${BENCH_SIZE_GIB:-4}"
BENCH_RUNS="${BENCH_RUNS:-3}"
GATEWAY_BIN="${GATEWAY_BIN:-${CARGO_TARGET_DIR:-target}/release/glance-gateway}"
BENCH_BUILD="${BENCH_BUILD:-1}"
BENCH_HASHING="${BENCH_HASHING:-sha512}"
BENCH_DIRECT_IO="${BENCH_DIRECT_IO:-}"
BENCH_PARALLEL="${BENCH_PARALLEL:-8}"
BENCH_PARALLEL_MIB="${BENCH_PARALLEL_MIB:-256}"
RSS_TARGET_MIB=64

die() {
    echo "bench: $*" >&2
    exit 1
}
for tool in curl md5sum sha512sum dd awk; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[[ "$BENCH_SIZE_GIB" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_GIB must be a positive integer"
[[ "$BENCH_RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ "$BENCH_PARALLEL" =~ ^[0-9]+$ ]] || die "BENCH_PARALLEL must be a number"
[[ "$BENCH_PARALLEL_MIB" =~ ^[1-9][0-9]*$ ]] || die "BENCH_PARALLEL_MIB must be a positive integer"

if [ "$BENCH_BUILD" = 1 ]; then
    echo "bench: cargo build --release --bin glance-gateway"
    cargo build --release --bin glance-gateway
fi
[ -x "$GATEWAY_BIN" ] || die "gateway binary $GATEWAY_BIN not found"

if [ -n "${BENCH_DIR:-}" ]; then
    mkdir -p "$BENCH_DIR"
    work="$(mktemp -d "$BENCH_DIR/glance-bench.XXXXXX")"
else
    work="$(mktemp -d "${TMPDIR:-/tmp}/glance-bench.XXXXXX")"
fi
gateway_pid=""
cleanup() {
    if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

size=$((BENCH_SIZE_GIB * 1024 * 1024 * 1024))
# Source file, one copy (dd), the stored object and one download on disk at a time, the
# concurrent phase's file and objects, plus slack.
need_kib=$((size / 1024 * 4 + BENCH_PARALLEL_MIB * 1024 * (BENCH_PARALLEL + 1) + 1024 * 1024))
avail_kib="$(df -Pk "$work" | awk 'NR == 2 { print $4 }')"
[ "$avail_kib" -ge "$need_kib" ] ||
    die "$work has $((avail_kib / 1024)) MiB free; $((need_kib / 1024)) MiB are needed"

now() { date +%s.%N; }
# mib_per_s BYTES SECONDS
mib_per_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# upload BODY_FILE NAME: POSTs the file, prints the answer
upload() {
    curl -sS --fail-with-body -X POST -T "$1" -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' \
        -H "x-image-meta-name: $2" -H 'x-image-meta-disk_format: raw' \
        -H 'x-image-meta-container_format: bare' "$base/v1/images"
}
# wait_all PID...: waits for each (never for the gateway, also a child); fails if any failed
wait_all() {
    local failed=0 pid
    for pid in "$@"; do wait "$pid" || failed=1; done
    return "$failed"
}
json_field() { printf '%s' "$1" | sed -n "s/.*\"$2\": *\"\([0-9a-z_-]*\)\".*/\1/p"; }

echo "bench: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory"
echo "bench: scratch directory $work ($(df -Ph "$work" | awk 'NR == 2 { print $1 ", " $4 " free" }'))"

src="$work/image.bin"
echo "bench: writing a ${BENCH_SIZE_GIB} GiB test file of random data"
t0=$(now)
if command -v openssl >/dev/null; then
    # A random stream is cheaper to make with openssl than from /dev/urandom.
    # (openssl ends on SIGPIPE once head has enough: the size check below is what counts.)
    { openssl enc -aes-128-ctr -nosalt -pass pass:"glance-bench-$$-$RANDOM" </dev/zero 2>/dev/null |
        head -c "$size" >"$src"; } || true
else
    head -c "$size" /dev/urandom >"$src"
fi
[ "$(stat -c %s "$src")" -eq "$size" ] || die "test file has the wrong size"
sync "$src" 2>/dev/null || sync # its write-back must not slow the disk measurements down
echo "bench: test file written in $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s"

# --- the gateway ---
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000)))"
base="http://127.0.0.1:$port"
# The admin listener on a free port too: its default may be taken by another gateway.
admin_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
printf 'hashing_algorithm = "%s"\nadmin_bind = "127.0.0.1:%s"\n' "$BENCH_HASHING" "$admin_port" >"$work/gateway.toml"
if [ -n "$BENCH_DIRECT_IO" ]; then
    printf '[stores.file]\nkind = "file"\nroot = "%s"\ndirect_io = %s\n' \
        "$work/data/images" "$BENCH_DIRECT_IO" >>"$work/gateway.toml"
fi
RUST_LOG="${RUST_LOG:-warn}" "$GATEWAY_BIN" serve --config "$work/gateway.toml" --bind "127.0.0.1:$port" \
    --data-dir "$work/data" --auth noauth >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$base/versions" && break
    kill -0 "$gateway_pid" 2>/dev/null || { cat "$work/gateway.log" >&2; die "the gateway exited"; }
    sleep 0.2
done
curl -sf -o /dev/null "$base/versions" || die "the gateway did not start on $base"
echo "bench: gateway $GATEWAY_BIN on $base (pid $gateway_pid, hashing_algorithm $BENCH_HASHING, direct_io ${BENCH_DIRECT_IO:-default}), RSS after start $(awk '/VmRSS/ { print $2 " " $3 }' "/proc/$gateway_pid/status")"

expected_md5="$(md5sum "$src" | cut -d' ' -f1)"
echo "bench: md5 of the test file $expected_md5"

# Each round measures the limits and then the gateway, so that a change in the machine's load
# (it may be shared) hits both sides alike.
md5_rates=() sha_rates=() read_rates=() disk_rates=()
up_rates=() down_null_rates=() down_disk_rates=()
for run in $(seq 1 "$BENCH_RUNS"); do
    t0=$(now)
    sum="$(md5sum "$src" | cut -d' ' -f1)"
    md5_rates+=("$(mib_per_s "$size" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")
    [ "$sum" = "$expected_md5" ] || die "md5sum changed between runs"

    t0=$(now)
    sha512sum "$src" >/dev/null
    sha_rates+=("$(mib_per_s "$size" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")

    t0=$(now)
    cat "$src" >/dev/null
    read_rates+=("$(mib_per_s "$size" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")

    t0=$(now)
    dd if="$src" of="$work/copy.bin" bs=4M conv=fsync status=none
    disk_rates+=("$(mib_per_s "$size" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")
    rm -f "$work/copy.bin"

    t0=$(now)
    response="$(upload "$src" "bench-$run")" || die "upload $run failed: $response"
    up_rates+=("$(mib_per_s "$size" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")
    id="$(json_field "$response" id)"
    checksum="$(json_field "$response" checksum)"
    status="$(json_field "$response" status)"
    [ "$status" = active ] || die "upload $run: status '$status', answer: $response"
    [ "$checksum" = "$expected_md5" ] ||
        die "upload $run: gateway checksum $checksum, md5sum says $expected_md5"

    t0=$(now)
    got="$(curl -sS -f -o /dev/null -w '%{size_download}' "$base/v1/images/$id")"
    down_null_rates+=("$(mib_per_s "$size" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")
    [ "$got" -eq "$size" ] || die "download $run to /dev/null: $got bytes, expected $size"

    t0=$(now)
    curl -sS -f -o "$work/download.bin" "$base/v1/images/$id"
    sync "$work/download.bin" 2>/dev/null || sync
    down_disk_rates+=("$(mib_per_s "$size" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")
    if [ "$run" = 1 ]; then
        [ "$(md5sum "$work/download.bin" | cut -d' ' -f1)" = "$expected_md5" ] ||
            die "download $run: the downloaded file's md5 differs"
    fi
    rm -f "$work/download.bin"
    curl -sS -f -o /dev/null -X DELETE "$base/v1/images/$id" || die "delete $run failed"
    echo "bench: run $run (MiB/s): md5sum ${md5_rates[-1]}, sha512sum ${sha_rates[-1]}, cached read ${read_rates[-1]}, dd+fsync ${disk_rates[-1]};" \
        "gateway upload ${up_rates[-1]}, download to /dev/null ${down_null_rates[-1]}, to disk ${down_disk_rates[-1]}"
done

hwm_kib="$(awk '/VmHWM/ { print $2 }' "/proc/$gateway_pid/status")"
kill -0 "$gateway_pid" 2>/dev/null || die "the gateway died during the runs"

# --- many at once ---
par_md5_rates=() par_up_rates=() par_read_rates=() par_down_rates=()
par_hwm_kib=0
if [ "$BENCH_PARALLEL" -gt 0 ]; then
    par_size=$((BENCH_PARALLEL_MIB * 1024 * 1024))
    par_total=$((par_size * BENCH_PARALLEL))
    par_files=()
    for i in $(seq 1 "$BENCH_PARALLEL"); do
        # Distinct files of the same bytes, so no two uploads read the same cached pages.
        f="$work/parallel-$i.bin"
        head -c "$par_size" "$src" >"$f"
        par_files+=("$f")
    done
    sync
    par_md5="$(md5sum "${par_files[0]}" | cut -d' ' -f1)"
    # The gateway's peak RSS from here on.
    echo 5 >"/proc/$gateway_pid/clear_refs" 2>/dev/null || echo "bench: cannot reset the peak RSS" >&2
    for run in $(seq 1 "$BENCH_RUNS"); do
        t0=$(now)
        pids=()
        for f in "${par_files[@]}"; do
            md5sum "$f" >/dev/null &
            pids+=($!)
            if [ "$BENCH_HASHING" != none ]; then
                "${BENCH_HASHING}sum" "$f" >/dev/null &
                pids+=($!)
            fi
        done
        wait_all "${pids[@]}" || die "a hashing tool failed"
        par_md5_rates+=("$(mib_per_s "$par_total" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")

        t0=$(now)
        pids=()
        for i in "${!par_files[@]}"; do
            upload "${par_files[$i]}" "parallel-$run-$i" >"$work/parallel-$i.json" &
            pids+=($!)
        done
        wait_all "${pids[@]}" || die "a concurrent upload failed"
        par_up_rates+=("$(mib_per_s "$par_total" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")
        ids=()
        for i in "${!par_files[@]}"; do
            answer="$(cat "$work/parallel-$i.json")"
            [ "$(json_field "$answer" status)" = active ] || die "concurrent upload $i: $answer"
            [ "$(json_field "$answer" checksum)" = "$par_md5" ] || die "concurrent upload $i: wrong checksum"
            ids+=("$(json_field "$answer" id)")
        done

        t0=$(now)
        pids=()
        for f in "${par_files[@]}"; do
            cat "$f" >/dev/null &
            pids+=($!)
        done
        wait_all "${pids[@]}" || die "a cached read failed"
        par_read_rates+=("$(mib_per_s "$par_total" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")

        t0=$(now)
        pids=()
        for id in "${ids[@]}"; do
            curl -sS -f -o /dev/null "$base/v1/images/$id" &
            pids+=($!)
        done
        wait_all "${pids[@]}" || die "a concurrent download failed"
        par_down_rates+=("$(mib_per_s "$par_total" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')")")
        for id in "${ids[@]}"; do
            curl -sS -f -o /dev/null -X DELETE "$base/v1/images/$id" || die "delete $id failed"
        done
        echo "bench: concurrent run $run (aggregate MiB/s): hashing tools ${par_md5_rates[-1]}, cached reads ${par_read_rates[-1]};" \
            "gateway uploads ${par_up_rates[-1]}, downloads ${par_down_rates[-1]}"
    done
    par_hwm_kib="$(awk '/VmHWM/ { print $2 }' "/proc/$gateway_pid/status")"
    rm -f "${par_files[@]}"
fi

md5_med="$(median "${md5_rates[@]}")"
sha_med="$(median "${sha_rates[@]}")"
read_med="$(median "${read_rates[@]}")"
disk_med="$(median "${disk_rates[@]}")"
up_med="$(median "${up_rates[@]}")"
dn_med="$(median "${down_null_rates[@]}")"
dd_med="$(median "${down_disk_rates[@]}")"
up_limit="$(awk -v a="$md5_med" -v b="$disk_med" 'BEGIN { print (a < b ? a : b) }')"
dd_limit="$(awk -v a="$read_med" -v b="$disk_med" 'BEGIN { print (a < b ? a : b) }')"
hwm_mib="$(awk -v k="$hwm_kib" 'BEGIN { printf "%.1f", k / 1024 }')"

# Time ratios: the limit's rate over the gateway's.
echo
echo "file store, ${BENCH_SIZE_GIB} GiB image, hashing_algorithm $BENCH_HASHING, direct_io ${BENCH_DIRECT_IO:-default}, median of $BENCH_RUNS runs (MiB/s; time ratio = gateway time / limit time)"
printf '  %-36s %9s\n' "md5sum (hash limit)" "$md5_med"
printf '  %-36s %9s\n' "sha512sum (multihash, other thread)" "$sha_med"
printf '  %-36s %9s\n' "cat > /dev/null (cached read)" "$read_med"
printf '  %-36s %9s\n' "dd conv=fsync (disk write limit)" "$disk_med"
printf '  %-36s %9s   time %s x min(md5sum, dd) (target <= 1.15)\n' "gateway upload (POST, curl -T)" "$up_med" "$(ratio "$up_limit" "$up_med")"
printf '  %-36s %9s   time %s x cached read, %s x md5sum (target <= 0.60)\n' "gateway download -> /dev/null" "$dn_med" \
    "$(ratio "$read_med" "$dn_med")" "$(ratio "$md5_med" "$dn_med")"
printf '  %-36s %9s   time %s x min(cached read, dd)\n' "gateway download -> disk + fsync" "$dd_med" "$(ratio "$dd_limit" "$dd_med")"
printf '  %-36s %9s MiB (target < %s MiB)\n' "gateway peak RSS (VmHWM)" "$hwm_mib" "$RSS_TARGET_MIB"
if [ "$BENCH_PARALLEL" -gt 0 ]; then
    p_hash="$(median "${par_md5_rates[@]}")"
    p_read="$(median "${par_read_rates[@]}")"
    p_up="$(median "${par_up_rates[@]}")"
    p_down="$(median "${par_down_rates[@]}")"
    tools="md5sum"
    [ "$BENCH_HASHING" = none ] || tools="md5sum + ${BENCH_HASHING}sum"
    echo "  $BENCH_PARALLEL at once, ${BENCH_PARALLEL_MIB} MiB each (aggregate MiB/s)"
    printf '  %-36s %9s\n' "$tools, all files at once" "$p_hash"
    printf '  %-36s %9s\n' "cat, all files at once" "$p_read"
    printf '  %-36s %9s   time %s x the hashing tools\n' "gateway uploads" "$p_up" "$(ratio "$p_hash" "$p_up")"
    printf '  %-36s %9s   time %s x cached reads\n' "gateway downloads -> /dev/null" "$p_down" "$(ratio "$p_read" "$p_down")"
    printf '  %-36s %9s MiB\n' "gateway peak RSS (VmHWM, this phase)" "$(awk -v k="$par_hwm_kib" 'BEGIN { printf "%.1f", k / 1024 }')"
fi
echo "  load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if awk -v h="$hwm_kib" -v t="$RSS_TARGET_MIB" 'BEGIN { exit !(h > t * 1024) }'; then
    echo "bench: peak RSS above the ${RSS_TARGET_MIB} MiB target" >&2
    exit 2
fi
