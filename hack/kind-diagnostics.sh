#!/usr/bin/env bash
# What went wrong on the cluster: events, the state and description of the release's objects, pod logs, and the
# KServe, Envoy Gateway and Milvus logs. Each part is printed in a `::group::` block (folded on GitHub) and written
# under OUT_DIR, which CI uploads as an artifact.
# Usage: hack/kind-diagnostics.sh [OUT_DIR]   (default kind-diagnostics/)
set -uo pipefail
out="${1:-kind-diagnostics}"
namespace="${NAMESPACE:-image-search}"
mkdir -p "$out"

section() {
  local name="$1"
  shift
  echo "::group::$name"
  "$@" 2>&1 | tee "$out/$name.txt"
  echo "::endgroup::"
}

section events kubectl get events --all-namespaces --sort-by=.lastTimestamp
section objects kubectl -n "$namespace" get inferenceservices,deployments,pods,jobs,services,httproutes,pvc -o wide
section nodes kubectl describe nodes
section describe-inferenceservices kubectl -n "$namespace" describe inferenceservices
section describe-pods kubectl -n "$namespace" describe pods
for pod in $(kubectl -n "$namespace" get pods -o name); do
  section "logs-${pod#pod/}" kubectl -n "$namespace" logs "$pod" --all-containers --prefix --tail=500
done
section kserve-controller kubectl -n kserve logs deployment/kserve-controller-manager --all-containers --tail=500
section envoy-gateway kubectl -n envoy-gateway-system logs deployment/envoy-gateway --tail=300
section gateways kubectl get gateways,httproutes --all-namespaces -o yaml
exit 0
