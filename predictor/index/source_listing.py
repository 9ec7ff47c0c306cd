"""What `index` and `sync` are given: folders, lists of paths and object-store prefixes, listed and split by shard.

Each worker lists every source but keeps only its shard (a stable hash of each image's uri), so N workers of an
Indexed Job together take the whole catalogue once, and each reads only its own share.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from predictor.index.collection import ImageIndex
from predictor.index.ingestion import SourceImage, discover_images, in_shard
from predictor.index.metadata_manifests import Manifest
from predictor.index.object_sources import list_objects
from predictor.index.object_store import is_object_uri
from predictor.index.source_rows import rows_under

__all__ = ["AlreadyIndexed", "SourceListing", "already_indexed", "list_sources"]


@dataclass(frozen=True)
class SourceListing:
    # Every image of every source, all shards: what a manifest's rows are matched against.
    everything: list[SourceImage]
    # This worker's shard of them.
    images: list[SourceImage]
    # The uri prefix of each object-store source (`s3://bucket/prefix/`).
    object_prefixes: list[str]
    not_images: list[str]


def list_sources(sources: Sequence[str], shard_index: int, shard_count: int, workers: int = 16) -> SourceListing:
    local = [source for source in sources if not is_object_uri(source)]
    everything: list[SourceImage] = list(discover_images(local)) if local else []
    prefixes, not_images = [], []
    seen = {image.uri for image in everything}
    for source in sources:
        if is_object_uri(source):
            listing = list_objects(source, workers)
            prefixes.append(str(listing.source))
            not_images += listing.not_images
            for image in listing.images:
                if image.uri not in seen:
                    seen.add(image.uri)
                    everything.append(image)
    images = [image for image in everything if in_shard(image.uri, shard_index, shard_count)]
    return SourceListing(everything, images, prefixes, not_images)


@dataclass
class AlreadyIndexed:
    pending: list[SourceImage]
    skipped: int = 0
    metadata_updated: int = 0
    matched_rows: set[int] = field(default_factory=set)


def already_indexed(
    index: ImageIndex, namespace: str, listing: SourceListing, manifest: Manifest | None
) -> AlreadyIndexed:
    """Split this shard's images into those to read and those whose row already holds them as listed (same uri,
    same object version): those are skipped without a read, and a manifest row naming one by path still updates it."""
    stored: dict[str, tuple[str, str | None]] = {}
    for prefix in listing.object_prefixes:
        stored |= {row.uri: (row.id, row.version) for row in rows_under(index, namespace, prefix)}
    result = AlreadyIndexed([])
    updates: dict[str, dict] = {}
    for image in listing.images:
        row = stored.get(image.uri)
        if image.version is None or row is None or row[1] != image.version:
            result.pending.append(image)
            continue
        result.skipped += 1
        named = manifest.for_image([image.name, image.uri], "") if manifest else None
        if named is not None and named.path is not None:
            result.matched_rows.add(named.line)
            fields = {name: value for name, value in named.fields.items() if value is not None}
            if fields:
                updates[row[0]] = fields
    if updates:
        result.metadata_updated = index.update_metadata(namespace, updates)[0]
    return result
