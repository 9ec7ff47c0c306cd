"""Searching the sample catalogue through every transport a real client uses."""

import base64
import json

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from harness.polling import wait_for
from predictor.embedding.model_package import default_spec
from tests.e2e.conftest import near_duplicate

QUERIES = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle_left"]


def expected_id(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def queries(catalogue):
    return {name: near_duplicate(catalogue.photos[name].read_bytes()) for name in QUERIES}


def assert_originals_come_back_first(catalogue, ids, scores, uris):
    for row, name in enumerate(QUERIES):
        top_id = ids[row][0].decode() if isinstance(ids[row][0], bytes) else ids[row][0]
        top_uri = uris[row][0].decode() if isinstance(uris[row][0], bytes) else uris[row][0]
        assert top_id == expected_id(catalogue.photos[name]), f"{name}: top-1 is {top_uri}"
        assert top_uri.endswith(f"{name}.jpg")
        assert scores[row][0] > 0.9, f"{name}: top-1 score {scores[row][0]:.3f}"
        assert list(scores[row]) == sorted(scores[row], reverse=True)


def test_v2_rest_binary_data_finds_the_originals(server_each, catalogue, queries):
    client = httpclient.InferenceServerClient(server_each.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("image", [len(QUERIES)], "BYTES")
    tensor.set_data_from_numpy(np.array([queries[n] for n in QUERIES], dtype=np.object_), binary_data=True)
    result = client.infer("image-search", [tensor], parameters={"top_k": 3})
    assert result.as_numpy("ids").shape == (len(QUERIES), 3)
    assert_originals_come_back_first(
        catalogue, result.as_numpy("ids"), result.as_numpy("scores"), result.as_numpy("uris")
    )
    assert result.as_numpy("embedding") is None


def test_v2_rest_json_with_base64_finds_the_originals(server_each, catalogue, queries):
    client = httpclient.InferenceServerClient(server_each.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("image", [len(QUERIES)], "BYTES")
    encoded = [base64.b64encode(queries[n]) for n in QUERIES]
    tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=False) for name in ("ids", "scores", "uris")]
    result = client.infer("image-search", [tensor], outputs=outputs, parameters={"top_k": 4})
    assert result.as_numpy("scores").shape == (len(QUERIES), 4)
    assert_originals_come_back_first(
        catalogue, result.as_numpy("ids"), result.as_numpy("scores"), result.as_numpy("uris")
    )


def test_v2_grpc_finds_the_originals(server_each, catalogue, queries):
    client = grpcclient.InferenceServerClient(server_each.grpc_address)
    tensor = grpcclient.InferInput("image", [len(QUERIES)], "BYTES")
    tensor.set_data_from_numpy(np.array([queries[n] for n in QUERIES], dtype=np.object_))
    result = client.infer("image-search", [tensor], parameters={"top_k": 5})
    assert_originals_come_back_first(
        catalogue, result.as_numpy("ids"), result.as_numpy("scores"), result.as_numpy("uris")
    )


def test_v1_json_finds_the_originals_with_metadata(server_each, catalogue, queries):
    body = {
        "instances": [{"image": {"b64": base64.b64encode(queries[n]).decode()}} for n in QUERIES],
        "parameters": {"top_k": 2},
    }
    response = httpx.post(f"{server_each.http_url}/v1/models/image-search:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [len(hits) for hits in predictions] == [2] * len(QUERIES)
    ids = [[hit["id"] for hit in hits] for hits in predictions]
    scores = [[hit["score"] for hit in hits] for hits in predictions]
    uris = [[hit["uri"] for hit in hits] for hits in predictions]
    assert_originals_come_back_first(catalogue, ids, scores, uris)
    assert predictions[0][0]["metadata"] == {"filename": "chelsea.jpg"}


def test_embedding_output_only_when_asked_for(server_each, catalogue):
    client = httpclient.InferenceServerClient(server_each.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([catalogue.photos["rocket"].read_bytes()], dtype=np.object_))
    result = client.infer("image-search", [tensor], parameters={"return_embedding": True})
    embedding = result.as_numpy("embedding")
    assert embedding.shape == (1, default_spec().dimension) and embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-4
    assert result.as_numpy("scores")[0][0] > 0.999, "the catalogue's own photo is its own best match"


def test_default_top_k_is_ten(server_each, catalogue):
    client = grpcclient.InferenceServerClient(server_each.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([catalogue.photos["coins"].read_bytes()], dtype=np.object_))
    assert client.infer("image-search", [tensor]).as_numpy("ids").shape == (1, 10)


def test_model_metadata_declares_inputs_outputs_and_parameters(server):
    metadata = httpx.get(f"{server.http_url}/v2/models/image-search").json()
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 1280]},
        {"name": "id", "datatype": "BYTES", "shape": [-1]},
    ]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        "ids": "BYTES",
        "scores": "FP32",
        "uris": "BYTES",
        "metadata": "BYTES",
        "embedding": "FP32",
    }
    assert metadata["versions"] == [default_spec().version]
    assert metadata["parameters"]["inputs"] == "send exactly one of image, embedding, id"
    assert set(metadata["parameters"]) >= {"top_k", "offset", "min_score", "filter", "namespace", "return_metadata"}
    # The collection was made with the default index, so effort is its nprobe, bounded by its 1024 lists.
    assert metadata["parameters"]["effort"] == {
        "type": "integer",
        "index_type": "IVF_FLAT",
        "search_parameter": "nprobe",
        "default": 32,
        "minimum": 1,
        "maximum": 1024,
    }


