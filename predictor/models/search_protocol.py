"""The search model's requests and responses: queries (images, embeddings or ids), search options, outputs.

A request sends exactly one kind of query: `image` (BYTES [N], encoded files), `embedding` (FP32 [N, D], normalised
here) or `id` (BYTES [N], more-like-this for rows already in the index). V1 instances carry one of the same keys.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from kserve.protocol.infer_type import InferRequest, InferResponse

from predictor.collection_schema import ID_MAX_LENGTH
from predictor.config import ServeSettings
from predictor.errors import InvalidRequest
from predictor.filters import validate_filter
from predictor.index import Hit
from predictor.kserve_compat import request_parameters
from predictor.models import protocol
from predictor.search_options import (
    DEFAULT_NAMESPACE,
    MAX_RESULT_WINDOW,
    NAMESPACE_PATTERN,
    SearchOptions,
    SearchSettings,
)
from predictor.vector_index import MAX_EFFORT, VectorIndex

IMAGE, EMBEDDING, ID = "image", "embedding", "id"
QUERY_INPUTS = [IMAGE, EMBEDDING, ID]
BASE_OUTPUTS = ["ids", "scores", "uris"]
ALL_OUTPUTS = [*BASE_OUTPUTS, "metadata", "embedding"]


@dataclass(frozen=True)
class Queries:
    kind: str
    images: list[bytes] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SearchRequest:
    queries: Queries
    options: SearchOptions
    outputs: list[str]
    v2: InferRequest | None = None


@dataclass(frozen=True)
class SearchResult:
    request: SearchRequest
    hits: list[list[Hit]]
    embeddings: np.ndarray


def _embeddings(array: Any, dimension: int, name: str) -> np.ndarray:
    try:
        vectors = np.asarray(array, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidRequest(f"{name} must be a list of {dimension} numbers") from None
    if vectors.ndim != 2 or vectors.shape[1] != dimension:
        shape = list(vectors.shape)
        raise InvalidRequest(f"{name} must have shape [N, {dimension}] (this model's dimension), got {shape}")
    if not np.isfinite(vectors).all():
        raise InvalidRequest(f"{name} holds NaN or infinity")
    # In float64: squares of large float32 values (1e38) overflow to infinity, and of tiny ones underflow to zero.
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidRequest(f"{name} holds an all-zero vector, which has no direction to search by")
    return (vectors / norms).astype(np.float32)


def _image_id(value: Any, position: int) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"id {position} is not UTF-8 text") from None
    if not isinstance(value, str) or not value or len(value) > ID_MAX_LENGTH:
        raise InvalidRequest(f"id {position} must be a non-empty string of at most {ID_MAX_LENGTH} characters")
    return value


def _v2_queries(request: InferRequest, max_queries: int, dimension: int) -> Queries:
    name, tensor = protocol.v2_inputs(request, QUERY_INPUTS)
    if name == IMAGE:
        return Queries(IMAGE, images=protocol.images_from_tensor(tensor, max_queries))
    if name == ID:
        elements = protocol.tensor_array(tensor, "BYTES", 1, "[N] (one id per element)").reshape(-1)
        protocol.check_count(len(elements), max_queries, "ids")
        return Queries(ID, ids=[_image_id(element, position) for position, element in enumerate(elements)])
    array = protocol.tensor_array(tensor, "FP32", 2, f"[N, {dimension}]")
    protocol.check_count(len(array), max_queries, "embeddings")
    return Queries(EMBEDDING, embeddings=_embeddings(array, dimension, "input 'embedding'"))


def _v1_queries(payload: Any, max_queries: int, dimension: int) -> Queries:
    instances = protocol.v1_instances(payload, max_queries)
    kinds = []
    for position, instance in enumerate(instances):
        given = [key for key in QUERY_INPUTS if isinstance(instance, dict) and key in instance]
        if isinstance(instance, str):
            given = [IMAGE]
        if len(given) != 1:
            raise InvalidRequest(
                f'instance {position}: give exactly one of "image", "embedding" or "id", got {given or "none"}'
            )
        kinds.append(given[0])
    if len(set(kinds)) > 1:
        raise InvalidRequest(f"send one kind of query per request; instances mix {sorted(set(kinds))}")
    kind = kinds[0]
    values = [instance if isinstance(instance, str) else instance[kind] for instance in instances]
    if kind == IMAGE:
        return Queries(IMAGE, images=[protocol.image_from_v1_value(value, i) for i, value in enumerate(values)])
    if kind == ID:
        return Queries(ID, ids=[_image_id(value, i) for i, value in enumerate(values)])
    return Queries(EMBEDDING, embeddings=_embeddings(values, dimension, "instance embeddings"))


def request_namespace(
    parameters: Mapping[str, Any], headers: Mapping[str, str] | None, settings: SearchSettings
) -> str:
    """The namespace a request reads: `--namespace-header`'s header when it is sent (a `namespace` parameter that
    disagrees is refused), else the `namespace` parameter, else the default one. The search page obeys it too."""
    asked = protocol.string_parameter(parameters, "namespace")
    if asked is not None and not NAMESPACE_PATTERN.fullmatch(asked):
        raise InvalidRequest(f"parameter 'namespace' {asked!r} is not a valid namespace (letters, digits, _ . -)")
    header = settings.namespace_header
    given = (headers or {}).get(header.lower()) if header else None
    if given is not None:
        if not NAMESPACE_PATTERN.fullmatch(given):
            raise InvalidRequest(f"header {header} {given!r} is not a valid namespace")
        if asked is not None and asked != given:
            raise InvalidRequest(f"parameter 'namespace' {asked!r} disagrees with header {header} {given!r}")
        return given
    return asked or DEFAULT_NAMESPACE


def _effort(parameters: Mapping[str, Any], vector_index: VectorIndex | None, hits: int) -> int | None:
    if parameters.get("effort") is None:
        return None
    if vector_index is None:  # the collection is not open yet; its search checks the effort (ImageIndex)
        return protocol.int_parameter(parameters, "effort", None, 1, MAX_EFFORT)
    allowed = vector_index.effort_range(hits)
    if allowed is None:
        raise InvalidRequest(vector_index.no_effort_problem())
    return protocol.int_parameter(parameters, "effort", None, *allowed, why=vector_index.effort_scope())


def search_options(
    parameters: Mapping[str, Any],
    headers: Mapping[str, str] | None,
    serve: ServeSettings,
    search: SearchSettings,
    vector_index: VectorIndex | None = None,
) -> SearchOptions:
    """`vector_index` is the searched collection's, which bounds `effort`."""
    top_k = protocol.int_parameter(parameters, "top_k", serve.default_top_k, 1, serve.max_top_k)
    offset = protocol.int_parameter(parameters, "offset", 0, 0, MAX_RESULT_WINDOW - top_k)
    min_score = parameters.get("min_score")
    raw_filter = protocol.string_parameter(parameters, "filter")
    return SearchOptions(
        top_k=top_k,
        offset=offset,
        min_score=None if min_score is None else protocol.float_parameter(parameters, "min_score", None, -1.0, 1.0),
        filter=None if raw_filter is None else validate_filter(raw_filter),
        namespace=request_namespace(parameters, headers, search),
        effort=_effort(parameters, vector_index, offset + top_k),
    )


