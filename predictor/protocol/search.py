"""The search model's requests and responses: queries (images, texts, embeddings or ids), search options, outputs.

A request sends exactly one kind of query: `image` (BYTES [N], encoded files), `text` (BYTES [N], UTF-8, for a model
with a text tower), `embedding` (FP32 [N, D], normalised here) or `id` (BYTES [N], more-like-this for rows already in
the index). V1 instances carry one of the same keys.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson
from kserve.protocol.infer_type import InferRequest, InferResponse

from predictor.errors import InvalidRequest
from predictor.index.collection import Hit
from predictor.index.filters import validate_filter
from predictor.index.reranking import MAX_GROUP_SIZE, MAX_HITS_REORDERED, diversify, group
from predictor.index.schema import ID_MAX_LENGTH
from predictor.index.search_options import (
    DEFAULT_NAMESPACE,
    MAX_RESULT_WINDOW,
    NAMESPACE_PATTERN,
    SearchOptions,
    SearchSettings,
)
from predictor.index.vector_index import MAX_EFFORT, VectorIndex
from predictor.protocol import inference
from predictor.serving.kserve.grpc_service import request_parameters
from predictor.serving.settings import ServeSettings

IMAGE, TEXT, EMBEDDING, ID = "image", "text", "embedding", "id"
QUERY_INPUTS = [IMAGE, TEXT, EMBEDDING, ID]
# Longer texts are refused before they reach the tokenizer: open_clip keeps only the first context_length tokens of a
# text (77 for every CLIP model it ships), and tokenizing megabytes of text would hold a worker for seconds.
MAX_TEXT_CHARS = 4096
BASE_OUTPUTS = ["ids", "scores", "uris"]
ALL_OUTPUTS = [*BASE_OUTPUTS, "metadata", "embedding"]


@dataclass(frozen=True)
class Queries:
    kind: str
    images: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
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


def _text(value: Any, position: int) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"text {position} is not UTF-8") from None
    if not isinstance(value, str):
        raise InvalidRequest(f"text {position} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidRequest(f"text {position} is empty; send the words to search for")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidRequest(
            f"text {position} has {len(value)} characters, over the limit of {MAX_TEXT_CHARS} (the model reads only "
            "its first 77 or so tokens)"
        )
    return value


def _v2_queries(request: InferRequest, max_queries: int, dimension: int) -> Queries:
    name, tensor = inference.v2_inputs(request, QUERY_INPUTS)
    if name == IMAGE:
        return Queries(IMAGE, images=inference.images_from_tensor(tensor, max_queries))
    if name == TEXT:
        elements = inference.tensor_array(tensor, "BYTES", 1, "[N] (one UTF-8 text per element)").reshape(-1)
        inference.check_count(len(elements), max_queries, "texts")
        return Queries(TEXT, texts=[_text(element, position) for position, element in enumerate(elements)])
    if name == ID:
        elements = inference.tensor_array(tensor, "BYTES", 1, "[N] (one id per element)").reshape(-1)
        inference.check_count(len(elements), max_queries, "ids")
        return Queries(ID, ids=[_image_id(element, position) for position, element in enumerate(elements)])
    array = inference.tensor_array(tensor, "FP32", 2, f"[N, {dimension}]")
    inference.check_count(len(array), max_queries, "embeddings")
    return Queries(EMBEDDING, embeddings=_embeddings(array, dimension, "input 'embedding'"))


def _v1_queries(payload: Any, max_queries: int, dimension: int) -> Queries:
    instances = inference.v1_instances(payload, max_queries)
    kinds = []
    for position, instance in enumerate(instances):
        given = [key for key in QUERY_INPUTS if isinstance(instance, dict) and key in instance]
        if isinstance(instance, str):
            given = [IMAGE]
        if len(given) != 1:
            raise InvalidRequest(
                f'instance {position}: give exactly one of "image", "text", "embedding" or "id", got {given or "none"}'
            )
        kinds.append(given[0])
    if len(set(kinds)) > 1:
        raise InvalidRequest(f"send one kind of query per request; instances mix {sorted(set(kinds))}")
    kind = kinds[0]
    values = [instance if isinstance(instance, str) else instance[kind] for instance in instances]
    if kind == IMAGE:
        return Queries(IMAGE, images=[inference.image_from_v1_value(value, i) for i, value in enumerate(values)])
    if kind == ID:
        return Queries(ID, ids=[_image_id(value, i) for i, value in enumerate(values)])
    if kind == TEXT:
        return Queries(TEXT, texts=[_text(value, i) for i, value in enumerate(values)])
    return Queries(EMBEDDING, embeddings=_embeddings(values, dimension, "instance embeddings"))


def request_namespace(
    parameters: Mapping[str, Any], headers: Mapping[str, str] | None, settings: SearchSettings
) -> str:
    """The namespace a request reads: `--namespace-header`'s header when it is sent (a `namespace` parameter that
    disagrees is refused), else the `namespace` parameter, else the default one. The search page obeys it too."""
    asked = inference.string_parameter(parameters, "namespace")
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
        return inference.int_parameter(parameters, "effort", None, 1, MAX_EFFORT)
    allowed = vector_index.effort_range(hits)
    if allowed is None:
        raise InvalidRequest(vector_index.no_effort_problem())
    return inference.int_parameter(parameters, "effort", None, *allowed, why=vector_index.effort_scope())


# Longest metadata field name `group_by` takes.
MAX_FIELD_LENGTH = 256


def _reranking(parameters: Mapping[str, Any], hits: int) -> dict[str, Any]:
    """`diversity`, `group_by` and `group_size`, checked; re-ranking fetches 10 candidates per hit, hence the bound."""
    diversity = inference.float_parameter(parameters, "diversity", 0.0, 0.0, 1.0)
    group_by = inference.string_parameter(parameters, "group_by")
    if group_by is not None and len(group_by) > MAX_FIELD_LENGTH:
        raise InvalidRequest(
            f"parameter 'group_by' must be a metadata field name of at most {MAX_FIELD_LENGTH} characters"
        )
    group_size = inference.int_parameter(parameters, "group_size", 1, 1, MAX_GROUP_SIZE)
    if group_by is None and parameters.get("group_size") is not None:
        raise InvalidRequest("parameter 'group_size' needs parameter 'group_by' (the metadata field to group by)")
    for name, used in (("diversity", diversity > 0), ("group_by", group_by is not None)):
        if used and hits > MAX_HITS_REORDERED:
            raise InvalidRequest(
                f"parameter {name!r} re-ranks at most offset + top_k = {MAX_HITS_REORDERED} hits, got {hits}"
            )
    return {"diversity": diversity, "group_by": group_by, "group_size": group_size}


def search_options(
    parameters: Mapping[str, Any],
    headers: Mapping[str, str] | None,
    serve: ServeSettings,
    search: SearchSettings,
    vector_index: VectorIndex | None = None,
) -> SearchOptions:
    """`vector_index` is the searched collection's, which bounds `effort`."""
    top_k = inference.int_parameter(parameters, "top_k", serve.default_top_k, 1, serve.max_top_k)
    offset = inference.int_parameter(parameters, "offset", 0, 0, MAX_RESULT_WINDOW - top_k)
    min_score = parameters.get("min_score")
    raw_filter = inference.string_parameter(parameters, "filter")
    return SearchOptions(
        top_k=top_k,
        offset=offset,
        min_score=None if min_score is None else inference.float_parameter(parameters, "min_score", None, -1.0, 1.0),
        filter=None if raw_filter is None else validate_filter(raw_filter),
        namespace=request_namespace(parameters, headers, search),
        effort=_effort(parameters, vector_index, offset + top_k),
        **_reranking(parameters, offset + top_k),
    )


