"""The release on a real cluster: KServe serves it, V2 clients find near-duplicates, and a canary of model version 2
takes a share of the traffic, is promoted, and is rolled back.

The current kube context must hold the release that hack/kind-e2e.sh installs (CPU values, Milvus standalone, the
sample catalogue indexed by the chart's Job, a version 2 package and its collection on the data volume). Without a
cluster every test skips and says what to run.

The tests run in order: the last one changes the release and puts it back where it was.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

from predictor.imaging.sample_catalogue import write_catalogue
from tests.kind.cluster import (
    REPO,
    port_forward,
    run,
    tool,
    wait_for_deployment,
    wait_for_inference_service,
    wait_until,
)
from tests.kind.manifests import storage_uri

READY_TIMEOUT_S = 600
CANARY_VERSION = "2"
CANARY_NAME = "v2"
CANARY_PERCENT = 20
# With 20% of 60 requests, both versions answer unless something is wrong: none reaching the canary by chance has a
# probability of 0.8^60, about 1 in 650,000.
ROUTED_REQUESTS = 60


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, bytes]:
    """The sample catalogue, as the seed Job wrote it into the cluster (the same photos, the same encoder)."""
    paths = write_catalogue(tmp_path_factory.mktemp("catalogue"))
    return {path.stem: path.read_bytes() for path in paths}


def near_duplicate(original: bytes) -> bytes:
    image = Image.open(io.BytesIO(original)).convert("RGB")
    width, height = image.size
    image = image.crop((width // 50, height // 50, width - width // 50, height - height // 50))
    image = image.resize((image.width * 3 // 4, image.height * 3 // 4))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


@pytest.fixture(scope="module")
def ready(cluster):
    wait_for_inference_service(cluster.api, cluster.release, cluster.namespace, READY_TIMEOUT_S)
    return cluster


def deployment(cluster, predictor: str | None = None) -> str:
    """KServe's Deployment of a predictor in Standard mode: <release>-predictor or <release>-<name>-predictor."""
    return (
        f"deployment/{cluster.release}-{predictor}-predictor"
        if predictor
        else f"deployment/{cluster.release}-predictor"
    )


@pytest.fixture(scope="module")
def predictor(ready) -> Iterator[object]:
    with port_forward(deployment(ready), ready.namespace, 8080, 8081, context=ready.context) as forwarded:
        yield forwarded


def test_v2_rest_and_grpc_find_a_sample_photos_near_duplicate(predictor, photos):
    query = near_duplicate(photos["chelsea"])
    rest = httpclient.InferenceServerClient(predictor.address(8080))
    image = httpclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([query], dtype=np.object_), binary_data=True)
    by_rest = rest.infer("image-search", [image], parameters={"top_k": 3})
    rest.close()
    grpc = grpcclient.InferenceServerClient(predictor.address(8081))
    image = grpcclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([query], dtype=np.object_))
    by_grpc = grpc.infer("image-search", [image], parameters={"top_k": 3})
    grpc.close()
    for result in (by_rest, by_grpc):
        uris = [uri.decode() for uri in result.as_numpy("uris")[0]]
        assert uris[0].endswith("/chelsea.jpg"), uris
        assert result.as_numpy("scores")[0][0] > 0.8


def served_requests(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("image_search_requests_total{") and 'model="image-search"' in line
    )


def test_metrics_are_scraped_from_the_pod(predictor):
    text = httpx.get(f"http://{predictor.address(8080)}/metrics", timeout=10).text
    assert served_requests(text) >= 2
    assert re.search(r'^image_search_build_info\{.*device="cpu".*\} 1\.0$', text, re.MULTILINE), text[:2000]


class Traffic:
    """Requests through the Gateway, as users send them, and the per-version counts of each predictor's /metrics."""

    def __init__(self, cluster, photo: bytes) -> None:
        self.cluster = cluster
        body = {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(photo).decode()]}]
        }
        self.body = body

    def host(self) -> str:
        from kubernetes import client

        isvc = client.CustomObjectsApi(self.cluster.api).get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", self.cluster.namespace, "inferenceservices", self.cluster.release
        )
        return urlparse(isvc["status"]["url"]).hostname

    def gateway_service(self) -> str:
        from kubernetes import client

        services = client.CoreV1Api(self.cluster.api).list_namespaced_service(
            "envoy-gateway-system", label_selector="gateway.envoyproxy.io/owning-gateway-name=kserve-ingress-gateway"
        )
        (service,) = services.items
        return f"service/{service.metadata.name}"

    def send(self, count: int) -> None:
        host = self.host()
        with port_forward(self.gateway_service(), "envoy-gateway-system", 80, context=self.cluster.context) as gateway:
            with httpx.Client(base_url=f"http://{gateway.address(80)}", headers={"Host": host}, timeout=60) as http:
                for _ in range(count):
                    response = http.post("/v2/models/image-search/infer", json=self.body)
                    assert response.status_code == 200, response.text

    def served(self, predictor: str | None) -> float:
        with port_forward(
            deployment(self.cluster, predictor), self.cluster.namespace, 8080, context=self.cluster.context
        ) as forwarded:
            return served_requests(httpx.get(f"http://{forwarded.address(8080)}/metrics", timeout=10).text)


