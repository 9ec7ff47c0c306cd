"""The Open Inference Protocol as its own tools judge it, on the real server: tritonclient's model configuration and
statistics calls on both transports, and Schemathesis against the published OIP REST specification.

The specification is the shared copy next to the repository (`../shared/schemas/open-inference-protocol/`); without
it the Schemathesis test is skipped.
"""

import base64
import collections
import copy
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

MODELS = ("image-search", "image-classifier")
SPEC = (
    Path(__file__).resolve().parents[3] / "shared" / "schemas" / "open-inference-protocol" / "open_inference_rest.yaml"
)
QUERY_PHOTO = "chelsea"

# Nothing here depends on which Milvus answers, so one kind is enough.
one_milvus = pytest.mark.parametrize("milvus_uri", ["milvus-lite"], indirect=True)


@one_milvus
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_tritonclient_reads_the_model_configuration(server, transport):
    if transport == "grpc":
        config = grpcclient.InferenceServerClient(server.grpc_address).get_model_config("image-search", as_json=True)
        config = config["config"]
    else:
        config = httpclient.InferenceServerClient(server.http_url.removeprefix("http://")).get_model_config(
            "image-search"
        )
    inputs = {tensor["name"]: tensor for tensor in config["input"]}
    assert set(inputs) == {"image", "embedding", "id"}
    assert inputs["image"]["data_type"] == "TYPE_STRING" and inputs["image"].get("optional") is True
    assert [int(size) for size in inputs["embedding"]["dims"]] == [-1, 1280]
    assert int(config.get("max_batch_size", 0)) == 0, "gRPC JSON leaves out zeros"
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) > 0
    assert [tensor["name"] for tensor in config["output"]][:3] == ["ids", "scores", "uris"]


@one_milvus
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_tritonclient_reads_inference_statistics(server, catalogue, transport):
    photo = catalogue.photos[QUERY_PHOTO].read_bytes()
    if transport == "grpc":
        client = grpcclient.InferenceServerClient(server.grpc_address)
        image = grpcclient.InferInput("image", [1], "BYTES")
    else:
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        image = httpclient.InferInput("image", [1], "BYTES")

    def statistics() -> dict:
        answer = client.get_inference_statistics("image-search", **({"as_json": True} if transport == "grpc" else {}))
        return answer["model_stats"][0]

    def grown(name: str, key: str = "count") -> int:
        # gRPC's JSON gives 64-bit numbers as strings and leaves out zeros.
        return int(after["inference_stats"].get(name, {}).get(key, 0)) - int(
            before["inference_stats"].get(name, {}).get(key, 0)
        )

    before = statistics()
    image.set_data_from_numpy(np.array([photo], dtype=np.object_))
    client.infer("image-search", [image])
    after = statistics()
    assert [grown(name) for name in ("success", "fail", "queue", "compute_input", "compute_infer")] == [1, 0, 1, 1, 1]
    assert int(after.get("inference_count", 0)) - int(before.get("inference_count", 0)) == 1
    assert grown("compute_infer", "ns") > 0 and grown("success", "ns") >= grown("compute_infer", "ns")


# Schemathesis ---------------------------------------------------------------------------------------------------------


def _v2_tensor(name: str, datatype: str, shape: list[int], data: list) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _real_requests(server, catalogue) -> list[dict]:
    """One search by image, one by an indexed id, one by an embedding, and one classification: requests that succeed."""
    photo = base64.b64encode(catalogue.photos[QUERY_PHOTO].read_bytes()).decode()
    by_image = {"inputs": [_v2_tensor("image", "BYTES", [1], [photo])], "parameters": {"top_k": 3}}
    answer = httpx.post(
        f"{server.http_url}/v2/models/image-search/infer",
        json={**by_image, "parameters": {"top_k": 1, "return_embedding": True}},
        timeout=120,
    ).json()
    outputs = {output["name"]: output for output in answer["outputs"]}
    indexed_id, embedding = outputs["ids"]["data"][0], outputs["embedding"]["data"]
    return [
        by_image,
        {"inputs": [_v2_tensor("id", "BYTES", [1], [indexed_id])], "parameters": {"top_k": 3}},
        {"inputs": [_v2_tensor("embedding", "FP32", [1, len(embedding)], embedding)], "outputs": [{"name": "ids"}]},
    ]


