"""The Open Inference Protocol as its own tools read it, through KServe's real REST app and gRPC server: Triton's model
configuration and statistics extensions, error bodies, response shapes and request parameters."""

import json

import grpc
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from predictor.serving.kserve import triton_messages
from predictor.serving.kserve.parameters import PROTOCOL_PARAMETERS
from predictor.serving.kserve.rest import INFERENCE_HEADER_LENGTH
from tests.unit.conftest import COLOURS, solid_jpeg
from tests.unit.transports import TRANSPORTS, ask, tensors

RED = solid_jpeg(COLOURS["red"])


def test_server_metadata_lists_the_extensions_on_both_transports(in_process_server):
    extensions = {"model_configuration", "statistics", "binary_tensor_data", "parameters"}
    assert set(in_process_server.get("/v2").json()["extensions"]) == extensions
    assert set(in_process_server.grpc("ServerMetadata", pb.ServerMetadataRequest()).extensions) == extensions


def test_model_config_over_rest_describes_the_search_model(in_process_server):
    answer = in_process_server.get("/v2/models/image-search/config")
    assert answer.status_code == 200, answer.text
    config = answer.json()
    assert (config["name"], config["max_batch_size"]) == ("image-search", 0)
    assert config["parameters"] == {"max_queries_per_request": {"string_value": "8"}}
    inputs = {tensor["name"]: tensor for tensor in config["input"]}
    assert inputs["image"] == {
        "name": "image",
        "data_type": "TYPE_STRING",
        "dims": [-1],
        "optional": True,
        "format": "FORMAT_NONE",
    }
    assert inputs["embedding"]["data_type"] == "TYPE_FP32" and inputs["embedding"]["dims"] == [-1, 4]
    assert all(tensor["optional"] for tensor in inputs.values()), "a search takes one of its inputs"
    outputs = {tensor["name"]: (tensor["data_type"], tensor["dims"]) for tensor in config["output"]}
    assert outputs["ids"] == ("TYPE_STRING", [-1, -1]) and outputs["embedding"] == ("TYPE_FP32", [-1, 4])
    # What the micro-batcher does: serve_settings() has --max-batch-size 8 and --max-batch-delay-ms 1.
    assert config["dynamic_batching"] == {"preferred_batch_size": [8], "max_queue_delay_microseconds": 1000}
    assert in_process_server.get("/v2/models/image-search/versions/7/config").json() == config


def test_the_classifier_s_only_input_is_not_optional(in_process_server):
    config = in_process_server.get("/v2/models/image-classifier/config").json()
    assert [(tensor["name"], "optional" in tensor) for tensor in config["input"]] == [("image", False)]


def test_model_config_over_grpc_matches_rest(in_process_server):
    rest = in_process_server.get("/v2/models/image-search/config").json()
    answer = in_process_server.grpc_raw(
        "ModelConfig", triton_messages.ModelConfigRequest(name="image-search"), triton_messages.ModelConfigResponse
    )
    config = answer.config
    assert (config.name, config.max_batch_size) == (rest["name"], rest["max_batch_size"])
    assert [(t.name, list(t.dims), t.optional) for t in config.input] == [
        (t["name"], t["dims"], t["optional"]) for t in rest["input"]
    ]
    assert config.input[0].data_type == triton_messages.DATA_TYPES["BYTES"]
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.parameters["max_queries_per_request"].string_value == "8"


@pytest.mark.parametrize(
    "path", ["/v2/models/nope/config", "/v2/models/nope/stats", "/v2/models/image-search/versions/6/config"]
)
def test_config_and_stats_of_an_unknown_model_or_version_are_404(in_process_server, path):
    answer = in_process_server.get(path)
    assert answer.status_code == 404 and "error" in answer.json()


