#!/usr/bin/env bash
# Creates the kind cluster of manifests/kind-config.yaml unless it exists, and waits until its nodes are ready.
# Then: install KServe (Standard mode) and Milvus, and run `skaffold dev -p kind` or `helm install`.
set -euxo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
name="image-search"
if ! kind get clusters | grep -qx "$name"; then
  kind create cluster --config "$repo/manifests/kind-config.yaml"
fi
kubectl --context "kind-$name" wait --for=condition=Ready nodes --all --timeout=180s
