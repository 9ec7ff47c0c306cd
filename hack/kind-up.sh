#!/usr/bin/env bash
# Creates the kind cluster of manifests/kind-config.yaml unless it exists, and waits until its nodes are ready.
# Then `make kind-e2e` (hack/kind-e2e.sh) installs KServe, Milvus and the release and runs the kind tests, and
# `skaffold dev -p kind` gives the edit-and-run loop.
set -euxo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
name="image-search"
if ! kind get clusters | grep -qx "$name"; then
  kind create cluster --config "$repo/manifests/kind-config.yaml"
fi
kubectl --context "kind-$name" wait --for=condition=Ready nodes --all --timeout=180s