def _spec_for(server, catalogue) -> dict:
    """The shared OIP spec, made usable against this server; every change says where the spec is wrong or silent."""
    raw = yaml.safe_load(SPEC.read_text())
    spec = copy.deepcopy(raw)
    version = httpx.get(f"{server.http_url}/v2/models/image-search", timeout=30).json()["versions"][0]
    paths = {}
    for path, item in spec["paths"].items():
        # The spec writes path templates as `${MODEL_NAME}`, which is not OpenAPI; OpenAPI's form is `{MODEL_NAME}`.
        path = path.replace("${", "{")
        # The spec's server metadata path is `/v2/`; the protocol's text (and every server) answers `GET v2`.
        path = "/v2" if path == "/v2/" else path
        for parameter in item.get("parameters", []):
            # The served models and their version, so that requests reach a model instead of only answering 404.
            if parameter["name"] == "MODEL_NAME":
                parameter["schema"] = {"type": "string", "enum": list(MODELS)}
            if parameter["name"] == "MODEL_VERSION":
                parameter["schema"] = {"type": "string", "enum": [version]}
        paths[path] = item
    spec["paths"] = paths
    infer = paths["/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"]["post"]
    # The spec's examples name tensors no model has (input0); these are real queries with real answers.
    infer["requestBody"]["content"]["application/json"]["examples"] = {
        f"real-{position}": {"value": request} for position, request in enumerate(_real_requests(server, catalogue))
    }
    # The spec documents no answer for an unknown model or version, nor for a model that is not ready; the protocol's
    # text makes both errors, and this server answers them 404 and 503 with the protocol's error object.
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/inference_error_response"}}}}
    for path, item in paths.items():
        if "{MODEL_NAME}" in path:
            for operation in (item[method] for method in ("get", "post") if method in item):
                operation["responses"].setdefault("404", {"description": "no such model or version", **error})
                operation["responses"].setdefault("503", {"description": "the model is not ready", **error})
    return spec


# Checks that hold wherever the spec is right. Left out, because the spec is silent or wrong there:
# - positive_data_acceptance: a request the spec accepts (any tensor names and types) is one a model may refuse, and
#   the protocol says it answers 400 then;
# - missing_required_header, ignored_auth, use_after_free, ensure_resource_availability: the spec declares no headers,
#   no authentication and no resources that are created or deleted.
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    negative_data_rejection,
    unsupported_method,
]
# Per operation and mode: a couple of minutes at most on a small, shared CPU, where inferences embed real images.
MAX_EXAMPLES = 40


@one_milvus
def test_the_server_answers_as_the_oip_rest_specification_says(server, catalogue):
    """Schemathesis' explicit examples (the real requests), then requests it generates from the spec (valid ones, and
    invalid ones the server must refuse with a 4xx), every answer checked against the spec."""
    if not SPEC.exists():
        pytest.skip(f"the shared OIP specification is not at {SPEC}")
    schema = schemathesis.openapi.from_dict(_spec_for(server, catalogue))
    answered: collections.Counter = collections.Counter()
    nothing_to_negate: list[str] = []

    def check_all(strategy, max_examples: int) -> None:
        @given(case=strategy)
        @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call_and_validate(base_url=server.http_url, checks=CHECKS, timeout=120)
            answered[(case.operation.label, response.status_code)] += 1

        check()

    for result in schema.get_all_operations():
        operation = result.ok()
        for strategy in schema.get_strategies_from_examples(operation):
            check_all(strategy, max_examples=10)
        check_all(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), MAX_EXAMPLES)
        try:
            check_all(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), MAX_EXAMPLES)
        except Unsatisfiable:
            # Nothing to send wrong: no body, and path parameters Schemathesis keeps valid (health, metadata, ready).
            nothing_to_negate.append(operation.label)
    infer = "POST /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"
    print(f"Schemathesis: {sum(answered.values())} requests;", dict(sorted(answered.items())))
    assert answered[(infer, 200)] >= 3, f"the real requests should succeed and be checked: {answered}"
    assert answered[(infer, 400)] > 0, f"generated requests should be refused: {answered}"
    assert infer not in nothing_to_negate


def test_the_spec_s_own_quirks_that_the_test_works_around_are_still_there():
    """If the shared spec is fixed, the workarounds in _spec_for can go."""
    if not SPEC.exists():
        pytest.skip(f"the shared OIP specification is not at {SPEC}")
    paths = yaml.safe_load(Path(SPEC).read_text())["paths"]
    assert any("${MODEL_NAME}" in path for path in paths), "the spec now uses OpenAPI path templates"
    assert "/v2/" in paths, "the spec now names server metadata /v2"
