"""Keeping a namespace in step with one source (a folder or an object-store prefix): what is new is embedded, what
was replaced is embedded again, and the rows of what is gone are deleted.

Only rows whose uri lies under the source's own prefix are compared, and only those of this worker's shard, so a sync
leaves other sources, other namespaces and other shards as they are. An object whose listing version (ETag,
generation) still matches its row is unchanged without being read; one whose version changed, and every local file,
is read and hashed, and is embedded again only if its content really changed.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from predictor.imaging.decoding import ImageLimits
from predictor.imaging.image_files import content_id
from predictor.index.collection import ImageIndex
from predictor.index.fetching import prefetched
from predictor.index.ingestion import IndexReport, SourceImage, in_shard, index_images
from predictor.index.object_sources import VERSION_FIELD
from predictor.index.object_store import ObjectGone, is_object_uri, parse_object_uri
from predictor.index.source_listing import SourceListing
from predictor.index.source_rows import SourceRow, rows_under

if TYPE_CHECKING:
    # Only for annotations: listing a source must not wait seconds for torch to import.
    from predictor.embedding.backbone import Backbone

__all__ = ["SyncPlan", "SyncReport", "plan_sync", "run_sync", "source_prefix"]

# Changed images are read and hashed this many at a time, then embedded from memory (read once, not twice).
CHUNK = 128


def source_prefix(source: str) -> str:
    """The uri prefix of the rows a source owns: `s3://bucket/prefix/`, or a folder's resolved path and `/`."""
    if is_object_uri(source):
        return str(parse_object_uri(source))
    folder = Path(source).resolve()
    if not folder.is_dir():
        raise ValueError(f"{source}: sync needs a folder or an object-store prefix (s3://, gs://)")
    return str(folder).rstrip("/") + "/"


@dataclass
class SyncPlan:
    new: list[SourceImage] = field(default_factory=list)
    # Listed images that have a row: unchanged unless their content turns out to differ.
    to_check: list[tuple[SourceImage, SourceRow]] = field(default_factory=list)
    unchanged: int = 0
    gone: list[SourceRow] = field(default_factory=list)


def plan_sync(
    index: ImageIndex, namespace: str, prefix: str, listing: SourceListing, shard: tuple[int, int]
) -> SyncPlan:
    listed = {image.uri: image for image in listing.everything}
    plan = SyncPlan()
    stored: dict[str, SourceRow] = {}
    for row in rows_under(index, namespace, prefix):
        if not in_shard(row.uri, *shard):
            continue
        if row.uri in listed:
            stored[row.uri] = row
        else:
            plan.gone.append(row)
    for image in listing.images:
        found = stored.get(image.uri)
        if found is None:
            plan.new.append(image)
        elif image.version is not None and image.version == found.version:
            plan.unchanged += 1
        else:
            plan.to_check.append((image, found))
    return plan


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    changes: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, dry_run: bool = False) -> str:
        counts = [("added", self.added), ("updated", self.updated), ("deleted", self.deleted)]
        text = ", ".join(f"{'would be ' if dry_run else ''}{word} {count}" for word, count in counts)
        text += f", unchanged {self.unchanged}"
        if self.failed:
            text += f", failed {len(self.failed)}"
        return text


