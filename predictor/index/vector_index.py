"""A collection's vector index: its type and build parameters, how it is searched, and the per-request effort.

Defaults come from measurements on 100,000 real embeddings (docs/benchmarks.md, "Search at a realistic scale"):
IVF_FLAT with 1024 lists, searched at nprobe 32, gave recall@10 0.995 on the Milvus server with p50 5.9 ms and p99
12.8 ms per query, and 0.994 in milvus-lite (which builds it with FAISS); HNSW (M 16, efConstruction 200) needed
ef 256 for 0.983 and reached only 0.948 at ef 64.

`effort` is the one per-request knob, bounded per index type: HNSW's `ef` (the candidate list: at least the hits asked
for, since HNSW returns at most ef of them), IVF's `nprobe` (lists scanned, at most nlist). More effort, more recall,
more time; FLAT and AUTOINDEX have none.
"""

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from predictor.errors import InvalidRequest

__all__ = [
    "DEFAULT_INDEX_TYPE",
    "INDEX_KINDS",
    "MAX_EFFORT",
    "InvalidIndexSettings",
    "VectorIndex",
    "parse_params",
]

METRIC = "COSINE"


@dataclass(frozen=True)
class IndexKind:
    build_defaults: dict[str, int]
    build_bounds: dict[str, tuple[int, int]]
    search_defaults: dict[str, int]
    effort_param: str | None = None
    effort_bounds: tuple[int, int] | None = None


# What each index type takes, with Milvus's own documented bounds.
INDEX_KINDS: dict[str, IndexKind] = {
    "FLAT": IndexKind({}, {}, {}),
    # The server's own choice (HNSW-like on Milvus 2.3; HNSW in milvus-lite); collections before --index-type had it.
    "AUTOINDEX": IndexKind({}, {}, {}),
    "HNSW": IndexKind(
        {"M": 16, "efConstruction": 200},
        {"M": (2, 2048), "efConstruction": (1, 2**31 - 1)},
        {"ef": 64},
        "ef",
        (1, 2048),
    ),
    "IVF_FLAT": IndexKind({"nlist": 1024}, {"nlist": (1, 65536)}, {"nprobe": 32}, "nprobe", (1, 65536)),
    "IVF_SQ8": IndexKind({"nlist": 1024}, {"nlist": (1, 65536)}, {"nprobe": 32}, "nprobe", (1, 65536)),
}
DEFAULT_INDEX_TYPE = "IVF_FLAT"
# The widest effort any index type takes; a request beyond it is wrong whatever the collection.
MAX_EFFORT = max(kind.effort_bounds[1] for kind in INDEX_KINDS.values() if kind.effort_bounds)


class InvalidIndexSettings(ValueError):
    """The index settings cannot work; the message says what to change."""


