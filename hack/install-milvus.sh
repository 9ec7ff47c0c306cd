#!/usr/bin/env bash
# Runs Milvus standalone (hack/kind/milvus.yaml: one pod, embedded etcd, local storage) in the release namespace,
# where the chart looks for it by default (http://milvus.<namespace>:19530), and waits until it answers.
# Usage: hack/install-milvus.sh [NAMESPACE]   (default image-search)
set -euxo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
namespace="${1:-image-search}"
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$namespace" apply -f "$repo/hack/kind/milvus.yaml"
kubectl -n "$namespace" rollout status deployment/milvus --timeout="${INSTALL_TIMEOUT:-10m}"
