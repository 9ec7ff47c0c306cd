"""What one search asks for, and the server's bounds on it.

`SearchOptions` is the unit searches are grouped by: queries with equal options share one Milvus call. A new per-request
option is one more field here (and one more line where requests are parsed, `models/search_protocol.py`).
"""

import argparse
import os
import re
from dataclasses import dataclass

from predictor import environment

__all__ = [
    "CONSISTENCY_LEVELS",
    "DEFAULT_CONSISTENCY",
    "DEFAULT_NAMESPACE",
    "MAX_RESULT_WINDOW",
    "NAMESPACE_PATTERN",
    "SearchOptions",
    "SearchSettings",
    "add_search_arguments",
    "check_namespace",
    "search_settings",
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
    # The index's search effort (nprobe for IVF, ef for HNSW), checked against the collection's index; None: default.
    effort: int | None = None

    @property
    def window(self) -> int:
        """Hits to fetch per query: the page and everything before it, plus one in case the query's own row (a
        more-like-this query) is among them and has to be left out."""
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


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace-header",
        default=os.environ.get(environment.NAMESPACE_HEADER) or None,
        help="Take each request's namespace from this header (set by a gateway after it authenticates the caller); "
        "a namespace parameter that disagrees with it is refused. Env: IMAGE_SEARCH_NAMESPACE_HEADER.",
    )
    parser.add_argument(
        "--search-workers",
        type=int,
        default=2,
        help="Milvus searches in flight at once; queries waiting meanwhile with equal options share one search.",
    )
    parser.add_argument(
        "--search-consistency",
        default=os.environ.get(environment.SEARCH_CONSISTENCY, DEFAULT_CONSISTENCY),
        choices=CONSISTENCY_LEVELS,
        help=f"Milvus consistency level of searches and id lookups (default {DEFAULT_CONSISTENCY}). Bounded searches "
        "what Milvus holds now without waiting for its next time tick (about 200 ms on a server); rows that "
        "`image-search index` has written are searchable once it returns. Strong makes every search wait. "
        "Env: IMAGE_SEARCH_SEARCH_CONSISTENCY.",
    )


def search_settings(args: argparse.Namespace) -> SearchSettings:
    return SearchSettings(
        namespace_header=args.namespace_header,
        search_workers=args.search_workers,
        consistency=args.search_consistency,
    )
