#!/usr/bin/env bash
# The S3 bench (a script, not a timed test): images up and down through the gateway to a local
# SeaweedFS, against the same file sent straight to the same server with aws-sdk-s3 multipart
# (benches/s3_direct.rs: same part size, same parts in flight, no hashing) in the same run. Prints medians, the gateway/direct time ratios (targets: up <= 1.10x, down <= 1.05x),
# the MD5 throughput of the file (md5sum) and the gateway's peak RSS (VmHWM).
#
# usage: benches/s3.sh
# knobs: BENCH_SIZES_GIB ("1 4"), BENCH_RUNS (3), BENCH_DIR (${TMPDIR:-/tmp}/gateway-bench),
#        BENCH_PORT (19292), BENCH_PART_MIB (16), BENCH_IN_FLIGHT (4),
#        BENCH_PART_CHECKSUM (the store's part_checksum: auto), BENCH_HASHING (sha512),
#        BENCH_PARALLEL (8: transfers at once in the concurrent phase, 0 skips it),
#        BENCH_PARALLEL_MIB (256: the size of each),
#        BENCH_PART_MEMORY_MIB (1024: the store's max_part_memory, all uploads' part buffers)
# The concurrent phase sends BENCH_PARALLEL images at once through the gateway and as many
# objects at once directly, then reads them back the same way: aggregate MiB/s, ratios, and
# the gateway's peak RSS over the phase (reset with clear_refs before it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${BENCH_SIZES_GIB:-"1 4"}
RUNS=${BENCH_RUNS:-3}
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/gateway-bench}
PORT=${BENCH_PORT:-19292}
PART_MIB=${BENCH_PART_MIB:-16}
IN_FLIGHT=${BENCH_IN_FLIGHT:-4}
PARALLEL=${BENCH_PARALLEL:-8}
PARALLEL_MIB=${BENCH_PARALLEL_MIB:-256}
PART_MEMORY_MIB=${BENCH_PART_MEMORY_MIB:-1024}
GATEWAY="http://127.0.0.1:$PORT"

log() { echo "bench: $*" >&2; }

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {print b-a}'; }
# wait_pids PID...: waits for each (never for the gateway, also a child); fails if any failed
wait_pids() { local failed=0 pid; for pid in "$@"; do wait "$pid" || failed=1; done; return "$failed"; }
mbps() { awk -v bytes="$1" -v s="$2" 'BEGIN {printf "%.0f", bytes/1048576/s}'; }

cd "$ROOT"
PART_CHECKSUM=${BENCH_PART_CHECKSUM:-auto}
HASHING=${BENCH_HASHING:-sha512}
log "release build"
cargo build --release --quiet --bin glance-gateway --example s3_direct
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/glance-gateway
DIRECT=$TARGET/release/examples/s3_direct

mkdir -p "$DIR"
# shellcheck source=benches/s3_gateway.sh
. "$ROOT/benches/s3_gateway.sh"
s3_backend_start
gateway_pid=""
cleanup() {
  rm -f "$DIR"/image-*.bin
  s3_stop
}
trap cleanup EXIT
s3_gateway_start
log "gateway pid $gateway_pid on $GATEWAY (S3 store: ${PART_MIB} MiB parts, $IN_FLIGHT in flight)"

