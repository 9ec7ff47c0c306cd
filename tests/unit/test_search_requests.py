"""The search API's request path in process: queries, options and outputs through the real models and protocol code,
over an in-memory index (tests/unit/conftest.py). The same features run against real Milvus in tests/e2e."""

import json

import numpy as np
import pytest

from predictor.index.vector_index import VectorIndex
from tests.unit.conftest import COLOURS, colour_vector, solid_jpeg
from tests.unit.transports import TRANSPORTS, ask, tensors

RED, BLUE = solid_jpeg(COLOURS["red"]), solid_jpeg(COLOURS["blue"])


def hit_ids(answer) -> list[list[str]]:
    if isinstance(answer.body, dict) and "predictions" in answer.body:
        return [[hit["id"] for hit in row] for row in answer.body["predictions"]]
    return tensors(answer)["ids"].tolist()


def last_search(server):
    return server.index.searches[-1][0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_offset_pages_through_the_same_ranking(in_process_server, transport):
    everything = hit_ids(ask(in_process_server, transport, "image", [RED], {"top_k": 4}))[0]
    second_page = hit_ids(ask(in_process_server, transport, "image", [RED], {"top_k": 2, "offset": 2}))[0]
    assert second_page == everything[2:4]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_more_like_this_leaves_the_item_itself_out(in_process_server, transport):
    ids = hit_ids(ask(in_process_server, transport, "id", ["red-id"], {"top_k": 3}))[0]
    assert "red-id" not in ids and len(ids) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_embedding_query_finds_what_the_image_query_it_came_from_finds(in_process_server, transport):
    image_answer = ask(in_process_server, "rest-v2-json", "image", [BLUE], {"top_k": 3, "return_embedding": True})
    embedding = tensors(image_answer)["embedding"]
    # Unnormalised on purpose: the server normalises.
    answer = ask(in_process_server, transport, "embedding", (embedding * 3.0).tolist(), {"top_k": 3})
    assert hit_ids(answer) == hit_ids(image_answer)


def test_min_score_drops_weak_hits_and_rows_are_padded(in_process_server):
    answer = ask(in_process_server, "rest-v2-json", "image", [RED, BLUE], {"top_k": 3, "min_score": 0.97})
    arrays = tensors(answer)
    assert arrays["ids"].shape == (2, 1)
    assert all(score >= 0.97 for score in arrays["scores"].ravel())


def test_namespaces_never_see_each_others_rows_and_the_header_decides(in_process_server):
    shop = ask(in_process_server, "rest-v1", "image", [RED], {"namespace": "shop", "top_k": 4})
    assert {hit["uri"].split("/")[2] for hit in shop.body["predictions"][0]} == {"shop"}
    by_header = ask(in_process_server, "grpc", "image", [RED], {"top_k": 4}, headers={"x-tenant": "shop"})
    assert {uri.split("/")[2] for uri in tensors(by_header)["uris"][0]} == {"shop"}
    refused = ask(in_process_server, "grpc", "image", [RED], {"namespace": "default"}, headers={"x-tenant": "shop"})
    assert refused.status == "INVALID_ARGUMENT" and "disagrees with header x-tenant" in refused.error
    unknown = ask(in_process_server, "rest-v2-json", "image", [RED], {"namespace": "nobody"})
    assert unknown.ok and tensors(unknown)["ids"].shape == (1, 0), "an unknown namespace is an empty result"
    assert ask(in_process_server, "rest-v2-json", "id", ["red-id"], {"namespace": "nobody"}).status == 400


def test_the_filter_reaches_the_index_rewritten_and_bad_ones_never_do(in_process_server):
    answer = ask(in_process_server, "rest-v2-json", "image", [RED], {"filter": "metadata['colour'] in ['red', 'blue']"})
    assert answer.ok
    assert last_search(in_process_server).filter == '(metadata["colour"] == "red" or metadata["colour"] == "blue")'
    searches = len(in_process_server.index.searches)
    for bad, problem in (
        ('id == "red-id"', "'id' is not a metadata field"),
        ('namespace == "shop"', "'namespace' is not a metadata field"),
        ('metadata["colour"] == ', "expected a value"),
        ("x" * 3000, "the limit is 2048"),
        (42, "parameter 'filter' must be a string"),
    ):
        refused = ask(in_process_server, "rest-v2-json", "image", [RED], {"filter": bad})
        assert refused.status == 400 and problem in refused.error, refused.error
    assert len(in_process_server.index.searches) == searches, "no refused filter reached the index"


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        ({"offset": -1}, "'offset' must be an integer from 0 to 990"),
        ({"offset": 995}, "'offset' must be an integer from 0 to 990"),
        ({"offset": "two"}, "'offset' must be an integer"),
        ({"min_score": 2.0}, "'min_score' must be a number from -1.0 to 1.0"),
        ({"min_score": "high"}, "'min_score' must be a number"),
        ({"return_metadata": "maybe"}, "'return_metadata' must be true or false"),
        ({"namespace": "no spaces"}, "'namespace' 'no spaces' is not a valid namespace"),
        ({"namespace": 7}, "'namespace' must be a string"),
    ],
)
def test_each_bad_option_names_its_parameter(in_process_server, parameters, problem):
    for transport in ("rest-v1", "rest-v2-json", "grpc"):
        answer = ask(in_process_server, transport, "image", [RED], parameters)
        assert answer.status in (400, "INVALID_ARGUMENT") and problem in answer.error, (transport, answer)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_effort_reaches_the_search_within_the_collections_index_bounds(in_process_server, transport):
    answer = ask(in_process_server, transport, "image", [RED], {"top_k": 2, "effort": 64})
    assert answer.ok and last_search(in_process_server).effort == 64
    assert ask(in_process_server, transport, "image", [RED], {"top_k": 2}).ok
    assert last_search(in_process_server).effort is None, "no effort asked: the index's default"
    searches = len(in_process_server.index.searches)
    for effort, problem in (
        (129, "'effort' must be an integer from 1 to 128 for this collection's IVF_FLAT index (its nprobe), got 129"),
        (0, "'effort' must be an integer from 1 to 128"),
        ("lots", "'effort' must be an integer"),
        (2.5, "'effort' must be an integer"),
    ):
        refused = ask(in_process_server, transport, "image", [RED], {"effort": effort})
        assert refused.status in (400, "INVALID_ARGUMENT") and problem in refused.error, (transport, refused)
    assert len(in_process_server.index.searches) == searches, "no refused effort reached the index"


