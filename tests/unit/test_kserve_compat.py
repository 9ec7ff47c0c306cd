"""KServe under each workaround in predictor/serving/kserve/, through KServe's real REST app and gRPC server.

If a KServe upgrade changes how errors, parameters, binary requests, readiness or versions travel, a test here fails.
"""

import asyncio
import contextlib
import json
from importlib import metadata

import grpc
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from predictor import __version__
from predictor.errors import (
    IndexUnavailable,
    InvalidRequest,
    ModelUnavailable,
    ModelVersionNotFound,
    ServiceError,
    UnknownId,
)
from predictor.serving import kserve
from predictor.serving.kserve import grpc_service, rest
from tests.unit.conftest import COLOURS, solid_jpeg
from tests.unit.transports import TRANSPORTS, ask, grpc_parameter, model_version, tensors

RED = solid_jpeg(COLOURS["red"])


def expected(transport: str, error: type[ServiceError]) -> int | str:
    return error.status.grpc if transport == "grpc" else error.status.http


def test_the_installed_kserve_is_the_one_the_workarounds_were_written_for():
    assert metadata.version("kserve") == kserve.KSERVE_VERSION, (
        "KServe changed: re-check every workaround in predictor/serving/kserve/, then update KSERVE_VERSION"
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_search_works_on_every_transport_and_names_the_model_version(in_process_server, transport):
    answer = ask(in_process_server, transport, "image", [RED], {"top_k": 2})
    assert answer.ok, answer.error
    if transport == "rest-v1":
        assert answer.body["model_version"] == "7"
        assert [hit["id"] for hit in answer.body["predictions"][0]] == ["red-id", "grey-id"]
        return
    assert model_version(answer) == "7"
    assert tensors(answer)["ids"][0].tolist() == ["red-id", "grey-id"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bad_input_is_400_or_invalid_argument(in_process_server, transport):
    answer = ask(in_process_server, transport, "image", [RED], {"top_k": 1000})
    assert answer.status == expected(transport, InvalidRequest)
    assert "'top_k' must be an integer from 1 to 100" in answer.error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_unknown_id_is_400_or_invalid_argument_naming_it(in_process_server, transport):
    answer = ask(in_process_server, transport, "id", ["no-such-id"])
    assert answer.status == expected(transport, UnknownId)
    assert "'no-such-id'" in answer.error and "namespace 'default'" in answer.error


@contextlib.contextmanager
def milvus_failing(server, *, searches_only: bool):
    index, model = server.index, server.search_model
    if searches_only:
        index.failing_searches = True
    else:
        index.unavailable = True
        model._healthy_until = 0.0
    try:
        yield
    finally:
        index.failing_searches = index.unavailable = False
        model._healthy_until = 0.0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_milvus_failing_a_search_is_503_or_unavailable_with_the_reason(in_process_server, transport):
    with milvus_failing(in_process_server, searches_only=True):
        answer = ask(in_process_server, transport, "image", [RED])
    assert answer.status == expected(transport, IndexUnavailable)
    assert "deadline exceeded" in answer.error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_model_that_cannot_reach_milvus_is_503_or_unavailable_saying_why(in_process_server, transport):
    with milvus_failing(in_process_server, searches_only=False):
        answer = ask(in_process_server, transport, "image", [RED])
    assert answer.status == expected(transport, ModelUnavailable)
    assert "fake://milvus does not answer" in answer.error


@pytest.mark.parametrize("transport", ["rest-v2-json", "rest-v2-binary", "grpc"])
def test_the_served_version_answers_and_any_other_is_404_or_not_found(in_process_server, transport):
    assert ask(in_process_server, transport, "image", [RED], version="7").ok
    answer = ask(in_process_server, transport, "image", [RED], version="6")
    assert answer.status == expected(transport, ModelVersionNotFound)
    assert "no version '6'" in answer.error and "runs version '7'" in answer.error


def test_model_metadata_and_readiness_honour_versions_on_rest(in_process_server):
    metadata_answer = in_process_server.get("/v2/models/image-search")
    assert metadata_answer.json()["versions"] == ["7"]
    assert "inputs" in metadata_answer.json()["parameters"], "optional inputs are declared"
    effort = metadata_answer.json()["parameters"]["effort"]
    assert (effort["search_parameter"], effort["minimum"], effort["maximum"]) == ("nprobe", 1, 128), effort
    assert in_process_server.get("/v2/models/image-search/versions/7").json()["versions"] == ["7"]
    assert in_process_server.get("/v2/models/image-search/versions/7/ready").json()["ready"] is True
    assert in_process_server.get("/v2/models/image-search/versions/6").status_code == 404
    assert in_process_server.get("/v2/models/image-search/versions/6/ready").status_code == 404


def test_model_metadata_and_readiness_honour_versions_on_grpc(in_process_server):
    described = in_process_server.grpc("ModelMetadata", pb.ModelMetadataRequest(name="image-search", version="7"))
    assert list(described.versions) == ["7"]
    assert [tensor.name for tensor in described.inputs] == ["image", "embedding", "id"]
    assert in_process_server.grpc("ModelReady", pb.ModelReadyRequest(name="image-search", version="7")).ready
    for method, request in (
        ("ModelMetadata", pb.ModelMetadataRequest(name="image-search", version="6")),
        ("ModelReady", pb.ModelReadyRequest(name="image-search", version="6")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            in_process_server.grpc(method, request)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_server_metadata_names_this_project_on_both_transports(in_process_server):
    rest = in_process_server.get("/v2").json()
    assert (rest["name"], rest["version"]) == ("image-search", __version__)
    grpc_answer = in_process_server.grpc("ServerMetadata", pb.ServerMetadataRequest())
    assert (grpc_answer.name, grpc_answer.version) == ("image-search", __version__)


def test_unready_model_over_grpc_model_ready_is_false_not_an_error(in_process_server):
    with milvus_failing(in_process_server, searches_only=False):
        assert not in_process_server.grpc("ModelReady", pb.ModelReadyRequest(name="image-search")).ready
        assert not in_process_server.grpc("ServerReady", pb.ServerReadyRequest()).ready
        rest = in_process_server.get("/v2/models/image-search/ready")
        assert rest.status_code == 503 and "does not answer" in rest.json()["error"]
    assert in_process_server.grpc("ServerReady", pb.ServerReadyRequest()).ready


def test_a_float_parameter_from_a_triton_client_is_read_over_grpc(in_process_server):
    parameter = grpc_parameter(0.25)
    assert parameter.WhichOneof("parameter_choice") is None, "KServe's proto learned double_param: simplify"
    request = pb.ModelInferRequest(model_name="image-search")
    request.parameters["min_score"].CopyFrom(parameter)
    assert grpc_service.request_parameters(type("R", (), {"parameters": request.parameters})()) == {"min_score": 0.25}
    answer = ask(in_process_server, "grpc", "image", [RED], {"min_score": 0.99})
    assert tensors(answer)["ids"].tolist() == [["red-id"]], "hits below min_score are dropped"


def test_binary_request_keeps_image_bytes_that_are_not_utf8(in_process_server):
    assert not RED.decode("utf-8", errors="ignore") == RED.decode("latin-1")
    assert ask(in_process_server, "rest-v2-binary", "image", [RED]).ok


@pytest.mark.parametrize(
    ("body", "length", "problem"),
    [
        (b'{"inputs": []}', 99, "is 99 but the body is"),
        (b"{not json", 9, "JSON header of the binary request is invalid"),
        (b'["inputs"]', 10, 'an object with a list "inputs"'),
        (b'{"inputs": [{"name": "image"}]}', 31, "needs name, shape and datatype"),
        (
            b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}',
            66,
            "neither data nor binary_data_size",
        ),
    ],
)
def test_binary_parser_refuses_malformed_requests(body, length, problem):
    with pytest.raises(InvalidRequest, match=problem):
        rest.infer_request_from_binary(body, length, "image-search")


def test_binary_parser_refuses_sizes_that_run_past_the_body_or_leave_bytes_over():
    header = json.dumps(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 10}}]}
    ).encode()
    with pytest.raises(InvalidRequest, match="runs past the request body"):
        rest.infer_request_from_binary(header + b"x" * 5, len(header), "image-search")
    with pytest.raises(InvalidRequest, match="5 bytes beyond"):
        rest.infer_request_from_binary(header + b"x" * 15, len(header), "image-search")