summary=()
for gib in $SIZES; do
  bytes=$((gib * 1073741824))
  file="$DIR/image-${gib}g.bin"
  # The file, every object written (SeaweedFS reclaims deleted objects' space only later),
  # and headroom.
  need_kib=$(( ((2 * RUNS + 1) * gib + 2) * 1048576 ))
  avail_kib=$(df -Pk "$DIR" | awk 'NR==2 {print $4}')
  df -h "$DIR" >&2
  if [ "$avail_kib" -lt "$need_kib" ]; then
    log "skipping $gib GiB: $((avail_kib / 1048576)) GiB free, need $((need_kib / 1048576)) GiB"
    continue
  fi
  log "writing a $gib GiB random file"
  head -c "$bytes" /dev/urandom > "$file"
  t0=$(date +%s.%N)
  md5=$(md5sum "$file" | cut -d' ' -f1)
  md5_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b-a}')

  up_direct=(); up_gateway=(); down_direct=(); down_gateway=()
  for run in $(seq 1 "$RUNS"); do
    key="bench/direct/${gib}g-$run"
    # Each timed transfer starts with no dirty pages left by the one before (writing them back
    # would slow whichever came second), and the direct path goes first only on odd runs.
    if [ $((run % 2)) = 1 ]; then
      sync; up_direct+=("$("$DIRECT" put "$file" "$key" "$PART_MIB" "$IN_FLIGHT" | awk '{print $2}')")
    fi
    sync
    out=$(curl -sS -X POST -T "$file" -o "$DIR/created.json" -w '%{http_code} %{time_total}' \
      -H 'Content-Type: application/octet-stream' -H "x-image-meta-name: bench-${gib}g-$run" \
      -H 'x-image-meta-disk_format: raw' -H 'x-image-meta-container_format: bare' \
      "$GATEWAY/v1/images")
    code=${out%% *}
    if [ "$code" != 201 ]; then log "gateway upload answered $code: $(cat "$DIR/created.json")"; exit 1; fi
    up_gateway+=("${out##* }")
    if [ $((run % 2)) = 0 ]; then
      sync; up_direct+=("$("$DIRECT" put "$file" "$key" "$PART_MIB" "$IN_FLIGHT" | awk '{print $2}')")
    fi
    id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["id"])' "$DIR/created.json")
    checksum=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["checksum"])' "$DIR/created.json")
    [ "$checksum" = "$md5" ] || { log "checksum $checksum != md5sum $md5"; exit 1; }

    sync
    if [ $((run % 2)) = 1 ]; then
      down_direct+=("$("$DIRECT" get "$key" | awk '{print $2}')")
      down_gateway+=("$(curl -sS -o /dev/null -w '%{time_total}' "$GATEWAY/v1/images/$id")")
    else
      down_gateway+=("$(curl -sS -o /dev/null -w '%{time_total}' "$GATEWAY/v1/images/$id")")
      down_direct+=("$("$DIRECT" get "$key" | awk '{print $2}')")
    fi

    "$DIRECT" delete "$key" > /dev/null
    curl -sS -o /dev/null -X DELETE "$GATEWAY/v1/images/$id"
    log "$gib GiB run $run: up direct ${up_direct[-1]} s, gateway ${up_gateway[-1]} s; down direct ${down_direct[-1]} s, gateway ${down_gateway[-1]} s"
  done
  rm -f "$file"

  ud=$(median "${up_direct[@]}"); ug=$(median "${up_gateway[@]}")
  dd=$(median "${down_direct[@]}"); dg=$(median "${down_gateway[@]}")
  summary+=("$(printf '%4s GiB | up: direct %7.2f s (%4s MiB/s)  gateway %7.2f s (%4s MiB/s)  ratio %s (target <= 1.10) | down: direct %6.2f s (%4s MiB/s)  gateway %6.2f s (%4s MiB/s)  ratio %s (target <= 1.05) | md5sum %s MiB/s' \
    "$gib" "$ud" "$(mbps "$bytes" "$ud")" "$ug" "$(mbps "$bytes" "$ug")" "$(ratio "$ug" "$ud")" \
    "$dd" "$(mbps "$bytes" "$dd")" "$dg" "$(mbps "$bytes" "$dg")" "$(ratio "$dg" "$dd")" \
    "$(mbps "$bytes" "$md5_s")")")
done

hwm=$(awk '/VmHWM/ {print $2}' "/proc/$gateway_pid/status")