def test_config_and_stats_of_an_unknown_model_over_grpc_are_not_found(in_process_server):
    for method, request, response in (
        ("ModelConfig", triton_messages.ModelConfigRequest(name="nope"), triton_messages.ModelConfigResponse),
        (
            "ModelStatistics",
            triton_messages.ModelStatisticsRequest(name="nope"),
            triton_messages.ModelStatisticsResponse,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            in_process_server.grpc_raw(method, request, response)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND and "'nope' is not served" in refused.value.details()


def _stats(server) -> dict:
    return server.get("/v2/models/image-search/stats").json()["model_stats"][0]


def test_statistics_count_requests_and_split_their_time_into_stages(in_process_server):
    before = _stats(in_process_server)
    assert ask(in_process_server, "rest-v2-json", "image", [RED, RED]).ok
    assert ask(in_process_server, "grpc", "id", ["red-id"]).ok
    assert not ask(in_process_server, "grpc", "id", ["no-such-id"]).ok
    after = _stats(in_process_server)
    stats, was = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] - was["success"]["count"] == 2
    assert stats["fail"]["count"] - was["fail"]["count"] == 1
    assert after["inference_count"] - before["inference_count"] == 3, "two images and one id"
    # At least one forward pass for the images, exactly one execution for the id query.
    assert after["execution_count"] - before["execution_count"] >= 2
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[stage]["count"] - was[stage]["count"] == 2, stage
    spent = sum(
        stats[stage]["ns"] - was[stage]["ns"] for stage in ("queue", "compute_input", "compute_infer", "compute_output")
    )
    assert 0 < spent <= stats["success"]["ns"] - was["success"]["ns"]
    assert stats["compute_input"]["ns"] > was["compute_input"]["ns"], "decoding counts as compute_input"
    assert after["last_inference"] >= before["last_inference"] > 0 or before["inference_count"] == 0


def test_statistics_over_grpc_and_for_every_model(in_process_server):
    assert ask(in_process_server, "grpc", "image", [RED]).ok
    rest = _stats(in_process_server)
    answer = in_process_server.grpc_raw(
        "ModelStatistics",
        triton_messages.ModelStatisticsRequest(name="image-search"),
        triton_messages.ModelStatisticsResponse,
    )
    (stats,) = answer.model_stats
    assert (stats.name, stats.version) == ("image-search", "7")
    assert stats.inference_stats.success.count == rest["inference_stats"]["success"]["count"]
    every = in_process_server.get("/v2/models/stats").json()["model_stats"]
    assert {model["name"] for model in every} == {"image-search", "image-classifier"}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v2/no/such/route", 404), ("DELETE", "/v2/models/image-search/infer", 405), ("PUT", "/v2", 405)],
)
def test_unknown_routes_and_methods_answer_in_the_protocol_s_error_form(in_process_server, method, path, status):
    answer = in_process_server.run(in_process_server.rest.request(method, path))
    assert answer.status_code == status
    assert set(answer.json()) == {"error"} and path in answer.json()["error"]


def test_an_unknown_model_is_404_even_when_the_body_is_also_invalid(in_process_server):
    answer = in_process_server.post("/v2/models/nope/infer", json={"inputs": "not a list"})
    assert answer.status_code == 404 and "'nope' is not served" in answer.json()["error"]
    invalid = in_process_server.post("/v2/models/image-search/infer", json={"inputs": "not a list"})
    assert invalid.status_code == 400 and set(invalid.json()) == {"error"} and "inputs" in invalid.json()["error"]


def test_json_inference_responses_carry_no_null_parameters(in_process_server):
    answer = ask(in_process_server, "rest-v2-json", "image", [RED])
    assert answer.ok
    assert "parameters" not in answer.body
    assert all(output.get("parameters", {}) is not None for output in answer.body["outputs"])


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("parameter", ["topk", "min_scor", "group_bye"])
def test_unknown_parameters_are_refused_naming_them_and_listing_the_known(in_process_server, transport, parameter):
    answer = ask(in_process_server, transport, "image", [RED], {parameter: 3})
    assert answer.status in (400, "INVALID_ARGUMENT"), answer
    assert f"'{parameter}'" in answer.error and "top_k" in answer.error and "min_score" in answer.error