def helm(cluster, *args: str) -> str:
    return run(tool("helm"), "--kube-context", cluster.context, "--namespace", cluster.namespace, *args).stdout


def upgrade(cluster, **values: str) -> None:
    settings = [item for key, value in values.items() for item in ("--set", f"{key}={value}")]
    chart = str(REPO / "charts" / "image-search")
    helm(cluster, "upgrade", cluster.release, chart, "--reuse-values", *settings, "--wait", "--timeout", "10m")
    wait_for_inference_service(cluster.api, cluster.release, cluster.namespace, READY_TIMEOUT_S)


def move_alias(cluster, *command: str) -> None:
    """`image-search promote` or `rollback` from here, against the cluster's Milvus through a port-forward."""
    with port_forward("service/milvus", cluster.namespace, 19530, context=cluster.context) as milvus:
        args = [sys.executable, "-m", "predictor.cli", *command, "--milvus-uri", f"http://{milvus.address(19530)}"]
        result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_canary_answers_its_share_then_is_promoted_and_rolled_back(ready, photos):
    cluster = ready
    traffic = Traffic(cluster, near_duplicate(photos["coffee"]))
    history = helm(cluster, "history", cluster.release, "--max", "1", "--output", "json")
    revision_before = re.search(r'"revision":\s*(\d+)', history).group(1)
    promoted = False
    try:
        # 1. The canary: version 2 from its package on the data volume, 20% of the traffic, its own collection.
        upgrade(
            cluster,
            **{
                "canary.enabled": "true",
                "canary.name": CANARY_NAME,
                "canary.version": CANARY_VERSION,
                "canary.trafficPercent": str(CANARY_PERCENT),
                "canary.storageUri": storage_uri(CANARY_VERSION),
            },
        )
        wait_for_deployment(
            cluster.api, f"{cluster.release}-{CANARY_NAME}-predictor", cluster.namespace, READY_TIMEOUT_S
        )
        before = {"stable": traffic.served(None), "canary": traffic.served(CANARY_NAME)}
        traffic.send(ROUTED_REQUESTS)
        after = {"stable": traffic.served(None), "canary": traffic.served(CANARY_NAME)}
        answered = {track: after[track] - before[track] for track in before}
        assert answered["stable"] + answered["canary"] == ROUTED_REQUESTS, answered
        assert 0 < answered["canary"] < answered["stable"], answered

        # 2. Promote: the alias moves to version 2's collection, and version 2 becomes the stable predictor under
        # the canary's name, so its pods stay.
        move_alias(cluster, "promote", "--to", CANARY_VERSION)
        promoted = True
        upgrade(
            cluster,
            **{
                "model.storageUri": storage_uri(CANARY_VERSION),
                "model.version": CANARY_VERSION,
                "model.predictorName": CANARY_NAME,
                "canary.enabled": "false",
            },
        )
        wait_for_deployment(
            cluster.api, f"{cluster.release}-{CANARY_NAME}-predictor", cluster.namespace, READY_TIMEOUT_S
        )
        before_v2 = traffic.served(CANARY_NAME)
        traffic.send(ROUTED_REQUESTS // 3)
        assert traffic.served(CANARY_NAME) - before_v2 == ROUTED_REQUESTS // 3
    finally:
        # 3. Roll back: the release as it was before the canary, and the alias back to version 1's collection.
        helm(cluster, "rollback", cluster.release, revision_before, "--wait", "--timeout", "10m")
        if promoted:
            move_alias(cluster, "rollback")
    wait_for_inference_service(cluster.api, cluster.release, cluster.namespace, READY_TIMEOUT_S)
    wait_for_deployment(cluster.api, f"{cluster.release}-predictor", cluster.namespace, READY_TIMEOUT_S)

    def stable_answers_alone() -> tuple[bool, str]:
        before_v1 = traffic.served(None)
        traffic.send(5)
        gained = traffic.served(None) - before_v1
        return gained == 5, f"the version 1 predictor answered {gained} of 5"

    wait_until(stable_answers_alone, 120, "version 1 answering all traffic after the rollback", interval_s=5)