par_summary=""
if [ "$PARALLEL" -gt 0 ]; then
  par_file="$DIR/image-parallel.bin"
  par_bytes=$((PARALLEL * PARALLEL_MIB * 1048576))
  head -c $((PARALLEL_MIB * 1048576)) /dev/urandom > "$par_file"
  par_md5=$(md5sum "$par_file" | cut -d' ' -f1)
  echo 5 > "/proc/$gateway_pid/clear_refs" 2>/dev/null || log "cannot reset the peak RSS"
  pud=(); pug=(); pdd=(); pdg=()
  for run in $(seq 1 "$RUNS"); do
    sync; pids=(); t0=$(now)
    for i in $(seq 1 "$PARALLEL"); do
      "$DIRECT" put "$par_file" "bench/direct/par-$run-$i" "$PART_MIB" "$IN_FLIGHT" > /dev/null & pids+=($!)
    done
    wait_pids "${pids[@]}" || { log "a direct upload failed"; exit 1; }
    pud+=("$(since "$t0")")

    sync; pids=(); t0=$(now)
    for i in $(seq 1 "$PARALLEL"); do
      curl -sS --fail-with-body -X POST -T "$par_file" -o "$DIR/par-$i.json" -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -H "x-image-meta-name: bench-par-$run-$i" \
        -H 'x-image-meta-disk_format: raw' -H 'x-image-meta-container_format: bare' \
        "$GATEWAY/v1/images" & pids+=($!)
    done
    wait_pids "${pids[@]}" || { log "a gateway upload failed"; exit 1; }
    pug+=("$(since "$t0")")
    ids=()
    for i in $(seq 1 "$PARALLEL"); do
      ids+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["id"])' "$DIR/par-$i.json")")
      checksum=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["checksum"])' "$DIR/par-$i.json")
      [ "$checksum" = "$par_md5" ] || { log "concurrent upload $i: checksum $checksum != md5sum $par_md5"; exit 1; }
    done

    sync; pids=(); t0=$(now)
    for i in $(seq 1 "$PARALLEL"); do "$DIRECT" get "bench/direct/par-$run-$i" > /dev/null & pids+=($!); done
    wait_pids "${pids[@]}" || { log "a direct download failed"; exit 1; }
    pdd+=("$(since "$t0")")

    pids=(); t0=$(now)
    for id in "${ids[@]}"; do curl -sS --fail -o /dev/null "$GATEWAY/v1/images/$id" & pids+=($!); done
    wait_pids "${pids[@]}" || { log "a gateway download failed"; exit 1; }
    pdg+=("$(since "$t0")")

    for i in $(seq 1 "$PARALLEL"); do "$DIRECT" delete "bench/direct/par-$run-$i" > /dev/null; done
    for id in "${ids[@]}"; do curl -sS -o /dev/null -X DELETE "$GATEWAY/v1/images/$id"; done
    log "$PARALLEL x $PARALLEL_MIB MiB at once, run $run: up direct ${pud[-1]} s, gateway ${pug[-1]} s; down direct ${pdd[-1]} s, gateway ${pdg[-1]} s"
  done
  rm -f "$par_file" "$DIR"/par-*.json
  par_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$gateway_pid/status")
  ud=$(median "${pud[@]}"); ug=$(median "${pug[@]}"); dd=$(median "${pdd[@]}"); dg=$(median "${pdg[@]}")
  par_summary=$(printf '%s x %s MiB at once | up: direct %6.2f s (%4s MiB/s)  gateway %6.2f s (%4s MiB/s)  ratio %s | down: direct %6.2f s (%4s MiB/s)  gateway %6.2f s (%4s MiB/s)  ratio %s\ngateway peak RSS over the concurrent phase: %s MiB (part buffers: %s uploads x %s MiB x (%s + 1) = %s MiB, capped by max_part_memory %s MiB)' \
    "$PARALLEL" "$PARALLEL_MIB" "$ud" "$(mbps "$par_bytes" "$ud")" "$ug" "$(mbps "$par_bytes" "$ug")" "$(ratio "$ug" "$ud")" \
    "$dd" "$(mbps "$par_bytes" "$dd")" "$dg" "$(mbps "$par_bytes" "$dg")" "$(ratio "$dg" "$dd")" \
    "$((par_hwm / 1024))" "$PARALLEL" "$PART_MIB" "$IN_FLIGHT" "$((PARALLEL * PART_MIB * (IN_FLIGHT + 1)))" "$PART_MEMORY_MIB")
fi

echo
echo "S3 bench: $RUNS run(s) per size, medians; parts ${PART_MIB} MiB x $IN_FLIGHT in flight; part_checksum $PART_CHECKSUM, hashing_algorithm $HASHING"
for line in "${summary[@]}"; do echo "$line"; done
echo "gateway peak RSS (VmHWM): $((hwm / 1024)) MiB (budget: 64 MiB + $PART_MIB MiB x ($IN_FLIGHT + 1) = $((64 + PART_MIB * (IN_FLIGHT + 1))) MiB)"
if [ -n "$par_summary" ]; then printf '%b\n' "$par_summary"; fi
