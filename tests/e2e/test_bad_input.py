"""Every way a client can get a request wrong gets a 400 that names the problem, and the server keeps serving."""

import base64
import io
import json

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

# Nothing here depends on which Milvus answers, so one kind is enough.
pytestmark = pytest.mark.parametrize("milvus_uri", ["milvus-lite"], indirect=True)


def png_bomb() -> bytes:
    out = io.BytesIO()
    Image.new("L", (8_000, 8_000)).save(out, format="PNG")  # 64 Mpx, over the 40 Mpx default, in about 60 KB
    return out.getvalue()


def v2(data, datatype="BYTES", shape=None, parameters=None, name="image"):
    body = {"inputs": [{"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}]}
    if parameters is not None:
        body["parameters"] = parameters
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def photo(catalogue) -> bytes:
    return catalogue.photos["coffee"].read_bytes()


BAD_V2_REQUESTS = {
    "not an image": (lambda p: v2([b64(b"just some text, not a picture")]), "image 0: not a supported image"),
    "truncated image": (lambda p: v2([b64(p[: len(p) // 3])]), "image 0: corrupt or truncated"),
    "decompression bomb": (lambda p: v2([b64(png_bomb())]), "pixels"),
    "bad base64": (lambda p: v2(["@@@ not base64 @@@"]), "not valid base64"),
    "wrong datatype": (lambda p: v2([1.0], datatype="FP32"), "must have datatype BYTES"),
    "wrong shape": (lambda p: v2([b64(p)], shape=[1, 1]), "must have shape [N]"),
    "shape does not match data": (lambda p: v2([b64(p)], shape=[2]), "image"),
    "wrong input name": (lambda p: v2([b64(p)], name="picture"), "unknown input(s) ['picture']"),
    "top_k too large": (lambda p: v2([b64(p)], parameters={"top_k": 101}), "'top_k' must be an integer from 1 to 100"),
    "top_k zero": (lambda p: v2([b64(p)], parameters={"top_k": 0}), "'top_k' must be an integer from 1 to 100"),
    "top_k not a number": (lambda p: v2([b64(p)], parameters={"top_k": "ten"}), "'top_k' must be an integer"),
    "too many images": (lambda p: v2([b64(p)] * 65), "over the limit of 64 per request"),
    "no images": (lambda p: v2([], shape=[0]), "no images"),
    "second image bad": (lambda p: v2([b64(p), b64(b"garbage")]), "image 1:"),
}


@pytest.mark.parametrize("case", sorted(BAD_V2_REQUESTS))
def test_bad_v2_request_gets_400_naming_the_problem(server, photo, case):
    build, expected = BAD_V2_REQUESTS[case]
    response = httpx.post(f"{server.http_url}/v2/models/image-search/infer", json=build(photo), timeout=60)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]


BAD_V1_REQUESTS = {
    "no instances": ({"inputs": []}, '"instances"'),
    "instance without image": ({"instances": [{"picture": "x"}]}, "instance 0"),
    "image not base64": ({"instances": [{"image": {"b64": "%%%"}}]}, "not valid base64"),
    "top_k out of range": (
        {"instances": [{"image": {"b64": b64(b"x")}}], "parameters": {"top_k": 1000}},
        "'top_k' must be an integer from 1 to 100",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_V1_REQUESTS))
def test_bad_v1_request_gets_400_naming_the_problem(server, case):
    body, expected = BAD_V1_REQUESTS[case]
    response = httpx.post(f"{server.http_url}/v1/models/image-search:predict", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]


def test_body_that_is_not_json_gets_400(server):
    response = httpx.post(
        f"{server.http_url}/v2/models/image-search/infer",
        content=b"\x00\x01 definitely not json",
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 400, response.text


def test_binary_request_whose_sizes_lie_gets_400(server, photo):
    header = json.dumps(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 10**9}}]}
    ).encode()
    response = httpx.post(
        f"{server.http_url}/v2/models/image-search/infer",
        content=header + photo,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "binary_data_size" in response.json()["error"]


def test_grpc_bad_image_is_invalid_argument(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"\x89PNG\r\n\x1a\n but then nothing"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT.*image 0"):
        client.infer("image-search", [tensor])


def test_server_still_answers_after_a_burst_of_bad_requests(server, photo):
    for _ in range(20):
        httpx.post(f"{server.http_url}/v2/models/image-search/infer", json=v2([b64(b"junk")]), timeout=30)
    good = httpx.post(f"{server.http_url}/v2/models/image-search/infer", json=v2([b64(photo)]), timeout=60)
    assert good.status_code == 200
    assert server.process.poll() is None
