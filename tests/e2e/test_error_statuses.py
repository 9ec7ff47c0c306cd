"""Every typed error a request can hit has its status on every transport: V1 JSON, V2 REST (JSON and binary) and
gRPC, through real clients (tritonclient for V2). Milvus outages are covered in test_milvus_outage.py."""

import base64

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from predictor.embedding.model_package import default_spec

# Nothing here depends on which Milvus answers, so one kind is enough.
pytestmark = pytest.mark.parametrize("milvus_uri", ["milvus-lite"], indirect=True)

MODEL = "image-search"


def v2_call(server, transport: str, name: str, values: list, version: str = "", **parameters):
    array = np.array(values, dtype=np.object_)
    if transport == "grpc":
        client = grpcclient.InferenceServerClient(server.grpc_address)
        tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(array)
    else:
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        tensor = httpclient.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(array, binary_data=transport == "rest-binary")
    return client.infer(MODEL, [tensor], parameters=parameters, model_version=version)


def refused(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as error:
        call()
    return error.value.status().removeprefix("StatusCode."), error.value.message()


@pytest.fixture(scope="module")
def photo(catalogue) -> bytes:
    return catalogue.photos["coffee"].read_bytes()


CASES = {
    "bad image": (("image", "truncated photo"), {}, ("400", "INVALID_ARGUMENT"), "image 0: corrupt or truncated"),
    "bad parameter": (("image", "photo"), {"top_k": 0}, ("400", "INVALID_ARGUMENT"), "'top_k' must be an integer"),
    "bad filter": (("image", "photo"), {"filter": "vector != 0"}, ("400", "INVALID_ARGUMENT"), "'vector' is not a"),
    "unknown id": (("id", "nope"), {}, ("400", "INVALID_ARGUMENT"), "id 'nope' is not in namespace 'default'"),
    "id with a control character": (("id", "a\x00b"), {}, ("400", "INVALID_ARGUMENT"), "is not in namespace 'default'"),
}


@pytest.mark.parametrize("transport", ["rest-json", "rest-binary", "grpc"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_client_errors_get_their_status_on_v2_rest_and_grpc(server, photo, transport, case):
    (name, value), parameters, statuses, message = CASES[case]
    image = photo[: len(photo) // 3] if value == "truncated photo" else photo
    values = [image if name == "image" else value]
    if transport == "rest-json" and name == "image":
        values = [base64.b64encode(image)]
    status, text = refused(lambda: v2_call(server, transport, name, values, **parameters))
    assert status == (statuses[1] if transport == "grpc" else statuses[0])
    assert message in text


@pytest.mark.parametrize("case", sorted(CASES))
def test_client_errors_get_their_status_on_v1(server, photo, case):
    (name, value), parameters, statuses, message = CASES[case]
    image = photo[: len(photo) // 3] if value == "truncated photo" else photo
    instance = {"image": {"b64": base64.b64encode(image).decode()}} if name == "image" else {name: value}
    response = httpx.post(
        f"{server.http_url}/v1/models/{MODEL}:predict",
        json={"instances": [instance], "parameters": parameters},
        timeout=60,
    )
    assert response.status_code == int(statuses[0]) and message in response.json()["error"]


@pytest.mark.parametrize("transport", ["rest-json", "rest-binary", "grpc"])
def test_an_unknown_model_version_is_404_or_not_found(server, photo, transport):
    status, text = refused(lambda: v2_call(server, transport, "image", [base64.b64encode(photo)], version="9"))
    assert status == ("NOT_FOUND" if transport == "grpc" else "404")
    assert "no version '9'" in text and f"runs version {default_spec().version!r}" in text


def test_an_unknown_model_is_404_or_not_found(server, photo):
    response = httpx.post(f"{server.http_url}/v2/models/nope/infer", json={"inputs": []}, timeout=30)
    assert response.status_code == 404
    v1 = httpx.post(f"{server.http_url}/v1/models/nope:predict", json={"instances": []}, timeout=30)
    assert v1.status_code == 404 and "nope" in v1.json()["error"]
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo], dtype=np.object_))
    status, _ = refused(lambda: client.infer("nope", [tensor]))
    assert status == "NOT_FOUND"
