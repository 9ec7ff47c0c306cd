"""How a collection's vectors are indexed and searched: index type, build parameters, search parameters, effort.

Defaults come from measurements on 100,000 real embeddings (docs/benchmarks.md, "Search at a realistic scale"):
IVF_FLAT with 1024 lists, searched at nprobe 32, gave recall@10 0.995 on the Milvus server with p50 5.9 ms and p99
12.8 ms per query, and 0.994 in milvus-lite (which builds it with FAISS); HNSW (M 16, efConstruction 200) needed
ef 256 for 0.983 and reached only 0.948 at ef 64.

`effort` is the one per-request knob, bounded per index type: HNSW's `ef` (the candidate list; at least top_k),
IVF's `nprobe` (lists scanned, at most nlist). More effort, more recall, more time; FLAT has none.
"""

import json
from dataclasses import dataclass, field

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


class InvalidIndexConfig(ValueError):
    """The index settings cannot work; the message says what to change."""


def _check_params(what: str, given: dict, bounds: dict[str, tuple[int, int]], index_type: str) -> dict[str, int]:
    unknown = set(given) - set(bounds)
    if unknown:
        known = ", ".join(sorted(bounds)) or "none"
        raise InvalidIndexConfig(
            f"{index_type} {what}: unknown parameter(s) {', '.join(sorted(unknown))}; known: {known}"
        )
    checked = {}
    for name, value in given.items():
        low, high = bounds[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidIndexConfig(
                f"{index_type} {what}: {name} must be an integer in [{low}, {high}], got {value!r}"
            )
        checked[name] = value
    return checked


@dataclass(frozen=True)
class IndexConfig:
    """Validated at construction: a bad setting stops the server or the indexing job at start, not at search."""

    index_type: str = DEFAULT_INDEX_TYPE
    build_params: dict[str, int] = field(default_factory=dict)
    search_params: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_KINDS:
            raise InvalidIndexConfig(f"--index-type must be one of {', '.join(INDEX_KINDS)}, got {self.index_type!r}")
        kind = INDEX_KINDS[self.index_type]
        build = {**kind.build_defaults, **_check_params("build", self.build_params, kind.build_bounds, self.index_type)}
        object.__setattr__(self, "build_params", build)
        search_bounds = {kind.effort_param: self.effort_bounds} if kind.effort_param else {}
        search = {**kind.search_defaults, **_check_params("search", self.search_params, search_bounds, self.index_type)}
        if kind.effort_param:
            # A default effort above what a small index allows (nprobe 32 of 16 lists) is that index's whole.
            search[kind.effort_param] = min(search[kind.effort_param], self.effort_bounds[1])
        object.__setattr__(self, "search_params", search)

    @property
    def kind(self) -> IndexKind:
        return INDEX_KINDS[self.index_type]

    @property
    def effort_param(self) -> str | None:
        return self.kind.effort_param

    @property
    def effort_bounds(self) -> tuple[int, int] | None:
        """Bounds of `effort`; nprobe can never exceed the collection's nlist."""
        bounds = self.kind.effort_bounds
        if bounds is not None and "nlist" in self.build_params:
            return bounds[0], min(bounds[1], self.build_params["nlist"])
        return bounds

    @property
    def default_effort(self) -> int | None:
        return self.search_params.get(self.effort_param) if self.effort_param else None

    def index_params(self) -> dict:
        """Keyword arguments for pymilvus `IndexParams.add_index`."""
        return {"index_type": self.index_type, "metric_type": METRIC, "params": dict(self.build_params)}

    def search_request(self, top_k: int, effort: int | None = None) -> dict:
        """`search_params` for one search; `effort` (None: the default) must lie within `effort_bounds`."""
        params = dict(self.search_params)
        if effort is not None:
            if self.effort_param is None:
                raise InvalidIndexConfig(f"effort does not apply to a {self.index_type} index, which is exact")
            low, high = self.effort_bounds
            if not isinstance(effort, int) or isinstance(effort, bool) or not low <= effort <= high:
                raise InvalidIndexConfig(f"effort must be an integer in [{low}, {high}], got {effort!r}")
            params[self.effort_param] = effort
        if self.effort_param == "ef":
            # HNSW returns at most ef results, so a short candidate list would cut top_k short.
            params["ef"] = max(params["ef"], top_k)
        return {"metric_type": METRIC, "params": params}

    def describe(self) -> str:
        return json.dumps({"index_type": self.index_type, "build": self.build_params, "search": self.search_params})


def for_collection(configured: IndexConfig, description: dict) -> IndexConfig:
    """The settings that match the index a collection really has, which may predate the configured ones."""
    actual = str(description.get("index_type") or configured.index_type)
    if actual not in INDEX_KINDS:
        return IndexConfig("AUTOINDEX")
    bounds = INDEX_KINDS[actual].build_bounds
    build = {name: int(value) for name, value in description.items() if name in bounds}
    same_type = actual == configured.index_type
    if same_type and all(configured.build_params.get(name) == value for name, value in build.items()):
        return configured
    try:
        return IndexConfig(actual, build, configured.search_params if same_type else {})
    except InvalidIndexConfig:  # e.g. nprobe above this collection's nlist: its own default then
        return IndexConfig(actual, build)


def parse_params(text: str | None, flag: str) -> dict[str, int]:
    """`M=16,efConstruction=200` (or a JSON object) from a flag or environment variable."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidIndexConfig(f"{flag}: invalid JSON: {error}") from None
        if not isinstance(parsed, dict):
            raise InvalidIndexConfig(f'{flag}: must be an object such as {{"M": 16}}')
        return parsed
    params = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidIndexConfig(f"{flag}: expected NAME=INTEGER[,NAME=INTEGER...], got {text!r}")
        try:
            params[name.strip()] = int(value)
        except ValueError:
            raise InvalidIndexConfig(f"{flag}: {name.strip()} must be an integer, got {value.strip()!r}") from None
    return params