def parse_search_request(
    payload: dict | InferRequest,
    headers: Mapping[str, str] | None,
    serve: ServeSettings,
    search: SearchSettings,
    dimension: int,
    vector_index: VectorIndex | None = None,
    text_refusal: str | None = None,
) -> SearchRequest:
    """`text_refusal` is why this model takes no text queries (None: it takes them)."""
    max_queries = serve.limits.max_images
    if isinstance(payload, InferRequest):
        parameters = request_parameters(payload)
        queries = _v2_queries(payload, max_queries, dimension)
        _refuse_text(queries, text_refusal)
        defaults = BASE_OUTPUTS + [
            name for name in ("metadata", "embedding") if inference.bool_parameter(parameters, f"return_{name}")
        ]
        outputs = inference.requested_output_names(payload, ALL_OUTPUTS, defaults)
        options = search_options(parameters, headers, serve, search, vector_index)
        return SearchRequest(queries, options, outputs, payload)
    parameters = inference.v1_parameters(payload)
    queries = _v1_queries(payload, max_queries, dimension)
    _refuse_text(queries, text_refusal)
    # V1 hits always carry their metadata and never the embedding; the switches are still checked.
    for name in ("metadata", "embedding"):
        inference.bool_parameter(parameters, f"return_{name}")
    return SearchRequest(queries, search_options(parameters, headers, serve, search, vector_index), [])


def _refuse_text(queries: Queries, refusal: str | None) -> None:
    if queries.kind == TEXT and refusal is not None:
        raise InvalidRequest(refusal)


def page_of(hits: list[Hit], options: SearchOptions, leave_out: str | None = None) -> list[Hit]:
    """The hits a query asked for: without its own row, none below `min_score`, grouped and diversified when asked
    (reranking.py), then from `offset`, at most `top_k`."""
    if leave_out is not None:
        hits = [hit for hit in hits if hit.id != leave_out]
    if options.min_score is not None:
        hits = [hit for hit in hits if hit.score >= options.min_score]
    if options.group_by is not None:
        hits = [hits[i] for i in group([hit.metadata for hit in hits], options.group_by, options.group_size)]
    if options.diversity > 0 and hits:
        scores = np.array([hit.score for hit in hits])
        # The search fetched every candidate's vector because diversity was asked for (ImageIndex.search).
        vectors = np.stack([hit.vector for hit in hits if hit.vector is not None])
        hits = [hits[i] for i in diversify(scores, vectors, options.diversity, options.offset + options.top_k)]
    return [replace(hit, vector=None) for hit in hits[options.offset : options.offset + options.top_k]]


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
        "ids": lambda: inference.text_tensor([[h.id for h in row] for row in hits], width),
        "scores": lambda: inference.number_tensor([[h.score for h in row] for row in hits], width),
        "uris": lambda: inference.text_tensor([[h.uri for h in row] for row in hits], width),
        "metadata": lambda: inference.text_tensor(
            [[orjson.dumps(h.metadata).decode() for h in row] for row in hits], width
        ),
        "embedding": lambda: result.embeddings.astype(np.float32),
    }
    return inference.v2_response(model_name, model_version, request.v2, request.outputs, tensors)
