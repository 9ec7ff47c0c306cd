#!/usr/bin/env bash
# The kind end-to-end run, as CI runs it and as you can on a laptop with kind and docker (or podman):
# build and load the image, install KServe and Milvus, seed the data volume, install the release with the CPU values
# and the chart's indexing Job, index the canary's model version, `helm test`, then `pytest tests/kind`.
# Run hack/kind-up.sh (make kind-up) first; every step is idempotent, so a second run reuses what exists.
# Environment: IMAGE (default image-search:<appVersion>), SKIP_BUILD=1 when the image is already built,
# SKIP_INSTALL=1 when KServe and Milvus are already there, KIND_CLUSTER (default image-search).
set -euxo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
# shellcheck source=hack/container-engine.sh
source "$repo/hack/container-engine.sh"
image="${IMAGE:-$(default_image)}"
cluster="${KIND_CLUSTER:-image-search}"
namespace="image-search"
release="image-search"
python="${PYTHON:-$repo/.venv/bin/python}"
export PATH="$repo/bin:$PATH" PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
kubectl config use-context "kind-$cluster"

if [ -z "${SKIP_BUILD:-}" ]; then
  "$repo/hack/build-image.sh" "$image"
fi
repository="${image%:*}"
if [ "$engine" = docker ]; then
  kind load docker-image "$image" --name "$cluster"
else
  # podman names a local image localhost/<name>; the nodes keep that name, so the chart is told it.
  archive="$(mktemp --suffix=.tar)"
  trap 'rm -f "$archive"' EXIT
  podman save --output "$archive" "$image"
  kind load image-archive "$archive" --name "$cluster"
  repository="localhost/${repository#localhost/}"
fi

if [ -z "${SKIP_INSTALL:-}" ]; then
  "$repo/hack/install-kserve.sh"
  "$repo/hack/install-milvus.sh" "$namespace"
fi

manifests() { "$python" -m tests.kind.manifests "$@" | kubectl -n "$namespace" apply -f -; }
manifests claim
manifests seed --image "$repository:${image##*:}"
kubectl -n "$namespace" wait --for=condition=Complete job/image-search-seed --timeout=10m

helm upgrade --install "$release" charts/image-search --namespace "$namespace" \
  -f charts/image-search/ci/cpu-values.yaml -f hack/kind/values.yaml \
  --set image.repository="$repository" --set image.tag="${image##*:}" \
  --wait --wait-for-jobs --timeout 15m
manifests index --image "$repository:${image##*:}" --model-version 2 --milvus-uri "http://milvus.$namespace:19530"
kubectl -n "$namespace" wait --for=condition=Complete job/image-search-index-v2 --timeout=10m
kubectl -n "$namespace" wait --for=condition=Ready "inferenceservice/$release" --timeout=10m
helm test "$release" --namespace "$namespace" --timeout 5m --logs

"$python" -m pytest tests/kind -v -rs
