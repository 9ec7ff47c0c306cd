"""How hard a search looks, from how many rows its namespace and filter keep (docs/search-index.md).

An IVF index scans `nprobe` of its `nlist` lists, and a filter is tested before any distance is computed (Milvus and
milvus-lite's FAISS both skip rows outside the filter's bitmap). A filter that keeps a fraction `s` of the rows leaves
only `s` of every scanned list, so a fixed nprobe sees `s` times fewer candidates than the unfiltered search it was
measured on: at 0.1% it often finds nothing. The planned nprobe keeps the candidates constant instead:

    nprobe = max(nprobe_default * total_rows, nlist * MIN_CANDIDATES) / matching_rows, within [nprobe_default, nlist]

so nprobe grows as 1/s, and a filter keeping fewer than about `max(total_rows / 32, MIN_CANDIDATES)` rows scans every
list: exact search over the matching rows, whose cost is one pass over the bitmap plus one distance per matching row.
The second term also covers small collections, whose lists hold a handful of rows each.

HNSW's `ef` grows the same way (bounded by 2048); FLAT is always exact and AUTOINDEX has no effort to set.
Counting costs a Milvus query, so counts are kept for `COUNT_TTL_S`: a count that is a little stale only makes a search
look slightly harder or easier than needed, never wrong.
"""

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from predictor.index.vector_index import VectorIndex

__all__ = ["COUNT_TTL_S", "MIN_CANDIDATES", "RowCounts", "planned_effort"]

# Matching rows an IVF search should scan at least; below this many matching rows, it scans them all.
MIN_CANDIDATES = 4096
COUNT_TTL_S = 30.0
MAX_COUNTS_KEPT = 1024


def planned_effort(vector_index: VectorIndex, total_rows: int, matching_rows: int, hits: int) -> int | None:
    """The search effort (nprobe or ef) for a search whose scope keeps `matching_rows` of `total_rows`; None when the
    index has no effort to set."""
    default = vector_index.default_effort
    allowed = vector_index.effort_range(hits)
    if default is None or allowed is None:
        return None
    low, high = allowed
    if matching_rows <= 0 or total_rows <= 0:
        return max(low, min(default, high))
    if vector_index.effort_param == "nprobe":
        nlist = vector_index.params["nlist"]
        wanted = math.ceil(max(default * total_rows, nlist * MIN_CANDIDATES) / matching_rows)
    else:
        wanted = math.ceil(default * total_rows / matching_rows)
    return max(low, default, min(wanted, high))


class RowCounts:
    """Row counts by filter expression, each kept for `ttl_s` seconds (at most `limit` of them)."""

    def __init__(self, ttl_s: float = COUNT_TTL_S, limit: int = MAX_COUNTS_KEPT) -> None:
        self._ttl_s = ttl_s
        self._limit = limit
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, expression: str, count: Callable[[str], int]) -> int:
        now = time.monotonic()
        with self._lock:
            kept = self._counts.get(expression)
            if kept is not None and now - kept[0] < self._ttl_s:
                self._counts.move_to_end(expression)
                return kept[1]
        counted = count(expression)
        with self._lock:
            self._counts[expression] = (now, counted)
            self._counts.move_to_end(expression)
            while len(self._counts) > self._limit:
                self._counts.popitem(last=False)
        return counted

    def forget(self) -> None:
        """After this process wrote rows: the next search counts again."""
        with self._lock:
            self._counts.clear()
