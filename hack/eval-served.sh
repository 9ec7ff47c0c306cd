#!/usr/bin/env bash
# The default model's quality through the real server: index the development set and the near-duplicate originals
# into a fresh milvus-lite file, serve it on free loopback ports, and run `image-search eval --url` against it.
set -euo pipefail
eval_data="${1:-data/eval}"
bin="${BIN:-.venv/bin}"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_port="$(free_port)"
grpc_port="$(free_port)"

"$bin/image-search" index "$eval_data/gcompris" "$eval_data/near-duplicates/originals" --milvus-uri "$work/eval.db"
"$bin/image-search" serve --milvus-uri "$work/eval.db" --http_port "$http_port" --grpc_port "$grpc_port" \
  --log-level WARNING >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
  if curl -fs "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 1
done
"$bin/image-search" eval --url "http://127.0.0.1:$http_port" --labelled "$eval_data/gcompris" \
  --near-duplicates "$eval_data/near-duplicates" --report "$eval_data/served.json"
