"""When Milvus goes away the predictor says so: not ready, and 503 for searches, without crashing."""

import httpx
import pytest

from harness.milvus_server import kill_milvus_server, run_milvus_server
from harness.polling import wait_for
from harness.predictor_server import run_cli, run_predictor


@pytest.fixture(scope="module")
def server_without_milvus(tmp_path_factory, catalogue):
    workdir = tmp_path_factory.mktemp("outage")
    with run_milvus_server(workdir / "milvus") as uri:
        assert run_cli("index", str(catalogue.photos["coffee"]), "--milvus-uri", uri).returncode == 0
        with run_predictor(uri, workdir) as server:
            assert httpx.get(f"{server.http_url}/v2/health/ready").status_code == 200
            kill_milvus_server(uri)
            yield server


def test_readiness_turns_false_when_milvus_is_unreachable(server_without_milvus):
    url = server_without_milvus.http_url
    wait_for(
        lambda: httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 503,
        timeout_s=60,
        what="readiness turning false",
    )
    assert httpx.get(f"{url}/v2/models/image-search/ready", timeout=30).status_code == 503
    assert httpx.get(f"{url}/v2/health/live", timeout=30).status_code == 200, "liveness does not depend on Milvus"


def test_search_while_milvus_is_down_is_unavailable_not_a_crash(server_without_milvus, catalogue):
    import base64

    body = {"instances": [{"image": {"b64": base64.b64encode(catalogue.photos["coffee"].read_bytes()).decode()}}]}
    response = httpx.post(f"{server_without_milvus.http_url}/v1/models/image-search:predict", json=body, timeout=120)
    assert response.status_code == 503, response.text
    assert server_without_milvus.process.poll() is None


def test_search_while_milvus_is_down_is_unavailable_with_the_reason_on_v2_rest_and_grpc(
    server_without_milvus, catalogue
):
    import base64

    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    photo = np.array([catalogue.photos["coffee"].read_bytes()], dtype=np.object_)
    rest = httpclient.InferenceServerClient(server_without_milvus.http_url.removeprefix("http://"), network_timeout=120)
    rest_tensor = httpclient.InferInput("image", [1], "BYTES")
    rest_tensor.set_data_from_numpy(photo, binary_data=True)
    grpc = grpcclient.InferenceServerClient(server_without_milvus.grpc_address)
    grpc_tensor = grpcclient.InferInput("image", [1], "BYTES")
    grpc_tensor.set_data_from_numpy(photo)
    for call, status in (
        (lambda: rest.infer("image-search", [rest_tensor]), "503"),
        (lambda: grpc.infer("image-search", [grpc_tensor], client_timeout=120), "StatusCode.UNAVAILABLE"),
    ):
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert refused.value.status() == status
        assert "Milvus" in refused.value.message(), "the reason travels with the status"
    v2_json = httpx.post(
        f"{server_without_milvus.http_url}/v2/models/image-search/infer",
        json={
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(photo[0]).decode()]}
            ]
        },
        timeout=120,
    )
    assert v2_json.status_code == 503 and "Milvus" in v2_json.json()["error"], v2_json.text
    assert server_without_milvus.process.poll() is None
