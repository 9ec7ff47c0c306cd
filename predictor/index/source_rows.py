"""The rows a source has put in a namespace: every row whose uri lies under the source's prefix.

Used by `sync` (to find what changed and what is gone) and by `index` of an object prefix (to skip, from the listing
alone, the objects indexed as they are now). Matching is exact: Milvus narrows the rows with `like_prefix`, and only
uris that really start with the prefix are kept, so `photos/a_b/` never reaches `photos/axb/`.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from predictor.index.collection import ImageIndex
from predictor.index.milvus import like_prefix, quoted
from predictor.index.object_sources import VERSION_FIELD

__all__ = ["SourceRow", "rows_under"]

PAGE = 1000


@dataclass(frozen=True)
class SourceRow:
    id: str
    uri: str
    version: str | None


def rows_under(index: ImageIndex, namespace: str, prefix: str) -> Iterator[SourceRow]:
    """Rows of `namespace` whose uri starts with `prefix` (give a folder's prefix with its trailing `/`)."""
    if not prefix or not index.exists():
        return
    for page in index.scan(namespace, f"uri like {quoted(like_prefix(prefix))}", ["id", "uri", "metadata"], PAGE):
        for row in page:
            uri = str(row.get("uri", ""))
            if uri.startswith(prefix):
                version = (row.get("metadata") or {}).get(VERSION_FIELD)
                yield SourceRow(str(row["id"]), uri, None if version is None else str(version))
