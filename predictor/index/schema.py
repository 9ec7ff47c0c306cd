"""How a collection holds its rows: the fields, the vector index, and the layout of collections made before namespaces.

Two layouts are read and written:

- **namespaced** (collections made now): primary key `key` = `<namespace>/<id>`, so the same image in two namespaces is
  two rows; `id` is the image's id in the API, `namespace` the tenant. Where the Milvus in use keeps upserted rows in
  the right partition (milvus-lite; Milvus 2.3.10 and later), `namespace` is a partition-key field and a namespace's
  queries touch only its own partitions; on older servers it is a plain field, filtered the same way.
- **legacy** (collections made before namespaces): primary key `id`, no namespace field. It is the default namespace and
  nothing else: searches of other namespaces find nothing, and writing to another namespace is refused.

Both have `id`, `vector`, `uri` and `metadata` (a JSON object), so a filter over `metadata[...]` reads either. A
namespaced collection may also keep chosen metadata keys in typed filter columns (filter_columns.py), which its
filters then read instead of the JSON. Collections made since copy signatures exist keep each picture's signature in
`signature` (imaging/copy_signature.py), which `image-search duplicates` compares; older ones have no such field, and
a row indexed without one holds "".
"""

import json
from dataclasses import dataclass
from typing import Any

from pymilvus import DataType, MilvusClient

from predictor.identity import ModelIdentity
from predictor.imaging.copy_signature import SIGNATURE_LENGTH
from predictor.index.filter_columns import STRING_MAX_LENGTH, FilterColumn, columns_of
from predictor.index.filters import with_filter_columns
from predictor.index.milvus import MilvusAccess, quoted
from predictor.index.search_options import DEFAULT_NAMESPACE
from predictor.index.vector_index import VectorIndex

__all__ = [
    "IDENTITY_PROPERTY",
    "ID_MAX_LENGTH",
    "LEGACY",
    "SIGNATURE_FIELD",
    "Layout",
    "create_collection",
    "identity_from_property",
    "layout_of",
]

ID_MAX_LENGTH = 512
NAMESPACE_MAX_LENGTH = 64
KEY_MAX_LENGTH = NAMESPACE_MAX_LENGTH + 1 + ID_MAX_LENGTH
URI_MAX_LENGTH = 2048
# Milvus refuses JSON values above 64 KiB.
METADATA_MAX_BYTES = 65_536
IDENTITY_PROPERTY = "image_search.model"
SIGNATURE_FIELD = "signature"
_SCALAR_INDEX = {"string": "Trie", "int": "STL_SORT"}


@dataclass(frozen=True)
class Layout:
    namespaced: bool
    partition_key: bool = False
    filter_columns: tuple[FilterColumn, ...] = ()
    # milvus-lite reads a comparison with a missing metadata key as unknown, the server as false (filter_columns.py).
    three_valued: bool = False
    signatures: bool = False

    @property
    def primary_field(self) -> str:
        return "key" if self.namespaced else "id"

    @property
    def output_fields(self) -> list[str]:
        return ["id", "uri", "metadata"]

    def holds(self, namespace: str) -> bool:
        """Whether rows of `namespace` can exist here at all (a legacy collection holds only the default one)."""
        return self.namespaced or namespace == DEFAULT_NAMESPACE

    def key(self, namespace: str, image_id: str) -> str:
        return f"{namespace}/{image_id}" if self.namespaced else image_id

    def scope(self, namespace: str, expression: str | None = None) -> str:
        """A filter expression limited to `namespace` (callers check `holds` first)."""
        parts = [f"namespace == {quoted(namespace)}"] if self.namespaced else []
        if expression:
            parts.append(f"({with_filter_columns(expression, self.filter_columns, self.three_valued)})")
        return " and ".join(parts)

    @property
    def stored_fields(self) -> list[str]:
        """What rewriting a row must read back to write it whole."""
        return ["id", "vector", "uri", "metadata"] + ([SIGNATURE_FIELD] if self.signatures else [])

    def row(
        self, namespace: str, image_id: str, vector: list[float], uri: str, metadata: dict, signature: str = ""
    ) -> dict[str, Any]:
        row: dict[str, Any] = {"id": image_id, "vector": vector, "uri": uri[:URI_MAX_LENGTH], "metadata": metadata}
        if self.signatures:
            row[SIGNATURE_FIELD] = signature
        if self.namespaced:
            row.update(key=self.key(namespace, image_id), namespace=namespace)
        for column in self.filter_columns:
            row[column.column] = column.stored(metadata)
        return row