def parse_search_request(
    payload: dict | InferRequest,
    headers: Mapping[str, str] | None,
    serve: ServeSettings,
    search: SearchSettings,
    dimension: int,
    vector_index: VectorIndex | None = None,
) -> SearchRequest:
    max_queries = serve.limits.max_images
    if isinstance(payload, InferRequest):
        parameters = request_parameters(payload)
        queries = _v2_queries(payload, max_queries, dimension)
        defaults = BASE_OUTPUTS + [
            name for name in ("metadata", "embedding") if protocol.bool_parameter(parameters, f"return_{name}")
        ]
        outputs = protocol.requested_output_names(payload, ALL_OUTPUTS, defaults)
        options = search_options(parameters, headers, serve, search, vector_index)
        return SearchRequest(queries, options, outputs, payload)
    parameters = protocol.v1_parameters(payload)
    queries = _v1_queries(payload, max_queries, dimension)
    # V1 hits always carry their metadata and never the embedding; the switches are still checked.
    for name in ("metadata", "embedding"):
        protocol.bool_parameter(parameters, f"return_{name}")
    return SearchRequest(queries, search_options(parameters, headers, serve, search, vector_index), [])


def page_of(hits: list[Hit], options: SearchOptions, leave_out: str | None = None) -> list[Hit]:
    """The hits a query asked for: without its own row, from `offset`, at most `top_k`, none below `min_score`."""
    if leave_out is not None:
        hits = [hit for hit in hits if hit.id != leave_out]
    page = hits[options.offset : options.offset + options.top_k]
    if options.min_score is not None:
        page = [hit for hit in page if hit.score >= options.min_score]
    return page


def response(model_name: str, model_version: str, result: SearchResult) -> dict | InferResponse:
    request, hits = result.request, result.hits
    if request.v2 is None:
        return {
            "model_version": model_version,
            "predictions": [
                [{"id": h.id, "score": h.score, "uri": h.uri, "metadata": h.metadata} for h in row] for row in hits
            ],
        }
    width = max((len(row) for row in hits), default=0)
    tensors = {
        "ids": lambda: protocol.text_tensor([[h.id for h in row] for row in hits], width),
        "scores": lambda: protocol.number_tensor([[h.score for h in row] for row in hits], width),
        "uris": lambda: protocol.text_tensor([[h.uri for h in row] for row in hits], width),
        "metadata": lambda: protocol.text_tensor(
            [[orjson.dumps(h.metadata).decode() for h in row] for row in hits], width
        ),
        "embedding": lambda: result.embeddings.astype(np.float32),
    }
    return protocol.v2_response(model_name, model_version, request.v2, request.outputs, tensors)
