"""The Milvus side: collection schema, the model identity a collection belongs to, search, upsert, delete.

The same code talks to an embedded milvus-lite file (a path ending in `.db`) or a Milvus server (`http://host:19530`).
Every call blocks, so the serving path runs them in worker threads.
"""

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from predictor.model_package import ModelIdentity

logger = logging.getLogger(__name__)

ID_MAX_LENGTH = 512
URI_MAX_LENGTH = 2048
IDENTITY_PROPERTY = "image_search.model"
OUTPUT_FIELDS = ["uri", "metadata"]


class IndexUnavailable(RuntimeError):
    """Milvus cannot be reached or answered with a server-side error."""


class IndexMismatch(RuntimeError):
    """The collection exists but belongs to another model, or is missing; the message says what to do."""


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


def identity_to_property(identity: ModelIdentity) -> str:
    return json.dumps({"name": identity.name, "version": identity.version, "dimension": identity.dimension})


def identity_from_property(text: str | None) -> ModelIdentity | None:
    try:
        recorded = json.loads(text or "")
        return ModelIdentity(str(recorded["name"]), str(recorded["version"]), int(recorded["dimension"]))
    except (ValueError, KeyError, TypeError):
        return None


class ImageIndex:
    """One collection that belongs to one model identity."""

    def __init__(self, uri: str, collection: str, identity: ModelIdentity, token: str | None = None) -> None:
        if not collection:
            raise ValueError("collection name must not be empty")
        self.uri = uri
        self.collection = collection
        self.identity = identity
        self._token = token or ""
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                if is_local_file(self.uri):
                    Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._client = MilvusClient(uri=self.uri, token=self._token)
                except MilvusException as error:
                    raise IndexUnavailable(f"cannot connect to Milvus at {self.uri}: {error}") from None
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
            raise IndexUnavailable(f"Milvus {what} on {self.collection!r} failed: {error}") from None

    def recorded_identity(self) -> ModelIdentity | None:
        description = self._call("describe", self.client.describe_collection, self.collection)
        return identity_from_property(description.get("properties", {}).get(IDENTITY_PROPERTY))

    def exists(self) -> bool:
        return bool(self._call("has_collection", self.client.has_collection, self.collection))

    def ensure_collection(self) -> None:
        """Create the collection for this model if it is missing; refuse one that belongs to another model."""
        if not self.exists():
            self._create()
        self.check_identity()
        self._call("load", self.client.load_collection, self.collection)

    def open_for_search(self) -> None:
        if not self.exists():
            raise IndexMismatch(
                f"collection {self.collection!r} does not exist at {self.uri}; "
                f"index images first: image-search index SOURCE --milvus-uri {self.uri} --collection {self.collection}"
            )
        self.check_identity()
        self._call("load", self.client.load_collection, self.collection)

    def check_identity(self) -> None:
        recorded = self.recorded_identity()
        if recorded != self.identity:
            raise IndexMismatch(
                f"collection {self.collection!r} was built by model {recorded or 'unknown'}, but this server runs "
                f"{self.identity}; vectors of different models cannot be compared. Serve the model that built it, "
                "or index into a collection of this model (--collection)."
            )

    def _create(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.identity.dimension)
        schema.add_field("uri", DataType.VARCHAR, max_length=URI_MAX_LENGTH)
        schema.add_field("metadata", DataType.JSON)
        index_params = MilvusClient.prepare_index_params()
        index_params.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        self._call(
            "create_collection",
            self.client.create_collection,
            collection_name=self.collection,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
            properties={IDENTITY_PROPERTY: identity_to_property(self.identity)},
        )
        logger.info("created collection %s for %s", self.collection, self.identity)

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
            search_params={"metric_type": "COSINE"},
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

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._call("delete", self.client.delete, self.collection, ids=list(ids))

    def sample_vectors(self, limit: int = 2048) -> np.ndarray:
        rows = self._call("query", self.client.query, self.collection, filter="", output_fields=["vector"], limit=limit)
        if not rows:
            return np.zeros((0, self.identity.dimension), dtype=np.float32)
        return np.asarray([row["vector"] for row in rows], dtype=np.float32)
