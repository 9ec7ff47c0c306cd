"""Diversity and grouping through a real server, on both Milvus kinds and every transport.

The catalogue holds a photo, three near copies of it (cropped, resized, re-encoded), and other photos; each picture's
`family` metadata field names the photo it was made from. Searching with the photo, the plain top 4 is the photo and
its copies; with diversity the photo stays first and the copies give way to other pictures; grouped by `family`, one
hit per family comes back.
"""

import base64
import json
import uuid

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from harness.predictor_server import run_cli, run_predictor
from tests.e2e.conftest import BACKENDS, near_duplicate

MODEL = "image-search"
ORIGINAL = "coffee"
OTHERS = ["coins", "clock", "camera", "moon", "rocket", "brick", "grass", "chelsea", "astronaut"]
COPIES = 3


@pytest.fixture(scope="module", params=BACKENDS)
def served(request, catalogue, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reranking")
    uri = str(workdir / "milvus.db") if request.param == "milvus-lite" else request.getfixturevalue("milvus_server_uri")
    photos = workdir / "photos"
    photos.mkdir()
    manifest = []
    for name in [ORIGINAL, *OTHERS]:
        (photos / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
        manifest.append({"path": f"{name}.jpg", "family": name})
    copy = catalogue.photos[ORIGINAL].read_bytes()
    for number in range(COPIES):
        copy = near_duplicate(copy)
        (photos / f"{ORIGINAL}-copy{number}.jpg").write_bytes(copy)
        manifest.append({"path": f"{ORIGINAL}-copy{number}.jpg", "family": ORIGINAL})
    (workdir / "families.jsonl").write_text("".join(json.dumps(row) + "\n" for row in manifest))
    alias = f"rerank_{uuid.uuid4().hex[:8]}"
    indexed = run_cli(
        "index", str(photos), "--milvus-uri", uri, "--collection", alias, "--metadata", str(workdir / "families.jsonl")
    )
    assert indexed.returncode == 0, indexed.stderr
    with run_predictor(uri, workdir, "--collection", alias) as server:
        yield server, catalogue.photos[ORIGINAL].read_bytes()


def v1_hits(server, image: bytes, **parameters) -> list[dict]:
    body = {"instances": [{"image": {"b64": base64.b64encode(image).decode()}}], "parameters": parameters}
    answer = httpx.post(f"{server.http_url}/v1/models/{MODEL}:predict", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"][0]


def v2_json(server, image: bytes, **parameters) -> httpx.Response:
    body = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}],
        "parameters": parameters,
    }
    return httpx.post(f"{server.http_url}/v2/models/{MODEL}/infer", json=body, timeout=60)


def v2_uris(server, image: bytes, **parameters) -> list[str]:
    answer = v2_json(server, image, **parameters)
    assert answer.status_code == 200, answer.text
    uris = next(output for output in answer.json()["outputs"] if output["name"] == "uris")["data"]
    return [uri for uri in uris if uri]


def grpc_uris(server, image: bytes, **parameters) -> list[str]:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
    uris = client.infer(MODEL, [tensor], parameters=parameters).as_numpy("uris")[0]
    return [value.decode() for value in uris if value]


def copies_in(uris: list[str]) -> int:
    return sum(f"/{ORIGINAL}-copy" in uri for uri in uris)


def test_diversity_moves_the_copies_out_of_the_top_hits_and_keeps_the_best_one(served):
    server, photo = served
    plain = v1_hits(server, photo, top_k=1 + COPIES)
    assert plain[0]["uri"].endswith(f"/{ORIGINAL}.jpg")
    assert copies_in([hit["uri"] for hit in plain]) == COPIES, "the plain top hits are the photo and its copies"
    diverse = v1_hits(server, photo, top_k=1 + COPIES, diversity=0.7)
    assert diverse[0]["uri"] == plain[0]["uri"] and diverse[0]["score"] == pytest.approx(plain[0]["score"], abs=1e-5)
    assert copies_in([hit["uri"] for hit in diverse]) == 0
    scores = {hit["uri"]: hit["score"] for hit in v1_hits(server, photo, top_k=1 + COPIES + len(OTHERS))}
    assert all(hit["score"] == pytest.approx(scores[hit["uri"]], abs=1e-5) for hit in diverse), "plain similarity"
    for found in (
        v2_uris(server, photo, top_k=1 + COPIES, diversity=0.7),
        grpc_uris(server, photo, top_k=4, diversity=0.7),
    ):
        assert found[0].endswith(f"/{ORIGINAL}.jpg") and copies_in(found) == 0


def test_offset_continues_the_diversified_order(served):
    server, photo = served
    whole = v2_uris(server, photo, top_k=8, diversity=0.7)
    assert v2_uris(server, photo, top_k=4, offset=4, diversity=0.7) == whole[4:]


def test_group_by_returns_one_hit_per_family_on_every_transport(served):
    server, photo = served
    for uris in (
        [hit["uri"] for hit in v1_hits(server, photo, top_k=6, group_by="family")],
        v2_uris(server, photo, top_k=6, group_by="family"),
        grpc_uris(server, photo, top_k=6, group_by="family"),
    ):
        assert len(uris) == 6 and uris[0].endswith(f"/{ORIGINAL}.jpg") and copies_in(uris) == 0
    two = v2_uris(server, photo, top_k=6, group_by="family", group_size=2)
    assert copies_in(two) == 1


def test_bad_reranking_values_are_a_400_naming_the_parameter(served):
    server, photo = served
    for parameters, name in [
        ({"diversity": 2}, "diversity"),
        ({"group_by": "family", "group_size": 11}, "group_size"),
        ({"group_size": 2}, "group_size"),
        ({"diversity": 0.5, "top_k": 100, "offset": 150}, "diversity"),
    ]:
        answer = v2_json(server, photo, **parameters)
        assert answer.status_code == 400 and f"parameter '{name}'" in answer.json()["error"], answer.text
    with pytest.raises(InferenceServerException) as refused:
        grpc_uris(server, photo, diversity=-0.1)
    assert (
        refused.value.status() == "StatusCode.INVALID_ARGUMENT" and "parameter 'diversity'" in refused.value.message()
    )


def test_the_metadata_declares_the_new_parameters(served):
    server, _ = served
    parameters = httpx.get(f"{server.http_url}/v2/models/{MODEL}").json()["parameters"]
    assert parameters["diversity"]["maximum"] == 1.0 and parameters["group_size"]["maximum"] == 10
    assert "group_by" in parameters


def test_the_query_command_takes_diversity_and_group_by(served, catalogue):
    server, _ = served
    found = run_cli(
        "query", str(catalogue.photos[ORIGINAL]), "--url", server.http_url, "--top-k", "4", "--diversity", "0.7"
    )
    assert found.returncode == 0, found.stderr
    assert f"{ORIGINAL}.jpg" in found.stdout and f"{ORIGINAL}-copy" not in found.stdout
    grouped = run_cli(
        "query", str(catalogue.photos[ORIGINAL]), "--url", server.http_url, "--top-k", "4", "--group-by", "family"
    )
    assert grouped.returncode == 0 and f"{ORIGINAL}-copy" not in grouped.stdout, grouped.stdout
