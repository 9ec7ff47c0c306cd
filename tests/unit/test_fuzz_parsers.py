"""Property tests of the request parsers on untrusted input: the V2 binary parser, V1 and V2 parameters and queries,
gRPC parameters as they arrive on the wire, and filters. For every input the only exception that escapes is the typed
400 (`InvalidRequest`), what is accepted is within the documented bounds, nothing hangs (each example has the
profile's deadline) and memory stays bounded. The last property sends a few of them through the real server.

`make test` runs a bounded number of examples; `make fuzz` runs many more (tests/conftest.py).
"""

import json
import math
import os
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferRequest

from harness.process_memory import MIB, peak_rss_bytes, reset_peak_rss, rss_bytes
from predictor.errors import InvalidRequest
from predictor.index.filter_columns import FilterColumn
from predictor.index.filters import MAX_EXPRESSION_LENGTH, FilterError, validate_filter, with_filter_columns
from predictor.index.search_options import MAX_RESULT_WINDOW, NAMESPACE_PATTERN, SearchSettings
from predictor.protocol.search import EMBEDDING, ID, IMAGE, parse_search_request, search_options
from predictor.serving.kserve.grpc_service import request_parameters
from predictor.serving.kserve.rest import infer_request_from_binary
from tests.unit.conftest import DIMENSION, serve_settings
from tests.unit.transports import grpc_parameter

pytestmark = pytest.mark.fuzz

SERVE = serve_settings()
SEARCH = SearchSettings(namespace_header="x-tenant")
# Inputs here are at most tens of KiB; a parser that allocates by a declared shape or size would blow through this.
MEMORY_BUDGET = 64 * MIB

# JSON-like values, with the numbers and strings that parsers trip over.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "10", " 5 ", "1e3", "1e400", "nan", "-inf", "0x10", "true", "yes", "default", "shop"])
    | st.text(max_size=24)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
PARAMETER_NAMES = ["top_k", "offset", "min_score", "filter", "namespace", "return_metadata", "return_embedding"]
PARAMETERS = st.dictionaries(st.sampled_from(PARAMETER_NAMES) | st.text(max_size=8), JSON_VALUES, max_size=6)
HEADERS = st.dictionaries(st.sampled_from(["x-tenant", "x-request-id"]), st.text(max_size=70), max_size=2)

# What a rewritten filter may contain outside its string literals: these words, `metadata[...]` paths, values.
_FILTER_WORDS = {"metadata", "and", "or", "not", "like", "exists", "true", "false"}
_FILTER_WORDS |= {"json_contains", "json_contains_all", "json_contains_any"}
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
_WORD = re.compile(r"(?<![0-9.eE+-])[A-Za-z_][A-Za-z0-9_]*")


def bounded_memory(check):
    """Run `check()`, failing if the process's peak RSS grows by more than MEMORY_BUDGET while it runs."""
    pid = os.getpid()
    tracking = reset_peak_rss(pid)
    before = rss_bytes(pid)
    check()
    if tracking:
        growth = peak_rss_bytes(pid) - before
        assert growth < MEMORY_BUDGET, f"parsing took {growth / MIB:.0f} MiB"


def assert_only_metadata_fields(expression: str) -> None:
    """What reaches Milvus names `metadata[...]` and nothing else, and is itself an accepted filter."""
    assert len(expression) <= MAX_EXPRESSION_LENGTH
    outside_strings = _STRING_LITERAL.sub('""', expression)
    words = set(_WORD.findall(outside_strings))
    assert words <= _FILTER_WORDS, f"{sorted(words - _FILTER_WORDS)} reached Milvus in {expression!r}"
    assert all(outside_strings[m.end() : m.end() + 1] == "[" for m in re.finditer(r"\bmetadata\b", outside_strings))
    again = validate_filter(expression)
    assert validate_filter(again) == again, "the rewrite is not stable"


def check_options(parameters: dict, headers: dict) -> None:
    try:
        options = search_options(parameters, headers, SERVE, SEARCH)
    except InvalidRequest as error:
        assert str(error)
        return
    assert 1 <= options.top_k <= SERVE.max_top_k and options.offset >= 0
    assert options.offset + options.top_k <= MAX_RESULT_WINDOW
    assert options.min_score is None or (math.isfinite(options.min_score) and -1 <= options.min_score <= 1)
    assert NAMESPACE_PATTERN.fullmatch(options.namespace)
    if "x-tenant" in headers:
        assert options.namespace == headers["x-tenant"], "the gateway's header decides the namespace"
    if options.filter is not None:
        assert_only_metadata_fields(options.filter)


