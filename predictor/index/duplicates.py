"""Near-duplicate clusters across a collection, from its stored vectors and copy signatures: no image is embedded or
read again.

Every stored row (of one namespace, optionally under a filter) is searched for, in batches, among the same rows. The
embedding proposes: each row's `NEIGHBOURS` nearest rows scoring at least `CANDIDATE_SCORE` are candidates. The copy
signatures decide (imaging/copy_signature.py): a candidate's score is how well a crop of the row's picture matches
the candidate's whole picture, or the embedding's score where either row has none (rows indexed before signatures
were stored). The other way round, the candidate's crops against the row's whole, is scored when the candidate's own
row is searched for, so that each row's crops are made once. A pair that neither way round reaches the threshold, but
that comes close enough (OVERLAP_GATE), gets one more chance: the two pictures aligned where they overlap
(imaging/copy_overlap.py), for two copies cropped differently from one original, where neither holds the other. Each
pair scoring at least the threshold joins its two rows, and a cluster is a connected component of those pairs (so a
chain of close copies is one cluster even when its ends are further apart); a cluster larger than `NEIGHBOURS` is
still found whole through its members' own neighbours.

The cost is one search per row, batched, at the search effort the filter plans (search_effort.py): near-linear in
the rows. The default threshold is measured on planted copies (docs/search-index.md, "Near-duplicate clusters").
"""

import concurrent.futures
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits

from predictor.imaging.copy_overlap import overlap_score
from predictor.imaging.copy_signature import copy_scores
from predictor.index.collection import Hit, ImageIndex
from predictor.index.schema import SIGNATURE_FIELD
from predictor.index.search_options import SearchOptions

__all__ = [
    "DEFAULT_THRESHOLD",
    "Cluster",
    "check_mark_field",
    "copies_of",
    "find_clusters",
    "mark_clusters",
    "stored_rows",
    "with_overlap",
]

# Measured on planted copies (docs/search-index.md): with signatures, every threshold from 0.86 to 0.96 kept pair
# precision and recall at 0.95 or more, and only from 0.90 did copies cropped at random never join another photo's
# cluster; by the embedding alone no threshold did, and 0.90 keeps precision at 0.98.
DEFAULT_THRESHOLD = 0.90
# The embedding scored every planted pair at least 0.52, copy against copy included (docs/search-index.md).
CANDIDATE_SCORE = 0.5
NEIGHBOURS = 16
# Pairs whose best crop correlates below this are not aligned (4 to 8.5 ms a pair): on copies cropped at random, 162 of
# the 169 pairs that aligning lifted over 0.90 were at 0.6 or more by their crops, and half the pairs of different
# pictures the embedding proposed were not (docs/search-index.md).
OVERLAP_GATE = 0.6
# The alignment picks the best of a continuous family of overlaps, so two different pictures score higher by it than
# by one fixed comparison (two drawings of hands on white, one nearly the other's mirror image, reached 0.899 before
# pictures on a flat background were left out of it). An aligned score counts this much less.
OVERLAP_DISCOUNT = 0.02
# The neighbours `copies_of` looks among: one image's copies, not every row's.
COPIES_SEARCHED = 100
READ_BATCH = 512
SEARCH_BATCH = 64
MARK_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Cluster:
    ids: list[str]
    uris: list[str]
    min_score: float

    def line(self) -> dict:
        return {"ids": self.ids, "uris": self.uris, "min_score": round(self.min_score, 6)}


@dataclass(frozen=True)
class StoredRow:
    id: str
    uri: str
    vector: np.ndarray
    signature: str


def stored_rows(index: ImageIndex, namespace: str, expression: str | None) -> Iterator[list[StoredRow]]:
    """Every row of `namespace` matching `expression`, with its vector and signature, in batches of READ_BATCH."""
    fields = ["id", "uri", "vector"] + ([SIGNATURE_FIELD] if index.layout.signatures else [])
    for batch in index.scan(namespace, expression, fields, READ_BATCH):
        yield [
            StoredRow(
                str(row["id"]),
                str(row["uri"]),
                np.asarray(row["vector"], dtype=np.float32),
                str(row.get(SIGNATURE_FIELD) or ""),
            )
            for row in batch
        ]


def pair_scores(row: StoredRow, candidates: list[Hit]) -> list[float]:
    """The score of `row` with each candidate, one way round: how well a crop of the row's picture matches the
    candidate's whole, or the embedding's score where either has no signature."""
    likeness = copy_scores(row.signature, [hit.signature or "" for hit in candidates])
    return [hit.score if score is None else score for hit, score in zip(candidates, likeness, strict=True)]


class _Overlaps:
    """Overlap scores (copy_overlap.py) of the pairs that neither picture's crops made duplicates, each computed once
    although both rows of a pair meet it: kept from the first meeting until the second, if any."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], float | None] = {}

    def score(self, row: StoredRow, hit: Hit) -> float | None:
        key = (row.id, hit.id) if row.id < hit.id else (hit.id, row.id)
        if key in self._waiting:
            return self._waiting.pop(key)
        self._waiting[key] = overlap_score(row.signature, hit.signature or "")
        return self._waiting[key]


def with_overlap(score: float, overlap: Callable[[], float | None], threshold: float) -> float:
    """A pair's score: its crops', or where those fell short of the threshold (but not below OVERLAP_GATE) its aligned
    overlap's less OVERLAP_DISCOUNT, whichever is higher. `overlap` is called only then (it costs 4 to 8.5 ms)."""
    if score >= threshold or score < OVERLAP_GATE:
        return score
    aligned = overlap()
    return score if aligned is None else max(score, aligned - OVERLAP_DISCOUNT)


