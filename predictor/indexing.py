"""Building an index: find image files, skip what is already indexed, embed in batches, upsert.

Idempotent by construction: a row's id is its file's content SHA-256, so a re-run or a restarted shard finds its
earlier work in Milvus and adds nothing twice. Unreadable files are reported and skipped; rows already written stay.
"""

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from predictor.backbone import Backbone
from predictor.images import ImageLimits, InvalidImage, load_pixels
from predictor.index import ImageIndex, IndexRow

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})


@dataclass
class IndexReport:
    added: int = 0
    skipped: int = 0
    replaced: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        text = f"added {self.added}, skipped {self.skipped}, failed {len(self.failed)}"
        return f"{text}, replaced {self.replaced}" if self.replaced else text


def discover(sources: Iterable[str]) -> list[Path]:
    """Image files under directories (recursively) and listed in text manifests (one path per line, # comments)."""
    found: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(path)
        elif path.is_file():
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    entry = Path(line)
                    found.append(entry if entry.is_absolute() else path.parent / entry)
        else:
            raise FileNotFoundError(f"source {source} does not exist")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def in_shard(path: Path, shard_index: int, shard_count: int) -> bool:
    """A stable slice: the same file lands in the same shard whatever order or machine lists it."""
    digest = hashlib.sha256(str(path).encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard_count == shard_index


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class _Candidate:
    path: Path
    id: str
    data: bytes


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def index_paths(
    paths: list[Path],
    backbone: Backbone,
    index: ImageIndex,
    batch_size: int = 32,
    limits: ImageLimits | None = None,
    progress: Callable[[int], None] | None = None,
) -> IndexReport:
    limits = limits or ImageLimits()
    report = IndexReport()
    preprocessing = backbone.spec.preprocessing
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="decode") as pool:
        for batch_paths in _batches(paths, batch_size):
            candidates = []
            for path in batch_paths:
                try:
                    data = path.read_bytes()
                except OSError as error:
                    report.failed.append((str(path), f"unreadable: {error.strerror or error}"))
                    continue
                candidates.append(_Candidate(path, content_id(data), data))
            existing = index.existing_ids([c.id for c in candidates])
            fresh = {}
            for candidate in candidates:
                if candidate.id in existing or candidate.id in fresh:
                    report.skipped += 1
                else:
                    fresh[candidate.id] = candidate
            decoded = list(pool.map(lambda c: _try_pixels(c, limits, preprocessing), fresh.values()))
            good = [(c, pixels) for c, pixels in decoded if isinstance(pixels, np.ndarray)]
            report.failed.extend((str(c.path), str(error)) for c, error in decoded if not isinstance(error, np.ndarray))
            if good:
                embeddings = backbone.run(np.stack([pixels for _, pixels in good])).embeddings
                rows = [
                    IndexRow(c.id, vector, str(c.path), {"filename": c.path.name})
                    for (c, _), vector in zip(good, embeddings, strict=True)
                ]
                report.added += index.upsert(rows)
                # A file whose content changed keeps its path but gets a new id: drop the old vector, after the new
                # one is safely written, so an interrupted run never leaves the file unsearchable.
                stored = index.ids_by_uri([str(c.path) for c, _ in good])
                stale = [old for c, _ in good for old in stored.get(str(c.path), ()) if old != c.id]
                report.replaced += index.delete(stale)
            if progress:
                progress(len(batch_paths))
    for path, reason in report.failed:
        logger.warning("skipped %s: %s", path, reason)
    return report


def _try_pixels(candidate: _Candidate, limits: ImageLimits, preprocessing) -> tuple[_Candidate, object]:
    try:
        return candidate, load_pixels(candidate.data, limits, preprocessing)
    except InvalidImage as error:
        return candidate, error
