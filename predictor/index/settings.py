"""Where the index lives: the Milvus URI, the alias users search, and the vector index of a new collection."""

from dataclasses import dataclass, field

from predictor.index.vector_index import VectorIndex

DEFAULT_MILVUS_URI = "data/milvus.db"
DEFAULT_COLLECTION = "images"


@dataclass(frozen=True)
class MilvusSettings:
    uri: str
    collection: str
    token: str | None = None
    index: VectorIndex = field(default_factory=VectorIndex)

    def __post_init__(self) -> None:
        if not self.uri:
            raise ValueError("--milvus-uri must not be empty: give a file path ending in .db or http://host:19530")
        if "://" not in self.uri and not self.uri.endswith(".db"):
            raise ValueError(f"--milvus-uri {self.uri!r}: a local milvus-lite file must end in .db")
        if not self.collection:
            raise ValueError("--collection must not be empty")
