#!/bin/sh
# One-shot SeaweedFS setup for the gateway (the seaweedfs-init service of the `seaweedfs` profile;
# safe to run again): waits for the S3 API, then creates the bucket as the gateway's user.
set -eu

: "${S3_ENDPOINT:=http://seaweedfs:8333}"
: "${BUCKET:=images}"
: "${GATEWAY_ACCESS_KEY:=glance-gateway}"
: "${GATEWAY_SECRET_KEY_FILE:=/run/secrets/gateway_s3_secret}"

secret=$(tr -d ' \t\r\n' < "$GATEWAY_SECRET_KEY_FILE")
tries=0
until mc alias set sw "$S3_ENDPOINT" "$GATEWAY_ACCESS_KEY" "$secret" --api s3v4 --path on >/dev/null 2>&1 \
  && mc mb --ignore-existing "sw/$BUCKET"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "seaweedfs-init: $S3_ENDPOINT did not accept the gateway's user" >&2
    exit 1
  fi
  sleep 1
done
echo "seaweedfs-init: bucket $BUCKET ready"