class _Components:
    """Union-find over row ids, with the lowest pair score that joined each component."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.lowest: dict[str, float] = {}

    def root(self, item: str) -> str:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def join(self, a: str, b: str, score: float) -> None:
        first, second = self.root(a), self.root(b)
        low = min(score, self.lowest.get(first, score), self.lowest.get(second, score))
        if first != second:
            self.parent[second] = first
        self.lowest[first] = low


def _searched_ahead(
    index: ImageIndex, options: SearchOptions, batches: Iterator[list[StoredRow]]
) -> Iterator[tuple[list[StoredRow], list[list[Hit]]]]:
    """Each batch with its hits, the next batch's search running while the caller scores this one's signatures: the
    command's time is then the longer of the two, not their sum, where Milvus runs on other machines."""

    def search(batch: list[StoredRow]) -> list[list[Hit]]:
        return index.search(np.stack([row.vector for row in batch]), options, with_signatures=True)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="duplicates-search") as searcher:
        pending: tuple[list[StoredRow], concurrent.futures.Future[list[list[Hit]]]] | None = None
        for batch in batches:
            searching = (batch, searcher.submit(search, batch))
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = searching
        if pending is not None:
            yield pending[0], pending[1].result()


def find_clusters(
    index: ImageIndex,
    namespace: str,
    expression: str | None,
    threshold: float = DEFAULT_THRESHOLD,
    progress: Callable[[int], object] = lambda rows: None,
) -> list[Cluster]:
    """Clusters of two or more rows, largest first; `progress(rows)` after each batch of rows searched."""
    components = _Components()
    overlaps = _Overlaps()
    uris: dict[str, str] = {}
    options = SearchOptions(top_k=NEIGHBOURS, filter=expression, namespace=namespace)
    batches = (
        rows[start : start + SEARCH_BATCH]
        for rows in stored_rows(index, namespace, expression)
        for start in range(0, len(rows), SEARCH_BATCH)
    )
    # The signature comparisons are thousands of small matrix products a second: OpenBLAS's threads cost more to wake
    # and spin than they save there (2.8 times the CPU time with two threads on 2 cores), and they take the cores
    # Milvus searches on.
    with threadpool_limits(limits=1, user_api="blas"):
        for batch, found in _searched_ahead(index, options, batches):
            for row, hits in zip(batch, found, strict=True):
                uris[row.id] = row.uri
                candidates = [hit for hit in hits if hit.id != row.id and hit.score >= CANDIDATE_SCORE]
                for hit, score in zip(candidates, pair_scores(row, candidates), strict=True):
                    score = with_overlap(score, functools.partial(overlaps.score, row, hit), threshold)
                    if score >= threshold:
                        uris[hit.id] = hit.uri
                        components.join(row.id, hit.id, score)
            progress(len(batch))
    members: dict[str, list[str]] = {}
    for image_id in list(components.parent):
        members.setdefault(components.root(image_id), []).append(image_id)
    clusters = [
        Cluster(sorted(ids), [uris[i] for i in sorted(ids)], components.lowest[root])
        for root, ids in members.items()
        if len(ids) > 1
    ]
    return sorted(clusters, key=lambda cluster: (-len(cluster.ids), cluster.ids[0]))


def copies_of(
    index: ImageIndex,
    namespace: str,
    image_id: str,
    expression: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    timeout_s: float | None = None,
) -> list[Hit] | None:
    """The rows of `namespace` (matching `expression`) that are copies of `image_id`'s, as `find_clusters` pairs them
    (both ways round, since this is one pair at a time), best first, each scored by that likeness; None when the
    namespace does not hold `image_id`."""
    stored = index.stored_row(namespace, image_id)
    if stored is None:
        return None
    row = StoredRow(stored.id, stored.uri, stored.vector, stored.signature)
    options = SearchOptions(top_k=COPIES_SEARCHED, filter=expression, namespace=namespace)
    [hits] = index.search(row.vector[None], options, timeout_s, with_signatures=True)
    candidates = [hit for hit in hits if hit.id != image_id and hit.score >= CANDIDATE_SCORE]
    copies = []
    for hit, score in zip(candidates, pair_scores(row, candidates), strict=True):
        [back] = copy_scores(hit.signature or "", [row.signature])
        score = score if back is None else max(score, back)
        score = with_overlap(score, functools.partial(overlap_score, row.signature, hit.signature or ""), threshold)
        if score >= threshold:
            copies.append(replace(hit, score=score, signature=None))
    return sorted(copies, key=lambda hit: -hit.score)


def check_mark_field(field: str) -> None:
    if not MARK_FIELD.fullmatch(field):
        raise ValueError(f"--mark {field!r}: use 1 to 64 letters, digits or '_', not starting with a digit")


def mark_clusters(
    index: ImageIndex, namespace: str, clusters: list[Cluster], field: str, expression: str | None = None
) -> int:
    """Write each member's cluster id (its cluster's first id) into `metadata[field]`, and `metadata[field_copy]`
    true into every member but that first one, so `not exists metadata["<field>_copy"]` keeps one per cluster; marks
    of an earlier run on rows that are in no cluster now are removed, among the rows `expression` (the filter the
    clusters were found under) keeps only: the rows outside it were not compared. Returns the rows changed."""
    check_mark_field(field)
    copy_field = f"{field}_copy"
    updates: dict[str, dict] = {}
    for stale in index.ids_marked(namespace, field, expression):
        updates[stale] = {field: None, copy_field: None}
    for cluster in clusters:
        first = cluster.ids[0]
        for image_id in cluster.ids:
            updates[image_id] = {field: first, copy_field: True if image_id != first else None}
    changed = 0
    items = list(updates.items())
    for start in range(0, len(items), 256):
        changed += index.update_metadata(namespace, dict(items[start : start + 256]))[0]
    return changed