def check_request(payload: dict | InferRequest, headers: dict) -> None:
    """Any request: a parsed search within the limits, or `InvalidRequest`."""
    try:
        parsed = parse_search_request(payload, headers, SERVE, SEARCH, DIMENSION)
    except InvalidRequest as error:
        assert str(error)
        return
    queries = parsed.queries
    assert queries.kind in (IMAGE, EMBEDDING, ID)
    count = {IMAGE: len(queries.images), ID: len(queries.ids)}.get(queries.kind) or len(queries.embeddings)
    assert 1 <= count <= SERVE.limits.max_images
    assert all(isinstance(image, bytes) for image in queries.images)
    assert all(isinstance(i, str) and 0 < len(i) <= 512 for i in queries.ids)
    if queries.kind == EMBEDDING:
        assert queries.embeddings.shape == (count, DIMENSION)
        assert np.allclose(np.linalg.norm(queries.embeddings, axis=1), 1.0, atol=1e-3)


# Filters ---------------------------------------------------------------------------------------------------------

_FIELD = st.builds(lambda name, index: f'metadata["{name}"]' + index, st.text(max_size=6), st.sampled_from(["", "[0]"]))
_LITERAL = st.sampled_from(['"a"', "'b'", "1", "-2.5", "1e3", "true", "false", '"x\\"y"', '"%"'])
_PIECES = st.sampled_from(
    ["and", "or", "not", "&&", "||", "!", "(", ")", "[", "]", ",", "==", "!=", "<", "<=", ">", ">=", "in", "like"]
    + ["exists", "json_contains", "json_contains_any", "id", "vector", "namespace", "uri", "metadata", "-", "+"]
)
_CONDITION = st.builds(
    lambda field, op, value: f"{field} {op} {value}", _FIELD, st.sampled_from(["==", "<", ">=", "!=", "like"]), _LITERAL
)
# Near-valid filters reach deep into the parser; arbitrary text and token soup check that nothing else escapes.
FILTERS = st.one_of(
    st.text(max_size=200),
    st.lists(_PIECES | _FIELD | _LITERAL | _CONDITION, max_size=20).map(" ".join),
    st.lists(_CONDITION, min_size=1, max_size=6).map(" and ".join),
    st.builds(lambda f, vs: f"{f} in [{', '.join(vs)}]", _FIELD, st.lists(_LITERAL, min_size=1, max_size=8)),
    st.builds(lambda depth, c: "(" * depth + c + ")" * depth, st.integers(0, 40), _CONDITION),
)


@given(FILTERS | st.none() | st.integers())
@example('metadata["a"] == 1 or id == "x"')
@example('metadata["a"]["b"][0] in ["x", -1, true]')
@example('metadata["a"] in ["x", "y\\"z"] and not (3 < metadata["b"] <= 9 or metadata["b"] != 1)')
@example('metadata["' + "f" * 500 + '"] in [' + ",".join(["1"] * 700) + "]")
def test_a_filter_is_a_metadata_only_expression_or_a_filter_error(text):
    try:
        expression = validate_filter(text)
    except FilterError as error:
        assert str(error).startswith("filter")
        return
    assert_only_metadata_fields(expression)
    for three_valued in (False, True):
        assert with_filter_columns(expression, (), three_valued) == expression
        # Read through filter columns, the same filter names only those columns besides the metadata.
        columns = (FilterColumn("a", "string"), FilterColumn("b", "int"))
        through_columns = with_filter_columns(expression, columns, three_valued)
        assert_only_metadata_fields(re.sub(r"\bfilter_[ab]\b", 'metadata["a"]', through_columns))


# V1 and V2 parameters ---------------------------------------------------------------------------------------------


@given(PARAMETERS, HEADERS)
@example({"top_k": 1e300}, {})
@example({"top_k": "nan", "offset": float("inf")}, {})
@example({"offset": 999, "top_k": 1}, {})
@example({"namespace": "shop"}, {"x-tenant": "default"})
@example({"filter": 'metadata["a"] == 1'}, {"x-tenant": "../etc"})
def test_parameters_are_bounded_options_or_a_bad_request(parameters, headers):
    check_options(parameters, headers)


