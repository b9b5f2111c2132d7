#!/usr/bin/env bash
# Metadata benchmark (a script, not a timed test): seeds a gateway with N images through the HTTP
# API, then measures the metadata requests with wrk and prints one table per size.
#
#   BENCH_SIZES     image counts to run (default "100000 1000000")
#   BENCH_RUNS      wrk runs per request; medians are reported (default 3)
#   BENCH_SECONDS   seconds per wrk run (default 10)
#   BENCH_CLIENTS   concurrent seeding clients (default 16)
#   BENCH_CACHE_MB  the registry's page cache, `[registry] cache_mb` (default 64, the default)
#   BENCH_REGISTRY  sled (default) or postgres: then BENCH_PG_URL and BENCH_PG_PASSWORD_FILE
#                   (default GATEWAY_TEST_PG_URL and GATEWAY_TEST_PG_PASSWORD_FILE, as
#                   `eval "$(scripts/pg-backend.sh start)"` sets them) name the database; the
#                   registry is the schema glance_bench, dropped and created for each size
#   BENCH_DIR       scratch directory for the gateway's data (default ${TMPDIR:-/tmp}/...,
#                   removed at the end)
#   GATEWAY_BIN     binary to run (default <target>/release/glance-gateway)
#   SEED_BIN        the seeding client (default <target>/release/examples/metadata_seed)
#   BENCH_BUILD     1 (default) builds the gateway and the seeding client first; 0 uses them
#
# Seeding: `metadata_seed` (benches/metadata_seed.rs) POSTs every image with BENCH_CLIENTS
# concurrent clients (`auth = "trusted-headers"`, owners over 100 tenants, half public, 3-5
# properties, one image in ten shared with a member). The gateway is then restarted twice: the
# time from starting the process to its first answer is the startup figure at that size, right
# after the seeding and on a restart with no writes in between.
#
# Measured with wrk -t1 -c16 (create: -c8), each BENCH_RUNS times, medians of req/s, p50, p99:
#   HEAD /v1/images/<random seeded id>        (admin; one cold run right after the restart,
#                                              shown on its own, then BENCH_RUNS warm runs)
#   GET /v1/images/detail?limit=25            (admin, then tenant-7 without the admin role)
#   GET /v1/images/detail?disk_format=qcow2&property-os=linux&limit=25   (same two callers)
#   GET /v1/images                            (brief, default limit; same two callers)
#   POST /v1/images without data              (8 clients; creates images, so it runs last)
# plus a walk of /v1/images to the last page with markers (limit 1000) by `metadata_seed walk`,
# and the gateway's peak RSS (VmHWM) while seeding and while measuring.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

BENCH_SIZES="${BENCH_SIZES:-100000 1000000}"
BENCH_RUNS="${BENCH_RUNS:-3}"
BENCH_SECONDS="${BENCH_SECONDS:-10}"
BENCH_CLIENTS="${BENCH_CLIENTS:-16}"
BENCH_CACHE_MB="${BENCH_CACHE_MB:-64}"
BENCH_BUILD="${BENCH_BUILD:-1}"
BENCH_REGISTRY="${BENCH_REGISTRY:-sled}"
BENCH_PG_URL="${BENCH_PG_URL:-${GATEWAY_TEST_PG_URL:-}}"
BENCH_PG_PASSWORD_FILE="${BENCH_PG_PASSWORD_FILE:-${GATEWAY_TEST_PG_PASSWORD_FILE:-}}"
target="${CARGO_TARGET_DIR:-$root/target}"
GATEWAY_BIN="${GATEWAY_BIN:-$target/release/glance-gateway}"
SEED_BIN="${SEED_BIN:-$target/release/examples/metadata_seed}"

die() {
    echo "bench: $*" >&2
    exit 1
}
if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk
    fi
fi
if [ "$BENCH_REGISTRY" = postgres ]; then
    [ -n "$BENCH_PG_URL" ] || die "BENCH_REGISTRY=postgres needs BENCH_PG_URL"
    command -v psql >/dev/null || die "psql is required (Debian: apt-get install -y postgresql-client)"
fi
for tool in wrk curl awk sort; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian: apt-get install -y $tool)"
done

if [ "$BENCH_BUILD" = 1 ]; then
    echo "bench: cargo build --release --bin glance-gateway --example metadata_seed"
    cargo build --release --bin glance-gateway --example metadata_seed
fi
[ -x "$GATEWAY_BIN" ] || die "gateway binary $GATEWAY_BIN not found"
[ -x "$SEED_BIN" ] || die "seeding client $SEED_BIN not found"