@dataclass(frozen=True)
class _Read:
    """An image whose bytes were read to check it, handed to indexing so it is not read again."""

    image: SourceImage
    data: bytes

    name = property(lambda self: self.image.name)
    uri = property(lambda self: self.image.uri)
    filename = property(lambda self: self.image.filename)
    version = property(lambda self: self.image.version)

    def read(self, max_bytes: int) -> bytes:  # noqa: ARG002 - already read under the limit
        return self.data


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_sync(
    plan: SyncPlan,
    index: ImageIndex,
    namespace: str,
    backbone: "Callable[[], Backbone] | None",
    *,
    batch_size: int = 32,
    fetch_workers: int = 16,
    limits: ImageLimits | None = None,
    progress: Callable[[int], None] | None = None,
) -> SyncReport:
    """Carry out `plan`; with `backbone` None (a dry run) nothing is written and the report says what would change.

    New and changed images are read and hashed first. One whose content a gone row holds was moved or renamed: that
    row is pointed at its new uri, not embedded again and not deleted. New rows are written before gone ones are
    deleted, and a replaced image's old row is deleted only once its new row is written, so an interrupted sync never
    leaves an image that is still there unsearchable.
    """
    limits = limits or ImageLimits()
    dry_run = backbone is None
    report = SyncReport(unchanged=plan.unchanged)
    gone = {row.id: row for row in plan.gone}
    model = None
    versions: dict[str, dict] = {}
    work: list[tuple[SourceImage, SourceRow | None]] = [*plan.to_check, *((image, None) for image in plan.new)]
    for chunk in _chunks(work, CHUNK):
        rows = {image.uri: row for image, row in chunk}
        changed: list[_Read] = []
        new: list[_Read] = []
        reads = prefetched([image for image, _ in chunk], lambda i: i.read(limits.max_bytes), fetch_workers, CHUNK)
        for image, data in reads:
            row = rows[image.uri]
            if isinstance(data, OSError | ObjectGone):
                report.failed.append((image.uri, f"unreadable: {getattr(data, 'strerror', None) or data}"))
                continue
            if isinstance(data, Exception):
                raise data
            image_id = content_id(data)
            if row is not None and image_id == row.id:
                report.unchanged += 1
                if image.version is not None and image.version != row.version:
                    versions[row.id] = {VERSION_FIELD: image.version}
            elif row is None and image_id in gone:
                moved = gone.pop(image_id)
                report.updated += 1
                report.changes.append(("update", f"{image.uri} (moved from {moved.uri})"))
                if not dry_run:
                    _move(index, namespace, image_id, image)
            elif dry_run:
                report.changes.append(("update" if row else "add", image.uri))
            else:
                (changed if row else new).append(_Read(image, data))
        if progress:
            progress(len(chunk))
        if changed or new:
            if model is None:
                assert backbone is not None, "a dry run embeds nothing"
                model = backbone()
            if changed:
                kept = _kept_metadata(index, namespace, changed, rows)
                indexed = index_images(changed, model, index, namespace, batch_size=batch_size, limits=limits)
                _merge(report, indexed, replacing=True)
                if kept:
                    index.update_metadata(namespace, kept)
            if new:
                indexed = index_images(new, model, index, namespace, batch_size=batch_size, limits=limits)
                _merge(report, indexed, replacing=False)
    report.changes += [("delete", row.uri) for row in gone.values()]
    if dry_run:
        report.updated += sum(change == "update" and "(moved" not in uri for change, uri in report.changes)
        report.added = sum(change == "add" for change, _ in report.changes)
        report.deleted = len(gone)
        return report
    report.changes = []
    if versions:
        index.update_metadata(namespace, versions)
    report.deleted = index.delete(namespace, sorted(gone))
    return report


def _kept_metadata(
    index: ImageIndex, namespace: str, changed: list["_Read"], rows: dict[str, SourceRow | None]
) -> dict[str, dict]:
    """What a replaced image's old row carries besides what indexing writes (a manifest's fields), keyed by the id its
    new content gets, so that embedding it again keeps them."""
    kept = {}
    for read in changed:
        old = rows[read.uri]
        stored = index.get(namespace, old.id) if old is not None else None
        if stored is not None:
            fields = {k: v for k, v in stored.metadata.items() if k not in ("filename", VERSION_FIELD)}
            if fields:
                kept[content_id(read.data)] = fields
    return kept


def _move(index: ImageIndex, namespace: str, image_id: str, image: SourceImage) -> None:
    """Point the row of `image_id` at the image's new uri, keeping its vector and its metadata but the name."""
    stored = index.stored_row(namespace, image_id)
    if stored is None:
        return
    metadata = {**stored.metadata, "filename": image.filename}
    if image.version is not None:
        metadata[VERSION_FIELD] = image.version
    index.upsert(namespace, [replace(stored, uri=image.uri, metadata=metadata)])


def _merge(report: SyncReport, indexed: IndexReport, replacing: bool) -> None:
    if replacing:
        report.updated += indexed.added
        # Replaced by content that another row already holds: that row now stands for it.
        report.unchanged += indexed.skipped
    else:
        report.added += indexed.added
        report.unchanged += indexed.skipped
    report.failed += indexed.failed
