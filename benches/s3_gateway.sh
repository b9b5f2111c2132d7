# Shared by benches/s3.sh and benches/s3_cpu.sh (sourced, not run): the local S3 server and one
# gateway on it. Uses ROOT's scripts, DIR, PORT, GATEWAY, BIN, PART_MIB, IN_FLIGHT,
# PART_MEMORY_MIB, PART_CHECKSUM and HASHING; sets started_backend, gateway_pid and the
# GATEWAY_TEST_S3_* variables.

# Starts the S3 server unless one already answers (then it is left running at the end).
s3_backend_start() {
  started_backend=0
  if ! scripts/s3-backend.sh status 2>/dev/null; then started_backend=1; fi
  eval "$(scripts/s3-backend.sh start)"
}

# Stops the gateway, and the S3 server if s3_backend_start started it.
s3_stop() {
  if [ -n "${gateway_pid:-}" ]; then kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  if [ "${started_backend:-0}" = 1 ]; then
    scripts/s3-backend.sh stop
    # The objects of every run stay on disk until the server's data dir goes.
    rm -rf "${S3_DIR:-${TMPDIR:-/tmp}/gateway-s3}"
  fi
}

# Starts a gateway whose default store is the S3 server, on a fresh data dir under DIR.
s3_gateway_start() {
  rm -rf "$DIR/data"
  # The admin listener on a free port: its default may be taken by another gateway.
  ADMIN_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  cat > "$DIR/gateway.toml" <<TOML
default_store = "s3"
admin_bind = "127.0.0.1:$ADMIN_PORT"
image_size_cap = 1099511627776
hashing_algorithm = "$HASHING"

[stores.s3]
kind = "s3"
bucket = "$GATEWAY_TEST_S3_BUCKET"
endpoint = "$GATEWAY_TEST_S3_ENDPOINT"
region = "$GATEWAY_TEST_S3_REGION"
force_path_style = true
prefix = "bench/gateway/"
access_key_id = "$GATEWAY_TEST_S3_ACCESS_KEY"
secret_access_key = "$GATEWAY_TEST_S3_SECRET_KEY"
multipart_threshold = $((PART_MIB * 1048576))
part_size = $((PART_MIB * 1048576))
max_concurrent_parts = $IN_FLIGHT
max_part_memory = $((PART_MEMORY_MIB * 1048576))
part_checksum = "$PART_CHECKSUM"
TOML
  chmod 600 "$DIR/gateway.toml"
  RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$DIR/gateway.toml" --data-dir "$DIR/data" \
    --bind "127.0.0.1:$PORT" > "$DIR/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$GATEWAY/versions" && break
    sleep 0.1
  done
}
