"""Where the index lives: the Milvus URI, the alias users search, and the vector index and filter columns of a new
collection."""

from dataclasses import dataclass, field

from predictor.index.filter_columns import FilterColumn
from predictor.index.vector_index import VectorIndex

DEFAULT_MILVUS_URI = "data/milvus.db"
DEFAULT_COLLECTION = "images"
# A bound for every Milvus call that has no shorter one of its own (searches carry the request's deadline): long
# enough for a load or an index wait of a large collection, short enough that a call Milvus never answers fails the
# command, and a Job's retry resumes, instead of holding the pod for ever.
DEFAULT_MILVUS_TIMEOUT_S = 600.0


def is_local_file(uri: str) -> bool:
    """Whether `uri` names a milvus-lite file rather than a server."""
    return "://" not in uri


@dataclass(frozen=True)
class MilvusSettings:
    uri: str
    collection: str
    token: str | None = None
    index: VectorIndex = field(default_factory=VectorIndex)
    call_timeout_s: float = DEFAULT_MILVUS_TIMEOUT_S
    filter_columns: tuple[FilterColumn, ...] = ()

    def __post_init__(self) -> None:
        if not self.call_timeout_s > 0:
            raise ValueError(f"--milvus-timeout-s must be a number of seconds above 0, got {self.call_timeout_s}")
        if not self.uri:
            raise ValueError("--milvus-uri must not be empty: give a file path ending in .db or http://host:19530")
        if "://" not in self.uri and not self.uri.endswith(".db"):
            raise ValueError(f"--milvus-uri {self.uri!r}: a local milvus-lite file must end in .db")
        if not self.collection:
            raise ValueError("--collection must not be empty")
