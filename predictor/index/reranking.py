"""Re-ranking what Milvus returned: diverse results (maximal marginal relevance) and at most N hits per group.

Both work on a candidate list wider than the page (`candidates`), fetched by the same search with the same namespace,
filter and `min_score`, so they never return a row the plain search would not have been allowed to return.

Diversity `d` (0 to 1) picks hits greedily: each next one maximises `(1 - d) * sim(query, x) - d * max sim(x, chosen)`
over the candidates left, so with `d` above 0 a near copy of a hit already chosen falls behind a different picture.
The first pick is always the best match. Scores returned stay the plain similarity to the query. `offset` skips the
first `offset` hits of that diversified order, so page 2 continues the order of page 1.

Grouping keeps, in score order, at most `group_size` hits per distinct value of `metadata[group_by]` (1 and "1" are
different values); a hit that lacks the field (or holds null) is a group of its own, so grouping by a mark that only
some rows carry (`image-search duplicates --mark`) keeps every unmarked row.
"""

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "CANDIDATES_PER_HIT",
    "MAX_CANDIDATES",
    "MAX_GROUP_SIZE",
    "candidates",
    "diversify",
    "group",
]

# Candidates fetched per hit asked for (offset + top_k) when re-ranking, and the most any search fetches: each one
# brings its vector (5 KiB at 1280 dimensions), so 2,000 of them are 10 MiB per query.
CANDIDATES_PER_HIT = 10
MAX_CANDIDATES = 2000
MAX_HITS_REORDERED = MAX_CANDIDATES // CANDIDATES_PER_HIT
MAX_GROUP_SIZE = 10


def candidates(hits: int, group_size: int = 1) -> int:
    """Candidates to fetch for `hits` (offset + top_k) re-ranked hits, at most MAX_CANDIDATES."""
    return min(MAX_CANDIDATES, CANDIDATES_PER_HIT * hits * max(1, group_size))


def diversify(scores: np.ndarray, vectors: np.ndarray, diversity: float, count: int) -> list[int]:
    """Indices of `count` candidates in maximal-marginal-relevance order; `scores` are their similarities to the query,
    `vectors` their unit vectors."""
    chosen: list[int] = []
    if len(scores) == 0 or count <= 0:
        return chosen
    relevance = (1.0 - diversity) * np.asarray(scores, dtype=np.float64)
    closest = np.full(len(scores), -np.inf)
    left = np.ones(len(scores), dtype=bool)
    vectors = np.asarray(vectors, dtype=np.float32)
    for _ in range(min(count, len(scores))):
        # Before the first pick nothing is close to anything: the best match comes first.
        value = np.where(left, relevance - diversity * np.where(np.isinf(closest), 0.0, closest), -np.inf)
        pick = int(np.argmax(value))
        chosen.append(pick)
        left[pick] = False
        closest = np.maximum(closest, vectors @ vectors[pick])
    return chosen


def group_key(metadata: dict, field: str) -> str | None:
    """The value hits are grouped by, as text (1 and "1" differ); None when the hit has none."""
    value = metadata.get(field) if isinstance(metadata, dict) else None
    return None if value is None else json.dumps(value, sort_keys=True)


def group(metadatas: Sequence[dict[str, Any]], field: str, group_size: int) -> list[int]:
    """Indices of the candidates kept, in their order, with at most `group_size` per value of `field`."""
    seen: dict[str, int] = {}
    kept = []
    for position, metadata in enumerate(metadatas):
        key = group_key(metadata, field)
        if key is None:
            kept.append(position)
        elif seen.get(key, 0) < group_size:
            seen[key] = seen.get(key, 0) + 1
            kept.append(position)
    return kept
