"""Index settings against real Milvus (milvus-lite and the Milvus server): a collection made with `--index-type HNSW`
keeps that index, a server configured otherwise searches it with the index it really has, and a request's `effort`
is HNSW's `ef`, bounded below by the hits asked for, on REST V1, REST V2 JSON and gRPC."""

import base64
import hashlib
import re
import uuid

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from harness.predictor_server import run_cli, run_predictor
from tests.e2e.conftest import BACKENDS

MODEL = "image-search"
PHOTOS = ["coins", "coffee", "clock", "camera", "moon", "rocket", "brick", "grass"]


@pytest.fixture(scope="module", params=BACKENDS)
def hnsw_server(request, catalogue, tmp_path_factory):
    """A collection indexed as HNSW (M 8, efConstruction 64), served by a predictor whose own settings say FLAT."""
    workdir = tmp_path_factory.mktemp("index-settings")
    uri = str(workdir / "milvus.db") if request.param == "milvus-lite" else request.getfixturevalue("milvus_server_uri")
    alias = f"hnsw_{uuid.uuid4().hex[:8]}"
    photos = workdir / "photos"
    photos.mkdir()
    for name in PHOTOS:
        (photos / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
    indexed = run_cli(
        "index",
        str(photos),
        "--milvus-uri",
        uri,
        "--collection",
        alias,
        "--index-type",
        "HNSW",
        "--index-params",
        "M=8,efConstruction=64",
    )
    assert indexed.returncode == 0 and f"added {len(PHOTOS)}" in indexed.stdout, indexed.stderr
    with run_predictor(uri, workdir, "--collection", alias, "--index-type", "FLAT") as server:
        yield server


def v2_json(server, image: bytes, **parameters) -> httpx.Response:
    body = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}],
        "parameters": parameters,
    }
    return httpx.post(f"{server.http_url}/v2/models/{MODEL}/infer", json=body, timeout=60)


def v1(server, image: bytes, **parameters) -> httpx.Response:
    instances = [{"image": {"b64": base64.b64encode(image).decode()}}]
    return httpx.post(
        f"{server.http_url}/v1/models/{MODEL}:predict",
        json={"instances": instances, "parameters": parameters},
        timeout=60,
    )


def grpc_ids(server, image: bytes, **parameters) -> list[str]:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
    ids = client.infer(MODEL, [tensor], parameters=parameters).as_numpy("ids")[0]
    return [value.decode() for value in ids if value]


def test_the_collection_keeps_its_hnsw_index_whatever_the_server_is_told(hnsw_server):
    effort = httpx.get(f"{hnsw_server.http_url}/v2/models/{MODEL}").json()["parameters"]["effort"]
    assert effort == {
        "type": "integer",
        "index_type": "HNSW",
        "search_parameter": "ef",
        "default": 64,
        "minimum": "offset + top_k",
        "maximum": 2048,
    }


def test_effort_as_low_as_the_hits_asked_for_finds_them_on_every_transport(hnsw_server, catalogue):
    coins = catalogue.photos["coins"].read_bytes()
    digest = hashlib.sha256(coins).hexdigest()
    found = grpc_ids(hnsw_server, coins, top_k=5, effort=5)
    assert len(found) == 5 and found[0] == digest
    json_answer = v2_json(hnsw_server, coins, top_k=3, offset=1, effort=4)
    assert json_answer.status_code == 200, json_answer.text
    ids = next(output for output in json_answer.json()["outputs"] if output["name"] == "ids")["data"]
    assert len(ids) == 3 and digest not in ids, "offset 1 skips the query's own image"
    v1_answer = v1(hnsw_server, coins, top_k=len(PHOTOS), effort=2048)
    assert v1_answer.status_code == 200, v1_answer.text
    assert len(v1_answer.json()["predictions"][0]) == len(PHOTOS), "the widest effort finds every row"


def test_effort_below_the_hits_or_above_hnsw_bound_is_a_clear_400_on_every_transport(hnsw_server, catalogue):
    coins = catalogue.photos["coins"].read_bytes()
    below = "parameter 'effort' must be an integer from 5 to 2048 for this collection's HNSW index (its ef"
    with pytest.raises(InferenceServerException) as refused:
        grpc_ids(hnsw_server, coins, top_k=3, offset=2, effort=4)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and below in refused.value.message()
    json_answer = v2_json(hnsw_server, coins, top_k=3, offset=2, effort=4)
    assert json_answer.status_code == 400 and below in json_answer.json()["error"], json_answer.text
    above = v1(hnsw_server, coins, top_k=3, effort=2049)
    assert above.status_code == 400, above.text
    assert "parameter 'effort' must be an integer from 3 to 2048" in above.json()["error"]
    not_a_number = v1(hnsw_server, coins, effort="more")
    assert not_a_number.status_code == 400 and "parameter 'effort' must be an integer" in not_a_number.json()["error"]


def test_the_query_command_passes_effort_and_says_in_one_line_why_the_server_refused_it(hnsw_server, catalogue):
    photo = str(catalogue.photos["coins"])
    found = run_cli(
        "query", photo, "--url", hnsw_server.grpc_address, "--transport", "grpc", "--top-k", "3", "--effort", "3"
    )
    assert found.returncode == 0, found.stderr
    hits = [line for line in found.stdout.splitlines() if re.match(r"\s+\d+\s+-?\d\.\d{3}", line)]
    assert len(hits) == 3 and hits[0].endswith("photos/coins.jpg"), found.stdout
    refused = run_cli("query", photo, "--url", hnsw_server.http_url, "--top-k", "3", "--effort", "2")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "parameter 'effort' must be an integer from 3 to 2048" in refused.stderr
