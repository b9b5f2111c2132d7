#!/bin/sh
# Starts SeaweedFS (`weed mini`: master, volume, filer and S3 in one process) for the `seaweedfs`
# compose profile, with one S3 identity: the gateway's user, its secret read from the compose
# secret (SeaweedFS takes identities only from a JSON file).
set -eu

: "${GATEWAY_ACCESS_KEY:=glance-gateway}"
: "${GATEWAY_SECRET_KEY_FILE:=/run/secrets/gateway_s3_secret}"
secret=$(tr -d ' \t\r\n' < "$GATEWAY_SECRET_KEY_FILE")
umask 077
cat > /tmp/s3.json <<JSON
{
  "identities": [
    {
      "name": "gateway",
      "credentials": [{ "accessKey": "$GATEWAY_ACCESS_KEY", "secretKey": "$secret" }],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
JSON
exec weed mini -dir=/data -ip.bind=0.0.0.0 -s3.config=/tmp/s3.json -s3.port=8333 \
  -webdav=false -admin.ui=false -s3.port.iceberg=0