def test_health_endpoints_report_live_and_ready(server):
    assert httpx.get(f"{server.http_url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.http_url}/v2/health/ready").json() == {"ready": True}
    for model in ("image-search", "image-classifier"):
        assert httpx.get(f"{server.http_url}/v2/models/{model}/ready").json()["ready"] is True


def json_line(line: str) -> dict | None:
    try:
        parsed = json.loads(line) if line.startswith("{") else None
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def test_each_request_leaves_one_json_log_line_without_image_data(server, catalogue, queries):
    photo = queries["coffee"]
    body = {"instances": [{"image": {"b64": base64.b64encode(photo).decode()}}]}
    response = httpx.post(
        f"{server.http_url}/v1/models/image-search:predict", json=body, headers={"x-request-id": "log-v1"}, timeout=60
    )
    assert response.status_code == 200
    rest = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([photo, photo], dtype=np.object_))
    rest.infer("image-search", [tensor], request_id="log-v2-rest")
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo], dtype=np.object_))
    grpc.infer("image-search", [tensor], request_id="log-v2-grpc")

    expected = {"log-v1": ("v1", 1), "log-v2-rest": ("v2-rest", 2), "log-v2-grpc": ("v2-grpc", 1)}

    def logged_requests() -> dict:
        # A request's line is written as its response goes out: read only the lines already complete.
        # torch's own warnings go to the same stream from the compiling thread; only whole JSON lines are ours.
        text = server.log()
        lines = [parsed for line in text[: text.rfind("\n") + 1].splitlines() if (parsed := json_line(line))]
        return {line["request_id"]: line for line in lines if line.get("message") == "request"}

    wait_for(lambda: expected.keys() <= logged_requests().keys(), 30, "a log line for each request")
    logged = logged_requests()
    for request_id, (protocol, images) in expected.items():
        line = logged[request_id]
        assert (line["protocol"], line["images"], line["outcome"]) == (protocol, images, "success")
        assert (
            line["model"] == "image-search"
            and line["model_version"] == default_spec().version
            and line["latency_ms"] > 0
        )
    assert base64.b64encode(photo).decode()[:200] not in server.log()


def test_the_precision_served_shows_in_the_build_info_metric_and_the_log(server):
    import re

    import httpx
    import torch

    from predictor.embedding import precision
    from predictor.embedding.model_package import DEFAULT_PRECISIONS

    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    labels = set(re.findall(r'image_search_build_info\{[^}]*precision="([a-z0-9]+)"', text))
    planned = precision.choose_precision("auto", torch.device("cpu"), DEFAULT_PRECISIONS)
    (served,) = labels
    loaded = [line for line in server.log().splitlines() if "loaded efficientnet-lite0" in line]
    assert loaded and f" at {served} (" in loaded[-1]
    # What `auto` picks here, unless the probe against fp32 refused it, in which case the log says so.
    assert served == planned or (served == "fp32" and "serving fp32" in loaded[-1])
    # The shared servers run eager (tests/e2e/conftest.py); the image test (tests/container) checks the log of a
    # compiling one.
    assert "not compiled (compilation off)" in loaded[-1]
