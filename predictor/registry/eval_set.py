"""Which evaluation set a run scored: a content hash of its images, so that two runs on the same set compare."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from predictor.embedding.model_package import file_sha256
from predictor.evaluation.retrieval import labelled_images
from predictor.imaging.image_files import IMAGE_SUFFIXES


@dataclass(frozen=True)
class EvalSet:
    sha256: str
    images: int
    categories: tuple[str, ...]

    def params(self) -> dict[str, str]:
        return {
            "eval_set.sha256": self.sha256,
            "eval_set.images": str(self.images),
            "eval_set.categories": str(len(self.categories)),
        }


def fingerprint(labelled: Path, near_duplicates: Path | None = None) -> EvalSet:
    """SHA-256 over each image's place in the set (category folder and file name) and its content, in a fixed order.
    Renaming a file, moving it to another category or changing a pixel changes it; the folders' location does not.
    A separate near-duplicate folder, when the eval used one, is part of the set."""
    pairs = labelled_images(labelled)
    digest = hashlib.sha256()
    for _category, path in pairs:
        _add(digest, "labelled", labelled, path)
    if near_duplicates is not None:
        for path in sorted(p for p in near_duplicates.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            _add(digest, "near-duplicates", near_duplicates, path)
    return EvalSet(digest.hexdigest(), len(pairs), tuple(sorted({category for category, _ in pairs})))


def _add(digest, part: str, root: Path, path: Path) -> None:
    digest.update(f"{part}/{path.relative_to(root).as_posix()}\0{file_sha256(path)}\n".encode())
