"""Building an index: find image files, skip what is already indexed, embed in batches, upsert.

Idempotent by construction: a row's id is its file's content SHA-256 (or the id a manifest gives it), and rows are keyed
per namespace, so a re-run or a restarted shard finds its earlier work in Milvus and adds nothing twice. Unreadable
files are reported and skipped; rows already written stay.
"""

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from predictor.imaging.copy_signature import signature_of
from predictor.imaging.decoding import ImageLimits, InvalidImage, decode_image, preprocess
from predictor.imaging.image_files import IMAGE_SUFFIXES, content_id
from predictor.index.collection import ImageIndex, IndexRow
from predictor.index.fetching import prefetched
from predictor.index.metadata_manifests import Manifest, ManifestRow
from predictor.index.object_sources import VERSION_FIELD
from predictor.index.object_store import ObjectGone
from predictor.index.search_options import DEFAULT_NAMESPACE
from predictor.observability.thread_names import name_os_thread

if TYPE_CHECKING:
    # Only the type: the caller brings the network, so that the index side never imports torch.
    from predictor.embedding.backbone import Backbone

logger = logging.getLogger(__name__)


@dataclass
class IndexReport:
    added: int = 0
    skipped: int = 0
    replaced: int = 0
    metadata_updated: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    unmatched: list[ManifestRow] = field(default_factory=list)
    matched_rows: set[int] = field(default_factory=set)

    def summary(self) -> str:
        text = f"added {self.added}, skipped {self.skipped}, failed {len(self.failed)}"
        if self.replaced:
            text += f", replaced {self.replaced}"
        if self.metadata_updated:
            text += f", metadata updated {self.metadata_updated}"
        if self.unmatched:
            text += f"; {len(self.unmatched)} manifest rows matched no file"
        return text


@dataclass(frozen=True)
class FoundImage:
    """An image file, and the name it has under the SOURCE it was found by (what a manifest's `path` refers to)."""

    path: Path
    name: str

    @property
    def version(self) -> None:
        """Local files carry no listing version: a changed file is found by its content."""
        return None

    @property
    def uri(self) -> str:
        return str(self.path)

    @property
    def filename(self) -> str:
        return self.path.name

    def read(self, max_bytes: int) -> bytes:  # noqa: ARG002 - an oversized file is refused when it is decoded
        return self.path.read_bytes()