if [ -n "${BENCH_DIR:-}" ]; then
    mkdir -p "$BENCH_DIR"
    work="$(mktemp -d "$BENCH_DIR/glance-meta.XXXXXX")"
else
    work="$(mktemp -d "${TMPDIR:-/tmp}/glance-meta.XXXXXX")"
fi
gateway_pid=""
stop_gateway() {
    if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -INT "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    gateway_pid=""
}
cleanup() {
    stop_gateway
    rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
base="http://127.0.0.1:$port"
admin=(-H "x-identity-status: Confirmed" -H "x-tenant-id: tenant-0" -H "x-roles: admin")
tenant=(-H "x-identity-status: Confirmed" -H "x-tenant-id: tenant-7" -H "x-roles: member")

# Starts the gateway on $1 (a data dir); sets startup_ms to the milliseconds from exec to its
# first answer.
start_gateway() {
    local dir="$1"
    cat >"$dir/gateway.toml" <<EOF
bind = "127.0.0.1:$port"
admin_bind = "127.0.0.1:$((port + 1))"
data_dir = "$dir"
auth = "trusted-headers"
sweep_interval = 0

EOF
    if [ "$BENCH_REGISTRY" = postgres ]; then
        local password_line=""
        [ -z "$BENCH_PG_PASSWORD_FILE" ] || password_line="password_file = \"$BENCH_PG_PASSWORD_FILE\""
        cat >>"$dir/gateway.toml" <<EOF
[registry]
kind = "postgres"
url = "$BENCH_PG_URL?options=-csearch_path%3Dglance_bench"
$password_line
EOF
    else
        cat >>"$dir/gateway.toml" <<EOF
[registry]
kind = "sled"
cache_mb = $BENCH_CACHE_MB
EOF
    fi
    local t0 t1
    t0=$(date +%s%N)
    "$GATEWAY_BIN" serve --config "$dir/gateway.toml" >>"$dir/gateway.log" 2>&1 &
    gateway_pid=$!
    until curl -s -o /dev/null "$base/versions"; do
        kill -0 "$gateway_pid" 2>/dev/null || die "the gateway exited: $(tail -5 "$dir/gateway.log")"
        sleep 0.002
    done
    t1=$(date +%s%N)
    startup_ms=$(((t1 - t0) / 1000000))
}

peak_rss_mib() {
    awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$gateway_pid/status"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# wrk's latency figure in milliseconds.
to_ms() {
    awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.3f\n", v }'
}

# Runs wrk BENCH_RUNS times; prints "req/s p50_ms p99_ms" (medians).
measure() {
    local conns="$1"
    shift
    local rps=() p50=() p99=() out errors
    for _ in $(seq "$BENCH_RUNS"); do
        out=$(wrk -t1 -c"$conns" -d"${BENCH_SECONDS}s" --latency "$@")
        errors=$(awk '/Non-2xx or 3xx responses/ { print $NF }' <<<"$out")
        [ -z "$errors" ] || echo "bench: warning: $errors non-2xx answers for $*" >&2
        rps+=("$(awk '/Requests\/sec/ { print $2 }' <<<"$out")")
        p50+=("$(awk '$1 == "50%" { print $2 }' <<<"$out" | to_ms)")
        p99+=("$(awk '$1 == "99%" { print $2 }' <<<"$out" | to_ms)")
    done
    printf '%s %s %s\n' \
        "$(printf '%s\n' "${rps[@]}" | median)" \
        "$(printf '%s\n' "${p50[@]}" | median)" \
        "$(printf '%s\n' "${p99[@]}" | median)"
}

row() {
    local label="$1"
    shift
    read -r rps p50 p99 < <(measure "$@")
    printf '  %-52s %10.0f %9.2f %9.2f\n' "$label" "$rps" "$p50" "$p99"
}

cat >"$work/head.lua" <<'EOF'
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end
math.randomseed(os.time())
request = function()
    return wrk.format("HEAD", "/v1/images/" .. ids[math.random(#ids)])
end
EOF
cat >"$work/create.lua" <<'EOF'
local n = 0
local meta = {
    ["x-image-meta-disk_format"] = "qcow2",
    ["x-image-meta-container_format"] = "bare",
    ["x-image-meta-size"] = "0",
    ["x-image-meta-property-os"] = "linux",
    ["x-image-meta-property-arch"] = "x86_64",
    ["x-image-meta-property-version"] = "1.0",
}
request = function()
    n = n + 1
    local headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
    for k, v in pairs(meta) do headers[k] = v end
    headers["x-image-meta-name"] = "bench-create-" .. n
    return wrk.format("POST", "/v1/images", headers)
end
EOF

# An empty PostgreSQL registry: the schema glance_bench, new.
pg_password() {
    [ -z "$BENCH_PG_PASSWORD_FILE" ] || head -n1 "$BENCH_PG_PASSWORD_FILE"
}
fresh_pg_schema() {
    PGPASSWORD="$(pg_password)" psql -q "$BENCH_PG_URL" -v ON_ERROR_STOP=1 \
        -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS glance_bench CASCADE" \
        -c "CREATE SCHEMA glance_bench" >/dev/null
}

registry_size() {
    if [ "$BENCH_REGISTRY" = postgres ]; then
        PGPASSWORD="$(pg_password)" psql -qAt "$BENCH_PG_URL" -c \
            "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'glance_bench' AND c.relkind = 'r'"
    else
        du -sh "$1/registry" | cut -f1
    fi
}

echo "bench: $(nproc) cores; wrk -t1, ${BENCH_SECONDS}s per run, medians of $BENCH_RUNS runs; $BENCH_REGISTRY registry"
for n in $BENCH_SIZES; do
    dir="$work/n$n"
    mkdir -p "$dir"
    [ "$BENCH_REGISTRY" != postgres ] || fresh_pg_schema
    start_gateway "$dir"
    seed_out=$("$SEED_BIN" seed "$base" "$n" "$BENCH_CLIENTS" "$dir/ids")
    seed_rss=$(peak_rss_mib)
    stop_gateway
    seed_s=$(awk '{ print $2 }' <<<"$seed_out")
    # sled replays, at open, everything written since it was last opened: the first start after
    # seeding pays for the whole seeding, a restart with no writes in between for none of it.
    start_gateway "$dir"
    first_startup_ms=$startup_ms
    stop_gateway
    start_gateway "$dir"
    echo
    echo "N = $n images: seeded over HTTP in ${seed_s}s ($(awk -v n="$n" -v s="$seed_s" 'BEGIN { printf "%.0f", n / s }') images/s, $BENCH_CLIENTS clients)," \
        "registry $(registry_size "$dir") on disk"
    printf '  %-52s %10s %9s %9s\n' "request" "req/s" "p50 ms" "p99 ms"
    export IDS_FILE="$dir/ids"
    # The first run after a restart pulls the registry's pages into sled's cache: shown on its
    # own, then the medians of the runs that follow.
    BENCH_RUNS=1 row "HEAD /v1/images/<random id>, first run (cold cache)" 16 "${admin[@]}" -s "$work/head.lua" "$base"
    row "HEAD /v1/images/<random id>" 16 "${admin[@]}" -s "$work/head.lua" "$base"
    row "GET detail?limit=25 (admin)" 16 "${admin[@]}" "$base/v1/images/detail?limit=25"
    row "GET detail?disk_format=qcow2&property-os=linux (admin)" 16 "${admin[@]}" \
        "$base/v1/images/detail?disk_format=qcow2&property-os=linux&limit=25"
    row "GET /v1/images brief, default limit (admin)" 16 "${admin[@]}" "$base/v1/images"
    row "GET detail?limit=25 (tenant)" 16 "${tenant[@]}" "$base/v1/images/detail?limit=25"
    row "GET detail?disk_format=qcow2&property-os=linux (tenant)" 16 "${tenant[@]}" \
        "$base/v1/images/detail?disk_format=qcow2&property-os=linux&limit=25"
    row "GET /v1/images brief, default limit (tenant)" 16 "${tenant[@]}" "$base/v1/images"
    for who in admin tenant; do
        if [ "$who" = admin ]; then walk=$("$SEED_BIN" walk "$base" 1000); else walk=$("$SEED_BIN" walk "$base" 1000 tenant-7); fi
        read -r _ pages _ imgs _ secs _ wp50 _ wp99 <<<"$walk"
        printf '  %-52s %10.0f %9.2f %9.2f   (%s pages, %s images, %ss)\n' \
            "marker walk to the last page, limit 1000 ($who)" \
            "$(awk -v p="$pages" -v s="$secs" 'BEGIN { print p / s }')" "$wp50" "$wp99" "$pages" "$imgs" "$secs"
    done
    row "POST /v1/images without data (8 clients)" 8 "${admin[@]}" -s "$work/create.lua" "$base"
    echo "  startup to first answer: ${first_startup_ms} ms after seeding, ${startup_ms} ms on the next restart;" \
        "peak RSS: ${seed_rss} MiB while seeding, $(peak_rss_mib) MiB while measuring"
    stop_gateway
    rm -rf "$dir"
done
