"""The cluster of the current kube context with the release installed (hack/kind-e2e.sh sets it up), or a skip that
says what is missing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from tests.kind.cluster import (
    INFERENCE_SERVICES,
    KSERVE_GROUP,
    KSERVE_VERSION,
    ClusterUnavailable,
    api_client,
    current_context,
    tool,
)

NAMESPACE = os.environ.get("KIND_E2E_NAMESPACE", "image-search")
RELEASE = os.environ.get("KIND_E2E_RELEASE", "image-search")
SETUP_HINT = "run hack/kind-e2e.sh (make kind-e2e), which installs KServe, Milvus and the release"


@dataclass(frozen=True)
class Cluster:
    context: str
    api: object
    namespace: str
    release: str


def _connect() -> Cluster:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    context = current_context()
    tool("kubectl"), tool("helm")
    api = api_client(context)
    try:
        client.VersionApi(api).get_code(_request_timeout=10)
    except Exception as error:  # noqa: BLE001 - unreachable, refused, TLS, DNS: all mean "no cluster here"
        raise ClusterUnavailable(f"the API server of context {context} does not answer ({error})") from None
    try:
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            KSERVE_GROUP, KSERVE_VERSION, NAMESPACE, INFERENCE_SERVICES, RELEASE, _request_timeout=10
        )
    except ApiException as error:
        what = "KServe is not installed" if "could not find" in str(error.body) or error.status == 404 else "error"
        raise ClusterUnavailable(
            f"no InferenceService {NAMESPACE}/{RELEASE} on context {context} ({what}, {error.status}): {SETUP_HINT}"
        ) from None
    return Cluster(context, api, NAMESPACE, RELEASE)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    try:
        return _connect()
    except ClusterUnavailable as reason:
        pytest.skip(str(reason))