def test_binary_parser_reads_raw_tensors_kserve_can_decode():
    element = b"\xff\xd8\xff not utf-8 \x80"
    payload = len(element).to_bytes(4, "little") + element
    header = json.dumps(
        {
            "inputs": [
                {"name": "id", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(payload)}}
            ],
            "outputs": [{"name": "ids"}],
            "parameters": {"top_k": 3},
        }
    ).encode()
    request = rest.infer_request_from_binary(header + payload, len(header), "image-search")
    assert request.inputs[0].as_numpy().tolist() == [element]
    assert [output.name for output in request.request_outputs] == ["ids"]
    assert request.parameters == {"top_k": 3}


def test_embedding_query_over_grpc_reads_fp32_contents(in_process_server):
    rows = [np.asarray(COLOURS["blue"] + (64,), dtype=np.float32).tolist()]
    answer = ask(in_process_server, "grpc", "embedding", rows, {"top_k": 1})
    assert tensors(answer)["ids"].tolist() == [["blue-id"]]


def test_models_that_are_not_ready_yet_are_registered_before_start_because_kserve_would_not():
    from kserve import Model, ModelServer

    from harness.predictor_server import free_port

    waiting, loaded = Model("waiting"), Model("loaded")
    loaded.load()
    kserve_only = ModelServer(http_port=free_port(), grpc_port=free_port(), workers=1)
    kserve_only._register_and_check_atleast_one_model_is_ready([waiting, loaded])
    assert kserve_only.registered_models.get_model("waiting") is None, "KServe now registers unready models: simplify"
    ours = ModelServer(http_port=free_port(), grpc_port=free_port(), workers=1)
    kserve.register_before_start(ours, [waiting])
    assert ours.registered_models.get_model("waiting") is waiting


