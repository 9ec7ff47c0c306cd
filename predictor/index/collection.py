"""One model's collection: its identity, namespaces, search, reads by id, upsert, delete and metadata updates.

Built on the access layer (milvus.py), which owns the connection and turns every Milvus failure into a typed error;
the row layout (namespaced or legacy) is schema.py's.
"""

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from predictor.errors import InvalidRequest
from predictor.identity import ModelIdentity
from predictor.index.filter_columns import FilterColumn, describe
from predictor.index.milvus import MilvusAccess, like_prefix, quoted
from predictor.index.schema import (
    IDENTITY_PROPERTY,
    SIGNATURE_FIELD,
    Layout,
    create_collection,
    identity_from_property,
    layout_of,
)
from predictor.index.search_effort import RowCounts, planned_effort
from predictor.index.search_options import SearchOptions
from predictor.index.settings import is_local_file
from predictor.index.vector_index import VectorIndex

logger = logging.getLogger(__name__)

# Rows per get/query/upsert call when reading or rewriting rows by id.
CHUNK = 256


class IndexMismatch(RuntimeError):
    """The collection belongs to another model; serving or indexing it would mix vectors that cannot be compared."""


class IndexNotReady(RuntimeError):
    """This model's collection is missing or empty (yet); the message says how to build it."""


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    uri: str
    metadata: dict = field(default_factory=dict)
    # The stored vector, fetched only for re-ranking by diversity.
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    # The stored copy signature, fetched only for finding duplicates ("" where the row has none).
    signature: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class IndexRow:
    id: str
    vector: np.ndarray
    uri: str
    metadata: dict
    signature: str = ""


def index_row(row: dict) -> IndexRow:
    """A row Milvus returned with `Layout.stored_fields`, as it would be written again."""
    return IndexRow(
        str(row["id"]),
        np.asarray(row["vector"], dtype=np.float32),
        str(row.get("uri", "")),
        dict(row.get("metadata") or {}),
        str(row.get(SIGNATURE_FIELD) or ""),
    )


@dataclass(frozen=True)
class StoredImage:
    id: str
    namespace: str
    uri: str
    metadata: dict


@dataclass(frozen=True)
class IndexSummary:
    collection: str
    model: ModelIdentity | None
    images: int
    namespaced: bool


def versioned_collection(base: str, identity: ModelIdentity) -> str:
    """The collection that holds one model version's vectors: `<base>__<model>__<version>`, in Milvus's alphabet."""

    def slug(text: str) -> str:
        return re.sub(r"[^0-9A-Za-z_]", "_", text)

    return f"{base}__{slug(identity.name)}__{slug(identity.version)}"


