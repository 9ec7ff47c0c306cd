"""Requests are bounded: a body over --max-request-bytes is refused before it is read, and the limit follows the
image limits, so an image the limits allow also fits a gRPC message.

The server here is a fresh process of its own, so that its memory before a request is its real idle footprint and not
what earlier tests left in its heap. It has an empty index: the size limit stands in front of every model, and the
classifier, which needs no index, answers the gRPC requests.
"""

import base64
import io
import socket
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from harness.predictor_server import run_predictor
from harness.process_memory import MIB, watch_peak_rss
from harness.raw_http import post
from predictor.imaging.decoding import ImageLimits
from predictor.serving.request_size import default_max_request_bytes

INFER = "/v2/models/image-search/infer"
CLASSIFIER = "image-classifier"
LIMIT = default_max_request_bytes(ImageLimits())
PEAK_RSS_BUDGET = 300 * MIB
BIG_BODY = 200 * MIB
CHUNK = b"A" * MIB  # valid base64 and valid raw bytes alike; one buffer reused, so the client holds 1 MiB


def v2_json_head() -> bytes:
    return b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["'


def body_chunks(total: int, first: bytes = b"") -> list[bytes]:
    return [first] + [CHUNK] * ((total - len(first)) // len(CHUNK))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("request-size")
    with run_predictor(str(workdir / "empty.db"), workdir, wait_for="/v2/health/live") as running:
        yield running


@pytest.fixture(scope="module")
def large_photo() -> bytes:
    """A real 9+ MiB PNG, above KServe's 8 MiB gRPC default and below the 10 MiB image limit."""
    noise = np.random.default_rng(7).integers(0, 256, (1800, 1800, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, format="PNG", compress_level=1)
    data = out.getvalue()
    assert 9 * MIB < len(data) < ImageLimits().max_bytes
    return data


BODIES = {
    "binary, declared length": ({"Content-Type": "application/octet-stream"}, False),
    "binary, streamed": ({"Content-Type": "application/octet-stream"}, True),
    "JSON, declared length": ({"Content-Type": "application/json"}, False),
    "JSON, streamed": ({"Content-Type": "application/json"}, True),
}


@pytest.mark.parametrize("case", BODIES)
def test_refusing_a_200_mb_body_costs_the_server_little_memory(server, case):
    headers, streamed = BODIES[case]
    header = b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {}}]}'
    if headers["Content-Type"] == "application/json":
        first = v2_json_head()
    else:
        first = header
        headers = {**headers, "Inference-Header-Content-Length": str(len(header))}
    chunks = body_chunks(BIG_BODY, first)
    if not streamed:
        headers = {**headers, "Content-Length": str(sum(map(len, chunks)))}
    with watch_peak_rss(server.process.pid) as memory:
        response = post(server.http_url, INFER, headers, chunks, chunked=streamed)
    assert response.status == 413, response.body
    print(f"\n{case}: server RSS {memory.before / MIB:.0f} MiB idle, +{memory.growth / MIB:.1f} MiB at peak")
    assert memory.growth < PEAK_RSS_BUDGET, f"{memory.growth / MIB:.0f} MiB above idle"


def test_declared_oversized_body_gets_413_before_any_of_it_is_sent(server):
    response = post(server.http_url, INFER, {"Content-Type": "application/json", "Content-Length": str(10**9)})
    assert response.status == 413, response.body
    assert "--max-request-bytes" in response.json()["error"] and str(LIMIT) in response.json()["error"]
    assert response.seconds < 2.0


def test_streamed_body_is_counted_and_reading_stops_at_the_limit(server):
    chunks = body_chunks(BIG_BODY, v2_json_head())
    response = post(server.http_url, INFER, {"Content-Type": "application/json"}, chunks, chunked=True)
    assert response.status == 413, response.body
    assert "streamed request body grew past" in response.json()["error"]
    # What the server read, plus what the sockets' buffers took in before it answered.
    assert response.sent_bytes < LIMIT + 16 * MIB


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "JSON"])
def test_a_large_image_within_the_limits_is_served_over_rest(server, large_photo, binary):
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=120)
    tensor = httpclient.InferInput("image", [1], "BYTES")
    element = large_photo if binary else base64.b64encode(large_photo)
    tensor.set_data_from_numpy(np.array([element], dtype=np.object_), binary_data=binary)
    result = client.infer(CLASSIFIER, [tensor], parameters={"top_k": 2, "confidence_threshold": 0.0})
    assert result.as_numpy("labels").shape == (1, 2)


def test_an_image_the_limits_allow_fits_a_grpc_message(server, large_photo):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([large_photo], dtype=np.object_))
    result = client.infer(CLASSIFIER, [tensor], parameters={"top_k": 2, "confidence_threshold": 0.0})
    assert result.as_numpy("labels").shape == (1, 2)


def test_grpc_message_over_the_limit_is_resource_exhausted(server, large_photo):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    copies = LIMIT // len(large_photo) + 1
    tensor = grpcclient.InferInput("image", [copies], "BYTES")
    tensor.set_data_from_numpy(np.array([large_photo] * copies, dtype=np.object_))
    with pytest.raises(InferenceServerException, match="RESOURCE_EXHAUSTED"):
        client.infer(CLASSIFIER, [tensor])


def test_the_server_serves_normally_after_refusals(server, catalogue):
    photo = catalogue.photos["coffee"].read_bytes()
    for _ in range(2):
        post(server.http_url, INFER, {"Content-Type": "application/json", "Content-Length": str(10**9)})
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo], dtype=np.object_))
    assert client.infer(CLASSIFIER, [tensor]).as_numpy("labels").shape[0] == 1
    assert server.process.poll() is None


def test_clients_that_stall_halfway_through_their_bodies_hold_up_no_one_else(server, catalogue):
    photo = catalogue.photos["coffee"].read_bytes()
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    head = f"POST {INFER} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    stalled = [socket.create_connection((host, int(port)), timeout=30) for _ in range(8)]
    try:
        for connection in stalled:
            connection.sendall(head.encode() + v2_json_head())  # and then nothing more
        client = grpcclient.InferenceServerClient(server.grpc_address)
        tensor = grpcclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([photo], dtype=np.object_))
        assert client.infer(CLASSIFIER, [tensor]).as_numpy("labels").shape[0] == 1
        rest = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=60)
        rest_tensor = httpclient.InferInput("image", [1], "BYTES")
        rest_tensor.set_data_from_numpy(np.array([photo], dtype=np.object_), binary_data=True)
        assert rest.infer(CLASSIFIER, [rest_tensor]).as_numpy("labels").shape[0] == 1
        started = time.monotonic()
        assert httpx.get(f"{server.http_url}/v2/health/live", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        for connection in stalled:
            connection.close()