def _check_params(what: str, given: dict, bounds: dict[str, tuple[int, int]], index_type: str) -> dict[str, int]:
    unknown = set(given) - set(bounds)
    if unknown:
        known = ", ".join(sorted(bounds)) or "none"
        raise InvalidIndexSettings(
            f"{index_type} {what}: unknown parameter(s) {', '.join(sorted(unknown))}; known: {known}"
        )
    checked = {}
    for name, value in given.items():
        low, high = bounds[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidIndexSettings(
                f"{index_type} {what}: {name} must be an integer in [{low}, {high}], got {value!r}"
            )
        checked[name] = value
    return checked


@dataclass(frozen=True)
class VectorIndex:
    """The vector field's index, chosen when a collection is made, and the default search effort on it.

    Validated at construction: a bad setting stops the server or the indexing job at start, not at search.
    `params` are the build parameters (nlist, M, efConstruction), `search_params` the default search ones.
    """

    index_type: str = DEFAULT_INDEX_TYPE
    params: dict[str, int] = field(default_factory=dict)
    search_params: dict[str, int] = field(default_factory=dict)
    # Embeddings are L2-normalised and scores are documented as cosine similarity, so the metric is not a setting.
    metric_type: ClassVar[str] = METRIC

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_KINDS:
            raise InvalidIndexSettings(f"--index-type must be one of {', '.join(INDEX_KINDS)}, got {self.index_type!r}")
        kind = INDEX_KINDS[self.index_type]
        build = {**kind.build_defaults, **_check_params("build", self.params, kind.build_bounds, self.index_type)}
        object.__setattr__(self, "params", build)
        effort_bounds = self.effort_bounds
        search_bounds = {kind.effort_param: effort_bounds} if kind.effort_param and effort_bounds else {}
        search = {**kind.search_defaults, **_check_params("search", self.search_params, search_bounds, self.index_type)}
        if kind.effort_param and effort_bounds:
            # A default effort above what a small index allows (nprobe 32 of 16 lists) is that index's whole.
            search[kind.effort_param] = min(search[kind.effort_param], effort_bounds[1])
        object.__setattr__(self, "search_params", search)

    @property
    def kind(self) -> IndexKind:
        return INDEX_KINDS[self.index_type]

    @property
    def effort_param(self) -> str | None:
        return self.kind.effort_param

    @property
    def effort_bounds(self) -> tuple[int, int] | None:
        """Bounds of `effort` whatever the request; nprobe can never exceed the collection's nlist."""
        bounds = self.kind.effort_bounds
        if bounds is not None and "nlist" in self.params:
            return bounds[0], min(bounds[1], self.params["nlist"])
        return bounds

    @property
    def default_effort(self) -> int | None:
        return self.search_params.get(self.effort_param) if self.effort_param else None

    def effort_range(self, hits: int) -> tuple[int, int] | None:
        """The efforts a request for `hits` results (offset + top_k) may ask for; None when the index has none."""
        bounds = self.effort_bounds
        if bounds is None:
            return None
        if self.effort_param == "ef":
            return max(bounds[0], hits), bounds[1]
        return bounds

    def effort_scope(self) -> str:
        """Where the bounds of `effort` come from, for a message that refuses one."""
        scope = f"for this collection's {self.index_type} index (its {self.effort_param}"
        if self.effort_param == "ef":
            scope += ", at least offset + top_k, since HNSW returns at most ef hits"
        return scope + ")"

    def no_effort_problem(self) -> str:
        return (
            f"parameter 'effort' does not apply to this collection's {self.index_type} index, which has no search "
            "effort to set"
        )

    def check_effort(self, effort: int, hits: int) -> None:
        """InvalidRequest (400 on every transport), naming the parameter, unless `effort` suits this index."""
        allowed = self.effort_range(hits)
        if allowed is None:
            raise InvalidRequest(self.no_effort_problem())
        low, high = allowed
        if not low <= effort <= high:
            raise InvalidRequest(
                f"parameter 'effort' must be an integer from {low} to {high} {self.effort_scope()}, got {effort}"
            )

    def index_params(self) -> dict[str, Any]:
        """Keyword arguments for pymilvus `IndexParams.add_index`."""
        return {"index_type": self.index_type, "metric_type": self.metric_type, "params": dict(self.params)}

    def search_request(self, window: int, effort: int | None = None, hits: int | None = None) -> dict[str, Any]:
        """`search_params` for one search fetching `window` results; `effort` (None: the default) is checked against
        the `hits` the request asked for (default: the window)."""
        params = dict(self.search_params)
        if effort is not None:
            self.check_effort(effort, window if hits is None else hits)
            # check_effort refuses any effort on an index without one.
            assert self.effort_param is not None
            params[self.effort_param] = effort
        if self.effort_param == "ef":
            # HNSW returns at most ef results, so a short candidate list would cut the window short.
            params["ef"] = max(params["ef"], window)
        return {"metric_type": self.metric_type, "params": params}

    def describe(self) -> str:
        return json.dumps({"index_type": self.index_type, "build": self.params, "search": self.search_params})

    def effort_metadata(self) -> dict[str, Any]:
        """What the model metadata says about `effort` on this collection."""
        bounds = self.effort_bounds
        if self.effort_param is None or bounds is None:
            return {"type": "integer", "applies": False, "index_type": self.index_type}
        low, high = bounds
        metadata = {
            "type": "integer",
            "index_type": self.index_type,
            "search_parameter": self.effort_param,
            "default": self.default_effort,
            "minimum": low,
            "maximum": high,
        }
        if self.effort_param == "ef":
            metadata["minimum"] = "offset + top_k"
        return metadata

    def of_collection(self, description: dict) -> "VectorIndex":
        """The settings that match the index a collection really has (`describe_index`), which may predate these."""
        actual = str(description.get("index_type") or self.index_type)
        if actual not in INDEX_KINDS:
            return VectorIndex("AUTOINDEX")
        bounds = INDEX_KINDS[actual].build_bounds
        build = {name: int(value) for name, value in description.items() if name in bounds}
        same_type = actual == self.index_type
        if same_type and all(self.params.get(name) == value for name, value in build.items()):
            return self
        try:
            return VectorIndex(actual, build, self.search_params if same_type else {})
        except InvalidIndexSettings:  # e.g. nprobe above this collection's nlist: its own default then
            return VectorIndex(actual, build)


def parse_params(text: str | None, flag: str) -> dict[str, int]:
    """`M=16,efConstruction=200` (or a JSON object) from a flag or environment variable."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidIndexSettings(f"{flag}: invalid JSON: {error}") from None
        if not isinstance(parsed, dict):
            raise InvalidIndexSettings(f'{flag}: must be an object such as {{"M": 16}}')
        return parsed
    params = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidIndexSettings(f"{flag}: expected NAME=INTEGER[,NAME=INTEGER...], got {text!r}")
        try:
            params[name.strip()] = int(value)
        except ValueError:
            raise InvalidIndexSettings(f"{flag}: {name.strip()} must be an integer, got {value.strip()!r}") from None
    return params
