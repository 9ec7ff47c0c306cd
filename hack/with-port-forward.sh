#!/usr/bin/env bash
# Runs a command while a Service of the cluster is forwarded to a free local port, given to it as $LOCAL_PORT.
# Usage: hack/with-port-forward.sh NAMESPACE SERVICE PORT -- COMMAND [ARGS...]
#   hack/with-port-forward.sh monitoring prometheus-operated 9090 -- \
#     sh -c 'image-search rollout analyze --prometheus "http://127.0.0.1:$LOCAL_PORT" ...'
set -euo pipefail
namespace="${1:?namespace}" service="${2:?service}" port="${3:?port}"
shift 3
[ "${1:-}" = "--" ] && shift
log="$(mktemp)"
kubectl --namespace "$namespace" port-forward "service/$service" ":$port" >"$log" 2>&1 &
forward=$!
trap 'kill "$forward" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 60); do
  LOCAL_PORT="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | head -n 1)"
  [ -n "$LOCAL_PORT" ] && break
  if ! kill -0 "$forward" 2>/dev/null; then
    echo "port-forward to $namespace/$service:$port failed: $(cat "$log")" >&2
    exit 1
  fi
  sleep 1
done
if [ -z "$LOCAL_PORT" ]; then
  echo "port-forward to $namespace/$service:$port not ready after 60 s: $(cat "$log")" >&2
  exit 1
fi
export LOCAL_PORT
"$@"