def discover_images(sources: Iterable[str]) -> list[FoundImage]:
    """Image files under directories (recursively) and listed in text files (one path per line, # comments)."""
    found: list[FoundImage] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found.extend(
                FoundImage(p.resolve(), p.relative_to(path).as_posix())
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(FoundImage(path.resolve(), path.name))
        elif path.is_file():
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    entry = Path(line)
                    found.append(FoundImage((entry if entry.is_absolute() else path.parent / entry).resolve(), line))
        else:
            raise FileNotFoundError(f"source {source} does not exist")
    unique: dict[Path, FoundImage] = {}
    for image in found:
        unique.setdefault(image.path, image)
    return list(unique.values())


def discover(sources: Iterable[str]) -> list[Path]:
    return [image.path for image in discover_images(sources)]


def in_shard(path: Path | str, shard_index: int, shard_count: int) -> bool:
    """A stable slice: the same file (or object URI) lands in the same shard whatever order or machine lists it."""
    digest = hashlib.sha256(str(path).encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard_count == shard_index


class SourceImage(Protocol):
    """A local file (FoundImage) or an object in a store (object_sources.ObjectImage)."""

    @property
    def name(self) -> str: ...

    @property
    def uri(self) -> str: ...

    @property
    def filename(self) -> str: ...

    @property
    def version(self) -> str | None: ...

    def read(self, max_bytes: int) -> bytes: ...


@dataclass(frozen=True)
class _Candidate:
    image: SourceImage
    id: str
    data: bytes
    metadata: dict = field(default_factory=dict)
    manifest_fields: dict | None = None


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _candidate(image: SourceImage, data: bytes, manifest: Manifest | None, used: set[int]) -> _Candidate:
    sha = content_id(data)
    row = manifest.for_image([image.name, image.uri], sha) if manifest else None
    metadata = {"filename": image.filename}
    if image.version is not None:
        metadata[VERSION_FIELD] = image.version
    if row is None:
        return _Candidate(image, sha, data, metadata, None)
    used.add(row.line)
    fields = {name: value for name, value in row.fields.items() if value is not None}
    image_id = row.id if row.path is not None and row.id is not None else sha
    return _Candidate(image, image_id, data, {**metadata, **fields}, fields)


def index_images(
    images: Sequence[SourceImage],
    backbone: "Backbone",
    index: ImageIndex,
    namespace: str = DEFAULT_NAMESPACE,
    manifest: Manifest | None = None,
    batch_size: int = 32,
    limits: ImageLimits | None = None,
    progress: Callable[[int], None] | None = None,
    fetch_workers: int = 16,
) -> IndexReport:
    """Embed and upsert `images` into `namespace`; manifest rows add their fields (to rows already there too).

    Images are read `fetch_workers` at a time, ahead of the batch being embedded. A read that fails for one image
    (a file that cannot be opened, an object deleted since the listing) is reported and skipped; one that means the
    store itself is out of reach (`ObjectStoreError`) stops the run, keeping the rows already written."""
    limits = limits or ImageLimits()
    index.check_writable(namespace)
    report = IndexReport()
    preprocessing = backbone.spec.preprocessing
    used_rows: set[int] = set()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="decode", initializer=name_os_thread) as pool:
        fetched = prefetched(images, lambda image: image.read(limits.max_bytes), fetch_workers, 2 * batch_size)
        for batch in _batches(fetched, batch_size):
            candidates = []
            for image, data in batch:
                if isinstance(data, OSError | ObjectGone):
                    report.failed.append((image.uri, f"unreadable: {getattr(data, 'strerror', None) or data}"))
                    continue
                if isinstance(data, Exception):
                    raise data
                candidates.append(_candidate(image, data, manifest, used_rows))
            existing = index.existing_ids(namespace, [c.id for c in candidates])
            fresh: dict[str, _Candidate] = {}
            updates: dict[str, dict] = {}
            for candidate in candidates:
                if candidate.id in existing or candidate.id in fresh:
                    report.skipped += 1
                    if candidate.manifest_fields:
                        updates[candidate.id] = candidate.manifest_fields
                else:
                    fresh[candidate.id] = candidate
            report.metadata_updated += index.update_metadata(namespace, updates)[0] if updates else 0
            decoded = list(pool.map(lambda c: _try_decode(c, limits, preprocessing), fresh.values()))
            good = [(c, picture) for c, picture in decoded if isinstance(picture, _Picture)]
            report.failed.extend((c.image.uri, str(error)) for c, error in decoded if not isinstance(error, _Picture))
            if good:
                embeddings = backbone.run(np.stack([picture.pixels for _, picture in good])).embeddings
                rows = [
                    IndexRow(c.id, vector, c.image.uri, c.metadata, picture.signature)
                    for (c, picture), vector in zip(good, embeddings, strict=True)
                ]
                report.added += index.upsert(namespace, rows)
                # A file whose content changed keeps its path but gets a new id: drop the old vector, after the new
                # one is safely written, so an interrupted run never leaves the file unsearchable.
                stored = index.ids_by_uri(namespace, [c.image.uri for c, _ in good])
                stale = [old for c, _ in good for old in stored.get(c.image.uri, ()) if old != c.id]
                report.replaced += index.delete(namespace, stale)
            if progress:
                progress(len(batch))
    report.matched_rows = used_rows
    for path, reason in report.failed:
        logger.warning("skipped %s: %s", path, reason)
    return report


def unmatched_rows(manifest: Manifest, matched: set[int], everything: Sequence[SourceImage]) -> list[ManifestRow]:
    """Rows that name no image: not matched in this run, and (for path rows) naming no file of any shard."""
    names = {name for image in everything for name in (image.name, image.uri)}
    return [row for row in manifest.rows if row.line not in matched and (row.path is None or row.path not in names)]


@dataclass(frozen=True)
class _Picture:
    pixels: np.ndarray  # the model's input
    signature: str  # the whole picture's copy signature


def _try_decode(candidate: _Candidate, limits: ImageLimits, preprocessing) -> tuple[_Candidate, object]:
    try:
        decoded = decode_image(candidate.data, limits, preprocessing)
        return candidate, _Picture(preprocess(decoded, preprocessing), signature_of(decoded.image))
    except InvalidImage as error:
        return candidate, error