def test_effort_follows_the_index_type_hnsw_never_below_the_hits_and_flat_has_none(in_process_server):
    index = in_process_server.index
    original = index.vector_index
    try:
        index.vector_index = VectorIndex("HNSW")
        assert ask(in_process_server, "grpc", "image", [RED], {"top_k": 3, "offset": 2, "effort": 5}).ok
        refused = ask(in_process_server, "rest-v1", "image", [RED], {"top_k": 3, "offset": 2, "effort": 4})
        assert refused.status == 400 and "from 5 to 2048" in refused.error and "offset + top_k" in refused.error
        index.vector_index = VectorIndex("FLAT")
        refused = ask(in_process_server, "rest-v2-binary", "image", [RED], {"effort": 8})
        assert refused.status == 400 and "'effort' does not apply to this collection's FLAT index" in refused.error
        assert ask(in_process_server, "rest-v2-binary", "image", [RED], {}).ok
    finally:
        index.vector_index = original


def test_two_query_inputs_at_once_are_refused(in_process_server):
    body = {
        "inputs": [
            {"name": "id", "datatype": "BYTES", "shape": [1], "data": ["red-id"]},
            {"name": "embedding", "datatype": "FP32", "shape": [1, 4], "data": [1, 0, 0, 0]},
        ]
    }
    answer = in_process_server.post("/v2/models/image-search/infer", json=body)
    assert answer.status_code == 400 and "send exactly one input" in answer.json()["error"]
    v1 = {"instances": [{"id": "red-id", "embedding": [1, 0, 0, 0]}]}
    answer = in_process_server.post("/v1/models/image-search:predict", json=v1)
    assert answer.status_code == 400 and 'exactly one of "image", "text", "embedding" or "id"' in answer.json()["error"]
    mixed = {"instances": [{"id": "red-id"}, {"embedding": [1, 0, 0, 0]}]}
    answer = in_process_server.post("/v1/models/image-search:predict", json=mixed)
    assert answer.status_code == 400 and "one kind of query per request" in answer.json()["error"]


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([[1.0, 0.0, 0.0]], "must have shape [N, 4]"),
        ([[float("nan"), 0.0, 0.0, 1.0]], "NaN or infinity"),
        ([[float("inf"), 0.0, 0.0, 1.0]], "NaN or infinity"),
        ([[0.0, 0.0, 0.0, 0.0]], "all-zero vector"),
    ],
)
def test_bad_embeddings_are_refused(in_process_server, rows, problem):
    for transport in ("rest-v2-binary", "grpc"):
        answer = ask(in_process_server, transport, "embedding", rows)
        assert answer.status in (400, "INVALID_ARGUMENT") and problem in answer.error, (transport, answer)