LEGACY = Layout(namespaced=False)


def layout_of(description: dict) -> Layout:
    fields = {entry["name"]: entry for entry in description.get("fields", [])}
    if "namespace" not in fields:
        return LEGACY
    return Layout(
        namespaced=True,
        partition_key=bool(fields["namespace"].get("is_partition_key")),
        filter_columns=columns_of(fields.values()),
        signatures=SIGNATURE_FIELD in fields,
    )


def identity_to_property(identity: ModelIdentity) -> str:
    return json.dumps({"name": identity.name, "version": identity.version, "dimension": identity.dimension})


def identity_from_property(text: str | None) -> ModelIdentity | None:
    try:
        recorded = json.loads(text or "")
        return ModelIdentity(str(recorded["name"]), str(recorded["version"]), int(recorded["dimension"]))
    except (ValueError, KeyError, TypeError):
        return None


def create_collection(
    access: MilvusAccess,
    name: str,
    identity: ModelIdentity,
    *,
    partition_key: bool,
    vector_index: VectorIndex | None = None,
    filter_columns: tuple[FilterColumn, ...] = (),
    scalar_indexes: bool = False,
) -> Layout:
    """Make a namespaced collection for `identity`'s vectors; the schema is decided here only, the vector index by
    `vector_index` (default: vector_index.py's measured default).

    Strong consistency is the collection's default, so that writers (indexing jobs, the CLI) read their own writes;
    the server's searches ask for their own level (`SearchSettings.consistency`).
    """
    vector_index = vector_index or VectorIndex()
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=KEY_MAX_LENGTH)
    schema.add_field("id", DataType.VARCHAR, max_length=ID_MAX_LENGTH)
    schema.add_field("namespace", DataType.VARCHAR, max_length=NAMESPACE_MAX_LENGTH, is_partition_key=partition_key)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=identity.dimension)
    schema.add_field("uri", DataType.VARCHAR, max_length=URI_MAX_LENGTH)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field(SIGNATURE_FIELD, DataType.VARCHAR, max_length=SIGNATURE_LENGTH)
    for column in filter_columns:
        if column.kind == "string":
            # The marker in front of every value takes one byte more.
            schema.add_field(column.column, DataType.VARCHAR, max_length=STRING_MAX_LENGTH + 1)
        else:
            schema.add_field(column.column, DataType.INT64)
    index_params = MilvusClient.prepare_index_params()
    index_params.add_index(field_name="vector", **vector_index.index_params())
    if filter_columns and scalar_indexes:
        # Milvus 2.3's own scalar indexes (milvus-lite has only INVERTED, which the 2.3 server lacks): with them a
        # filter on the columns and the namespace costs about 3.5 ms less per search at 200,000 rows
        # (docs/search-index.md#filter-columns). A collection without filter columns stays as it was measured.
        for column in filter_columns:
            index_params.add_index(field_name=column.column, index_type=_SCALAR_INDEX[column.kind])
        index_params.add_index(field_name="namespace", index_type=_SCALAR_INDEX["string"])
    access.call(
        "create_collection",
        "create_collection",
        collection_name=name,
        schema=schema,
        index_params=index_params,
        consistency_level="Strong",
        properties={IDENTITY_PROPERTY: identity_to_property(identity)},
    )
    return Layout(namespaced=True, partition_key=partition_key, filter_columns=filter_columns, signatures=True)