def _chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ImageIndex:
    """One collection that belongs to one model identity.

    `base` is the stable name users know (an alias, default `images`); each model version keeps its vectors in its
    own collection `<base>__<model>__<version>`, so a canary and the stable predictor never read each other's vectors.
    """

    def __init__(
        self,
        access: MilvusAccess,
        collection: str,
        identity: ModelIdentity,
        base: str | None = None,
        *,
        vector_index: VectorIndex | None = None,
        read_consistency: str | None = None,
        filter_columns: tuple[FilterColumn, ...] = (),
    ) -> None:
        """`vector_index` is the index a new collection gets and searches start from (an existing collection's own
        index wins once it is opened), `filter_columns` the typed columns a new collection gets (an existing one
        keeps its own); `read_consistency` the Milvus consistency level of searches and id lookups
        (None: the collection's, Strong, which writers need to read their own writes)."""
        if not collection:
            raise ValueError("collection name must not be empty")
        self.access = access
        self.collection = collection
        self.identity = identity
        self.base = base or collection
        self.vector_index = vector_index or VectorIndex()
        self.filter_columns = filter_columns
        self.read_consistency = read_consistency
        self._layout: Layout | None = None
        self._counts = RowCounts()

    @classmethod
    def for_model(
        cls,
        access: MilvusAccess,
        base: str,
        identity: ModelIdentity,
        *,
        vector_index: VectorIndex | None = None,
        read_consistency: str | None = None,
        filter_columns: tuple[FilterColumn, ...] = (),
    ) -> "ImageIndex":
        """The collection this model indexes into (and searches, unless `base` names a collection of its own)."""
        if not base:
            raise ValueError("collection name must not be empty")
        return cls(
            access,
            versioned_collection(base, identity),
            identity,
            base,
            vector_index=vector_index,
            read_consistency=read_consistency,
            filter_columns=filter_columns,
        )

    @classmethod
    def open_for_search(
        cls,
        access: MilvusAccess,
        base: str,
        identity: ModelIdentity,
        *,
        vector_index: VectorIndex | None = None,
        read_consistency: str | None = None,
    ) -> "ImageIndex":
        """This model's collection, checked and loaded; never another model's, so a canary can't read stable's vectors.

        `base` may also name a concrete collection (not an alias) when the model's own collection does not exist.
        Missing or empty is `IndexNotReady` (an indexing job may still be building it); a collection that another
        model built is `IndexMismatch`, which no amount of waiting will fix. Searches use the index the collection
        really has, whatever `vector_index` says.
        """
        index = cls.for_model(access, base, identity, vector_index=vector_index, read_consistency=read_consistency)
        if not index.exists():
            if base not in access.aliases() and access.has_collection(base):
                index = cls(access, base, identity, base, vector_index=vector_index, read_consistency=read_consistency)
            else:
                raise IndexNotReady(
                    f"collection {index.collection} for model {identity} does not exist at {access.uri} yet; "
                    f"index images first: image-search index SOURCE --milvus-uri {access.uri} "
                    f"--collection {base} [--model-dir DIR]"
                )
        index.check_identity()
        index.load()
        index.vector_index = index.vector_index.of_collection(access.describe_index(index.collection))
        # Read the row layout now, so that no search has to wait for it on a Milvus that has become slow.
        index._layout = index._read_layout()
        if index.count() == 0:
            raise IndexNotReady(f"collection {index.collection} for model {identity} is empty; index images first")
        index._first_search()
        return index

    def _first_search(self) -> None:
        """One search before any query: pymilvus imports scipy on a process's first search (about 0.25 s), which the
        first query would otherwise wait for."""
        probe = np.zeros(self.identity.dimension, dtype=np.float32)
        probe[0] = 1.0
        self.access.call(
            "search",
            "search",
            self.collection,
            data=[probe.tolist()],
            limit=1,
            anns_field="vector",
            search_params=self.vector_index.search_request(1),
            output_fields=[],
            collection=self.collection,
            **self._consistency(),
        )

    @property
    def uri(self) -> str:
        return self.access.uri

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            self._layout = self._read_layout()
        return self._layout

    def _read_layout(self) -> Layout:
        return replace(layout_of(self.access.describe(self.collection)), three_valued=is_local_file(self.uri))

    def close(self) -> None:
        self.access.close()

    def exists(self, timeout_s: float | None = None) -> bool:
        return self.access.has_collection(self.collection, timeout_s)

    def load(self) -> None:
        self.access.load(self.collection)

    def ensure_collection(self) -> None:
        """Create this model's collection if missing, and make the stable alias point at it if it points nowhere."""
        if not self.exists():
            partition_key = self.access.partition_key_works()
            created = create_collection(
                self.access,
                self.collection,
                self.identity,
                partition_key=partition_key,
                vector_index=self.vector_index,
                filter_columns=self.filter_columns,
                scalar_indexes=not is_local_file(self.uri),
            )
            self._layout = replace(created, three_valued=is_local_file(self.uri))
            logger.info(
                "created collection %s for %s (namespace partition key: %s; index %s; filter columns: %s)",
                self.collection,
                self.identity,
                partition_key,
                self.vector_index.describe(),
                describe(self.filter_columns) or "none",
            )
        self.check_identity()
        self.load()
        if self.base not in self.access.aliases() and not self.access.has_collection(self.base):
            self.access.create_alias(self.collection, self.base)
            logger.info("alias %s -> %s", self.base, self.collection)

    def recorded_identity(self) -> ModelIdentity | None:
        return identity_from_property(self.access.properties(self.collection).get(IDENTITY_PROPERTY))

    def check_identity(self) -> None:
        recorded = self.recorded_identity()
        if recorded != self.identity:
            raise IndexMismatch(
                f"collection {self.collection!r} was built by model {recorded or 'unknown'}, but this server runs "
                f"{self.identity}; vectors of different models cannot be compared. Serve the model that built it, "
                "or index into another collection (--collection)."
            )

    def check_writable(self, namespace: str) -> None:
        if not self.layout.holds(namespace):
            raise ValueError(
                f"collection {self.collection} was made before namespaces and holds only the default namespace; "
                f"index namespace {namespace!r} into a new collection (--collection NAME)"
            )

    def count(self, namespace: str | None = None) -> int:
        """Rows in the collection, or in one namespace of it."""
        if namespace is None:
            return self.access.count(self.collection)
        if not self.layout.holds(namespace):
            return 0
        return self.access.count(self.collection, self.layout.scope(namespace))

    def summary(self) -> IndexSummary:
        """What this collection is: its name, the model that built it and how many images it holds."""
        return IndexSummary(self.collection, self.recorded_identity(), self.count(), self.layout.namespaced)

    def settle(self) -> None:
        """Return once every write made before this call is visible to searches, at any consistency level.

        A Strong read waits until the query node has caught up with every write before it; Bounded searches read
        what the query node holds, so they see those rows too. Commands that write end with this, so that a query
        sent after they return finds what they wrote.
        """
        self.access.count(self.collection, consistency_level="Strong")

    def ping(self, timeout_s: float | None = None) -> bool:
        """Whether Milvus answers (within `timeout_s`) and still holds the collection."""
        try:
            return self.exists(timeout_s)
        except RuntimeError:
            return False

    def search(
        self,
        vectors: np.ndarray,
        options: SearchOptions,
        timeout_s: float | None = None,
        with_signatures: bool = False,
    ) -> list[list[Hit]]:
        """Up to `options.window` hits per query vector, best first, from `options.namespace` only; `timeout_s`
        bounds the Milvus call (`RequestTimedOut` after it). `with_signatures` fetches the hits' copy signatures
        where the collection stores them."""
        if len(vectors) == 0:
            return []
        if not self.layout.holds(options.namespace):
            return [[] for _ in vectors]
        results = self.access.call(
            "search",
            "search",
            self.collection,
            data=[vector.tolist() for vector in vectors],
            limit=options.window,
            filter=self.layout.scope(options.namespace, options.filter),
            anns_field="vector",
            search_params=self._search_params(options, timeout_s),
            output_fields=self.layout.output_fields
            + (["vector"] if options.diversity > 0 else [])
            + ([SIGNATURE_FIELD] if with_signatures and self.layout.signatures else []),
            collection=self.collection,
            timeout=timeout_s,
            **self._consistency(),
        )
        return [[self._hit(hit) for hit in hits] for hits in results]

    def _search_params(self, options: SearchOptions, timeout_s: float | None = None) -> dict:
        """The index's search parameters, at the request's effort (checked against this collection's index) or, when
        the request names none, at the effort planned from how many rows its namespace and filter keep."""
        hits = options.offset + options.top_k
        effort = options.effort
        if effort is None and self.vector_index.effort_param is not None:
            scope = self.layout.scope(options.namespace, options.filter)

            def count(expression: str) -> int:
                return self._count(expression, timeout_s)

            total = self._counts.get("", count)
            matching = self._counts.get(scope, count) if scope else total
            effort = planned_effort(self.vector_index, total, matching, hits)
        return self.vector_index.search_request(options.window, effort, hits)

    def _count(self, expression: str, timeout_s: float | None) -> int:
        """Rows matching `expression`, at the searches' consistency."""
        rows = self.access.call(
            "count",
            "query",
            self.collection,
            filter=expression,
            output_fields=["count(*)"],
            collection=self.collection,
            timeout=timeout_s,
            **self._consistency(),
        )
        return int(rows[0]["count(*)"])

    def _consistency(self) -> dict[str, str]:
        return {"consistency_level": self.read_consistency} if self.read_consistency else {}

    @staticmethod
    def _hit(hit: dict) -> Hit:
        entity = hit["entity"]
        return Hit(
            id=str(entity.get("id", hit["id"])),
            score=float(hit["distance"]),
            uri=str(entity.get("uri", "")),
            metadata=entity.get("metadata") or {},
            vector=np.asarray(entity["vector"], dtype=np.float32) if "vector" in entity else None,
            signature=entity.get(SIGNATURE_FIELD),
        )

    def _keys_filter(self, namespace: str, ids: Sequence[str]) -> str:
        """Rows of these ids in `namespace`, by primary key. pymilvus 3.0's `get(ids=...)` and `delete(ids=...)` put
        string keys between single quotes without escaping them, so an id holding a quote could rewrite the
        expression (and read another namespace's rows); every key is quoted here instead."""
        keys = ", ".join(quoted(self.layout.key(namespace, image_id)) for image_id in ids)
        return f"{self.layout.primary_field} in [{keys}]"

    def _rows(
        self, namespace: str, ids: Sequence[str], fields: list[str], timeout_s: float | None = None, **consistency: str
    ) -> list[dict]:
        if not ids or not self.layout.holds(namespace):
            return []
        found = []
        for chunk in _chunks(list(dict.fromkeys(ids))):
            found += self.access.call(
                "get",
                "query",
                self.collection,
                filter=self._keys_filter(namespace, chunk),
                output_fields=fields,
                collection=self.collection,
                timeout=timeout_s,
                **consistency,
            )
        return found

    def vectors_of(self, namespace: str, ids: Sequence[str], timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """Stored vectors of these ids in `namespace` (a query's lookup, at the searches' consistency); ids it does not
        hold are absent from the answer."""
        rows = self._rows(namespace, ids, ["id", "vector"], timeout_s, **self._consistency())
        return {str(row["id"]): np.asarray(row["vector"], dtype=np.float32) for row in rows}

    def get(self, namespace: str, image_id: str, timeout_s: float | None = None) -> StoredImage | None:
        """One image's row (without its vector), or None when `namespace` does not hold it."""
        rows = self._rows(namespace, [image_id], ["id", "uri", "metadata"], timeout_s)
        if not rows:
            return None
        row = rows[0]
        return StoredImage(str(row["id"]), namespace, str(row.get("uri", "")), row.get("metadata") or {})

    def existing_ids(self, namespace: str, ids: Sequence[str]) -> set[str]:
        return {str(row["id"]) for row in self._rows(namespace, ids, ["id"])}

    def upsert(self, namespace: str, rows: Iterable[IndexRow]) -> int:
        self.check_writable(namespace)
        data = [self._row(namespace, row.id, row.vector.tolist(), row.uri, row.metadata, row.signature) for row in rows]
        if not data:
            return 0
        self.access.call("upsert", "upsert", self.collection, data=data, collection=self.collection)
        self._counts.forget()
        return len(data)

    def _row(
        self, namespace: str, image_id: str, vector: list[float], uri: str, metadata: dict, signature: str = ""
    ) -> dict:
        try:
            return self.layout.row(namespace, image_id, vector, uri, metadata, signature)
        except InvalidRequest as error:
            # A value the collection's filter columns cannot hold: say which image, so the manifest can be fixed.
            raise InvalidRequest(f"image {image_id!r}: {error}") from error

    def delete(self, namespace: str, ids: Sequence[str]) -> int:
        present = sorted(self.existing_ids(namespace, ids))
        for chunk in _chunks(present):
            self.access.call(
                "delete",
                "delete",
                self.collection,
                filter=self._keys_filter(namespace, chunk),
                collection=self.collection,
            )
        self._counts.forget()
        return len(present)

    def update_metadata(self, namespace: str, updates: dict[str, dict]) -> tuple[int, list[str]]:
        """Merge fields into stored rows' metadata without re-embedding (a field set to None is removed).

        Returns how many rows changed and the ids `namespace` does not hold.
        """
        rows = self._rows(namespace, list(updates), self.layout.stored_fields)
        rewritten = []
        for row in rows:
            stored = row.get("metadata") or {}
            metadata = dict(stored)
            for name, value in updates[str(row["id"])].items():
                if value is None:
                    metadata.pop(name, None)
                else:
                    metadata[name] = value
            if metadata != stored:
                stored_row = index_row(row)
                rewritten.append(
                    self._row(
                        namespace,
                        stored_row.id,
                        stored_row.vector.tolist(),
                        stored_row.uri,
                        metadata,
                        stored_row.signature,
                    )
                )
        for chunk in _chunks(rewritten):
            self.access.call("upsert", "upsert", self.collection, data=list(chunk), collection=self.collection)
        found = {str(row["id"]) for row in rows}
        return len(rewritten), [image_id for image_id in updates if image_id not in found]

    def stored_row(self, namespace: str, image_id: str) -> IndexRow | None:
        """One image's whole row (vector and signature included), or None when `namespace` does not hold it."""
        rows = self._rows(namespace, [image_id], self.layout.stored_fields)
        return index_row(rows[0]) if rows else None

    def _query_ids(self, namespace: str, expression: str) -> list[dict]:
        if not self.layout.holds(namespace):
            return []
        return self.access.call(
            "query",
            "query",
            self.collection,
            filter=self.layout.scope(namespace, expression),
            output_fields=["id", "uri"],
            collection=self.collection,
        )

    def scan(self, namespace: str, expression: str | None, fields: list[str], batch_size: int) -> Iterator[list[dict]]:
        """Every row of `namespace` matching `expression`, with `fields` (`id` among them), in lists of `batch_size`.

        A Milvus server pages with a cursor on the primary key. milvus-lite reads every row to evaluate a filter, so
        each page costs as much as a whole query and paging costs the square of the rows (20,000 rows: 36 s in pages
        of 1,000, 2 s in one query). There one query reads the rows, and vectors, too big to hold for every row at
        once, come by primary key a batch at a time.
        """
        if not self.layout.holds(namespace):
            return
        scoped = self.layout.scope(namespace, expression)
        if not is_local_file(self.uri):
            yield from self._pages_by_key(scoped, fields, batch_size)
            return
        by_key = [name for name in fields if name == "vector"]
        light = [name for name in fields if name not in by_key]
        rows = self.access.call(
            "query", "query", self.collection, filter=scoped, output_fields=light, collection=self.collection
        )
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            if by_key:
                found = {
                    str(row["id"]): row
                    for row in self._rows(namespace, [str(row["id"]) for row in batch], ["id", *by_key])
                }
                batch = [{**row, **found[str(row["id"])]} for row in batch if str(row["id"]) in found]
            yield batch

    def every_row(self, batch_size: int) -> Iterator[list[dict]]:
        """Every row of every namespace with all its fields (`key` and `namespace` among them), in lists of
        `batch_size`; for copying a collection (namespaced layout only)."""
        fields = ["namespace", *self.layout.stored_fields]
        # Every row has a key, so this keeps them all; paging needs an expression to extend.
        everything = 'key != ""'
        if not is_local_file(self.uri):
            yield from self._pages_by_key(everything, fields, batch_size)
            return
        keys = [
            str(row["key"])
            for row in self.access.call(
                "query", "query", self.collection, filter=everything, output_fields=["key"], collection=self.collection
            )
        ]
        for chunk in _chunks(sorted(keys), batch_size):
            yield self.access.call(
                "query",
                "query",
                self.collection,
                filter=f"key in [{', '.join(quoted(key) for key in chunk)}]",
                output_fields=["key", *fields],
                collection=self.collection,
            )

    def _pages_by_key(self, scoped: str, fields: list[str], batch_size: int) -> Iterator[list[dict]]:
        """Pages in primary-key order, each after the last key of the one before, as pymilvus's query_iterator pages;
        but with the key quoted here: the iterator writes it between double quotes as it is, so one id holding a quote
        broke the scan of every row after it."""
        key = self.layout.primary_field
        last: str | None = None
        while True:
            page = self.access.call(
                "query",
                "query",
                self.collection,
                filter=scoped if last is None else f"{key} > {quoted(last)} and ({scoped})",
                output_fields=list(dict.fromkeys([key, *fields])),
                limit=batch_size,
                # What the iterator asks of Milvus: the rows of the lowest keys, in key order.
                iterator="True",
                reduce_stop_for_best="False",
                collection=self.collection,
            )
            if not page:
                return
            yield page
            if len(page) < batch_size:
                return
            last = max(str(row[key]) for row in page)

    def ids_by_uri(self, namespace: str, uris: Sequence[str]) -> dict[str, set[str]]:
        """Ids currently stored in `namespace` for each of these source paths."""
        if not uris:
            return {}
        found: dict[str, set[str]] = {}
        for row in self._query_ids(namespace, f"uri in [{', '.join(quoted(uri) for uri in uris)}]"):
            found.setdefault(str(row["uri"]), set()).add(str(row["id"]))
        return found

    def ids_under(self, namespace: str, prefix: str) -> list[str]:
        """Ids in `namespace` of every row whose source path is `prefix` or lies under it."""
        folder = prefix.rstrip("/") + "/"
        # Milvus narrows the rows with a pattern that may find more than the folder (see like_prefix), and the exact
        # test here keeps only the folder's own.
        expression = f"uri == {quoted(prefix)} or uri like {quoted(like_prefix(folder))}"
        rows = self._query_ids(namespace, expression)
        return [str(row["id"]) for row in rows if row["uri"] == prefix or str(row["uri"]).startswith(folder)]

    def ids_marked(self, namespace: str, field: str, expression: str | None = None) -> list[str]:
        """Ids in `namespace` of every row whose metadata has `field` (a plain name, checked by the caller) and, where
        given, that matches `expression`."""
        marked = f'exists metadata["{field}"]'
        return [
            str(row["id"])
            for row in self._query_ids(namespace, f"({expression}) and {marked}" if expression else marked)
        ]

    def sample_vectors(self, limit: int = 2048) -> np.ndarray:
        """Up to `limit` stored vectors from any namespace, for the drift score's reference centroid."""
        rows = self.access.call(
            "query",
            "query",
            self.collection,
            filter="",
            output_fields=["vector"],
            limit=limit,
            collection=self.collection,
        )
        if not rows:
            return np.zeros((0, self.identity.dimension), dtype=np.float32)
        return np.asarray([row["vector"] for row in rows], dtype=np.float32)
