"""Rebuild a collection's vector index in place, from the vectors it stores: no image is embedded again.

Milvus cannot change an index while the collection is loaded, so the collection is released, its index dropped and
made again with the new settings, and loaded once Milvus has indexed every row. Searches fail while it is released
(seconds on a small collection; the index build on a large one); servers read a collection's index when they open it,
so they are restarted afterwards (docs/search-index.md).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from pymilvus import MilvusClient

from predictor.index.milvus import MilvusAccess
from predictor.index.vector_index import VectorIndex

__all__ = ["Rebuilt", "rebuild_index"]

VECTOR_FIELD = "vector"
POLL_S = 0.5


@dataclass(frozen=True)
class Rebuilt:
    collection: str
    before: VectorIndex
    after: VectorIndex
    rows: int
    seconds: float


def rebuild_index(
    access: MilvusAccess,
    collection: str,
    vector_index: VectorIndex,
    timeout_s: float = 3600.0,
    clock: Callable[[], float] = time.monotonic,
) -> Rebuilt:
    """Give `collection` the index `vector_index` describes; returns what it had before and how long it took."""
    started = clock()
    before = vector_index.of_collection(access.describe_index(collection, VECTOR_FIELD))
    rows = access.count(collection, consistency_level="Strong")
    # Rows still in growing segments are indexed only once sealed; the index waited for below must cover them all.
    access.call("flush", "flush", collection, collection=collection)
    access.call("release", "release_collection", collection, collection=collection)
    access.call("drop_index", "drop_index", collection, VECTOR_FIELD, collection=collection)
    params = MilvusClient.prepare_index_params()
    params.add_index(field_name=VECTOR_FIELD, **vector_index.index_params())
    access.call("create_index", "create_index", collection, params, collection=collection)
    deadline = started + timeout_s
    while access.describe_index(collection, VECTOR_FIELD).get("indexed_rows", 0) < rows:
        if clock() > deadline:
            raise TimeoutError(f"Milvus had not indexed the {rows} rows of {collection} after {timeout_s:.0f} s")
        time.sleep(POLL_S)
    access.load(collection)
    after = vector_index.of_collection(access.describe_index(collection, VECTOR_FIELD))
    return Rebuilt(collection, before, after, rows, clock() - started)
