"""The Milvus side: collection schema, the model identity a collection belongs to, search, upsert, delete.

The same code talks to an embedded milvus-lite file (a path ending in `.db`) or a Milvus server (`http://host:19530`).
Every call blocks, so the serving path runs them in worker threads.
"""

import json
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from predictor.identity import ModelIdentity
from predictor.index_config import IndexConfig, for_collection

logger = logging.getLogger(__name__)

ID_MAX_LENGTH = 512
URI_MAX_LENGTH = 2048
IDENTITY_PROPERTY = "image_search.model"
OUTPUT_FIELDS = ["uri", "metadata"]
COLLECTION_NOT_LOADED = 101


class IndexUnavailable(RuntimeError):
    """Milvus cannot be reached or answered with a server-side error."""


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


@dataclass(frozen=True)
class IndexRow:
    id: str
    vector: np.ndarray
    uri: str
    metadata: dict


def is_local_file(uri: str) -> bool:
    return "://" not in uri


def connect(uri: str, token: str | None = None) -> MilvusClient:
    if is_local_file(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusClient(uri=uri, token=token or "")
    except MilvusException as error:
        raise IndexUnavailable(f"cannot connect to Milvus at {uri}: {error}") from None


def versioned_collection(base: str, identity: ModelIdentity) -> str:
    """The collection that holds one model version's vectors: `<base>__<model>__<version>`, in Milvus's alphabet."""

    def slug(text: str) -> str:
        return re.sub(r"[^0-9A-Za-z_]", "_", text)

    return f"{base}__{slug(identity.name)}__{slug(identity.version)}"


def quoted(text: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(text)


def identity_to_property(identity: ModelIdentity) -> str:
    return json.dumps({"name": identity.name, "version": identity.version, "dimension": identity.dimension})


def identity_from_property(text: str | None) -> ModelIdentity | None:
    try:
        recorded = json.loads(text or "")
        return ModelIdentity(str(recorded["name"]), str(recorded["version"]), int(recorded["dimension"]))
    except (ValueError, KeyError, TypeError):
        return None


class ImageIndex:
    """One collection that belongs to one model identity.

    `base` is the stable name users know (an alias, default `images`); each model version keeps its vectors in its
    own collection `<base>__<model>__<version>`, so a canary and the stable predictor never read each other's vectors.
    """

    def __init__(
        self,
        uri: str,
        base: str,
        identity: ModelIdentity,
        token: str | None = None,
        index_config: IndexConfig | None = None,
    ) -> None:
        if not base:
            raise ValueError("collection name must not be empty")
        self.index_config = index_config or IndexConfig()
        self.uri = uri
        self.base = base
        self.collection = versioned_collection(base, identity)
        self.identity = identity
        self._token = token
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                self._client = connect(self.uri, self._token)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MilvusException as error:
            if error.code != COLLECTION_NOT_LOADED:
                raise IndexUnavailable(f"Milvus {what} on {self.collection!r} failed: {error}") from None
        # Collections come back released after a Milvus restart or when a file is reopened: load, then try again.
        try:
            self.client.load_collection(self.collection)
            return fn(*args, **kwargs)
        except MilvusException as error:
            raise IndexUnavailable(f"Milvus {what} on {self.collection!r} failed: {error}") from None

    def recorded_identity(self) -> ModelIdentity | None:
        return self._identity_of(self.collection)

    def exists(self, name: str | None = None) -> bool:
        return bool(self._call("has_collection", self.client.has_collection, name or self.collection))

    def ensure_collection(self) -> None:
        """Create this model's collection if missing, and make the stable alias point at it if it points nowhere."""
        if not self.exists():
            self._create()
        self.check_identity()
        self._call("load", self.client.load_collection, self.collection)
        aliases = self._call("list_aliases", self.client.list_aliases)
        if self.base not in aliases.get("aliases", []) and not self.exists(self.base):
            self._call("create_alias", self.client.create_alias, self.collection, self.base)
            logger.info("alias %s -> %s", self.base, self.collection)

    def open_for_search(self) -> None:
        """Find and load this model's collection; never another model's, so a canary can't read stable's vectors.

        Missing or empty is `IndexNotReady` (an indexing job may still be building it); a concrete collection named
        with --collection that another model built is `IndexMismatch`, which no amount of waiting will fix.
        """
        if not self.exists():
            aliases = self._call("list_aliases", self.client.list_aliases).get("aliases", [])
            if self.base not in aliases and self.exists(self.base):
                self.collection = self.base
            else:
                raise IndexNotReady(
                    f"collection {self.collection} for model {self.identity} does not exist at {self.uri} yet; "
                    f"index images first: image-search index SOURCE --milvus-uri {self.uri} "
                    f"--collection {self.base} [--model-dir DIR]"
                )
        self.check_identity()
        self._call("load", self.client.load_collection, self.collection)
        index = self._call("describe_index", self.client.describe_index, self.collection, "vector")
        self.index_config = for_collection(self.index_config, index)
        if self.count() == 0:
            raise IndexNotReady(f"collection {self.collection} for model {self.identity} is empty; index images first")

    def _identity_of(self, name: str) -> ModelIdentity | None:
        description = self._call("describe", self.client.describe_collection, name)
        return identity_from_property(description.get("properties", {}).get(IDENTITY_PROPERTY))

    def check_identity(self) -> None:
        recorded = self.recorded_identity()
        if recorded != self.identity:
            raise IndexMismatch(
                f"collection {self.collection!r} was built by model {recorded or 'unknown'}, but this server runs "
                f"{self.identity}; vectors of different models cannot be compared. Serve the model that built it, "
                "or index into another collection (--collection)."
            )

    def _create(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.identity.dimension)
        schema.add_field("uri", DataType.VARCHAR, max_length=URI_MAX_LENGTH)
        schema.add_field("metadata", DataType.JSON)
        index_params = MilvusClient.prepare_index_params()
        index_params.add_index(field_name="vector", **self.index_config.index_params())
        self._call(
            "create_collection",
            self.client.create_collection,
            collection_name=self.collection,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
            properties={IDENTITY_PROPERTY: identity_to_property(self.identity)},
        )
        logger.info(
            "created collection %s for %s, index %s", self.collection, self.identity, self.index_config.describe()
        )

    def count(self) -> int:
        result = self._call("count", self.client.query, self.collection, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def ping(self) -> bool:
        try:
            return self.exists()
        except IndexUnavailable:
            return False

    def search(self, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        if len(vectors) == 0:
            return []
        results = self._call(
            "search",
            self.client.search,
            self.collection,
            data=[vector.tolist() for vector in vectors],
            limit=top_k,
            anns_field="vector",
            search_params=self.index_config.search_request(top_k),
            output_fields=OUTPUT_FIELDS,
        )
        return [
            [
                Hit(
                    id=str(hit["id"]),
                    score=float(hit["distance"]),
                    uri=str(hit["entity"].get("uri", "")),
                    metadata=hit["entity"].get("metadata") or {},
                )
                for hit in hits
            ]
            for hits in results
        ]

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = self._call("get", self.client.get, self.collection, ids=list(ids), output_fields=["id"])
        return {str(row["id"]) for row in rows}

    def upsert(self, rows: Iterable[IndexRow]) -> int:
        data = [
            {"id": row.id, "vector": row.vector.tolist(), "uri": row.uri[:URI_MAX_LENGTH], "metadata": row.metadata}
            for row in rows
        ]
        if not data:
            return 0
        self._call("upsert", self.client.upsert, self.collection, data=data)
        return len(data)

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        present = self.existing_ids(ids)
        if present:
            self._call("delete", self.client.delete, self.collection, ids=sorted(present))
        return len(present)

    def ids_by_uri(self, uris: Sequence[str]) -> dict[str, set[str]]:
        """Ids currently stored for each of these source paths."""
        if not uris:
            return {}
        expression = f"uri in [{', '.join(quoted(uri) for uri in uris)}]"
        rows = self._call("query", self.client.query, self.collection, filter=expression, output_fields=["id", "uri"])
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(str(row["uri"]), set()).add(str(row["id"]))
        return found

    def ids_under(self, prefix: str) -> list[str]:
        """Ids of every row whose source path is `prefix` or lies under it."""
        expression = f"uri == {quoted(prefix)} or uri like {quoted(prefix.rstrip('/') + '/%')}"
        rows = self._call("query", self.client.query, self.collection, filter=expression, output_fields=["id"])
        return [str(row["id"]) for row in rows]

    def sample_vectors(self, limit: int = 2048) -> np.ndarray:
        rows = self._call("query", self.client.query, self.collection, filter="", output_fields=["vector"], limit=limit)
        if not rows:
            return np.zeros((0, self.identity.dimension), dtype=np.float32)
        return np.asarray([row["vector"] for row in rows], dtype=np.float32)