def test_the_grpc_message_limit_follows_the_request_size_limit_so_a_9_mib_image_reaches_the_model(in_process_server):
    request = pb.ModelInferRequest(model_name="image-search")
    request.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\0" * (9 << 20))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        in_process_server.grpc("ModelInfer", request)
    # KServe's own 8 MiB limit would answer RESOURCE_EXHAUSTED before the model saw it.
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image 0" in refused.value.details()


def test_kserve_makes_its_grpc_server_from_its_module_arguments_and_keeps_it_where_grpc_stopper_looks():
    from kserve import ModelServer

    names = ModelServer.start.__code__.co_names
    assert {"GRPCServer", "vars", "args", "_grpc_server"} <= set(names), (
        "KServe changed how ModelServer.start makes its gRPC server: re-check follow_request_limit_on_grpc and "
        "grpc_stopper in predictor/serving/kserve/"
    )
    assert ModelServer(http_port=0, grpc_port=0, workers=1)._grpc_server is None


def test_grpc_stopper_stops_kserves_grpc_server():
    from kserve import ModelServer
    from kserve import model_server as kserve_model_server
    from kserve.protocol.grpc.server import GRPCServer

    from harness.predictor_server import free_port

    server = ModelServer(http_port=free_port(), grpc_port=free_port(), workers=1)
    stop = grpc_service.grpc_stopper(server)

    async def main() -> None:
        await stop()  # before start() there is nothing to stop
        server._grpc_server = GRPCServer(
            server.grpc_port,
            server.dataplane,
            server.model_repository_extension,
            kwargs=vars(kserve_model_server.args),
            grace_period=1,
        )
        serving = asyncio.ensure_future(server._grpc_server.start(1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            await stop()
        await asyncio.wait_for(serving, 30)

    asyncio.run(main())
