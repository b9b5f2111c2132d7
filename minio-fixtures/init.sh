#!/bin/sh
# One-shot MinIO setup for the gateway (run by the minio-init service; safe to run again):
# the bucket, a least-privilege policy on it (gateway-policy.json) and the gateway's user.
set -eu

: "${MINIO_ENDPOINT:=http://minio:9000}"
: "${BUCKET:=images}"
: "${GATEWAY_ACCESS_KEY:=glance-gateway}"
: "${GATEWAY_SECRET_KEY_FILE:=/run/secrets/gateway_s3_secret}"
POLICY=gateway-images
FIXTURES=$(dirname "$0")

secret=$(tr -d ' \t\r\n' < "$GATEWAY_SECRET_KEY_FILE")
if [ "${#secret}" -lt 8 ]; then
  echo "minio-init: the gateway secret must have at least 8 characters" >&2
  exit 1
fi

# The health check already waited for MinIO; still allow it a moment to accept the root login.
tries=0
until mc alias set local "$MINIO_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "minio-init: cannot log in to $MINIO_ENDPOINT" >&2
    exit 1
  fi
  sleep 1
done

mc mb --ignore-existing "local/$BUCKET"
# The policy names the bucket; keep it in step with BUCKET.
sed "s/arn:aws:s3:::images/arn:aws:s3:::$BUCKET/g" "$FIXTURES/gateway-policy.json" > /tmp/policy.json
mc admin policy create local "$POLICY" /tmp/policy.json
# Adding an existing user updates its secret.
mc admin user add local "$GATEWAY_ACCESS_KEY" "$secret"
if ! out=$(mc admin policy attach local "$POLICY" --user "$GATEWAY_ACCESS_KEY" 2>&1); then
  case "$out" in
    *"already"*) ;;   # attached by an earlier run
    *) echo "$out" >&2; exit 1 ;;
  esac
fi
echo "minio-init: bucket $BUCKET, policy $POLICY and user $GATEWAY_ACCESS_KEY ready"