def test_metadata_output_holds_each_hits_metadata_as_json(in_process_server):
    for parameters, outputs in (({"return_metadata": True}, None), ({}, ["ids", "metadata"])):
        for transport in ("rest-v2-json", "grpc"):
            answer = ask(in_process_server, transport, "image", [RED], {"top_k": 2, **parameters}, outputs=outputs)
            arrays = tensors(answer)
            assert set(arrays) >= {"ids", "metadata"} and "embedding" not in arrays
            metadata = [json.loads(text) for text in arrays["metadata"][0]]
            assert metadata[0] == {"colour": "red", "namespace_seen": "default"}


def test_v1_hits_carry_metadata_and_the_response_the_model_version(in_process_server):
    answer = ask(in_process_server, "rest-v1", "image", [RED], {"top_k": 1})
    assert answer.body["model_version"] == "7"
    assert answer.body["predictions"][0][0]["metadata"]["colour"] == "red"


def test_embedding_output_of_an_id_query_is_the_stored_vector(in_process_server):
    answer = ask(in_process_server, "grpc", "id", ["green-id"], {"return_embedding": True})
    np.testing.assert_allclose(tensors(answer)["embedding"][0], colour_vector(np.asarray(COLOURS["green"])), rtol=1e-6)


def test_too_many_queries_and_bad_ids_are_refused(in_process_server):
    assert "over the limit of 8" in ask(in_process_server, "rest-v2-json", "id", ["red-id"] * 9).error
    assert "id 0 must be a non-empty string" in ask(in_process_server, "rest-v2-json", "id", [""]).error
    assert "id 0 is not UTF-8" in ask(in_process_server, "rest-v2-binary", "id", [b"\xff\xfe"]).error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_text_query_to_an_image_only_model_is_refused_naming_the_model(in_process_server, transport):
    answer = ask(in_process_server, transport, "text", ["a red square"], {"top_k": 3})
    assert answer.status in (400, "INVALID_ARGUMENT")
    assert "image-search" in answer.error and "fake:7" in answer.error and "no text tower" in answer.error


def test_the_metadata_of_an_image_only_model_lists_no_text_input(in_process_server):
    metadata = in_process_server.get("/v2/models/image-search").json()
    assert "text" not in [tensor["name"] for tensor in metadata["inputs"]]
    assert metadata["parameters"]["inputs"] == "send exactly one of image, embedding, id"