def test_the_classifier_knows_its_own_parameters_not_the_search_s(in_process_server):
    known = ask(
        in_process_server, "rest-v2-json", "image", [RED], {"confidence_threshold": 0.5}, model="image-classifier"
    )
    assert known.ok, known.error
    refused = ask(in_process_server, "rest-v2-json", "image", [RED], {"min_score": 0.5}, model="image-classifier")
    assert refused.status == 400 and "'min_score'" in refused.error and "confidence_threshold" in refused.error


def test_the_protocol_s_own_parameters_are_accepted(in_process_server):
    assert {"binary_data_output", "binary_data_size", "sequence_id", "priority", "timeout"} <= PROTOCOL_PARAMETERS
    answer = ask(in_process_server, "rest-v2-json", "image", [RED], {"binary_data_output": False, "priority": 1})
    assert answer.ok, answer.error


def test_a_parameter_a_model_declares_in_its_metadata_is_accepted(in_process_server):
    """Declaring a parameter in metadata_parameters() is all it takes for requests to be allowed to send it."""
    model = in_process_server.search_model
    declared = model.metadata_parameters

    def with_a_new_one() -> dict:
        return {**declared(), "brand_new": {"type": "integer"}}

    model.metadata_parameters = with_a_new_one
    try:
        assert ask(in_process_server, "grpc", "image", [RED], {"brand_new": 1}).ok
    finally:
        del model.metadata_parameters
    assert not ask(in_process_server, "grpc", "image", [RED], {"brand_new": 1}).ok


def test_a_binary_bytes_input_without_length_prefixes_is_400_saying_what_the_format_expects(in_process_server):
    header = json.dumps(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(RED)}}]}
    ).encode()
    answer = in_process_server.post(
        "/v2/models/image-search/infer",
        content=header + RED,
        headers={INFERENCE_HEADER_LENGTH: str(len(header))},
    )
    assert answer.status_code == 400
    assert "4-byte little-endian length" in answer.json()["error"] and "unpack" not in answer.json()["error"]


def test_the_grpc_raw_bytes_without_length_prefixes_are_invalid_argument(in_process_server):
    request = pb.ModelInferRequest(model_name="image-search")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(RED)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        in_process_server.grpc("ModelInfer", request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "4-byte little-endian length" in refused.value.details()


def test_kserve_adds_its_grpc_servicer_where_triton_s_methods_join_it():
    from kserve.protocol.grpc.server import GRPCServer

    names = GRPCServer.start.__code__.co_names
    assert {"grpc_predict_v2_pb2_grpc", "add_GRPCInferenceServiceServicer_to_server"} <= set(names), (
        "KServe changed how GRPCServer.start adds its servicer: re-check register_triton_methods in "
        "predictor/serving/kserve/grpc_service.py"
    )
    assert not hasattr(pb, "ModelConfigRequest"), "KServe's protocol learned ModelConfig: use its own"
    from kserve.protocol.grpc.servicer import InferenceServicer

    assert not hasattr(InferenceServicer, "ModelStatistics"), "KServe's servicer learned ModelStatistics: use it"


def test_a_search_still_answers_its_outputs_after_all_this(in_process_server):
    answer = ask(in_process_server, "rest-v2-binary", "image", [RED], {"top_k": 1})
    assert tensors(answer)["ids"].tolist() == [["red-id"]]


def test_statistics_give_perf_analyzer_an_integer_version():
    """perf_analyzer parses the statistics' version as an integer; a package identity would stop it."""
    from predictor.observability.inference_statistics import STATISTICS_VERSION, InferenceStatistics

    assert InferenceStatistics("m", "letterbox288-gem-1-centre-a084566e").snapshot()["version"] == STATISTICS_VERSION
    assert InferenceStatistics("m", "7").snapshot()["version"] == "7"
