#!/usr/bin/env bash
# Installs what the chart needs on a cluster of your own (kind on a laptop, CI): cert-manager, Envoy Gateway with the
# Gateway API CRDs and the Gateway KServe routes through, and KServe in Standard mode with the Gateway API ingress,
# which canaries need. Every version is pinned; re-running upgrades in place.
# Usage: hack/install-kserve.sh            (the current kube context; KUBE_CONTEXT=<name> picks another)
set -euxo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cert_manager_version="${CERT_MANAGER_VERSION:-v1.17.2}"
envoy_gateway_version="${ENVOY_GATEWAY_VERSION:-v1.6.1}"
# The controller matches the kserve SDK pinned in pyproject.toml.
kserve_version="${KSERVE_VERSION:-v0.21.0}"
timeout="${INSTALL_TIMEOUT:-10m}"

kubectl=(kubectl)
helm=(helm)
if [ -n "${KUBE_CONTEXT:-}" ]; then
  kubectl+=(--context "$KUBE_CONTEXT")
  helm+=(--kube-context "$KUBE_CONTEXT")
fi

# cert-manager signs KServe's webhook certificates.
"${kubectl[@]}" apply --server-side -f \
  "https://github.com/cert-manager/cert-manager/releases/download/${cert_manager_version}/cert-manager.yaml"
"${kubectl[@]}" -n cert-manager wait --for=condition=Available deployment --all --timeout="$timeout"

# Envoy Gateway's chart brings the Gateway API CRDs it was built against.
"${helm[@]}" upgrade --install eg oci://docker.io/envoyproxy/gateway-helm --version "$envoy_gateway_version" \
  --namespace envoy-gateway-system --create-namespace --wait --timeout "$timeout"
"${kubectl[@]}" -n envoy-gateway-system wait --for=condition=Available deployment/envoy-gateway --timeout="$timeout"

"${helm[@]}" upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version "$kserve_version" \
  --namespace kserve --create-namespace --wait --timeout "$timeout"
"${kubectl[@]}" apply -f "$repo/hack/kind/gateway.yaml"
"${kubectl[@]}" -n kserve wait --for=condition=Programmed gateway/kserve-ingress-gateway --timeout="$timeout"
"${helm[@]}" upgrade --install kserve oci://ghcr.io/kserve/charts/kserve-resources --version "$kserve_version" \
  --namespace kserve \
  --set kserve.controller.deploymentMode=Standard \
  --set kserve.controller.gateway.disableIstioVirtualHost=true \
  --set kserve.controller.gateway.ingressGateway.enableGatewayApi=true \
  --set kserve.controller.gateway.ingressGateway.kserveGateway=kserve/kserve-ingress-gateway \
  --wait --timeout "$timeout"
"${kubectl[@]}" -n kserve wait --for=condition=Available deployment/kserve-controller-manager --timeout="$timeout"