def _double(value: float) -> bytes:
    return b"\x21" + struct.pack("<d", value)


# gRPC InferParameter messages as they arrive: any oneof, tritonclient's double_param (unknown to KServe's copy of
# the proto), or arbitrary wire bytes that protobuf accepts.
GRPC_PARAMETERS = st.one_of(
    st.builds(lambda v: pb.InferParameter(bool_param=v), st.booleans()),
    st.builds(lambda v: pb.InferParameter(int64_param=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: pb.InferParameter(string_param=v), st.text(max_size=40)),
    st.builds(lambda v: pb.InferParameter.FromString(_double(v)), st.floats(allow_nan=True, allow_infinity=True)),
    st.binary(max_size=24),
)


@given(st.dictionaries(st.sampled_from(PARAMETER_NAMES), GRPC_PARAMETERS, max_size=5), HEADERS)
@example({"min_score": b"\x20\x05"}, {})  # field 4 with the wrong wire type (varint, not fixed64)
def test_grpc_parameters_on_the_wire_are_read_or_refused_never_crash(parameters, headers):
    request = pb.ModelInferRequest(model_name="image-search")
    for name, parameter in parameters.items():
        if isinstance(parameter, bytes):
            try:
                parameter = pb.InferParameter.FromString(parameter)
            except Exception:  # noqa: BLE001 - protobuf refuses it; gRPC would never deliver the message
                continue
        request.parameters[name].CopyFrom(parameter)
    values = request_parameters(InferRequest.from_grpc(request))
    assert all(value is None or isinstance(value, bool | int | float | str) for value in values.values())
    check_options(values, headers)


# Queries ---------------------------------------------------------------------------------------------------------

INSTANCE = st.one_of(
    JSON_VALUES,
    st.builds(lambda b64: {"image": {"b64": b64}}, st.text(max_size=40) | st.sampled_from(["aGVsbG8=", "R0lGODlh"])),
    st.builds(lambda v: {"embedding": v}, st.lists(SCALARS, max_size=DIMENSION + 1)),
    st.builds(lambda v: {"id": v}, SCALARS),
)


@given(
    st.one_of(
        JSON_VALUES,
        st.builds(lambda i, p: {"instances": i, "parameters": p}, st.lists(INSTANCE, max_size=10), PARAMETERS),
    ),
    HEADERS,
)
@example({"instances": [{"embedding": [0, 0, 0, 0]}]}, {})
@example({"instances": [{"embedding": [1e38, 1e38, 1e38, 1e38]}]}, {})  # found by this test: was searched as zeros
@example({"instances": [{"embedding": [1e-45, 0, 0, 0]}]}, {})
@example({"instances": [{"image": {"b64": "aGVsbG8="}, "id": "x"}]}, {})
@example([{"instances": []}], {})  # found by this test: a JSON body that is not an object was a 500
def test_a_v1_body_is_a_bounded_search_or_a_bad_request(payload, headers):
    check_request(payload, headers)


def _tensor_header(name, datatype, shape, size, data):
    tensor = {"name": name, "datatype": datatype, "shape": shape}
    if size is not None:
        tensor["parameters"] = {"binary_data_size": size}
    if data is not None:
        tensor["data"] = data
    return tensor


TENSOR_HEADERS = st.builds(
    _tensor_header,
    st.sampled_from(["image", "embedding", "id", "other"]),
    st.sampled_from(["BYTES", "FP32", "FP16", "INT64", "BOOL", "bytes", ""]),
    st.lists(st.integers(-2, 2**40) | st.sampled_from([0, 1, 2, DIMENSION]), max_size=3) | JSON_VALUES,
    st.none() | st.integers(-5, 64) | JSON_VALUES,
    st.none() | st.lists(SCALARS, max_size=DIMENSION * 2) | JSON_VALUES,
)
V2_HEADERS = st.one_of(
    JSON_VALUES,
    st.builds(
        lambda inputs, parameters, outputs: {"inputs": inputs, "parameters": parameters, "outputs": outputs},
        st.lists(TENSOR_HEADERS, max_size=3),
        PARAMETERS,
        st.none() | st.lists(st.builds(lambda n: {"name": n}, st.sampled_from(["ids", "scores", "metadata", "x"]))),
    ),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(V2_HEADERS, st.binary(max_size=256), st.integers(-3, 3) | st.integers(-(2**40), 2**40), HEADERS)
@example({"inputs": [_tensor_header("image", "BYTES", [2**40], 8, None)]}, b"\xff\xff\xff\xff1234", 0, {})
@example({"inputs": [_tensor_header("embedding", "FP32", [2**20, 2**20], 16, None)]}, b"\0" * 16, 0, {})
@example({"inputs": [_tensor_header("id", "BYTES", [1], 4, None)]}, b"\x01\0\0\0", 0, {})
@example({"inputs": [_tensor_header("image", "BYTES", None, None, [])]}, b"", 0, {})  # found by this test: a 500
def test_a_binary_v2_body_is_a_bounded_search_or_a_bad_request(header, payload, length_error, headers):
    """A JSON header, its binary payload, and a declared header length that is sometimes wrong."""
    head = json.dumps(header).encode()
    body = head + payload
    declared = len(head) + length_error

    def parse() -> None:
        try:
            request = infer_request_from_binary(body, declared, "image-search")
        except InvalidRequest as error:
            assert str(error)
            return
        check_request(request, headers)

    bounded_memory(parse)


@given(st.binary(max_size=512), st.integers(-2, 600))
def test_arbitrary_bytes_as_a_binary_v2_body_are_refused_cleanly(body, declared):
    bounded_memory(lambda: check_binary_bytes(body, declared))


def check_binary_bytes(body: bytes, declared: int) -> None:
    try:
        request = infer_request_from_binary(body, declared, "image-search")
    except InvalidRequest:
        return
    check_request(request, {})


# Through the server ----------------------------------------------------------------------------------------------

REST_STATUSES = {200, 400, 404, 413}
GRPC_STATUSES = {"OK", "INVALID_ARGUMENT", "NOT_FOUND"}


def _grpc_request(model: str, tensors: list, parameters: dict) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name, datatype, shape, elements in tensors:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if datatype == "FP32":
            tensor.contents.fp32_contents.extend([float(e) for e in elements if isinstance(e, int | float)])
        else:
            tensor.contents.bytes_contents.extend([str(e).encode() for e in elements])
    for name, value in parameters.items():
        if isinstance(value, bool | int | float | str) and not (isinstance(value, int) and abs(value) >= 2**63):
            request.parameters[name].CopyFrom(grpc_parameter(value))
    return request


GRPC_TENSORS = st.lists(
    st.tuples(
        st.sampled_from(["image", "embedding", "id", "x"]),
        st.sampled_from(["BYTES", "FP32", "INT64"]),
        st.lists(st.integers(-1, 10), max_size=3),
        st.lists(SCALARS, max_size=8),
    ),
    max_size=2,
)


@settings(max_examples=max(10, settings().max_examples // 4), suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["image-search", "image-classifier"]),
    st.one_of(
        st.tuples(
            st.just("v1"),
            JSON_VALUES
            | st.builds(lambda i, p: {"instances": i, "parameters": p}, st.lists(INSTANCE, max_size=4), PARAMETERS),
        ),
        st.tuples(st.just("v2-json"), V2_HEADERS),
        st.tuples(st.just("v2-binary"), st.tuples(V2_HEADERS, st.binary(max_size=64))),
        st.tuples(st.just("grpc"), st.tuples(GRPC_TENSORS, PARAMETERS)),
    ),
)
@example("image-search", ("v1", [{"instances": []}]))
@example("image-classifier", ("v1", None))
def test_no_request_makes_the_server_answer_with_an_internal_error(in_process_server, model, sent):
    import grpc

    transport, body = sent
    if transport == "grpc":
        tensors, parameters = body
        try:
            in_process_server.grpc("ModelInfer", _grpc_request(model, tensors, parameters), timeout=30)
        except grpc.aio.AioRpcError as error:
            assert error.code().name in GRPC_STATUSES, f"{error.code().name}: {error.details()}"
        return
    if transport == "v1":
        response = in_process_server.post(f"/v1/models/{model}:predict", content=json.dumps(body).encode())
    elif transport == "v2-json":
        response = in_process_server.post(
            f"/v2/models/{model}/infer", content=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
    else:
        header, payload = body
        head = json.dumps(header).encode()
        response = in_process_server.post(
            f"/v2/models/{model}/infer",
            content=head + payload,
            headers={"inference-header-content-length": str(len(head)), "content-type": "application/octet-stream"},
        )
    assert response.status_code in REST_STATUSES, response.text[:500]
    if response.status_code != 200:
        assert response.json()["error"]
