"""Give an existing collection filter columns (filter_columns.py) from the rows it stores: no image is embedded again.

Milvus 2.3 cannot add a field to a collection, so the rows are copied into a collection beside it that has the
columns (`<collection>__copy`), the collection is made again with the columns, its vector index and its properties,
and the rows are copied back. Every row is in one of the two at every moment: the original is dropped only once the
copy holds as many rows, and the copy only once the new collection does. A run that stopped half-way is resumed by
running it again. A row whose value has another type than its column's stops the run before anything is dropped.
Searches fail while the collection is rebuilt, and servers read a collection's columns when they open it, so they
are restarted afterwards (docs/search-index.md).
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from predictor.errors import InvalidRequest
from predictor.index.collection import ImageIndex, IndexRow, index_row
from predictor.index.filter_columns import FilterColumn
from predictor.index.vector_index import VectorIndex

__all__ = ["Migrated", "add_filter_columns"]

logger = logging.getLogger(__name__)

COPY_SUFFIX = "__copy"
BATCH = 512
PROPERTY_PREFIX = "image_search."
# Set on the copy once it holds every row (its value: the aliases to move back); only then is the collection dropped.
COPIED_PROPERTY = PROPERTY_PREFIX + "copied_from_aliases"


@dataclass(frozen=True)
class Migrated:
    collection: str
    columns: tuple[FilterColumn, ...]
    rows: int
    seconds: float


def _copy(source: ImageIndex, target: ImageIndex, progress: Callable[[int], None]) -> int:
    copied = 0
    for page in source.every_row(BATCH):
        by_namespace: dict[str, list[IndexRow]] = {}
        for row in page:
            by_namespace.setdefault(str(row["namespace"]), []).append(index_row(row))
        for namespace, rows in by_namespace.items():
            copied += target.upsert(namespace, rows)
        progress(copied)
    # Sealed, the rows get the collection's own index rather than Milvus's interim one (docs/search-index.md).
    target.access.call("flush", "flush", target.collection, collection=target.collection)
    target.settle()
    return copied


def _same_rows(source: ImageIndex, target: ImageIndex) -> None:
    had, has = source.count(), target.count()
    if had != has:
        raise RuntimeError(
            f"{target.collection} holds {has} rows after the copy, {source.collection} {had}; nothing was dropped, "
            "run the command again"
        )


def add_filter_columns(
    index: ImageIndex,
    columns: tuple[FilterColumn, ...],
    vector_index: VectorIndex,
    progress: Callable[[int], None] = lambda copied: None,
    clock: Callable[[], float] = time.monotonic,
) -> Migrated:
    """Make `index`'s collection again with `columns` and `vector_index`, keeping its rows, aliases and properties."""
    started = clock()
    access, name = index.access, index.collection
    # The copy is only read back, in key order: the quickest index to build will do.
    copy = ImageIndex(
        access, name + COPY_SUFFIX, index.identity, vector_index=VectorIndex("FLAT"), filter_columns=columns
    )
    if copy.exists() and COPIED_PROPERTY in access.properties(copy.collection):
        # An earlier run stopped after its copy held every row: the collection may be gone or half made again.
        logger.info("resuming: %s holds every row of %s", copy.collection, name)
    else:
        _copy_out(index, copy, progress)
    copy.load()
    properties = access.properties(copy.collection)
    aliases = json.loads(properties.pop(COPIED_PROPERTY))
    for alias in aliases:
        if access.alias_target(alias) == name:
            access.call("drop_alias", "drop_alias", alias)
    if index.exists():
        access.call("drop_collection", "drop_collection", name)
    rebuilt = ImageIndex(access, name, index.identity, vector_index=vector_index, filter_columns=columns)
    rebuilt.ensure_collection()
    kept = {key: value for key, value in properties.items() if key.startswith(PROPERTY_PREFIX)}
    if kept:
        access.set_properties(name, kept)
    logger.info("copying the rows back into %s", name)
    rows = _copy(copy, rebuilt, progress)
    _same_rows(copy, rebuilt)
    for alias in aliases:
        access.create_alias(name, alias)
    access.call("drop_collection", "drop_collection", copy.collection)
    return Migrated(name, columns, rows, clock() - started)


def _copy_out(index: ImageIndex, copy: ImageIndex, progress: Callable[[int], None]) -> None:
    """Every row of `index` into `copy`, marked complete (with the aliases to restore) only once it holds them all."""
    access, name = index.access, index.collection
    if not index.exists():
        raise ValueError(f"collection {name} does not exist at {access.uri}")
    if not index.layout.namespaced:
        raise ValueError(
            f"collection {name} was made before namespaces; filter columns need a collection made by this version "
            "(index the images into a new collection)"
        )
    index.load()
    if copy.exists():
        logger.info("dropping %s, an incomplete copy an earlier run left", copy.collection)
        access.call("drop_collection", "drop_collection", copy.collection)
    copy.ensure_collection()
    properties = {key: value for key, value in access.properties(name).items() if key.startswith(PROPERTY_PREFIX)}
    if properties:
        access.set_properties(copy.collection, properties)
    logger.info("copying the rows of %s into %s", name, copy.collection)
    try:
        _copy(index, copy, progress)
    except InvalidRequest:
        # A row the columns refuse: the collection is as it was, and the partial copy is of no use.
        access.call("drop_collection", "drop_collection", copy.collection)
        raise
    _same_rows(index, copy)
    aliases = [alias for alias in access.aliases() if access.alias_target(alias) == name]
    access.set_properties(copy.collection, {COPIED_PROPERTY: json.dumps(aliases)})
