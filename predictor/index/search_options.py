"""What one search asks for, and the server's bounds on it.

`SearchOptions` is the unit searches are grouped by: queries with equal options share one Milvus call. A new per-request
option is one more field here (and one more line where requests are parsed, `protocol/search.py`).
"""

import re
from dataclasses import dataclass

from predictor.index.reranking import candidates

__all__ = [
    "CONSISTENCY_LEVELS",
    "DEFAULT_CONSISTENCY",
    "DEFAULT_NAMESPACE",
    "MAX_RESULT_WINDOW",
    "NAMESPACE_PATTERN",
    "SearchOptions",
    "SearchSettings",
    "check_namespace",
]

DEFAULT_NAMESPACE = "default"
# Namespaces travel into Milvus filter expressions and log lines, so they keep to a plain alphabet.
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# offset + top_k: deep pages cost Milvus as much as one search of that many results.
MAX_RESULT_WINDOW = 1000
# What the server's searches wait for. Strong waits for Milvus's next time tick on every search (about 200 ms on a
# Milvus server: p50 202 ms against 3 to 6 ms at Bounded, docs/benchmarks.md); Bounded searches what the query node
# holds now, which includes every write that a Strong read has waited for (the CLI ends its writes with one, see
# ImageIndex.settle), and is at most Milvus's graceful time (5 s) behind otherwise.
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Eventually")
DEFAULT_CONSISTENCY = "Bounded"


def check_namespace(name: str) -> str:
    """`name` if it is a valid namespace; ValueError saying what one may look like otherwise."""
    if not isinstance(name, str) or not NAMESPACE_PATTERN.fullmatch(name):
        raise ValueError(
            f"namespace {name!r} is not valid: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit"
        )
    return name


@dataclass(frozen=True)
class SearchOptions:
    """One search's options, already validated. `filter` is the Milvus expression `filters.validate_filter` made."""

    top_k: int = 10
    offset: int = 0
    min_score: float | None = None
    filter: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    # The index's search effort (nprobe for IVF, ef for HNSW), checked against the collection's index; None: planned.
    effort: int | None = None
    # Re-ranking (reranking.py): 0 to 1, 0 is off; a metadata field, at most `group_size` hits per value of it.
    diversity: float = 0.0
    group_by: str | None = None
    group_size: int = 1

    @property
    def reranks(self) -> bool:
        return self.diversity > 0 or self.group_by is not None

    @property
    def window(self) -> int:
        """Hits to fetch per query: the page and everything before it, plus one in case the query's own row (a
        more-like-this query) is among them and has to be left out; the re-ranked candidates when re-ranking."""
        if self.reranks:
            return max(self.offset + self.top_k + 1, candidates(self.offset + self.top_k, self.group_size))
        return self.offset + self.top_k + 1


@dataclass(frozen=True)
class SearchSettings:
    """Server-side settings of the search API (`image-search serve`)."""

    namespace_header: str | None = None
    search_workers: int = 2
    consistency: str = DEFAULT_CONSISTENCY

    def __post_init__(self) -> None:
        if self.consistency not in CONSISTENCY_LEVELS:
            raise ValueError(
                f"--search-consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {self.consistency!r}"
            )
        if self.search_workers < 1:
            raise ValueError(f"--search-workers must be at least 1, got {self.search_workers}")
        if self.namespace_header is not None and not re.fullmatch(r"[A-Za-z0-9-]+", self.namespace_header):
            raise ValueError(f"--namespace-header {self.namespace_header!r} is not a valid header name")
